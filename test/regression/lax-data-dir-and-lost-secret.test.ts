/**
 * Issue 12, item 16: an existing data directory with mode 0755 and a 0644 `secret` was accepted
 * silently, and a deleted `secret` was generated anew at start, after which every key answered 401.
 * Now: a directory open to other users is changed to 0700 with a warning; a secret or TLS private
 * key other users may read is refused with the chmod to run; and a missing secret is generated
 * only over a store that holds nothing made with one: otherwise `keygate start` (one process or
 * `--workers`) and the CLI fail with a message saying what to restore, and write no secret.
 * A fresh data directory still starts with no setup.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, test } from 'node:test';
import { loadConfig } from '../../src/config/config.ts';
import { startGateway } from '../../src/http/server.ts';
import { createKey } from '../../src/keys/service.ts';
import { tempDir } from '../support/gateway.ts';

const BIN = new URL('../../bin/keygate.js', import.meta.url).pathname;
const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function newDataDir(): string {
  const parent = tempDir('keygate-modes-');
  dirs.push(parent);
  return join(parent, 'data');
}

/** Starts a gateway on a data directory (plain HTTP unless `tls`), capturing its log. */
async function start(dataDir: string, tls = false) {
  const lines: string[] = [];
  const config = loadConfig({ dataDir, port: '0', http: !tls, host: '127.0.0.1' }, {});
  const gateway = await startGateway(config, {
    env: {},
    logDestination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        callback();
      },
    }),
  });
  return { gateway, lines };
}

/** The error a start fails with (a gateway that starts after all is stopped, and the test fails). */
async function refusal(dataDir: string, tls = false): Promise<Error> {
  let started: Awaited<ReturnType<typeof start>> | undefined;
  try {
    started = await start(dataDir, tls);
  } catch (error) {
    return error as Error;
  }
  await started.gateway.close();
  assert.fail('the start must be refused');
}

const modeOf = (path: string) => statSync(path).mode & 0o777;

/** A data directory that has been used: a secret and a key in its store. */
async function usedDataDir(): Promise<string> {
  const dataDir = newDataDir();
  const { gateway } = await start(dataDir);
  await createKey({ store: gateway.store, pepper: gateway.secrets.pepper, prefix: 'kg' }, { name: 'in use' });
  await gateway.close();
  return dataDir;
}

test('a fresh data directory starts with no setup: directory 0700, secret 0600', async () => {
  const dataDir = newDataDir();
  const { gateway } = await start(dataDir);
  try {
    assert.equal(gateway.secrets.source, 'generated');
    assert.equal(modeOf(dataDir), 0o700);
    assert.equal(modeOf(join(dataDir, 'secret')), 0o600);
    assert.equal((await fetch(`${gateway.url}/healthz`)).status, 200);
  } finally {
    await gateway.close();
  }
});

test('a data directory open to other users (0755) is changed to 0700, with a warning', async () => {
  const dataDir = await usedDataDir();
  chmodSync(dataDir, 0o755);
  const { gateway, lines } = await start(dataDir);
  await gateway.close();
  assert.equal(modeOf(dataDir), 0o700);
  assert.ok(
    lines.some(
      (l) => l.includes('"level":"warn"') && l.includes('mode 0755') && l.includes('changed to 0700'),
    ),
    `a warning in the log:\n${lines.join('\n')}`,
  );
});

test('a secret other users may read (0644) is refused, with the chmod to run', async () => {
  const dataDir = await usedDataDir();
  const secret = join(dataDir, 'secret');
  chmodSync(secret, 0o644);
  const open = await refusal(dataDir);
  assert.match(open.message, /secret .* is open to every user of this machine \(mode 0644\)/);
  assert.ok(open.message.includes(`chmod 600 ${secret}`), open.message);
  chmodSync(secret, 0o640);
  assert.match((await refusal(dataDir)).message, /open to the users of its group \(mode 0640\)/);
  chmodSync(secret, 0o600);
  const { gateway } = await start(dataDir);
  await gateway.close();
});

test("the data directory's TLS private key other users may read is refused", async () => {
  const dataDir = newDataDir();
  const first = await start(dataDir, true);
  await first.gateway.close();
  const key = join(dataDir, 'tls', 'key.pem');
  assert.equal(modeOf(key), 0o600);
  chmodSync(key, 0o644);
  const refused = await refusal(dataDir, true);
  assert.ok(refused.message.includes(`chmod 600 ${key}`), refused.message);
});

test('a deleted secret is not replaced while the store holds keys: start fails and says why', async () => {
  const dataDir = await usedDataDir();
  const secret = join(dataDir, 'secret');
  const saved = readFileSync(secret);
  unlinkSync(secret);
  const lost = await refusal(dataDir);
  assert.ok(lost.message.startsWith(`${secret} is missing but the database holds 1 key`), lost.message);
  assert.match(lost.message, /restore the secret from your backup/);
  assert.equal(existsSync(secret), false, 'no new secret written');

  // `keygate start`, one process or several, and the CLI follow the same rule.
  const env: NodeJS.ProcessEnv = { ...process.env, KEYGATE_DATA_DIR: dataDir, CI: '' };
  delete env.KEYGATE_SECRET;
  delete env.DATABASE_URL;
  delete env.REDIS_URL;
  for (const args of [
    ['start', '--http', '--port', '0'],
    ['start', '--http', '--port', '0', '--workers', '2'],
    ['keys', 'create', '--name', 'another'],
  ]) {
    const run = spawnSync(process.execPath, [BIN, ...args], { env, encoding: 'utf8', timeout: 20_000 });
    assert.notEqual(run.status, 0, `${args.join(' ')} must fail:\n${run.stdout}${run.stderr}`);
    assert.ok(
      run.stderr.includes(`${secret} is missing but the database holds 1 key`),
      `${args.join(' ')}:\n${run.stderr}`,
    );
    assert.equal(existsSync(secret), false, `${args.join(' ')} wrote no new secret`);
  }

  // Restored from the backup, everything works again.
  writeFileSync(secret, saved, { mode: 0o600 });
  const { gateway } = await start(dataDir);
  try {
    assert.equal(gateway.secrets.source, 'file');
  } finally {
    await gateway.close();
  }
});
