/**
 * `keygate start --workers 2` as a user runs it (a child process from bin/keygate.js, SQLite in a
 * temporary data directory, Redis for the shared limits): two worker processes serve the port, a
 * key's rpm holds exactly across them, and SIGTERM stops everything gracefully.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { createCliHarness, type Proc, waitForBanner } from '../support/cli.ts';
import { describeDistributed, within } from '../support/cluster.ts';
import { freePort } from '../support/ports.ts';
import { DEFAULT_STUB_API_KEY, startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.ts';

const BIN = new URL('../../bin/keygate.js', import.meta.url).pathname;
const REDIS_URL = process.env.KEYGATE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

await describeDistributed('keygate start --workers 2', () => {
  let stub: UpstreamStub;
  let dir: string;
  let child: Proc;
  let url: string;
  let env: NodeJS.ProcessEnv;
  const harness = createCliHarness({ tempPrefix: 'keygate-workers-' });
  const output = () => `${child.stdout}${child.stderr}`;
  const prefix = `keygate-test:${randomBytes(6).toString('hex')}:`;

  before(async () => {
    stub = await startUpstreamStub();
    dir = mkdtempSync(join(tmpdir(), 'keygate-workers-'));
    // A loaded machine (CI) can hold a Redis answer past the 200 ms default, which would switch a
    // worker to the local fallback: this test is about exact limits across workers, not timeouts.
    writeFileSync(
      join(dir, 'keygate.yaml'),
      `redis:\n  prefix: "${prefix}"\n  commandTimeoutMs: 5000\nlimits:\n  onRedisFailure: deny\n`,
    );
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    env = {
      ...process.env,
      CI: '',
      KEYGATE_CONFIG: join(dir, 'keygate.yaml'),
      KEYGATE_DATA_DIR: join(dir, 'data'),
      REDIS_URL,
      KEYGATE_UPSTREAM_URL: stub.url,
      KEYGATE_UPSTREAM_KEY: DEFAULT_STUB_API_KEY,
    };
    child = harness.spawnKeygate(['start', '--workers', '2', '--http', '--port', String(port)], env);
    // The whole banner, not its first line: the primary writes the rest after it.
    await waitForBanner(child);
  });

  after(async () => {
    if (child.exit === undefined) child.child.kill('SIGKILL');
    await harness.cleanup();
    await stub.close();
    const redis = new Redis(REDIS_URL, { lazyConnect: true });
    await redis.connect();
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
    rmSync(dir, { recursive: true, force: true });
  });

  test('two worker processes serve the port, and a key’s rpm holds exactly across them', async () => {
    const workers = execFileSync('pgrep', ['-P', String(child.child.pid)], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .filter(Boolean);
    assert.equal(workers.length, 2, output());

    const created = execFileSync(
      process.execPath,
      [BIN, 'keys', 'create', '--name', 'workers', '--rpm', '5', '--json'],
      { env, encoding: 'utf8' },
    );
    const { key } = JSON.parse(created) as { key: string };
    const body = JSON.stringify({
      model: 'mistral-small-latest',
      messages: [{ role: 'user', content: 'hi' }],
    });
    // Fresh connections each, so the primary spreads them over both workers.
    const replies = await Promise.all(
      Array.from({ length: 20 }, () =>
        fetch(`${url}/v1/chat/completions`, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${key}`,
            'content-type': 'application/json',
            connection: 'close',
          },
          body,
        }).then(async (r) => {
          await r.arrayBuffer();
          return r.status;
        }),
      ),
    );
    const counts = replies.reduce<Record<number, number>>((acc, s) => {
      acc[s] = (acc[s] ?? 0) + 1;
      return acc;
    }, {});
    assert.deepEqual(counts, { 200: 5, 429: 15 }, output());
    assert.equal(stub.requests.filter((r) => r.path === '/v1/chat/completions').length, 5);
  });

  test('SIGTERM stops the workers gracefully and the primary exits 0', async () => {
    child.child.kill('SIGTERM');
    const exit = await within(child.exited, 15_000, 'the primary to exit');
    assert.deepEqual(exit, { code: 0, signal: null }, output());
    assert.match(child.stderr, /Keygate stopped\./);
  });
});
