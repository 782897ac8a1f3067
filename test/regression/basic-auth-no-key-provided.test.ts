/**
 * Regression (issue 13, item 12): `Authorization: Basic …` got 401 "No API key provided", though
 * the README documents 400 for a malformed Authorization header, and the client did send
 * credentials, only in a scheme Keygate does not take. It gets 400 naming the scheme now, on /v1
 * and /admin/v1 alike (they share src/auth/authenticate.ts).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

let t: TestGateway;
before(async () => {
  t = await startTestGateway();
});
after(() => t.close());

test('Basic credentials: 400 invalid_authorization that names the scheme, never the credentials', async () => {
  const credentials = Buffer.from('user:kg_secret-password').toString('base64');
  for (const path of ['/v1/models', '/admin/v1/keys']) {
    const res = await t.call(path, { headers: { authorization: `Basic ${credentials}` } });
    assert.equal(res.status, 400, `${path}: ${res.text}`);
    assert.equal(res.headers['www-authenticate'], 'Bearer realm="keygate", error="invalid_request"');
    const body = res.json() as { code: string; message: string };
    assert.equal(body.code, 'invalid_authorization');
    assert.match(body.message, /the "Basic" scheme is not accepted, only Bearer/);
    assert.ok(!res.text.includes(credentials));
  }
  // No header at all is still "no key": 401 with the plain challenge.
  const none = await t.call('/v1/models');
  assert.equal(none.status, 401);
  assert.equal(none.headers['www-authenticate'], 'Bearer realm="keygate"');
});
