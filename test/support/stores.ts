/**
 * The stores the store tests run against: SQLite (a file in a temporary directory) and
 * PostgreSQL (a database of its own per test file, `keygate_test_<random>`, dropped at the end;
 * one schema per opened store, so that every `open()` starts empty and fast).
 *
 * PostgreSQL is found at KEYGATE_TEST_DATABASE_URL, or postgres://postgres@127.0.0.1:5432/postgres
 * (trust authentication). When it cannot be reached its suites are skipped with the reason, except
 * under CI (the CI environment variable set), where they fail.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync, type SQLInputValue } from 'node:sqlite';
import { after, before, describe } from 'node:test';
import pg from 'pg';
import { MIGRATIONS } from '../../src/store/migrations.ts';
import { PG_MIGRATIONS, SCHEMA_MIGRATIONS_DDL } from '../../src/store/pg-migrations.ts';
import { PG_TYPES, PostgresStore } from '../../src/store/postgres.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import type { Store } from '../../src/store/types.ts';
import { tempDir } from './gateway.ts';
import { eventually } from './wait.ts';

export type Row = Record<string, unknown>;

export interface StoreUnderTest {
  readonly name: 'sqlite' | 'postgres';
  /** Why this store cannot be tested here (PostgreSQL not reachable); undefined when it can. */
  readonly unavailable: string | undefined;
  /**
   * A new, empty store of its own (file or schema), brought up to date, or up to `version` only
   * (the migrations applied by hand, as an older Keygate left it; the store itself not migrated).
   */
  open(options?: { version?: number }): Promise<Store>;
  /** Another instance on the same database as `store`: what a second process would open. */
  reopen(store: Store): Promise<Store>;
  /** One statement straight on the database of `store` (`?` placeholders); numbers as numbers. */
  query(store: Store, sql: string, params?: unknown[]): Promise<Row[]>;
  /** Statements (no parameters) straight on the database of `store`. */
  exec(store: Store, sql: string): Promise<void>;
  /** Everything the database of `store` holds, as text (to look for what must not be there). */
  dump(store: Store): Promise<string>;
  /** The tables of the schema of `store`, each with its columns and indexes (sorted). */
  schema(store: Store): Promise<Record<string, { columns: string[]; indexes: string[] }>>;
  /** Closes every store opened here and deletes what they were kept in. */
  cleanup(): Promise<void>;
}

/** The administrative connection to PostgreSQL (its `postgres` database). */
export const PG_ADMIN_URL =
  process.env.KEYGATE_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** The URL of another database on the same server. */
