/**
 * Who may do what through the management API.
 *
 * - A key needs the management scope of the route; `admin` implies every management scope.
 * - A key acts only within its own workspace: resources of other workspaces answer 404, exactly
 *   as if they did not exist, so their ids cannot be probed. The one exception is an
 *   `admin`-scoped key of the default workspace (`ws_default`): the operator's key, which acts
 *   on every workspace.
 * - A key cannot grant what it does not have: it cannot give a key (new or existing) a
 *   management scope it lacks itself, nor change, rotate or revoke a key that holds one (rotating
 *   would hand it that key's new secret).
 * - A key that belongs to a user (`created_by` is a user id) acts with that user's role: its
 *   management scopes are narrowed to what the role allows in the key's workspace (ROLE_SCOPES),
 *   it loses them all when the user leaves the workspace, and a `member` sees and manages only
 *   the keys that belong to them. Keys it creates belong to the same user.
 */

import { type Cidr, parseCidrs } from '../../auth/ip.ts';
import { modelAllowed } from '../../auth/policy.ts';
import {
  DEFAULT_WORKSPACE_ID,
  INFERENCE_SCOPES,
  type KeyPolicy,
  type KeyRecord,
  MANAGEMENT_SCOPES,
  type ManagementScope,
  ROLE_SCOPES,
  type Role,
  type Scope,
  type Store,
} from '../../store/types.ts';
import { AdminError, notFound } from './errors.ts';

export function hasManagementScope(key: KeyRecord, scope: ManagementScope): boolean {
  const scopes = key.policy.scopes;
  return scopes.includes('admin') || scopes.includes(scope);
}

/**
 * True for the operator's key: `admin` in the default workspace, which may act on every workspace.
 * A console session (its caller id is a user id) always acts in the one workspace it picked.
 */
export function actsOnAllWorkspaces(key: KeyRecord): boolean {
  return (
    key.workspaceId === DEFAULT_WORKSPACE_ID &&
    key.policy.scopes.includes('admin') &&
    !key.id.startsWith('usr_')
  );
}

export function canSeeWorkspace(caller: KeyRecord, workspaceId: string): boolean {
  return actsOnAllWorkspaces(caller) || caller.workspaceId === workspaceId;
}

/** The workspace filter of a listing: the caller's own, or (for the operator) the one asked for. */
export function workspaceFilter(caller: KeyRecord, requested: string | undefined): string | undefined {
  if (requested !== undefined) {
    if (!canSeeWorkspace(caller, requested)) throw notFound('workspace', requested);
    return requested;
  }
  return actsOnAllWorkspaces(caller) ? undefined : caller.workspaceId;
}

function managementScopes(scopes: readonly Scope[]): ManagementScope[] {
  return scopes.filter((s): s is ManagementScope => (MANAGEMENT_SCOPES as readonly string[]).includes(s));
}

/** Refuses (403) to grant management scopes the caller lacks. */
export function assertCanGrant(caller: KeyRecord, scopes: readonly Scope[]): void {
  const missing = managementScopes(scopes).filter((s) => !hasManagementScope(caller, s));
  if (missing.length > 0) {
    throw new AdminError(
      'insufficient_scope',
      `This key cannot grant ${quoteList(missing)}: a key can only grant management scopes it has itself.`,
      { scope: missing.join(' ') },
    );
  }
}

/** Refuses (403) to change a key that holds management scopes the caller lacks. */
export function assertCanModify(caller: KeyRecord, target: KeyRecord): void {
  const missing = managementScopes(target.policy.scopes).filter((s) => !hasManagementScope(caller, s));
  if (missing.length > 0) {
    throw new AdminError(
      'insufficient_scope',
      `Key ${target.id} has ${quoteList(missing)}, which this key lacks: only a key with ${missing.length === 1 ? 'that scope' : 'those scopes'} may change, rotate or revoke it.`,
      { scope: missing.join(' ') },
    );
  }
}

function quoteList(scopes: readonly string[]): string {
  const quoted = scopes.map((s) => `"${s}"`);
  return `the scope${quoted.length === 1 ? '' : 's'} ${quoted.join(', ')}`;
}

/** Expands `admin` into every management scope. */
function expand(scopes: readonly Scope[]): Set<ManagementScope> {
  const management = managementScopes(scopes);
  return new Set(management.includes('admin') ? MANAGEMENT_SCOPES : management);
}

