/**
 * The PostgreSQL store: the same behaviour as the SQLite store (src/store/sqlite.ts), for several
 * gateways sharing one database. A pool of connections (10 by default), parameterised queries
 * only, epoch milliseconds in BIGINT columns read back as numbers.
 *
 * Where SQLite serialises every write transaction (BEGIN IMMEDIATE), PostgreSQL runs them side by
 * side in READ COMMITTED, so each invariant that depends on what another transaction may be doing
 * takes a lock:
 * - the key change feed is appended under a transaction-level advisory lock held to the commit,
 *   so that `seq` order is commit order and a reader's cursor never skips a late commit;
 * - read-modify-write of a key or a workspace locks its row (`FOR NO KEY UPDATE`), and membership
 *   changes lock their workspace's row, so that "the last owner stays" holds under concurrency;
 * - alerts with one fingerprint, a key's networks and the expiry reminder sweep are serialised by
 *   advisory locks; expiries and acknowledgements are single conditional UPDATEs;
 * - a batch of usage records is one statement (unnest): insert the new ids, add exactly those to
 *   the hourly and daily rollups, touch the keys' last use, under a share lock of the retention
 *   mark that pruning updates.
 * Deadlocks and serialisation failures are retried (the whole transaction, a few times).
 *
 * What does not depend on the database is shared with the SQLite store: rows.ts (row ↔ record),
 * audit.ts (the audit log's events), usage-range.ts and usage-report.ts (reading usage).
 */
import { DatabaseError, Pool, type PoolClient, TypeOverrides } from 'pg';
import { LATENCY_COLUMNS, latencyBucketSql } from '../usage/histogram.ts';
import { NO_PRICING } from '../usage/pricing.ts';
import { foldUsage, UsageCells } from '../usage/report.ts';
import * as audit from './audit.ts';
import { PG_MIGRATIONS, SCHEMA_MIGRATIONS_DDL } from './pg-migrations.ts';
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
  type UsageGroup,
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

/** A pooled connection inside a transaction, or the pool itself (one statement, autocommit). */
type Db = Pick<PoolClient, 'query'>;

export interface PostgresStoreOptions {
  /** `postgres://user:password@host:port/database` (libpq parameters such as `sslmode` accepted). */
  url: string;
  /** Connections in the pool; default 10. */
  poolSize?: number | undefined;
  /** A schema to work in instead of the connection's default `search_path` (e.g. `keygate`). */
  schema?: string | undefined;
  /** How long to wait for a connection, in ms; default 10 s. */
  connectTimeoutMs?: number | undefined;
  /** Errors of idle pooled connections (e.g. the server restarted); the next query reconnects. */
  onError?: ((error: Error) => void) | undefined;
  /** A new pooled connection was made (after `onError`: the server is reachable again). */
  onConnect?: (() => void) | undefined;
}

/** Type parsers: BIGINT (epoch ms, counts) and NUMERIC (sums) as numbers; the rest as pg does. */
export const PG_TYPES = new TypeOverrides();
PG_TYPES.setTypeParser(20, Number); // int8
PG_TYPES.setTypeParser(1700, Number); // numeric

/** Advisory lock keys: (KEYGATE_LOCKS, n) for one-of-a-kind locks, (space, hashtext(id)) per item. */
const KEYGATE_LOCKS = 0x4b47_0000; // "KG"
const LOCK_MIGRATE = 1;
const LOCK_KEY_EVENTS = 2;
const LOCK_EXPIRY_REMINDERS = 3;
const LOCK_SPACE_ALERT = KEYGATE_LOCKS + 1;
const LOCK_SPACE_NETWORK = KEYGATE_LOCKS + 2;

/** SQLSTATEs worth running a transaction again for: deadlock, serialisation failure. */
const RETRYABLE = new Set(['40P01', '40001']);
const ATTEMPTS = 4;

function retryable(error: unknown): boolean {
  return error instanceof DatabaseError && error.code !== undefined && RETRYABLE.has(error.code);
}

const ALERT_COLUMNS = `id, workspace_id, kind, fingerprint, key_id, severity, title, message, details, first_at,
  last_at, occurrences, acknowledged_at, acknowledged_by`;
const CHANNEL_COLUMNS = 'id, workspace_id, type, name, config_sealed, created_at';
const INVITE_COLUMNS =
  'id, workspace_id, email, role, created_by, created_at, expires_at, accepted_at, revoked_at';
const SESSION_COLUMNS = 'id, user_id, created_at, expires_at, last_seen_at, revoked_at, ip, user_agent';

/**
 * AND-ed conditions with `?` placeholders, numbered `$n` as they are added; a condition given an
 * undefined value is left out. Several builders can share one parameter list (one statement).
 */
class Conditions {
  readonly #clauses: string[] = [];
  readonly params: unknown[];

  constructor(params: unknown[] = []) {
    this.params = params;
  }

  add(clause: string, ...values: unknown[]): this {
    if (values.some((v) => v === undefined)) return this;
    let i = 0;
    this.#clauses.push(
      clause.replace(/\?/g, () => {
        this.params.push(values[i++]);
        return `$${this.params.length}`;
      }),
    );
    return this;
  }

  /** `WHERE …`, or nothing when there is no condition. */
  get where(): string {
    return this.#clauses.length > 0 ? `WHERE ${this.#clauses.join(' AND ')}` : '';
  }

  /** The conditions joined, or `TRUE` when there is none. */
  get expression(): string {
    return this.#clauses.length > 0 ? this.#clauses.join(' AND ') : 'TRUE';
  }
}

/** A model pattern (`*` its only wildcard) as a LIKE pattern. */
function likePattern(pattern: string): string {
  return pattern.replace(/[\\%_]/g, (c) => `\\${c}`).replace(/\*/g, '%');
}

/** The condition of a usage query over one source, for a time range (parameters added to `params`). */
function usageWhere(filter: UsageWhere, source: UsageSource, range: TimeRange, params: unknown[]): string {
  const c = new Conditions(params);
  const time = TIME_COLUMN[source];
  c.add(`${time} >= ?`, range.from ?? undefined);
  c.add(`${time} < ?`, range.to ?? undefined);
  c.add('key_id = ?', filter.keyId);
  c.add('workspace_id = ?', filter.workspaceId);
  c.add('endpoint = ?', filter.endpoint);
  if (filter.model !== undefined) {
    const column = modelColumn(source);
    if (isModelPattern(filter.model)) c.add(`${column} LIKE ? ESCAPE '\\'`, likePattern(filter.model));
    else c.add(`${column} = ?`, filter.model);
  }
  c.add('key_id IN (SELECT id FROM api_keys WHERE created_by = ?)', filter.createdBy);
  return c.expression;
}