export function databaseUrl(database: string): string {
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${database}`;
  return url.toString();
}

/** Where the URL points, without a password, for messages. */
function shown(url: string): string {
  const u = new URL(url);
  u.password = '';
  return `${u.hostname}:${u.port || 5432}`;
}

let reachability: Promise<string | undefined> | undefined;

/** Undefined when PostgreSQL answers; otherwise why not (the reason a suite is skipped with). */
export function postgresUnavailable(): Promise<string | undefined> {
  reachability ??= (async () => {
    const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 3000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      return undefined;
    } catch (error) {
      return `PostgreSQL not reachable at ${shown(PG_ADMIN_URL)}: ${(error as Error).message || String(error)}`;
    } finally {
      await client.end().catch(() => {});
    }
  })();
  return reachability;
}

/** Runs SQL on the admin database. */
export async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** Creates a new empty database `keygate_test_<random>`; returns its name. */
export async function createTestDatabase(): Promise<string> {
  const name = `keygate_test_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${name}`);
  return name;
}

/**
 * Drops a test database. A closed pool's connections may take a moment to go (pg's pool.end()
 * resolves before their sockets close): wait for them up to 2 s rather than kill them.
 */
export async function dropTestDatabase(name: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    const idle = async () =>
      (
        await client.query<{ n: number }>(
          'SELECT COUNT(*)::int AS n FROM pg_stat_activity WHERE datname = $1',
          [name],
        )
      ).rows[0]?.n === 0;
    // Past 2 s, FORCE ends what is left.
    await eventually(idle, `the connections to ${name} to close`, 2000).catch(() => {});
    await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await client.end();
  }
}

/** `?` placeholders as PostgreSQL's `$1`, `$2`… (the test SQL has no `?` inside strings). */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

function sqliteStores(): StoreUnderTest {
  let dir: string | undefined;
  let files = 0;
  const paths = new WeakMap<Store, string>();
  const opened: Store[] = [];
  const pathOf = (store: Store) => {
    const path = paths.get(store);
    if (!path) throw new Error('not a store opened by this factory');
    return path;
  };
  const withDb = <T>(store: Store, work: (db: DatabaseSync) => T): T => {
    const db = new DatabaseSync(pathOf(store));
    try {
      return work(db);
    } finally {
      db.close();
    }
  };
  const track = (store: SqliteStore, path: string) => {
    paths.set(store, path);
    opened.push(store);
    return store;
  };
  return {
    name: 'sqlite',
    unavailable: undefined,
    async open(options = {}) {
      dir ??= tempDir('keygate-store-');
      const path = join(dir, `store-${files++}.db`);
      if (options.version !== undefined) {
        const db = new DatabaseSync(path);
        db.exec(
          'CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)',
        );
        for (const m of MIGRATIONS.filter((m) => m.version <= (options.version ?? 0))) {
          db.exec(m.sqlite);
          db.prepare('INSERT INTO schema_migrations VALUES (?, ?, ?)').run(m.version, m.name, Date.now());
        }
        db.close();
        return track(new SqliteStore(path), path);
      }
      const store = track(new SqliteStore(path), path);
      await store.migrate();
      return store;
    },
    async reopen(store) {
      const path = pathOf(store);
      return track(new SqliteStore(path), path);
    },
    async query(store, sql, params = []) {
      return withDb(store, (db) =>
        (db.prepare(sql).all(...(params as SQLInputValue[])) as Row[]).map((r) => ({ ...r })),
      );
    },
    async exec(store, sql) {
      withDb(store, (db) => db.exec(sql));
    },
    async dump(store) {
      const path = pathOf(store);
      return [path, `${path}-wal`]
        .map((f) => {
          try {
            return readFileSync(f).toString('latin1');
          } catch {
            return '';
          }
        })
        .join('');
    },
    async schema(store) {
      return withDb(store, (db) => {
        const out: Record<string, { columns: string[]; indexes: string[] }> = {};
        const tables = db
          .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
          .all() as { name: string }[];
        for (const { name } of tables) {
          const columns = (
            db.prepare('SELECT name FROM pragma_table_info(?)').all(name) as { name: string }[]
          )
            .map((c) => c.name)
            .sort();
          const indexes = (
            db
              .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
              )
              .all(name) as { name: string }[]
          )
            .map((i) => i.name)
            .sort();
          out[name] = { columns, indexes };
        }
        return out;
      });
    },
    async cleanup() {
      for (const store of opened) await store.close();
      opened.length = 0;
      if (dir) rmSync(dir, { recursive: true, force: true });
      dir = undefined;
    },
  };
}

function postgresStores(unavailable: string | undefined): StoreUnderTest {
  let database: Promise<string> | undefined;
  let schemas = 0;
  const schemaOf = new WeakMap<Store, string>();
  const opened: Store[] = [];
  const urlOf = async () => {
    database ??= createTestDatabase();
    return databaseUrl(await database);
  };
  const nameOf = (store: Store) => {
    const schema = schemaOf.get(store);
    if (!schema) throw new Error('not a store opened by this factory');
    return schema;
  };
  const track = (store: PostgresStore, schema: string) => {
    schemaOf.set(store, schema);
    opened.push(store);
    return store;
  };
  /** Connections for the tests' own SQL, each use set to the schema it is for. */
  let direct: pg.Pool | undefined;
  const withClient = async <T>(store: Store, work: (client: pg.PoolClient) => Promise<T>): Promise<T> => {
    if (!direct) {
      direct = new pg.Pool({ connectionString: await urlOf(), max: 2, types: PG_TYPES });
      direct.on('error', () => {}); // an idle connection cut (the next use reconnects)
    }
    const client = await direct.connect();
    try {
      await client.query(`SET search_path TO ${nameOf(store)}`);
      return await work(client);
    } finally {
      client.release();
    }
  };
  /** A new schema at `version`, by hand as an older Keygate left it; all of them: by the store. */
  const prepare = async (version?: number): Promise<string> => {
    const url = await urlOf();
    const schema = `s${schemas++}`;
    const client = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
    await client.connect();
    try {
      await client.query(`CREATE SCHEMA ${schema}`);
      if (version !== undefined) {
        await client.query(SCHEMA_MIGRATIONS_DDL);
        for (const m of PG_MIGRATIONS.filter((m) => m.version <= version)) {
          await client.query(m.postgres);
          await client.query('INSERT INTO schema_migrations VALUES ($1, $2, $3)', [
            m.version,
            m.name,
            Date.now(),
          ]);
        }
      }
    } finally {
      await client.end();
    }
    if (version === undefined) {
      const store = new PostgresStore({ url, schema, poolSize: 1 });
      try {
        await store.migrate();
      } finally {
        await store.close();
      }
    }
    return schema;
  };
  /**
   * The next migrated schema, prepared while the test runs (migrating takes PostgreSQL some
   * 150 ms of DDL, and the property tests open a store per run).
   */
  let next: Promise<string> | undefined;
  return {
    name: 'postgres',
    unavailable,
    async open(options = {}) {
      let schema: string;
      if (options.version !== undefined) schema = await prepare(options.version);
      else {
        const ready = next ?? prepare();
        next = prepare();
        next.catch(() => {}); // awaited by the next open() or by cleanup()
        schema = await ready;
      }
      const store = track(new PostgresStore({ url: await urlOf(), schema, poolSize: 4 }), schema);
      // Up to date already (or at `version`): the store finds nothing to do, or leaves it as it is.
      if (options.version === undefined) assert.equal(await store.migrate(), PG_MIGRATIONS.at(-1)?.version);
      return store;
    },
    async reopen(store) {
      const schema = nameOf(store);
      return track(new PostgresStore({ url: await urlOf(), schema, poolSize: 4 }), schema);
    },
    query(store, sql, params = []) {
      return withClient(store, async (client) => (await client.query<Row>(numbered(sql), params)).rows);
    },
    async exec(store, sql) {
      await withClient(store, (client) => client.query(sql));
    },
    dump(store) {
      return withClient(store, async (client) => {
        const tables = await client.query<{ name: string }>(
          'SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema()',
        );
        const parts: string[] = [];
        for (const { name } of tables.rows) {
          const { rows } = await client.query<{ t: string | null }>(
            `SELECT string_agg(r::text, E'\\n') AS t FROM ${pg.escapeIdentifier(name)} AS r`,
          );
          parts.push(`${name}:\n${rows[0]?.t ?? ''}`);
        }
        return parts.join('\n');
      });
    },
    schema(store) {
      return withClient(store, async (client) => {
        const out: Record<string, { columns: string[]; indexes: string[] }> = {};
        const columns = await client.query<{ t: string; c: string }>(
          `SELECT table_name AS t, column_name AS c FROM information_schema.columns
           WHERE table_schema = current_schema() ORDER BY 1, 2`,
        );
        for (const { t, c } of columns.rows) {
          out[t] ??= { columns: [], indexes: [] };
          out[t].columns.push(c);
        }
        // Indexes created by CREATE INDEX (SQLite lists those only; constraints make the others).
        const indexes = await client.query<{ t: string; i: string }>(
          `SELECT tablename AS t, indexname AS i FROM pg_indexes i
           WHERE schemaname = current_schema() AND NOT EXISTS (
             SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname AND c.connamespace = i.schemaname::regnamespace)
           ORDER BY 1, 2`,
        );
        for (const { t, i } of indexes.rows) out[t]?.indexes.push(i);
        for (const table of Object.values(out)) table.columns.sort();
        return out;
      });
    },
    async cleanup() {
      for (const store of opened) await store.close();
      opened.length = 0;
      await next?.catch(() => {});
      next = undefined;
      await direct?.end();
      direct = undefined;
      if (database) await dropTestDatabase(await database);
      database = undefined;
    },
  };
}

/** SQLite, and PostgreSQL (with the reason when it cannot be reached). */
export async function storesUnderTest(): Promise<StoreUnderTest[]> {
  return [sqliteStores(), postgresStores(await postgresUnavailable())];
}

/** Skipped (with the reason) when the store is unavailable, but failed under CI. */
export function skipReason(s: Pick<StoreUnderTest, 'unavailable'>): string | false {
  return s.unavailable !== undefined && !process.env.CI ? s.unavailable : false;
}

/**
 * A suite for one store, named `title [store]`: skipped with the reason when the store cannot be
 * reached (failing instead under CI); the store's databases are removed after it.
 */
export function describeStore(s: StoreUnderTest, title: string, body: () => void): void {
  describe(`${title} [${s.name}]`, { skip: skipReason(s) }, () => {
    if (s.unavailable !== undefined) {
      before(() => {
        throw new Error(`${s.unavailable} (CI is set: the PostgreSQL tests must run)`);
      });
    }
    after(() => s.cleanup());
    body();
  });
}
