/**
 * The limiter's behaviour. The cases every implementation must pass run against the memory
 * limiter and the Redis limiter (on the Redis at KEYGATE_TEST_REDIS_URL, default
 * redis://127.0.0.1:6379, under a random key prefix deleted at the end; skipped with the reason
 * when it cannot be reached, failed under CI); the memory limiter's own properties (synchronous
 * answers, bounded memory) and the estimates follow. Redis-only behaviour (several instances,
 * leases, failures) is in limits-redis.test.ts.
 */
import assert from 'node:assert/strict';
import { after, type TestContext, test } from 'node:test';
import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { DEFAULT_COMPLETION_RESERVE, estimateTokens } from '../../src/limits/estimate.ts';
import { createMemoryLimiter } from '../../src/limits/memory.ts';
import { RedisLimiter } from '../../src/limits/redis.ts';
import type { Admission, Limiter, Ticket } from '../../src/limits/types.ts';
import type { TokenBudget, TokenFilter } from '../../src/store/types.ts';
import { subject } from '../support/limits.ts';
import { cleanup, redisOrSkip, testClient, testPrefix } from '../support/redis.ts';

/** Noon UTC, 15 January 2025: 12 h to the next midnight, 16.5 days to the next month. */
const T0 = Date.UTC(2025, 0, 15, 12);
const DAY_START = Date.UTC(2025, 0, 15);
const NEXT_DAY = Date.UTC(2025, 0, 16);
const MONTH_START = Date.UTC(2025, 0, 1);
const NEXT_MONTH = Date.UTC(2025, 1, 1);

const NO_BUDGET: TokenBudget = { day: null, month: null };

/** A fake `tokensUsed`: answers from `used` (after `delayMs`) and records its calls. */
function fakeStore(used: (filter: TokenFilter) => number = () => 0, delayMs = 0) {
  const calls: TokenFilter[] = [];
  return {
    calls,
    async tokensUsed(filter: TokenFilter): Promise<number> {
      calls.push(filter);
      if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
      return used(filter);
    },
  };
}

interface SetupOptions {
  used?: (filter: TokenFilter) => number;
  delayMs?: number;
  maxKeys?: number;
}

function setup(options: SetupOptions = {}) {
  const clock = { now: T0 };
  const store = fakeStore(options.used, options.delayMs);
  const limiter = createMemoryLimiter({
    store,
    clock: () => clock.now,
    ...(options.maxKeys !== undefined ? { maxKeys: options.maxKeys } : {}),
  });
  return { clock, store, limiter };
}

interface Setup {
  clock: { now: number };
  store: ReturnType<typeof fakeStore>;
  limiter: Limiter;
}

/** An implementation under test. */
interface Flavour {
  name: string;
  /** Whether an admit that needs no store read answers synchronously. */
  sync: boolean;
  /** A fresh limiter with a fake clock at T0 and a fake store; null when the test was skipped. */
  setup(t: TestContext, options?: SetupOptions): Promise<Setup | null>;
}

let redisClient: Redis | undefined;
const REDIS_PREFIX = testPrefix();
let redisLimiters = 0;
after(async () => {
  if (redisClient === undefined) return;
  await cleanup(redisClient, REDIS_PREFIX);
  await redisClient.quit();
});

const FLAVOURS: Flavour[] = [
  { name: 'memory', sync: true, setup: async (_t, options) => setup(options) },
  {
    name: 'redis',
    sync: false,
    async setup(t, options = {}) {
      if (!(await redisOrSkip(t))) return null;
      redisClient ??= testClient();
      const clock = { now: T0 };
      const store = fakeStore(options.used, options.delayMs);
      // A prefix per limiter: every test starts from nothing, like a new memory limiter.
      const limiter = new RedisLimiter({
        redis: redisClient,
        store,
        clock: () => clock.now,
        prefix: `${REDIS_PREFIX}${++redisLimiters}:`,
      });
      return { clock, store, limiter };
    },
  },
];

