/**
 * Regression (issue 13, item 10): the client's `x-request-id` was not echoed (the README said it
 * was) nor sent to the provider. A sane one (1-128 of `A-Za-z0-9_.:-`, nothing key-shaped) now is
 * both; the gateway's own id, which keys the usage record, is in `x-keygate-request-id`.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { generateKey } from '../../src/keys/format.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { usageRows } from '../support/usage-rows.ts';

let t: TestGateway;
before(async () => {
  t = await startTestGateway();
});
after(() => t.close());

test("a sane client id is echoed and sent upstream; the gateway's own keys the record", async () => {
  const { id, key } = await t.createKey();
  const before = t.stub.requests.length;
  const res = await t.call('/v1/chat/completions', {
    method: 'POST',
    headers: { ...bearer(key), 'x-request-id': 'trace-2026.12:abc_1-2' },
    body: chatBody(),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers['x-request-id'], 'trace-2026.12:abc_1-2');
  const own = String(res.headers['x-keygate-request-id']);
  assert.match(own, /^req_/);
  assert.equal(t.stub.requests[before]?.headers['x-request-id'], 'trace-2026.12:abc_1-2');
  const [row] = await usageRows(t, id);
  assert.equal(row?.id, own);
});

test("an id that is too long, has other characters or looks like a key is replaced by the gateway's", async () => {
  const { key } = await t.createKey();
  for (const sent of ['x'.repeat(129), 'a b', 'a/b', '<script>', generateKey('kg')]) {
    const before = t.stub.requests.length;
    const res = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: { ...bearer(key), 'x-request-id': sent },
      body: chatBody(),
    });
    assert.equal(res.status, 200);
    const own = res.headers['x-keygate-request-id'];
    assert.equal(res.headers['x-request-id'], own, sent);
    assert.equal(t.stub.requests[before]?.headers['x-request-id'], own, sent);
    assert.ok(!JSON.stringify(t.stub.requests[before]?.headers).includes(sent), sent);
  }
});
