/**
 * What only a shared limiter has to get right: several instances (separate connections) against
 * one Redis, leases of instances that die, settles replayed, UTC periods computed by Redis, the
 * same answers as the memory limiter, and — against a redis-server started here — the fallbacks
 * when Redis goes away or hangs, recovery when it comes back, and the key-change broadcast.
 *
 * The shared Redis is used under a random prefix deleted at the end (skipped with the reason when
 * it cannot be reached, failed under CI).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, type TestContext, test } from 'node:test';
import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { KeyEvents } from '../../src/auth/key-events.ts';
import { createMemoryLimiter } from '../../src/limits/memory.ts';
import { utcPeriods } from '../../src/limits/period.ts';
import { createRedisClient, RedisLimiter, RedisLimiterError } from '../../src/limits/redis.ts';
import { type LimiterState, ResilientLimiter } from '../../src/limits/resilient.ts';
import {
  type Admission,
  LimiterUnavailableError,
  type LimitSubject,
  type Ticket,
} from '../../src/limits/types.ts';
import type { TokenFilter } from '../../src/store/types.ts';
import { subject } from '../support/limits.ts';
import {
  cleanup,
  eventually,
  REDIS_URL,
  RedisProcess,
  redisOrSkip,
  redisServerOrSkip,
  testClient,
  testPrefix,
} from '../support/redis.ts';

const T0 = Date.UTC(2025, 0, 15, 12);
const NEXT_DAY = Date.UTC(2025, 0, 16);
const NEXT_MONTH = Date.UTC(2025, 1, 1);

const PREFIX = testPrefix();
let prefixes = 0;
/** A prefix of its own under this file's prefix. */
function freshPrefix(): string {
  return `${PREFIX}${++prefixes}:`;
}

const clients: Redis[] = [];
let sharedUsed = false;
/** A client to the shared Redis, quit at the end. */
function client(): Redis {
  const redis = testClient();
  clients.push(redis);
  sharedUsed = true;
  return redis;
}

const servers: RedisProcess[] = [];
const closers: (() => unknown)[] = [];
/** Closes a client without leaving ioredis's 2 s disconnect timer behind. */
async function close(redis: Redis): Promise<void> {
  if (redis.status === 'ready') await redis.quit();
  else if (redis.status !== 'end') redis.disconnect();
}
after(async () => {
  for (const closer of closers) await closer();
  await Promise.all(clients.map(close));
  if (sharedUsed) {
    const redis = testClient();
    await cleanup(redis, PREFIX);
    await redis.quit();
  }
  for (const server of servers) await server.stop();
});

function countingStore(used: (filter: TokenFilter) => number = () => 0) {
  const calls: TokenFilter[] = [];
  return {
    calls,
    async tokensUsed(filter: TokenFilter): Promise<number> {
      calls.push(filter);
      await new Promise((resolve) => setTimeout(resolve, 2));
      return used(filter);
    },
  };
}

function allowed(admission: Admission): Ticket {
  assert.ok(admission.ok, admission.ok ? '' : `refused: ${admission.message}`);
  return admission.ticket;
}

function refused(admission: Admission) {
  assert.ok(!admission.ok, 'expected a refusal');
  return admission;
}

/**
 * `count` instances on connections of their own, sharing a prefix and a fake clock (at T0), each
 * with a store of its own that answers `used`.
 */
function instances(count: number, options: { used?: () => number; leaseMs?: number } = {}) {
  const clock = { now: T0 };
  const prefix = freshPrefix();
  const list = Array.from({ length: count }, () => {
    const store = countingStore(options.used);
    const redis = client();
    const limiter = new RedisLimiter({
      redis,
      store,
      prefix,
      clock: () => clock.now,
      ...(options.leaseMs !== undefined ? { leaseMs: options.leaseMs } : {}),
    });
    return { limiter, store, redis };
  });
  return { clock, prefix, list };
}

/** 50 admits at once, spread round-robin over the instances. */
function spread(list: { limiter: RedisLimiter }[], s: LimitSubject, estimate: number) {
  return Promise.all(Array.from({ length: 50 }, (_, i) => list[i % list.length]!.limiter.admit(s, estimate)));
}

