/**
 * Issue 12, item 10: first-run setup was serialised by a queue in each process's memory, so with
 * `keygate start --workers 4` 16 concurrent setups made 4 owners. The store now decides (one
 * transaction that does nothing once a user exists): exactly one setup wins, whichever process
 * or instance it reaches, and every other one gets the answer of a finished setup (409 setup_done).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/config.ts';
import { type RunningGateway, startGateway } from '../../src/http/server.ts';
import { openStore } from '../../src/store/index.ts';
import { tempDir } from '../support/gateway.ts';
import { freePort } from '../support/ports.ts';
import { createTestDatabase, databaseUrl, dropTestDatabase, postgresUnavailable } from '../support/stores.ts';

const BIN = new URL('../../bin/keygate.js', import.meta.url).pathname;
const SETUPS = 16;

/** 16 setups at once with the right token, each on a connection of its own (spread over processes). */
async function raceSetups(
  urls: readonly string[],
  token: string,
): Promise<{ status: number; code: unknown }[]> {
  return Promise.all(
    Array.from({ length: SETUPS }, async (_, i) => {
      const res = await fetch(`${urls[i % urls.length]}/console/api/setup`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'sec-fetch-site': 'same-origin', connection: 'close' },
        body: JSON.stringify({
          setup_token: token,
          email: `owner${i}@example.com`,
          password: 'correct horse battery staple',
        }),
      });
      const json = (await res.json()) as { code?: unknown };
      return { status: res.status, code: json.code };
    }),
  );
}

function assertOneWinner(results: { status: number; code: unknown }[]): void {
  const winners = results.filter((r) => r.status === 201);
  assert.equal(winners.length, 1, `exactly one setup wins: ${JSON.stringify(results)}`);
  for (const r of results.filter((x) => x.status !== 201))
    assert.deepEqual(r, { status: 409, code: 'setup_done' });
}

/** Waits for a pattern in what a child process writes (stdout and stderr), or its exit. */
function waitForOutput(child: ChildProcess, pattern: RegExp, ms = 20_000): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => finish(new Error(`timed out waiting for ${pattern}:\n${text}`)), ms);
    const onData = (chunk: Buffer) => {
      text += chunk.toString();
      const match = pattern.exec(text);
      if (match) finish(undefined, match);
    };
    const onExit = () => finish(new Error(`exited before ${pattern}:\n${text}`));
    const finish = (error?: Error, match?: RegExpExecArray) => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      if (match) resolve(match);
      else reject(error);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

describe('keygate start --workers 4 (SQLite): 16 concurrent setups', () => {
  let dir: string;
  let child: ChildProcess;
  let url: string;
  let token: string;

  before(async () => {
    dir = tempDir('keygate-setup-race-');
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const env: NodeJS.ProcessEnv = { ...process.env, CI: '', KEYGATE_DATA_DIR: join(dir, 'data') };
    delete env.REDIS_URL;
    delete env.DATABASE_URL;
    delete env.KEYGATE_SECRET;
    child = spawn(process.execPath, [BIN, 'start', '--workers', '4', '--http', '--port', String(port)], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const banner = waitForOutput(
      child,
      /with 4 worker processes[\s\S]*setup token\s+([A-Z2-7]{5}(?:-[A-Z2-7]{5}){3})/,
    );
    token = (await banner)[1] ?? '';
  });

  after(async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test('exactly one owner is created; the others are told setup is done', async () => {
    assertOneWinner(await raceSetups([url], token));
    const store = await openStore(join(dir, 'data'));
    try {
      assert.equal((await store.listUsers()).length, 1);
      const owners = (await store.listMembers('ws_default')).filter((m) => m.role === 'owner');
      assert.equal(owners.length, 1);
    } finally {
      await store.close();
    }
  });
});

const pgDown = await postgresUnavailable();
if (pgDown !== undefined && !process.env.CI) {
  test('two instances on one PostgreSQL database', { skip: pgDown }, () => {});
} else {
  describe('two instances on one PostgreSQL database: 16 concurrent setups', () => {
    let database: string;
    const dirs: string[] = [];
    const gateways: RunningGateway[] = [];

    before(async () => {
      database = await createTestDatabase();
      const env = {
        DATABASE_URL: databaseUrl(database),
        KEYGATE_SECRET: randomBytes(32).toString('base64url'),
      };
      for (let i = 0; i < 2; i++) {
        const dataDir = tempDir('keygate-setup-race-pg-');
        dirs.push(dataDir);
        const config = loadConfig({ dataDir, port: '0', http: true }, env);
        config.log.level = 'silent';
        gateways.push(await startGateway(config, { env }));
      }
    });

    after(async () => {
      for (const gw of gateways) await gw.close();
      await dropTestDatabase(database);
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    });

    test('exactly one owner is created across the instances', async () => {
      const token = await gateways[0]?.console.setupToken();
      assert.equal(token, await gateways[1]?.console.setupToken(), 'one token for every instance');
      assertOneWinner(
        await raceSetups(
          gateways.map((g) => g.url),
          token ?? '',
        ),
      );
      const store = gateways[0]?.store;
      assert.ok(store);
      assert.equal((await store.listUsers()).length, 1);
      assert.equal((await store.listMembers('ws_default')).filter((m) => m.role === 'owner').length, 1);
    });
  });
}