/**
 * The caller as it may act: a key owned by a user gets the intersection of its own management
 * scopes and its owner's role (owner: everything). Inference scopes are kept as they are.
 */
export async function actingAs(
  store: Pick<Store, 'getMembership'>,
  caller: KeyRecord,
): Promise<{ caller: KeyRecord; owner: { userId: string; role: Role } | undefined }> {
  const userId = caller.createdBy;
  if (userId === null || !userId.startsWith('usr_')) return { caller, owner: undefined };
  const membership = await store.getMembership(caller.workspaceId, userId);
  const inference = caller.policy.scopes.filter((s) => (INFERENCE_SCOPES as readonly string[]).includes(s));
  if (!membership) {
    // The owner left the workspace: the key keeps no management power at all.
    return { caller: { ...caller, policy: { ...caller.policy, scopes: inference } }, owner: undefined };
  }
  const allowed = expand(ROLE_SCOPES[membership.role]);
  const own = expand(caller.policy.scopes);
  const effective = [...own].filter((s) => allowed.has(s));
  const scopes: Scope[] =
    allowed.size === MANAGEMENT_SCOPES.length && own.size === MANAGEMENT_SCOPES.length
      ? [...inference, 'admin']
      : [...inference, ...effective.filter((s) => s !== 'admin')];
  return {
    caller: { ...caller, policy: { ...caller.policy, scopes } },
    owner: { userId, role: membership.role },
  };
}

/** A `member` manages only their own keys; everyone else every key of the workspaces they see. */
export function ownsOrManages(owner: { userId: string; role: Role } | undefined, key: KeyRecord): boolean {
  return owner?.role !== 'member' || key.createdBy === owner.userId;
}

/** True when `inner` (a CIDR) lies wholly inside one of `outer`. */
function rangeWithin(inner: Cidr, outer: readonly Cidr[]): boolean {
  return outer.some(
    (o) =>
      o.address.kind() === inner.address.kind() &&
      o.bits <= inner.bits &&
      inner.address.match(o.address, o.bits),
  );
}

function withinCount(callerLimit: number | null, value: number | null): boolean {
  return callerLimit === null || (value !== null && value <= callerLimit);
}

/**
 * Refuses (403) a key policy wider than the caller's own restrictions: a restricted key cannot
 * make (or turn another key into) a less restricted one. Unrestricted callers are not limited.
 */
export function assertWithinRestrictions(
  caller: KeyRecord,
  policy: Pick<KeyPolicy, 'models' | 'allowedIps' | 'limits' | 'budget'>,
): void {
  const own = caller.policy;
  const problems: string[] = [];
  if (
    own.models.length > 0 &&
    (policy.models.length === 0 || !policy.models.every((m) => modelAllowed(own.models, m)))
  ) {
    problems.push(`models must stay within ${own.models.join(', ')}`);
  }
  if (own.allowedIps.length > 0) {
    const outer = parseCidrs(own.allowedIps);
    if (
      policy.allowedIps.length === 0 ||
      !parseCidrs(policy.allowedIps).every((c) => rangeWithin(c, outer))
    ) {
      problems.push(`allowed_ips must stay within ${own.allowedIps.join(', ')}`);
    }
  }
  for (const name of ['rpm', 'tpm', 'concurrency'] as const) {
    if (!withinCount(own.limits[name], policy.limits[name]))
      problems.push(`${name} must be at most ${own.limits[name]}`);
  }
  for (const period of ['day', 'month'] as const) {
    if (!withinCount(own.budget[period], policy.budget[period])) {
      problems.push(`the ${period} budget must be at most ${own.budget[period]}`);
    }
  }
  if (problems.length > 0) {
    throw new AdminError(
      'forbidden',
      `This key is restricted, and cannot give a key more than it has itself: ${problems.join('; ')}.`,
    );
  }
}

/** Refuses (403) giving or taking a role whose powers the caller does not have itself. */
export function assertCanAssign(caller: KeyRecord, roles: readonly (Role | undefined)[]): void {
  const own = expand(caller.policy.scopes);
  for (const role of roles) {
    if (role === undefined) continue;
    if (![...expand(ROLE_SCOPES[role])].every((s) => own.has(s))) {
      throw new AdminError(
        'forbidden',
        `This key cannot give or take the role "${role}": that role has powers the key does not have.`,
      );
    }
  }
}