test('three instances: 50 concurrent admits against rpm 10 admit exactly 10, and concurrency 3 exactly 3', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const { list } = instances(3);
  const rpm = await spread(list, subject({ limits: { rpm: 10 } }), 1);
  assert.equal(rpm.filter((a) => a.ok).length, 10);
  for (const refusal of rpm.filter((a) => !a.ok)) assert.equal(refused(refusal).reason, 'rpm');

  const concurrent = await spread(list, subject({ keyId: 'key_c', limits: { concurrency: 3 } }), 1);
  const tickets = concurrent.filter((a) => a.ok).map(allowed);
  assert.equal(tickets.length, 3);
  // A slot freed by one instance can be taken by another.
  await list[0]!.limiter.settleAsync(tickets.find((x) => list[0]!.limiter.owns(x)) ?? tickets[0]!, 1);
  const again = await spread(list, subject({ keyId: 'key_c', limits: { concurrency: 3 } }), 1);
  assert.equal(again.filter((a) => a.ok).length, 1);
});

test('a budget holds across instances: seeded once from the store, reservations and settles shared', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const { list } = instances(3, { used: () => 200 });
  const s = subject({ keyBudget: { day: 1000 }, workspaceBudget: { month: 10_000 } });
  // 200 already used: 8 reservations of 100 fit, whichever instance takes them.
  const first = await spread(list, s, 100);
  const tickets = first.filter((a) => a.ok).map(allowed);
  assert.equal(tickets.length, 8);
  const reasons = new Set(first.filter((a) => !a.ok).map((a) => refused(a).reason));
  assert.deepEqual([...reasons], ['key_budget_day']);
  // Each counter was seeded once per instance at most, and SET NX kept the first: not 3 × 200.
  for (const { store } of list) assert.ok(store.calls.length <= 2);
  assert.match(refused(first.find((a) => !a.ok)!).message, /1000 are used or reserved/);

  // Each settles for 50: 200 + 8 × 50 = 600 used, so 4 more reservations of 100 fit.
  await Promise.all(
    tickets.map((ticket) => list.find((i) => i.limiter.owns(ticket))!.limiter.settleAsync(ticket, 50)),
  );
  const second = await spread(list, s, 100);
  assert.equal(second.filter((a) => a.ok).length, 4);
});

test('leases: the slots of an instance that dies without settling come back after the lease', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const { clock, list } = instances(2, { leaseMs: 30_000 });
  const [doomed, survivor] = list as [(typeof list)[0], (typeof list)[0]];
  const s = subject({ limits: { concurrency: 2 } });
  allowed(await doomed.limiter.admit(s, 1));
  allowed(await doomed.limiter.admit(s, 1));
  assert.equal(refused(await survivor.limiter.admit(s, 1)).reason, 'concurrency');
  doomed.redis.disconnect(); // it "dies"

  clock.now += 29_999;
  assert.equal(refused(await survivor.limiter.admit(s, 1)).reason, 'concurrency');
  clock.now += 1;
  const a = allowed(await survivor.limiter.admit(s, 1));
  allowed(await survivor.limiter.admit(s, 1));
  refused(await survivor.limiter.admit(s, 1));
  // The survivor's own leases are freed by settling, as usual.
  await survivor.limiter.settleAsync(a, 1);
  allowed(await survivor.limiter.admit(s, 1));
});

test('settle is idempotent: a settle replayed (sent twice at once, or again later) is applied once', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const { list } = instances(1);
  const { limiter } = list[0]!;
  const s = subject({ limits: { concurrency: 2, tpm: 10_000 }, keyBudget: { day: 1000 } });
  const ticket = allowed(await limiter.admit(s, 600));
  const other = allowed(await limiter.admit(s, 100));
  // Both calls reach Redis (the ticket is marked settled only when Redis answers).
  await Promise.all([limiter.settleAsync(ticket, 0), limiter.settleAsync(ticket, 0)]);
  await limiter.settleAsync(ticket, 900);
  // One slot freed (the other ticket still holds one), the reservation of 600 refunded once.
  allowed(await limiter.admit(s, 899));
  const refusal = refused(await limiter.admit(s, 1));
  assert.equal(refusal.reason, 'concurrency');
  // The budget: 600 − 600 + 100 + 899 = 999 of 1000.
  await limiter.settleAsync(other, 100);
  allowed(await limiter.admit(s, 1));
  assert.equal(refused(await limiter.admit(s, 1)).reason, 'key_budget_day');
  // tpm: 10 000 − 100 − 899 − the 600 refunded once = 9001 remaining.
  assert.equal(refusal.headers['x-ratelimit-remaining-tokens'], '9001');
});

