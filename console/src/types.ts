/** The JSON shapes of the console's session API and of the management API it calls. */

export type Role = 'owner' | 'admin' | 'member' | 'viewer';
export const ROLES: readonly Role[] = ['owner', 'admin', 'member', 'viewer'];

export const INFERENCE_SCOPES = ['chat', 'fim', 'embeddings', 'models'] as const;
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

/** The management scopes of each role (the server's ROLE_SCOPES); `admin` implies all. */
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

// ---- session ---------------------------------------------------------------------------------

export interface SessionUser {
  id: string;
  email: string;
  totp_enabled: boolean;
  created_at: string | null;
}

export interface SessionWorkspace {
  id: string;
  name: string;
  role: Role;
}

export interface Session {
  setup_required: boolean;
  user: SessionUser | null;
  csrf_token: string | null;
  workspaces: SessionWorkspace[];
  /** The gateway's self-signed certificate, for `curl --cacert` (null: clients trust it already). */
  ca_cert_path: string | null;
}

export interface TotpSetup {
  secret: string;
  otpauth_url: string;
}

export interface InviteInfo {
  workspace_id: string;
  workspace_name: string;
  email: string;
  role: Role;
  expires_at: string;
}

// ---- keys ------------------------------------------------------------------------------------

export type KeyStatus = 'active' | 'revoked' | 'expired';

export interface KeyLimits {
  requests_per_minute: number | null;
  tokens_per_minute: number | null;
  concurrent_requests: number | null;
}

export interface TokenBudget {
  tokens_per_day: number | null;
  tokens_per_month: number | null;
}

export interface Key {
  id: string;
  name: string;
  workspace_id: string;
  display: string;
  status: KeyStatus;
  scopes: Scope[];
  models: string[];
  allowed_ips: string[];
  limits: KeyLimits;
  budget: TokenBudget;
  created_at: string | null;
  created_by: string | null;
  updated_at: string | null;
  rotated_at: string | null;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
  last_used_ip: string | null;
}

export interface CreatedKey extends Key {
  key: string;
}

export interface RotatedKey extends CreatedKey {
  previous_secret_valid_until: string;
}

export interface KeyList {
  data: Key[];
  next_after: string | null;
}

/** A create or update body: every field optional; null clears a limit, budget or expiry. */
export interface KeyInput {
  name?: string;
  workspace_id?: string;
  scopes?: Scope[];
  models?: string[];
  allowed_ips?: string[];
  limits?: Partial<Record<keyof KeyLimits, number | null>>;
  budget?: Partial<Record<keyof TokenBudget, number | null>>;
  expires_in?: string | null;
}

// ---- workspaces, members, invites ------------------------------------------------------------

export interface Workspace {
  id: string;
  name: string;
  created_at: string | null;
  policy: {
    max_key_lifetime: string | null;
    allowed_ips: string[];
    budget: TokenBudget;
  };
}

export interface Member {
  user_id: string;
  email: string;
  role: Role;
  since: string | null;
}

export interface Invite {
  id: string;
  workspace_id: string;
  email: string;
  role: Role;
  created_by: string | null;
  created_at: string | null;
  expires_at: string;
  accepted_at?: string | null;
  revoked_at?: string | null;
}

export interface CreatedInvite extends Invite {
  token: string;
}

export interface Removed {
  removed: true;
}

// ---- audit -----------------------------------------------------------------------------------

export interface AuditEvent {
  id: string;
  seq: number;
  at: string;
  workspace_id: string | null;
  actor: { type: 'user' | 'key' | 'cli' | 'system'; id: string | null; ip: string | null };
  action: string;
  target: { type: string; id: string | null };
  changes: Record<string, { before?: unknown; after?: unknown }>;
}

export interface AuditList {
  data: AuditEvent[];
  next_before: number | null;
}

// ---- usage -----------------------------------------------------------------------------------

export interface UsageRow {
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

export interface UsageList {
  by: 'key' | 'model' | 'endpoint' | 'workspace' | 'hour' | 'day';
  from: string | null;
  to: string | null;
  currency: string;
  data: UsageRow[];
}

// ---- alerts ----------------------------------------------------------------------------------

export type Severity = 'info' | 'warning' | 'critical';

export interface Alert {
  id: string;
  workspace_id: string;
  kind: string;
  severity: Severity;
  title: string;
  message: string;
  key: { id: string; name: string | null } | null;
  action: string;
  details: Record<string, unknown>;
  first_at: string | null;
  last_at: string | null;
  occurrences: number;
  acknowledged_at: string | null;
  acknowledged_by: string | null;
}

export interface AlertList {
  data: Alert[];
}

export type ChannelType = 'webhook' | 'slack' | 'email';
export const CHANNEL_TYPES: readonly ChannelType[] = ['webhook', 'slack', 'email'];

export interface AlertChannel {
  id: string;
  workspace_id: string;
  type: ChannelType;
  name: string;
  target: string;
  email: { from: string; to: string[]; authenticated: boolean } | null;
  created_at: string | null;
}

export interface CreatedAlertChannel extends AlertChannel {
  secret: string | null;
}

export interface AlertChannelList {
  data: AlertChannel[];
}

export type SettingValue = boolean | number | number[];

export interface AlertRule {
  kind: string;
  workspace_id: string;
  description: string;
  settings: Record<string, SettingValue>;
  defaults: Record<string, SettingValue>;
  overridden: string[];
}

export interface AlertRuleList {
  data: AlertRule[];
}

export interface DeliveryResult {
  channel_id: string;
  name: string;
  type: ChannelType;
  outcome: 'sent' | 'failed';
  /** A fixed word (`delivered`, `refused_by_policy`, `unreachable`, `http_<status>`…), never what the receiver said. */
  reason: string;
  status: number | null;
  /** The reason as a fixed sentence. */
  error: string | null;
}

export interface TestAlertResult {
  data: DeliveryResult[];
}
