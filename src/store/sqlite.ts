/**
 * The embedded store: one SQLite file in the data directory, in WAL mode so the server and the
 * CLI can use it at the same time (readers never block the writer; writers wait on a busy timeout).
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { MIGRATIONS } from './migrations.ts';
import type { KeyChanges, KeyRecord, NewKey, Store, UsageFilter, UsageRecord, UsageTotals } from './types.ts';

type Row = Record<string, SQLInputValue>;

const KEY_COLUMNS =
  'k.id, k.workspace_id, k.name, k.start, k.last4, k.created_at, k.created_by, k.expires_at, k.revoked_at, k.last_used_at, k.last_used_ip';

function num(value: SQLInputValue | undefined): number | null {
  return value === null || value === undefined ? null : Number(value);
}

function str(value: SQLInputValue | undefined): string | null {
  return value === null || value === undefined ? null : String(value);
}

function toKey(row: Row): KeyRecord {
  return {
    id: String(row.id),
    workspaceId: String(row.workspace_id),
    name: String(row.name),
    start: String(row.start),
    last4: String(row.last4),
    createdAt: Number(row.created_at),
    createdBy: str(row.created_by),
    expiresAt: num(row.expires_at),
    revokedAt: num(row.revoked_at),
    lastUsedAt: num(row.last_used_at),
    lastUsedIp: str(row.last_used_ip),
  };
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.#db = new DatabaseSync(path);
    this.#db.exec('PRAGMA busy_timeout = 5000');
    this.#db.exec('PRAGMA journal_mode = WAL');
    this.#db.exec('PRAGMA synchronous = NORMAL');
    this.#db.exec('PRAGMA foreign_keys = ON');
  }

  #stmt(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #transaction<T>(work: () => T): T {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const result = work();
      this.#db.exec('COMMIT');
      return result;
    } catch (error) {
      this.#db.exec('ROLLBACK');
      throw error;
    }
  }

  async migrate(): Promise<number> {
    this.#db.exec(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)',
    );
    return this.#transaction(() => {
      const row = this.#db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as
        | Row
        | undefined;
      let current = num(row?.v) ?? 0;
      const latest = MIGRATIONS.at(-1)?.version ?? 0;
      if (current > latest) {
        throw new Error(
          `the database schema is version ${current}, newer than this Keygate (${latest}); upgrade Keygate`,
        );
      }
      for (const migration of MIGRATIONS) {
        if (migration.version <= current) continue;
        this.#db.exec(migration.sqlite);
        this.#db
          .prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)')
          .run(migration.version, migration.name, Date.now());
        current = migration.version;
      }
      return current;
    });
  }

  async ping(): Promise<void> {
    this.#stmt('SELECT 1').get();
  }

  async createKey(key: NewKey): Promise<KeyRecord> {
    this.#transaction(() => {
      this.#stmt(
        `INSERT INTO api_keys (id, workspace_id, name, start, last4, created_at, created_by, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        key.id,
        key.workspaceId,
        key.name,
        key.start,
        key.last4,
        key.createdAt,
        key.createdBy,
        key.expiresAt,
      );
      this.#stmt('INSERT INTO api_key_hashes (hash, key_id, created_at) VALUES (?, ?, ?)').run(
        key.hash,
        key.id,
        key.createdAt,
      );
      this.#stmt('INSERT INTO key_events (key_id, kind, at) VALUES (?, ?, ?)').run(
        key.id,
        'created',
        key.createdAt,
      );
    });
    const created = await this.getKey(key.id);
    if (!created) throw new Error(`key ${key.id} vanished after insert`);
    return created;
  }

  async findKeyByHash(hash: string): Promise<KeyRecord | undefined> {
    const row = this.#stmt(
      `SELECT ${KEY_COLUMNS} FROM api_key_hashes h JOIN api_keys k ON k.id = h.key_id
       WHERE h.hash = ? AND (h.valid_until IS NULL OR h.valid_until > ?)`,
    ).get(hash, Date.now()) as Row | undefined;
    return row ? toKey(row) : undefined;
  }

  async getKey(id: string): Promise<KeyRecord | undefined> {
    const row = this.#stmt(`SELECT ${KEY_COLUMNS} FROM api_keys k WHERE k.id = ?`).get(id) as Row | undefined;
    return row ? toKey(row) : undefined;
  }

  async listKeys(workspaceId?: string): Promise<KeyRecord[]> {
    const rows = workspaceId
      ? this.#stmt(
          `SELECT ${KEY_COLUMNS} FROM api_keys k WHERE k.workspace_id = ? ORDER BY k.created_at, k.id`,
        ).all(workspaceId)
      : this.#stmt(`SELECT ${KEY_COLUMNS} FROM api_keys k ORDER BY k.created_at, k.id`).all();
    return (rows as Row[]).map(toKey);
  }

  async revokeKey(id: string, at: number): Promise<KeyRecord | undefined> {
    this.#transaction(() => {
      const result = this.#stmt('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(
        at,
        id,
      );
      if (result.changes > 0) {
        this.#stmt('INSERT INTO key_events (key_id, kind, at) VALUES (?, ?, ?)').run(id, 'revoked', at);
      }
    });
    return this.getKey(id);
  }

  async keyChanges(after: number): Promise<KeyChanges> {
    if (after < 0) {
      const row = this.#stmt('SELECT COALESCE(MAX(seq), 0) AS seq FROM key_events').get() as Row;
      return { cursor: Number(row.seq), keyIds: [] };
    }
    const rows = this.#stmt('SELECT seq, key_id FROM key_events WHERE seq > ? ORDER BY seq LIMIT 10000').all(
      after,
    ) as Row[];
    if (rows.length === 0) return { cursor: after, keyIds: [] };
    return { cursor: Number(rows.at(-1)?.seq), keyIds: [...new Set(rows.map((r) => String(r.key_id)))] };
  }

  async recordUsage(records: readonly UsageRecord[]): Promise<void> {
    if (records.length === 0) return;
    const lastUse = new Map<string, UsageRecord>();
    this.#transaction(() => {
      const insert = this.#stmt(
        `INSERT INTO usage_records (id, time, key_id, workspace_id, model, endpoint, status, prompt_tokens,
           completion_tokens, total_tokens, latency_ms, ttft_ms, client_ip)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
      );
      for (const r of records) {
        insert.run(
          r.id,
          r.time,
          r.keyId,
          r.workspaceId,
          r.model,
          r.endpoint,
          r.status,
          r.promptTokens,
          r.completionTokens,
          r.totalTokens,
          r.latencyMs,
          r.ttftMs,
          r.clientIp,
        );
        if (r.keyId !== null) {
          const seen = lastUse.get(r.keyId);
          if (!seen || seen.time < r.time) lastUse.set(r.keyId, r);
        }
      }
      const touch = this.#stmt(
        'UPDATE api_keys SET last_used_at = ?, last_used_ip = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)',
      );
      for (const [keyId, r] of lastUse) touch.run(r.time, r.clientIp, keyId, r.time);
    });
  }

  async usageTotals(filter: UsageFilter): Promise<UsageTotals[]> {
    const where: string[] = ['u.key_id IS NOT NULL'];
    const params: SQLInputValue[] = [];
    if (filter.keyId !== undefined) {
      where.push('u.key_id = ?');
      params.push(filter.keyId);
    }
    if (filter.since !== undefined) {
      where.push('u.time >= ?');
      params.push(filter.since);
    }
    const rows = this.#db
      .prepare(
        `SELECT u.key_id, k.name, COUNT(*) AS requests, SUM(CASE WHEN u.status >= 400 THEN 1 ELSE 0 END) AS errors,
           SUM(u.prompt_tokens) AS prompt_tokens, SUM(u.completion_tokens) AS completion_tokens,
           SUM(u.total_tokens) AS total_tokens
         FROM usage_records u LEFT JOIN api_keys k ON k.id = u.key_id
         WHERE ${where.join(' AND ')}
         GROUP BY u.key_id, k.name ORDER BY total_tokens DESC, u.key_id`,
      )
      .all(...params) as Row[];
    return rows.map((row) => ({
      keyId: String(row.key_id),
      name: str(row.name),
      requests: Number(row.requests),
      errors: Number(row.errors),
      promptTokens: Number(row.prompt_tokens),
      completionTokens: Number(row.completion_tokens),
      totalTokens: Number(row.total_tokens),
    }));
  }

  async close(): Promise<void> {
    if (this.#db.isOpen) this.#db.close();
  }
}
