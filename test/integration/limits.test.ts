/**
 * Rate limits and budgets through the real server: exact under concurrency, with the 429s,
 * Retry-After and rate-limit headers that clients rely on.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { createKey } from '../../src/keys/service.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { eventually } from '../support/wait.ts';

let t: TestGateway;
before(async () => {
  t = await startTestGateway({
    configure: (c) => {
      c.auth.failuresPerMinute = 10_000;
      c.upstream.connections = 200;
    },
  });
});
after(async () => {
  await t.close();
});

function chat(key: string, extra: Record<string, unknown> = {}) {
  return t.call('/v1/chat/completions', { method: 'POST', headers: bearer(key), body: chatBody(extra) });
}

test('--rpm 10: 50 simultaneous requests yield exactly 10 successes', async () => {
  const { key } = await t.createKey('rpm 10', undefined, { limits: { rpm: 10 } });
  const results = await Promise.all(Array.from({ length: 50 }, () => chat(key, { max_tokens: 5 })));
  const ok = results.filter((r) => r.status === 200);
  const limited = results.filter((r) => r.status === 429);
  assert.equal(ok.length, 10);
  assert.equal(limited.length, 40);
  for (const r of limited) {
    assert.ok(Number(r.headers['retry-after']) >= 1);
    assert.equal(r.headers['x-ratelimit-limit-requests'], '10');
    assert.equal(r.headers['x-ratelimit-remaining-requests'], '0');
    assert.match(String(r.headers['x-ratelimit-reset-requests']), /^\d+s$/);
    assert.equal((JSON.parse(r.text) as { code: string }).code, 'rate_limited');
  }
  const remaining = ok.map((r) => Number(r.headers['x-ratelimit-remaining-requests'])).sort((a, b) => a - b);
  assert.deepEqual(remaining, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test('a key without limits gets no rate-limit headers; limits are per key', async () => {
  const { key } = await t.createKey('unlimited');
  const res = await chat(key);
  assert.equal(res.status, 200);
  assert.equal(res.headers['x-ratelimit-limit-requests'], undefined);
  const { key: other } = await t.createKey('rpm 1', undefined, { limits: { rpm: 1 } });
  assert.equal((await chat(other)).status, 200);
  assert.equal((await chat(other)).status, 429);
  assert.equal((await chat(key)).status, 200, 'another key is unaffected');
});

test('--concurrency 2: a third request in flight is refused, and slots come back', async () => {
  const { key } = await t.createKey('concurrency 2', undefined, { limits: { concurrency: 2 } });
  const slow = JSON.stringify({
    model: 'stub-slow-stream',
    stream: true,
    messages: [{ role: 'user', content: 'x' }],
  });
  const open = await Promise.all(
    [0, 1].map(() =>
      request(`${t.url}/v1/chat/completions`, {
        method: 'POST',
        headers: bearer(key),
        body: slow,
        dispatcher: t.dispatcher,
      }),
    ),
  );
  for (const r of open) assert.equal(r.statusCode, 200);
  const third = await chat(key);
  assert.equal(third.status, 429);
  assert.match((JSON.parse(third.text) as { message: string }).message, /concurren/i);
  await Promise.all(open.map((r) => r.body.text()));
  // A slot is given back when the server has finished the response, which may follow the client's
  // last byte: retried until then (a refusal holds no slot).
  await eventually(async () => (await chat(key)).status === 200, 'finished streams to free their slots');
});

test('--tpm charges the estimate up front and settles with the real usage', async () => {
  const { key } = await t.createKey('tpm 300', undefined, { limits: { tpm: 300 } });
  const first = await chat(key, { max_tokens: 200 });
  assert.equal(first.status, 200);
  assert.equal(first.headers['x-ratelimit-limit-tokens'], '300');
  // The first request used only a handful of real tokens: most of its reservation came back.
  const second = await chat(key, { max_tokens: 200 });
  assert.equal(second.status, 200, second.text);
  const greedy = await chat(key, { max_tokens: 100_000 });
  assert.equal(greedy.status, 429);
});

test('a key budget holds with streaming and concurrent requests, and says which budget and when it resets', async () => {
  const { id, key } = await t.createKey('budget 200/day', undefined, { budget: { day: 200 } });
  let delivered = 0;
  let refused:
    | { status: number; text: string; headers: Record<string, string | string[] | undefined> }
    | undefined;
  for (let round = 0; round < 20 && !refused; round++) {
    const results = await Promise.all(
      Array.from({ length: 4 }, (_, i) =>
        chat(key, {
          stream: i % 2 === 0,
          max_tokens: 20,
          messages: [{ role: 'user', content: 'one two three four five' }],
        }),
      ),
    );
    for (const r of results) {
      if (r.status === 200) {
        const usageText = r.text.includes('data: ')
          ? (r.text.split('\n\n').find((e) => e.includes('"usage"')) ?? '').slice(6)
          : r.text;
        delivered += (JSON.parse(usageText) as { usage: { total_tokens: number } }).usage.total_tokens;
      } else if (r.status === 429) refused = r;
    }
  }
  assert.ok(refused, 'the budget was never enforced');
  assert.ok(delivered <= 200, `delivered ${delivered} tokens on a 200-token budget`);
  const body = JSON.parse(refused.text) as { message: string; code: string };
  assert.equal(body.code, 'budget_exceeded');
  assert.match(body.message, /this key's daily budget is 200 tokens/);
  assert.match(body.message, /\d{4}-\d{2}-\d{2}T00:00:00/);
  assert.ok(Number(refused.headers['retry-after']) > 0);
  // Written behind the responses: wait until the store has at least what was delivered.
  let stored: number | undefined;
  await eventually(
    async () => {
      stored = (await t.gateway.store.usageTotals({ keyId: id }))[0]?.totalTokens;
      return (stored ?? 0) >= delivered;
    },
    () => `${delivered} tokens in the store (${stored} so far)`,
  );
  assert.equal(stored, delivered, 'the store agrees with what was delivered');
});

test('a workspace budget is shared by all keys of the workspace', async () => {
  const ws = await t.gateway.store.createWorkspace(
    { id: 'ws_budget', name: 'budgeted', createdAt: Date.now() },
    CLI_ACTOR,
  );
  await t.gateway.store.updateWorkspace(ws.id, { budget: { month: 60 } }, CLI_ACTOR, Date.now());
  const deps = { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: 'kg' };
  const k1 = await createKey(deps, { name: 'k1', workspaceId: ws.id });
  const k2 = await createKey(deps, { name: 'k2', workspaceId: ws.id });
  const statuses: number[] = [];
  for (let i = 0; i < 6; i++) {
    statuses.push(
      (
        await chat(i % 2 === 0 ? k1.key : k2.key, {
          max_tokens: 10,
          messages: [{ role: 'user', content: 'a b c d e' }],
        })
      ).status,
    );
  }
  assert.ok(statuses.includes(429), `statuses ${statuses.join(',')}`);
  const refused = await chat(k2.key, { max_tokens: 10 });
  assert.equal(refused.status, 429);
  assert.match((JSON.parse(refused.text) as { message: string }).message, /workspace/i);
});
