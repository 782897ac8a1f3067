/**
 * What the audit log says, the same in both stores: the fields of a key or a workspace that can
 * change, what changed between two views, and the event each change of the store records.
 */
import type {
  Actor,
  Alert,
  AlertChannel,
  AlertKind,
  AuditEvent,
  Changes,
  ExpiryReminder,
  Invite,
  KeyRecord,
  Role,
  RotateInput,
  User,
  Workspace,
} from './types.ts';

/**
 * The changes of an event as they are shown (CLI, management API, console): a time is stored as
 * epoch milliseconds, like every time in the store, and shown as ISO 8601, like the event's own
 * `at` and every time of the other views. The fields that hold a time are named `…_at` or
 * `…_until` (`expires_at`, `revoked_at`, `previous_secret_valid_until`, `acknowledged_at`).
 */
export function changesView(changes: Changes): Changes {
  const view: Changes = {};
  for (const [field, change] of Object.entries(changes)) {
    if (!/(?:_at|_until)$/.test(field)) {
      view[field] = change;
      continue;
    }
    const shown: Changes[string] = {};
    for (const side of ['before', 'after'] as const) {
      if (!(side in change)) continue;
      const value = change[side];
      shown[side] =
        typeof value === 'number' && Number.isFinite(value) ? new Date(value).toISOString() : value;
    }
    view[field] = shown;
  }
  return view;
}

/** An audit event before the store gives it an id. */
export type AuditEntry = Omit<AuditEvent, 'id'>;

const SYSTEM: Actor = { type: 'system', id: null, ip: null };

