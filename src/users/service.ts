/** People: user accounts and their roles in workspaces. */
import {
  type Actor,
  type Membership,
  type Role,
  type Store,
  StoreConflictError,
  type User,
} from '../store/types.ts';
import { newId } from '../util/ids.ts';
import { hashPassword, passwordProblem } from './passwords.ts';

export class UserInputError extends Error {
  override name = 'UserInputError';
  /** What kind of refusal: bad input, something named that does not exist, or a broken invariant. */
  readonly kind: 'invalid' | 'not_found' | 'conflict';
  constructor(message: string, kind: 'invalid' | 'not_found' | 'conflict' = 'invalid') {
    super(message);
    this.kind = kind;
  }
}

const EMAIL = /^[^\s@]{1,64}@[^\s@]{1,253}\.[^\s@]{2,}$/;

export function normaliseEmail(email: string): string {
  const trimmed = email.trim().toLowerCase();
  if (!EMAIL.test(trimmed) || trimmed.length > 254)
    throw new UserInputError(`"${email}" is not an email address`);
  return trimmed;
}

export async function createUser(
  store: Store,
  input: { email: string; password: string },
  actor: Actor,
): Promise<User> {
  const email = normaliseEmail(input.email);
  const problem = passwordProblem(input.password);
  if (problem) throw new UserInputError(problem);
  if (await store.getUser(email))
    throw new UserInputError(`a user with the email ${email} exists already`, 'conflict');
  return store.createUser(
    {
      id: newId('usr'),
      email,
      passwordHash: await hashPassword(input.password),
      createdAt: Date.now(),
      disabledAt: null,
    },
    actor,
  );
}

export async function setRole(
  store: Store,
  input: { workspaceId: string; user: string; role: Role },
  actor: Actor,
): Promise<Membership> {
  if (!(await store.getWorkspace(input.workspaceId)))
    throw new UserInputError(`no workspace with id ${input.workspaceId}`, 'not_found');
  const user = await store.getUser(input.user.includes('@') ? input.user.trim().toLowerCase() : input.user);
  if (!user)
    throw new UserInputError(`no user ${input.user} (create one with keygate users create)`, 'not_found');
  try {
    return await store.setMembership(input.workspaceId, user.id, input.role, actor, Date.now());
  } catch (error) {
    if (error instanceof StoreConflictError) throw new UserInputError(error.message, 'conflict');
    throw error;
  }
}

/**
 * Removes a member; the keys they own in the workspace are revoked with it (one transaction in
 * the store). Answers the ids of those keys, for the caller to broadcast.
 */
export async function removeMember(
  store: Store,
  input: { workspaceId: string; user: string },
  actor: Actor,
): Promise<{ revokedKeyIds: string[] }> {
  const user = await store.getUser(input.user.includes('@') ? input.user.trim().toLowerCase() : input.user);
  if (!user) throw new UserInputError(`no user ${input.user}`, 'not_found');
  let removed: { revokedKeyIds: string[] } | undefined;
  try {
    removed = await store.removeMembership(input.workspaceId, user.id, actor, Date.now());
  } catch (error) {
    if (error instanceof StoreConflictError) throw new UserInputError(error.message, 'conflict');
    throw error;
  }
  if (!removed)
    throw new UserInputError(`${user.email} is not a member of ${input.workspaceId}`, 'not_found');
  return removed;
}

export async function createWorkspace(store: Store, name: string, actor: Actor) {
  const trimmed = name.trim();
  if (trimmed.length === 0 || trimmed.length > 128)
    throw new UserInputError('a workspace name has 1 to 128 characters');
  return store.createWorkspace({ id: newId('ws'), name: trimmed, createdAt: Date.now() }, actor);
}