test('period rollover: a settle after midnight corrects the old day and the month, never the new day', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const { clock, prefix, list } = instances(1);
  const { limiter, redis } = list[0]!;
  const s = subject({ keyBudget: { day: 1000, month: 100_000 } });
  clock.now = NEXT_DAY - 1;
  const late = allowed(await limiter.admit(s, 300));
  clock.now = NEXT_DAY;
  allowed(await limiter.admit(s, 100));
  await limiter.settleAsync(late, 50);
  const day = (start: number) => redis.get(`${prefix}kd:${start}:key_a`);
  assert.equal(await day(NEXT_DAY - 86_400_000), '50');
  assert.equal(await day(NEXT_DAY), '100');
  assert.equal(await redis.get(`${prefix}km:${Date.UTC(2025, 0, 1)}:key_a`), '150');
  // A settle in a new month leaves the new month alone too.
  clock.now = NEXT_MONTH - 1;
  const old = allowed(await limiter.admit(s, 10));
  clock.now = NEXT_MONTH;
  allowed(await limiter.admit(s, 20));
  await limiter.settleAsync(old, 1000);
  assert.equal(await redis.get(`${prefix}km:${NEXT_MONTH}:${'key_a'}`), '20');
  // The old counters expire on their own, an hour after their period (relative TTLs).
  const ttl = await redis.pttl(`${prefix}km:${Date.UTC(2025, 0, 1)}:key_a`);
  assert.ok(ttl > 0 && ttl <= 17 * 86_400_000 + 3_600_000, `ttl ${ttl}`);
});

test('UTC days and months computed in Redis agree with utcPeriods (leap years, year ends, any date)', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const { list, clock } = instances(1, { used: () => 1_000_000 });
  const { limiter, store } = list[0]!;
  const edges = [
    Date.UTC(2024, 1, 29, 23, 59, 59, 999),
    Date.UTC(2024, 2, 1),
    Date.UTC(2025, 11, 31, 23, 59, 59, 999),
    Date.UTC(2026, 0, 1),
    Date.UTC(2000, 1, 29, 12),
    Date.UTC(2100, 1, 28, 23, 59, 59, 999),
    Date.UTC(2100, 2, 1),
    0,
  ];
  const times = [...edges, ...fc.sample(fc.integer({ min: 0, max: Date.UTC(2200, 0, 1) }), 100)];
  let i = 0;
  for (const time of times) {
    clock.now = time;
    const periods = utcPeriods(time);
    // Different keys, so that every time seeds its own counters.
    const month = refused(await limiter.admit(subject({ keyId: `m${i}`, keyBudget: { month: 1 } }), 1));
    assert.deepEqual(
      store.calls.at(-1),
      { keyId: `m${i}`, since: periods.monthStart },
      new Date(time).toISOString(),
    );
    assert.equal(month.retryAfterSeconds, Math.max(1, Math.ceil((periods.monthEnd - time) / 1000)));
    assert.ok(month.message.includes(new Date(periods.monthEnd).toISOString()), month.message);
    const day = refused(await limiter.admit(subject({ keyId: `d${i}`, keyBudget: { day: 1 } }), 1));
    assert.deepEqual(store.calls.at(-1), { keyId: `d${i}`, since: periods.dayStart });
    assert.ok(day.message.includes(new Date(periods.dayEnd).toISOString()), day.message);
    i++;
  }
});

test("without a clock the limiter uses Redis's clock: tickets, leases and periods by TIME", async (t) => {
  if (!(await redisOrSkip(t))) return;
  const redis = client();
  const prefix = freshPrefix();
  const limiter = new RedisLimiter({ redis, store: countingStore(), prefix, leaseMs: 60_000 });
  const ticket = allowed(await limiter.admit(subject({ keyBudget: { day: 10 } }), 1));
  const [seconds, micros] = await redis.time();
  const redisNow = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  assert.ok(ticket.admittedAt <= redisNow && ticket.admittedAt > redisNow - 10_000);
  const lease = Number(await redis.zscore(`${prefix}kl:key_a`, (ticket as unknown as { id: string }).id));
  assert.equal(lease, ticket.admittedAt + 60_000);
  assert.equal(
    await redis.get(`${prefix}kd:${utcPeriods(ticket.admittedAt).dayStart}:key_a`),
    '1',
    'the day counter is named after the day of Redis time',
  );
});

