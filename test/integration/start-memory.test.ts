/**
 * `keygate start` runs with the memory settings of bin/keygate.js (a young generation of 2 × 4 MB,
 * old-generation growth of 1.5×, two malloc arenas), in the process it was started as (no wrapper)
 * and in every worker of `--workers N`; an operator's own setting of the same name is kept.
 *
 * Each gateway gets test/support/heap-probe.ts preloaded: on SIGUSR2 it grows V8's young
 * generation as far as it may go and reports the new space's size and the process's flags.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { BANNER } from '../support/cli.ts';
import type { HeapProbe } from '../support/heap-probe.ts';
import { REDIS_URL, redisUnavailable } from '../support/redis.ts';
import { eventually } from '../support/wait.ts';

const BIN = new URL('../../bin/keygate.js', import.meta.url).pathname;
const PROBE = new URL('../support/heap-probe.ts', import.meta.url).pathname;
const MB = 2 ** 20;
/** The young generation bin/keygate.js allows: two semi-spaces of 4 MB. */
const NEW_SPACE_MAX = 2 * 4 * MB;

const dirs: string[] = [];
const children: ChildProcess[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (name.startsWith('KEYGATE_') || name === 'MISTRAL_API_KEY' || name === 'DATABASE_URL') continue;
    if (name === 'REDIS_URL' || name === 'NODE_TEST_CONTEXT' || name === 'NODE_OPTIONS') continue;
    if (name === 'MALLOC_ARENA_MAX') continue;
    env[name] = value;
  }
  return env;
}

/** The child processes of a process (the workers of `--workers N`). */
function childrenOf(pid: number): number[] {
  const list = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
  return list ? list.split(/\s+/).map(Number) : [];
}

/**
 * Starts `keygate start` with the probe preloaded, waits until it listens, signals the processes
 * (the gateway, or its workers too) and returns their reports.
 */
async function probeStart(
  options: { args?: string[]; env?: NodeJS.ProcessEnv; workers?: number } = {},
): Promise<{ pid: number; probes: HeapProbe[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-start-memory-'));
  dirs.push(dir);
  const env = cleanEnv();
  const child = spawn(
    process.execPath,
    [
      BIN,
      'start',
      '--http',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--data-dir',
      join(dir, 'data'),
      ...(options.args ?? []),
    ],
    {
      env: {
        ...env,
        HEAP_PROBE_DIR: dir,
        ...options.env,
        NODE_OPTIONS: `--import ${PROBE} ${options.env?.NODE_OPTIONS ?? ''}`,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  children.push(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const pid = child.pid ?? -1;
  await eventually(
    () =>
      child.exitCode !== null
        ? assert.fail(`keygate start exited (${child.exitCode}): ${stderr}`)
        : BANNER.test(stderr),
    () => `the gateway's banner (stderr: ${stderr})`,
    20_000,
  );
  const pids = [pid, ...(options.workers ? childrenOf(pid) : [])];
  assert.equal(pids.length, 1 + (options.workers ?? 0), `processes of the gateway: ${pids.join(', ')}`);
  for (const p of pids) process.kill(p, 'SIGUSR2');
  const probes = await Promise.all(
    pids.map((p) =>
      eventually(
        () => {
          const file = join(dir, `${p}.json`);
          return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as HeapProbe) : undefined;
        },
        `the probe of process ${p}`,
        20_000,
      ),
    ),
  );
  child.kill('SIGTERM');
  await new Promise((resolve) => child.once('exit', resolve));
  return { pid, probes };
}

test('keygate start runs with a small young generation, 1.5x old-space growth and 2 malloc arenas', {
  timeout: 60_000,
}, async () => {
  const { pid, probes } = await probeStart();
  const [probe] = probes;
  assert.ok(probe);
  // The same process (process.execve), not a child of a wrapper.
  assert.equal(probe.pid, pid);
  assert.ok(probe.execArgv.includes('--max-semi-space-size=4'), `execArgv: ${probe.execArgv.join(' ')}`);
  assert.ok(probe.execArgv.includes('--heap-growing-percent=50'), `execArgv: ${probe.execArgv.join(' ')}`);
  assert.equal(probe.mallocArenaMax, '2');
  assert.ok(
    probe.newSpaceBytes > 0 && probe.newSpaceBytes <= NEW_SPACE_MAX,
    `new space ${probe.newSpaceBytes / MB} MB, at most ${NEW_SPACE_MAX / MB} MB expected`,
  );
});

test("an operator's own semi-space size and MALLOC_ARENA_MAX are kept", { timeout: 60_000 }, async () => {
  const { probes } = await probeStart({
    env: { NODE_OPTIONS: '--max-semi-space-size=32', MALLOC_ARENA_MAX: '8' },
  });
  const [probe] = probes;
  assert.ok(probe);
  assert.ok(!probe.execArgv.includes('--max-semi-space-size=4'), `execArgv: ${probe.execArgv.join(' ')}`);
  assert.ok(probe.execArgv.includes('--heap-growing-percent=50'), `execArgv: ${probe.execArgv.join(' ')}`);
  assert.equal(probe.mallocArenaMax, '8');
  // The probe's allocation does grow a young generation past the limit of the first test when it
  // may: without this the first test's size check would prove nothing.
  assert.ok(
    probe.newSpaceBytes > NEW_SPACE_MAX,
    `new space ${probe.newSpaceBytes / MB} MB, more than ${NEW_SPACE_MAX / MB} MB expected`,
  );
});

const noRedis = await redisUnavailable();
if (noRedis) process.stdout.write(`# skipping the --workers test: ${noRedis}\n`);
test('every worker of keygate start --workers 2 runs with the same settings', {
  timeout: 60_000,
  skip: noRedis ? `needs Redis: ${noRedis}` : false,
}, async () => {
  const { probes } = await probeStart({ args: ['--workers', '2'], env: { REDIS_URL }, workers: 2 });
  assert.equal(probes.length, 3);
  for (const probe of probes) {
    assert.ok(probe.execArgv.includes('--max-semi-space-size=4'), `execArgv: ${probe.execArgv.join(' ')}`);
    assert.ok(probe.execArgv.includes('--heap-growing-percent=50'), `execArgv: ${probe.execArgv.join(' ')}`);
    assert.equal(probe.mallocArenaMax, '2');
    assert.ok(
      probe.newSpaceBytes > 0 && probe.newSpaceBytes <= NEW_SPACE_MAX,
      `process ${probe.pid}: new space ${probe.newSpaceBytes / MB} MB, at most ${NEW_SPACE_MAX / MB} MB expected`,
    );
  }
});
