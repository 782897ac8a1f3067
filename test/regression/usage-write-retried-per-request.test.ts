/**
 * Issue 13, item 5: while the store refused usage writes, every request that filled a batch
 * started another write (and the gateway logged each failure with a stack trace: 16 MB of log in
 * 45 s). Now a failed write is retried from the queue's timer, after a backoff that grows, and the
 * failure is logged when it starts and when it ends, not per attempt. Driven by injected timers.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Store, UsageRecord } from '../../src/store/types.ts';
import { UsageQueue } from '../../src/usage/queue.ts';
import { ManualTimers } from '../support/manual-timers.ts';
import { usageRecord } from '../support/usage-records.ts';

const record = (id: string) => usageRecord({ id });

test('a failing usage store is retried from the timer with a backoff, not on every request', async (t) => {
  let attempts = 0;
  let down = true;
  const written: string[] = [];
  const store = {
    async recordUsage(records: readonly UsageRecord[]) {
      attempts++;
      if (down) throw new Error('database or disk is full');
      written.push(...records.map((r) => r.id));
    },
  } as unknown as Store;
  const timers = new ManualTimers();
  // The background module is optional so that this test also runs (and fails) before it existed.
  const mod = (await import('../../src/util/background.ts').catch(() => undefined)) as
    | typeof import('../../src/util/background.ts')
    | undefined;
  const lines: { level: string; msg: string }[] = [];
  const logger = {
    error: (_o: object, msg: string) => lines.push({ level: 'error', msg }),
    info: (_o: object, msg: string) => lines.push({ level: 'info', msg }),
  };
  const background = mod ? new mod.Background({ logger, timers, random: () => 0.5 }) : undefined;
  const queue = new UsageQueue({
    store,
    flushIntervalMs: 500,
    batchSize: 2,
    maxQueued: 10_000,
    ...(background ? { background } : {}),
  });
  t.after(() => void queue.close());

  // 200 requests finish, one after the other, while the store is down.
  for (let i = 0; i < 200; i++) {
    queue.push(record(`r${i}`));
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.ok(attempts <= 1, `the first full batch tries once; then no write per request (${attempts} writes)`);
  assert.equal(queue.depth, 200, 'nothing is lost meanwhile');

  // Retries follow the backoff: 500 ms, then 1 s, 2 s, 4 s... (with the jitter at 3/4 of each).
  await timers.advance(30_000);
  const retried = attempts;
  assert.ok(retried >= 3 && retried <= 8, `${retried} writes in 30 s`);
  assert.equal(lines.filter((l) => l.level === 'error').length, 1, JSON.stringify(lines));

  down = false;
  await timers.advance(60_000);
  assert.equal(queue.depth, 0);
  assert.equal(new Set(written).size, 200);
  const recovered = lines.filter((l) => l.level === 'info');
  assert.equal(recovered.length, 1, JSON.stringify(lines));
  assert.match(recovered[0]?.msg ?? '', /usage_flush recovered after/);
});