test('property: the Redis limiter gives the memory limiter’s answers to any sequence of admits and settles', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const redis = client();
  const option = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: null });
  const step = fc.record({
    dt: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 3_000 }), fc.integer({ min: 0, max: 40_000 })),
    op: fc.constantFrom('admit', 'admit', 'settle', 'resettle'),
    key: fc.integer({ min: 0, max: 1 }),
    pick: fc.nat(),
    tokens: fc.integer({ min: 0, max: 400 }),
  });
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(T0, NEXT_DAY - 600_000, NEXT_MONTH - 900_000),
      fc.record({
        rpm: option(fc.integer({ min: 0, max: 20 })),
        tpm: option(fc.integer({ min: 0, max: 3000 })),
        concurrency: option(fc.integer({ min: 1, max: 4 })),
      }),
      fc.record({
        day: option(fc.integer({ min: 0, max: 4000 })),
        month: option(fc.integer({ min: 0, max: 9000 })),
      }),
      fc.record({
        day: option(fc.integer({ min: 0, max: 6000 })),
        month: option(fc.integer({ min: 0, max: 9000 })),
      }),
      fc.integer({ min: 0, max: 3000 }),
      fc.array(step, { minLength: 1, maxLength: 120 }),
      async (start, limits, keyBudget, workspaceBudget, used, steps) => {
        const clock = { now: start };
        const store = { tokensUsed: async () => used };
        const memory = createMemoryLimiter({ store, clock: () => clock.now });
        // Leases longer than any sequence: the memory limiter has none.
        const shared = new RedisLimiter({
          redis,
          store,
          clock: () => clock.now,
          prefix: freshPrefix(),
          leaseMs: 1e10,
        });
        const subjects = [0, 1].map((k) => ({
          keyId: `key_${k}`,
          workspaceId: 'ws',
          limits,
          keyBudget,
          workspaceBudget,
        }));
        const open: [Ticket, Ticket][] = [];
        const done: [Ticket, Ticket][] = [];
        for (const { dt, op, key, pick, tokens } of steps) {
          clock.now += dt;
          if (op === 'settle' && open.length > 0) {
            const [pair] = open.splice(pick % open.length, 1);
            memory.settle(pair![0], tokens);
            shared.settle(pair![1], tokens);
            done.push(pair!);
          } else if (op === 'resettle' && done.length > 0) {
            const pair = done[pick % done.length]!;
            memory.settle(pair[0], tokens);
            shared.settle(pair[1], tokens);
          } else {
            const s = subjects[key]!;
            const m = await memory.admit(s, tokens);
            const r = await shared.admit(s, tokens);
            const view = (a: Admission) =>
              a.ok
                ? { ok: true, headers: a.headers, estimate: a.ticket.estimatedTokens }
                : {
                    ok: false,
                    reason: a.reason,
                    message: a.message,
                    retry: a.retryAfterSeconds,
                    headers: a.headers,
                  };
            assert.deepEqual(view(r), view(m), `at ${new Date(clock.now).toISOString()}`);
            if (m.ok && r.ok) open.push([m.ticket, r.ticket]);
          }
        }
      },
    ),
    { numRuns: 40 },
  );
});

// ——— Against a redis-server of our own: stopped, frozen and restarted mid-test. ———

async function ownServer(t: TestContext): Promise<RedisProcess | null> {
  if (!redisServerOrSkip(t)) return null;
  const server = await RedisProcess.start();
  servers.push(server);
  return server;
}

/** A resilient limiter on a fresh client of `server`, ready, recording its transitions. */
async function resilient(
  server: RedisProcess,
  options: { onRedisFailure: 'local' | 'deny'; used?: () => number; commandTimeoutMs?: number },
) {
  const redis = createRedisClient(server.url, 'keygate-test');
  redis.on('error', () => {});
  await once(redis, 'ready');
  const clock = { now: T0 };
  const transitions: LimiterState[] = [];
  const limiter = new ResilientLimiter({
    redis,
    store: countingStore(options.used),
    onRedisFailure: options.onRedisFailure,
    expectedInstances: 2,
    commandTimeoutMs: options.commandTimeoutMs ?? 200,
    probeIntervalMs: 50,
    clock: () => clock.now,
    onStateChange: (state) => transitions.push(state),
  });
  closers.push(() => limiter.close());
  clients.push(redis);
  return { limiter, redis, clock, transitions };
}

