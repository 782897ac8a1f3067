/**
 * Regression (issue 12, item 8): the token estimate counted `messages[].content` only. With the
 * prompt in `tools`, 20 concurrent requests spent 200,940 tokens against a 50,000/day budget. The
 * estimate now covers the whole request (its bytes / 4) plus `max_tokens`, so the budget holds.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { bearer, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { eventually } from '../support/wait.ts';

let t: TestGateway;

before(async () => {
  t = await startTestGateway();
});
after(async () => {
  await t.close();
});

test('20 concurrent requests with the prompt in tools stay within a 50,000-token daily budget', async () => {
  const { id, key } = await t.createKey('tools', undefined, { budget: { day: 50_000 } });
  // ~10,000 words of prompt in a tool description: the provider (the stub) counts them.
  const description = Array.from({ length: 10_000 }, (_, i) => `word${i % 97}`).join(' ');
  const body = JSON.stringify({
    model: 'mistral-small-latest',
    messages: [{ role: 'user', content: 'hi' }],
    tools: [{ type: 'function', function: { name: 'lookup', description, parameters: {} } }],
    max_tokens: 16,
  });
  const answers = await Promise.all(
    Array.from({ length: 20 }, () =>
      t.call('/v1/chat/completions', { method: 'POST', headers: bearer(key), body }),
    ),
  );
  const served = answers.filter((a) => a.status === 200).length;
  assert.ok(served >= 1, 'the budget admits what fits');
  assert.ok(
    answers.every((a) => a.status === 200 || a.status === 429),
    answers.map((a) => a.status).join(),
  );
  let spent = 0;
  let requests = 0;
  await eventually(
    async () => {
      const rows = (await t.gateway.store.usageReport({ by: 'key', keyId: id })).rows;
      requests = rows.reduce((n, r) => n + r.requests, 0);
      spent = rows.reduce((n, r) => n + r.totalTokens, 0);
      return requests >= answers.length;
    },
    () => `the usage of ${answers.length} requests (${requests} so far)`,
    5000,
  );
  assert.ok(spent > 0);
  assert.ok(spent <= 50_000, `spent ${spent} tokens of a 50,000 budget (${served} of 20 served)`);
});
