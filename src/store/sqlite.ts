/**
 * The embedded store: one SQLite file in the data directory, in WAL mode so the server and the
 * CLI can use it at the same time (readers never block the writer; writers wait on a busy timeout).
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { LATENCY_COLUMNS, latencyBucket, latencyBucketSql, mergeHistogram } from '../usage/histogram.ts';
import { NO_PRICING } from '../usage/pricing.ts';
import {
  emptyLatencyCounts,
  foldUsage,
  type LatencyCounts,
  type UsageCell,
  UsageCells,
} from '../usage/report.ts';
import { newId } from '../util/ids.ts';
import { MIGRATIONS } from './migrations.ts';
import {
  type Actor,
  type Alert,
  type AlertChannel,
  type AlertDelivery,
  type AlertFilter,
  type AlertKind,
  type AuditEvent,
  type AuditFilter,
  type Changes,
  type ChannelType,
  type CredentialsPatch,
  type ExpiryReminder,
  type HourlyCount,
  type Invite,
  type KeyChanges,
  type KeyFilter,
  type KeyPatch,
  type KeyPolicy,
  type KeyRecord,
  keyStatus,
  type Membership,
  type NewAlert,
  type NewKey,
  type Role,
  type RotateInput,
  type Scope,
  type SecretMatch,
  type SessionRecord,
  type Severity,
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
  type WorkspacePolicy,
} from './types.ts';

type Row = Record<string, SQLInputValue>;

const KEY_COLUMNS = `k.id, k.workspace_id, k.name, k.start, k.last4, k.created_at, k.created_by, k.updated_at,
  k.rotated_at, k.expires_at, k.revoked_at, k.last_used_at, k.last_used_ip, k.scopes, k.models, k.allowed_ips, k.rpm,
  k.tpm, k.concurrency, k.budget_day, k.budget_month, w.max_key_lifetime_ms AS ws_max_key_lifetime_ms,
  w.allowed_ips AS ws_allowed_ips, w.budget_day AS ws_budget_day, w.budget_month AS ws_budget_month`;
const KEY_FROM = 'api_keys k JOIN workspaces w ON w.id = k.workspace_id';
const WORKSPACE_COLUMNS = 'id, name, created_at, max_key_lifetime_ms, allowed_ips, budget_day, budget_month';

function num(value: SQLInputValue | undefined): number | null {
  return value === null || value === undefined ? null : Number(value);
}

function str(value: SQLInputValue | undefined): string | null {
  return value === null || value === undefined ? null : String(value);
}

function strings(value: SQLInputValue | undefined): string[] {
  const parsed = JSON.parse(String(value ?? '[]')) as unknown;
  return Array.isArray(parsed) ? parsed.map(String) : [];
}

function workspacePolicy(row: Row, prefix = ''): WorkspacePolicy {
  return {
    maxKeyLifetimeMs: num(row[`${prefix}max_key_lifetime_ms`]),
    allowedIps: strings(row[`${prefix}allowed_ips`]),
    budget: { day: num(row[`${prefix}budget_day`]), month: num(row[`${prefix}budget_month`]) },
  };
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
    updatedAt: num(row.updated_at),
    rotatedAt: num(row.rotated_at),
    expiresAt: num(row.expires_at),
    revokedAt: num(row.revoked_at),
    lastUsedAt: num(row.last_used_at),
    lastUsedIp: str(row.last_used_ip),
    policy: {
      scopes: strings(row.scopes) as Scope[],
      models: strings(row.models),
      allowedIps: strings(row.allowed_ips),
      limits: { rpm: num(row.rpm), tpm: num(row.tpm), concurrency: num(row.concurrency) },
      budget: { day: num(row.budget_day), month: num(row.budget_month) },
    },
    workspacePolicy: workspacePolicy(row, 'ws_'),
  };
}

function toAlert(row: Row): Alert {
  return {
    id: String(row.id),
    workspaceId: String(row.workspace_id),
    kind: String(row.kind) as AlertKind,
    fingerprint: String(row.fingerprint),
    keyId: str(row.key_id),
    severity: String(row.severity) as Severity,
    title: String(row.title),
    message: String(row.message),
    details: JSON.parse(String(row.details)) as Record<string, unknown>,
    firstAt: Number(row.first_at),
    lastAt: Number(row.last_at),
    occurrences: Number(row.occurrences),
    acknowledgedAt: num(row.acknowledged_at),
    acknowledgedBy: str(row.acknowledged_by),
  };
}

function toChannel(row: Row): AlertChannel {
  return {
    id: String(row.id),
    workspaceId: String(row.workspace_id),
    type: String(row.type) as ChannelType,
    name: String(row.name),
    configSealed: String(row.config_sealed),
    createdAt: Number(row.created_at),
  };
}

function toInvite(row: Row): Invite {
  return {
    id: String(row.id),
    workspaceId: String(row.workspace_id),
    email: String(row.email),
    role: String(row.role) as Role,
    createdBy: str(row.created_by),
    createdAt: Number(row.created_at),
    expiresAt: Number(row.expires_at),
    acceptedAt: num(row.accepted_at),
    revokedAt: num(row.revoked_at),
  };
}

function toMembership(row: Row): Membership {
  return {
    workspaceId: String(row.workspace_id),
    userId: String(row.user_id),
    email: String(row.email),
    role: String(row.role) as Role,
    createdAt: Number(row.created_at),
  };
}

function toWorkspace(row: Row): Workspace {
  return {
    id: String(row.id),
    name: String(row.name),
    createdAt: Number(row.created_at),
    policy: workspacePolicy(row),
  };
}

/** The audit view of a key: every field that can change, flattened, never a secret. */
function keyFields(key: KeyRecord): Record<string, unknown> {
  return {
    name: key.name,
    expires_at: key.expiresAt,
    revoked_at: key.revokedAt,
    scopes: key.policy.scopes,
    models: key.policy.models,
    allowed_ips: key.policy.allowedIps,
    rpm: key.policy.limits.rpm,
    tpm: key.policy.limits.tpm,
    concurrency: key.policy.limits.concurrency,
    budget_day: key.policy.budget.day,
    budget_month: key.policy.budget.month,
    display: `${key.start}…${key.last4}`,
  };
}