test('Redis stopped mid-test, local fallback: limits divided by the expected instances, then recovery', async (t) => {
  const server = await ownServer(t);
  if (server === null) return;
  const { limiter, transitions } = await resilient(server, { onRedisFailure: 'local', used: () => 600 });
  const s = subject({ limits: { rpm: 10 } });
  assert.equal(limiter.status(), 'ok');
  const inRedis = allowed(await limiter.admit(s, 1));
  allowed(await limiter.admit(s, 1));

  await server.stop();
  // Ten per minute over two instances: five here, whatever Redis had counted.
  const local: Ticket[] = [];
  for (let i = 0; i < 5; i++) {
    const admission = allowed(await limiter.admit(s, 1));
    local.push(admission);
  }
  const refusal = refused(await limiter.admit(s, 1));
  assert.equal(refusal.reason, 'rpm');
  assert.equal(refusal.headers['x-ratelimit-limit-requests'], '5');
  assert.equal(limiter.status(), 'degraded');
  assert.deepEqual(transitions, ['degraded']);
  // Budgets too: 600 of 1000 used, so each of the two instances may use half of the 400 left.
  const b = subject({ keyId: 'key_b', keyBudget: { day: 1000 } });
  allowed(await limiter.admit(b, 200));
  assert.equal(refused(await limiter.admit(b, 1)).reason, 'key_budget_day');
  // A Redis ticket settled while Redis is down is kept for later.
  limiter.settle(inRedis, 1);

  await server.start();
  await eventually(() => limiter.status() === 'ok', 'the limiter to recover');
  assert.deepEqual(transitions, ['degraded', 'ok']);
  // Back on Redis (a new, empty one): the full limit again, shared by every instance.
  const back = await limiter.admit(s, 1);
  assert.equal(allowed(back) !== undefined && back.headers['x-ratelimit-limit-requests'], '10');
  // Tickets admitted locally settle locally, without error.
  for (const ticket of local) limiter.settle(ticket, 1);
});

test('Redis stopped mid-test, deny: admits are refused with LimiterUnavailableError (503), then recovery', async (t) => {
  const server = await ownServer(t);
  if (server === null) return;
  const { limiter, transitions } = await resilient(server, { onRedisFailure: 'deny' });
  const s = subject({ limits: { rpm: 10 } });
  allowed(await limiter.admit(s, 1));
  await server.stop();
  await assert.rejects(
    async () => limiter.admit(s, 1),
    (error: unknown) =>
      error instanceof LimiterUnavailableError &&
      error.status === 503 &&
      error.reason === 'limiter_unavailable' &&
      error.retryAfterSeconds >= 1,
  );
  assert.equal(limiter.status(), 'degraded');
  await server.start();
  await eventually(() => limiter.status() === 'ok', 'the limiter to recover');
  allowed(await limiter.admit(s, 1));
  assert.deepEqual(transitions, ['degraded', 'ok']);
});

test('Redis frozen mid-test: a call slower than the timeout falls back; the late admit is released', async (t) => {
  const server = await ownServer(t);
  if (server === null) return;
  const { limiter, transitions } = await resilient(server, {
    onRedisFailure: 'local',
    commandTimeoutMs: 100,
  });
  const s = subject({ limits: { concurrency: 1 } });
  server.pause();
  try {
    // Redis takes the admit but does not answer: the local limiter decides (concurrency 1 / 2 → 1).
    const ticket = allowed(await limiter.admit(s, 1));
    assert.equal(limiter.status(), 'degraded');
    limiter.settle(ticket, 1);
  } finally {
    server.resume();
  }
  await eventually(() => limiter.status() === 'ok', 'the limiter to recover');
  assert.deepEqual(transitions, ['degraded', 'ok']);
  // Redis did run the frozen admit; its lease was released when the late answer came, so the one
  // concurrency slot is free.
  allowed(await limiter.admit(s, 1));
});

test('a settle that cannot reach Redis is kept and replayed when the connection is back', async (t) => {
  const server = await ownServer(t);
  if (server === null) return;
  const { limiter, transitions } = await resilient(server, { onRedisFailure: 'local' });
  const s = subject({ limits: { concurrency: 1 } });
  const ticket = allowed(await limiter.admit(s, 1));
  // Cut this client's connection (Redis keeps its data): the settle cannot be sent.
  const admin = testClient(server.url);
  clients.push(admin);
  await admin.call('CLIENT', 'KILL', 'SKIPME', 'yes');
  await eventually(() => limiter.status() === 'degraded', 'the limiter to notice');
  limiter.settle(ticket, 1);
  await eventually(() => limiter.status() === 'ok', 'the limiter to recover');
  assert.deepEqual(transitions, ['degraded', 'ok']);
  // The replayed settle freed the only slot in Redis.
  await eventually(async () => (await admin.zcard('keygate:kl:key_a')) === 0, 'the replayed settle');
  allowed(await limiter.admit(s, 1));
});

