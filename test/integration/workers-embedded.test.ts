/**
 * `keygate start --workers 2` on the embedded default (SQLite, no Redis), as a user runs it: the
 * primary keeps the limits and the workers ask it over IPC, so a key's rpm and concurrency hold
 * exactly across the workers, and a worker killed mid-request does not keep its slot.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createCliHarness, type Proc, waitForBanner } from '../support/cli.ts';
import { statuses as countStatuses } from '../support/cluster.ts';
import { freePort } from '../support/ports.ts';
import { DEFAULT_STUB_API_KEY, startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.ts';
import { eventually } from '../support/wait.ts';

const BIN = new URL('../../bin/keygate.js', import.meta.url).pathname;

function workerPids(primary: Proc): string[] {
  try {
    return execFileSync('pgrep', ['-P', String(primary.child.pid)], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .filter(Boolean);
  } catch {
    return [];
  }
}

describe('keygate start --workers 2 without Redis', () => {
  let stub: UpstreamStub;
  let dir: string;
  let child: Proc;
  let url: string;
  let env: NodeJS.ProcessEnv;
  const harness = createCliHarness({ tempPrefix: 'keygate-workers-embedded-' });
  const output = () => `${child.stdout}${child.stderr}`;

  const createKey = (...flags: string[]): string => {
    const created = execFileSync(
      process.execPath,
      [BIN, 'keys', 'create', '--name', 'workers', '--json', ...flags],
      {
        env,
        encoding: 'utf8',
      },
    );
    return (JSON.parse(created) as { key: string }).key;
  };
  const chat = (key: string, model = 'mistral-small-latest', stream = false) =>
    fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      // Fresh connections, so the primary spreads them over both workers.
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', connection: 'close' },
      body: JSON.stringify({ model, stream, messages: [{ role: 'user', content: 'hi' }] }),
    });

  before(async () => {
    stub = await startUpstreamStub();
    dir = mkdtempSync(join(tmpdir(), 'keygate-workers-embedded-'));
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    env = { ...process.env, CI: '', KEYGATE_DATA_DIR: join(dir, 'data'), KEYGATE_UPSTREAM_URL: stub.url };
    delete env.REDIS_URL;
    delete env.DATABASE_URL;
    env.KEYGATE_UPSTREAM_KEY = DEFAULT_STUB_API_KEY;
    child = harness.spawnKeygate(['start', '--workers', '2', '--http', '--port', String(port)], env);
    // The whole banner: the lines this file asserts follow the one that says where it listens.
    await waitForBanner(child);
  });

  after(async () => {
    if (child.exit === undefined) child.child.kill('SIGKILL');
    await harness.cleanup();
    await stub.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the banner and /readyz say the limits are kept by the primary', async () => {
    assert.match(child.stderr, /limits, budgets and concurrency kept by the primary process/);
    const ready = (await (await fetch(`${url}/readyz`)).json()) as { checks: { limits: string } };
    assert.equal(ready.checks.limits, 'primary');
  });

  test('a key’s rpm holds exactly across the two workers', async () => {
    assert.equal(workerPids(child).length, 2, output());
    const key = createKey('--rpm', '5');
    const before = stub.requests.length;
    const statuses = await Promise.all(
      Array.from({ length: 20 }, () =>
        chat(key).then(async (r) => {
          await r.arrayBuffer();
          return r.status;
        }),
      ),
    );
    assert.deepEqual(countStatuses(statuses.map((status) => ({ status }))), { 200: 5, 429: 15 }, output());
    assert.equal(stub.requests.length - before, 5);
  });

  test('a worker killed mid-request does not keep the key’s concurrency slot', async () => {
    const key = createKey('--concurrency', '1');
    // A stream that takes 2 s holds the one slot...
    const held = await chat(key, 'stub-slow-stream', true);
    assert.equal(held.status, 200);
    const refused = await chat(key);
    assert.equal(refused.status, 429, 'the slot is taken');
    await refused.arrayBuffer();
    // ...until the workers are killed: the primary settles their open tickets and forks new ones.
    const killed = workerPids(child);
    for (const pid of killed) process.kill(Number(pid), 'SIGKILL');
    await held.arrayBuffer().catch(() => undefined);
    await eventually(
      () => {
        const now = workerPids(child);
        return now.length === 2 && now.every((pid) => !killed.includes(pid));
      },
      'two new workers',
      20_000,
    );
    await eventually(
      async () => {
        try {
          return (await fetch(`${url}/healthz`)).status === 200;
        } catch {
          return false;
        }
      },
      'the new workers to answer',
      20_000,
    );
    const after = await chat(key);
    assert.equal(after.status, 200, await after.text());
  });

  test('SIGTERM stops the workers and the primary exits 0', async () => {
    child.child.kill('SIGTERM');
    assert.deepEqual(await child.exited, { code: 0, signal: null }, output());
  });
});