function workspaceFields(ws: Workspace): Record<string, unknown> {
  return {
    name: ws.name,
    max_key_lifetime_ms: ws.policy.maxKeyLifetimeMs,
    allowed_ips: ws.policy.allowedIps,
    budget_day: ws.policy.budget.day,
    budget_month: ws.policy.budget.month,
  };
}

/** Fields that differ between two views (a missing side records a creation or a removal). */
export function diff(
  before: Record<string, unknown> | undefined,
  after: Record<string, unknown> | undefined,
): Changes {
  const changes: Changes = {};
  const names = new Set([...Object.keys(before ?? {}), ...Object.keys(after ?? {})]);
  for (const name of names) {
    const b = before?.[name];
    const a = after?.[name];
    if (JSON.stringify(b) === JSON.stringify(a)) continue;
    changes[name] = {};
    if (before) changes[name].before = b ?? null;
    if (after) changes[name].after = a ?? null;
  }
  return changes;
}

function policyColumns(policy: KeyPolicy): SQLInputValue[] {
  return [
    JSON.stringify(policy.scopes),
    JSON.stringify(policy.models),
    JSON.stringify(policy.allowedIps),
    policy.limits.rpm,
    policy.limits.tpm,
    policy.limits.concurrency,
    policy.budget.day,
    policy.budget.month,
  ];
}

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;
/** Raw usage records deleted per transaction by the retention sweep. */
const PRUNE_CHUNK = 5000;

/** Where usage sums are read from: the daily or hourly rollups, or the raw records. */
type UsageSource = 'daily' | 'hourly' | 'raw';

const TIME_COLUMN: Record<UsageSource, string> = { daily: 'day', hourly: 'hour', raw: 'time' };

