import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Background, describeFailure } from '../../src/util/background.ts';
import { ManualTimers } from '../support/manual-timers.ts';

function recorder() {
  const lines: { level: string; details: Record<string, unknown>; msg: string }[] = [];
  return {
    lines,
    logger: {
      error: (details: object, msg: string) => lines.push({ level: 'error', details: { ...details }, msg }),
      info: (details: object, msg: string) => lines.push({ level: 'info', details: { ...details }, msg }),
    },
  };
}

test('a periodic task backs off exponentially with jitter up to its cap, then runs at its interval again', async () => {
  const timers = new ManualTimers();
  const { lines, logger } = recorder();
  const background = new Background({ logger, timers, random: () => 0 });
  const runs: number[] = [];
  let fail = true;
  const task = background.every(
    'work',
    1000,
    () => {
      runs.push(timers.at);
      if (fail) throw new Error('down');
    },
    { retry: { initialMs: 100, maxMs: 1600 } },
  );
  await timers.advance(1000 + 50 + 100 + 200 + 400 + 800 + 800 + 800);
  // random 0: each delay is half its base (100, 200, ... 1600 capped).
  assert.deepEqual(
    runs.map((at, i) => at - (runs[i - 1] ?? 0)),
    [1000, 50, 100, 200, 400, 800, 800, 800],
  );
  assert.equal(task.failing, true);
  assert.equal(background.failures.get('work'), 8);
  assert.equal(background.failingCount, 1);
  fail = false;
  await timers.advance(800);
  assert.equal(task.failing, false);
  await timers.advance(1000);
  assert.equal(runs.at(-1)! - runs.at(-2)!, 1000, 'healthy again: its interval');
  assert.deepEqual(
    lines.map((l) => [l.level, l.msg]),
    [
      ['error', 'background task work failing: down'],
      ['info', 'background task work recovered after 4 s and 8 failed attempts'],
    ],
  );
  assert.ok(!('stack' in (lines[0]?.details ?? {})), 'no stack trace');
  task.stop();
  await timers.advance(10_000);
  assert.equal(timers.pending.size, 0);
});

test('a guarded listener: a throw and a rejection are recorded, never thrown at the emitter', async () => {
  const { lines, logger } = recorder();
  const background = new Background({ logger });
  const sync = background.guard('listener', () => {
    throw new Error('sync');
  });
  assert.doesNotThrow(() => sync());
  let done: () => void = () => {};
  const settled = new Promise<void>((resolve) => {
    done = resolve;
  });
  const async = background.guard('listener', async () => {
    done();
    throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
  });
  async();
  await settled;
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(background.failures.get('listener'), 2);
  assert.equal(lines.length, 1, 'logged once: it was failing already');
  background.guard('listener', async () => {})();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(background.state('listener').failing, false);
  assert.equal(describeFailure(Object.assign(new Error('x'), { code: 'EPIPE' })), 'x (EPIPE)');
});

test('trigger() runs a healthy task now, and is ignored while it fails (it waits for its backoff)', async () => {
  const timers = new ManualTimers();
  const background = new Background({ timers, random: () => 0.5 });
  let runs = 0;
  const task = background.every(
    'triggered',
    60_000,
    () => {
      runs++;
      throw new Error('no');
    },
    { retry: { initialMs: 1000, maxMs: 1000 } },
  );
  task.trigger();
  await timers.advance(0);
  assert.equal(runs, 1);
  for (let i = 0; i < 10; i++) task.trigger();
  await timers.advance(0);
  assert.equal(runs, 1, 'a failing task is not run on demand');
  await timers.advance(1000);
  assert.equal(runs, 2);
  await background.stop();
});
