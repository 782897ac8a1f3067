/**
 * The store interface. The embedded SQLite store implements it now and a PostgreSQL store will
 * later, so it speaks in plain values: times are epoch milliseconds, ids are strings, and every
 * method is async even where SQLite could answer synchronously.
 */

import type { Pricing } from '../usage/pricing.ts';

export const DEFAULT_WORKSPACE_ID = 'ws_default';

/** Scopes for the public API: one per endpoint family. */
export const INFERENCE_SCOPES = ['chat', 'fim', 'embeddings', 'models'] as const;
/** Scopes for the management API; `admin` implies all of them. */
export const MANAGEMENT_SCOPES = [
  'admin',
  'keys:read',
  'keys:write',
  'usage:read',
  'audit:read',
  'workspaces:read',
  'workspaces:write',
  'metrics',
] as const;
export type InferenceScope = (typeof INFERENCE_SCOPES)[number];
export type ManagementScope = (typeof MANAGEMENT_SCOPES)[number];
export type Scope = InferenceScope | ManagementScope;
export const ALL_SCOPES: readonly Scope[] = [...INFERENCE_SCOPES, ...MANAGEMENT_SCOPES];

export function isScope(value: string): value is Scope {
  return (ALL_SCOPES as readonly string[]).includes(value);
}

/** Per-key rate limits; null means "no limit". */
export interface KeyLimits {
  /** Requests per minute. */
  rpm: number | null;
  /** Tokens per minute (prompt estimate + max_tokens reserved up front, settled after). */
  tpm: number | null;
  /** Requests in flight at once. */
  concurrency: number | null;
}

/** Token budgets per UTC day and per UTC calendar month; null means "no budget". */
export interface TokenBudget {
  day: number | null;
  month: number | null;
}

/** Everything that restricts what a key may do. */
export interface KeyPolicy {
  scopes: Scope[];
  /** Model ids or patterns (`mistral-small-*`); empty means every model. */
  models: string[];
  /** CIDR ranges; empty means the workspace default (and, if that is empty too, anywhere). */
  allowedIps: string[];
  limits: KeyLimits;
  budget: TokenBudget;
}

export const DEFAULT_KEY_POLICY: Readonly<KeyPolicy> = Object.freeze({
  scopes: [...INFERENCE_SCOPES],
  models: [],
  allowedIps: [],
  limits: { rpm: null, tpm: null, concurrency: null },
  budget: { day: null, month: null },
});

export interface WorkspacePolicy {
  /** Longest lifetime a new key may have; null means keys may live forever. */
  maxKeyLifetimeMs: number | null;
  /** IP allowlist for keys that have none of their own. */
  allowedIps: string[];
  /** Budget shared by all keys of the workspace. */
  budget: TokenBudget;
}

export interface Workspace {
  id: string;
  name: string;
  createdAt: number;
  policy: WorkspacePolicy;
}

export interface KeyRecord {
  id: string;
  workspaceId: string;
  name: string;
  /** Non-secret display prefix, e.g. `kg_AbCd`. */
  start: string;
  last4: string;
  createdAt: number;
  createdBy: string | null;
  updatedAt: number | null;
  rotatedAt: number | null;
  expiresAt: number | null;
  revokedAt: number | null;
  lastUsedAt: number | null;
  lastUsedIp: string | null;
  policy: KeyPolicy;
  /** The policy of the key's workspace, read with the key so the request path needs one lookup. */
  workspacePolicy: WorkspacePolicy;
}

/** A change refused because it would break an invariant (the message says which, for the user). */
export class StoreConflictError extends Error {
  override name = 'StoreConflictError';
}

export const ROLES = ['owner', 'admin', 'member', 'viewer'] as const;
export type Role = (typeof ROLES)[number];

export function isRole(value: string): value is Role {
  return (ROLES as readonly string[]).includes(value);
}

/**
 * What each role may do, as management scopes. A member manages keys (the management API limits
 * a member to the keys they created); a viewer only reads.
 */
