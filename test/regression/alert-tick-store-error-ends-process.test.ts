/**
 * Issue 13, item 1: the alert engine's once-a-minute evaluation re-reads rule settings from the
 * store; `setInterval(() => void this.tick())` had no catch, so a store error (PostgreSQL down for
 * over a minute, SQLite's disk full) was an unhandled rejection and ended the process: every
 * instance at the same moment. Run in a child process, since what is tested is whether the
 * process survives. Now the evaluation is a supervised background task: the failure is counted,
 * logged once (not per attempt) with its message, retried, and the recovery logged.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';

const ENGINE = new URL('../../src/alerts/engine.ts', import.meta.url).href;
const BACKGROUND = new URL('../../src/util/background.ts', import.meta.url).href;

const CHILD = `
import { AlertEngine } from ${JSON.stringify(ENGINE)};
// Before the fix there was no background module: the engine then ran its bare timer.
const { Background } = await import(${JSON.stringify(BACKGROUND)}).catch(() => ({ Background: undefined }));
const lines = [];
const logger = {
  error: (o, m) => lines.push({ level: 'error', ...o, msg: m }),
  warn: (o, m) => lines.push({ level: 'warn', ...o, msg: m }),
  info: (o, m) => lines.push({ level: 'info', ...o, msg: m }),
};
let reads = 0;
let down = true;
const store = {
  async ruleSettings() {
    reads++;
    if (down) throw Object.assign(new Error('database or disk is full'), { code: 'ERR_SQLITE_ERROR' });
    return {};
  },
  async noteNetwork() { return 'seen'; },
  async tokensUsed() { return 0; },
  async hourlyCounts() { return []; },
};
const background = Background ? new Background({ logger, random: () => 0 }) : undefined;
const engine = new AlertEngine({ store, logger, evaluateIntervalMs: 20, background });
const key = { id: 'key_1', name: 'k', workspaceId: 'ws_default',
  policy: { budget: { day: null, month: null } }, workspacePolicy: { budget: { day: null, month: null } } };
engine.observe({ key, ip: '10.0.0.1', totalTokens: 1 });
const deadline = Date.now() + 20_000;
const until = async (ok) => { while (!ok()) { if (Date.now() > deadline) throw new Error('timed out'); await new Promise((r) => setTimeout(r, 5)); } };
await until(() => reads >= 4);
down = false;
await until(() => lines.some((l) => l.level === 'info'));
await engine.close();
process.stdout.write(JSON.stringify({ alive: true, reads, lines, failures: Object.fromEntries(background?.failures ?? []) }));
`;

test('a store error during the alert evaluation does not end the process; it is logged once and retried', async () => {
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 0, `the process ended (exit ${code}): ${stderr.slice(0, 2000)}`);
  const out = JSON.parse(stdout) as {
    alive: boolean;
    reads: number;
    lines: { level: string; msg: string; task?: string; stack?: unknown }[];
    failures: Record<string, number>;
  };
  assert.equal(out.alive, true);
  const errors = out.lines.filter((l) => l.level === 'error');
  assert.equal(
    errors.length,
    1,
    `one line when it starts failing, not one per attempt: ${JSON.stringify(out.lines)}`,
  );
  assert.match(errors[0]?.msg ?? '', /alert_rules failing: database or disk is full/);
  const recovered = out.lines.filter((l) => l.level === 'info');
  assert.equal(recovered.length, 1);
  assert.match(recovered[0]?.msg ?? '', /alert_rules recovered after .* and [4-9]\d* failed attempts/);
  assert.ok((out.failures.alert_rules ?? 0) >= 4, JSON.stringify(out.failures));
});
