/**
 * The embedded store: one SQLite file in the data directory, in WAL mode so the server and the
 * CLI can use it at the same time (readers never block the writer; writers wait on a busy timeout).
 * What does not depend on the database is shared with the PostgreSQL store: rows.ts, audit.ts,
 * usage-range.ts and usage-report.ts.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { LATENCY_COLUMNS, latencyBucket, latencyBucketSql, mergeHistogram } from '../usage/histogram.ts';
import { NO_PRICING } from '../usage/pricing.ts';
import { emptyLatencyCounts, foldUsage, type LatencyCounts, UsageCells } from '../usage/report.ts';
import * as audit from './audit.ts';
import { MIGRATIONS } from './migrations.ts';
import {
  auditParams,
  channelParams,
  credentialColumns,
  crossedSince,
  filterKeys,
  inviteParams,
  KEY_COLUMNS,
  KEY_FROM,
  keyPatchParams,
  newAlertParams,
  newKeyParams,
  num,
  object,
  type Row,
  sessionParams,
  strings,
  toAlert,
  toAuditEvent,
  toChannel,
  toCredentials,
  toDelivery,
  toInvite,
  toKey,
  toMembership,
  toReminder,
  toSession,
  toUser,
  toWorkspace,
  usageParams,
  WORKSPACE_COLUMNS,
  workspacePatchParams,
} from './rows.ts';
import {
  type Actor,
  type Alert,
  type AlertChannel,
  type AlertDelivery,
  type AlertFilter,
  type AlertKind,
  type AuditEvent,
  type AuditFilter,
  type CredentialsPatch,
  DEFAULT_WORKSPACE_ID,
  type ExpiryReminder,
  type HourlyCount,
  type Invite,
  type KeyChanges,
  type KeyFilter,
  type KeyPatch,
  type KeyRecord,
  type Membership,
  type NewAlert,
  type NewKey,
  type Role,
  type RotateInput,
  type SecretBoundCounts,
  type SecretMatch,
  type SessionRecord,
  type Store,
  StoreConflictError,
  type TokenFilter,
  type UsageFilter,
  type UsageRecord,
  type UsageReport,
  type UsageReportQuery,
  type UsageTotals,
  type User,
  type UserCredentials,
  type Workspace,
  type WorkspacePatch,
} from './types.ts';
import {
  DAY_MS,
  groupSql,
  HOUR_MS,
  isModelPattern,
  modelColumn,
  PRUNE_CHUNK,
  pieces,
  SOURCE_TABLE,
  splitRange,
  TIME_COLUMN,
  type TimeRange,
  type UsageSource,
  type UsageWhere,
} from './usage-range.ts';
import {
  addHistogram,
  addSums,
  groupIds,
  hourlyCountsOf,
  namedTable,
  nameGroups,
  totalsOf,
  usageReportOf,
} from './usage-report.ts';

/** Re-exported: it was first written here, and callers (the rollup tests) import it from here. */
export { splitRange } from './usage-range.ts';

function upsertRollup(table: 'usage_hourly' | 'usage_daily', time: 'hour' | 'day'): string {
  return `INSERT INTO ${table} (${time}, workspace_id, key_id, model, endpoint, requests, errors,
    prompt_tokens, completion_tokens, total_tokens, estimated_requests, latency_sum_ms, latency_max_ms,
    ${LATENCY_COLUMNS.join(', ')})
  VALUES (${new Array(13 + LATENCY_COLUMNS.length).fill('?').join(', ')})
  ON CONFLICT (${time}, workspace_id, key_id, model, endpoint) DO UPDATE SET
    requests = requests + excluded.requests, errors = errors + excluded.errors,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    total_tokens = total_tokens + excluded.total_tokens,
    estimated_requests = estimated_requests + excluded.estimated_requests,
    latency_sum_ms = latency_sum_ms + excluded.latency_sum_ms,
    latency_max_ms = MAX(latency_max_ms, excluded.latency_max_ms),
    ${LATENCY_COLUMNS.map((c) => `${c} = ${c} + excluded.${c}`).join(', ')}`;
}

const UPSERT_HOURLY = upsertRollup('usage_hourly', 'hour');
const UPSERT_DAILY = upsertRollup('usage_daily', 'day');

/** What a batch of new records adds to one rollup row (of an hour or of a day). */
interface RollupDelta extends LatencyCounts {
  time: number;
  workspaceId: string;
  keyId: string;
  model: string;
  endpoint: string;
}

function deltaAt(
  deltas: Map<string, RollupDelta>,
  time: number,
  workspaceId: string,
  keyId: string,
  model: string,
  endpoint: string,
): RollupDelta {
  const id = JSON.stringify([time, workspaceId, keyId, model, endpoint]);
  let d = deltas.get(id);
  if (!d) {
    d = {
      time,
      workspaceId,
      keyId,
      model,
      endpoint,
      ...emptyLatencyCounts(),
    };
    deltas.set(id, d);
  }
  return d;
}

function addRecord(deltas: Map<string, RollupDelta>, r: UsageRecord): void {
  const hour = Math.floor(r.time / HOUR_MS) * HOUR_MS;
  const d = deltaAt(deltas, hour, r.workspaceId ?? '', r.keyId ?? '', r.model ?? '', r.endpoint);
  d.requests++;
  if (r.status >= 400) d.errors++;
  d.promptTokens += r.promptTokens;
  d.completionTokens += r.completionTokens;
  d.totalTokens += r.totalTokens;
  if (r.tokensEstimated) d.estimatedRequests++;
  d.latencySumMs += r.latencyMs;
  d.latencyMaxMs = Math.max(d.latencyMaxMs, r.latencyMs);
  const bucket = latencyBucket(r.latencyMs);
  d.histogram[bucket] = (d.histogram[bucket] ?? 0) + 1;
}

