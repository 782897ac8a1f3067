import type { KeyRecord, Store } from '../store/types.ts';
import { DEFAULT_WORKSPACE_ID } from '../store/types.ts';
import { newId } from '../util/ids.ts';
import { displayParts, generateKey } from './format.ts';
import { hashKey } from './hash.ts';

export interface CreateKeyInput {
  name: string;
  /** Lifetime in milliseconds from now; undefined for no expiry. */
  expiresInMs?: number | undefined;
  createdBy?: string | null | undefined;
  workspaceId?: string | undefined;
}

export interface CreatedKey {
  record: KeyRecord;
  /** The secret: returned once, never stored. */
  key: string;
}

const MAX_NAME_LENGTH = 128;

export class KeyInputError extends Error {
  override name = 'KeyInputError';
}

export function validateKeyName(name: string): string {
  const trimmed = name.trim();
  if (trimmed.length === 0) throw new KeyInputError('a key needs a name (--name)');
  if (trimmed.length > MAX_NAME_LENGTH)
    throw new KeyInputError(`a key name has at most ${MAX_NAME_LENGTH} characters`);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(trimmed))
    throw new KeyInputError('a key name cannot contain control characters');
  return trimmed;
}

export async function createKey(
  deps: { store: Store; pepper: Buffer; prefix: string; now?: number },
  input: CreateKeyInput,
): Promise<CreatedKey> {
  const name = validateKeyName(input.name);
  const now = deps.now ?? Date.now();
  if (input.expiresInMs !== undefined && input.expiresInMs <= 0) {
    throw new KeyInputError('an expiry must be in the future');
  }
  const key = generateKey(deps.prefix);
  const { start, last4 } = displayParts(key);
  const record = await deps.store.createKey({
    id: newId('key'),
    workspaceId: input.workspaceId ?? DEFAULT_WORKSPACE_ID,
    name,
    hash: hashKey(deps.pepper, key),
    start,
    last4,
    createdAt: now,
    createdBy: input.createdBy ?? null,
    expiresAt: input.expiresInMs === undefined ? null : now + input.expiresInMs,
  });
  return { record, key };
}
