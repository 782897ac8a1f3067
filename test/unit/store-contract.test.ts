/**
 * The store contract where the two stores could differ: the PostgreSQL schema kept in lockstep
 * with SQLite's, migrations run by many instances at once, and the invariants that SQLite gets
 * from serialised writers and PostgreSQL from locks (the change feed, the last owner, alerts,
 * expiries, usage rollups), exercised by several store instances on one database at once.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createKey } from '../../src/keys/service.ts';
import { isDatabaseUrl, openStore } from '../../src/store/index.ts';
import { MIGRATIONS } from '../../src/store/migrations.ts';
import { PG_MIGRATIONS } from '../../src/store/pg-migrations.ts';
import { PostgresStore } from '../../src/store/postgres.ts';
import {
  CLI_ACTOR,
  type NewAlert,
  type Store,
  StoreConflictError,
  type UsageRecord,
} from '../../src/store/types.ts';
import { LATENCY_COLUMNS, latencyBucket } from '../../src/usage/histogram.ts';
import {
  createTestDatabase,
  databaseUrl,
  describeStore,
  dropTestDatabase,
  postgresUnavailable,
  type StoreUnderTest,
  skipReason,
  storesUnderTest,
} from '../support/stores.ts';

const STORES = await storesUnderTest();
const PG_UNAVAILABLE = await postgresUnavailable();
const LATEST = MIGRATIONS.at(-1)?.version;
const pepper = Buffer.alloc(32, 11);

test('the PostgreSQL migrations have the versions and names of the SQLite ones', () => {
  assert.deepEqual(
    PG_MIGRATIONS.map((m) => [m.version, m.name]),
    MIGRATIONS.map((m) => [m.version, m.name]),
  );
});

test('openStore: a postgres:// URL opens PostgreSQL, a directory SQLite', () => {
  assert.ok(isDatabaseUrl('postgres://u@h/db'));
  assert.ok(isDatabaseUrl('postgresql://u@h:5432/db?sslmode=require'));
  assert.ok(!isDatabaseUrl('./.keygate'));
  assert.ok(!isDatabaseUrl('/var/lib/postgres/data'));
});

test('the PostgreSQL schema has the tables, columns and indexes of the SQLite schema', {
  skip: skipReason({ unavailable: PG_UNAVAILABLE }),
}, async () => {
  const [sqlite, postgres] = STORES;
  assert.ok(sqlite && postgres);
  try {
    const a = await sqlite.schema(await sqlite.open());
    const b = await postgres.schema(await postgres.open());
    assert.deepEqual(b, a);
  } finally {
    await sqlite.cleanup();
    await postgres.cleanup();
  }
});

test('ten PostgreSQL instances migrating one new database at once: each migration applied once, no error', {
  skip: skipReason({ unavailable: PG_UNAVAILABLE }),
}, async (t) => {
  if (PG_UNAVAILABLE) throw new Error(PG_UNAVAILABLE);
  const database = await createTestDatabase();
  const url = databaseUrl(database);
  const stores = Array.from({ length: 10 }, () => new PostgresStore({ url, poolSize: 2 }));
  try {
    const began = performance.now();
    const versions = await Promise.all(stores.map((s) => s.migrate()));
    t.diagnostic(`10 concurrent migrations in ${(performance.now() - began).toFixed(0)} ms`);
    assert.deepEqual(versions, Array(10).fill(LATEST));
    const probe = new PostgresStore({ url, poolSize: 1 });
    try {
      assert.equal(await probe.migrate(), LATEST, 'running them again changes nothing');
    } finally {
      await probe.close();
    }
    const pg = await import('pg');
    const client = new pg.default.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query<{ version: number; n: string }>(
        'SELECT version, COUNT(*) AS n FROM schema_migrations GROUP BY version ORDER BY version',
      );
      assert.deepEqual(
        rows.map((r) => [r.version, Number(r.n)]),
        MIGRATIONS.map((m) => [m.version, 1]),
      );
      const ws = await client.query("SELECT COUNT(*)::int AS n FROM workspaces WHERE id = 'ws_default'");
      assert.equal(ws.rows[0]?.n, 1, 'the data of a migration is there once too');
    } finally {
      await client.end();
    }
    // openStore with the URL (alone, or besides a data directory): the PostgreSQL store, migrated.
    for (const where of [url, { dataDir: '/nonexistent/keygate', databaseUrl: url, poolSize: 2 }]) {
      const opened = await openStore(where);
      try {
        assert.equal(opened.kind, 'postgres');
        await opened.ping();
      } finally {
        await opened.close();
      }
    }
  } finally {
    await Promise.all(stores.map((s) => s.close()));
    await dropTestDatabase(database);
  }
});

function usage(id: string, keyId: string, time: number, tokens: number, latencyMs: number): UsageRecord {
  return {
    id,
    time,
    keyId,
    workspaceId: 'ws_default',
    model: 'mistral-small-latest',
    endpoint: '/v1/chat/completions',
    status: tokens % 7 === 0 ? 429 : 200,
    promptTokens: tokens,
    completionTokens: 1,
    totalTokens: tokens + 1,
    latencyMs,
    ttftMs: null,
    clientIp: `10.0.${tokens % 3}.1`,
  };
}

for (const s of STORES) {
  describeStore(s, 'store contract', () => {
    describe('console records: credentials, sessions, invitations, settings', () => {
      consoleRecords(s);
    });
    describe('several instances on one database', () => {
      severalInstances(s);
    });
  });
}

function severalInstances(s: StoreUnderTest): void {
  /** The store and `n - 1` more instances on its database. */
  async function instances(n: number): Promise<Store[]> {
    const first = await s.open();
    const more = await Promise.all(Array.from({ length: n - 1 }, () => s.reopen(first)));
    return [first, ...more];
  }

  test('the key change feed misses no change, whatever commits first', async () => {
    const stores = await instances(8);
    const [reader] = stores as [Store];
    let cursor = (await reader.keyChanges(-1)).cursor;
    const seen = new Set<string>();
    let writing = true;
    const polling = (async () => {
      while (writing) {
        const changes = await reader.keyChanges(cursor);
        cursor = changes.cursor;
        for (const id of changes.keyIds) seen.add(id);
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    const created = (
      await Promise.all(
        stores.flatMap((store, i) =>
          Array.from({ length: 30 }, async (_, j) => {
            const { record } = await createKey({ store, pepper, prefix: 'kg' }, { name: `feed ${i}.${j}` });
            return record.id;
          }),
        ),
      )
    ).sort();
    writing = false;
    await polling;
    const last = await reader.keyChanges(cursor);
    for (const id of last.keyIds) seen.add(id);
    assert.deepEqual([...seen].sort(), created);
    // Every change was read before the last cursor: nothing is left behind it.
    const again = await reader.keyChanges(last.cursor);
    assert.deepEqual(again.keyIds, []);
  });

  test('two owners demoting each other at once: one wins, the workspace keeps an owner', async () => {
    const [a, b] = (await instances(2)) as [Store, Store];
    const ws = await a.createWorkspace({ id: 'ws_owners', name: 'owners', createdAt: 1 }, CLI_ACTOR);
    for (const [id, email] of [
      ['usr_1', 'one@example.com'],
      ['usr_2', 'two@example.com'],
    ] as const) {
      await a.createUser({ id, email, passwordHash: 'x', createdAt: 1, disabledAt: null }, CLI_ACTOR);
      await a.setMembership(ws.id, id, 'owner', CLI_ACTOR, 1);
    }
    for (let round = 0; round < 5; round++) {
      const results = await Promise.allSettled([
        a.setMembership(ws.id, 'usr_1', 'admin', CLI_ACTOR, 2),
        b.removeMembership(ws.id, 'usr_2', CLI_ACTOR, 2),
      ]);
      const refused = results.filter((r) => r.status === 'rejected');
      assert.equal(refused.length, 1, 'exactly one of the two is refused');
      assert.ok(refused[0]?.status === 'rejected' && refused[0].reason instanceof StoreConflictError);
      const owners = (await a.listMembers(ws.id)).filter((m) => m.role === 'owner');
      assert.equal(owners.length, 1);
      // Back to two owners for the next round.
      await a.setMembership(ws.id, 'usr_1', 'owner', CLI_ACTOR, 3);
      await a.setMembership(ws.id, 'usr_2', 'owner', CLI_ACTOR, 3);
    }
  });

  test('first owner: of concurrent creations on several instances exactly one wins, once', async () => {
    const stores = await instances(4);
    const results = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        (stores[i % stores.length] as Store).createFirstOwner(
          { id: `usr_f${i}`, email: `f${i}@example.com`, passwordHash: 'x', createdAt: 1, disabledAt: null },
          CLI_ACTOR,
          2,
        ),
      ),
    );
    const winners = results.filter((r) => r !== undefined);
    assert.equal(winners.length, 1, JSON.stringify(results));
    const [a] = stores as [Store];
    assert.deepEqual(
      (await a.listUsers()).map((u) => u.id),
      [winners[0]?.id],
    );
    assert.deepEqual(
      (await a.listMembers('ws_default')).map((m) => [m.userId, m.role]),
      [[winners[0]?.id, 'owner']],
    );
    assert.deepEqual((await a.listAudit({ targetId: winners[0]?.id })).map((e) => e.action).sort(), [
      'member.add',
      'user.create',
    ]);
    // Once any user exists, nothing more is created.
    assert.equal(
      await a.createFirstOwner(
        { id: 'usr_late', email: 'late@example.com', passwordHash: 'x', createdAt: 3, disabledAt: null },
        CLI_ACTOR,
        3,
      ),
      undefined,
    );
  });

  test('a TOTP step and a recovery code are used once, whichever instances race for them', async () => {
    const stores = await instances(4);
    const [a] = stores as [Store];
    await a.createUser(
      { id: 'usr_t', email: 't@example.com', passwordHash: 'x', createdAt: 1, disabledAt: null },
      CLI_ACTOR,
    );
    const claims = await Promise.all(
      stores.flatMap((st) => [st.claimTotpStep('usr_t', 100), st.claimTotpStep('usr_t', 100)]),
    );
    assert.equal(claims.filter(Boolean).length, 1, JSON.stringify(claims));
    // An older step after a newer one: refused; a newer one: claimed; an unknown user: false.
    assert.equal(await a.claimTotpStep('usr_t', 99), false);
    assert.equal(await a.claimTotpStep('usr_t', 101), true);
    assert.equal(await a.claimTotpStep('usr_none', 1), false);

    await a.updateCredentials(
      'usr_t',
      { recoveryCodes: ['h1', 'h2', 'h3'] },
      'user.totp_enable',
      CLI_ACTOR,
      2,
    );
    const spent = await Promise.all(stores.map((st) => st.spendRecoveryCode('usr_t', 'h1', CLI_ACTOR, 3)));
    assert.equal(spent.filter(Boolean).length, 1, JSON.stringify(spent));
    // Two different codes at once: both gone (no lost update brings one back).
    assert.deepEqual(
      await Promise.all([
        a.spendRecoveryCode('usr_t', 'h2', CLI_ACTOR, 4),
        (stores[1] as Store).spendRecoveryCode('usr_t', 'h3', CLI_ACTOR, 4),
      ]),
      [true, true],
    );
    assert.deepEqual((await a.getUser('usr_t'))?.recoveryCodes, []);
    assert.equal(await a.spendRecoveryCode('usr_t', 'h1', CLI_ACTOR, 5), false);
    const audit = await a.listAudit({ targetId: 'usr_t', action: 'user.recovery_code_used' });
    assert.equal(audit.length, 3);
    assert.ok(!JSON.stringify(audit).includes('h1'), 'the audit never names a code');
  });

  test('countSecretBound counts keys, alert channels and users with a TOTP secret', async () => {
    const store = await s.open();
    assert.deepEqual(await store.countSecretBound(), { keys: 0, channels: 0, twoFactorUsers: 0 });
    await createKey({ store, pepper: Buffer.alloc(32, 1), prefix: 'kg' }, { name: 'bound to the secret' });
    await store.createUser(
      { id: 'usr_sb', email: 'sb@example.com', passwordHash: 'x', createdAt: 1, disabledAt: null },
      CLI_ACTOR,
    );
    assert.deepEqual(await store.countSecretBound(), { keys: 1, channels: 0, twoFactorUsers: 0 });
    await store.updateCredentials('usr_sb', { totpSecret: 'sealed' }, 'user.totp_setup', CLI_ACTOR, 2);
    await store.createChannel(
      {
        id: 'ch_sb',
        workspaceId: 'ws_default',
        type: 'webhook',
        name: 'hook',
        configSealed: 'sealed',
        createdAt: 1,
      },
      CLI_ACTOR,
    );
    assert.deepEqual(await store.countSecretBound(), { keys: 1, channels: 1, twoFactorUsers: 1 });
  });

  test('the same alert raised by several instances at once is one alert', async () => {
    const stores = await instances(4);
    const alert = (i: number): NewAlert => ({
      id: `alr_race_${i}`,
      workspaceId: 'ws_default',
      kind: 'auth_failures',
      fingerprint: 'auth_failures:198.51.100.7',
      keyId: null,
      severity: 'warning',
      title: 'Burst',
      message: 'Burst of failed authentications',
      details: { ip: '198.51.100.7', count: i },
      at: 1_000_000 + i,
    });
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => stores[i % stores.length]?.raiseAlert(alert(i), 3_600_000)),
    );
    assert.equal(results.filter((r) => r?.fresh).length, 1);
    const [only, ...rest] = await stores[0]!.listAlerts({ kind: 'auth_failures' });
    assert.equal(rest.length, 0);
    assert.equal(only?.occurrences, 20);
    assert.equal(only?.lastAt, 1_000_019);
    // Acknowledged by two at once: one acknowledgement, audited once.
    await Promise.all(stores.map((st) => st.acknowledgeAlert(only?.id ?? '', CLI_ACTOR, 2_000_000)));
    const audit = await stores[0]!.listAudit({ targetId: only?.id, action: 'alert.acknowledge' });
    assert.equal(audit.length, 1);
  });

  test('expiries and reminders swept by several instances at once are recorded once', async () => {
    const stores = await instances(4);
    const [first] = stores as [Store];
    const day = 86_400_000;
    const now = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const { record } = await createKey(
        { store: first, pepper, prefix: 'kg', now: now - 2 * day },
        { name: `expiring ${i}`, expiresInMs: i % 2 === 0 ? day : 4 * day },
      );
      ids.push(record.id);
    }
    const expired = (await Promise.all(stores.map((st) => st.recordExpiries(now)))).flat().sort();
    assert.deepEqual(expired, ids.filter((_, i) => i % 2 === 0).sort());
    const reminded = (
      await Promise.all(stores.map((st) => st.recordExpiryReminders(now, [14 * day, 3 * day])))
    ).flat();
    assert.deepEqual(reminded.map((r) => r.keyId).sort(), ids.filter((_, i) => i % 2 === 1).sort());
    assert.ok(reminded.every((r) => r.thresholdMs === 3 * day));
    const audit = await first.listAudit({ action: 'key.expiry_reminder' });
    assert.equal(audit.length, 3);
  });

  test('usage batches written by several instances at once, with overlaps: rollups equal the raw sums', async () => {
    const stores = await instances(4);
    const [first] = stores as [Store];
    const base = Date.UTC(2026, 1, 2, 22);
    const keys: string[] = [];
    for (let k = 0; k < 5; k++)
      keys.push((await createKey({ store: first, pepper, prefix: 'kg' }, { name: `used ${k}` })).record.id);
    // An id seen twice is the same record (a batch retried): which instance stores it first is a
    // race, so both copies must say the same.
    const records = Array.from({ length: 600 }, (_, i) =>
      usage(
        `u${i % 400}`,
        keys[i % 5] ?? '',
        base + (((i % 400) * 37_000) % (5 * 3_600_000)),
        i % 400,
        2 ** ((i % 400) % 17),
      ),
    );
    // Each instance writes overlapping slices in batches of 50: every id reaches the store 1–3 times.
    await Promise.all(
      stores.map(async (store, i) => {
        const mine = records.slice(i * 100, i * 100 + 300);
        for (let j = 0; j < mine.length; j += 50) await store.recordUsage(mine.slice(j, j + 50));
      }),
    );
    const stored = new Map<string, UsageRecord>();
    for (const r of records.slice(0, 600)) if (!stored.has(r.id)) stored.set(r.id, r);
    const raw = await s.query(first, 'SELECT COUNT(*) AS n, SUM(total_tokens) AS t FROM usage_records');
    assert.equal(Number(raw[0]?.n), 400);
    const hourly = await s.query(
      first,
      `SELECT SUM(requests) AS n, SUM(total_tokens) AS t, ${LATENCY_COLUMNS.map((c) => `SUM(${c}) AS ${c}`).join(', ')}
       FROM usage_hourly`,
    );
    const daily = await s.query(first, 'SELECT SUM(requests) AS n, SUM(total_tokens) AS t FROM usage_daily');
    const tokens = [...stored.values()].reduce((n, r) => n + r.totalTokens, 0);
    assert.deepEqual([hourly[0]?.n, hourly[0]?.t, daily[0]?.n, daily[0]?.t].map(Number), [
      400,
      tokens,
      400,
      tokens,
    ]);
    const histogram = LATENCY_COLUMNS.map((c) => Number(hourly[0]?.[c]));
    const want = LATENCY_COLUMNS.map(() => 0);
    for (const r of stored.values()) want[latencyBucket(r.latencyMs)]!++;
    assert.deepEqual(histogram, want);
    const report = await first.usageReport({ by: 'key' });
    assert.equal(
      report.rows.reduce((n, r) => n + r.requests, 0),
      400,
    );
    assert.equal(await first.tokensUsed({ workspaceId: 'ws_default', since: base }), tokens);
    // Each key's last use is its latest record, whichever batch carried it.
    for (const keyId of keys) {
      const latest = Math.max(...records.filter((r) => r.keyId === keyId).map((r) => r.time));
      assert.equal((await first.getKey(keyId))?.lastUsedAt, latest);
    }
  });

  test('the audit log refuses updates and deletes, even of no row', async () => {
    const store = await s.open();
    await store.createWorkspace({ id: 'ws_audited', name: 'audited', createdAt: 1 }, CLI_ACTOR);
    await assert.rejects(s.exec(store, "UPDATE audit_events SET action = 'forged'"), /append-only/);
    await assert.rejects(s.exec(store, 'DELETE FROM audit_events'), /append-only/);
    if (s.name === 'postgres') {
      await assert.rejects(s.exec(store, "DELETE FROM audit_events WHERE id = 'none'"), /append-only/);
      await assert.rejects(s.exec(store, 'TRUNCATE audit_events'), /append-only/);
    }
    assert.equal((await store.listAudit({ workspaceId: 'ws_audited' })).length, 1);
  });

  test('a batch of 2 000 usage records is written whole, once (the time is printed)', async (t) => {
    const store = await s.open();
    const base = Date.UTC(2026, 1, 3);
    const batch = Array.from({ length: 2000 }, (_, i) =>
      usage(`b${i}`, `key_${i % 50}`, base + i * 1000, i % 1000, 5 + (i % 300)),
    );
    const began = performance.now();
    await store.recordUsage(batch);
    const ms = performance.now() - began;
    const again = performance.now();
    await store.recordUsage(batch);
    const dupMs = performance.now() - again;
    t.diagnostic(
      `${s.name}: 2000 new records in ${ms.toFixed(0)} ms; the same again in ${dupMs.toFixed(0)} ms`,
    );
    const [row] = await store.usageTotals({});
    assert.ok(row);
    const totals = await store.usageReport({ by: 'workspace' });
    assert.equal(totals.rows[0]?.requests, 2000);
  });
}