export const ROLE_SCOPES: Readonly<Record<Role, readonly ManagementScope[]>> = {
  owner: ['admin'],
  admin: [
    'keys:read',
    'keys:write',
    'usage:read',
    'audit:read',
    'workspaces:read',
    'workspaces:write',
    'metrics',
  ],
  member: ['keys:read', 'keys:write', 'usage:read', 'workspaces:read'],
  viewer: ['keys:read', 'usage:read', 'audit:read', 'workspaces:read'],
};

export interface User {
  id: string;
  /** Lower-cased. */
  email: string;
  createdAt: number;
  disabledAt: number | null;
}

/** A user with what signing in needs: the password hash and the two-factor state. */
export interface UserCredentials extends User {
  passwordHash: string;
  /** The TOTP secret, sealed with the data key; set (pending) before two-factor sign-in is enabled. */
  totpSecret: string | null;
  /** When two-factor sign-in was switched on; null: off (a secret may be pending). */
  totpEnabledAt: number | null;
  /** SHA-256 hashes (hex) of the unused two-factor recovery codes. */
  recoveryCodes: string[];
}

/** A change to a user's credentials; fields left out stay as they are. */
export interface CredentialsPatch {
  passwordHash?: string;
  totpSecret?: string | null;
  totpEnabledAt?: number | null;
  recoveryCodes?: string[];
}

/** A console session. The browser holds a random token; the store keeps only its SHA-256 hash. */
export interface SessionRecord {
  /** SHA-256 (hex) of the session token. */
  id: string;
  userId: string;
  createdAt: number;
  expiresAt: number;
  lastSeenAt: number;
  revokedAt: number | null;
  ip: string | null;
  userAgent: string | null;
}

/** An invitation to join a workspace with a role, redeemed with a token shown once. */
export interface Invite {
  id: string;
  workspaceId: string;
  /** Lower-cased. */
  email: string;
  role: Role;
  createdBy: string | null;
  createdAt: number;
  expiresAt: number;
  acceptedAt: number | null;
  revokedAt: number | null;
}

export interface Membership {
  workspaceId: string;
  userId: string;
  email: string;
  role: Role;
  createdAt: number;
}

/** Who made a change, for the audit log. */
export interface Actor {
  type: 'user' | 'key' | 'cli' | 'system';
  /** User id, key id, or null (CLI, system). */
  id: string | null;
  ip: string | null;
}

export const CLI_ACTOR: Actor = Object.freeze({ type: 'cli', id: null, ip: null });

/** A field's value before and after a change (absent side: created or removed). */
export type Changes = Record<string, { before?: unknown; after?: unknown }>;

export interface AuditEvent {
  id: string;
  at: number;
  workspaceId: string | null;
  actor: Actor;
  action: string;
  targetType: 'key' | 'workspace' | 'user' | 'membership' | 'alert' | 'channel' | 'session' | 'invite';
  targetId: string | null;
  changes: Changes;
}

export interface AuditFilter {
  workspaceId?: string | undefined;
  /** With `workspaceId`: also the events of no workspace (users, sign-ins), for the operator. */
  withGlobal?: boolean | undefined;
  targetId?: string | undefined;
  action?: string | undefined;
  since?: number | undefined;
  /** Only events older than this sequence position (for paging backwards). */
  before?: number | undefined;
  limit?: number | undefined;
}

export interface KeyFilter {
  workspaceId?: string | undefined;
  status?: KeyStatus | undefined;
  /** Case-insensitive substring of the name, or an exact id or display prefix. */
  search?: string | undefined;
  /** Only keys created by this user (or key) id. */
  createdBy?: string | undefined;
  /** Only keys created after this key id in the listing order (cursor paging). */
  after?: string | undefined;
  limit?: number | undefined;
}

/** Fields of a key that can be changed after creation. */
export interface KeyPatch {
  name?: string;
  expiresAt?: number | null;
  scopes?: Scope[];
  models?: string[];
  allowedIps?: string[];
  limits?: Partial<KeyLimits>;
  budget?: Partial<TokenBudget>;
}