/** The group of a usage report as an expression over a source (`hour` never reads the daily rollups). */
function groupSql(by: UsageGroup, source: UsageSource): string {
  const raw = source === 'raw';
  switch (by) {
    case 'key':
      return raw ? "COALESCE(key_id, '')" : 'key_id';
    case 'workspace':
      return raw ? "COALESCE(workspace_id, '')" : 'workspace_id';
    case 'model':
      return raw ? "COALESCE(model, '')" : 'model';
    case 'endpoint':
      return 'endpoint';
    case 'hour':
      return raw ? '(time / 3600000) * 3600000' : 'hour';
    case 'day':
      return source === 'daily' ? 'day' : `(${TIME_COLUMN[source]} / 86400000) * 86400000`;
  }
}

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

/** Adds a summed row (`g`, `model`, the sums) to its cell; returns the cell. */
function addSums(cells: UsageCells, row: Row): UsageCell {
  const group = typeof row.g === 'number' || typeof row.g === 'bigint' ? Number(row.g) : String(row.g ?? '');
  const cell = cells.at(group, String(row.model ?? ''));
  cell.requests += Number(row.requests);
  cell.errors += Number(row.errors);
  cell.promptTokens += Number(row.prompt_tokens);
  cell.completionTokens += Number(row.completion_tokens);
  cell.totalTokens += Number(row.total_tokens);
  cell.estimatedRequests += Number(row.estimated_requests);
  cell.latencySumMs += Number(row.latency_sum_ms);
  cell.latencyMaxMs = Math.max(cell.latencyMaxMs, Number(row.latency_max_ms));
  return cell;
}

/** [from, to) in epoch ms; a null bound is open. */
export interface TimeRange {
  from: number | null;
  to: number | null;
}

/** A time range split by where its usage is read from; the pieces do not overlap. */
export interface UsageRange {
  /** Whole UTC days, from the daily rollups. */
  daily: TimeRange[];
  /** Whole hours, from the hourly rollups. */
  hourly: TimeRange[];
  /** Partial hours at the ends, from the raw records. */
  raw: TimeRange[];
}

const floorTo = (t: number, unit: number) => Math.floor(t / unit) * unit;
const ceilTo = (t: number, unit: number) => Math.ceil(t / unit) * unit;

/**
 * Splits [from, to) by where its usage is read from: whole days from the daily rollups (unless
 * `days` is false), whole hours from the hourly ones, and the partial hours at the ends from the
 * raw records while retention keeps them (from `rawSince`, an hour boundary, on): exact to the
 * millisecond there, whole hours before.
 */
export function splitRange(
  from: number | undefined,
  to: number | undefined,
  rawSince: number,
  days = true,
): UsageRange {
  const out: UsageRange = { daily: [], hourly: [], raw: [] };
  if (from !== undefined && to !== undefined && from >= to) return out;
  // Whole hours [start, end), the partial ones at the ends going to the raw records.
  let start: number | null = null;
  let end: number | null = null;
  if (from !== undefined && to !== undefined && floorTo(from, HOUR_MS) === floorTo(to, HOUR_MS)) {
    // Inside one hour, short of its end.
    const hour = floorTo(from, HOUR_MS);
    if (hour >= rawSince) {
      out.raw.push({ from, to });
      return out;
    }
    start = hour;
    end = hour + HOUR_MS;
  } else {
    if (from !== undefined) {
      start = ceilTo(from, HOUR_MS);
      if (start !== from) {
        if (start - HOUR_MS >= rawSince) out.raw.push({ from, to: start });
        else start -= HOUR_MS;
      }
    }
    if (to !== undefined) {
      end = floorTo(to, HOUR_MS);
      if (end !== to) {
        if (end >= rawSince) out.raw.push({ from: end, to });
        else end += HOUR_MS;
      }
    }
  }
  if (start !== null && end !== null && start >= end) return out;
  // Whole days inside the whole hours, the hours at the ends going to the hourly rollups.
  const dayStart = start === null ? null : ceilTo(start, DAY_MS);
  const dayEnd = end === null ? null : floorTo(end, DAY_MS);
  if (!days || (dayStart !== null && dayEnd !== null && dayStart >= dayEnd)) {
    out.hourly.push({ from: start, to: end });
    return out;
  }
  out.daily.push({ from: dayStart, to: dayEnd });
  if (start !== null && dayStart !== null && start < dayStart) out.hourly.push({ from: start, to: dayStart });
  if (end !== null && dayEnd !== null && dayEnd < end) out.hourly.push({ from: dayEnd, to: end });
  return out;
}

