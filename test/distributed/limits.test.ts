/**
 * Limits and budgets hold globally: three instances share them through Redis, so a client
 * spreading its requests over every instance gets exactly what one instance would allow.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { request } from 'undici';
import { estimateTokens } from '../../src/limits/estimate.ts';
import {
  api,
  bearer,
  CHAT,
  chat,
  describeDistributed,
  errorOf,
  type HttpReply,
  type Instance,
  servedSince,
  sleep,
  statuses,
  useCluster,
} from '../support/cluster.ts';
import { eventually } from '../support/wait.ts';

/**
 * `chat` on `instance` until it is refused with a message that says so much is used or reserved:
 * the settles of the requests before it reach Redis after their responses.
 */
async function refusedWith(instance: Instance, key: string, used: number): Promise<HttpReply> {
  let last: HttpReply | undefined;
  return eventually(
    async () => {
      last = await chat(instance, key);
      return last.status === 429 && errorOf(last).message.includes(`${used} are used or reserved`) && last;
    },
    () => `${instance.url} to refuse with ${used} used (last: ${last?.status} ${last?.text})`,
  );
}

/**
 * The most one budget request of `spend` reserves: a quarter of its body's bytes + max_tokens 20
 * (the streamed ones are a few bytes longer), as the gateway estimates it.
 */
const ESTIMATE = Math.max(
  ...[false, true].map((stream) => {
    const body = {
      model: 'mistral-small-latest',
      messages: [{ role: 'user', content: CHAT.content }],
      max_tokens: 20,
      stream,
    };
    return estimateTokens(body, 'chat', Buffer.byteLength(JSON.stringify(body)));
  }),
);

/** Total tokens a successful answer reports (a JSON body or the usage chunk of a stream). */
function totalTokens(reply: HttpReply): number {
  const text = reply.text.startsWith('data: ')
    ? (reply.text.split('\n\n').find((event) => event.includes('"usage"')) ?? '').slice('data: '.length)
    : reply.text;
  return (JSON.parse(text) as { usage: { total_tokens: number } }).usage.total_tokens;
}

/**
 * Spends a budget from every instance: rounds of six requests at once (two per instance, every
 * other one streamed, keys taken in turn), a pause between rounds for the settles to reach Redis,
 * until two rounds in a row are refused whole. Returns the tokens of the successes and the last refusals.
 */
async function spend(
  instances: readonly Instance[],
  keys: readonly string[],
): Promise<{ delivered: number; admitted: number; refusals: HttpReply[] }> {
  let delivered = 0;
  let admitted = 0;
  /** A whole round was refused: one more after a longer pause, in case a settle was late. */
  let refusedOnce = false;
  for (let round = 0; round < 40; round++) {
    const replies = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        chat(instances[i % instances.length]!, keys[(round * 6 + i) % keys.length]!, { stream: i % 2 === 0 }),
      ),
    );
    const ok = replies.filter((r) => r.status === 200);
    for (const r of replies) assert.ok(r.status === 200 || r.status === 429, `${r.status}: ${r.text}`);
    for (const r of ok) delivered += totalTokens(r);
    admitted += ok.length;
    if (ok.length === 0 && refusedOnce) return { delivered, admitted, refusals: replies };
    refusedOnce = ok.length === 0;
    await sleep(refusedOnce ? 300 : 100);
  }
  throw new Error('the budget was never exhausted');
}