/** The hourly deltas summed per UTC day. */
function dailyOf(hourly: Iterable<RollupDelta>): Map<string, RollupDelta> {
  const daily = new Map<string, RollupDelta>();
  for (const h of hourly) {
    const day = Math.floor(h.time / DAY_MS) * DAY_MS;
    const d = deltaAt(daily, day, h.workspaceId, h.keyId, h.model, h.endpoint);
    d.requests += h.requests;
    d.errors += h.errors;
    d.promptTokens += h.promptTokens;
    d.completionTokens += h.completionTokens;
    d.totalTokens += h.totalTokens;
    d.estimatedRequests += h.estimatedRequests;
    d.latencySumMs += h.latencySumMs;
    d.latencyMaxMs = Math.max(d.latencyMaxMs, h.latencyMaxMs);
    mergeHistogram(d.histogram, h.histogram);
  }
  return daily;
}

function rollupParams(d: RollupDelta): SQLInputValue[] {
  return [
    d.time,
    d.workspaceId,
    d.keyId,
    d.model,
    d.endpoint,
    d.requests,
    d.errors,
    d.promptTokens,
    d.completionTokens,
    d.totalTokens,
    d.estimatedRequests,
    d.latencySumMs,
    d.latencyMaxMs,
    ...d.histogram,
  ];
}

/** AND-ed conditions of a query; a condition given an undefined value is left out. */
class Conditions {
  readonly #clauses: string[] = [];
  readonly params: SQLInputValue[] = [];

  add(clause: string, ...values: (SQLInputValue | undefined)[]): this {
    if (values.some((v) => v === undefined)) return this;
    this.#clauses.push(clause);
    for (const v of values) this.params.push(v as SQLInputValue);
    return this;
  }

  /** `WHERE …`, or nothing when there is no condition. */
  get where(): string {
    return this.#clauses.length > 0 ? `WHERE ${this.#clauses.join(' AND ')}` : '';
  }

  /** The conditions joined, or `1` (true) when there is none. */
  get expression(): string {
    return this.#clauses.length > 0 ? this.#clauses.join(' AND ') : '1';
  }
}

/** The WHERE clause of a usage query over one source, for a time range. */
function usageWhere(
  filter: UsageWhere,
  source: UsageSource,
  range: TimeRange,
): { sql: string; params: SQLInputValue[] } {
  const c = new Conditions();
  const time = TIME_COLUMN[source];
  c.add(`${time} >= ?`, range.from ?? undefined);
  c.add(`${time} < ?`, range.to ?? undefined);
  c.add('key_id = ?', filter.keyId);
  c.add('workspace_id = ?', filter.workspaceId);
  c.add('endpoint = ?', filter.endpoint);
  if (filter.model !== undefined) {
    // A pattern has only * as a wildcard, so GLOB matches it exactly.
    const column = modelColumn(source);
    c.add(isModelPattern(filter.model) ? `${column} GLOB ?` : `${column} = ?`, filter.model);
  }
  c.add('key_id IN (SELECT id FROM api_keys WHERE created_by = ?)', filter.createdBy);
  return { sql: c.expression, params: c.params };
}

/** Usage records written per transaction (see `recordUsage`): ~0.7 ms of SQLite's time each here. */
const USAGE_CHUNK = 64;

/** The page cache of the key lookups' connection, in KiB (see `#findKeyStatement`). */
const KEY_LOOKUP_CACHE_KIB = 32_768;

const FIND_KEY_BY_HASH = `SELECT ${KEY_COLUMNS}, h.valid_until AS secret_valid_until FROM api_key_hashes h JOIN api_keys k ON k.id = h.key_id JOIN workspaces w ON w.id = k.workspace_id
  WHERE h.hash = ? AND (h.valid_until IS NULL OR h.valid_until > ?)`;