/** The audit view of a key: every field that can change, flattened, never a secret. */
export function keyFields(key: KeyRecord): Record<string, unknown> {
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

/** The audit view of a workspace: every field that can change. */
export function workspaceFields(ws: Workspace): Record<string, unknown> {
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

/** What changed in a key between two views of it. */
export function keyChanges(before: KeyRecord, after: KeyRecord): Changes {
  return diff(keyFields(before), keyFields(after));
}

/** What changed in a workspace between two views of it. */
export function workspaceChanges(before: Workspace, after: Workspace): Changes {
  return diff(workspaceFields(before), workspaceFields(after));
}

export function keyCreated(key: KeyRecord, actor: Actor): AuditEntry {
  return {
    at: key.createdAt,
    workspaceId: key.workspaceId,
    actor,
    action: 'key.create',
    targetType: 'key',
    targetId: key.id,
    changes: diff(undefined, keyFields(key)),
  };
}

export function keyUpdated(key: KeyRecord, changes: Changes, actor: Actor, at: number): AuditEntry {
  return {
    at,
    workspaceId: key.workspaceId,
    actor,
    action: 'key.update',
    targetType: 'key',
    targetId: key.id,
    changes,
  };
}

export function keyRotated(before: KeyRecord, input: RotateInput, actor: Actor): AuditEntry {
  return {
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
  };
}

export function keyRevoked(key: KeyRecord, actor: Actor, at: number): AuditEntry {
  return {
    at,
    workspaceId: key.workspaceId,
    actor,
    action: 'key.revoke',
    targetType: 'key',
    targetId: key.id,
    changes: { revoked_at: { before: null, after: at } },
  };
}

/** A key past its expiry, recorded by the system at the time it expired. */
export function keyExpired(keyId: string, workspaceId: string, expiresAt: number): AuditEntry {
  return {
    at: expiresAt,
    workspaceId,
    actor: SYSTEM,
    action: 'key.expire',
    targetType: 'key',
    targetId: keyId,
    changes: { status: { before: 'active', after: 'expired' } },
  };
}

export function expiryReminded(reminder: ExpiryReminder, now: number): AuditEntry {
  return {
    at: now,
    workspaceId: reminder.workspaceId,
    actor: SYSTEM,
    action: 'key.expiry_reminder',
    targetType: 'key',
    targetId: reminder.keyId,
    changes: { expires_at: { after: reminder.expiresAt } },
  };
}

export function workspaceCreated(ws: Workspace, actor: Actor): AuditEntry {
  return {
    at: ws.createdAt,
    workspaceId: ws.id,
    actor,
    action: 'workspace.create',
    targetType: 'workspace',
    targetId: ws.id,
    changes: diff(undefined, workspaceFields(ws)),
  };
}

export function workspaceUpdated(id: string, changes: Changes, actor: Actor, at: number): AuditEntry {
  return {
    at,
    workspaceId: id,
    actor,
    action: 'workspace.update',
    targetType: 'workspace',
    targetId: id,
    changes,
  };
}

export function userCreated(user: User, actor: Actor): AuditEntry {
  return {
    at: user.createdAt,
    workspaceId: null,
    actor,
    action: 'user.create',
    targetType: 'user',
    targetId: user.id,
    changes: { email: { after: user.email } },
  };
}

/** A change of a user's credentials (`action` names which), with what `credentialColumns` says of it. */
export function credentialsChanged(
  userId: string,
  action: string,
  changes: Changes,
  actor: Actor,
  at: number,
): AuditEntry {
  return { at, workspaceId: null, actor, action, targetType: 'user', targetId: userId, changes };
}

export function inviteCreated(invite: Invite, actor: Actor): AuditEntry {
  return {
    at: invite.createdAt,
    workspaceId: invite.workspaceId,
    actor,
    action: 'invite.create',
    targetType: 'invite',
    targetId: invite.id,
    changes: { email: { after: invite.email }, role: { after: invite.role } },
  };
}

export function inviteAccepted(
  workspaceId: string,
  id: string,
  userId: string,
  actor: Actor,
  at: number,
): AuditEntry {
  return {
    at,
    workspaceId,
    actor,
    action: 'invite.accept',
    targetType: 'invite',
    targetId: id,
    changes: { user_id: { after: userId } },
  };
}

export function inviteRevoked(workspaceId: string, id: string, actor: Actor, at: number): AuditEntry {
  return { at, workspaceId, actor, action: 'invite.revoke', targetType: 'invite', targetId: id, changes: {} };
}

/** A member added (no role `before`) or given another role. */
export function membershipSet(
  workspaceId: string,
  userId: string,
  before: Role | undefined,
  role: Role,
  actor: Actor,
  at: number,
): AuditEntry {
  return {
    at,
    workspaceId,
    actor,
    action: before ? 'member.role' : 'member.add',
    targetType: 'membership',
    targetId: userId,
    changes: { role: before ? { before, after: role } : { after: role } },
  };
}

export function membershipRemoved(
  workspaceId: string,
  userId: string,
  role: Role,
  actor: Actor,
  at: number,
): AuditEntry {
  return {
    at,
    workspaceId,
    actor,
    action: 'member.remove',
    targetType: 'membership',
    targetId: userId,
    changes: { role: { before: role } },
  };
}

export function alertAcknowledged(alert: Alert, actor: Actor, at: number): AuditEntry {
  return {
    at,
    workspaceId: alert.workspaceId,
    actor,
    action: 'alert.acknowledge',
    targetType: 'alert',
    targetId: alert.id,
    changes: { acknowledged_at: { before: null, after: at } },
  };
}

export function channelCreated(channel: AlertChannel, actor: Actor): AuditEntry {
  return {
    at: channel.createdAt,
    workspaceId: channel.workspaceId,
    actor,
    action: 'channel.create',
    targetType: 'channel',
    targetId: channel.id,
    changes: { type: { after: channel.type }, name: { after: channel.name } },
  };
}

export function channelDeleted(channel: AlertChannel, actor: Actor, at: number): AuditEntry {
  return {
    at,
    workspaceId: channel.workspaceId,
    actor,
    action: 'channel.delete',
    targetType: 'channel',
    targetId: channel.id,
    changes: { type: { before: channel.type }, name: { before: channel.name } },
  };
}

/** New settings of one alert rule (`before`: null where the rule had the defaults). */
export function ruleSettingsSet(
  workspaceId: string,
  kind: AlertKind,
  before: Record<string, unknown> | null,
  settings: Record<string, unknown>,
  actor: Actor,
  at: number,
): AuditEntry {
  return {
    at,
    workspaceId,
    actor,
    action: 'alert_rule.update',
    targetType: 'workspace',
    targetId: workspaceId,
    changes: { [kind]: { before, after: settings } },
  };
}
