/**
 * Key lifecycle: create, update, rotate, revoke, with validation of every restriction and the
 * workspace policy. The store writes the audit event and the change-feed entry of each change in
 * the same transaction, so every running gateway sees it within one poll of the feed.
 */
import { parseCidrs } from '../auth/ip.ts';
import { compileModelPattern } from '../auth/policy.ts';
import {
  type Actor,
  ALL_SCOPES,
  DEFAULT_KEY_POLICY,
  DEFAULT_WORKSPACE_ID,
  isScope,
  type KeyLimits,
  type KeyPatch,
  type KeyPolicy,
  type KeyRecord,
  type Scope,
  type Store,
  type TokenBudget,
} from '../store/types.ts';
import { newId } from '../util/ids.ts';
import { displayParts, generateKey } from './format.ts';
import type { Pepper } from './hash.ts';
import { hashKey } from './hash.ts';

export interface KeyDeps {
  store: Store;
  pepper: Pepper;
  prefix: string;
  now?: number;
}

export interface KeyRestrictions {
  scopes?: readonly string[] | undefined;
  models?: readonly string[] | undefined;
  allowedIps?: readonly string[] | undefined;
  limits?: Partial<KeyLimits> | undefined;
  budget?: Partial<TokenBudget> | undefined;
}

export interface CreateKeyInput extends KeyRestrictions {
  name: string;
  /** Lifetime in milliseconds from now; undefined for no expiry (if the workspace allows it). */
  expiresInMs?: number | undefined;
  createdBy?: string | null | undefined;
  workspaceId?: string | undefined;
  actor?: Actor | undefined;
}

export interface CreatedKey {
  record: KeyRecord;
  /** The secret: returned once, never stored. */
  key: string;
}

const MAX_NAME_LENGTH = 128;
const MAX_LIST_LENGTH = 100;

/** A request to change a key that cannot be honoured; the message is for the user as it is. */
export class KeyInputError extends Error {
  override name = 'KeyInputError';
  /** The input field at fault (`scopes`, `models`, `allowedIps`, `limits`, `budget`, `name`, `expires`), when one is. */
  readonly field: string | undefined;
  constructor(message: string, field?: string) {
    super(message);
    this.field = field;
  }
}

export function validateKeyName(name: string): string {
  const trimmed = name.trim();
  if (trimmed.length === 0) throw new KeyInputError('a key needs a name', 'name');
  if (trimmed.length > MAX_NAME_LENGTH)
    throw new KeyInputError(`a key name has at most ${MAX_NAME_LENGTH} characters`, 'name');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(trimmed))
    throw new KeyInputError('a key name cannot contain control characters', 'name');
  return trimmed;
}

function validateScopes(scopes: readonly string[]): Scope[] {
  const unique = [...new Set(scopes.map((s) => s.trim()).filter((s) => s.length > 0))];
  if (unique.length === 0) throw new KeyInputError('a key needs at least one scope', 'scopes');
  for (const scope of unique) {
    if (!isScope(scope))
      throw new KeyInputError(
        `unknown scope "${scope}"; the scopes are ${ALL_SCOPES.join(', ')} (see docs/security.md)`,
        'scopes',
      );
  }
  return unique as Scope[];
}

function validateModels(models: readonly string[]): string[] {
  const unique = [...new Set(models.map((m) => m.trim()).filter((m) => m.length > 0))];
  if (unique.length > MAX_LIST_LENGTH)
    throw new KeyInputError(`at most ${MAX_LIST_LENGTH} model patterns`, 'models');
  for (const model of unique) {
    try {
      compileModelPattern(model);
    } catch (error) {
      throw new KeyInputError((error as Error).message, 'models');
    }
  }
  return unique;
}

function validateIps(ranges: readonly string[]): string[] {
  const unique = [...new Set(ranges.map((r) => r.trim()).filter((r) => r.length > 0))];
  if (unique.length > MAX_LIST_LENGTH)
    throw new KeyInputError(`at most ${MAX_LIST_LENGTH} IP ranges`, 'allowedIps');
  try {
    return parseCidrs(unique).map((c) => c.text);
  } catch (error) {
    throw new KeyInputError((error as Error).message, 'allowedIps');
  }
}

function validateCount(
  name: string,
  field: string,
  value: number | null | undefined,
): number | null | undefined {
  if (value === undefined || value === null) return value;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new KeyInputError(`${name} must be a positive whole number`, field);
  }
  return value;
}

function validateLimits(limits: Partial<KeyLimits>): Partial<KeyLimits> {
  const out: Partial<KeyLimits> = {};
  for (const name of ['rpm', 'tpm', 'concurrency'] as const) {
    const value = validateCount(name, `limits.${name}`, limits[name]);
    if (value !== undefined) out[name] = value;
  }
  return out;
}

function validateBudget(budget: Partial<TokenBudget>): Partial<TokenBudget> {
  const out: Partial<TokenBudget> = {};
  for (const period of ['day', 'month'] as const) {
    const value = validateCount(`the ${period} budget`, `budget.${period}`, budget[period]);
    if (value !== undefined) out[period] = value;
  }
  return out;
}

/** Validates restrictions into a policy patch (only the fields given). */
export function validateRestrictions(input: KeyRestrictions): KeyPatch {
  const patch: KeyPatch = {};
  if (input.scopes !== undefined) patch.scopes = validateScopes(input.scopes);
  if (input.models !== undefined) patch.models = validateModels(input.models);
  if (input.allowedIps !== undefined) patch.allowedIps = validateIps(input.allowedIps);
  if (input.limits !== undefined) patch.limits = validateLimits(input.limits);
  if (input.budget !== undefined) patch.budget = validateBudget(input.budget);
  return patch;
}

