/**
 * The limits of `--workers N` without Redis: workers ask the primary's one in-memory limiter over
 * IPC. Here the channel is an in-process pair that copies every message through JSON and delivers
 * it on a later turn, as the cluster's channel does.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import { type Admission, createMemoryLimiter, LimiterUnavailableError } from '../../src/limits/index.ts';
import { IpcLimiter, type LimitsChannel, LimitsServer } from '../../src/limits/ipc.ts';
import { subject } from '../support/limits.ts';

interface Pair {
  worker: LimitsChannel;
  primary: LimitsChannel;
  /** Messages sent by the worker so far. */
  sent: () => number;
  /** From now on the worker's sends fail, as when the primary is gone. */
  cut: () => void;
}

function channelPair(): Pair {
  const toWorker = new EventEmitter();
  const toPrimary = new EventEmitter();
  let alive = true;
  let sent = 0;
  const end = (inbox: EventEmitter, outbox: EventEmitter, counts: boolean): LimitsChannel => ({
    send(message, callback) {
      if (!alive) {
        const error = new Error('channel closed');
        if (callback) setImmediate(() => callback(error));
        return false;
      }
      if (counts) sent++;
      const copy: unknown = JSON.parse(JSON.stringify(message));
      setImmediate(() => {
        outbox.emit('message', copy);
        callback?.(null);
      });
      return true;
    },
    on: (event, listener) => inbox.on(event, listener),
    off: (event, listener) => inbox.off(event, listener),
  });
  return {
    worker: end(toWorker, toPrimary, true),
    primary: end(toPrimary, toWorker, false),
    sent: () => sent,
    cut: () => {
      alive = false;
    },
  };
}

function cluster(workers: number, used = 0) {
  const limiter = createMemoryLimiter({ store: { tokensUsed: async () => used } });
  const server = new LimitsServer(limiter);
  const pairs = Array.from({ length: workers }, () => channelPair());
  const detach = pairs.map((pair) => server.attach(pair.primary));
  const limiters = pairs.map((pair) => new IpcLimiter(pair.worker));
  return { limiter, pairs, detach, limiters };
}

test('three workers admit exactly the rpm between them, one message per worker and turn', async () => {
  const { limiters, pairs } = cluster(3);
  const who = subject({ limits: { rpm: 10 } });
  const admissions = await Promise.all(Array.from({ length: 50 }, (_, i) => limiters[i % 3]!.admit(who, 1)));
  assert.equal(admissions.filter((a) => a.ok).length, 10);
  const refused = admissions.find((a) => !a.ok);
  assert.ok(refused && !refused.ok);
  assert.equal(refused.reason, 'rpm');
  assert.match(refused.message, /allows 10 requests per minute/);
  assert.equal(refused.headers['x-ratelimit-remaining-requests'], '0');
  assert.deepEqual(
    pairs.map((p) => p.sent()),
    [1, 1, 1],
  );
});

test('the answers are the in-memory limiter’s own: headers, tickets, refusals', async () => {
  const direct = createMemoryLimiter({ store: { tokensUsed: async () => 0 } });
  const { limiters } = cluster(1);
  const who = subject({ limits: { rpm: 3, tpm: 1000 } });
  for (let i = 0; i < 5; i++) {
    const expected = await direct.admit(who, 400);
    const got = await limiters[0]!.admit(who, 400);
    assert.equal(got.ok, expected.ok);
    assert.deepEqual(Object.keys(got.headers).sort(), Object.keys(expected.headers).sort());
    assert.equal(
      got.headers['x-ratelimit-remaining-requests'],
      expected.headers['x-ratelimit-remaining-requests'],
    );
    if (got.ok && expected.ok) {
      assert.equal(got.ticket.keyId, 'key_a');
      assert.equal(got.ticket.estimatedTokens, 400);
    }
    if (!got.ok && !expected.ok) {
      assert.equal(got.reason, expected.reason);
      assert.equal(got.retryAfterSeconds, expected.retryAfterSeconds);
    }
  }
});

test('a settle frees the concurrency slot once, however often it is repeated', async () => {
  const { limiters } = cluster(2);
  const [a, b] = limiters as [IpcLimiter, IpcLimiter];
  const who = subject({ limits: { concurrency: 2 } });
  const first = await a.admit(who, 1);
  const second = await b.admit(who, 1);
  assert.ok(first.ok && second.ok);
  assert.equal((await a.admit(who, 1)).ok, false);
  a.settle(first.ticket, 1);
  a.settle(first.ticket, 1);
  b.settle(first.ticket, 1); // another worker's ticket: ignored
  // The settle rides with a's next message, ahead of its admit.
  assert.equal((await a.admit(who, 1)).ok, true);
  assert.equal((await b.admit(who, 1)).ok, false, 'the repeated settles freed one slot only');
});