export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  readonly #path: string;
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();
  /** The key lookups' own read-only connection (none for `:memory:`), opened at the first lookup. */
  #keyReader: DatabaseSync | undefined;
  #findKey: StatementSync | undefined;

  constructor(path: string) {
    this.#path = path;
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.#db = new DatabaseSync(path);
    this.#db.exec('PRAGMA busy_timeout = 5000');
    this.#db.exec('PRAGMA journal_mode = WAL');
    this.#db.exec('PRAGMA synchronous = NORMAL');
    this.#db.exec('PRAGMA foreign_keys = ON');
  }

  /**
   * The key lookup of a verifier's cache miss runs on a read-only connection of its own, whose
   * page cache (up to 32 MiB, SQLite's default being 2 MiB) holds only the pages of the key
   * tables: with a million keys the upper levels of their B-trees stay cached whatever the usage
   * writes go through, so a miss costs about what it costs with a thousand keys
   * (docs/performance.md). Memory is taken only as pages are read. WAL mode lets it read while
   * the main connection writes, and each lookup sees every commit made before it.
   */
  #findKeyStatement(): StatementSync {
    if (this.#findKey) return this.#findKey;
    if (this.#path === ':memory:') {
      this.#findKey = this.#stmt(FIND_KEY_BY_HASH);
      return this.#findKey;
    }
    const reader = new DatabaseSync(this.#path, { readOnly: true });
    try {
      reader.exec('PRAGMA busy_timeout = 5000');
      reader.exec(`PRAGMA cache_size = -${KEY_LOOKUP_CACHE_KIB}`);
      this.#findKey = reader.prepare(FIND_KEY_BY_HASH);
    } catch (error) {
      reader.close();
      throw error;
    }
    this.#keyReader = reader;
    return this.#findKey;
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
      this.#rollback();
      throw error;
    }
  }

  /**
   * Ends a transaction that failed. After some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM)
   * SQLite has rolled it back already, and a ROLLBACK then fails with "cannot rollback - no
   * transaction is active", which would replace the real cause ("database or disk is full") in
   * the logs and the CLI: so only a transaction still open is rolled back, and a failure of that
   * never hides the error that caused it.
   */
  #rollback(): void {
    if (!this.#db.isOpen || !this.#db.isTransaction) return;
    try {
      this.#db.exec('ROLLBACK');
    } catch {
      // The cause is what the caller reports.
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

  #audit(event: Omit<AuditEvent, 'id'>): void {
    this.#stmt(
      `INSERT INTO audit_events (id, at, workspace_id, actor_type, actor_id, actor_ip, action, target_type, target_id, changes)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(...auditParams(event));
  }

  #changed(id: string, kind: string, at: number): void {
    this.#stmt('INSERT INTO key_events (key_id, kind, at) VALUES (?, ?, ?)').run(id, kind, at);
  }

  #getKeySync(id: string): KeyRecord | undefined {
    const row = this.#stmt(`SELECT ${KEY_COLUMNS} FROM ${KEY_FROM} WHERE k.id = ?`).get(id) as
      | Row
      | undefined;
    return row ? toKey(row) : undefined;
  }

  #getWorkspaceSync(id: string): Workspace | undefined {
    const row = this.#stmt(`SELECT ${WORKSPACE_COLUMNS} FROM workspaces WHERE id = ?`).get(id) as
      | Row
      | undefined;
    return row ? toWorkspace(row) : undefined;
  }

  async createKey(key: NewKey, actor: Actor): Promise<KeyRecord> {
    return this.#transaction(() => {
      this.#stmt(
        `INSERT INTO api_keys (id, workspace_id, name, start, last4, created_at, created_by, expires_at,
           scopes, models, allowed_ips, rpm, tpm, concurrency, budget_day, budget_month)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(...newKeyParams(key));
      this.#stmt('INSERT INTO api_key_hashes (hash, key_id, created_at) VALUES (?, ?, ?)').run(
        key.hash,
        key.id,
        key.createdAt,
      );
      this.#changed(key.id, 'created', key.createdAt);
      const created = this.#getKeySync(key.id);
      if (!created) throw new Error(`key ${key.id} vanished after insert`);
      this.#audit(audit.keyCreated(created, actor));
      return created;
    });
  }

  async findKeyByHash(hash: string, now: number): Promise<SecretMatch | undefined> {
    const row = this.#findKeyStatement().get(hash, now) as Row | undefined;
    return row ? { key: toKey(row), validUntil: num(row.secret_valid_until) } : undefined;
  }

  async getKey(id: string): Promise<KeyRecord | undefined> {
    return this.#getKeySync(id);
  }

  async listKeys(filter: KeyFilter = {}): Promise<KeyRecord[]> {
    const search = filter.search === '' ? undefined : filter.search;
    const c = new Conditions()
      .add('k.workspace_id = ?', filter.workspaceId)
      .add(
        "(instr(lower(k.name), lower(?)) > 0 OR k.id = ? OR (k.start || '…' || k.last4) = ? OR k.start = ?)",
        search,
        search,
        search,
        search,
      )
      .add('k.created_by = ?', filter.createdBy)
      .add('(k.created_at, k.id) > (SELECT created_at, id FROM api_keys WHERE id = ?)', filter.after);
    const sql = `SELECT ${KEY_COLUMNS} FROM ${KEY_FROM} ${c.where} ORDER BY k.created_at, k.id`;
    return filterKeys((this.#db.prepare(sql).all(...c.params) as Row[]).map(toKey), filter);
  }

  async updateKey(id: string, patch: KeyPatch, actor: Actor, at: number): Promise<KeyRecord | undefined> {
    return this.#transaction(() => {
      const before = this.#getKeySync(id);
      if (!before) return undefined;
      this.#stmt(
        `UPDATE api_keys SET name = ?, expires_at = ?, scopes = ?, models = ?, allowed_ips = ?, rpm = ?, tpm = ?,
           concurrency = ?, budget_day = ?, budget_month = ?, updated_at = ? WHERE id = ?`,
      ).run(...keyPatchParams(before, patch), at, id);
      const after = this.#getKeySync(id);
      if (!after) return undefined;
      const changes = audit.keyChanges(before, after);
      if (Object.keys(changes).length > 0) {
        this.#changed(id, 'updated', at);
        this.#audit(audit.keyUpdated(after, changes, actor, at));
      }
      return after;
    });
  }

  async rotateKey(input: RotateInput, actor: Actor): Promise<KeyRecord | undefined> {
    return this.#transaction(() => {
      const before = this.#getKeySync(input.id);
      if (!before) return undefined;
      this.#stmt(
        'UPDATE api_key_hashes SET valid_until = ? WHERE key_id = ? AND (valid_until IS NULL OR valid_until > ?)',
      ).run(input.graceUntil, input.id, input.graceUntil);
      this.#stmt('INSERT INTO api_key_hashes (hash, key_id, created_at) VALUES (?, ?, ?)').run(
        input.hash,
        input.id,
        input.at,
      );
      this.#stmt('UPDATE api_keys SET start = ?, last4 = ?, rotated_at = ?, updated_at = ? WHERE id = ?').run(
        input.start,
        input.last4,
        input.at,
        input.at,
        input.id,
      );
      this.#changed(input.id, 'rotated', input.at);
      const after = this.#getKeySync(input.id);
      this.#audit(audit.keyRotated(before, input, actor));
      return after;
    });
  }

  async revokeKey(id: string, at: number, actor: Actor): Promise<KeyRecord | undefined> {
    return this.#transaction(() => {
      const result = this.#stmt(
        'UPDATE api_keys SET revoked_at = ?, updated_at = ? WHERE id = ? AND revoked_at IS NULL',
      ).run(at, at, id);
      const key = this.#getKeySync(id);
      if (key && result.changes > 0) {
        this.#changed(id, 'revoked', at);
        this.#audit(audit.keyRevoked(key, actor, at));
      }
      return key;
    });
  }

  async getWorkspace(id: string): Promise<Workspace | undefined> {
    return this.#getWorkspaceSync(id);
  }

  async listWorkspaces(): Promise<Workspace[]> {
    return (
      this.#stmt(`SELECT ${WORKSPACE_COLUMNS} FROM workspaces ORDER BY created_at, id`).all() as Row[]
    ).map(toWorkspace);
  }

  async createWorkspace(
    input: { id: string; name: string; createdAt: number },
    actor: Actor,
  ): Promise<Workspace> {
    return this.#transaction(() => {
      this.#stmt('INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)').run(
        input.id,
        input.name,
        input.createdAt,
      );
      const created = this.#getWorkspaceSync(input.id);
      if (!created) throw new Error(`workspace ${input.id} vanished after insert`);
      this.#audit(audit.workspaceCreated(created, actor));
      return created;
    });
  }

  async updateWorkspace(
    id: string,
    patch: WorkspacePatch,
    actor: Actor,
    at: number,
  ): Promise<Workspace | undefined> {
    return this.#transaction(() => {
      const before = this.#getWorkspaceSync(id);
      if (!before) return undefined;
      this.#stmt(
        'UPDATE workspaces SET name = ?, max_key_lifetime_ms = ?, allowed_ips = ?, budget_day = ?, budget_month = ? WHERE id = ?',
      ).run(...workspacePatchParams(before, patch), id);
      const after = this.#getWorkspaceSync(id);
      if (!after) return undefined;
      const changes = audit.workspaceChanges(before, after);
      if (Object.keys(changes).length > 0) {
        this.#changed(id, 'workspace', at);
        this.#audit(audit.workspaceUpdated(id, changes, actor, at));
      }
      return after;
    });
  }

  async createUser(user: User & { passwordHash: string }, actor: Actor): Promise<User> {
    return this.#transaction(() => {
      this.#stmt('INSERT INTO users (id, email, password_hash, created_at) VALUES (?, ?, ?, ?)').run(
        user.id,
        user.email,
        user.passwordHash,
        user.createdAt,
      );
      this.#audit(audit.userCreated(user, actor));
      return { id: user.id, email: user.email, createdAt: user.createdAt, disabledAt: null };
    });
  }

  async getUser(idOrEmail: string): Promise<UserCredentials | undefined> {
    const row = this.#stmt('SELECT * FROM users WHERE id = ? OR email = lower(?)').get(
      idOrEmail,
      idOrEmail,
    ) as Row | undefined;
    return row ? toCredentials(row) : undefined;
  }

  async updateCredentials(
    userId: string,
    patch: CredentialsPatch,
    action: string,
    actor: Actor,
    at: number,
  ): Promise<boolean> {
    const { columns, values, changes } = credentialColumns(patch);
    const sets = columns.map((column) => `${column} = ?`);
    return this.#transaction(() => {
      const found =
        sets.length === 0
          ? this.#stmt('SELECT 1 FROM users WHERE id = ?').get(userId) !== undefined
          : Number(
              this.#db.prepare(`UPDATE users SET ${sets.join(', ')} WHERE id = ?`).run(...values, userId)
                .changes,
            ) > 0;
      if (!found) return false;
      this.#audit(audit.credentialsChanged(userId, action, changes, actor, at));
      return true;
    });
  }

  async createFirstOwner(
    user: User & { passwordHash: string },
    actor: Actor,
    at: number,
  ): Promise<User | undefined> {
    // BEGIN IMMEDIATE holds the database's write lock from the check to the commit: every other
    // process's setup waits, then finds this user.
    return this.#transaction(() => {
      if (this.#stmt('SELECT 1 FROM users LIMIT 1').get() !== undefined) return undefined;
      this.#stmt('INSERT INTO users (id, email, password_hash, created_at) VALUES (?, ?, ?, ?)').run(
        user.id,
        user.email,
        user.passwordHash,
        user.createdAt,
      );
      this.#audit(audit.userCreated(user, actor));
      this.#stmt('INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES (?, ?, ?, ?)').run(
        DEFAULT_WORKSPACE_ID,
        user.id,
        'owner',
        at,
      );
      this.#audit(audit.membershipSet(DEFAULT_WORKSPACE_ID, user.id, undefined, 'owner', actor, at));
      return { id: user.id, email: user.email, createdAt: user.createdAt, disabledAt: null };
    });
  }

  async claimTotpStep(userId: string, step: number): Promise<boolean> {
    return (
      Number(
        this.#stmt(
          'UPDATE users SET totp_last_step = ? WHERE id = ? AND (totp_last_step IS NULL OR totp_last_step < ?)',
        ).run(step, userId, step).changes,
      ) === 1
    );
  }

  async spendRecoveryCode(userId: string, codeHash: string, actor: Actor, at: number): Promise<boolean> {
    return this.#transaction(() => {
      const row = this.#stmt('SELECT recovery_codes FROM users WHERE id = ?').get(userId) as Row | undefined;
      const codes = strings(row?.recovery_codes);
      if (!codes.includes(codeHash)) return false;
      // The audit names the field as updateCredentials would, never the codes.
      const { values, changes } = credentialColumns({ recoveryCodes: codes.filter((h) => h !== codeHash) });
      this.#stmt('UPDATE users SET recovery_codes = ? WHERE id = ?').run(...values, userId);
      this.#audit(audit.credentialsChanged(userId, 'user.recovery_code_used', changes, actor, at));
      return true;
    });
  }

  async createSession(session: SessionRecord): Promise<void> {
    this.#stmt(
      `INSERT INTO sessions (id, user_id, created_at, expires_at, last_seen_at, revoked_at, ip, user_agent)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(...sessionParams(session));
  }

  async getSession(id: string): Promise<SessionRecord | undefined> {
    const row = this.#stmt('SELECT * FROM sessions WHERE id = ?').get(id) as Row | undefined;
    return row ? toSession(row) : undefined;
  }

  async touchSession(id: string, at: number): Promise<void> {
    this.#stmt('UPDATE sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?').run(at, id, at);
  }

  async revokeSessions(
    filter: { id: string } | { userId: string; exceptId?: string | undefined },
    at: number,
  ): Promise<number> {
    return this.#transaction(() => {
      this.#stmt('DELETE FROM sessions WHERE expires_at < ? OR revoked_at < ?').run(at, at - 86_400_000);
      const c = new Conditions().add('revoked_at IS NULL');
      if ('id' in filter) c.add('id = ?', filter.id);
      else c.add('user_id = ?', filter.userId).add('id <> ?', filter.exceptId);
      return Number(
        this.#db.prepare(`UPDATE sessions SET revoked_at = ? ${c.where}`).run(at, ...c.params).changes,
      );
    });
  }

  async createInvite(invite: Invite & { tokenHash: string }, actor: Actor): Promise<Invite> {
    return this.#transaction(() => {
      this.#stmt(
        `INSERT INTO invites (id, token_hash, workspace_id, email, role, created_by, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(...inviteParams(invite));
      this.#audit(audit.inviteCreated(invite, actor));
      const { tokenHash: _, ...view } = invite;
      return { ...view, acceptedAt: null, revokedAt: null };
    });
  }

  async listInvites(workspaceId: string): Promise<Invite[]> {
    return (
      this.#stmt('SELECT * FROM invites WHERE workspace_id = ? ORDER BY created_at DESC, id').all(
        workspaceId,
      ) as Row[]
    ).map(toInvite);
  }

  async findInvite(tokenHash: string): Promise<Invite | undefined> {
    const row = this.#stmt('SELECT * FROM invites WHERE token_hash = ?').get(tokenHash) as Row | undefined;
    return row ? toInvite(row) : undefined;
  }

  async acceptInvite(id: string, userId: string, actor: Actor, at: number): Promise<Membership | undefined> {
    return this.#transaction(() => {
      const accepted = this.#stmt(
        `UPDATE invites SET accepted_at = ?
         WHERE id = ? AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > ?
         RETURNING workspace_id, role, email`,
      ).get(at, id, at) as Row | undefined;
      if (!accepted) return undefined;
      const workspaceId = String(accepted.workspace_id);
      const role = String(accepted.role) as Role;
      if (!this.#membership(workspaceId, userId)) {
        this.#stmt(
          'INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES (?, ?, ?, ?)',
        ).run(workspaceId, userId, role, at);
        this.#audit(audit.membershipSet(workspaceId, userId, undefined, role, actor, at));
      }
      this.#audit(audit.inviteAccepted(workspaceId, id, userId, actor, at));
      const membership = this.#membership(workspaceId, userId);
      if (!membership) throw new Error('membership vanished after insert');
      return membership;
    });
  }

  async revokeInvite(workspaceId: string, id: string, actor: Actor, at: number): Promise<boolean> {
    return this.#transaction(() => {
      const changed = Number(
        this.#stmt(
          'UPDATE invites SET revoked_at = ? WHERE id = ? AND workspace_id = ? AND accepted_at IS NULL AND revoked_at IS NULL',
        ).run(at, id, workspaceId).changes,
      );
      if (changed === 0) return false;
      this.#audit(audit.inviteRevoked(workspaceId, id, actor, at));
      return true;
    });
  }

  async countSecretBound(): Promise<SecretBoundCounts> {
    const row = this.#stmt(
      `SELECT (SELECT COUNT(*) FROM api_keys) AS k, (SELECT COUNT(*) FROM alert_channels) AS c,
         (SELECT COUNT(*) FROM users WHERE totp_secret IS NOT NULL) AS u`,
    ).get() as Row;
    return { keys: Number(row.k), channels: Number(row.c), twoFactorUsers: Number(row.u) };
  }

  async getSetting(name: string): Promise<string | undefined> {
    const row = this.#stmt('SELECT value FROM settings WHERE name = ?').get(name) as Row | undefined;
    return row ? String(row.value) : undefined;
  }

  async initSetting(name: string, value: string): Promise<string> {
    this.#stmt('INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING').run(
      name,
      value,
    );
    return String((this.#stmt('SELECT value FROM settings WHERE name = ?').get(name) as Row).value);
  }

  async listUsers(): Promise<User[]> {
    return (
      this.#stmt(
        'SELECT id, email, created_at, disabled_at FROM users ORDER BY created_at, id',
      ).all() as Row[]
    ).map(toUser);
  }

  #membership(workspaceId: string, userId: string): Membership | undefined {
    const row = this.#stmt(
      `SELECT m.workspace_id, m.user_id, u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id
       WHERE m.workspace_id = ? AND m.user_id = ?`,
    ).get(workspaceId, userId) as Row | undefined;
    return row ? toMembership(row) : undefined;
  }

  async setMembership(
    workspaceId: string,
    userId: string,
    role: Role,
    actor: Actor,
    at: number,
  ): Promise<Membership> {
    return this.#transaction(() => {
      const before = this.#membership(workspaceId, userId);
      if (before?.role === 'owner' && role !== 'owner') this.#assertAnotherOwner(workspaceId, userId);
      this.#stmt(
        `INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role`,
      ).run(workspaceId, userId, role, at);
      const after = this.#membership(workspaceId, userId);
      if (!after) throw new Error('membership vanished after insert');
      if (before?.role !== role) {
        this.#audit(audit.membershipSet(workspaceId, userId, before?.role, role, actor, at));
      }
      return after;
    });
  }

  /** A workspace never loses its last owner. */
  #assertAnotherOwner(workspaceId: string, userId: string): void {
    const row = this.#stmt(
      "SELECT COUNT(*) AS n FROM memberships WHERE workspace_id = ? AND role = 'owner' AND user_id <> ?",
    ).get(workspaceId, userId) as Row;
    if (Number(row.n) === 0)
      throw new StoreConflictError(`workspace ${workspaceId} must keep at least one owner`);
  }

  async removeMembership(
    workspaceId: string,
    userId: string,
    actor: Actor,
    at: number,
  ): Promise<{ revokedKeyIds: string[] } | undefined> {
    return this.#transaction(() => {
      const before = this.#membership(workspaceId, userId);
      if (!before) return undefined;
      if (before.role === 'owner') this.#assertAnotherOwner(workspaceId, userId);
      this.#stmt('DELETE FROM memberships WHERE workspace_id = ? AND user_id = ?').run(workspaceId, userId);
      this.#audit(audit.membershipRemoved(workspaceId, userId, before.role, actor, at));
      // The keys they own here leave with them, in this transaction: revoked, audited, and in the
      // change feed so every gateway drops them within one poll.
      const rows = this.#stmt(
        `UPDATE api_keys SET revoked_at = ?, updated_at = ?
         WHERE workspace_id = ? AND created_by = ? AND revoked_at IS NULL RETURNING id`,
      ).all(at, at, workspaceId, userId) as Row[];
      const revokedKeyIds = rows.map((row) => String(row.id));
      for (const id of revokedKeyIds) {
        const key = this.#getKeySync(id);
        this.#changed(id, 'revoked', at);
        if (!key) continue;
        const entry = audit.keyRevoked(key, actor, at);
        this.#audit({ ...entry, changes: { ...entry.changes, reason: { after: 'member.remove' } } });
      }
      return { revokedKeyIds };
    });
  }

  async getMembership(workspaceId: string, userId: string): Promise<Membership | undefined> {
    return this.#membership(workspaceId, userId);
  }

  async listMembers(workspaceId: string): Promise<Membership[]> {
    return (
      this.#stmt(
        `SELECT m.workspace_id, m.user_id, u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id
         WHERE m.workspace_id = ? ORDER BY m.created_at, u.email`,
      ).all(workspaceId) as Row[]
    ).map(toMembership);
  }

  async recordExpiries(now: number): Promise<string[]> {
    return this.#transaction(() => {
      const rows = this.#stmt(
        `UPDATE api_keys SET expiry_recorded_at = ?
         WHERE expires_at <= ? AND expiry_recorded_at IS NULL AND revoked_at IS NULL
         RETURNING id, workspace_id, expires_at`,
      ).all(now, now) as Row[];
      for (const row of rows) {
        this.#audit(audit.keyExpired(String(row.id), String(row.workspace_id), Number(row.expires_at)));
      }
      return rows.map((row) => String(row.id));
    });
  }

  async recordExpiryReminders(now: number, thresholdsMs: readonly number[]): Promise<ExpiryReminder[]> {
    return this.#transaction(() => {
      const reminders: ExpiryReminder[] = [];
      // Smallest threshold first: a key already inside 3 days gets the 3-day reminder, not the 14-day one.
      // A reminder is for crossing a threshold: a key whose expiry was set (created, or last
      // updated) already inside it is not reminded at it (a key made with --expires 7d does not
      // hear "expires in 7 days" at once); the threshold is marked done all the same.
      for (const threshold of [...thresholdsMs].sort((a, b) => a - b)) {
        const rows = this.#stmt(
          `SELECT k.id, k.name, k.workspace_id, k.expires_at,
             COALESCE((SELECT MAX(e.at) FROM key_events e WHERE e.key_id = k.id AND e.kind IN ('created', 'updated')), k.created_at) AS expiry_set_at
           FROM api_keys k
           WHERE k.revoked_at IS NULL AND k.expires_at > ? AND k.expires_at <= ?
             AND NOT EXISTS (SELECT 1 FROM key_expiry_reminders r
                             WHERE r.key_id = k.id AND r.expires_at = k.expires_at AND r.threshold_ms <= ?)`,
        ).all(now, now + threshold, threshold) as Row[];
        for (const row of rows) {
          const reminder = toReminder(row, threshold);
          this.#stmt(
            'INSERT INTO key_expiry_reminders (key_id, expires_at, threshold_ms, at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING',
          ).run(reminder.keyId, reminder.expiresAt, threshold, now);
          if (!crossedSince(row, threshold)) continue;
          this.#audit(audit.expiryReminded(reminder, now));
          reminders.push(reminder);
        }
      }
      return reminders;
    });
  }

  async raiseAlert(alert: NewAlert, cooldownMs: number): Promise<{ alert: Alert; fresh: boolean }> {
    return this.#transaction(() => {
      const existing = this.#stmt(
        'SELECT id FROM alerts WHERE fingerprint = ? AND last_at > ? ORDER BY last_at DESC LIMIT 1',
      ).get(alert.fingerprint, alert.at - cooldownMs) as Row | undefined;
      if (existing) {
        this.#stmt(
          'UPDATE alerts SET last_at = MAX(last_at, ?), occurrences = occurrences + 1 WHERE id = ?',
        ).run(alert.at, String(existing.id));
        return { alert: this.#alert(String(existing.id)) as Alert, fresh: false };
      }
      this.#stmt(
        `INSERT INTO alerts (id, workspace_id, kind, fingerprint, key_id, severity, title, message, details, first_at, last_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(...newAlertParams(alert));
      return { alert: this.#alert(alert.id) as Alert, fresh: true };
    });
  }

  #alert(id: string): Alert | undefined {
    const row = this.#stmt('SELECT * FROM alerts WHERE id = ?').get(id) as Row | undefined;
    return row ? toAlert(row) : undefined;
  }

  async listAlerts(filter: AlertFilter): Promise<Alert[]> {
    const c = new Conditions()
      .add('workspace_id = ?', filter.workspaceId)
      .add('kind = ?', filter.kind)
      .add('key_id = ?', filter.keyId);
    if (filter.unacknowledged) c.add('acknowledged_at IS NULL');
    return (
      this.#db
        .prepare(`SELECT * FROM alerts ${c.where} ORDER BY last_at DESC, id LIMIT ?`)
        .all(...c.params, Math.min(filter.limit ?? 100, 1000)) as Row[]
    ).map(toAlert);
  }

  async getAlert(id: string): Promise<Alert | undefined> {
    return this.#alert(id);
  }

  async acknowledgeAlert(id: string, actor: Actor, at: number): Promise<Alert | undefined> {
    return this.#transaction(() => {
      const before = this.#alert(id);
      if (!before) return undefined;
      if (before.acknowledgedAt !== null) return before;
      const by = actor.id ?? actor.type;
      this.#stmt('UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ? WHERE id = ?').run(at, by, id);
      this.#audit(audit.alertAcknowledged(before, actor, at));
      return this.#alert(id);
    });
  }

  async createChannel(channel: AlertChannel, actor: Actor): Promise<AlertChannel> {
    return this.#transaction(() => {
      this.#stmt(
        'INSERT INTO alert_channels (id, workspace_id, type, name, config_sealed, created_at) VALUES (?, ?, ?, ?, ?, ?)',
      ).run(...channelParams(channel));
      this.#audit(audit.channelCreated(channel, actor));
      return channel;
    });
  }

  async listChannels(workspaceId?: string): Promise<AlertChannel[]> {
    const rows = (
      workspaceId === undefined
        ? this.#stmt('SELECT * FROM alert_channels ORDER BY created_at, id').all()
        : this.#stmt('SELECT * FROM alert_channels WHERE workspace_id = ? ORDER BY created_at, id').all(
            workspaceId,
          )
    ) as Row[];
    return rows.map(toChannel);
  }

  async getChannel(id: string): Promise<AlertChannel | undefined> {
    const row = this.#stmt('SELECT * FROM alert_channels WHERE id = ?').get(id) as Row | undefined;
    return row ? toChannel(row) : undefined;
  }

  async deleteChannel(id: string, actor: Actor, at: number): Promise<boolean> {
    return this.#transaction(() => {
      const row = this.#stmt('SELECT * FROM alert_channels WHERE id = ?').get(id) as Row | undefined;
      if (!row) return false;
      this.#stmt('DELETE FROM alert_channels WHERE id = ?').run(id);
      this.#audit(audit.channelDeleted(toChannel(row), actor, at));
      return true;
    });
  }

  async recordDelivery(d: AlertDelivery): Promise<void> {
    this.#stmt(
      'INSERT INTO alert_deliveries (alert_id, channel_id, attempt, outcome, status, error, at) VALUES (?, ?, ?, ?, ?, ?, ?)',
    ).run(d.alertId, d.channelId, d.attempt, d.outcome, d.status, d.error, d.at);
  }

  async listDeliveries(filter: {
    alertId?: string;
    channelId?: string;
    limit?: number;
  }): Promise<AlertDelivery[]> {
    const c = new Conditions().add('alert_id = ?', filter.alertId).add('channel_id = ?', filter.channelId);
    const rows = this.#db
      .prepare(`SELECT * FROM alert_deliveries ${c.where} ORDER BY id DESC LIMIT ?`)
      .all(...c.params, Math.min(filter.limit ?? 100, 1000)) as Row[];
    return rows.map(toDelivery);
  }

  async ruleSettings(workspaceId: string): Promise<Record<string, Record<string, unknown>>> {
    const rows = this.#stmt('SELECT kind, settings FROM alert_rule_settings WHERE workspace_id = ?').all(
      workspaceId,
    ) as Row[];
    const out: Record<string, Record<string, unknown>> = {};
    for (const row of rows) out[String(row.kind)] = object<Record<string, unknown>>(row.settings);
    return out;
  }

  async setRuleSettings(
    workspaceId: string,
    kind: AlertKind,
    settings: Record<string, unknown>,
    actor: Actor,
    at: number,
  ): Promise<void> {
    this.#transaction(() => {
      const before = this.#stmt(
        'SELECT settings FROM alert_rule_settings WHERE workspace_id = ? AND kind = ?',
      ).get(workspaceId, kind) as Row | undefined;
      this.#stmt(
        `INSERT INTO alert_rule_settings (workspace_id, kind, settings) VALUES (?, ?, ?)
         ON CONFLICT (workspace_id, kind) DO UPDATE SET settings = excluded.settings`,
      ).run(workspaceId, kind, JSON.stringify(settings));
      this.#audit(
        audit.ruleSettingsSet(
          workspaceId,
          kind,
          before ? object<Record<string, unknown>>(before.settings) : null,
          settings,
          actor,
          at,
        ),
      );
    });
  }

  async noteNetwork(keyId: string, network: string, at: number): Promise<'first' | 'new' | 'known'> {
    return this.#transaction(() => {
      const result = this.#stmt(
        'INSERT INTO key_networks (key_id, network, first_seen) VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
      ).run(keyId, network, at);
      if (result.changes === 0) return 'known';
      const row = this.#stmt('SELECT COUNT(*) AS n FROM key_networks WHERE key_id = ?').get(keyId) as Row;
      return Number(row.n) === 1 ? 'first' : 'new';
    });
  }

  async hourlyCounts(keyId: string, since: number): Promise<HourlyCount[]> {
    return hourlyCountsOf(await this.usageReport({ by: 'hour', keyId, from: since }));
  }

  async appendAudit(event: AuditEvent): Promise<void> {
    this.#audit(event);
  }

  async listAudit(filter: AuditFilter): Promise<(AuditEvent & { seq: number })[]> {
    const c = new Conditions()
      .add(
        filter.withGlobal ? '(workspace_id = ? OR workspace_id IS NULL)' : 'workspace_id = ?',
        filter.workspaceId,
      )
      .add('target_id = ?', filter.targetId)
      .add('action = ?', filter.action)
      .add('at >= ?', filter.since)
      .add('seq < ?', filter.before);
    const rows = this.#db
      .prepare(`SELECT * FROM audit_events ${c.where} ORDER BY seq DESC LIMIT ?`)
      .all(...c.params, Math.min(filter.limit ?? 100, 1000)) as Row[];
    return rows.map(toAuditEvent);
  }

  async tokensUsed(filter: TokenFilter): Promise<number> {
    if (filter.keyId === undefined && filter.workspaceId === undefined) return 0;
    const where: UsageWhere =
      filter.keyId !== undefined ? { keyId: filter.keyId } : { workspaceId: filter.workspaceId };
    return this.#read(() => {
      let total = 0;
      for (const piece of pieces(splitRange(filter.since, undefined, this.#rawSince()))) {
        const w = usageWhere(where, piece.source, piece.range);
        const row = this.#stmt(
          `SELECT COALESCE(SUM(total_tokens), 0) AS t FROM ${SOURCE_TABLE[piece.source]} WHERE ${w.sql}`,
        ).get(...w.params) as Row;
        total += Number(row.t);
      }
      return total;
    });
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

  /** Where the raw records start (an hour boundary): before it, retention has deleted them. */
  #rawSince(): number {
    const row = this.#stmt('SELECT raw_since FROM usage_retention WHERE id = 1').get() as Row | undefined;
    return num(row?.raw_since) ?? 0;
  }

  /** Runs reads on one snapshot of the database (rollups and raw records agree). */
  #read<T>(work: () => T): T {
    this.#db.exec('BEGIN');
    let result: T;
    try {
      result = work();
    } catch (error) {
      this.#rollback();
      throw error;
    }
    this.#db.exec('COMMIT');
    return result;
  }

  /**
   * In transactions of at most USAGE_CHUNK records, giving the event loop back between two: a
   * SQLite write is synchronous, and a batch of 500 in one transaction held every request up for
   * ~6 ms (more with a WAL checkpoint), which showed as the p99 of the added latency. Each record
   * and its rollups share a transaction, so a batch retried after a failure half-way counts each
   * record once.
   */
  async recordUsage(records: readonly UsageRecord[]): Promise<void> {
    for (let start = 0; start < records.length; start += USAGE_CHUNK) {
      if (start > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      if (!this.#db.isOpen) throw new Error('the SQLite store was closed during a usage write');
      this.#recordUsageChunk(records.slice(start, start + USAGE_CHUNK));
    }
  }

  #recordUsageChunk(records: readonly UsageRecord[]): void {
    const lastUse = new Map<string, UsageRecord>();
    this.#transaction(() => {
      const rawSince = this.#rawSince();
      const insert = this.#stmt(
        `INSERT INTO usage_records (id, time, key_id, workspace_id, model, endpoint, status, prompt_tokens,
           completion_tokens, total_tokens, latency_ms, ttft_ms, client_ip, tokens_estimated)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
      );
      const hourly = new Map<string, RollupDelta>();
      for (const r of records) {
        // Its raw hour is gone (retention): a duplicate could not be told apart, so it is not counted.
        if (r.time < rawSince) continue;
        const inserted = insert.run(...usageParams(r));
        if (Number(inserted.changes) > 0) addRecord(hourly, r);
        if (r.keyId !== null) {
          const seen = lastUse.get(r.keyId);
          if (!seen || seen.time < r.time) lastUse.set(r.keyId, r);
        }
      }
      const upsertHourly = this.#stmt(UPSERT_HOURLY);
      for (const d of hourly.values()) upsertHourly.run(...rollupParams(d));
      const upsertDaily = this.#stmt(UPSERT_DAILY);
      for (const d of dailyOf(hourly.values()).values()) upsertDaily.run(...rollupParams(d));
      const touch = this.#stmt(
        'UPDATE api_keys SET last_used_at = ?, last_used_ip = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)',
      );
      for (const [keyId, r] of lastUse) touch.run(r.time, r.clientIp, keyId, r.time);
    });
  }

  async usageTotals(filter: UsageFilter): Promise<UsageTotals[]> {
    return totalsOf(await this.usageReport({ by: 'key', keyId: filter.keyId, from: filter.since }));
  }

  async usageReport(query: UsageReportQuery): Promise<UsageReport> {
    const pricing = query.pricing ?? NO_PRICING;
    const rows = this.#read(() => {
      const cells = new UsageCells();
      const range = splitRange(query.from, query.to, this.#rawSince(), query.by !== 'hour');
      for (const { source, range: piece } of pieces(range)) {
        const w = usageWhere(query, source, piece);
        const group = groupSql(query.by, source);
        if (source === 'raw') {
          const found = this.#db
            .prepare(
              `SELECT ${group} AS g, COALESCE(model, '') AS model, ${latencyBucketSql()} AS bucket,
                 COUNT(*) AS requests, SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors,
                 SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens,
                 SUM(total_tokens) AS total_tokens, SUM(tokens_estimated) AS estimated_requests,
                 SUM(latency_ms) AS latency_sum_ms, MAX(latency_ms) AS latency_max_ms
               FROM usage_records WHERE ${w.sql} GROUP BY g, model, bucket`,
            )
            .all(...w.params) as Row[];
          for (const row of found) {
            const cell = addSums(cells, row, query.by);
            const bucket = Number(row.bucket);
            cell.histogram[bucket] = (cell.histogram[bucket] ?? 0) + Number(row.requests);
          }
          continue;
        }
        const found = this.#db
          .prepare(
            `SELECT ${group} AS g, model, SUM(requests) AS requests, SUM(errors) AS errors,
               SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens,
               SUM(total_tokens) AS total_tokens, SUM(estimated_requests) AS estimated_requests,
               SUM(latency_sum_ms) AS latency_sum_ms, MAX(latency_max_ms) AS latency_max_ms,
               ${LATENCY_COLUMNS.map((c) => `SUM(${c}) AS ${c}`).join(', ')}
             FROM ${SOURCE_TABLE[source]} WHERE ${w.sql} GROUP BY g, model`,
          )
          .all(...w.params) as Row[];
        for (const row of found) addHistogram(addSums(cells, row, query.by), row);
      }
      const folded = foldUsage(cells.values(), query.by, pricing);
      const table = namedTable(query.by);
      if (table !== undefined) {
        const sql = `SELECT id, name FROM ${table} WHERE id IN (SELECT value FROM json_each(?))`;
        nameGroups(folded, this.#stmt(sql).all(JSON.stringify(groupIds(folded))) as Row[]);
      }
      return folded;
    });
    return usageReportOf(query, pricing, rows);
  }

  async pruneUsage(before: number): Promise<number> {
    const cutoff = Math.floor(before / HOUR_MS) * HOUR_MS;
    // First the mark, so that a late record from the deleted hours is refused from now on.
    const rawSince = this.#transaction(() => {
      this.#stmt('UPDATE usage_retention SET raw_since = MAX(raw_since, ?) WHERE id = 1').run(cutoff);
      return this.#rawSince();
    });
    let deleted = 0;
    for (;;) {
      // In short transactions, yielding in between: the gateway keeps serving (and metering) meanwhile.
      const n = this.#transaction(() =>
        Number(
          this.#stmt(
            'DELETE FROM usage_records WHERE rowid IN (SELECT rowid FROM usage_records WHERE time < ? LIMIT ?)',
          ).run(rawSince, PRUNE_CHUNK).changes,
        ),
      );
      deleted += n;
      if (n < PRUNE_CHUNK) return deleted;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  async close(): Promise<void> {
    if (this.#keyReader?.isOpen) this.#keyReader.close();
    if (this.#db.isOpen) this.#db.close();
  }
}
