/**
 * Regression (issue 12, item 15): key-shaped strings leaked. `GET /kg_…` echoed the key in its 404
 * body, a key sent as a model id was forwarded upstream and stored in usage, and provider error
 * bodies (which may quote the request, or the provider's key) reached the client unscrubbed.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { generateKey } from '../../src/keys/format.ts';
import { bearer, chatBody, startTestGateway, type TestGateway, UPSTREAM_KEY } from '../support/gateway.ts';
import { eventually } from '../support/wait.ts';

let t: TestGateway;
let key: string;
/** A key of this deployment that someone pasted where it does not belong (never created). */
const pasted = generateKey('kg');
/** A key of another deployment's prefix. */
const foreign = generateKey('acme');

before(async () => {
  t = await startTestGateway();
  key = (await t.createKey()).key;
});
after(async () => {
  await t.close();
});

test('no 404 or 405 echoes a key-shaped path, on any surface', async () => {
  for (const secret of [pasted, foreign]) {
    for (const path of [
      `/${secret}`,
      `/v1/${secret}`,
      `/v1/x/${secret}`,
      `/admin/v1/${secret}`,
      `/console/api/${secret}`,
    ]) {
      const res = await t.call(path, { headers: bearer(key) });
      assert.ok(res.status >= 400, path);
      assert.ok(!res.text.includes(secret), `${path} echoed the key: ${res.text}`);
    }
  }
  const res = await t.call(`/v1/models/${pasted}`, { method: 'POST', headers: bearer(key) });
  assert.ok(!res.text.includes(pasted), res.text);
});

test('a key sent as the model is refused, not forwarded, not stored', async () => {
  const before = t.stub.requests.length;
  for (const model of [pasted, foreign, key]) {
    const res = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody({ model }),
    });
    assert.equal(res.status, 422, res.text);
    assert.ok(!res.text.includes(model), res.text);
    const embed = await t.call('/v1/embeddings', {
      method: 'POST',
      headers: bearer(key),
      body: JSON.stringify({ model, input: 'x' }),
    });
    assert.equal(embed.status, 422);
  }
  assert.equal(t.stub.requests.length, before, 'nothing was forwarded');
  // Recorded behind the responses: wait for the six, then look at what was stored and logged.
  const rows = await eventually(async () => {
    const { rows } = await t.gateway.store.usageReport({ by: 'model' });
    return rows.reduce((n, r) => n + r.requests, 0) >= 6 && rows;
  }, 'the usage of the six refused requests');
  for (const row of rows) assert.ok(!String(row.group).includes('_'), `stored model ${row.group}`);
  await new Promise<void>((resolve) => t.gateway.logger.flush(() => resolve()));
  for (const line of t.logLines) assert.ok(!line.includes(pasted) && !line.includes(foreign), line);
});

test("a provider error that quotes the request and the provider's key is scrubbed", async () => {
  const res = await t.call('/v1/chat/completions', {
    method: 'POST',
    headers: bearer(key),
    body: chatBody({
      model: 'stub-error-echo',
      messages: [{ role: 'user', content: `my key is ${pasted}` }],
    }),
  });
  assert.equal(res.status, 400);
  assert.ok(!res.text.includes(pasted), `the key came back: ${res.text}`);
  assert.ok(!res.text.includes(UPSTREAM_KEY), `the provider key came back: ${res.text}`);
  const body = res.json() as { message: string; error: { message: string } };
  assert.match(body.message, /Invalid request/);
  assert.equal(body.error.message, body.message);
});
