/**
 * Regression (issue 13, item 12): `/v1` access-log lines lacked the method and the user agent, and
 * a request refused after its body was read logged `model: null` though the body named one. The
 * line has `method` and `userAgent` (capped, scrubbed of anything key-shaped) now, and the model
 * asked for when it was read and is a model id.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { generateKey } from '../../src/keys/format.ts';
import { bearer, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { accessLine } from '../support/usage-rows.ts';

let t: TestGateway;
before(async () => {
  t = await startTestGateway();
});
after(() => t.close());

const lineOf = (reqId: unknown) => accessLine(t, { reqId });

test('method and user agent are logged; a key in the user agent is not', async () => {
  const { key } = await t.createKey();
  const leaked = generateKey('kg');
  const agent = `my-app/1.0 (token ${leaked}) ${'x'.repeat(400)}`;
  const res = await t.call('/v1/models', { headers: { ...bearer(key), 'user-agent': agent } });
  assert.equal(res.status, 200);
  const line = await lineOf(res.headers['x-keygate-request-id']);
  assert.equal(line.method, 'GET');
  const logged = String(line.userAgent);
  assert.match(logged, /^my-app\/1\.0 \(token /);
  assert.ok(logged.length <= 201, `${logged.length} characters logged`);
  assert.ok(!logged.includes(leaked), 'the key-shaped string is scrubbed');
  assert.ok(!t.logLines.some((l) => l.includes(leaked)));
});

test('a request refused after its body was read logs the model it asked for', async () => {
  const { key } = await t.createKey('small only', undefined, { models: ['mistral-small-latest'] });
  const invalid = await t.call('/v1/chat/completions', {
    method: 'POST',
    headers: bearer(key),
    body: JSON.stringify({ model: 'mistral-large-latest', messages: 'not a list' }),
  });
  assert.equal(invalid.status, 422);
  const line = await lineOf(invalid.headers['x-keygate-request-id']);
  assert.equal(line.method, 'POST');
  assert.equal(line.model, 'mistral-large-latest');
  assert.equal(line.failure, 'validation_error');
  // A model that is not a model id is never logged.
  const odd = await t.call('/v1/chat/completions', {
    method: 'POST',
    headers: bearer(key),
    body: JSON.stringify({ model: 'not a model id', messages: 'x' }),
  });
  assert.equal(odd.status, 422);
  assert.equal((await lineOf(odd.headers['x-keygate-request-id'])).model, null);
});
