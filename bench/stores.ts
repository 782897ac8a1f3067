/**
 * PostgreSQL and Redis for the `keygate-pg` target: a fresh database per run (dropped at the end)
 * and a Redis key prefix of its own (its keys deleted at the end).
 *
 * PostgreSQL is found at KEYGATE_BENCH_DATABASE_URL, or postgres://postgres@127.0.0.1:5432/postgres;
 * Redis at KEYGATE_BENCH_REDIS_URL, or redis://127.0.0.1:6379.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';

export const PG_ADMIN_URL =
  process.env.KEYGATE_BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = process.env.KEYGATE_BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Where a URL points, without credentials, for messages. */
export function shown(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || (u.protocol.startsWith('redis') ? 6379 : 5432)}`;
}

async function adminQuery(sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 3000 });
  await client.connect();
  try {
    return await client.query(sql, params);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Undefined when PostgreSQL answers; otherwise why not. */
export async function postgresUnavailable(): Promise<string | undefined> {
  try {
    await adminQuery('SELECT 1');
    return undefined;
  } catch (error) {
    return `PostgreSQL not reachable at ${shown(PG_ADMIN_URL)}: ${(error as Error).message || String(error)}`;
  }
}

/** Undefined when Redis answers PING; otherwise why not. */
export async function redisUnavailable(): Promise<string | undefined> {
  const client = new Redis(REDIS_URL, { lazyConnect: true, retryStrategy: () => null, connectTimeout: 2000 });
  let cause: unknown;
  client.on('error', (error) => {
    cause ??= error;
  });
  try {
    await client.connect();
    await client.ping();
    return undefined;
  } catch (error) {
    const reason = cause ?? error;
    return `Redis not reachable at ${shown(REDIS_URL)}: ${reason instanceof Error ? reason.message : String(reason)}`;
  } finally {
    client.disconnect();
  }
}

/** Creates `keygate_bench_<random>`; returns its name and URL. */
export async function createBenchDatabase(): Promise<{ name: string; url: string }> {
  const name = `keygate_bench_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${name}`);
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return { name, url: url.toString() };
}

/** Drops the benchmark's database, whoever is still connected. */
export async function dropBenchDatabase(name: string): Promise<void> {
  if (!/^keygate_bench_[0-9a-f]{12}$/.test(name)) throw new Error(`refusing to drop ${name}`);
  await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
}

/** A Redis prefix no other run uses: `keygate-bench:<random>:`. */
export function benchPrefix(): string {
  return `keygate-bench:${randomBytes(6).toString('hex')}:`;
}

/** Deletes every Redis key under `prefix`; returns how many. */
export async function deleteRedisPrefix(prefix: string): Promise<number> {
  if (!prefix.startsWith('keygate-bench:')) throw new Error(`refusing to delete keys under ${prefix}`);
  const client = new Redis(REDIS_URL, {
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    retryStrategy: () => null,
  });
  client.on('error', () => {});
  let deleted = 0;
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) deleted += await client.del(...keys);
    } while (cursor !== '0');
    return deleted;
  } finally {
    client.disconnect();
  }
}