function consoleRecords(s: StoreUnderTest): void {
  const day = 86_400_000;

  async function withUser(store: Store, id: string, email: string): Promise<void> {
    await store.createUser(
      { id, email, passwordHash: 'scrypt$old', createdAt: 1, disabledAt: null },
      CLI_ACTOR,
    );
  }

  test('credentials: each field changes alone, the audit names fields and never values', async () => {
    const store = await s.open();
    await withUser(store, 'usr_c', 'c@example.com');
    assert.deepEqual(
      {
        ...(await store.getUser('C@example.com')),
      },
      {
        id: 'usr_c',
        email: 'c@example.com',
        createdAt: 1,
        disabledAt: null,
        passwordHash: 'scrypt$old',
        totpSecret: null,
        totpEnabledAt: null,
        recoveryCodes: [],
      },
    );
    assert.equal(
      await store.updateCredentials(
        'usr_c',
        { totpSecret: 'sealed-secret' },
        'user.totp_pending',
        CLI_ACTOR,
        5,
      ),
      true,
    );
    assert.equal(
      await store.updateCredentials(
        'usr_c',
        { totpEnabledAt: 6, recoveryCodes: ['aa', 'bb'] },
        'user.totp_enable',
        CLI_ACTOR,
        6,
      ),
      true,
    );
    const user = await store.getUser('usr_c');
    assert.equal(user?.passwordHash, 'scrypt$old');
    assert.equal(user?.totpSecret, 'sealed-secret');
    assert.equal(user?.totpEnabledAt, 6);
    assert.deepEqual(user?.recoveryCodes, ['aa', 'bb']);
    await store.updateCredentials(
      'usr_c',
      { totpSecret: null, totpEnabledAt: null, recoveryCodes: [] },
      'user.totp_disable',
      CLI_ACTOR,
      7,
    );
    const off = await store.getUser('usr_c');
    assert.deepEqual([off?.totpSecret, off?.totpEnabledAt, off?.recoveryCodes], [null, null, []]);
    assert.equal(
      await store.updateCredentials('usr_none', { passwordHash: 'x' }, 'user.password', CLI_ACTOR, 8),
      false,
    );
    assert.equal(await store.updateCredentials('usr_c', {}, 'user.noop', CLI_ACTOR, 8), true);
    const audit = await store.listAudit({ targetId: 'usr_c' });
    assert.deepEqual(
      audit.map((e) => [e.action, e.changes]),
      [
        ['user.noop', {}],
        [
          'user.totp_disable',
          {
            totp_secret: { after: null },
            totp_enabled_at: { after: null },
            recovery_codes: { after: 'set' },
          },
        ],
        ['user.totp_enable', { totp_enabled_at: { after: 'set' }, recovery_codes: { after: 'set' } }],
        ['user.totp_pending', { totp_secret: { after: 'set' } }],
        ['user.create', { email: { after: 'c@example.com' } }],
      ],
    );
    assert.ok(!JSON.stringify(audit).includes('sealed-secret'));
  });

  test('sessions: touched forward only, revoked one or all but one, old ones deleted on the way', async () => {
    const store = await s.open();
    await withUser(store, 'usr_s', 's@example.com');
    const session = (id: string, createdAt: number) => ({
      id,
      userId: 'usr_s',
      createdAt,
      expiresAt: createdAt + day,
      lastSeenAt: createdAt,
      revokedAt: null,
      ip: '10.0.0.1',
      userAgent: 'test',
    });
    for (const [id, at] of [
      ['sess_a', 1000],
      ['sess_b', 2000],
      ['sess_c', 3000],
      ['sess_old', -2 * day],
    ] as const)
      await store.createSession(session(id, at));
    assert.deepEqual(await store.getSession('sess_a'), session('sess_a', 1000));
    assert.equal(await store.getSession('sess_none'), undefined);
    await store.touchSession('sess_a', 5000);
    await store.touchSession('sess_a', 4000);
    assert.equal((await store.getSession('sess_a'))?.lastSeenAt, 5000);
    assert.equal(await store.revokeSessions({ id: 'sess_a' }, 6000), 1);
    assert.equal(await store.revokeSessions({ id: 'sess_a' }, 6001), 0, 'once');
    assert.equal((await store.getSession('sess_a'))?.revokedAt, 6000);
    assert.equal(await store.getSession('sess_old'), undefined, 'an expired session is deleted on the way');
    assert.equal(await store.revokeSessions({ userId: 'usr_s', exceptId: 'sess_c' }, 7000), 1);
    assert.equal((await store.getSession('sess_b'))?.revokedAt, 7000);
    assert.equal((await store.getSession('sess_c'))?.revokedAt, null);
    assert.equal(await store.revokeSessions({ userId: 'usr_s' }, 8000), 1);
    // A day after their end, ended sessions are deleted too.
    await store.revokeSessions({ id: 'none' }, 8000 + day + 1);
    assert.equal(await store.getSession('sess_b'), undefined);
  });

  test('invitations: redeemed once (by one of several instances), revoked, expired; members keep their role', async () => {
    const store = await s.open();
    const other = await s.reopen(store);
    await withUser(store, 'usr_i', 'i@example.com');
    await withUser(store, 'usr_j', 'j@example.com');
    await store.setMembership('ws_default', 'usr_j', 'admin', CLI_ACTOR, 1);
    const invite = (id: string, email: string, role: 'member' | 'viewer', expiresAt: number) => ({
      id,
      workspaceId: 'ws_default',
      email,
      role,
      createdBy: 'usr_j',
      createdAt: 10,
      expiresAt,
      acceptedAt: null,
      revokedAt: null,
    });
    const created = await store.createInvite(
      { ...invite('inv_1', 'i@example.com', 'member', 10 * day), tokenHash: 'hash_1' },
      CLI_ACTOR,
    );
    assert.deepEqual(created, invite('inv_1', 'i@example.com', 'member', 10 * day));
    await store.createInvite(
      { ...invite('inv_2', 'j@example.com', 'viewer', 10 * day), tokenHash: 'hash_2' },
      CLI_ACTOR,
    );
    await store.createInvite(
      { ...invite('inv_3', 'x@example.com', 'viewer', 100), tokenHash: 'hash_3' },
      CLI_ACTOR,
    );
    await store.createInvite(
      { ...invite('inv_4', 'y@example.com', 'viewer', 10 * day), tokenHash: 'hash_4' },
      CLI_ACTOR,
    );
    assert.deepEqual((await store.findInvite('hash_1'))?.id, 'inv_1');
    assert.equal(await store.findInvite('hash_none'), undefined);
    assert.deepEqual(
      (await store.listInvites('ws_default')).map((i) => i.id),
      ['inv_1', 'inv_2', 'inv_3', 'inv_4'],
    );

    const results = await Promise.all([
      store.acceptInvite('inv_1', 'usr_i', CLI_ACTOR, 1000),
      other.acceptInvite('inv_1', 'usr_i', CLI_ACTOR, 1000),
    ]);
    assert.equal(results.filter((r) => r !== undefined).length, 1, 'redeemed once');
    assert.equal((await store.getMembership('ws_default', 'usr_i'))?.role, 'member');
    const joined = await store.acceptInvite('inv_2', 'usr_j', CLI_ACTOR, 1000);
    assert.equal(joined?.role, 'admin', 'a member already keeps their role');
    assert.equal(await store.acceptInvite('inv_3', 'usr_i', CLI_ACTOR, 1000), undefined, 'expired');
    assert.equal(await store.revokeInvite('ws_other', 'inv_4', CLI_ACTOR, 1000), false, 'another workspace');
    assert.equal(await store.revokeInvite('ws_default', 'inv_4', CLI_ACTOR, 1000), true);
    assert.equal(await store.revokeInvite('ws_default', 'inv_4', CLI_ACTOR, 1001), false, 'once');
    assert.equal(await store.acceptInvite('inv_4', 'usr_i', CLI_ACTOR, 1002), undefined, 'revoked');
    assert.equal(await store.revokeInvite('ws_default', 'inv_1', CLI_ACTOR, 1003), false, 'accepted');
    const listed = new Map((await store.listInvites('ws_default')).map((i) => [i.id, i]));
    assert.equal(listed.get('inv_1')?.acceptedAt, 1000);
    assert.equal(listed.get('inv_4')?.revokedAt, 1000);
    const actions = (await store.listAudit({ workspaceId: 'ws_default' })).map((e) => e.action).reverse();
    assert.deepEqual(actions, [
      'member.add',
      'invite.create',
      'invite.create',
      'invite.create',
      'invite.create',
      'member.add',
      'invite.accept',
      'invite.accept',
      'invite.revoke',
    ]);
  });

  test('settings: the first value stored wins, whichever instance stores it', async () => {
    const store = await s.open();
    const others = await Promise.all([s.reopen(store), s.reopen(store), s.reopen(store)]);
    assert.equal(await store.getSetting('salt'), undefined);
    const values = await Promise.all([store, ...others].map((st, i) => st.initSetting('salt', `value ${i}`)));
    assert.equal(new Set(values).size, 1);
    assert.equal(await store.getSetting('salt'), values[0]);
    assert.equal(await store.initSetting('salt', 'later'), values[0]);
  });
}
