/**
 * Regression (issue 13, item 10): the tokens trio of rate-limit headers (`x-ratelimit-*-tokens`,
 * which the README promises every key with limits) was missing for keys with a budget and no tpm
 * limit. Such a key gets the trio of its budget with the fewest tokens left now: the budget, what
 * is left of it (after this request's reservation), and the time until its period ends; the same
 * from the memory limiter, the Redis one and through the gateway.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Limiter } from '../../src/limits/index.ts';
import { createMemoryLimiter } from '../../src/limits/memory.ts';
import { RedisLimiter } from '../../src/limits/redis.ts';
import { bearer, chatBody, startTestGateway } from '../support/gateway.ts';
import { subject } from '../support/limits.ts';
import { cleanup, redisOrSkip, testClient, testPrefix } from '../support/redis.ts';

const NOW = Date.UTC(2025, 0, 15, 12); // 12 h before the day ends, 17 days before the month does
const store = { tokensUsed: async () => 300 };
const budgeted = subject({ keyBudget: { day: 1000, month: 50_000 }, workspaceBudget: { month: 100_000 } });
const EXPECTED_ADMITTED = {
  'x-ratelimit-limit-tokens': '1000',
  'x-ratelimit-remaining-tokens': String(1000 - 300 - 100),
  'x-ratelimit-reset-tokens': '43200s',
};

/** Admits a request within the budget and refuses one beyond it, checking the trio of each. */
async function checkTrio(limiter: Limiter): Promise<void> {
  const admitted = await limiter.admit(budgeted, 100);
  assert.ok(admitted.ok);
  assert.deepEqual(admitted.headers, EXPECTED_ADMITTED);
  const refused = await limiter.admit(budgeted, 700);
  assert.ok(!refused.ok);
  assert.equal(refused.headers['x-ratelimit-remaining-tokens'], '600');
  assert.equal(refused.headers['retry-after'], '43200');
}

test('memory limiter: the trio of the tightest budget, admitted and refused', async () => {
  const limiter = createMemoryLimiter({ store, clock: () => NOW });
  await checkTrio(limiter);
  // A tpm limit keeps the trio of its bucket.
  const tpm = await limiter.admit(
    subject({ keyId: 'key_t', limits: { tpm: 500 }, keyBudget: { day: 1000 } }),
    100,
  );
  assert.equal(tpm.headers['x-ratelimit-limit-tokens'], '500');
  limiter.close();
});

const prefix = testPrefix();
after(async () => {
  const redis = testClient();
  await cleanup(redis, prefix).catch(() => {});
  await redis.quit().catch(() => {});
});

test('Redis limiter: the same trio', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const redis = testClient();
  try {
    const limiter = new RedisLimiter({ redis, store, prefix, clock: () => NOW });
    await checkTrio(limiter);
    limiter.close();
  } finally {
    await redis.quit();
  }
});

test('through the gateway: a key with a budget and no tpm gets the tokens trio', async () => {
  const gw = await startTestGateway();
  try {
    const { key } = await gw.createKey('budget only', undefined, { budget: { month: 1_000_000 } });
    const res = await gw.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody({ max_tokens: 10 }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-ratelimit-limit-tokens'], '1000000');
    const remaining = Number(res.headers['x-ratelimit-remaining-tokens']);
    assert.ok(remaining > 999_000 && remaining < 1_000_000, `${remaining}`);
    assert.match(String(res.headers['x-ratelimit-reset-tokens']), /^\d+s$/);
  } finally {
    await gw.close();
  }
});
