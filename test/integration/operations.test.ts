/**
 * docs/operations.md, as an operator would run it (issue 13, item 13):
 * - `keygate backup` of a SQLite data directory while the gateway serves requests: no request
 *   fails during it, and the backup, restored into a new data directory, starts; the old key
 *   authenticates, its usage and audit events are there;
 * - PostgreSQL: pg_dump, pg_restore into a new database, a gateway on it with the same
 *   KEYGATE_SECRET accepts the old key (and one with another secret does not);
 * - upgrades: a database one migration behind is migrated forward at start; one from a newer
 *   Keygate is refused, by `start` and by the CLI, with a message that says so.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { request } from 'undici';
import { MIGRATIONS } from '../../src/store/migrations.ts';
import { PG_MIGRATIONS } from '../../src/store/pg-migrations.ts';
import { createCliHarness, type Gateway, stopGateway } from '../support/cli.ts';
import { createTestDatabase, databaseUrl, dropTestDatabase, postgresUnavailable } from '../support/stores.ts';

const harness = createCliHarness({ tempPrefix: 'keygate-operations-' });
before(() => harness.start());
after(() => harness.cleanup());

const SECRET = 'operations-test-secret-0123456789abcdefghijklmnopqrstuvwxyz';

async function chat(gw: Gateway, key: string): Promise<number> {
  const res = await request(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    dispatcher: gw.agent,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'mistral-small-latest', messages: [{ role: 'user', content: 'hello' }] }),
  });
  await res.body.text();
  return res.statusCode;
}

/** `keygate ARGS --json` that must succeed. */
async function cliJson<T>(args: readonly string[], env = harness.upstreamEnv()): Promise<T> {
  const res = await harness.runCli([...args, '--json'], env);
  assert.equal(res.code, 0, `keygate ${args.join(' ')}: ${res.stderr}`);
  return JSON.parse(res.stdout) as T;
}

/** The requests recorded for a key, polled until at least `want` (the usage queue flushes every 500 ms). */
async function usageOf(dataArgs: string[], keyId: string, want: number, env = harness.upstreamEnv()) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const rows = await cliJson<{ requests: number }[]>(['usage', '--key', keyId, ...dataArgs], env);
    const requests = rows.reduce((sum, r) => sum + r.requests, 0);
    if (requests >= want || Date.now() > deadline) return requests;
  }
}

async function auditActions(dataArgs: string[], keyId: string, env = harness.upstreamEnv()) {
  const events = await cliJson<{ action: string }[]>(['audit', '--key', keyId, ...dataArgs], env);
  return events.map((e) => e.action).sort();
}