const SUM_COLUMNS = ['prompt_tokens', 'completion_tokens', 'total_tokens'] as const;

/** One piece of a usage report: sums per (group, model) with the latency histogram columns. */
function reportPieceSql(by: UsageGroup, source: UsageSource, where: string): string {
  const group = groupSql(by, source);
  if (source === 'raw') {
    return `SELECT ${group} AS g, COALESCE(model, '') AS model, COUNT(*) AS requests,
        COUNT(*) FILTER (WHERE status >= 400) AS errors, ${SUM_COLUMNS.map((c) => `SUM(${c}) AS ${c}`).join(', ')},
        SUM(tokens_estimated) AS estimated_requests, SUM(latency_ms) AS latency_sum_ms,
        MAX(latency_ms) AS latency_max_ms,
        ${LATENCY_COLUMNS.map((c, i) => `COUNT(*) FILTER (WHERE bucket = ${i}) AS ${c}`).join(', ')}
      FROM (SELECT *, ${latencyBucketSql()} AS bucket FROM usage_records WHERE ${where}) AS r
      GROUP BY 1, 2`;
  }
  return `SELECT ${group} AS g, model, SUM(requests) AS requests, SUM(errors) AS errors,
      ${SUM_COLUMNS.map((c) => `SUM(${c}) AS ${c}`).join(', ')}, SUM(estimated_requests) AS estimated_requests,
      SUM(latency_sum_ms) AS latency_sum_ms, MAX(latency_max_ms) AS latency_max_ms,
      ${LATENCY_COLUMNS.map((c) => `SUM(${c}) AS ${c}`).join(', ')}
    FROM ${SOURCE_TABLE[source]} WHERE ${where}
    GROUP BY 1, 2`;
}

/** Adds the rows inserted by a usage statement (`inserted`) to a rollup table, in key order. */
function rollupUpsertSql(table: 'usage_hourly' | 'usage_daily', time: 'hour' | 'day'): string {
  const width = time === 'hour' ? 3_600_000 : 86_400_000;
  return `INSERT INTO ${table} (${time}, workspace_id, key_id, model, endpoint, requests, errors, prompt_tokens,
      completion_tokens, total_tokens, estimated_requests, latency_sum_ms, latency_max_ms, ${LATENCY_COLUMNS.join(', ')})
    SELECT (time / ${width}) * ${width}, COALESCE(workspace_id, ''), COALESCE(key_id, ''), COALESCE(model, ''),
      endpoint, COUNT(*), COUNT(*) FILTER (WHERE status >= 400), SUM(prompt_tokens), SUM(completion_tokens),
      SUM(total_tokens), SUM(tokens_estimated), SUM(latency_ms), MAX(latency_ms),
      ${LATENCY_COLUMNS.map((_c, i) => `COUNT(*) FILTER (WHERE bucket = ${i})`).join(', ')}
    FROM (SELECT *, ${latencyBucketSql()} AS bucket FROM inserted) AS r
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (${time}, workspace_id, key_id, model, endpoint) DO UPDATE SET
      requests = ${table}.requests + excluded.requests, errors = ${table}.errors + excluded.errors,
      prompt_tokens = ${table}.prompt_tokens + excluded.prompt_tokens,
      completion_tokens = ${table}.completion_tokens + excluded.completion_tokens,
      total_tokens = ${table}.total_tokens + excluded.total_tokens,
      estimated_requests = ${table}.estimated_requests + excluded.estimated_requests,
      latency_sum_ms = ${table}.latency_sum_ms + excluded.latency_sum_ms,
      latency_max_ms = GREATEST(${table}.latency_max_ms, excluded.latency_max_ms),
      ${LATENCY_COLUMNS.map((c) => `${c} = ${table}.${c} + excluded.${c}`).join(', ')}`;
}

/**
 * A batch of usage records in one statement (one round trip, one transaction): the records from
 * before the retention mark are left out, the new ids inserted (the first of a repeated id wins),
 * exactly the inserted ones added to the hourly and daily rollups, and each key's last use moved
 * forward. Rows are locked in key order (ids, rollup keys, key ids), so that concurrent batches
 * take their locks in the same order and do not deadlock.
 * The share lock on the retention mark makes pruning wait for batches in flight.
 */
const RECORD_USAGE = `
  WITH retention AS (
    SELECT raw_since FROM usage_retention WHERE id = 1 FOR SHARE
  ), input AS (
    SELECT t.* FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[],
        $8::bigint[], $9::bigint[], $10::bigint[], $11::float8[], $12::float8[], $13::text[], $14::int[])
      WITH ORDINALITY AS t(id, time, key_id, workspace_id, model, endpoint, status, prompt_tokens,
        completion_tokens, total_tokens, latency_ms, ttft_ms, client_ip, tokens_estimated, ord)
    WHERE t.time >= (SELECT raw_since FROM retention)
  ), inserted AS (
    INSERT INTO usage_records (id, time, key_id, workspace_id, model, endpoint, status, prompt_tokens,
        completion_tokens, total_tokens, latency_ms, ttft_ms, client_ip, tokens_estimated)
      SELECT DISTINCT ON (id) id, time, key_id, workspace_id, model, endpoint, status, prompt_tokens,
        completion_tokens, total_tokens, latency_ms, ttft_ms, client_ip, tokens_estimated
      FROM input ORDER BY id, ord
      ON CONFLICT (id) DO NOTHING
      RETURNING time, key_id, workspace_id, model, endpoint, status, prompt_tokens, completion_tokens,
        total_tokens, latency_ms, tokens_estimated
  ), hourly AS (
    ${rollupUpsertSql('usage_hourly', 'hour')}
  ), daily AS (
    ${rollupUpsertSql('usage_daily', 'day')}
  ), last_use AS (
    SELECT DISTINCT ON (key_id) key_id, time, client_ip FROM input
    WHERE key_id IS NOT NULL ORDER BY key_id, time DESC, ord
  ), locked AS (
    SELECT k.id FROM api_keys AS k JOIN last_use AS u ON u.key_id = k.id
    WHERE k.last_used_at IS NULL OR k.last_used_at < u.time
    ORDER BY k.id FOR NO KEY UPDATE OF k
  ), touched AS (
    UPDATE api_keys AS k SET last_used_at = u.time, last_used_ip = u.client_ip
    FROM last_use AS u
    WHERE k.id = u.key_id AND k.id IN (SELECT id FROM locked)
      AND (k.last_used_at IS NULL OR k.last_used_at < u.time)
  )
  SELECT COUNT(*) AS stored FROM inserted`;

