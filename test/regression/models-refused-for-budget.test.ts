/**
 * Regression (issue 13, item 10): `GET /v1/models` with an exhausted budget was refused with 429
 * "this request needs about 0". Listing models costs no tokens: budgets do not refuse it (rate
 * limits still do).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { usageRecord } from '../support/usage-records.ts';

let t: TestGateway;
before(async () => {
  t = await startTestGateway();
});
after(() => t.close());

test('an exhausted budget refuses completions, not the model list', async () => {
  const { id, key } = await t.createKey('spent', undefined, { budget: { day: 100 } });
  // Today's budget is already spent (usage recorded earlier today).
  await t.gateway.store.recordUsage([
    usageRecord({
      id: 'req_spent_earlier',
      keyId: id,
      promptTokens: 60,
      completionTokens: 40,
      totalTokens: 100,
    }),
  ]);
  const chat = await t.call('/v1/chat/completions', {
    method: 'POST',
    headers: bearer(key),
    body: chatBody({ max_tokens: 1 }),
  });
  assert.equal(chat.status, 429, chat.text);
  assert.match(chat.text, /budget/);
  for (const path of ['/v1/models', '/v1/models/mistral-small-latest']) {
    const res = await t.call(path, { headers: bearer(key) });
    assert.equal(res.status, 200, `${path}: ${res.text}`);
  }
});

test('a key at its rpm limit is still refused the model list', async () => {
  const { key } = await t.createKey('rpm 1', undefined, { limits: { rpm: 1 } });
  assert.equal((await t.call('/v1/models', { headers: bearer(key) })).status, 200);
  assert.equal((await t.call('/v1/models', { headers: bearer(key) })).status, 429);
});