test('key-change broadcast: every instance hears a publish, and again after Redis restarts', async (t) => {
  const server = await ownServer(t);
  if (server === null) return;
  const heard: (readonly string[])[] = [];
  const publisher = createRedisClient(server.url);
  const listener = createRedisClient(server.url);
  for (const c of [publisher, listener]) c.on('error', () => {});
  const sender = new KeyEvents({ redis: publisher, prefix: 'kgtest:', onChange: () => {} });
  const receiver = new KeyEvents({ redis: listener, prefix: 'kgtest:', onChange: (ids) => heard.push(ids) });
  closers.push(() => Promise.all([sender.close(), receiver.close()]));
  clients.push(publisher, listener);
  await Promise.all([sender.ready(), receiver.ready(), once(publisher, 'ready')]);
  assert.equal(await sender.publish(['key_1', 'ws_2']), true);
  await eventually(() => heard.length === 1, 'the first message');
  assert.deepEqual(heard, [['key_1', 'ws_2']]);

  await server.stop();
  assert.equal(await sender.publish(['key_lost']), false, 'a publish while Redis is down is reported');
  await server.start();
  // After reconnecting, the subscriber says it may have missed something, and hears again.
  await eventually(() => heard.length === 2, 'the reconnection notice');
  assert.deepEqual(heard[1], []);
  await eventually(() => publisher.status === 'ready', 'the publisher to reconnect');
  assert.equal(await sender.publish(['key_3']), true);
  await eventually(() => heard.length === 3, 'the message after the restart');
  assert.deepEqual(heard[2], ['key_3']);
});

// ——— Batching: the operations of one turn of the event loop go to Redis as one script call. ———

/** Counts the limiter's script calls on `redis` (EVALSHA, and EVAL when Redis lacked the script). */
function countCalls(redis: Redis): { calls: number } {
  const counter = { calls: 0 };
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
    if (command.name === 'evalsha' || command.name === 'eval') counter.calls++;
    return (send as (...args: unknown[]) => unknown)(command, ...rest);
  }) as typeof redis.sendCommand;
  return counter;
}

test('batching: 60 admits at once over 3 instances go as one call per instance and stay exact', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const { list } = instances(3);
  await Promise.all(list.map(({ limiter }) => limiter.prepare()));
  const counters = list.map(({ redis }) => countCalls(redis));
  const all = (s: LimitSubject) =>
    Promise.all(Array.from({ length: 60 }, (_, i) => list[i % 3]!.limiter.admit(s, 1)));
  const rpm = await all(subject({ keyId: 'key_rpm', limits: { rpm: 10 } }));
  assert.equal(rpm.filter((a) => a.ok).length, 10);
  assert.deepEqual(
    counters.map((c) => c.calls),
    [1, 1, 1],
  );
  // Concurrency and a budget at once, from every instance: exact too.
  const s = subject({ keyId: 'key_mix', limits: { concurrency: 7 }, keyBudget: { day: 1000 } });
  allowed(await list[0]!.limiter.admit(s, 0)); // seeds the day counter
  const mixed = await all(s);
  assert.equal(mixed.filter((a) => a.ok).length, 6);
  for (const refusal of mixed.filter((a) => !a.ok)) assert.equal(refused(refusal).reason, 'concurrency');
});

test('batching: one call answers each admit in the order made, allowed and refused alike', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const { list } = instances(1, { used: () => 900 });
  const { limiter, redis } = list[0]!;
  const budget = subject({ keyId: 'key_budget', keyBudget: { day: 1000 } });
  allowed(await limiter.admit(budget, 0)); // seeds the counter: 900 of 1000 used
  const counter = countCalls(redis);
  const rpm = subject({ keyId: 'key_rpm', limits: { rpm: 3 } });
  const concurrency = subject({ keyId: 'key_conc', limits: { concurrency: 1 } });
  const answers = await Promise.all([
    limiter.admit(rpm, 1),
    limiter.admit(budget, 60),
    limiter.admit(rpm, 1),
    limiter.admit(concurrency, 1),
    limiter.admit(budget, 60), // 960 + 60 > 1000
    limiter.admit(rpm, 1),
    limiter.admit(concurrency, 1),
    limiter.admit(rpm, 1), // the fourth of rpm 3
    limiter.admit(budget, 40), // 960 + 40 fits
  ]);
  assert.equal(counter.calls, 1);
  assert.deepEqual(
    answers.map((a) => (a.ok ? 'ok' : a.reason)),
    ['ok', 'ok', 'ok', 'ok', 'key_budget_day', 'ok', 'concurrency', 'rpm', 'ok'],
  );
  assert.equal(answers[5]!.headers['x-ratelimit-remaining-requests'], '0');
  assert.match(refused(answers[4]!).message, /960 are used or reserved/);
  // The tickets of one batch are distinct.
  const ids = new Set(answers.filter((a) => a.ok).map((a) => (allowed(a) as unknown as { id: string }).id));
  assert.equal(ids.size, 6);
});