const SCHEMA_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export class PostgresStore implements Store {
  readonly kind = 'postgres' as const;
  readonly #pool: Pool;
  #closed = false;
  /** The retention mark last seen (it only moves forward); budgets read it with their sums. */
  #rawSince = 0;

  constructor(options: PostgresStoreOptions) {
    if (options.schema !== undefined && !SCHEMA_NAME.test(options.schema))
      throw new Error(`"${options.schema}" is not a plain PostgreSQL schema name`);
    this.#pool = new Pool({
      connectionString: options.url,
      max: options.poolSize ?? 10,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
      // Shown in pg_stat_activity (unless the URL names another).
      application_name: 'keygate',
      types: PG_TYPES,
      ...(options.schema !== undefined ? { options: `-c search_path=${options.schema}` } : {}),
    });
    // Without a listener an idle connection's error (a server restart) would end the process.
    this.#pool.on('error', (error) => options.onError?.(error));
    if (options.onConnect) this.#pool.on('connect', options.onConnect);
  }

  async #rows(db: Db, text: string, values: unknown[] = []): Promise<Row[]> {
    return (await db.query<Row>(text, values)).rows;
  }

  async #row(db: Db, text: string, values: unknown[] = []): Promise<Row | undefined> {
    return (await db.query<Row>(text, values)).rows[0];
  }

  /** Runs `work` again after a deadlock or a serialisation failure (it must start from scratch). */
  async #retrying<T>(work: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await work();
      } catch (error) {
        if (attempt >= ATTEMPTS || !retryable(error)) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 20 * attempt));
      }
    }
  }

  /** One transaction on one pooled connection; rolled back on error, retried after a deadlock. */
  #transaction<T>(work: (db: PoolClient) => Promise<T>, begin = 'BEGIN'): Promise<T> {
    return this.#retrying(async () => {
      const client = await this.#pool.connect();
      let broken: Error | undefined;
      // A checked-out client whose connection drops emits 'error'; unheard, that would end the
      // process. The query in flight fails on its own, which is what the caller sees.
      const onError = (error: Error) => {
        broken = error;
      };
      client.on('error', onError);
      try {
        await client.query(begin);
        const result = await work(client);
        await client.query('COMMIT');
        return result;
      } catch (error) {
        try {
          await client.query('ROLLBACK');
        } catch (rollbackError) {
          broken = rollbackError as Error; // the connection is gone: the pool drops it
        }
        throw error;
      } finally {
        client.off('error', onError);
        client.release(broken);
      }
    });
  }

  async migrate(): Promise<number> {
    return this.#transaction(async (db) => {
      // One instance at a time (the others wait here, then find the work done); released at commit.
      await db.query('SELECT pg_advisory_xact_lock($1, $2)', [KEYGATE_LOCKS, LOCK_MIGRATE]);
      await db.query(SCHEMA_MIGRATIONS_DDL);
      const row = await this.#row(db, 'SELECT MAX(version) AS v FROM schema_migrations');
      let current = num(row?.v) ?? 0;
      const latest = PG_MIGRATIONS.at(-1)?.version ?? 0;
      if (current > latest) {
        throw new Error(
          `the database schema is version ${current}, newer than this Keygate (${latest}); upgrade Keygate`,
        );
      }
      for (const migration of PG_MIGRATIONS) {
        if (migration.version <= current) continue;
        await db.query(migration.postgres);
        await db.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
          migration.version,
          migration.name,
          Date.now(),
        ]);
        current = migration.version;
      }
      return current;
    });
  }

  async ping(): Promise<void> {
    await this.#pool.query('SELECT 1');
  }

  async #audit(db: Db, event: Omit<AuditEvent, 'id'>): Promise<void> {
    await db.query(
      `INSERT INTO audit_events (id, at, workspace_id, actor_type, actor_id, actor_ip, action, target_type, target_id, changes)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      auditParams(event),
    );
  }

  /**
   * Appends to the key change feed. Call last in a transaction: the lock is held to the commit,
   * so feed entries commit in `seq` order.
   */
  async #changed(db: Db, id: string, kind: string, at: number): Promise<void> {
    await db.query('SELECT pg_advisory_xact_lock($1, $2)', [KEYGATE_LOCKS, LOCK_KEY_EVENTS]);
    await db.query('INSERT INTO key_events (key_id, kind, at) VALUES ($1, $2, $3)', [id, kind, at]);
  }

  /** A key; `lock` locks its row to the end of the transaction (read-modify-write). */
  async #key(db: Db, id: string, lock = false): Promise<KeyRecord | undefined> {
    const row = await this.#row(
      db,
      `SELECT ${KEY_COLUMNS} FROM ${KEY_FROM} WHERE k.id = $1${lock ? ' FOR NO KEY UPDATE OF k' : ''}`,
      [id],
    );
    return row ? toKey(row) : undefined;
  }

  async #workspace(db: Db, id: string, lock = false): Promise<Workspace | undefined> {
    const row = await this.#row(
      db,
      `SELECT ${WORKSPACE_COLUMNS} FROM workspaces WHERE id = $1${lock ? ' FOR NO KEY UPDATE' : ''}`,
      [id],
    );
    return row ? toWorkspace(row) : undefined;
  }

  async createKey(key: NewKey, actor: Actor): Promise<KeyRecord> {
    return this.#transaction(async (db) => {
      await db.query(
        `INSERT INTO api_keys (id, workspace_id, name, start, last4, created_at, created_by, expires_at,
           scopes, models, allowed_ips, rpm, tpm, concurrency, budget_day, budget_month)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
        newKeyParams(key),
      );
      await db.query('INSERT INTO api_key_hashes (hash, key_id, created_at) VALUES ($1, $2, $3)', [
        key.hash,
        key.id,
        key.createdAt,
      ]);
      const created = await this.#key(db, key.id);
      if (!created) throw new Error(`key ${key.id} vanished after insert`);
      await this.#audit(db, audit.keyCreated(created, actor));
      await this.#changed(db, key.id, 'created', key.createdAt);
      return created;
    });
  }

  async findKeyByHash(hash: string, now: number): Promise<SecretMatch | undefined> {
    const { rows } = await this.#pool.query<Row>({
      name: 'keygate_find_key_by_hash',
      text: `SELECT ${KEY_COLUMNS}, h.valid_until AS secret_valid_until
        FROM api_key_hashes h JOIN api_keys k ON k.id = h.key_id JOIN workspaces w ON w.id = k.workspace_id
        WHERE h.hash = $1 AND (h.valid_until IS NULL OR h.valid_until > $2)`,
      values: [hash, now],
    });
    const row = rows[0];
    return row ? { key: toKey(row), validUntil: num(row.secret_valid_until) } : undefined;
  }

  async getKey(id: string): Promise<KeyRecord | undefined> {
    return this.#key(this.#pool, id);
  }

  async listKeys(filter: KeyFilter = {}): Promise<KeyRecord[]> {
    const search = filter.search === '' ? undefined : filter.search;
    const c = new Conditions()
      .add('k.workspace_id = ?', filter.workspaceId)
      .add(
        "(strpos(lower(k.name), lower(?)) > 0 OR k.id = ? OR (k.start || '…' || k.last4) = ? OR k.start = ?)",
        search,
        search,
        search,
        search,
      )
      .add('k.created_by = ?', filter.createdBy)
      .add('(k.created_at, k.id) > (SELECT created_at, id FROM api_keys WHERE id = ?)', filter.after);
    const sql = `SELECT ${KEY_COLUMNS} FROM ${KEY_FROM} ${c.where} ORDER BY k.created_at, k.id`;
    return filterKeys((await this.#rows(this.#pool, sql, c.params)).map(toKey), filter);
  }

  async updateKey(id: string, patch: KeyPatch, actor: Actor, at: number): Promise<KeyRecord | undefined> {
    return this.#transaction(async (db) => {
      const before = await this.#key(db, id, true);
      if (!before) return undefined;
      await db.query(
        `UPDATE api_keys SET name = $1, expires_at = $2, scopes = $3, models = $4, allowed_ips = $5, rpm = $6,
           tpm = $7, concurrency = $8, budget_day = $9, budget_month = $10, updated_at = $11 WHERE id = $12`,
        [...keyPatchParams(before, patch), at, id],
      );
      const after = await this.#key(db, id);
      if (!after) return undefined;
      const changes = audit.keyChanges(before, after);
      if (Object.keys(changes).length > 0) {
        await this.#audit(db, audit.keyUpdated(after, changes, actor, at));
        await this.#changed(db, id, 'updated', at);
      }
      return after;
    });
  }

  async rotateKey(input: RotateInput, actor: Actor): Promise<KeyRecord | undefined> {
    return this.#transaction(async (db) => {
      const before = await this.#key(db, input.id, true);
      if (!before) return undefined;
      await db.query(
        'UPDATE api_key_hashes SET valid_until = $1 WHERE key_id = $2 AND (valid_until IS NULL OR valid_until > $1)',
        [input.graceUntil, input.id],
      );
      await db.query('INSERT INTO api_key_hashes (hash, key_id, created_at) VALUES ($1, $2, $3)', [
        input.hash,
        input.id,
        input.at,
      ]);
      await db.query(
        'UPDATE api_keys SET start = $1, last4 = $2, rotated_at = $3, updated_at = $3 WHERE id = $4',
        [input.start, input.last4, input.at, input.id],
      );
      const after = await this.#key(db, input.id);
      await this.#audit(db, audit.keyRotated(before, input, actor));
      await this.#changed(db, input.id, 'rotated', input.at);
      return after;
    });
  }

  async revokeKey(id: string, at: number, actor: Actor): Promise<KeyRecord | undefined> {
    return this.#transaction(async (db) => {
      const result = await db.query(
        'UPDATE api_keys SET revoked_at = $1, updated_at = $1 WHERE id = $2 AND revoked_at IS NULL',
        [at, id],
      );
      const key = await this.#key(db, id);
      if (key && (result.rowCount ?? 0) > 0) {
        await this.#audit(db, audit.keyRevoked(key, actor, at));
        await this.#changed(db, id, 'revoked', at);
      }
      return key;
    });
  }

  async getWorkspace(id: string): Promise<Workspace | undefined> {
    return this.#workspace(this.#pool, id);
  }

  async listWorkspaces(): Promise<Workspace[]> {
    return (
      await this.#rows(this.#pool, `SELECT ${WORKSPACE_COLUMNS} FROM workspaces ORDER BY created_at, id`)
    ).map(toWorkspace);
  }

  async createWorkspace(
    input: { id: string; name: string; createdAt: number },
    actor: Actor,
  ): Promise<Workspace> {
    return this.#transaction(async (db) => {
      await db.query('INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)', [
        input.id,
        input.name,
        input.createdAt,
      ]);
      const created = await this.#workspace(db, input.id);
      if (!created) throw new Error(`workspace ${input.id} vanished after insert`);
      await this.#audit(db, audit.workspaceCreated(created, actor));
      return created;
    });
  }

  async updateWorkspace(
    id: string,
    patch: WorkspacePatch,
    actor: Actor,
    at: number,
  ): Promise<Workspace | undefined> {
    return this.#transaction(async (db) => {
      const before = await this.#workspace(db, id, true);
      if (!before) return undefined;
      await db.query(
        'UPDATE workspaces SET name = $1, max_key_lifetime_ms = $2, allowed_ips = $3, budget_day = $4, budget_month = $5 WHERE id = $6',
        [...workspacePatchParams(before, patch), id],
      );
      const after = await this.#workspace(db, id);
      if (!after) return undefined;
      const changes = audit.workspaceChanges(before, after);
      if (Object.keys(changes).length > 0) {
        await this.#audit(db, audit.workspaceUpdated(id, changes, actor, at));
        await this.#changed(db, id, 'workspace', at);
      }
      return after;
    });
  }

  async createUser(user: User & { passwordHash: string }, actor: Actor): Promise<User> {
    return this.#transaction(async (db) => {
      await db.query('INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)', [
        user.id,
        user.email,
        user.passwordHash,
        user.createdAt,
      ]);
      await this.#audit(db, audit.userCreated(user, actor));
      return { id: user.id, email: user.email, createdAt: user.createdAt, disabledAt: null };
    });
  }

  async getUser(idOrEmail: string): Promise<UserCredentials | undefined> {
    const row = await this.#row(
      this.#pool,
      `SELECT id, email, password_hash, created_at, disabled_at, totp_secret, totp_enabled_at, recovery_codes
       FROM users WHERE id = $1 OR email = lower($1)`,
      [idOrEmail],
    );
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
    const sets = columns.map((column, i) => `${column} = $${i + 1}`);
    return this.#transaction(async (db) => {
      const found =
        sets.length === 0
          ? (await this.#row(db, 'SELECT 1 FROM users WHERE id = $1', [userId])) !== undefined
          : ((
              await db.query(`UPDATE users SET ${sets.join(', ')} WHERE id = $${values.length + 1}`, [
                ...values,
                userId,
              ])
            ).rowCount ?? 0) > 0;
      if (!found) return false;
      await this.#audit(db, audit.credentialsChanged(userId, action, changes, actor, at));
      return true;
    });
  }

  async createFirstOwner(
    user: User & { passwordHash: string },
    actor: Actor,
    at: number,
  ): Promise<User | undefined> {
    return this.#transaction(async (db) => {
      // The lock every membership change of ws_default takes: concurrent setups (any instance)
      // queue here, and each next one's check, a new snapshot under READ COMMITTED, sees the winner.
      await this.#lockWorkspace(db, DEFAULT_WORKSPACE_ID);
      if (await this.#row(db, 'SELECT 1 FROM users LIMIT 1')) return undefined;
      await db.query('INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)', [
        user.id,
        user.email,
        user.passwordHash,
        user.createdAt,
      ]);
      await this.#audit(db, audit.userCreated(user, actor));
      await db.query(
        'INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)',
        [DEFAULT_WORKSPACE_ID, user.id, 'owner', at],
      );
      await this.#audit(
        db,
        audit.membershipSet(DEFAULT_WORKSPACE_ID, user.id, undefined, 'owner', actor, at),
      );
      return { id: user.id, email: user.email, createdAt: user.createdAt, disabledAt: null };
    });
  }

  async claimTotpStep(userId: string, step: number): Promise<boolean> {
    // A concurrent UPDATE of the row makes this one wait and re-check its WHERE on the new row.
    const result = await this.#pool.query(
      'UPDATE users SET totp_last_step = $2 WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)',
      [userId, step],
    );
    return result.rowCount === 1;
  }

  async spendRecoveryCode(userId: string, codeHash: string, actor: Actor, at: number): Promise<boolean> {
    return this.#transaction(async (db) => {
      // Removes the code only while it is there (re-checked on the locked row): one spender wins.
      const result = await db.query(
        `UPDATE users SET recovery_codes = recovery_codes - $2::text
         WHERE id = $1 AND recovery_codes @> jsonb_build_array($2::text)`,
        [userId, codeHash],
      );
      if (result.rowCount !== 1) return false;
      const { changes } = credentialColumns({ recoveryCodes: [] });
      await this.#audit(db, audit.credentialsChanged(userId, 'user.recovery_code_used', changes, actor, at));
      return true;
    });
  }

  async createSession(session: SessionRecord): Promise<void> {
    await this.#pool.query(
      `INSERT INTO sessions (id, user_id, created_at, expires_at, last_seen_at, revoked_at, ip, user_agent)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      sessionParams(session),
    );
  }

  async getSession(id: string): Promise<SessionRecord | undefined> {
    const row = await this.#row(this.#pool, `SELECT ${SESSION_COLUMNS} FROM sessions WHERE id = $1`, [id]);
    return row ? toSession(row) : undefined;
  }

  async touchSession(id: string, at: number): Promise<void> {
    await this.#pool.query('UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $1', [
      at,
      id,
    ]);
  }

  async revokeSessions(
    filter: { id: string } | { userId: string; exceptId?: string | undefined },
    at: number,
  ): Promise<number> {
    return this.#transaction(async (db) => {
      await db.query('DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $2', [at, at - 86_400_000]);
      const c = new Conditions([at]).add('revoked_at IS NULL');
      if ('id' in filter) c.add('id = ?', filter.id);
      else c.add('user_id = ?', filter.userId).add('id <> ?', filter.exceptId);
      return (await db.query(`UPDATE sessions SET revoked_at = $1 ${c.where}`, c.params)).rowCount ?? 0;
    });
  }

  async createInvite(invite: Invite & { tokenHash: string }, actor: Actor): Promise<Invite> {
    return this.#transaction(async (db) => {
      await db.query(
        `INSERT INTO invites (id, token_hash, workspace_id, email, role, created_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        inviteParams(invite),
      );
      await this.#audit(db, audit.inviteCreated(invite, actor));
      const { tokenHash: _, ...view } = invite;
      return { ...view, acceptedAt: null, revokedAt: null };
    });
  }

  async listInvites(workspaceId: string): Promise<Invite[]> {
    return (
      await this.#rows(
        this.#pool,
        `SELECT ${INVITE_COLUMNS} FROM invites WHERE workspace_id = $1 ORDER BY created_at DESC, id`,
        [workspaceId],
      )
    ).map(toInvite);
  }

  async findInvite(tokenHash: string): Promise<Invite | undefined> {
    const row = await this.#row(this.#pool, `SELECT ${INVITE_COLUMNS} FROM invites WHERE token_hash = $1`, [
      tokenHash,
    ]);
    return row ? toInvite(row) : undefined;
  }

  async acceptInvite(id: string, userId: string, actor: Actor, at: number): Promise<Membership | undefined> {
    return this.#transaction(async (db) => {
      // An invitation is redeemed once: a second acceptance finds it accepted (the row lock).
      const accepted = await this.#row(
        db,
        `UPDATE invites SET accepted_at = $1
         WHERE id = $2 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $1
         RETURNING workspace_id, role, email`,
        [at, id],
      );
      if (!accepted) return undefined;
      const workspaceId = String(accepted.workspace_id);
      const role = String(accepted.role) as Role;
      // In turn with the other membership changes of the workspace.
      await this.#lockWorkspace(db, workspaceId);
      if (!(await this.#membership(db, workspaceId, userId))) {
        await db.query(
          'INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)',
          [workspaceId, userId, role, at],
        );
        await this.#audit(db, audit.membershipSet(workspaceId, userId, undefined, role, actor, at));
      }
      await this.#audit(db, audit.inviteAccepted(workspaceId, id, userId, actor, at));
      const membership = await this.#membership(db, workspaceId, userId);
      if (!membership) throw new Error('membership vanished after insert');
      return membership;
    });
  }

  async revokeInvite(workspaceId: string, id: string, actor: Actor, at: number): Promise<boolean> {
    return this.#transaction(async (db) => {
      const result = await db.query(
        `UPDATE invites SET revoked_at = $1
         WHERE id = $2 AND workspace_id = $3 AND accepted_at IS NULL AND revoked_at IS NULL`,
        [at, id, workspaceId],
      );
      if ((result.rowCount ?? 0) === 0) return false;
      await this.#audit(db, audit.inviteRevoked(workspaceId, id, actor, at));
      return true;
    });
  }

  async countSecretBound(): Promise<SecretBoundCounts> {
    const row = await this.#row(
      this.#pool,
      `SELECT (SELECT COUNT(*) FROM api_keys) AS k, (SELECT COUNT(*) FROM alert_channels) AS c,
         (SELECT COUNT(*) FROM users WHERE totp_secret IS NOT NULL) AS u`,
    );
    return { keys: Number(row?.k ?? 0), channels: Number(row?.c ?? 0), twoFactorUsers: Number(row?.u ?? 0) };
  }

  async getSetting(name: string): Promise<string | undefined> {
    const row = await this.#row(this.#pool, 'SELECT value FROM settings WHERE name = $1', [name]);
    return row ? String(row.value) : undefined;
  }

  async initSetting(name: string, value: string): Promise<string> {
    // Two statements: the read must see a value another instance committed while this one waited.
    await this.#pool.query(
      'INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING',
      [name, value],
    );
    const row = await this.#row(this.#pool, 'SELECT value FROM settings WHERE name = $1', [name]);
    return String(row?.value);
  }

  async listUsers(): Promise<User[]> {
    return (
      await this.#rows(
        this.#pool,
        'SELECT id, email, created_at, disabled_at FROM users ORDER BY created_at, id',
      )
    ).map(toUser);
  }

  async #membership(db: Db, workspaceId: string, userId: string): Promise<Membership | undefined> {
    const row = await this.#row(
      db,
      `SELECT m.workspace_id, m.user_id, u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id
       WHERE m.workspace_id = $1 AND m.user_id = $2`,
      [workspaceId, userId],
    );
    return row ? toMembership(row) : undefined;
  }

  /** Serialises membership changes of one workspace (the last-owner check reads the others). */
  async #lockWorkspace(db: Db, workspaceId: string): Promise<void> {
    await db.query('SELECT 1 FROM workspaces WHERE id = $1 FOR NO KEY UPDATE', [workspaceId]);
  }

  async setMembership(
    workspaceId: string,
    userId: string,
    role: Role,
    actor: Actor,
    at: number,
  ): Promise<Membership> {
    return this.#transaction(async (db) => {
      await this.#lockWorkspace(db, workspaceId);
      const before = await this.#membership(db, workspaceId, userId);
      if (before?.role === 'owner' && role !== 'owner')
        await this.#assertAnotherOwner(db, workspaceId, userId);
      await db.query(
        `INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role`,
        [workspaceId, userId, role, at],
      );
      const after = await this.#membership(db, workspaceId, userId);
      if (!after) throw new Error('membership vanished after insert');
      if (before?.role !== role) {
        await this.#audit(db, audit.membershipSet(workspaceId, userId, before?.role, role, actor, at));
      }
      return after;
    });
  }

  /** A workspace never loses its last owner. */
  async #assertAnotherOwner(db: Db, workspaceId: string, userId: string): Promise<void> {
    const row = await this.#row(
      db,
      "SELECT COUNT(*) AS n FROM memberships WHERE workspace_id = $1 AND role = 'owner' AND user_id <> $2",
      [workspaceId, userId],
    );
    if (Number(row?.n ?? 0) === 0)
      throw new StoreConflictError(`workspace ${workspaceId} must keep at least one owner`);
  }

  async removeMembership(
    workspaceId: string,
    userId: string,
    actor: Actor,
    at: number,
  ): Promise<{ revokedKeyIds: string[] } | undefined> {
    return this.#transaction(async (db) => {
      await this.#lockWorkspace(db, workspaceId);
      const before = await this.#membership(db, workspaceId, userId);
      if (!before) return undefined;
      if (before.role === 'owner') await this.#assertAnotherOwner(db, workspaceId, userId);
      await db.query('DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2', [
        workspaceId,
        userId,
      ]);
      await this.#audit(db, audit.membershipRemoved(workspaceId, userId, before.role, actor, at));
      // The keys they own here leave with them, in this transaction: revoked, audited, and in the
      // change feed so every gateway drops them within one poll.
      const rows = await this.#rows(
        db,
        `UPDATE api_keys SET revoked_at = $1, updated_at = $1
         WHERE workspace_id = $2 AND created_by = $3 AND revoked_at IS NULL RETURNING id`,
        [at, workspaceId, userId],
      );
      const revokedKeyIds = rows.map((row) => String(row.id));
      for (const id of revokedKeyIds) {
        const key = await this.#key(db, id);
        await this.#changed(db, id, 'revoked', at);
        if (!key) continue;
        const entry = audit.keyRevoked(key, actor, at);
        await this.#audit(db, {
          ...entry,
          changes: { ...entry.changes, reason: { after: 'member.remove' } },
        });
      }
      return { revokedKeyIds };
    });
  }

  async getMembership(workspaceId: string, userId: string): Promise<Membership | undefined> {
    return this.#membership(this.#pool, workspaceId, userId);
  }

  async listMembers(workspaceId: string): Promise<Membership[]> {
    return (
      await this.#rows(
        this.#pool,
        `SELECT m.workspace_id, m.user_id, u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id
         WHERE m.workspace_id = $1 ORDER BY m.created_at, u.email`,
        [workspaceId],
      )
    ).map(toMembership);
  }

  async recordExpiries(now: number): Promise<string[]> {
    return this.#transaction(async (db) => {
      // A concurrent sweep waits on the rows and then finds them recorded: each expiry once.
      const rows = await this.#rows(
        db,
        `UPDATE api_keys SET expiry_recorded_at = $1
         WHERE expires_at <= $1 AND expiry_recorded_at IS NULL AND revoked_at IS NULL
         RETURNING id, workspace_id, expires_at`,
        [now],
      );
      for (const row of rows) {
        await this.#audit(
          db,
          audit.keyExpired(String(row.id), String(row.workspace_id), Number(row.expires_at)),
        );
      }
      return rows.map((row) => String(row.id));
    });
  }

  async recordExpiryReminders(now: number, thresholdsMs: readonly number[]): Promise<ExpiryReminder[]> {
    return this.#transaction(async (db) => {
      // One sweep at a time across instances: each reminder goes out once.
      await db.query('SELECT pg_advisory_xact_lock($1, $2)', [KEYGATE_LOCKS, LOCK_EXPIRY_REMINDERS]);
      const reminders: ExpiryReminder[] = [];
      // Smallest threshold first: a key already inside 3 days gets the 3-day reminder, not the 14-day one.
      // Only crossings remind (see the SQLite store).
      for (const threshold of [...thresholdsMs].sort((a, b) => a - b)) {
        const rows = await this.#rows(
          db,
          `SELECT k.id, k.name, k.workspace_id, k.expires_at,
             COALESCE((SELECT MAX(e.at) FROM key_events e WHERE e.key_id = k.id AND e.kind IN ('created', 'updated')), k.created_at) AS expiry_set_at
           FROM api_keys k
           WHERE k.revoked_at IS NULL AND k.expires_at > $1 AND k.expires_at <= $2
             AND NOT EXISTS (SELECT 1 FROM key_expiry_reminders r
                             WHERE r.key_id = k.id AND r.expires_at = k.expires_at AND r.threshold_ms <= $3)`,
          [now, now + threshold, threshold],
        );
        for (const row of rows) {
          const reminder = toReminder(row, threshold);
          await db.query(
            'INSERT INTO key_expiry_reminders (key_id, expires_at, threshold_ms, at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING',
            [reminder.keyId, reminder.expiresAt, threshold, now],
          );
          if (!crossedSince(row, threshold)) continue;
          await this.#audit(db, audit.expiryReminded(reminder, now));
          reminders.push(reminder);
        }
      }
      return reminders;
    });
  }

  async raiseAlert(alert: NewAlert, cooldownMs: number): Promise<{ alert: Alert; fresh: boolean }> {
    return this.#transaction(async (db) => {
      // Two instances raising the same alert at once: one inserts, the other folds into it.
      await db.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_SPACE_ALERT, alert.fingerprint]);
      const existing = await this.#row(
        db,
        'SELECT id FROM alerts WHERE fingerprint = $1 AND last_at > $2 ORDER BY last_at DESC LIMIT 1',
        [alert.fingerprint, alert.at - cooldownMs],
      );
      if (existing) {
        const row = await this.#row(
          db,
          `UPDATE alerts SET last_at = GREATEST(last_at, $1), occurrences = occurrences + 1 WHERE id = $2
           RETURNING ${ALERT_COLUMNS}`,
          [alert.at, String(existing.id)],
        );
        return { alert: toAlert(row as Row), fresh: false };
      }
      const row = await this.#row(
        db,
        `INSERT INTO alerts (id, workspace_id, kind, fingerprint, key_id, severity, title, message, details, first_at, last_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         RETURNING ${ALERT_COLUMNS}`,
        newAlertParams(alert),
      );
      return { alert: toAlert(row as Row), fresh: true };
    });
  }

  async #alert(db: Db, id: string): Promise<Alert | undefined> {
    const row = await this.#row(db, `SELECT ${ALERT_COLUMNS} FROM alerts WHERE id = $1`, [id]);
    return row ? toAlert(row) : undefined;
  }

  async listAlerts(filter: AlertFilter): Promise<Alert[]> {
    const c = new Conditions()
      .add('workspace_id = ?', filter.workspaceId)
      .add('kind = ?', filter.kind)
      .add('key_id = ?', filter.keyId);
    if (filter.unacknowledged) c.add('acknowledged_at IS NULL');
    const limit = Math.min(filter.limit ?? 100, 1000);
    return (
      await this.#rows(
        this.#pool,
        `SELECT ${ALERT_COLUMNS} FROM alerts ${c.where} ORDER BY last_at DESC, id LIMIT $${c.params.length + 1}`,
        [...c.params, limit],
      )
    ).map(toAlert);
  }

  async getAlert(id: string): Promise<Alert | undefined> {
    return this.#alert(this.#pool, id);
  }

  async acknowledgeAlert(id: string, actor: Actor, at: number): Promise<Alert | undefined> {
    return this.#transaction(async (db) => {
      // The first acknowledgement stands (and is the one audited), however many race.
      const row = await this.#row(
        db,
        `UPDATE alerts SET acknowledged_at = $1, acknowledged_by = $2 WHERE id = $3 AND acknowledged_at IS NULL
         RETURNING ${ALERT_COLUMNS}`,
        [at, actor.id ?? actor.type, id],
      );
      if (!row) return this.#alert(db, id);
      const alert = toAlert(row);
      await this.#audit(db, audit.alertAcknowledged(alert, actor, at));
      return alert;
    });
  }

  async createChannel(channel: AlertChannel, actor: Actor): Promise<AlertChannel> {
    return this.#transaction(async (db) => {
      await db.query(
        'INSERT INTO alert_channels (id, workspace_id, type, name, config_sealed, created_at) VALUES ($1, $2, $3, $4, $5, $6)',
        channelParams(channel),
      );
      await this.#audit(db, audit.channelCreated(channel, actor));
      return channel;
    });
  }

  async listChannels(workspaceId?: string): Promise<AlertChannel[]> {
    const rows =
      workspaceId === undefined
        ? await this.#rows(
            this.#pool,
            `SELECT ${CHANNEL_COLUMNS} FROM alert_channels ORDER BY created_at, id`,
          )
        : await this.#rows(
            this.#pool,
            `SELECT ${CHANNEL_COLUMNS} FROM alert_channels WHERE workspace_id = $1 ORDER BY created_at, id`,
            [workspaceId],
          );
    return rows.map(toChannel);
  }

  async getChannel(id: string): Promise<AlertChannel | undefined> {
    const row = await this.#row(this.#pool, `SELECT ${CHANNEL_COLUMNS} FROM alert_channels WHERE id = $1`, [
      id,
    ]);
    return row ? toChannel(row) : undefined;
  }

  async deleteChannel(id: string, actor: Actor, at: number): Promise<boolean> {
    return this.#transaction(async (db) => {
      const row = await this.#row(
        db,
        `DELETE FROM alert_channels WHERE id = $1 RETURNING ${CHANNEL_COLUMNS}`,
        [id],
      );
      if (!row) return false;
      await this.#audit(db, audit.channelDeleted(toChannel(row), actor, at));
      return true;
    });
  }

  async recordDelivery(d: AlertDelivery): Promise<void> {
    await this.#pool.query(
      'INSERT INTO alert_deliveries (alert_id, channel_id, attempt, outcome, status, error, at) VALUES ($1, $2, $3, $4, $5, $6, $7)',
      [d.alertId, d.channelId, d.attempt, d.outcome, d.status, d.error, d.at],
    );
  }

  async listDeliveries(filter: {
    alertId?: string;
    channelId?: string;
    limit?: number;
  }): Promise<AlertDelivery[]> {
    const c = new Conditions().add('alert_id = ?', filter.alertId).add('channel_id = ?', filter.channelId);
    const rows = await this.#rows(
      this.#pool,
      `SELECT alert_id, channel_id, attempt, outcome, status, error, at FROM alert_deliveries ${c.where}
       ORDER BY id DESC LIMIT $${c.params.length + 1}`,
      [...c.params, Math.min(filter.limit ?? 100, 1000)],
    );
    return rows.map(toDelivery);
  }

  async ruleSettings(workspaceId: string): Promise<Record<string, Record<string, unknown>>> {
    const rows = await this.#rows(
      this.#pool,
      'SELECT kind, settings FROM alert_rule_settings WHERE workspace_id = $1',
      [workspaceId],
    );
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
    await this.#transaction(async (db) => {
      // Changes of one workspace's settings in turn, so that each audit event's "before" is right.
      await this.#lockWorkspace(db, workspaceId);
      const before = await this.#row(
        db,
        'SELECT settings FROM alert_rule_settings WHERE workspace_id = $1 AND kind = $2',
        [workspaceId, kind],
      );
      await db.query(
        `INSERT INTO alert_rule_settings (workspace_id, kind, settings) VALUES ($1, $2, $3)
         ON CONFLICT (workspace_id, kind) DO UPDATE SET settings = excluded.settings`,
        [workspaceId, kind, JSON.stringify(settings)],
      );
      await this.#audit(
        db,
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
    return this.#transaction(async (db) => {
      // One key's networks in turn: of two new networks at once, one is the first and one is new.
      await db.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_SPACE_NETWORK, keyId]);
      const result = await db.query(
        'INSERT INTO key_networks (key_id, network, first_seen) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
        [keyId, network, at],
      );
      if ((result.rowCount ?? 0) === 0) return 'known';
      const row = await this.#row(db, 'SELECT COUNT(*) AS n FROM key_networks WHERE key_id = $1', [keyId]);
      return Number(row?.n) === 1 ? 'first' : 'new';
    });
  }

  async hourlyCounts(keyId: string, since: number): Promise<HourlyCount[]> {
    return hourlyCountsOf(await this.usageReport({ by: 'hour', keyId, from: since }));
  }

  async appendAudit(event: AuditEvent): Promise<void> {
    await this.#audit(this.#pool, event);
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
    const rows = await this.#rows(
      this.#pool,
      `SELECT seq, id, at, workspace_id, actor_type, actor_id, actor_ip, action, target_type, target_id, changes
       FROM audit_events ${c.where} ORDER BY seq DESC LIMIT $${c.params.length + 1}`,
      [...c.params, Math.min(filter.limit ?? 100, 1000)],
    );
    return rows.map(toAuditEvent);
  }

  async tokensUsed(filter: TokenFilter): Promise<number> {
    if (filter.keyId === undefined && filter.workspaceId === undefined) return 0;
    const where: UsageWhere =
      filter.keyId !== undefined ? { keyId: filter.keyId } : { workspaceId: filter.workspaceId };
    // One statement (one snapshot) reads the sums and the retention mark they were split by; if
    // the mark has moved since it was last seen, the split is made again with the new one.
    for (let attempt = 0; ; attempt++) {
      const rawSince = this.#rawSince;
      const params: unknown[] = [];
      const sums = pieces(splitRange(filter.since, undefined, rawSince)).map(
        (piece) =>
          `SELECT SUM(total_tokens) AS t FROM ${SOURCE_TABLE[piece.source]} WHERE ${usageWhere(where, piece.source, piece.range, params)}`,
      );
      const total = sums.length > 0 ? `(SELECT SUM(t) FROM (${sums.join(' UNION ALL ')}) AS s)` : 'NULL';
      const row = await this.#row(
        this.#pool,
        `SELECT (SELECT raw_since FROM usage_retention WHERE id = 1) AS raw_since, COALESCE(${total}, 0) AS total`,
        params,
      );
      const seen = num(row?.raw_since) ?? 0;
      if (seen === rawSince || attempt >= 2) {
        this.#rawSince = Math.max(this.#rawSince, seen);
        return Number(row?.total ?? 0);
      }
      this.#rawSince = Math.max(this.#rawSince, seen);
    }
  }

  async keyChanges(after: number): Promise<KeyChanges> {
    if (after < 0) {
      const { rows } = await this.#pool.query<Row>({
        name: 'keygate_key_changes_cursor',
        text: 'SELECT COALESCE(MAX(seq), 0) AS seq FROM key_events',
      });
      return { cursor: Number(rows[0]?.seq ?? 0), keyIds: [] };
    }
    const { rows } = await this.#pool.query<Row>({
      name: 'keygate_key_changes',
      text: 'SELECT seq, key_id FROM key_events WHERE seq > $1 ORDER BY seq LIMIT 10000',
      values: [after],
    });
    if (rows.length === 0) return { cursor: after, keyIds: [] };
    return { cursor: Number(rows.at(-1)?.seq), keyIds: [...new Set(rows.map((r) => String(r.key_id)))] };
  }

  async recordUsage(records: readonly UsageRecord[]): Promise<void> {
    if (records.length === 0) return;
    // One array per column (unnest), from the records' rows.
    const rows = records.map(usageParams);
    const values = (rows[0] ?? []).map((_, i) => rows.map((row) => row[i]));
    await this.#retrying(() =>
      this.#pool.query({ name: 'keygate_record_usage', text: RECORD_USAGE, values }),
    );
  }

  async usageTotals(filter: UsageFilter): Promise<UsageTotals[]> {
    return totalsOf(await this.usageReport({ by: 'key', keyId: filter.keyId, from: filter.since }));
  }

  async usageReport(query: UsageReportQuery): Promise<UsageReport> {
    const pricing = query.pricing ?? NO_PRICING;
    // One snapshot: the retention mark, the rollups and the raw records agree.
    const rows = await this.#transaction(async (db) => {
      const mark = await this.#row(db, 'SELECT raw_since FROM usage_retention WHERE id = 1');
      const rawSince = num(mark?.raw_since) ?? 0;
      this.#rawSince = Math.max(this.#rawSince, rawSince);
      const range = splitRange(query.from, query.to, rawSince, query.by !== 'hour');
      const params: unknown[] = [];
      const parts = pieces(range).map(({ source, range: piece }) =>
        reportPieceSql(query.by, source, usageWhere(query, source, piece, params)),
      );
      const cells = new UsageCells();
      if (parts.length > 0) {
        for (const row of await this.#rows(db, parts.join('\nUNION ALL\n'), params))
          addHistogram(addSums(cells, row, query.by), row);
      }
      const folded = foldUsage(cells.values(), query.by, pricing);
      const table = namedTable(query.by);
      if (table !== undefined) {
        const ids = groupIds(folded);
        const sql = `SELECT id, name FROM ${table} WHERE id = ANY($1::text[])`;
        nameGroups(folded, ids.length === 0 ? [] : await this.#rows(db, sql, [ids]));
      }
      return folded;
    }, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    return usageReportOf(query, pricing, rows);
  }

  async pruneUsage(before: number): Promise<number> {
    const cutoff = Math.floor(before / HOUR_MS) * HOUR_MS;
    // First the mark, so that a late record from the deleted hours is refused from now on (this
    // waits for the usage batches in flight, which hold a share lock on it).
    const mark = await this.#row(
      this.#pool,
      'UPDATE usage_retention SET raw_since = GREATEST(raw_since, $1) WHERE id = 1 RETURNING raw_since',
      [cutoff],
    );
    const rawSince = num(mark?.raw_since) ?? cutoff;
    this.#rawSince = Math.max(this.#rawSince, rawSince);
    let deleted = 0;
    for (;;) {
      // In short statements, yielding in between: the gateways keep metering meanwhile. Rows
      // another instance's sweep is deleting are skipped, not waited for.
      const result = await this.#pool.query(
        `DELETE FROM usage_records WHERE id IN (
           SELECT id FROM usage_records WHERE time < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`,
        [rawSince, PRUNE_CHUNK],
      );
      const n = result.rowCount ?? 0;
      deleted += n;
      if (n < PRUNE_CHUNK) return deleted;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.end();
  }
}