/** An admission that must have been answered synchronously. */
function now(result: Admission | Promise<Admission>): Admission {
  assert.ok(!(result instanceof Promise), 'admit should answer synchronously');
  return result;
}

function allowed(admission: Admission): Ticket {
  assert.ok(admission.ok, admission.ok ? '' : `refused: ${admission.message}`);
  return admission.ticket;
}

function refused(admission: Admission) {
  assert.ok(!admission.ok, 'expected a refusal');
  return admission;
}

for (const f of FLAVOURS) {
  /** An admission that needed no store read: synchronous from the memory limiter. */
  const sync = async (result: Admission | Promise<Admission>): Promise<Admission> =>
    f.sync ? now(result) : await result;

  test(`${f.name}: rpm is exact under 50 concurrent admits, both on first sight (store read) and in the steady state`, async (t) => {
    const env = await f.setup(t, { delayMs: 5 });
    if (env === null) return;
    const { limiter, store } = env;
    const s = subject({ limits: { rpm: 10 }, keyBudget: { day: 1_000_000 } });
    const first = await Promise.all(Array.from({ length: 50 }, () => limiter.admit(s, 1)));
    assert.equal(first.filter((a) => a.ok).length, 10);
    assert.equal(store.calls.length, 1, 'one store read shared by all waiting admits');

    const other = subject({ keyId: 'key_b', limits: { rpm: 10 } });
    const steady = await Promise.all(Array.from({ length: 50 }, async () => limiter.admit(other, 1)));
    assert.equal(steady.filter((a) => a.ok).length, 10);
    const refusal = refused(steady.find((a) => !a.ok)!);
    assert.equal(refusal.reason, 'rpm');
    assert.equal(refusal.retryAfterSeconds, 6);
    assert.equal(refusal.headers['retry-after'], '6');
    assert.match(refusal.message, /10 requests per minute/);
  });

  test(`${f.name}: rpm refills continuously: one more request every 6 s at 10 per minute`, async (t) => {
    const env = await f.setup(t);
    if (env === null) return;
    const { limiter, clock } = env;
    const s = subject({ limits: { rpm: 10 } });
    for (let i = 0; i < 10; i++) allowed(await sync(limiter.admit(s, 0)));
    refused(await sync(limiter.admit(s, 0)));
    clock.now += 5_999;
    assert.equal(refused(await sync(limiter.admit(s, 0))).retryAfterSeconds, 1);
    clock.now += 1;
    allowed(await sync(limiter.admit(s, 0)));
    assert.equal(refused(await sync(limiter.admit(s, 0))).retryAfterSeconds, 6);
    clock.now += 60_000;
    for (let i = 0; i < 10; i++) allowed(await sync(limiter.admit(s, 0)));
    refused(await sync(limiter.admit(s, 0)));
  });

  test(`${f.name}: tpm reserves the estimate and settles with the real usage`, async (t) => {
    const env = await f.setup(t);
    if (env === null) return;
    const { limiter, clock } = env;
    const s = subject({ limits: { tpm: 1000 } });
    const first = allowed(await sync(limiter.admit(s, 600)));
    const refusal = refused(await sync(limiter.admit(s, 600)));
    assert.equal(refusal.reason, 'tpm');
    assert.equal(refusal.retryAfterSeconds, 12); // 200 tokens at 1000/min
    assert.match(refusal.message, /1000 tokens per minute.*about 600/);
    limiter.settle(first, 100); // refund 500: 900 available
    allowed(await sync(limiter.admit(s, 600)));

    // An under-estimate is charged extra: the next request waits.
    const other = subject({ keyId: 'key_b', limits: { tpm: 1000 } });
    const ticket = allowed(await sync(limiter.admit(other, 500)));
    limiter.settle(ticket, 900); // 100 left
    const wait = refused(await sync(limiter.admit(other, 200)));
    assert.equal(wait.reason, 'tpm');
    assert.equal(wait.retryAfterSeconds, 6);
    clock.now += 6_000;
    allowed(await sync(limiter.admit(other, 200)));
  });

  test(`${f.name}: tpm: a request larger than the whole limit needs a full bucket and overdraws it; refunds stop at capacity`, async (t) => {
    const env = await f.setup(t);
    if (env === null) return;
    const { limiter } = env;
    const s = subject({ limits: { tpm: 1000 } });
    const big = allowed(await sync(limiter.admit(s, 1500)));
    const refusal = refused(await sync(limiter.admit(s, 1)));
    assert.equal(refusal.retryAfterSeconds, 31); // 501 tokens at 1000/min = 30.06 s
    assert.equal(refusal.headers['x-ratelimit-remaining-tokens'], '0');
    limiter.settle(big, 0);
    const after = allowed(await sync(limiter.admit(s, 0)));
    limiter.settle(after, 0);
    const headers = (await sync(limiter.admit(s, 0))).headers;
    assert.equal(headers['x-ratelimit-remaining-tokens'], '1000');
  });

  test(`${f.name}: concurrency: at most 3 in flight, settle frees a slot, settling twice frees only one`, async (t) => {
    const env = await f.setup(t);
    if (env === null) return;
    const { limiter } = env;
    const s = subject({ limits: { concurrency: 3 } });
    const tickets: Ticket[] = [];
    for (let i = 0; i < 3; i++) tickets.push(allowed(await sync(limiter.admit(s, 10))));
    const refusal = refused(await sync(limiter.admit(s, 10)));
    assert.equal(refusal.reason, 'concurrency');
    assert.equal(refusal.retryAfterSeconds, 1);
    assert.match(refusal.message, /allows 3 at a time/);
    limiter.settle(tickets[0]!, 10);
    allowed(await sync(limiter.admit(s, 10)));
    limiter.settle(tickets[0]!, 10);
    limiter.settle(tickets[0]!, 0);
    assert.equal(refused(await sync(limiter.admit(s, 10))).reason, 'concurrency');
  });

  test(`${f.name}: key budgets per day and per month: reason, message with the size and reset time, retry-after`, async (t) => {
    const env = await f.setup(t);
    if (env === null) return;
    const { limiter } = env;
    const daily = subject({ keyBudget: { day: 1000 } });
    limiter.settle(allowed(await limiter.admit(daily, 600)), 600);
    const day = refused(await sync(limiter.admit(daily, 500)));
    assert.equal(day.reason, 'key_budget_day');
    assert.equal(day.retryAfterSeconds, (NEXT_DAY - T0) / 1000);
    assert.equal(day.headers['retry-after'], String((NEXT_DAY - T0) / 1000));
    assert.match(day.message, /this key's daily budget is 1000 tokens/);
    assert.match(day.message, /600 are used/);
    assert.ok(day.message.includes(new Date(NEXT_DAY).toISOString()));
    allowed(await sync(limiter.admit(daily, 400))); // exactly reaches the budget
    refused(await sync(limiter.admit(daily, 0))); // used up: even an empty request waits

    const monthly = subject({ keyId: 'key_m', keyBudget: { month: 1000 } });
    limiter.settle(allowed(await limiter.admit(monthly, 900)), 900);
    const month = refused(await sync(limiter.admit(monthly, 200)));
    assert.equal(month.reason, 'key_budget_month');
    assert.equal(month.retryAfterSeconds, (NEXT_MONTH - T0) / 1000);
    assert.match(month.message, /this key's monthly budget is 1000 tokens/);
    assert.ok(month.message.includes('2025-02-01T00:00:00.000Z'));
  });

  test(`${f.name}: workspace budgets are shared by the keys of the workspace`, async (t) => {
    const env = await f.setup(t);
    if (env === null) return;
    const { limiter } = env;
    const budget = { day: 1000, month: 5000 };
    const a = subject({ keyId: 'key_1', workspaceBudget: budget });
    const b = subject({ keyId: 'key_2', workspaceBudget: budget });
    const elsewhere = subject({ keyId: 'key_3', workspaceId: 'ws_b', workspaceBudget: budget });
    limiter.settle(allowed(await limiter.admit(a, 700)), 700);
    const day = refused(await limiter.admit(b, 400));
    assert.equal(day.reason, 'workspace_budget_day');
    assert.equal(day.retryAfterSeconds, (NEXT_DAY - T0) / 1000);
    assert.match(day.message, /the workspace's daily budget is 1000 tokens/);
    assert.ok(day.message.includes(new Date(NEXT_DAY).toISOString()));
    allowed(await limiter.admit(elsewhere, 400));

    const monthly = { day: null, month: 1000 };
    const c = subject({ keyId: 'key_4', workspaceId: 'ws_c', workspaceBudget: monthly });
    const d = subject({ keyId: 'key_5', workspaceId: 'ws_c', workspaceBudget: monthly });
    limiter.settle(allowed(await limiter.admit(c, 999)), 999);
    const month = refused(await limiter.admit(d, 2));
    assert.equal(month.reason, 'workspace_budget_month');
    assert.equal(month.retryAfterSeconds, (NEXT_MONTH - T0) / 1000);
    assert.match(month.message, /the workspace's monthly budget is 1000 tokens/);
    assert.ok(month.message.includes('2025-02-01T00:00:00.000Z'));
  });

  test(`${f.name}: when several limits refuse, the longest wait is reported`, async (t) => {
    const env = await f.setup(t, { used: () => 1000 });
    if (env === null) return;
    const { limiter } = env;
    const s = subject({ limits: { rpm: 1 }, keyBudget: { day: 1000, month: 1000 } });
    const refusal = refused(await limiter.admit(s, 1));
    assert.equal(refusal.reason, 'key_budget_month');
    assert.equal(refusal.retryAfterSeconds, (NEXT_MONTH - T0) / 1000);
  });

  test(`${f.name}: budget reservations: concurrent requests cannot together overshoot the budget`, async (t) => {
    const env = await f.setup(t);
    if (env === null) return;
    const { limiter } = env;
    const s = subject({ keyBudget: { day: 1000 } });
    const first = allowed(await limiter.admit(s, 600));
    assert.equal(refused(await sync(limiter.admit(s, 600))).reason, 'key_budget_day');
    limiter.settle(first, 100);
    allowed(await sync(limiter.admit(s, 600)));
    refused(await sync(limiter.admit(s, 301)));
    allowed(await sync(limiter.admit(s, 300)));
  });

  test(`${f.name}: budget counters start from the store usage of the period, read once and then cached`, async (t) => {
    const env = await f.setup(t, {
      used: (filter) => (filter.keyId === 'key_a' && filter.since === DAY_START ? 900 : 0),
    });
    if (env === null) return;
    const { limiter, store } = env;
    const s = subject({ keyBudget: { day: 1000, month: 100_000 } });
    const pending = limiter.admit(s, 200);
    assert.ok(pending instanceof Promise, 'the first admit reads the store');
    const refusal = refused(await pending);
    assert.equal(refusal.reason, 'key_budget_day');
    assert.match(refusal.message, /900 are used/);
    assert.deepEqual(
      store.calls.map((c) => [c.keyId, c.since]),
      [
        ['key_a', DAY_START],
        ['key_a', MONTH_START],
      ],
    );
    allowed(await sync(limiter.admit(s, 100)));
    refused(await sync(limiter.admit(s, 1)));
    assert.equal(store.calls.length, 2);

    // A workspace budget is read per workspace.
    const w = subject({ keyId: 'key_b', workspaceBudget: { day: 10 } });
    allowed(await limiter.admit(w, 5));
    assert.deepEqual(store.calls.at(-1), { workspaceId: 'ws_a', since: DAY_START });
  });

  test(`${f.name}: a failing store read rejects the admit and is retried by the next one`, async (t) => {
    let fail = true;
    const env = await f.setup(t, {
      used: () => {
        if (fail) throw new Error('database is down');
        return 0;
      },
    });
    if (env === null) return;
    const { limiter } = env;
    const s = subject({ keyBudget: { day: 100 } });
    await assert.rejects(async () => limiter.admit(s, 1), /database is down/);
    fail = false;
    allowed(await limiter.admit(s, 1));
  });

  test(`${f.name}: budgets roll over at UTC midnight and on the first of the month, re-reading the store`, async (t) => {
    const env = await f.setup(t);
    if (env === null) return;
    const { limiter, clock, store } = env;
    const s = subject({ keyBudget: { day: 1000, month: 7000 } });
    limiter.settle(allowed(await limiter.admit(s, 900)), 900);
    clock.now = NEXT_DAY - 1;
    assert.equal(refused(await sync(limiter.admit(s, 200))).reason, 'key_budget_day');
    const late = allowed(await sync(limiter.admit(s, 100))); // in flight across midnight
    refused(await sync(limiter.admit(s, 0)));

    clock.now = NEXT_DAY;
    const pending = limiter.admit(s, 400);
    assert.ok(pending instanceof Promise, 'a new day is read from the store');
    allowed(await pending);
    assert.equal(store.calls.length, 3, 'only the day is read again');
    assert.deepEqual(store.calls.at(-1), { keyId: 'key_a', since: NEXT_DAY });

    // A request of the old day settles into the old day (and the month), not the new day.
    limiter.settle(late, 5000);
    allowed(await sync(limiter.admit(s, 600)));
    assert.equal(refused(await sync(limiter.admit(s, 1))).reason, 'key_budget_day');

    // The month has 900 + 5000 + 400 + 600 = 6900.
    const jan17 = NEXT_DAY + 86_400_000;
    clock.now = jan17;
    const month = refused(await limiter.admit(s, 200));
    assert.equal(month.reason, 'key_budget_month');
    assert.equal(month.retryAfterSeconds, (NEXT_MONTH - jan17) / 1000);
    allowed(await sync(limiter.admit(s, 100)));

    clock.now = NEXT_MONTH;
    allowed(await limiter.admit(s, 1000));
    assert.deepEqual(
      store.calls.slice(-2).map((c) => c.since),
      [NEXT_MONTH, NEXT_MONTH],
    );
  });

  test(`${f.name}: a refusal by one limit consumes nothing of the others`, async (t) => {
    const env = await f.setup(t);
    if (env === null) return;
    const { limiter, clock } = env;
    const s = subject({ limits: { rpm: 10, tpm: 10_000, concurrency: 1 }, keyBudget: { day: 100 } });
    const refusal = refused(await limiter.admit(s, 200));
    assert.equal(refusal.reason, 'key_budget_day');
    assert.equal(refusal.headers['x-ratelimit-remaining-requests'], '10');
    assert.equal(refusal.headers['x-ratelimit-remaining-tokens'], '10000');
    // The whole budget and the only concurrency slot are still free, rpm and tpm were not charged.
    const admitted = await sync(limiter.admit(s, 100));
    allowed(admitted);
    assert.equal(admitted.headers['x-ratelimit-remaining-requests'], '9');
    assert.equal(admitted.headers['x-ratelimit-remaining-tokens'], '9900');

    // rpm refuses: the budget is not reserved.
    const r = subject({ keyId: 'key_b', limits: { rpm: 1 }, keyBudget: { day: 100 } });
    limiter.settle(allowed(await limiter.admit(r, 50)), 50);
    assert.equal(refused(await sync(limiter.admit(r, 50))).reason, 'rpm');
    clock.now += 60_000;
    allowed(await sync(limiter.admit(r, 50)));
  });

  test(`${f.name}: rate-limit headers: only for configured limits, consistent with what remains`, async (t) => {
    const env = await f.setup(t);
    if (env === null) return;
    const { limiter, clock } = env;
    assert.deepEqual(
      (await sync(limiter.admit(subject({ keyId: 'none', keyBudget: NO_BUDGET }), 5))).headers,
      {},
    );
    assert.deepEqual(
      (await sync(limiter.admit(subject({ keyId: 'conc', limits: { concurrency: 4 } }), 5))).headers,
      {},
    );

    const rpm = subject({ keyId: 'rpm', limits: { rpm: 10 } });
    assert.deepEqual((await sync(limiter.admit(rpm, 5))).headers, {
      'x-ratelimit-limit-requests': '10',
      'x-ratelimit-remaining-requests': '9',
      'x-ratelimit-reset-requests': '6s',
    });
    await sync(limiter.admit(rpm, 5));
    const third = (await sync(limiter.admit(rpm, 5))).headers;
    assert.equal(third['x-ratelimit-remaining-requests'], '7');
    assert.equal(third['x-ratelimit-reset-requests'], '18s');
    assert.equal(third['x-ratelimit-limit-tokens'], undefined);

    const both = subject({ keyId: 'both', limits: { rpm: 60, tpm: 1000 } });
    const headers = (await sync(limiter.admit(both, 250))).headers;
    assert.deepEqual(headers, {
      'x-ratelimit-limit-requests': '60',
      'x-ratelimit-remaining-requests': '59',
      'x-ratelimit-reset-requests': '1s',
      'x-ratelimit-limit-tokens': '1000',
      'x-ratelimit-remaining-tokens': '750',
      'x-ratelimit-reset-tokens': '15s',
    });
    clock.now += 7_500; // half of it back
    const later = refused(await sync(limiter.admit(both, 1000))).headers;
    assert.equal(later['x-ratelimit-remaining-tokens'], '875');
    assert.equal(later['x-ratelimit-reset-tokens'], '8s');
    assert.equal(later['x-ratelimit-remaining-requests'], '60');
    assert.equal(later['retry-after'], '8');
  });

  test(`${f.name}: changed limits apply on the next admit without losing what was used`, async (t) => {
    const env = await f.setup(t);
    if (env === null) return;
    const { limiter } = env;
    allowed(await sync(limiter.admit(subject({ limits: { rpm: 10 } }), 0)));
    const lowered = subject({ limits: { rpm: 3 } });
    allowed(await sync(limiter.admit(lowered, 0)));
    allowed(await sync(limiter.admit(lowered, 0)));
    allowed(await sync(limiter.admit(lowered, 0)));
    refused(await sync(limiter.admit(lowered, 0)));
    const blocked = refused(await sync(limiter.admit(subject({ limits: { rpm: 0 } }), 0)));
    assert.equal(blocked.retryAfterSeconds, 60);
    allowed(await sync(limiter.admit(subject(), 0)));
  });

  test(`${f.name}: forget drops an idle key (budgets re-read from the store) but keeps one in flight`, async (t) => {
    const env = await f.setup(t);
    if (env === null) return;
    const { limiter, store } = env;
    const s = subject({ limits: { concurrency: 1 }, keyBudget: { day: 1000 } });
    const ticket = allowed(await limiter.admit(s, 10));
    limiter.forget('key_a');
    assert.equal(refused(await sync(limiter.admit(s, 10))).reason, 'concurrency');
    limiter.settle(ticket, 10);
    limiter.forget('key_a');
    assert.equal(store.calls.length, 1);
    const pending = limiter.admit(s, 10);
    assert.ok(pending instanceof Promise);
    allowed(await pending);
    assert.equal(store.calls.length, 2);
  });

  test(`${f.name}: settle refuses a ticket from another limiter; admit after close throws`, async (t) => {
    const first = await f.setup(t);
    const second = await f.setup(t);
    if (first === null || second === null) return;
    const one = first.limiter;
    const two = second.limiter;
    const ticket = allowed(await sync(one.admit(subject(), 1)));
    assert.throws(() => two.settle(ticket, 1), TypeError);
    assert.throws(
      () => two.settle({ keyId: 'k', workspaceId: 'w', estimatedTokens: 1, admittedAt: 0 }, 1),
      TypeError,
    );
    one.close();
    assert.throws(() => one.admit(subject(), 1), /closed/);
  });
}

test('the steady-state admit is synchronous; without budgets even the first one is', async () => {
  const { limiter } = setup();
  allowed(now(limiter.admit(subject({ limits: { rpm: 5, tpm: 500, concurrency: 2 } }), 10)));
  const s = subject({
    keyId: 'key_b',
    limits: { rpm: 5 },
    keyBudget: { day: 100 },
    workspaceBudget: { month: 100 },
  });
  const first = limiter.admit(s, 1);
  assert.ok(first instanceof Promise);
  allowed(await first);
  allowed(now(limiter.admit(s, 1)));
});

test('memory is bounded, but a key with requests in flight is never evicted', () => {
  const { limiter } = setup({ maxKeys: 2 });
  const busy = subject({ keyId: 'busy', limits: { concurrency: 1, rpm: 100 } });
  const ticket = allowed(now(limiter.admit(busy, 0)));
  for (const id of ['b', 'c', 'd', 'e']) allowed(now(limiter.admit(subject({ keyId: id }), 0)));
  assert.equal(refused(now(limiter.admit(busy, 0))).reason, 'concurrency');
  limiter.settle(ticket, 0);
  const again = allowed(now(limiter.admit(busy, 0)));
  // Still the same state: 100 - 2 admitted (a reset would show 99).
  assert.equal(refused(now(limiter.admit(busy, 0))).headers['x-ratelimit-remaining-requests'], '98');
  limiter.settle(again, 0);

  // An idle key can be evicted: it starts over (the documented trade-off).
  const idle = subject({ keyId: 'idle', limits: { rpm: 1 } });
  limiter.settle(allowed(now(limiter.admit(idle, 0))), 0);
  refused(now(limiter.admit(idle, 0)));
  for (const id of ['f', 'g', 'h']) allowed(now(limiter.admit(subject({ keyId: id }), 0)));
  allowed(now(limiter.admit(idle, 0)));
});

/** The estimate of a body as the gateway computes it: from the body's JSON text. */
function estimateOf(body: Record<string, unknown>, endpoint: 'chat' | 'fim' | 'embeddings'): number {
  return estimateTokens(body, endpoint, Buffer.byteLength(JSON.stringify(body)));
}

test('estimateTokens: the whole body / 4 plus the completion the request may produce', () => {
  const chat = { messages: [{ role: 'user', content: 'abcdefgh' }], max_tokens: 100 };
  const bytes = Buffer.byteLength(JSON.stringify(chat));
  assert.equal(estimateOf(chat, 'chat'), Math.ceil(bytes / 4) + 100);
  // Everything in the body counts, whichever member holds it: a prompt moved into `tools` too.
  const tools = {
    messages: [{ role: 'user', content: 'hi' }],
    tools: [{ type: 'function', function: { name: 'f', description: 'x'.repeat(4000) } }],
  };
  assert.ok(estimateOf(tools, 'chat') >= 1000 + DEFAULT_COMPLETION_RESERVE);
  assert.equal(estimateTokens({ messages: [] }, 'chat', 40), 10 + DEFAULT_COMPLETION_RESERVE);
  assert.equal(estimateTokens({ max_tokens: 10, n: 3 }, 'chat', 4), 1 + 30);
  assert.equal(estimateTokens({ max_tokens: 0 }, 'fim', 9), 3);
  assert.equal(estimateTokens({ max_tokens: 50 }, 'embeddings', 12), 3);
  // Token ids count one each, even when fewer bytes than tokens.
  assert.equal(estimateTokens({ input: [[1, 2, 3], [4]] }, 'embeddings', 13), 4);
  assert.equal(estimateTokens({ input: [1, 2, 3, 4, 5, 6, 7, 8] }, 'embeddings', 27), 8);
  // Multi-byte text counts by bytes, not characters.
  assert.equal(estimateTokens({}, 'embeddings', Buffer.byteLength('日本語')), 3);
});

test('estimateTokens never throws on weird input', () => {
  const weird: Record<string, unknown>[] = [
    {},
    { messages: null },
    { messages: 'hello' },
    {
      messages: [
        null,
        1,
        'x',
        [],
        [[['deep']]],
        { content: null },
        { content: 5 },
        { content: [null, 3, [{ text: 7 }]] },
      ],
    },
    { messages: [{ content: [[[[[[[[[['too deep']]]]]]]]]] }], max_tokens: -5 },
    { prompt: 42, suffix: null, max_tokens: 'lots' },
    { input: null },
    { input: [null, 1.5, { text: 'ab' }, [['cd', [['ef']]]]] },
    { max_tokens: Number.POSITIVE_INFINITY, n: 1e9 },
    // Found by fast-check: a huge max_tokens times a huge n overflowed to Infinity.
    { n: 1877141053125794, max_tokens: 9.57676106368681e292 },
  ];
  for (const body of weird) {
    for (const endpoint of ['chat', 'fim', 'embeddings'] as const) {
      const n = estimateOf(body, endpoint);
      assert.ok(Number.isInteger(n) && n >= 0, `${JSON.stringify(body)} ${endpoint}: ${n}`);
    }
  }
  fc.assert(
    fc.property(
      fc.dictionary(
        fc.constantFrom('messages', 'prompt', 'suffix', 'input', 'max_tokens', 'n', 'x'),
        fc.anything(),
      ),
      fc.constantFrom('chat' as const, 'fim' as const, 'embeddings' as const),
      fc.nat(),
      (body, endpoint, bytes) => {
        const n = estimateTokens(body, endpoint, bytes);
        return Number.isInteger(n) && n >= 0 && n >= Math.ceil(bytes / 4);
      },
    ),
  );
});

test('property: admitted requests never exceed the token-bucket bound, concurrency never exceeds its limit', () => {
  const step = fc.record({
    dt: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 2_000 }), fc.integer({ min: 0, max: 30_000 })),
    settle: fc.boolean(),
    pick: fc.nat(),
    tokens: fc.integer({ min: 0, max: 300 }),
  });
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 20 }),
      fc.option(fc.integer({ min: 1, max: 5 }), { nil: null }),
      fc.array(step, { minLength: 1, maxLength: 300 }),
      (rpm, concurrency, steps) => {
        const { limiter, clock } = setup({ maxKeys: 10 });
        const s = subject({ limits: { rpm, concurrency, tpm: 2000 } });
        const admittedAt: number[] = [];
        const open: Ticket[] = [];
        const settled: Ticket[] = [];
        for (const { dt, settle, pick, tokens } of steps) {
          clock.now += dt;
          if (settle && (open.length > 0 || settled.length > 0)) {
            // Settle an open ticket, or settle a settled one again (must change nothing).
            if (open.length > 0 && pick % 4 !== 0) {
              const [ticket] = open.splice(pick % open.length, 1);
              limiter.settle(ticket!, tokens);
              settled.push(ticket!);
            } else if (settled.length > 0) {
              limiter.settle(settled[pick % settled.length]!, tokens);
            }
            continue;
          }
          const admission = now(limiter.admit(s, tokens));
          if (admission.ok) {
            admittedAt.push(clock.now);
            open.push(admission.ticket);
          } else {
            assert.ok(Number.isInteger(admission.retryAfterSeconds) && admission.retryAfterSeconds >= 1);
          }
          if (concurrency !== null) assert.ok(open.length <= concurrency);
        }
        // In any interval [a, b], at most rpm + (b - a) * rpm / 60 s requests.
        for (let i = 0; i < admittedAt.length; i++) {
          for (let j = i; j < admittedAt.length; j++) {
            const span = admittedAt[j]! - admittedAt[i]!;
            if (j - i + 1 > rpm + Math.floor((span * rpm) / 60_000)) {
              assert.fail(`${j - i + 1} requests in ${span} ms at ${rpm} per minute`);
            }
          }
        }
        // Everything settled and a minute later: the full concurrency and rpm are available again.
        for (const ticket of open) limiter.settle(ticket, 0);
        clock.now += 120_000;
        const full = Math.min(rpm, concurrency ?? rpm);
        for (let i = 0; i < full; i++) allowed(now(limiter.admit(s, 0)));
      },
    ),
    { numRuns: 200 },
  );
});