test('SQLite: a backup taken while the gateway serves restores into a new data directory that works', async (t) => {
  const dataDir = harness.newDataDir();
  const data = ['--data-dir', dataDir];
  // HTTPS with the generated certificate: the backup carries it (tls/), and the restore serves it.
  const gw = await harness.startGateway(dataDir, harness.upstreamEnv());
  const created = await cliJson<{ id: string; key: string }>([
    'keys',
    'create',
    '--name',
    'before-backup',
    ...data,
  ]);
  for (let i = 0; i < 20; i++) assert.equal(await chat(gw, created.key), 200);
  assert.equal(await usageOf(data, created.id, 20), 20);

  // Requests go on, four at a time, for as long as the backup runs.
  let backingUp = true;
  const statuses: number[] = [];
  const load = Array.from({ length: 4 }, async () => {
    while (backingUp) statuses.push(await chat(gw, created.key).catch(() => -1));
  });
  const out = join(harness.newDataDir(), 'backup');
  const backup = await harness.runCli(['backup', '--out', out, ...data, '--json']);
  backingUp = false;
  await Promise.all(load);
  assert.equal(backup.code, 0, backup.stderr);
  const report = JSON.parse(backup.stdout) as {
    database: { keys: number; usage_records: number; audit_events: number; schema_version: number };
    secret: string;
    files: string[];
  };
  assert.ok(statuses.length > 0, 'requests were served during the backup');
  assert.deepEqual(
    statuses.filter((s) => s !== 200),
    [],
    `every request during the backup succeeded (${statuses.length})`,
  );
  t.diagnostic(
    `${statuses.length} requests served during the backup, all 200; the backup holds ${report.database.usage_records} usage records`,
  );
  assert.equal(report.secret, 'file');
  assert.deepEqual(report.files.sort(), ['keygate.db', 'secret', 'tls/']);
  assert.equal(report.database.keys, 1);
  assert.ok(report.database.usage_records >= 20, JSON.stringify(report));
  assert.equal(report.database.schema_version, MIGRATIONS.at(-1)?.version);
  // Private, as the data directory is (the gateway refuses a secret others can read).
  assert.equal(statSync(out).mode & 0o777, 0o700);
  for (const file of ['keygate.db', 'secret', 'tls/key.pem'])
    assert.equal(statSync(join(out, file)).mode & 0o077, 0, `${file} is private`);
  assert.ok(
    !readdirSync(join(out, '..')).some((n) => n.includes('.partial-')),
    'no partial directory is left',
  );
  await stopGateway(gw);

  // Restore into a new data directory, as onto a new machine, and start on it.
  const restored = join(harness.newDataDir(), 'restored');
  cpSync(out, restored, { recursive: true, preserveTimestamps: true });
  const again = await harness.startGateway(restored, harness.upstreamEnv());
  assert.doesNotMatch(again.proc.stderr, /secret generated/, 'the restored secret is used, not a new one');
  assert.equal(again.ca, gw.ca, 'the restored gateway serves the same certificate');
  assert.equal(await chat(again, created.key), 200, 'the old key authenticates');
  const restoredData = ['--data-dir', restored];
  assert.ok(
    (await usageOf(restoredData, created.id, report.database.usage_records + 1)) >
      report.database.usage_records,
  );
  assert.deepEqual(await auditActions(restoredData, created.id), ['key.create']);
  await stopGateway(again);

  // --no-secret: the secret is kept apart.
  const apart = join(harness.newDataDir(), 'apart');
  const noSecret = await cliJson<{ secret: string; files: string[] }>([
    'backup',
    '--out',
    apart,
    '--no-secret',
    ...data,
  ]);
  assert.equal(noSecret.secret, 'left_out');
  assert.deepEqual(noSecret.files.sort(), ['keygate.db', 'tls/']);

  // What a backup refuses.
  const again2 = await harness.runCli(['backup', '--out', out, ...data]);
  assert.equal(again2.code, 2);
  assert.match(again2.stderr, /exists and is not an empty directory/);
  const inside = await harness.runCli(['backup', '--out', join(dataDir, 'b'), ...data]);
  assert.equal(inside.code, 2);
  assert.match(inside.stderr, /--out must be outside the data directory/);
  const onPg = await harness.runCli(['backup', '--out', join(out, '..', 'pg'), ...data], {
    ...harness.upstreamEnv(),
    DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none',
    KEYGATE_SECRET: SECRET,
  });
  assert.equal(onPg.code, 2);
  assert.match(onPg.stderr, /the store is PostgreSQL \(DATABASE_URL\): back it up with pg_dump/);
});

test('SQLite: a database one migration behind is migrated forward at start; a newer one is refused', async () => {
  const latest = MIGRATIONS.at(-1)?.version ?? 0;
  const dataDir = harness.newDataDir();
  // The schema of the Keygate before the last migration, made as that version made it.
  const db = new DatabaseSync(join(dataDir, 'keygate.db'));
  db.exec(
    'CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)',
  );
  for (const migration of MIGRATIONS.filter((m) => m.version < latest)) {
    db.exec(migration.sqlite);
    db.prepare('INSERT INTO schema_migrations VALUES (?, ?, ?)').run(
      migration.version,
      migration.name,
      Date.now(),
    );
  }
  db.close();
  const gw = await harness.startGateway(dataDir, harness.upstreamEnv(), ['--http']);
  await stopGateway(gw);
  const after = new DatabaseSync(join(dataDir, 'keygate.db'));
  assert.equal(
    (after.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number }).v,
    latest,
  );

  // As if a newer Keygate had run on it, then this one was started again (a downgrade).
  after
    .prepare('INSERT INTO schema_migrations VALUES (?, ?, ?)')
    .run(latest + 1, 'from_the_future', Date.now());
  after.close();
  const message = `the database schema is version ${latest + 1}, newer than this Keygate (${latest}); upgrade Keygate`;
  const start = await harness.runCli(
    ['start', '--http', '--port', '0', '--data-dir', dataDir],
    harness.upstreamEnv(),
  );
  assert.equal(start.code, 1, start.stderr);
  assert.ok(start.stderr.includes(message), start.stderr);
  assert.doesNotMatch(start.stderr, /^\s+at /m, 'no stack trace');
  const list = await harness.runCli(['keys', 'list', '--data-dir', dataDir]);
  assert.equal(list.code, 1);
  assert.equal(list.stderr, `keygate: cannot open the store: ${message}\n`);
});