export interface WorkspacePatch {
  name?: string;
  maxKeyLifetimeMs?: number | null;
  allowedIps?: string[];
  budget?: Partial<TokenBudget>;
}

export interface RotateInput {
  id: string;
  hash: string;
  start: string;
  last4: string;
  at: number;
  /** Until when the previous secret(s) keep working; `at` ends them at once. */
  graceUntil: number;
}

export type KeyStatus = 'active' | 'revoked' | 'expired';

export function keyStatus(key: KeyRecord, now: number): KeyStatus {
  if (key.revokedAt !== null && key.revokedAt <= now) return 'revoked';
  if (key.expiresAt !== null && key.expiresAt <= now) return 'expired';
  return 'active';
}

export interface NewKey {
  id: string;
  workspaceId: string;
  name: string;
  /** HMAC-SHA256(pepper, secret), hex. */
  hash: string;
  start: string;
  last4: string;
  createdAt: number;
  createdBy: string | null;
  expiresAt: number | null;
  policy: KeyPolicy;
}

/** One metered request. `id` is the request id: writing the same record twice stores it once. */
export interface UsageRecord {
  id: string;
  time: number;
  keyId: string | null;
  workspaceId: string | null;
  model: string | null;
  endpoint: string;
  status: number;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  latencyMs: number;
  ttftMs: number | null;
  clientIp: string;
  /** True when the provider sent no usage report (a cut stream) and the counts are estimates. */
  tokensEstimated?: boolean;
}

