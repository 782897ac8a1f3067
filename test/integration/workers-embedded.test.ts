/**
 * `keygate start --workers 2` on the embedded default (SQLite, no Redis), as a user runs it: the
 * primary keeps the limits and the workers ask it over IPC, so a key's rpm and concurrency hold
 * exactly across the workers, and a worker killed mid-request does not keep its slot.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { statuses as countStatuses } from '../support/cluster.ts';
import { freePort } from '../support/ports.ts';
import { DEFAULT_STUB_API_KEY, startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.ts';

const BIN = new URL('../../bin/keygate.js', import.meta.url).pathname;

async function until(check: () => Promise<boolean> | boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function workerPids(primary: ChildProcess): string[] {
  try {
    return execFileSync('pgrep', ['-P', String(primary.pid)], { encoding: 'utf8' })
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
  let child: ChildProcess;
  let url: string;
  let env: NodeJS.ProcessEnv;
  let output = '';

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
    child = spawn(process.execPath, [BIN, 'start', '--workers', '2', '--http', '--port', String(port)], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    await until(() => output.includes('with 2 worker processes'), 'the two workers to listen');
  });

  after(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await stub.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the banner and /readyz say the limits are kept by the primary', async () => {
    assert.match(output, /limits, budgets and concurrency kept by the primary process/);
    const ready = (await (await fetch(`${url}/readyz`)).json()) as { checks: { limits: string } };
    assert.equal(ready.checks.limits, 'primary');
  });

  test('a key’s rpm holds exactly across the two workers', async () => {
    assert.equal(workerPids(child).length, 2, output);
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
    assert.deepEqual(countStatuses(statuses.map((status) => ({ status }))), { 200: 5, 429: 15 }, output);
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
    await until(() => {
      const now = workerPids(child);
      return now.length === 2 && now.every((pid) => !killed.includes(pid));
    }, 'two new workers');
    await until(async () => {
      try {
        return (await fetch(`${url}/healthz`)).status === 200;
      } catch {
        return false;
      }
    }, 'the new workers to answer');
    const after = await chat(key);
    assert.equal(after.status, 200, await after.text());
  });

  test('SIGTERM stops the workers and the primary exits 0', async () => {
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, output);
  });
});
