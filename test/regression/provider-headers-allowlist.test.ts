/**
 * Regression (issue 12, item 14): the provider's response headers passed through a denylist, so
 * `x-provider-internal-host`, a provider CSP and `www-authenticate` reached the client. Only an
 * allowlist of headers a client needs is copied now.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.ts';

const LEAKY = {
  'x-provider-internal-host': 'inference-7.internal.provider.example',
  'content-security-policy': "default-src 'none'",
  'www-authenticate': 'Bearer realm="provider"',
  'x-envoy-upstream-service-time': '12',
  'access-control-allow-origin': '*',
  'x-ratelimit-remaining-tokens-minute': '123',
  'set-cookie': 'provider_session=abc',
  via: '1.1 provider-proxy',
  'mistral-correlation-id': 'corr-123',
};

let stub: UpstreamStub;
let t: TestGateway;
before(async () => {
  stub = await startUpstreamStub({ responseHeaders: LEAKY });
  t = await startTestGateway({ stub });
});
after(async () => {
  await t.close();
  await stub.close();
});

test('only allowlisted provider headers reach the client, streamed or not', async () => {
  const { key } = await t.createKey();
  for (const stream of [false, true]) {
    const res = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody({ stream }),
    });
    assert.equal(res.status, 200);
    for (const name of Object.keys(LEAKY).filter((n) => n !== 'mistral-correlation-id')) {
      assert.equal(res.headers[name], undefined, `${name} reached the client (stream: ${stream})`);
    }
    assert.equal(res.headers['mistral-correlation-id'], 'corr-123', 'the provider request id is kept');
    assert.match(String(res.headers['content-type']), stream ? /^text\/event-stream/ : /^application\/json/);
    assert.ok(String(res.headers['x-request-id']).startsWith('req_'), "Keygate's own request id");
  }
  const models = await t.call('/v1/models', { headers: bearer(key) });
  assert.equal(models.headers['x-provider-internal-host'], undefined);
  assert.equal(models.headers['www-authenticate'], undefined);
});