export interface UsageTotals {
  keyId: string;
  name: string | null;
  requests: number;
  errors: number;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export interface UsageFilter {
  keyId?: string | undefined;
  since?: number | undefined;
}

/** What a usage report groups by: hours and days are UTC. */
export const USAGE_GROUPS = ['key', 'model', 'endpoint', 'workspace', 'hour', 'day'] as const;
export type UsageGroup = (typeof USAGE_GROUPS)[number];

export function isUsageGroup(value: string): value is UsageGroup {
  return (USAGE_GROUPS as readonly string[]).includes(value);
}

export interface UsageReportQuery {
  by: UsageGroup;
  /** Inclusive, epoch ms; undefined: from the first record. */
  from?: number | undefined;
  /** Exclusive, epoch ms; undefined: up to the last record. */
  to?: number | undefined;
  workspaceId?: string | undefined;
  keyId?: string | undefined;
  /** A model id or pattern (`mistral-small-*`). */
  model?: string | undefined;
  endpoint?: string | undefined;
  /** Only the keys created by this user (or key) id: what a workspace member may see. */
  createdBy?: string | undefined;
  /** Prices for the cost column; without them every row with tokens has no cost (null). */
  pricing?: Pricing | undefined;
}

/** The counts every usage aggregate carries (a rollup row, a report cell, a report row). */
export interface UsageCounts {
  requests: number;
  /** Requests answered with a status of 400 or more. */
  errors: number;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Requests whose tokens are estimates (a stream cut off before the provider's usage report). */
  estimatedRequests: number;
}

export interface UsageReportRow extends UsageCounts {
  /**
   * The key id, model, endpoint or workspace id (null: records without one); for `hour` and
   * `day`, the start of the hour or UTC day (epoch ms).
   */
  group: string | number | null;
  /** The key's or workspace's name (by key, by workspace); null otherwise. */
  name: string | null;
  latencyAvgMs: number | null;
  /** From the merged latency histograms: within one bucket (about ×1.5) of the exact value. */
  latencyP50Ms: number | null;
  latencyP95Ms: number | null;
  /** In the pricing's currency; null when tokens of a model without a price are part of the row. */
  cost: number | null;
}

export interface UsageReport {
  by: UsageGroup;
  from: number | null;
  to: number | null;
  currency: string;
  rows: UsageReportRow[];
}

export interface KeyChanges {
  /** Pass back as `after` on the next call. */
  cursor: number;
  keyIds: string[];
}

export interface SecretMatch {
  key: KeyRecord;
  /** When this particular secret stops working (the grace period after a rotation); null: never. */
  validUntil: number | null;
}

export interface ExpiryReminder {
  keyId: string;
  name: string;
  workspaceId: string;
  expiresAt: number;
  thresholdMs: number;
}

export const ALERT_KINDS = [
  'usage_spike',
  'budget_threshold',
  'new_network',
  'auth_failures',
  'key_expiring',
  'test',
] as const;
export type AlertKind = (typeof ALERT_KINDS)[number];
export type Severity = 'info' | 'warning' | 'critical';

export interface NewAlert {
  id: string;
  workspaceId: string;
  kind: AlertKind;
  /** Alerts with the same fingerprint within the cooldown are one alert seen several times. */
  fingerprint: string;
  keyId: string | null;
  severity: Severity;
  title: string;
  message: string;
  details: Record<string, unknown>;
  at: number;
}

export interface Alert extends Omit<NewAlert, 'at'> {
  firstAt: number;
  lastAt: number;
  occurrences: number;
  acknowledgedAt: number | null;
  acknowledgedBy: string | null;
}

export interface AlertFilter {
  workspaceId?: string | undefined;
  kind?: AlertKind | undefined;
  keyId?: string | undefined;
  unacknowledged?: boolean | undefined;
  limit?: number | undefined;
}

export const CHANNEL_TYPES = ['webhook', 'slack', 'email'] as const;
export type ChannelType = (typeof CHANNEL_TYPES)[number];

export interface AlertChannel {
  id: string;
  workspaceId: string;
  type: ChannelType;
  name: string;
  /** The channel's settings, sealed with the data key (see util/seal.ts). */
  configSealed: string;
  createdAt: number;
}

export interface AlertDelivery {
  alertId: string;
  channelId: string;
  attempt: number;
  outcome: 'sent' | 'failed';
  /** HTTP status (webhook, Slack) or SMTP reply code, when there was one. */
  status: number | null;
  error: string | null;
  at: number;
}

export interface HourlyCount {
  /** Start of the hour, epoch ms. */
  hour: number;
  requests: number;
  tokens: number;
}

export interface TokenFilter {
  keyId?: string | undefined;
  workspaceId?: string | undefined;
  since: number;
}

/** What a store holds that was made with the server secret, and that a new secret would orphan. */
export interface SecretBoundCounts {
  /** Keys (their hashes are peppered with it). */
  keys: number;
  /** Alert channels (their settings are sealed with its data key). */
  channels: number;
  /** Users with a TOTP secret (sealed with its data key). */
  twoFactorUsers: number;
}

export interface Store {
  readonly kind: 'sqlite' | 'postgres';
  /** Brings the schema up to date (safe to run from several processes at once); returns its version. */
  migrate(): Promise<number>;
  ping(): Promise<void>;
  /** Every mutation below writes its audit event in the same transaction and appends to the change feed. */
  createKey(key: NewKey, actor: Actor): Promise<KeyRecord>;
  /** The key a secret's hash opens, with the time that secret stops working (a rotated-out secret). */
  findKeyByHash(hash: string, now: number): Promise<SecretMatch | undefined>;
  getKey(id: string): Promise<KeyRecord | undefined>;
  listKeys(filter?: KeyFilter): Promise<KeyRecord[]>;
  updateKey(id: string, patch: KeyPatch, actor: Actor, at: number): Promise<KeyRecord | undefined>;
  /** Adds a new secret; the old ones stop working at `graceUntil`. */
  rotateKey(input: RotateInput, actor: Actor): Promise<KeyRecord | undefined>;
  /** Marks the key revoked (idempotent: an already revoked key keeps its first revocation time). */
  revokeKey(id: string, at: number, actor: Actor): Promise<KeyRecord | undefined>;
  getWorkspace(id: string): Promise<Workspace | undefined>;
  listWorkspaces(): Promise<Workspace[]>;
  createWorkspace(
    workspace: { id: string; name: string; createdAt: number },
    actor: Actor,
  ): Promise<Workspace>;
  updateWorkspace(
    id: string,
    patch: WorkspacePatch,
    actor: Actor,
    at: number,
  ): Promise<Workspace | undefined>;
  /** Changed keys (and workspaces, by id) after the cursor; `after = -1` returns only the current cursor. */
  keyChanges(after: number): Promise<KeyChanges>;
  createUser(user: User & { passwordHash: string }, actor: Actor): Promise<User>;
  getUser(idOrEmail: string): Promise<UserCredentials | undefined>;
  /**
   * Changes a user's password or two-factor state and records `action` in the audit log (naming
   * the fields changed, never their values). False when there is no such user.
   */
  updateCredentials(
    userId: string,
    patch: CredentialsPatch,
    action: string,
    actor: Actor,
    at: number,
  ): Promise<boolean>;
  /**
   * Creates the first user as the owner of ws_default, in one transaction that does nothing when
   * any user exists: of concurrent first-run setups (on any instance or worker) exactly one wins.
   * Undefined when a user existed already.
   */
  createFirstOwner(
    user: User & { passwordHash: string },
    actor: Actor,
    at: number,
  ): Promise<User | undefined>;
  /**
   * Claims a TOTP time step for a user: true when `step` is later than the last step claimed (and
   * is now the last), false when that step or a later one was used already. One conditional
   * UPDATE, so a code signs in once whichever process checks it.
   */
  claimTotpStep(userId: string, step: number): Promise<boolean>;
  /**
   * Spends a recovery code (its hash): removes it from the user's unused codes and records
   * `user.recovery_code_used` in the audit log. True only for the one caller that removed it.
   */
  spendRecoveryCode(userId: string, codeHash: string, actor: Actor, at: number): Promise<boolean>;
  createSession(session: SessionRecord): Promise<void>;
  getSession(id: string): Promise<SessionRecord | undefined>;
  /** Notes that a session was used (the console calls it at most once a minute per session). */
  touchSession(id: string, at: number): Promise<void>;
  /**
   * Ends sessions: one (`id`), or every live one of a user (`userId`, but `exceptId`). Returns how
   * many ended. Sessions past their expiry or ended more than a day ago are deleted on the way.
   */
  revokeSessions(
    filter: { id: string } | { userId: string; exceptId?: string | undefined },
    at: number,
  ): Promise<number>;
  createInvite(invite: Invite & { tokenHash: string }, actor: Actor): Promise<Invite>;
  listInvites(workspaceId: string): Promise<Invite[]>;
  findInvite(tokenHash: string): Promise<Invite | undefined>;
  /**
   * Redeems an open invitation (not accepted, revoked or expired at `at`): the user joins its
   * workspace with its role (a member already keeps their role). Undefined when it is not open.
   */
  acceptInvite(id: string, userId: string, actor: Actor, at: number): Promise<Membership | undefined>;
  /** Revokes an open invitation of the workspace; false when there is none with that id. */
  revokeInvite(workspaceId: string, id: string, actor: Actor, at: number): Promise<boolean>;
  /** Counts what only the current server secret opens (read before a missing secret is generated). */
  countSecretBound(): Promise<SecretBoundCounts>;
  /** A server-wide setting, e.g. the salt of the first-run setup token. */
  getSetting(name: string): Promise<string | undefined>;
  /** Stores `value` unless the setting exists; returns the value stored (theirs if it existed). */
  initSetting(name: string, value: string): Promise<string>;
  listUsers(): Promise<User[]>;
  /** Adds a member, or changes the role of an existing one. */
  setMembership(
    workspaceId: string,
    userId: string,
    role: Role,
    actor: Actor,
    at: number,
  ): Promise<Membership>;
  /**
   * Removes a member and, in the same transaction, revokes the keys they own in the workspace
   * (created_by = the user): each revocation audited and in the change feed. Undefined when the
   * user was not a member.
   */
  removeMembership(
    workspaceId: string,
    userId: string,
    actor: Actor,
    at: number,
  ): Promise<{ revokedKeyIds: string[] } | undefined>;
  listMembers(workspaceId: string): Promise<Membership[]>;
  getMembership(workspaceId: string, userId: string): Promise<Membership | undefined>;
  /**
   * Records in the audit log (once each, whichever process gets there first) the keys whose expiry
   * has passed; returns their ids.
   */
  recordExpiries(now: number): Promise<string[]>;
  /**
   * For each threshold (e.g. 14 and 3 days), the active keys whose expiry is now within it and that
   * were not yet reminded for it (for their current expiry): recorded once, in the audit log too.
   */
  recordExpiryReminders(now: number, thresholdsMs: readonly number[]): Promise<ExpiryReminder[]>;
  appendAudit(event: AuditEvent): Promise<void>;
  /** Records an alert, or folds it into the last one with the same fingerprint seen within `cooldownMs`. */
  raiseAlert(alert: NewAlert, cooldownMs: number): Promise<{ alert: Alert; fresh: boolean }>;
  listAlerts(filter: AlertFilter): Promise<Alert[]>;
  getAlert(id: string): Promise<Alert | undefined>;
  acknowledgeAlert(id: string, actor: Actor, at: number): Promise<Alert | undefined>;
  createChannel(channel: AlertChannel, actor: Actor): Promise<AlertChannel>;
  listChannels(workspaceId?: string): Promise<AlertChannel[]>;
  getChannel(id: string): Promise<AlertChannel | undefined>;
  deleteChannel(id: string, actor: Actor, at: number): Promise<boolean>;
  recordDelivery(delivery: AlertDelivery): Promise<void>;
  listDeliveries(filter: { alertId?: string; channelId?: string; limit?: number }): Promise<AlertDelivery[]>;
  /** Per-workspace rule settings that differ from the defaults, by rule kind. */
  ruleSettings(workspaceId: string): Promise<Record<string, Record<string, unknown>>>;
  setRuleSettings(
    workspaceId: string,
    kind: AlertKind,
    settings: Record<string, unknown>,
    actor: Actor,
    at: number,
  ): Promise<void>;
  /** Notes that a key was used from a network: its first network ever, a new one, or a known one. */
  noteNetwork(keyId: string, network: string, at: number): Promise<'first' | 'new' | 'known'>;
  /** A key's requests and tokens per hour since a time (hours without traffic are absent). */
  hourlyCounts(keyId: string, since: number): Promise<HourlyCount[]>;
  listAudit(filter: AuditFilter): Promise<(AuditEvent & { seq: number })[]>;
  /**
   * Stores new records (a record whose id is already stored is skipped) and adds each one stored to
   * the hourly rollups in the same transaction as its insert (PostgreSQL writes a batch as one
   * transaction; SQLite in several, yielding to the event loop between them): a record counts
   * once, whatever is retried.
   */
  recordUsage(records: readonly UsageRecord[]): Promise<void>;
  /** Per-key totals (the report by key, without latency and cost). */
  usageTotals(filter: UsageFilter): Promise<UsageTotals[]>;
  /**
   * Usage grouped by key, model, endpoint, workspace, hour or day over a time range: whole hours
   * from the rollups, the partial hours at the ends from the raw records (whole hours again once
   * retention has deleted those).
   */
  usageReport(query: UsageReportQuery): Promise<UsageReport>;
  /**
   * Retention: deletes the raw usage records from before the start of the hour holding `before`
   * (rollups are kept); returns how many. Records from then that arrive later are not stored.
   */
  pruneUsage(before: number): Promise<number>;
  /** Total tokens recorded since a time, for one key or one workspace (budgets). */
  tokensUsed(filter: TokenFilter): Promise<number>;
  close(): Promise<void>;
}
