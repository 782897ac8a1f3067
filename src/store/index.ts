import { join } from 'node:path';
import { SqliteStore } from './sqlite.ts';
import type { Store } from './types.ts';

export const SQLITE_FILE = 'keygate.db';

/** Opens the store for a data directory and brings its schema up to date. */
export async function openStore(dataDir: string): Promise<Store> {
  const store = new SqliteStore(join(dataDir, SQLITE_FILE));
  await store.migrate();
  return store;
}