async function checkLifetime(store: Store, workspaceId: string, lifetimeMs: number | null): Promise<void> {
  const workspace = await store.getWorkspace(workspaceId);
  if (!workspace) throw new KeyInputError(`no workspace with id ${workspaceId}`);
  const max = workspace.policy.maxKeyLifetimeMs;
  if (max === null) return;
  if (lifetimeMs === null) {
    throw new KeyInputError(
      `workspace ${workspaceId} requires keys to expire within ${formatMs(max)}`,
      'expires',
    );
  }
  if (lifetimeMs > max) {
    throw new KeyInputError(
      `workspace ${workspaceId} allows keys to live at most ${formatMs(max)}`,
      'expires',
    );
  }
}

export function formatMs(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 1000)}s`;
}

export async function createKey(deps: KeyDeps, input: CreateKeyInput): Promise<CreatedKey> {
  const name = validateKeyName(input.name);
  const now = deps.now ?? Date.now();
  if (input.expiresInMs !== undefined && input.expiresInMs <= 0) {
    throw new KeyInputError('an expiry must be in the future', 'expires');
  }
  const workspaceId = input.workspaceId ?? DEFAULT_WORKSPACE_ID;
  await checkLifetime(deps.store, workspaceId, input.expiresInMs ?? null);
  const patch = validateRestrictions(input);
  const policy: KeyPolicy = {
    scopes: patch.scopes ?? [...DEFAULT_KEY_POLICY.scopes],
    models: patch.models ?? [],
    allowedIps: patch.allowedIps ?? [],
    limits: { ...DEFAULT_KEY_POLICY.limits, ...patch.limits },
    budget: { ...DEFAULT_KEY_POLICY.budget, ...patch.budget },
  };
  const key = generateKey(deps.prefix);
  const { start, last4 } = displayParts(key);
  const record = await deps.store.createKey(
    {
      id: newId('key'),
      workspaceId,
      name,
      hash: hashKey(deps.pepper, key),
      start,
      last4,
      createdAt: now,
      createdBy: input.createdBy ?? null,
      expiresAt: input.expiresInMs === undefined ? null : now + input.expiresInMs,
      policy,
    },
    input.actor ?? { type: 'cli', id: null, ip: null },
  );
  return { record, key };
}

export interface UpdateKeyInput extends KeyRestrictions {
  name?: string | undefined;
  /** New lifetime from now; null removes the expiry. */
  expiresInMs?: number | null | undefined;
}

export async function updateKey(
  deps: KeyDeps,
  id: string,
  input: UpdateKeyInput,
  actor: Actor,
): Promise<KeyRecord> {
  const now = deps.now ?? Date.now();
  const existing = await deps.store.getKey(id);
  if (!existing) throw new KeyNotFoundError(id);
  const patch = validateRestrictions(input);
  if (input.name !== undefined) patch.name = validateKeyName(input.name);
  if (input.expiresInMs !== undefined) {
    if (input.expiresInMs !== null && input.expiresInMs <= 0)
      throw new KeyInputError('an expiry must be in the future', 'expires');
    await checkLifetime(deps.store, existing.workspaceId, input.expiresInMs);
    patch.expiresAt = input.expiresInMs === null ? null : now + input.expiresInMs;
  }
  const updated = await deps.store.updateKey(id, patch, actor, now);
  if (!updated) throw new KeyNotFoundError(id);
  return updated;
}

/** A rotation refused because the key has expired: its new secret could not authenticate. */
export class KeyExpiredError extends KeyInputError {
  override name = 'KeyExpiredError';
  constructor(id: string, expiresAt: number) {
    super(
      `key ${id} expired at ${new Date(expiresAt).toISOString()}: a new secret for it would not work. ` +
        `Give it a new expiry first (\`keygate keys update ${id} --expires 90d\`), then rotate it; or create a new key`,
    );
  }
}

export class KeyNotFoundError extends Error {
  override name = 'KeyNotFoundError';
  constructor(id: string) {
    super(`no key with id ${id}`);
  }
}

/**
 * Issues a new secret for the same key record (id, name, restrictions and usage history stay);
 * the old secret keeps working for `graceMs` (0 ends it at once).
 */
export async function rotateKey(
  deps: KeyDeps,
  id: string,
  graceMs: number,
  actor: Actor,
): Promise<CreatedKey> {
  const now = deps.now ?? Date.now();
  if (!Number.isSafeInteger(graceMs) || graceMs < 0)
    throw new KeyInputError('the grace period cannot be negative', 'grace');
  const existing = await deps.store.getKey(id);
  if (!existing) throw new KeyNotFoundError(id);
  if (existing.revokedAt !== null) throw new KeyInputError(`key ${id} is revoked; create a new key instead`);
  // A new secret for an expired key would be refused at its first use: say so instead of printing it.
  if (existing.expiresAt !== null && existing.expiresAt <= now)
    throw new KeyExpiredError(id, existing.expiresAt);
  const key = generateKey(deps.prefix);
  const { start, last4 } = displayParts(key);
  const record = await deps.store.rotateKey(
    { id, hash: hashKey(deps.pepper, key), start, last4, at: now, graceUntil: now + graceMs },
    actor,
  );
  if (!record) throw new KeyNotFoundError(id);
  return { record, key };
}