test('a settle with no admit after it reaches the primary within a few ms, in one message', async () => {
  const { limiters, pairs } = cluster(2);
  const [a, b] = limiters as [IpcLimiter, IpcLimiter];
  const who = subject({ limits: { concurrency: 1 } });
  const held = await a.admit(who, 1);
  assert.ok(held.ok);
  const sent = pairs[0]!.sent();
  a.settle(held.ticket, 1);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(pairs[0]!.sent(), sent, 'a settle alone waits for an admit to go along with');
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(pairs[0]!.sent(), sent + 1);
  assert.equal((await b.admit(who, 1)).ok, true, 'the other worker gets the slot');
});

test('a worker that dies has its open tickets settled at their reservation', async () => {
  const { limiters, detach } = cluster(2);
  const [a, b] = limiters as [IpcLimiter, IpcLimiter];
  const who = subject({ limits: { concurrency: 1 }, keyBudget: { month: 100 } });
  const held = await a.admit(who, 60);
  assert.ok(held.ok);
  assert.equal((await b.admit(who, 10)).ok, false, 'the slot is taken');
  detach[0]!();
  // The slot is free again, and the 60 reserved tokens stay charged: 60 + 50 > 100.
  const over = (await b.admit(who, 50)) as Admission;
  assert.equal(over.ok, false);
  assert.ok(!over.ok && over.reason === 'key_budget_month', JSON.stringify(over));
  const within = await b.admit(who, 40);
  assert.equal(within.ok, true);
});

test('budgets are seeded by the primary from its store', async () => {
  const { limiters } = cluster(1, 95);
  const who = subject({ keyBudget: { day: 100 } });
  const refused = await limiters[0]!.admit(who, 10);
  assert.ok(!refused.ok);
  assert.equal(refused.reason, 'key_budget_day');
  assert.match(refused.message, /95 are used or reserved/);
  assert.equal((await limiters[0]!.admit(who, 5)).ok, true);
});

test('a worker that cannot reach the primary refuses with limiter_unavailable', async () => {
  const { limiters, pairs } = cluster(1);
  pairs[0]!.cut();
  await assert.rejects(limiters[0]!.admit(subject({ limits: { rpm: 5 } }), 1), LimiterUnavailableError);
});

test('a closed worker limiter refuses what was waiting and throws on new admits', async () => {
  const { limiters } = cluster(1);
  const waiting = limiters[0]!.admit(subject({ limits: { rpm: 5 } }), 1);
  limiters[0]!.close();
  await assert.rejects(waiting, LimiterUnavailableError);
  assert.throws(() => limiters[0]!.admit(subject(), 1), LimiterUnavailableError);
});

test('an admit the primary does not answer in time is refused as unavailable; a late admission is settled at once', async () => {
  const limiter = createMemoryLimiter({ store: { tokensUsed: async () => 0 } });
  const server = new LimitsServer(limiter);
  const pair = channelPair();
  // The primary's side of the channel, held back: its answers reach the worker only when released.
  const held: unknown[] = [];
  let holding = true;
  const primary: LimitsChannel = {
    send(message, callback) {
      if (!holding) return pair.primary.send(message, callback);
      held.push(message);
      callback?.(null);
      return true;
    },
    on: (event, listener) => pair.primary.on(event, listener),
    off: (event, listener) => pair.primary.off(event, listener),
  };
  server.attach(primary);
  const worker = new IpcLimiter(pair.worker, { timeoutMs: 40 });
  const who = subject({ limits: { concurrency: 1 } });
  const started = performance.now();
  await assert.rejects(worker.admit(who, 1), LimiterUnavailableError);
  const waited = performance.now() - started;
  assert.ok(waited >= 40 && waited < 5000, `refused after ${waited.toFixed(0)} ms`);
  // The primary did admit it: the one concurrency slot is taken until the late answer arrives.
  assert.equal(held.length, 1);
  const blocked = limiter.admit(who, 1);
  assert.ok(!(blocked instanceof Promise) && !blocked.ok && blocked.reason === 'concurrency');
  holding = false;
  for (const message of held) pair.primary.send(message);
  // The worker settles the abandoned ticket at 0, which frees the slot for the next request.
  const deadline = Date.now() + 2000;
  let next: Admission | Promise<Admission> = limiter.admit(who, 1);
  while (!(next instanceof Promise) && !next.ok && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 5));
    next = limiter.admit(who, 1);
  }
  assert.ok(!(next instanceof Promise) && next.ok, 'the slot was freed by the late settle');
  worker.close();
});
