/**
 * The store interface. The embedded SQLite store implements it now and a PostgreSQL store will
 * later, so it speaks in plain values: times are epoch milliseconds, ids are strings, and every
 * method is async even where SQLite could answer synchronously.
 */

export const DEFAULT_WORKSPACE_ID = 'ws_default';

export interface KeyRecord {
  id: string;
  workspaceId: string;
  name: string;
  /** Non-secret display prefix, e.g. `kg_AbCd`. */
  start: string;
  last4: string;
  createdAt: number;
  createdBy: string | null;
  expiresAt: number | null;
  revokedAt: number | null;
  lastUsedAt: number | null;
  lastUsedIp: string | null;
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

export interface KeyChanges {
  /** Pass back as `after` on the next call. */
  cursor: number;
  keyIds: string[];
}

export interface Store {
  readonly kind: 'sqlite' | 'postgres';
  /** Brings the schema up to date (safe to run from several processes at once); returns its version. */
  migrate(): Promise<number>;
  ping(): Promise<void>;
  createKey(key: NewKey): Promise<KeyRecord>;
  findKeyByHash(hash: string): Promise<KeyRecord | undefined>;
  getKey(id: string): Promise<KeyRecord | undefined>;
  listKeys(workspaceId?: string): Promise<KeyRecord[]>;
  /** Marks the key revoked (idempotent: an already revoked key keeps its first revocation time). */
  revokeKey(id: string, at: number): Promise<KeyRecord | undefined>;
  /** Keys changed (created, revoked, edited) after the cursor; `after = -1` returns only the current cursor. */
  keyChanges(after: number): Promise<KeyChanges>;
  recordUsage(records: readonly UsageRecord[]): Promise<void>;
  usageTotals(filter: UsageFilter): Promise<UsageTotals[]>;
  close(): Promise<void>;
}
