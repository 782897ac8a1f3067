/**
 * Rows and records, the same in both stores: the column lists both select, rows read back as
 * records (SQLite gives JSON columns as text, pg parses JSONB: both are read), and records
 * written as statement parameters in column order.
 */
import { newId } from '../util/ids.ts';
import {
  type Actor,
  type Alert,
  type AlertChannel,
  type AlertDelivery,
  type AlertKind,
  type AuditEvent,
  type Changes,
  type ChannelType,
  type CredentialsPatch,
  type ExpiryReminder,
  type Invite,
  type KeyFilter,
  type KeyPatch,
  type KeyPolicy,
  type KeyRecord,
  keyStatus,
  type Membership,
  type NewAlert,
  type NewKey,
  type Role,
  type Scope,
  type SessionRecord,
  type Severity,
  type UsageRecord,
  type User,
  type UserCredentials,
  type Workspace,
  type WorkspacePatch,
  type WorkspacePolicy,
} from './types.ts';

/** A result row, by column name. */
export type Row = Record<string, unknown>;

/** A statement parameter as both stores bind it. */
export type Param = string | number | null;

export const KEY_COLUMNS = `k.id, k.workspace_id, k.name, k.start, k.last4, k.created_at, k.created_by, k.updated_at,
  k.rotated_at, k.expires_at, k.revoked_at, k.last_used_at, k.last_used_ip, k.scopes, k.models, k.allowed_ips, k.rpm,
  k.tpm, k.concurrency, k.budget_day, k.budget_month, w.max_key_lifetime_ms AS ws_max_key_lifetime_ms,
  w.allowed_ips AS ws_allowed_ips, w.budget_day AS ws_budget_day, w.budget_month AS ws_budget_month`;
export const KEY_FROM = 'api_keys k JOIN workspaces w ON w.id = k.workspace_id';
export const WORKSPACE_COLUMNS =
  'id, name, created_at, max_key_lifetime_ms, allowed_ips, budget_day, budget_month';
export const MEMBERSHIP_COLUMNS = 'm.workspace_id, m.user_id, u.email, m.role, m.created_at';

export function num(value: unknown): number | null {
  return value === null || value === undefined ? null : Number(value);
}

export function str(value: unknown): string | null {
  return value === null || value === undefined ? null : String(value);
}

/** A JSON array column: JSONB parsed by pg, or JSON text. */
export function strings(value: unknown): string[] {
  const parsed = typeof value === 'string' ? (JSON.parse(value) as unknown) : value;
  return Array.isArray(parsed) ? parsed.map(String) : [];
}

/** A JSON object column: JSONB parsed by pg, or JSON text. */
export function object<T>(value: unknown): T {
  return (typeof value === 'string' ? JSON.parse(value) : value) as T;
}

function workspacePolicy(row: Row, prefix = ''): WorkspacePolicy {
  return {
    maxKeyLifetimeMs: num(row[`${prefix}max_key_lifetime_ms`]),
    allowedIps: strings(row[`${prefix}allowed_ips`]),
    budget: { day: num(row[`${prefix}budget_day`]), month: num(row[`${prefix}budget_month`]) },
  };
}

