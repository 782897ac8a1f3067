/**
 * Public JSON views. Keys use the CLI's `keyView` so that `keygate keys show --json` and the API
 * agree; workspaces and audit events mirror the CLI's views of them (src/cli/admin.ts).
 */
import { iso } from '../../cli/format.ts';
import { formatMs } from '../../keys/service.ts';
import type { AuditEvent, UsageTotals, Workspace } from '../../store/types.ts';

export { keyView } from '../../cli/format.ts';

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