describe('PostgreSQL', async () => {
  const unavailable = await postgresUnavailable();
  if (unavailable) {
    test(`skipped: ${unavailable}`, { skip: unavailable }, () => {});
    return;
  }
  const databases: string[] = [];
  after(async () => {
    for (const name of databases) await dropTestDatabase(name);
  });

  test('pg_dump and pg_restore into a new database: the keys work there with the same KEYGATE_SECRET', async () => {
    const source = await createTestDatabase();
    const target = await createTestDatabase();
    databases.push(source, target);
    const env = (name: string, secret = SECRET) => ({
      ...harness.upstreamEnv(),
      DATABASE_URL: databaseUrl(name),
      KEYGATE_SECRET: secret,
    });
    const gw = await harness.startGateway(harness.newDataDir(), env(source), ['--http']);
    const created = await cliJson<{ id: string; key: string }>(
      ['keys', 'create', '--name', 'pg-backup'],
      env(source),
    );
    for (let i = 0; i < 10; i++) assert.equal(await chat(gw, created.key), 200);
    assert.equal(await usageOf([], created.id, 10, env(source)), 10);

    // docs/operations.md: a dump taken while the gateway runs, restored into an empty database.
    const dump = join(harness.newDataDir(), 'keygate.dump');
    execFileSync('pg_dump', ['--format=custom', '--no-owner', '--file', dump, databaseUrl(source)]);
    await stopGateway(gw);
    execFileSync('pg_restore', ['--no-owner', '--exit-on-error', '--dbname', databaseUrl(target), dump]);

    const restored = await harness.startGateway(harness.newDataDir(), env(target), ['--http']);
    assert.equal(
      await chat(restored, created.key),
      200,
      'the old key authenticates on the restored database',
    );
    assert.ok((await usageOf([], created.id, 11, env(target))) >= 11);
    assert.deepEqual(await auditActions([], created.id, env(target)), ['key.create']);
    await stopGateway(restored);

    // The secret is not in the dump: with another one, the same database knows no key.
    const other = await harness.startGateway(harness.newDataDir(), env(target, `${SECRET}-another`), [
      '--http',
    ]);
    assert.equal(await chat(other, created.key), 401);
    await stopGateway(other);
  });

  test('a database from a newer Keygate is refused at start', async () => {
    const name = await createTestDatabase();
    databases.push(name);
    const latest = PG_MIGRATIONS.at(-1)?.version ?? 0;
    const env = { ...harness.upstreamEnv(), DATABASE_URL: databaseUrl(name), KEYGATE_SECRET: SECRET };
    assert.equal((await harness.runCli(['keys', 'list'], env)).code, 0, 'the schema is created');
    const client = new pg.Client({ connectionString: databaseUrl(name) });
    await client.connect();
    await client.query(
      "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'from_the_future', 0)",
      [latest + 1],
    );
    await client.end();
    const start = await harness.runCli(
      ['start', '--http', '--port', '0', '--data-dir', harness.newDataDir()],
      env,
    );
    assert.equal(start.code, 1, start.stderr);
    assert.ok(
      start.stderr.includes(
        `the database schema is version ${latest + 1}, newer than this Keygate (${latest}); upgrade Keygate`,
      ),
      start.stderr,
    );
  });
});
