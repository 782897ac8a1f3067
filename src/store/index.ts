import { join } from 'node:path';
import { SqliteStore } from './sqlite.ts';
import type { Store } from './types.ts';

export const SQLITE_FILE = 'keygate.db';

/** Where the store lives: the data directory's SQLite file, or a PostgreSQL database. */
export interface StoreLocation {
  dataDir: string;
  /** `postgres://…` or `postgresql://…`: use this PostgreSQL database instead of the data directory. */
  databaseUrl?: string | undefined;
  /** PostgreSQL connections per process (default 10). */
  poolSize?: number | undefined;
}

/** Whether a string is a PostgreSQL connection URL (rather than a data directory). */
export function isDatabaseUrl(value: string): boolean {
  return /^postgres(?:ql)?:\/\//i.test(value);
}

/**
 * Opens the store and brings its schema up to date: a PostgreSQL database when given its URL
 * (as the string, or as `databaseUrl`), otherwise the SQLite file of the data directory.
 */
export async function openStore(where: string | StoreLocation): Promise<Store> {
  const location = typeof where === 'string' ? { dataDir: where } : where;
  const url = location.databaseUrl ?? (typeof where === 'string' && isDatabaseUrl(where) ? where : undefined);
  // PostgreSQL's driver is loaded only by the deployments that use it.
  const store: Store =
    url !== undefined
      ? new (await import('./postgres.ts')).PostgresStore({ url, poolSize: location.poolSize })
      : new SqliteStore(join(location.dataDir, SQLITE_FILE));
  try {
    await store.migrate();
  } catch (error) {
    await store.close();
    throw error;
  }
  return store;
}
