/**
 * The public JSON views of keys, workspaces, audit events and usage: what `keygate … --json` prints
 * and what the management API returns, from one definition so the two always agree. Never a secret.
 */
import { formatMs } from './keys/service.ts';
import {
  type AuditEvent,
  type KeyRecord,
  keyStatus,
  type Membership,
  type TokenBudget,
  type UsageTotals,
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
    changes: event.changes,
  };
}

export function usageView(totals: UsageTotals) {
  return {
    key_id: totals.keyId,
    name: totals.name,
    requests: totals.requests,
    errors: totals.errors,
    prompt_tokens: totals.promptTokens,
    completion_tokens: totals.completionTokens,
    total_tokens: totals.totalTokens,
  };
}

export function memberView(member: Membership) {
  return { user_id: member.userId, email: member.email, role: member.role, since: iso(member.createdAt) };
}