test('batching: settles of one turn go as one call, each applied once, and a settle after them does nothing', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const { list, prefix } = instances(1);
  const { limiter, redis } = list[0]!;
  const s = subject({ limits: { concurrency: 20, tpm: 100_000 }, keyBudget: { day: 10_000 } });
  const tickets = (await Promise.all(Array.from({ length: 20 }, () => limiter.admit(s, 100)))).map(allowed);
  assert.equal(await redis.zcard(`${prefix}kl:key_a`), 20);
  const day = `${prefix}kd:${utcPeriods(T0).dayStart}:key_a`;
  assert.equal(await redis.get(day), '2000');
  const counter = countCalls(redis);
  // Every ticket settled for 10, and the first five twice in the same turn.
  await Promise.all([
    ...tickets.map((ticket) => limiter.settleAsync(ticket, 10)),
    ...tickets.slice(0, 5).map((ticket) => limiter.settleAsync(ticket, 10)),
  ]);
  assert.equal(counter.calls, 1);
  assert.equal(await redis.zcard(`${prefix}kl:key_a`), 0);
  assert.equal(await redis.get(day), '200');
  // Settled again later (another amount): nothing changes, and Redis is not even asked.
  await Promise.all(tickets.map((ticket) => limiter.settleAsync(ticket, 5000)));
  assert.equal(counter.calls, 1);
  assert.equal(await redis.get(day), '200');
  // The refunds reached tpm: 100 000 − 20 × 10 − the next admit's 1.
  const next = allowed(await limiter.admit(s, 1));
  assert.ok(next);
  assert.equal(counter.calls, 2);
});

test('batching: a settle goes along with the next admit (one call for both), or alone within a few ms', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const { list, prefix } = instances(1);
  const { limiter, redis } = list[0]!;
  const s = subject({ limits: { concurrency: 1 } });
  const first = allowed(await limiter.admit(s, 1));
  const counter = countCalls(redis);
  // Settled, then admitted again a turn later: the settle waited and went first, in one call.
  const settled = limiter.settleAsync(first, 1);
  await new Promise((resolve) => setImmediate(resolve));
  const second = allowed(await limiter.admit(s, 1));
  await settled;
  assert.ok(second);
  assert.equal(counter.calls, 1);
  // A settle with no admit after it still reaches Redis, soon.
  const started = performance.now();
  await limiter.settleAsync(second, 1);
  assert.equal(counter.calls, 2);
  assert.ok(performance.now() - started < 1000);
  assert.equal(await redis.zcard(`${prefix}kl:key_a`), 0);
});

test('batching: a batch that cannot reach Redis fails each of its admits and settles; the settles can be retried', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const prefix = freshPrefix();
  const redis = createRedisClient(REDIS_URL);
  clients.push(redis);
  sharedUsed = true;
  redis.on('error', () => {});
  await once(redis, 'ready');
  const clock = { now: T0 };
  const limiter = new RedisLimiter({ redis, store: countingStore(), prefix, clock: () => clock.now });
  const s = subject({ limits: { concurrency: 2 } });
  const ticket = allowed(await limiter.admit(s, 1));
  redis.disconnect(true); // reconnects by itself, but not before this turn's batch is sent
  const outcomes = await Promise.allSettled([
    limiter.admit(s, 1),
    limiter.settleAsync(ticket, 1),
    limiter.admit(s, 1),
  ]);
  for (const outcome of outcomes) {
    assert.equal(outcome.status, 'rejected');
    assert.ok((outcome as PromiseRejectedResult).reason instanceof RedisLimiterError);
  }
  await once(redis, 'ready');
  // Neither admit was charged, and the settle applies once retried: both slots are free.
  await limiter.settleAsync(ticket, 1);
  allowed(await limiter.admit(s, 1));
  allowed(await limiter.admit(s, 1));
  refused(await limiter.admit(s, 1));
});

