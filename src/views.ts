/**
 * The public JSON views of keys, workspaces, audit events and usage: what `keygate … --json` prints
 * and what the management API returns, from one definition so the two always agree. Never a secret.
 */
import { formatMs } from './keys/service.ts';
import { changesView } from './store/audit.ts';
import {
  type AuditEvent,
  type KeyRecord,
  keyStatus,
  type Membership,
  type TokenBudget,
  type UsageGroup,
  type UsageReport,
  type UsageReportRow,
  type Workspace,
} from './store/types.ts';

export function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function budgetView(budget: TokenBudget) {
  return { tokens_per_day: budget.day, tokens_per_month: budget.month };
}

/** The public view of a key: everything but the secret (which is never stored anyway). */
export function keyView(key: KeyRecord, now = Date.now()) {
  return {
    id: key.id,
    name: key.name,
    workspace_id: key.workspaceId,
    display: `${key.start}…${key.last4}`,
    status: keyStatus(key, now),
    scopes: key.policy.scopes,
    models: key.policy.models,
    allowed_ips: key.policy.allowedIps,
    limits: {
      requests_per_minute: key.policy.limits.rpm,
      tokens_per_minute: key.policy.limits.tpm,
      concurrent_requests: key.policy.limits.concurrency,
    },
    budget: budgetView(key.policy.budget),
    created_at: iso(key.createdAt),
    created_by: key.createdBy,
    updated_at: iso(key.updatedAt),
    rotated_at: iso(key.rotatedAt),
    expires_at: iso(key.expiresAt),
    revoked_at: iso(key.revokedAt),
    last_used_at: iso(key.lastUsedAt),
    last_used_ip: key.lastUsedIp,
  };
}

export type KeyView = ReturnType<typeof keyView>;

export function workspaceView(ws: Workspace) {
  return {
    id: ws.id,
    name: ws.name,
    created_at: iso(ws.createdAt),
    policy: {
      max_key_lifetime: ws.policy.maxKeyLifetimeMs === null ? null : formatMs(ws.policy.maxKeyLifetimeMs),
      allowed_ips: ws.policy.allowedIps,
      budget: { tokens_per_day: ws.policy.budget.day, tokens_per_month: ws.policy.budget.month },
    },
  };
}

export function auditView(event: AuditEvent & { seq: number }) {
  return {
    id: event.id,
    seq: event.seq,
    at: new Date(event.at).toISOString(),
    workspace_id: event.workspaceId,
    actor: { type: event.actor.type, id: event.actor.id, ip: event.actor.ip },
    action: event.action,
    target: { type: event.targetType, id: event.targetId },
    changes: changesView(event.changes),
  };
}

/** The field that names a report row's group, by grouping. */
const GROUP_FIELD = {
  key: 'key_id',
  model: 'model',
  endpoint: 'endpoint',
  workspace: 'workspace_id',
  hour: 'hour',
  day: 'day',
} as const satisfies Record<UsageGroup, string>;

/**
 * One row of a usage report. Its first field is the group: `key_id` (with `name`), `model`,
 * `endpoint`, `workspace_id` (with `name`), `hour` (ISO start) or `day` (YYYY-MM-DD, UTC).
 */
export interface UsageRowView {
  key_id?: string | null;
  model?: string | null;
  endpoint?: string | null;
  workspace_id?: string | null;
  hour?: string;
  day?: string;
  name?: string | null;
  requests: number;
  errors: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  estimated_requests: number;
  latency_avg_ms: number | null;
  latency_p50_ms: number | null;
  latency_p95_ms: number | null;
  cost: number | null;
  currency: string;
}

export function usageRowView(row: UsageReportRow, by: UsageGroup, currency: string): UsageRowView {
  const view: Partial<UsageRowView> = {};
  if (by === 'hour') view.hour = new Date(Number(row.group)).toISOString();
  else if (by === 'day') view.day = new Date(Number(row.group)).toISOString().slice(0, 10);
  else view[GROUP_FIELD[by]] = row.group === null ? null : String(row.group);
  if (by === 'key' || by === 'workspace') view.name = row.name;
  return {
    ...view,
    requests: row.requests,
    errors: row.errors,
    prompt_tokens: row.promptTokens,
    completion_tokens: row.completionTokens,
    total_tokens: row.totalTokens,
    estimated_requests: row.estimatedRequests,
    latency_avg_ms: row.latencyAvgMs,
    latency_p50_ms: row.latencyP50Ms,
    latency_p95_ms: row.latencyP95Ms,
    cost: row.cost,
    currency,
  };
}

export function usageReportView(report: UsageReport) {
  return {
    by: report.by,
    from: iso(report.from),
    to: iso(report.to),
    currency: report.currency,
    data: report.rows.map((row) => usageRowView(row, report.by, report.currency)),
  };
}

export type UsageReportView = ReturnType<typeof usageReportView>;

export function memberView(member: Membership) {
  return { user_id: member.userId, email: member.email, role: member.role, since: iso(member.createdAt) };
}
