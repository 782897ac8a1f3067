/**
 * Who may do what through the management API.
 *
 * - A key needs the management scope of the route; `admin` implies every management scope.
 * - A key acts only within its own workspace: resources of other workspaces answer 404, exactly
 *   as if they did not exist, so their ids cannot be probed. The one exception is an
 *   `admin`-scoped key of the default workspace (`ws_default`): the operator's key, which acts
 *   on every workspace.
 * - A key gives no more than it has (`assertWithinCaller`): a key it creates, changes or rotates
 *   (rotating hands it the new secret), and a role it gives by invitation or directly, lies within
 *   its own scopes (management and inference), models, IP ranges, limits, budgets and expiry. It
 *   may revoke a wider key (that takes power away and reveals nothing), but not one holding a
 *   management scope it lacks. A key's IP ranges lie within its workspace's list, for everyone.
 * - Only the operator adds an existing account to a workspace directly; a tenant's owners and
 *   admins invite, and change the roles of people who are members already.
 * - `/metrics` (every workspace's traffic) is for the operator's keys only (`readsGatewayMetrics`).
 * - A key that belongs to a user (`created_by` is a user id) acts with that user's role: its
 *   management scopes are narrowed to what the role allows in the key's workspace (ROLE_SCOPES),
 *   it loses them all when the user leaves the workspace, and a `member` sees and manages only
 *   the keys that belong to them. Keys it creates belong to the same user.
 */

import { type Cidr, parseCidrs } from '../../auth/ip.ts';
import {
  DEFAULT_WORKSPACE_ID,
  INFERENCE_SCOPES,
  type KeyLimits,
  type KeyRecord,
  MANAGEMENT_SCOPES,
  type ManagementScope,
  ROLE_SCOPES,
  type Role,
  type Scope,
  type Store,
  type TokenBudget,
} from '../../store/types.ts';
import { AdminError, invalid, notFound } from './errors.ts';

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

/**
 * Refuses (403) to revoke a key that holds management scopes the caller lacks. (Creating,
 * changing and rotating a key come under the wider rule, `assertWithinCaller`.)
 */
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

const REGEX_SPECIAL = /[\\^$.|?+()[\]{}/-]/g;

/**
 * True when every model id the pattern `inner` matches is matched by the pattern `outer` (`*`
 * matches any run of characters). Read `inner` as text in which its own `*` stands for itself:
 * if `outer` matches that text, each `*` of `inner` fell inside a `*` of `outer`, which matches
 * whatever `inner`'s `*` stands for. Compiled here, on the management path, with `*` matching
 * anything, so it does not depend on what the request path lets a `*` match in a model id.
 */
function patternWithin(inner: string, outer: string): boolean {
  if (inner === outer || outer === '*') return true;
  const source = outer
    .split('*')
    .map((part) => part.replace(REGEX_SPECIAL, '\\$&'))
    .join('.*');
  return new RegExp(`^${source}$`).test(inner);
}

/**
 * What a key may do, as the rule below compares it: its scopes, its restrictions and its expiry.
 * For a role, what a member with that role may do from the console (see `reachOfRole`).
 */
export interface Reach {
  scopes: readonly Scope[];
  models: readonly string[];
  allowedIps: readonly string[];
  limits: KeyLimits;
  budget: TokenBudget;
  expiresAt: number | null;
}

export function reachOfKey(key: KeyRecord): Reach {
  return { ...key.policy, expiresAt: key.expiresAt };
}

/**
 * What a role gives a member: a console session acts with every inference scope, the role's
 * management scopes and no restriction at all (ConsoleAuth.callerFor builds that caller).
 */
export function reachOfRole(role: Role): Reach {
  return {
    scopes: [...INFERENCE_SCOPES, ...ROLE_SCOPES[role]],
    models: [],
    allowedIps: [],
    limits: { rpm: null, tpm: null, concurrency: null },
    budget: { day: null, month: null },
    expiresAt: null,
  };
}

/**
 * The inference scopes a key can bring to bear, itself or through keys it makes: `admin` is
 * trusted with everything in its workspace, so all of them; so is a provisioning key (`keys:write`
 * and no inference scope of its own), whose job is to make inference keys; any other key, the
 * inference scopes it holds. So a chat-only key with `keys:write` can make neither an embeddings
 * key nor a provisioning key (which could then make one), and a provisioning key can be made only
 * by a key whose reach is every inference scope.
 */
export function inferenceReach(scopes: readonly Scope[]): readonly Scope[] {
  const own = scopes.filter((s) => (INFERENCE_SCOPES as readonly string[]).includes(s));
  if (scopes.includes('admin') || (own.length === 0 && scopes.includes('keys:write')))
    return INFERENCE_SCOPES;
  return own;
}

/**
 * Everything `target` may do that `caller` may not, one phrase each (empty: `target` lies within
 * the caller's restrictions). Management scopes are checked by `assertWithinCaller` first, with
 * their own error.
 */