/** A key from a row of `KEY_COLUMNS`. */
export function toKey(row: Row): KeyRecord {
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

/** A workspace from a row of `WORKSPACE_COLUMNS`. */
export function toWorkspace(row: Row): Workspace {
  return {
    id: String(row.id),
    name: String(row.name),
    createdAt: Number(row.created_at),
    policy: workspacePolicy(row),
  };
}

export function toAlert(row: Row): Alert {
  return {
    id: String(row.id),
    workspaceId: String(row.workspace_id),
    kind: String(row.kind) as AlertKind,
    fingerprint: String(row.fingerprint),
    keyId: str(row.key_id),
    severity: String(row.severity) as Severity,
    title: String(row.title),
    message: String(row.message),
    details: object<Record<string, unknown>>(row.details),
    firstAt: Number(row.first_at),
    lastAt: Number(row.last_at),
    occurrences: Number(row.occurrences),
    acknowledgedAt: num(row.acknowledged_at),
    acknowledgedBy: str(row.acknowledged_by),
  };
}

export function toChannel(row: Row): AlertChannel {
  return {
    id: String(row.id),
    workspaceId: String(row.workspace_id),
    type: String(row.type) as ChannelType,
    name: String(row.name),
    configSealed: String(row.config_sealed),
    createdAt: Number(row.created_at),
  };
}

export function toDelivery(row: Row): AlertDelivery {
  return {
    alertId: String(row.alert_id),
    channelId: String(row.channel_id),
    attempt: Number(row.attempt),
    outcome: String(row.outcome) as AlertDelivery['outcome'],
    status: num(row.status),
    error: str(row.error),
    at: Number(row.at),
  };
}

export function toInvite(row: Row): Invite {
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

/** A membership from a row of `MEMBERSHIP_COLUMNS`. */
export function toMembership(row: Row): Membership {
  return {
    workspaceId: String(row.workspace_id),
    userId: String(row.user_id),
    email: String(row.email),
    role: String(row.role) as Role,
    createdAt: Number(row.created_at),
  };
}

export function toUser(row: Row): User {
  return {
    id: String(row.id),
    email: String(row.email),
    createdAt: Number(row.created_at),
    disabledAt: num(row.disabled_at),
  };
}

export function toCredentials(row: Row): UserCredentials {
  return {
    ...toUser(row),
    passwordHash: String(row.password_hash),
    totpSecret: str(row.totp_secret),
    totpEnabledAt: num(row.totp_enabled_at),
    recoveryCodes: strings(row.recovery_codes),
  };
}

export function toSession(row: Row): SessionRecord {
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

export function toAuditEvent(row: Row): AuditEvent & { seq: number } {
  return {
    seq: Number(row.seq),
    id: String(row.id),
    at: Number(row.at),
    workspaceId: str(row.workspace_id),
    actor: { type: String(row.actor_type) as Actor['type'], id: str(row.actor_id), ip: str(row.actor_ip) },
    action: String(row.action),
    targetType: String(row.target_type) as AuditEvent['targetType'],
    targetId: str(row.target_id),
    changes: object<Changes>(row.changes),
  };
}

/** An expiry reminder due for a key (a row of `id, name, workspace_id, expires_at`) at a threshold. */
export function toReminder(row: Row, thresholdMs: number): ExpiryReminder {
  return {
    keyId: String(row.id),
    name: String(row.name),
    workspaceId: String(row.workspace_id),
    expiresAt: Number(row.expires_at),
    thresholdMs,
  };
}

/**
 * Whether a key crossed an expiry threshold after its expiry was set (`expiry_set_at`: its
 * creation or last update), rather than being set inside it already: only a crossing reminds.
 */
export function crossedSince(row: Row, thresholdMs: number): boolean {
  return Number(row.expires_at) - thresholdMs >= Number(row.expiry_set_at);
}

/** The part of a key filter applied to the keys read (their status, how many). */
export function filterKeys(keys: KeyRecord[], filter: KeyFilter): KeyRecord[] {
  let out = keys;
  if (filter.status !== undefined) {
    const now = Date.now();
    out = out.filter((k) => keyStatus(k, now) === filter.status);
  }
  return filter.limit !== undefined ? out.slice(0, filter.limit) : out;
}

/** A key policy as the values of `scopes, models, allowed_ips, rpm, tpm, concurrency, budget_day, budget_month`. */
export function policyParams(policy: KeyPolicy): Param[] {
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

/**
 * An audit event (given a new id) as the values of `id, at, workspace_id, actor_type, actor_id,
 * actor_ip, action, target_type, target_id, changes`.
 */
export function auditParams(event: Omit<AuditEvent, 'id'>): Param[] {
  return [
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
  ];
}

/**
 * A usage record as the values of `id, time, key_id, workspace_id, model, endpoint, status,
 * prompt_tokens, completion_tokens, total_tokens, latency_ms, ttft_ms, client_ip, tokens_estimated`.
 */
export function usageParams(r: UsageRecord): Param[] {
  return [
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
  ];
}

/**
 * The user columns a credentials patch sets (in order, with their values) and what the audit log
 * says of them: that a column was set or cleared, never a hash or secret.
 */
export function credentialColumns(patch: CredentialsPatch): {
  columns: string[];
  values: Param[];
  changes: Changes;
} {
  const columns: string[] = [];
  const values: Param[] = [];
  const changes: Changes = {};
  const set = (column: string, value: Param) => {
    columns.push(column);
    values.push(value);
    changes[column] = { after: value === null ? null : 'set' };
  };
  if (patch.passwordHash !== undefined) set('password_hash', patch.passwordHash);
  if (patch.totpSecret !== undefined) set('totp_secret', patch.totpSecret);
  if (patch.totpEnabledAt !== undefined) set('totp_enabled_at', patch.totpEnabledAt);
  if (patch.recoveryCodes !== undefined) set('recovery_codes', JSON.stringify(patch.recoveryCodes));
  return { columns, values, changes };
}

/**
 * A new key as the values of `id, workspace_id, name, start, last4, created_at, created_by,
 * expires_at, scopes, models, allowed_ips, rpm, tpm, concurrency, budget_day, budget_month`.
 */
export function newKeyParams(key: NewKey): Param[] {
  return [
    key.id,
    key.workspaceId,
    key.name,
    key.start,
    key.last4,
    key.createdAt,
    key.createdBy,
    key.expiresAt,
    ...policyParams(key.policy),
  ];
}

/**
 * A key patched, as the values of `name, expires_at, scopes, models, allowed_ips, rpm, tpm,
 * concurrency, budget_day, budget_month`: what the patch leaves out stays as it was.
 */
export function keyPatchParams(before: KeyRecord, patch: KeyPatch): Param[] {
  const policy: KeyPolicy = {
    scopes: patch.scopes ?? before.policy.scopes,
    models: patch.models ?? before.policy.models,
    allowedIps: patch.allowedIps ?? before.policy.allowedIps,
    limits: { ...before.policy.limits, ...patch.limits },
    budget: { ...before.policy.budget, ...patch.budget },
  };
  return [
    patch.name ?? before.name,
    patch.expiresAt === undefined ? before.expiresAt : patch.expiresAt,
    ...policyParams(policy),
  ];
}

/**
 * A workspace patched, as the values of `name, max_key_lifetime_ms, allowed_ips, budget_day,
 * budget_month`: what the patch leaves out stays as it was.
 */
export function workspacePatchParams(before: Workspace, patch: WorkspacePatch): Param[] {
  const budget = { ...before.policy.budget, ...patch.budget };
  return [
    patch.name ?? before.name,
    patch.maxKeyLifetimeMs === undefined ? before.policy.maxKeyLifetimeMs : patch.maxKeyLifetimeMs,
    JSON.stringify(patch.allowedIps ?? before.policy.allowedIps),
    budget.day,
    budget.month,
  ];
}

/** A session as the values of `id, user_id, created_at, expires_at, last_seen_at, revoked_at, ip, user_agent`. */
export function sessionParams(session: SessionRecord): Param[] {
  return [
    session.id,
    session.userId,
    session.createdAt,
    session.expiresAt,
    session.lastSeenAt,
    session.revokedAt,
    session.ip,
    session.userAgent,
  ];
}

/** An invite as the values of `id, token_hash, workspace_id, email, role, created_by, created_at, expires_at`. */
export function inviteParams(invite: Invite & { tokenHash: string }): Param[] {
  return [
    invite.id,
    invite.tokenHash,
    invite.workspaceId,
    invite.email,
    invite.role,
    invite.createdBy,
    invite.createdAt,
    invite.expiresAt,
  ];
}

/**
 * A new alert as the values of `id, workspace_id, kind, fingerprint, key_id, severity, title,
 * message, details, first_at, last_at` (first and last at its time).
 */
export function newAlertParams(alert: NewAlert): Param[] {
  return [
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
  ];
}

/** A channel as the values of `id, workspace_id, type, name, config_sealed, created_at`. */
export function channelParams(channel: AlertChannel): Param[] {
  return [
    channel.id,
    channel.workspaceId,
    channel.type,
    channel.name,
    channel.configSealed,
    channel.createdAt,
  ];
}
