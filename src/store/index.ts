import { join } from 'node:path';
import type { Background } from '../util/background.ts';
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
  /**
   * Where the errors of idle PostgreSQL connections are recorded (task `store_connections`, until
   * a new connection is made); without it they are ignored (never thrown: they would end the process).
   */
  background?: Background | undefined;
}

export const STORE_CONNECTIONS_TASK = 'store_connections';

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
      ? new (await import('./postgres.ts')).PostgresStore({
          url,
          poolSize: location.poolSize,
          onError: (error) => location.background?.failed(STORE_CONNECTIONS_TASK, error),
          onConnect: () => location.background?.succeeded(STORE_CONNECTIONS_TASK),
        })
      : new SqliteStore(join(location.dataDir, SQLITE_FILE));
  try {
    await store.migrate();
  } catch (error) {
    await store.close();
    throw error;
  }
  return store;
}