export function beyondCaller(caller: KeyRecord, target: Reach): string[] {
  const own = caller.policy;
  const problems: string[] = [];
  const held = inferenceReach(own.scopes);
  const lacking = inferenceReach(target.scopes).filter((s) => !held.includes(s));
  if (lacking.length > 0) {
    problems.push(
      `scopes must stay within ${held.length > 0 ? held.join(', ') : 'no inference scope'} (this key lacks ${lacking.join(', ')})`,
    );
  }
  if (
    own.models.length > 0 &&
    (target.models.length === 0 || !target.models.every((m) => own.models.some((o) => patternWithin(m, o))))
  ) {
    problems.push(`models must stay within ${own.models.join(', ')}`);
  }
  if (own.allowedIps.length > 0) {
    const outer = parseCidrs(own.allowedIps);
    if (
      target.allowedIps.length === 0 ||
      !parseCidrs(target.allowedIps).every((c) => rangeWithin(c, outer))
    ) {
      problems.push(`allowed_ips must stay within ${own.allowedIps.join(', ')}`);
    }
  }
  for (const name of ['rpm', 'tpm', 'concurrency'] as const) {
    if (!withinCount(own.limits[name], target.limits[name]))
      problems.push(`${name} must be at most ${own.limits[name]}`);
  }
  for (const period of ['day', 'month'] as const) {
    if (!withinCount(own.budget[period], target.budget[period])) {
      problems.push(`the ${period} budget must be at most ${own.budget[period]}`);
    }
  }
  if (caller.expiresAt !== null && (target.expiresAt === null || target.expiresAt > caller.expiresAt)) {
    problems.push(`it must expire by ${new Date(caller.expiresAt).toISOString()}, when this key does`);
  }
  return problems;
}

/**
 * The one rule for every route that hands out a secret or sets a policy (create, change and
 * rotate a key, invite someone or give them a role): what the caller makes, changes or obtains
 * must lie within the caller's own restrictions — management and inference scopes, models, IP
 * ranges, limits, budgets and expiry — so no key can turn itself into a wider one, whether by
 * minting it, widening a sibling, or rotating a sibling to learn its new secret.
 *
 * `doing` completes "This key cannot …" (e.g. `rotate key key_1`). Unbounded: the operator's key
 * (the root of trust, which provisions every workspace; its own restrictions bind its /v1 use)
 * and the local CLI (which does not come through here). A console session is a caller without
 * restrictions (ConsoleAuth.callerFor), so it is bounded by its role's management scopes only.
 */
export function assertWithinCaller(caller: KeyRecord, target: Reach, doing: string): void {
  if (actsOnAllWorkspaces(caller)) return;
  const missing = managementScopes(target.scopes).filter((s) => !hasManagementScope(caller, s));
  if (missing.length > 0) {
    throw new AdminError(
      'insufficient_scope',
      `This key cannot ${doing}: that involves ${quoteList(missing)}, which this key lacks (a key can only give management scopes it has itself, and only act on keys within them).`,
      { scope: missing.join(' ') },
    );
  }
  const problems = beyondCaller(caller, target);
  if (problems.length > 0) {
    throw new AdminError(
      'forbidden',
      `This key cannot ${doing}: a key can give no more than it has itself, and this one is restricted: ${problems.join('; ')}.`,
    );
  }
}

/**
 * Refuses (422) a key IP allowlist that reaches outside its workspace's: the workspace list
 * (set by the operator) is a ceiling, and a key's own ranges may only narrow it.
 */
export function assertWithinWorkspaceIps(
  workspace: { id: string; policy: { allowedIps: readonly string[] } },
  allowedIps: readonly string[],
): void {
  const ceiling = workspace.policy.allowedIps;
  if (ceiling.length === 0 || allowedIps.length === 0) return;
  const outer = parseCidrs(ceiling);
  const outside = parseCidrs(allowedIps).filter((c) => !rangeWithin(c, outer));
  if (outside.length > 0) {
    throw invalid(
      ['body', 'allowed_ips'],
      `${outside.map((c) => c.text).join(', ')} ${outside.length === 1 ? 'lies' : 'lie'} outside the IP allowlist of workspace ${workspace.id} (${ceiling.join(', ')}); a key's ranges must lie within it`,
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

/**
 * True when the caller may read `/metrics`, whose figures cover every workspace: a key of the
 * default workspace with the `metrics` scope — the operator's key, a scraper key the operator made
 * there, or a key of an owner or admin of ws_default (narrowed to their role by `actingAs` first).
 * A tenant's key never may, whatever its scopes.
 */
export function readsGatewayMetrics(caller: KeyRecord): boolean {
  return caller.workspaceId === DEFAULT_WORKSPACE_ID && hasManagementScope(caller, 'metrics');
}

/**
 * Refuses (403) giving `role` to someone whose role is `current` (undefined: a newcomer, by
 * invitation or, for the operator, directly): the caller must hold the powers of both roles
 * (`assertCanAssign`), and a role that gives more than the person had must lie within the
 * caller's restrictions — a member's console session has none, so a restricted key cannot hand
 * out an unrestricted one by inviting (or promoting) someone it controls.
 */
export function assertCanGiveRole(caller: KeyRecord, role: Role, current: Role | undefined): void {
  assertCanAssign(caller, [role, current]);
  const had = current === undefined ? new Set<ManagementScope>() : expand(ROLE_SCOPES[current]);
  const widens = current === undefined || [...expand(ROLE_SCOPES[role])].some((s) => !had.has(s));
  if (widens) assertWithinCaller(caller, reachOfRole(role), `give the role "${role}"`);
}
