/**
 * The store contract where the two stores could differ: the PostgreSQL schema kept in lockstep
 * with SQLite's, migrations run by many instances at once, and the invariants that SQLite gets
 * from serialised writers and PostgreSQL from locks (the change feed, the last owner, alerts,
 * expiries, usage rollups), exercised by several store instances on one database at once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
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
    // openStore with the URL: the PostgreSQL store, migrated.
    const opened = await openStore(url);
    try {
      assert.equal(opened.kind, 'postgres');
      await opened.ping();
    } finally {
      await opened.close();
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
  describeStore(s, 'several instances on one database', () => {
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
      const records = Array.from({ length: 600 }, (_, i) =>
        usage(`u${i % 400}`, `key_${i % 5}`, base + ((i * 37_000) % (5 * 3_600_000)), i % 400, 2 ** (i % 17)),
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
      const daily = await s.query(
        first,
        'SELECT SUM(requests) AS n, SUM(total_tokens) AS t FROM usage_daily',
      );
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

    test('a batch of 2 000 usage records is one write (the time is printed)', async (t) => {
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
  });
}