test('batching: a batch slower than the timeout falls back for each admit (local and deny); the late admits are released', async (t) => {
  const server = await ownServer(t);
  if (server === null) return;
  const local = await resilient(server, { onRedisFailure: 'local', commandTimeoutMs: 100 });
  const deny = await resilient(server, { onRedisFailure: 'deny', commandTimeoutMs: 100 });
  const s = subject({ limits: { concurrency: 3 } });
  server.pause();
  let answers: Admission[];
  let denied: PromiseSettledResult<Admission>[];
  try {
    // Six admits in one batch each: Redis takes them but does not answer in time.
    [answers, denied] = await Promise.all([
      Promise.all(Array.from({ length: 6 }, () => local.limiter.admit(s, 1))),
      Promise.allSettled(Array.from({ length: 6 }, async () => deny.limiter.admit(s, 1))),
    ]);
  } finally {
    server.resume();
  }
  // local: the memory limiter decided each, with concurrency 3 / 2 instances → 2.
  assert.deepEqual(
    answers.map((a) => (a.ok ? 'ok' : a.reason)),
    ['ok', 'ok', 'concurrency', 'concurrency', 'concurrency', 'concurrency'],
  );
  for (const outcome of denied) {
    assert.equal(outcome.status, 'rejected');
    assert.ok((outcome as PromiseRejectedResult).reason instanceof LimiterUnavailableError);
  }
  assert.equal(local.limiter.status(), 'degraded');
  assert.equal(deny.limiter.status(), 'degraded');
  for (const a of answers) if (a.ok) local.limiter.settle(a.ticket, 1);
  await eventually(() => local.limiter.status() === 'ok' && deny.limiter.status() === 'ok', 'recovery');
  // Redis did run the twelve late admits (three were admitted); each was released on its late
  // answer, so all three slots are free again.
  await eventually(async () => (await local.redis.zcard('keygate:kl:key_a')) === 0, 'the late releases');
  const again = await Promise.all(Array.from({ length: 4 }, () => local.limiter.admit(s, 1)));
  assert.deepEqual(
    again.map((a) => (a.ok ? 'ok' : a.reason)),
    ['ok', 'ok', 'ok', 'concurrency'],
  );
});

test('the script is loaded at start: the first admit of a fresh instance is one EVALSHA, not an EVAL', async (t) => {
  const server = await ownServer(t);
  if (server === null) return;
  const redis = createRedisClient(server.url, 'keygate-test');
  redis.on('error', () => {});
  clients.push(redis);
  const limiter = new RedisLimiter({ redis, store: countingStore() });
  closers.push(() => limiter.close());
  await once(redis, 'ready');
  await limiter.prepare();
  const names: string[] = [];
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
    names.push(command.name);
    return (send as (...args: unknown[]) => unknown)(command, ...rest);
  }) as typeof redis.sendCommand;
  const s = subject({ limits: { rpm: 10 } });
  allowed(await limiter.admit(s, 1));
  assert.deepEqual(names, ['evalsha']);
  // After a restart (an empty script cache), the reconnection loads it again (SCRIPT LOAD, sent
  // on 'ready'), so the next admit needs no EVAL either.
  await server.stop();
  await server.start();
  await once(redis, 'ready');
  assert.ok(names.includes('script'), names.join());
  names.length = 0;
  allowed(await limiter.admit(s, 1));
  assert.deepEqual(names, ['evalsha']);
});

test('a key with no limit and no budget is admitted without Redis; its settle still feeds the counters that exist', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const { list, prefix } = instances(1, { used: () => 100 });
  const { limiter, redis } = list[0]!;
  // The key had a day budget earlier today: its counter exists (100 used).
  const budgeted = subject({ keyBudget: { day: 1000 } });
  limiter.settle(allowed(await limiter.admit(budgeted, 0)), 0);
  const day = `${prefix}kd:${utcPeriods(T0).dayStart}:key_a`;
  await eventually(async () => (await redis.get(day)) === '100', 'the seeded counter');
  const counter = countCalls(redis);
  const free = subject();
  const admissions = Array.from({ length: 5 }, () => limiter.admit(free, 40));
  for (const admission of admissions) {
    assert.ok(!(admission instanceof Promise), 'answered without Redis');
    assert.deepEqual(admission.headers, {});
    assert.equal(allowed(admission).estimatedTokens, 40);
  }
  assert.equal(counter.calls, 0);
  // Settled in one turn: one call, each settle counted once, 0 tokens not sent at all.
  const tickets = admissions.map((a) => allowed(a as Admission));
  await Promise.all([
    ...tickets.slice(0, 4).map((ticket) => limiter.settleAsync(ticket, 30)),
    limiter.settleAsync(tickets[0]!, 30),
    limiter.settleAsync(tickets[4]!, 0),
  ]);
  assert.equal(counter.calls, 1);
  assert.equal(await redis.get(day), '220');
  // Nothing else was created for it: no buckets, leases, tickets or workspace counters.
  assert.deepEqual(await redis.keys(`${prefix}*`), [day]);
  // When the budget is set again, the counter has every request of the day.
  const refusal = refused(await limiter.admit(subject({ keyBudget: { day: 240 } }), 30));
  assert.match(refusal.message, /220 are used or reserved/);
});