await describeDistributed('limits and budgets across instances', () => {
  const cluster = useCluster({ instances: 3 });

  test('rpm 10: 50 simultaneous requests spread over 3 instances get exactly 10 × 200 and 40 × 429', async () => {
    const c = cluster();
    const admin = await c.adminKey();
    const made = await api(c.instances[0]!, admin.key, 'POST', '/keys', {
      name: 'rpm 10',
      limits: { requests_per_minute: 10 },
    });
    assert.equal(made.status, 201, made.text);
    const { key } = made.json() as { key: string };
    const stubFrom = c.stub.served.length;

    const replies = await Promise.all(
      Array.from({ length: 50 }, (_, i) => chat(c.instances[i % 3]!, key, { max_tokens: 5 })),
    );
    assert.deepEqual(statuses(replies), { 200: 10, 429: 40 });
    for (const r of replies.filter((r) => r.status === 429)) {
      assert.ok(Number(r.headers['retry-after']) >= 1, `Retry-After: ${r.headers['retry-after']}`);
      assert.equal(r.headers['x-ratelimit-limit-requests'], '10');
      assert.equal(r.headers['x-ratelimit-remaining-requests'], '0');
      const body = errorOf(r);
      assert.equal(body.code, 'rate_limited');
      assert.equal(body.type, 'rate_limit_error');
    }
    // One bucket for the three instances: the ten successes saw 9, 8, … 0 requests left.
    const remaining = replies
      .filter((r) => r.status === 200)
      .map((r) => Number(r.headers['x-ratelimit-remaining-requests']))
      .sort((x, y) => x - y);
    assert.deepEqual(remaining, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(servedSince(c.stub, stubFrom).requests, 10, 'exactly ten reached the provider');
  });

  test('concurrency 2: two streams open on two instances, a third request on the third instance is refused', async () => {
    const c = cluster();
    const { key } = await c.createKey('concurrency 2', { limits: { concurrency: 2 } });
    const slow = JSON.stringify({
      model: 'stub-slow-stream',
      stream: true,
      messages: [{ role: 'user', content: 'x' }],
    });
    const open = await Promise.all(
      [0, 1].map((n) =>
        request(`${c.instances[n]!.url}/v1/chat/completions`, {
          method: 'POST',
          headers: bearer(key),
          body: slow,
          dispatcher: c.instances[n]!.dispatcher,
        }),
      ),
    );
    for (const r of open) assert.equal(r.statusCode, 200);
    const third = await chat(c.instances[2]!, key);
    assert.equal(third.status, 429, third.text);
    assert.match(errorOf(third).message, /concurren/i);
    await Promise.all(open.map((r) => r.body.text()));
    // Their slots are given back once the instances have finished the responses and told Redis.
    await eventually(
      async () => (await chat(c.instances[2]!, key)).status === 200,
      'finished streams to free their slots everywhere',
    );
  });

  test("a key's daily budget holds across instances; then every instance refuses with budget_exceeded", async () => {
    const c = cluster();
    const admin = await c.adminKey();
    const budget = 300;
    const made = await api(c.instances[1]!, admin.key, 'POST', '/keys', {
      name: 'budget 300/day',
      budget: { tokens_per_day: budget },
    });
    assert.equal(made.status, 201, made.text);
    const { id, key } = made.json() as { id: string; key: string };
    const stubFrom = c.stub.served.length;

    const { delivered, admitted } = await spend(c.instances, [key]);
    process.stdout.write(`# key budget ${budget}: ${admitted} requests admitted, ${delivered} tokens\n`);
    assert.ok(delivered <= budget, `${delivered} tokens delivered on a ${budget}-token budget`);
    // Spent up to the last request that fits: what is left is less than one request's reservation.
    assert.ok(delivered + ESTIMATE > budget, `${budget - delivered} tokens left unspent`);
    const served = servedSince(c.stub, stubFrom);
    assert.deepEqual([served.requests, served.totalTokens], [admitted, delivered]);

    for (const instance of c.instances) {
      const res = await refusedWith(instance, key, delivered);
      const body = errorOf(res);
      assert.equal(body.code, 'budget_exceeded');
      assert.match(body.message, new RegExp(`this key's daily budget is ${budget} tokens`));
      assert.ok(Number(res.headers['retry-after']) > 0);
    }
    // What the instances wrote to the shared store agrees (written behind the responses: wait
    // until it holds at least as much, then compare).
    const store = await c.store();
    let recorded = -1;
    await eventually(
      async () => {
        recorded = await store.tokensUsed({ keyId: id, since: 0 });
        return recorded >= delivered;
      },
      () => `${delivered} tokens in the store (${recorded} so far)`,
    );
    assert.equal(recorded, delivered);
  });

  test("a workspace's monthly budget is shared by its keys across instances", async () => {
    const c = cluster();
    const admin = await c.adminKey();
    const budget = 250;
    const ws = await api(c.instances[0]!, admin.key, 'POST', '/workspaces', { name: 'budgeted' });
    assert.equal(ws.status, 201, ws.text);
    const { id: workspaceId } = ws.json() as { id: string };
    const patched = await api(c.instances[1]!, admin.key, 'PATCH', `/workspaces/${workspaceId}`, {
      budget: { tokens_per_month: budget },
    });
    assert.equal(patched.status, 200, patched.text);
    const keys: string[] = [];
    for (const n of [0, 2]) {
      const made = await api(c.instances[n]!, admin.key, 'POST', '/keys', {
        name: `workspace key ${n}`,
        workspace_id: workspaceId,
      });
      assert.equal(made.status, 201, made.text);
      keys.push((made.json() as { key: string }).key);
    }
    const stubFrom = c.stub.served.length;

    const { delivered, admitted } = await spend(c.instances, keys);
    process.stdout.write(
      `# workspace budget ${budget}: ${admitted} requests admitted, ${delivered} tokens\n`,
    );
    assert.ok(delivered <= budget, `${delivered} tokens delivered on a ${budget}-token budget`);
    assert.ok(delivered + ESTIMATE > budget, `${budget - delivered} tokens left unspent`);
    const served = servedSince(c.stub, stubFrom);
    assert.deepEqual([served.requests, served.totalTokens], [admitted, delivered]);

    for (const instance of c.instances) {
      for (const key of keys) {
        const res = await refusedWith(instance, key, delivered);
        const body = errorOf(res);
        assert.equal(body.code, 'budget_exceeded');
        assert.match(body.message, new RegExp(`the workspace's monthly budget is ${budget} tokens`));
      }
    }
  });
});