const SOURCE_TABLE: Record<UsageSource, string> = {
  daily: 'usage_daily',
  hourly: 'usage_hourly',
  raw: 'usage_records',
};

/** The pieces of a split range, with the table each is read from. */
function pieces(range: UsageRange): { source: UsageSource; range: TimeRange }[] {
  return [
    ...range.daily.map((r) => ({ source: 'daily' as const, range: r })),
    ...range.hourly.map((r) => ({ source: 'hourly' as const, range: r })),
    ...range.raw.map((r) => ({ source: 'raw' as const, range: r })),
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

type UsageWhere = Pick<UsageReportQuery, 'workspaceId' | 'keyId' | 'model' | 'endpoint' | 'createdBy'>;

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
    const column = source === 'raw' ? "COALESCE(model, '')" : 'model';
    // A pattern has only * as a wildcard (policy.ts refuses ? and [), so GLOB matches it exactly.
    const isPattern = filter.model.includes('*') && /^[A-Za-z0-9._:\-*/]+$/.test(filter.model);
    c.add(isPattern ? `${column} GLOB ?` : `${column} = ?`, filter.model);
  }
  c.add('key_id IN (SELECT id FROM api_keys WHERE created_by = ?)', filter.createdBy);
  return { sql: c.expression, params: c.params };
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

  #audit(event: Omit<AuditEvent, 'id'>): void {
    this.#stmt(
      `INSERT INTO audit_events (id, at, workspace_id, actor_type, actor_id, actor_ip, action, target_type, target_id, changes)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      newId('evt'),
      event.at,
      event.workspaceId,
      event.actor.type,
      event.actor.id,
      event.actor.ip,
      event.action,
      event.targetType,
      event.targetId,
      JSON.stringify(event.changes),
    );
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
      ).run(
        key.id,
        key.workspaceId,
        key.name,
        key.start,
        key.last4,
        key.createdAt,
        key.createdBy,
        key.expiresAt,
        ...policyColumns(key.policy),
      );
      this.#stmt('INSERT INTO api_key_hashes (hash, key_id, created_at) VALUES (?, ?, ?)').run(
        key.hash,
        key.id,
        key.createdAt,
      );
      this.#changed(key.id, 'created', key.createdAt);
      const created = this.#getKeySync(key.id);
      if (!created) throw new Error(`key ${key.id} vanished after insert`);
      this.#audit({
        at: key.createdAt,
        workspaceId: key.workspaceId,
        actor,
        action: 'key.create',
        targetType: 'key',
        targetId: key.id,
        changes: diff(undefined, keyFields(created)),
      });
      return created;
    });
  }

  async findKeyByHash(hash: string, now: number): Promise<SecretMatch | undefined> {
    const row = this.#stmt(
      `SELECT ${KEY_COLUMNS}, h.valid_until AS secret_valid_until FROM api_key_hashes h JOIN api_keys k ON k.id = h.key_id JOIN workspaces w ON w.id = k.workspace_id
       WHERE h.hash = ? AND (h.valid_until IS NULL OR h.valid_until > ?)`,
    ).get(hash, now) as Row | undefined;
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
    let keys = (this.#db.prepare(sql).all(...c.params) as Row[]).map(toKey);
    if (filter.status !== undefined) {
      const now = Date.now();
      keys = keys.filter((k) => keyStatus(k, now) === filter.status);
    }
    return filter.limit !== undefined ? keys.slice(0, filter.limit) : keys;
  }

  async updateKey(id: string, patch: KeyPatch, actor: Actor, at: number): Promise<KeyRecord | undefined> {
    return this.#transaction(() => {
      const before = this.#getKeySync(id);
      if (!before) return undefined;
      const policy: KeyPolicy = {
        scopes: patch.scopes ?? before.policy.scopes,
        models: patch.models ?? before.policy.models,
        allowedIps: patch.allowedIps ?? before.policy.allowedIps,
        limits: { ...before.policy.limits, ...patch.limits },
        budget: { ...before.policy.budget, ...patch.budget },
      };
      this.#stmt(
        `UPDATE api_keys SET name = ?, expires_at = ?, scopes = ?, models = ?, allowed_ips = ?, rpm = ?, tpm = ?,
           concurrency = ?, budget_day = ?, budget_month = ?, updated_at = ? WHERE id = ?`,
      ).run(
        patch.name ?? before.name,
        patch.expiresAt === undefined ? before.expiresAt : patch.expiresAt,
        ...policyColumns(policy),
        at,
        id,
      );
      const after = this.#getKeySync(id);
      if (!after) return undefined;
      const changes = diff(keyFields(before), keyFields(after));
      if (Object.keys(changes).length > 0) {
        this.#changed(id, 'updated', at);
        this.#audit({
          at,
          workspaceId: after.workspaceId,
          actor,
          action: 'key.update',
          targetType: 'key',
          targetId: id,
          changes,
        });
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
      this.#audit({
        at: input.at,
        workspaceId: before.workspaceId,
        actor,
        action: 'key.rotate',
        targetType: 'key',
        targetId: input.id,
        changes: {
          display: { before: `${before.start}…${before.last4}`, after: `${input.start}…${input.last4}` },
          previous_secret_valid_until: { after: input.graceUntil },
        },
      });
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
        this.#audit({
          at,
          workspaceId: key.workspaceId,
          actor,
          action: 'key.revoke',
          targetType: 'key',
          targetId: id,
          changes: { revoked_at: { before: null, after: at } },
        });
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
      this.#audit({
        at: input.createdAt,
        workspaceId: input.id,
        actor,
        action: 'workspace.create',
        targetType: 'workspace',
        targetId: input.id,
        changes: diff(undefined, workspaceFields(created)),
      });
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
      const budget = { ...before.policy.budget, ...patch.budget };
      this.#stmt(
        'UPDATE workspaces SET name = ?, max_key_lifetime_ms = ?, allowed_ips = ?, budget_day = ?, budget_month = ? WHERE id = ?',
      ).run(
        patch.name ?? before.name,
        patch.maxKeyLifetimeMs === undefined ? before.policy.maxKeyLifetimeMs : patch.maxKeyLifetimeMs,
        JSON.stringify(patch.allowedIps ?? before.policy.allowedIps),
        budget.day,
        budget.month,
        id,
      );
      const after = this.#getWorkspaceSync(id);
      if (!after) return undefined;
      const changes = diff(workspaceFields(before), workspaceFields(after));
      if (Object.keys(changes).length > 0) {
        this.#changed(id, 'workspace', at);
        this.#audit({
          at,
          workspaceId: id,
          actor,
          action: 'workspace.update',
          targetType: 'workspace',
          targetId: id,
          changes,
        });
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
      this.#audit({
        at: user.createdAt,
        workspaceId: null,
        actor,
        action: 'user.create',
        targetType: 'user',
        targetId: user.id,
        changes: { email: { after: user.email } },
      });
      return { id: user.id, email: user.email, createdAt: user.createdAt, disabledAt: null };
    });
  }

  async getUser(idOrEmail: string): Promise<UserCredentials | undefined> {
    const row = this.#stmt('SELECT * FROM users WHERE id = ? OR email = lower(?)').get(
      idOrEmail,
      idOrEmail,
    ) as Row | undefined;
    if (!row) return undefined;
    return {
      id: String(row.id),
      email: String(row.email),
      createdAt: Number(row.created_at),
      disabledAt: num(row.disabled_at),
      passwordHash: String(row.password_hash),
      totpSecret: str(row.totp_secret),
      totpEnabledAt: num(row.totp_enabled_at),
      recoveryCodes: strings(row.recovery_codes),
    };
  }

  async updateCredentials(
    userId: string,
    patch: CredentialsPatch,
    action: string,
    actor: Actor,
    at: number,
  ): Promise<boolean> {
    const sets: string[] = [];
    const params: SQLInputValue[] = [];
    const changed: Changes = {};
    const set = (column: string, value: SQLInputValue) => {
      sets.push(`${column} = ?`);
      params.push(value);
      // The audit names what changed, never a hash or secret.
      changed[column] = { after: value === null ? null : 'set' };
    };
    if (patch.passwordHash !== undefined) set('password_hash', patch.passwordHash);
    if (patch.totpSecret !== undefined) set('totp_secret', patch.totpSecret);
    if (patch.totpEnabledAt !== undefined) set('totp_enabled_at', patch.totpEnabledAt);
    if (patch.recoveryCodes !== undefined) set('recovery_codes', JSON.stringify(patch.recoveryCodes));
    return this.#transaction(() => {
      const found =
        sets.length === 0
          ? this.#stmt('SELECT 1 FROM users WHERE id = ?').get(userId) !== undefined
          : Number(
              this.#db.prepare(`UPDATE users SET ${sets.join(', ')} WHERE id = ?`).run(...params, userId)
                .changes,
            ) > 0;
      if (!found) return false;
      this.#audit({
        at,
        workspaceId: null,
        actor,
        action,
        targetType: 'user',
        targetId: userId,
        changes: changed,
      });
      return true;
    });
  }

  async createSession(session: SessionRecord): Promise<void> {
    this.#stmt(
      `INSERT INTO sessions (id, user_id, created_at, expires_at, last_seen_at, revoked_at, ip, user_agent)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      session.id,
      session.userId,
      session.createdAt,
      session.expiresAt,
      session.lastSeenAt,
      session.revokedAt,
      session.ip,
      session.userAgent,
    );
  }

  async getSession(id: string): Promise<SessionRecord | undefined> {
    const row = this.#stmt('SELECT * FROM sessions WHERE id = ?').get(id) as Row | undefined;
    if (!row) return undefined;
    return {
      id: String(row.id),
      userId: String(row.user_id),
      createdAt: Number(row.created_at),
      expiresAt: Number(row.expires_at),
      lastSeenAt: Number(row.last_seen_at),
      revokedAt: num(row.revoked_at),
      ip: str(row.ip),
      userAgent: str(row.user_agent),
    };
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
      ).run(
        invite.id,
        invite.tokenHash,
        invite.workspaceId,
        invite.email,
        invite.role,
        invite.createdBy,
        invite.createdAt,
        invite.expiresAt,
      );
      this.#audit({
        at: invite.createdAt,
        workspaceId: invite.workspaceId,
        actor,
        action: 'invite.create',
        targetType: 'invite',
        targetId: invite.id,
        changes: { email: { after: invite.email }, role: { after: invite.role } },
      });
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
        this.#audit({
          at,
          workspaceId,
          actor,
          action: 'member.add',
          targetType: 'membership',
          targetId: userId,
          changes: { role: { after: role } },
        });
      }
      this.#audit({
        at,
        workspaceId,
        actor,
        action: 'invite.accept',
        targetType: 'invite',
        targetId: id,
        changes: { user_id: { after: userId } },
      });
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
      this.#audit({
        at,
        workspaceId,
        actor,
        action: 'invite.revoke',
        targetType: 'invite',
        targetId: id,
        changes: {},
      });
      return true;
    });
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
    ).map((row) => ({
      id: String(row.id),
      email: String(row.email),
      createdAt: Number(row.created_at),
      disabledAt: num(row.disabled_at),
    }));
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
        this.#audit({
          at,
          workspaceId,
          actor,
          action: before ? 'member.role' : 'member.add',
          targetType: 'membership',
          targetId: userId,
          changes: { role: before ? { before: before.role, after: role } : { after: role } },
        });
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

  async removeMembership(workspaceId: string, userId: string, actor: Actor, at: number): Promise<boolean> {
    return this.#transaction(() => {
      const before = this.#membership(workspaceId, userId);
      if (!before) return false;
      if (before.role === 'owner') this.#assertAnotherOwner(workspaceId, userId);
      this.#stmt('DELETE FROM memberships WHERE workspace_id = ? AND user_id = ?').run(workspaceId, userId);
      this.#audit({
        at,
        workspaceId,
        actor,
        action: 'member.remove',
        targetType: 'membership',
        targetId: userId,
        changes: { role: { before: before.role } },
      });
      return true;
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
        this.#audit({
          at: Number(row.expires_at),
          workspaceId: String(row.workspace_id),
          actor: { type: 'system', id: null, ip: null },
          action: 'key.expire',
          targetType: 'key',
          targetId: String(row.id),
          changes: { status: { before: 'active', after: 'expired' } },
        });
      }
      return rows.map((row) => String(row.id));
    });
  }

  async recordExpiryReminders(now: number, thresholdsMs: readonly number[]): Promise<ExpiryReminder[]> {
    return this.#transaction(() => {
      const reminders: ExpiryReminder[] = [];
      // Smallest threshold first: a key already inside 3 days gets the 3-day reminder, not the 14-day one.
      for (const threshold of [...thresholdsMs].sort((a, b) => a - b)) {
        const rows = this.#stmt(
          `SELECT k.id, k.name, k.workspace_id, k.expires_at FROM api_keys k
           WHERE k.revoked_at IS NULL AND k.expires_at > ? AND k.expires_at <= ?
             AND NOT EXISTS (SELECT 1 FROM key_expiry_reminders r
                             WHERE r.key_id = k.id AND r.expires_at = k.expires_at AND r.threshold_ms <= ?)`,
        ).all(now, now + threshold, threshold) as Row[];
        for (const row of rows) {
          const reminder: ExpiryReminder = {
            keyId: String(row.id),
            name: String(row.name),
            workspaceId: String(row.workspace_id),
            expiresAt: Number(row.expires_at),
            thresholdMs: threshold,
          };
          this.#stmt(
            'INSERT INTO key_expiry_reminders (key_id, expires_at, threshold_ms, at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING',
          ).run(reminder.keyId, reminder.expiresAt, threshold, now);
          this.#audit({
            at: now,
            workspaceId: reminder.workspaceId,
            actor: { type: 'system', id: null, ip: null },
            action: 'key.expiry_reminder',
            targetType: 'key',
            targetId: reminder.keyId,
            changes: { expires_at: { after: reminder.expiresAt } },
          });
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
      ).run(
        alert.id,
        alert.workspaceId,
        alert.kind,
        alert.fingerprint,
        alert.keyId,
        alert.severity,
        alert.title,
        alert.message,
        JSON.stringify(alert.details),
        alert.at,
        alert.at,
      );
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
      this.#audit({
        at,
        workspaceId: before.workspaceId,
        actor,
        action: 'alert.acknowledge',
        targetType: 'alert',
        targetId: id,
        changes: { acknowledged_at: { before: null, after: at } },
      });
      return this.#alert(id);
    });
  }

  async createChannel(channel: AlertChannel, actor: Actor): Promise<AlertChannel> {
    return this.#transaction(() => {
      this.#stmt(
        'INSERT INTO alert_channels (id, workspace_id, type, name, config_sealed, created_at) VALUES (?, ?, ?, ?, ?, ?)',
      ).run(
        channel.id,
        channel.workspaceId,
        channel.type,
        channel.name,
        channel.configSealed,
        channel.createdAt,
      );
      this.#audit({
        at: channel.createdAt,
        workspaceId: channel.workspaceId,
        actor,
        action: 'channel.create',
        targetType: 'channel',
        targetId: channel.id,
        changes: { type: { after: channel.type }, name: { after: channel.name } },
      });
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
      this.#audit({
        at,
        workspaceId: String(row.workspace_id),
        actor,
        action: 'channel.delete',
        targetType: 'channel',
        targetId: id,
        changes: { type: { before: String(row.type) }, name: { before: String(row.name) } },
      });
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
    return rows.map((row) => ({
      alertId: String(row.alert_id),
      channelId: String(row.channel_id),
      attempt: Number(row.attempt),
      outcome: String(row.outcome) as AlertDelivery['outcome'],
      status: num(row.status),
      error: str(row.error),
      at: Number(row.at),
    }));
  }

  async ruleSettings(workspaceId: string): Promise<Record<string, Record<string, unknown>>> {
    const rows = this.#stmt('SELECT kind, settings FROM alert_rule_settings WHERE workspace_id = ?').all(
      workspaceId,
    ) as Row[];
    const out: Record<string, Record<string, unknown>> = {};
    for (const row of rows)
      out[String(row.kind)] = JSON.parse(String(row.settings)) as Record<string, unknown>;
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
      this.#audit({
        at,
        workspaceId,
        actor,
        action: 'alert_rule.update',
        targetType: 'workspace',
        targetId: workspaceId,
        changes: { [kind]: { before: before ? JSON.parse(String(before.settings)) : null, after: settings } },
      });
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
    const report = await this.usageReport({ by: 'hour', keyId, from: since });
    return report.rows.map((row) => ({
      hour: Number(row.group),
      requests: row.requests,
      tokens: row.totalTokens,
    }));
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
    return rows.map((row) => ({
      seq: Number(row.seq),
      id: String(row.id),
      at: Number(row.at),
      workspaceId: str(row.workspace_id),
      actor: { type: String(row.actor_type) as Actor['type'], id: str(row.actor_id), ip: str(row.actor_ip) },
      action: String(row.action),
      targetType: String(row.target_type) as AuditEvent['targetType'],
      targetId: str(row.target_id),
      changes: JSON.parse(String(row.changes)) as Changes,
    }));
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
    try {
      return work();
    } finally {
      this.#db.exec('COMMIT');
    }
  }

  async recordUsage(records: readonly UsageRecord[]): Promise<void> {
    if (records.length === 0) return;
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
        const inserted = insert.run(
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
          r.tokensEstimated ? 1 : 0,
        );
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
    const report = await this.usageReport({ by: 'key', keyId: filter.keyId, from: filter.since });
    const totals: UsageTotals[] = [];
    for (const row of report.rows) {
      if (row.group === null) continue;
      totals.push({
        keyId: String(row.group),
        name: row.name,
        requests: row.requests,
        errors: row.errors,
        promptTokens: row.promptTokens,
        completionTokens: row.completionTokens,
        totalTokens: row.totalTokens,
      });
    }
    return totals;
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
            const cell = addSums(cells, row);
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
        for (const row of found) {
          const cell = addSums(cells, row);
          LATENCY_COLUMNS.forEach((c, i) => {
            cell.histogram[i] = (cell.histogram[i] ?? 0) + Number(row[c]);
          });
        }
      }
      const folded = foldUsage(cells.values(), query.by, pricing);
      if (query.by === 'key' || query.by === 'workspace') {
        const ids = folded.flatMap((r) => (r.group === null ? [] : [String(r.group)]));
        const table = query.by === 'key' ? 'api_keys' : 'workspaces';
        const names = new Map(
          (
            this.#stmt(`SELECT id, name FROM ${table} WHERE id IN (SELECT value FROM json_each(?))`).all(
              JSON.stringify(ids),
            ) as Row[]
          ).map((r) => [String(r.id), String(r.name)]),
        );
        for (const row of folded)
          row.name = row.group === null ? null : (names.get(String(row.group)) ?? null);
      }
      return folded;
    });
    return {
      by: query.by,
      from: query.from ?? null,
      to: query.to ?? null,
      currency: pricing.currency,
      rows,
    };
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
    if (this.#db.isOpen) this.#db.close();
  }
}
