/**
 * An online copy of the SQLite store, taken while a gateway writes to it: `VACUUM INTO` on a
 * read-only connection of its own. In WAL mode that connection reads one consistent snapshot
 * (every transaction committed before it began, none after) while the gateway goes on writing, and
 * neither waits for the other; the copy is compact, in rollback-journal mode, with no -wal or -shm
 * file beside it. SQLite's page-by-page backup API would restart from the beginning whenever the
 * gateway writes between two of its steps, which a busy gateway does every few milliseconds.
 *
 * The file is opened directly, not through the store: a backup must not run migrations on a
 * database that a gateway of another version is using.
 */
import { closeSync, existsSync, fsyncSync, openSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';

/** What a copy holds, for the report of `keygate backup` and for a check that it opens. */
export interface BackupSummary {
  schemaVersion: number;
  keys: number;
  usageRecords: number;
  auditEvents: number;
  users: number;
}

/** Copies the database at `from` to the new file `to` (which must not exist), fsynced, and checks the copy. */
export function backupSqlite(from: string, to: string): BackupSummary {
  if (!existsSync(from)) throw new Error(`there is no database at ${from}`);
  const source = new DatabaseSync(from, { readOnly: true });
  try {
    // The gateway's checkpoint or a CLI write can hold the database for a moment.
    source.exec('PRAGMA busy_timeout = 5000');
    source.prepare('VACUUM INTO ?').run(to);
  } finally {
    source.close();
  }
  fsyncPath(to);
  return inspectSqlite(to);
}

/** Flushes a file or a directory (its entries: a rename into it) to the disk. */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Checks a database file (integrity and schema) and counts what it holds. Throws if it is damaged. */
export function inspectSqlite(path: string): BackupSummary {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const check = db.prepare('PRAGMA quick_check').all() as { quick_check: string }[];
    const problems = check.map((row) => row.quick_check).filter((text) => text !== 'ok');
    if (problems.length > 0) throw new Error(`${path} is damaged: ${problems.slice(0, 3).join('; ')}`);
    const count = (table: string) =>
      Number((db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n);
    const version = db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as {
      v: number | null;
    };
    return {
      schemaVersion: Number(version.v ?? 0),
      keys: count('api_keys'),
      usageRecords: count('usage_records'),
      auditEvents: count('audit_events'),
      users: count('users'),
    };
  } finally {
    db.close();
  }
}
