/**
 * The management API's route table: one entry per operation, with its scope, its schemas and its
 * handler. Dispatch (index.ts), 405 Allow headers (router.ts) and the OpenAPI document
 * (openapi.ts) all read this table, so they cannot disagree.
 */
import { parseCidrs } from '../../auth/ip.ts';
import { createKey, formatMs, type KeyDeps, rotateKey, updateKey } from '../../keys/service.ts';
import {
  DEFAULT_KEY_POLICY,
  DEFAULT_WORKSPACE_ID,
  type KeyLimits,
  type KeyRecord,
  type Membership,
  type TokenBudget,
  type WorkspacePatch,
} from '../../store/types.ts';
import { createWorkspace, removeMember, setRole } from '../../users/service.ts';
import {
  actsOnAllWorkspaces,
  assertCanAssign,
  assertCanGiveRole,
  assertCanModify,
  assertWithinCaller,
  assertWithinWorkspaceIps,
  canSeeWorkspace,
  ownsOrManages,
  reachOfKey,
  workspaceFilter,
} from './access.ts';
import { ALERT_ROUTES } from './alert-routes.ts';
import { AdminError, invalid, notFound, safeId } from './errors.ts';
import { INVITE_ROUTES } from './invite-routes.ts';
import { buildOpenApi, type OpenApiDoc } from './openapi.ts';
import { type AnyRoute, type Context, defineRoute } from './router.ts';
import {
  AuditList,
  CreatedKey,
  CreateKeyRequest,
  CreateWorkspaceRequest,
  durationMs,
  Key,
  KeyList,
  ListAuditQuery,
  ListKeysQuery,
  Member,
  MemberList,
  NoQuery,
  OpenApiDocument,
  Removed,
  RevokeKeyRequest,
  RotatedKey,
  RotateKeyRequest,
  SetRoleRequest,
  UpdateKeyRequest,
  UpdateWorkspaceRequest,
  UsageList,
  UsageQuery,
  Workspace,
  WorkspaceList,
} from './schemas.ts';
import { auditView, keyView, memberView, usageReportView, workspaceView } from './views.ts';

const DEFAULT_PAGE = 50;
const DEFAULT_GRACE_MS = 24 * 3_600_000;
const BASE = '/admin/v1';

// ---- helpers ---------------------------------------------------------------------------------

function keyDeps(ctx: Context<unknown, unknown>, now: number): KeyDeps {
  return { store: ctx.deps.store, pepper: ctx.deps.pepper, prefix: ctx.deps.keyPrefix, now };
}

/** The key with this id, if the caller may see it; 404 otherwise (whether or not it exists). */
async function visibleKey(ctx: Context<unknown, unknown>, id: string): Promise<KeyRecord> {
  const key = await ctx.deps.store.getKey(id);
  if (!key || !canSeeWorkspace(ctx.caller, key.workspaceId) || !ownsOrManages(ctx.owner, key)) {
    throw notFound('key', id);
  }
  return key;
}

/**
 * The member of a workspace named by `user` (a user id or an email address), if any. Read off the
 * member list, never the user table: the work and the answer are the same whether or not an
 * account with that id or email exists elsewhere, so a tenant cannot probe other tenants' people.
 */
async function findMember(
  ctx: Context<unknown, unknown>,
  workspaceId: string,
  user: string,
): Promise<Membership | undefined> {
  const email = user.trim().toLowerCase();
  return (await ctx.deps.store.listMembers(workspaceId)).find((m) => m.userId === user || m.email === email);
}

/** The operator: its key (an admin key of ws_default) or the console session of ws_default's owner. */
function isOperator(ctx: Context<unknown, unknown>): boolean {
  return actsOnAllWorkspaces(ctx.caller) || ctx.operator;
}

function noMember(workspaceId: string, user: string, hint = ''): AdminError {
  return new AdminError('not_found', `No member ${safeId(user)} in workspace ${workspaceId}.${hint}`);
}

async function visibleWorkspace(ctx: Context<unknown, unknown>, id: string) {
  const ws = canSeeWorkspace(ctx.caller, id) ? await ctx.deps.store.getWorkspace(id) : undefined;
  if (!ws) throw notFound('workspace', id);
  return ws;
}

/**
 * Applies a change to this instance's key cache now, rather than at the next change-feed poll,
 * and broadcasts it to the other instances (over Redis, when configured).
 */
async function applyChanges(ctx: Context<unknown, unknown>, ids: readonly string[]): Promise<void> {
  await ctx.deps.verifier.syncChanges();
  await ctx.deps.keyEvents?.publish(ids);
}

type LimitsInput = {
  requests_per_minute?: number | null | undefined;
  tokens_per_minute?: number | null | undefined;
  concurrent_requests?: number | null | undefined;
} | null;
type BudgetInput = {
  tokens_per_day?: number | null | undefined;
  tokens_per_month?: number | null | undefined;
} | null;

function limitsFrom(input: LimitsInput | undefined): Partial<KeyLimits> | undefined {
  if (input === undefined) return undefined;
  if (input === null) return { ...DEFAULT_KEY_POLICY.limits };
  const out: Partial<KeyLimits> = {};
  if (input.requests_per_minute !== undefined) out.rpm = input.requests_per_minute;
  if (input.tokens_per_minute !== undefined) out.tpm = input.tokens_per_minute;
  if (input.concurrent_requests !== undefined) out.concurrency = input.concurrent_requests;
  return out;
}

function budgetFrom(input: BudgetInput | undefined): Partial<TokenBudget> | undefined {
  if (input === undefined) return undefined;
  if (input === null) return { day: null, month: null };
  const out: Partial<TokenBudget> = {};
  if (input.tokens_per_day !== undefined) out.day = input.tokens_per_day;
  if (input.tokens_per_month !== undefined) out.month = input.tokens_per_month;
  return out;
}

function lifetimeFrom(input: string | number | null | undefined): number | null | undefined {
  return input === undefined || input === null ? input : durationMs(input);
}

/** The workspace's longest key lifetime, checked here so the error can name the field. */
async function checkLifetime(
  ctx: Context<unknown, unknown>,
  workspaceId: string,
  lifetimeMs: number | null,
): Promise<void> {
  const max = (await ctx.deps.store.getWorkspace(workspaceId))?.policy.maxKeyLifetimeMs ?? null;
  if (max === null) return;
  if (lifetimeMs === null)
    throw invalid(
      ['body', 'expires_in'],
      `workspace ${workspaceId} requires keys to expire within ${formatMs(max)}`,
    );
  if (lifetimeMs > max)
    throw invalid(
      ['body', 'expires_in'],
      `workspace ${workspaceId} allows keys to live at most ${formatMs(max)}`,
    );
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

// ---- the table -------------------------------------------------------------------------------

export const ROUTES: readonly AnyRoute[] = [
  defineRoute({
    method: 'GET',
    path: `${BASE}/keys`,
    operationId: 'listKeys',
    summary: 'List keys',
    description: 'Keys of the calling key’s workspace (all workspaces for the operator key), oldest first.',
    tag: 'keys',
    scope: 'keys:read',
    query: ListKeysQuery,
    status: 200,
    response: KeyList,
    async handle(ctx) {
      const { query, caller, deps } = ctx;
      const limit = query.limit ?? DEFAULT_PAGE;
      const keys = await deps.store.listKeys({
        workspaceId: workspaceFilter(caller, query.workspace_id),
        createdBy: ctx.owner?.role === 'member' ? ctx.owner.userId : undefined,
        status: query.status,
        search: query.search,
        after: query.after,
        limit: limit + 1,
      });
      const page = keys.slice(0, limit);
      const now = Date.now();
      return {
        body: {
          data: page.map((k) => keyView(k, now)),
          next_after: keys.length > limit ? (page.at(-1)?.id ?? null) : null,
        },
      };
    },
  }),

  defineRoute({
    method: 'POST',
    path: `${BASE}/keys`,
    operationId: 'createKey',
    summary: 'Create a key',
    description:
      'Creates a key and returns its secret, once. The calling key cannot grant management scopes it lacks.',
    tag: 'keys',
    scope: 'keys:write',
    query: NoQuery,
    body: CreateKeyRequest,
    status: 201,
    response: CreatedKey,
    async handle(ctx) {
      const { body, caller, deps } = ctx;
      const workspaceId = body.workspace_id ?? caller.workspaceId;
      const workspace = await visibleWorkspace(ctx, workspaceId);
      const now = Date.now();
      // A key made without an expiry by a key that expires gets its maker's expiry: it cannot
      // outlive the key that made it (an explicit later expiry is refused below).
      const expiresInMs =
        lifetimeFrom(body.expires_in) ??
        (caller.expiresAt !== null && !actsOnAllWorkspaces(caller) ? caller.expiresAt - now : null);
      assertWithinCaller(
        caller,
        {
          scopes: body.scopes ?? DEFAULT_KEY_POLICY.scopes,
          models: body.models ?? [],
          allowedIps: body.allowed_ips ?? [],
          limits: { ...DEFAULT_KEY_POLICY.limits, ...limitsFrom(body.limits) },
          budget: { ...DEFAULT_KEY_POLICY.budget, ...budgetFrom(body.budget) },
          expiresAt: expiresInMs === null ? null : now + expiresInMs,
        },
        'create a key like that',
      );
      assertWithinWorkspaceIps(workspace, body.allowed_ips ?? []);
      await checkLifetime(ctx, workspaceId, expiresInMs);
      const created = await createKey(keyDeps(ctx, now), {
        name: body.name,
        workspaceId,
        scopes: body.scopes,
        models: body.models,
        allowedIps: body.allowed_ips,
        limits: limitsFrom(body.limits),
        budget: budgetFrom(body.budget),
        expiresInMs: expiresInMs ?? undefined,
        // A key made by a user's key belongs to that user, so it acts with their role too.
        createdBy: ctx.owner?.userId ?? caller.id,
        actor: ctx.actor,
      });
      await applyChanges(ctx, [created.record.id]);
      deps.logger.info(
        { reqId: ctx.requestId, keyId: created.record.id, by: caller.id },
        'key created through the admin API',
      );
      return {
        body: { ...keyView(created.record, now), key: created.key },
        headers: { location: `${BASE}/keys/${encodeURIComponent(created.record.id)}` },
      };
    },
  }),

  defineRoute({
    method: 'GET',
    path: `${BASE}/keys/{id}`,
    operationId: 'getKey',
    summary: 'Get a key',
    tag: 'keys',
    scope: 'keys:read',
    query: NoQuery,
    status: 200,
    response: Key,
    async handle(ctx) {
      return { body: keyView(await visibleKey(ctx, ctx.params.id ?? '')) };
    },
  }),

  defineRoute({
    method: 'PATCH',
    path: `${BASE}/keys/{id}`,
    operationId: 'updateKey',
    summary: 'Update a key',
    description:
      'Changes the given fields; null removes a limit, budget or expiry. Every change is in the audit log with its values before and after.',
    tag: 'keys',
    scope: 'keys:write',
    query: NoQuery,
    body: UpdateKeyRequest,
    status: 200,
    response: Key,
    async handle(ctx) {
      const { body, caller } = ctx;
      const target = await visibleKey(ctx, ctx.params.id ?? '');
      if (target.id === caller.id) {
        throw new AdminError(
          'forbidden',
          'A key cannot change its own restrictions; use another key with keys:write.',
        );
      }
      // The key as it is must lie within the caller (a restricted key leaves wider keys alone),
      // and so must the key as the change would make it.
      assertWithinCaller(
        caller,
        reachOfKey(target),
        `change key ${target.id}, which may do more than this key`,
      );
      const now = Date.now();
      const expiresInMs = lifetimeFrom(body.expires_in);
      assertWithinCaller(
        caller,
        {
          scopes: body.scopes ?? target.policy.scopes,
          models: body.models ?? target.policy.models,
          allowedIps: body.allowed_ips ?? target.policy.allowedIps,
          limits: { ...target.policy.limits, ...limitsFrom(body.limits) },
          budget: { ...target.policy.budget, ...budgetFrom(body.budget) },
          expiresAt:
            expiresInMs === undefined ? target.expiresAt : expiresInMs === null ? null : now + expiresInMs,
        },
        `make that change to key ${target.id}`,
      );
      if (body.allowed_ips !== undefined) {
        assertWithinWorkspaceIps(await visibleWorkspace(ctx, target.workspaceId), body.allowed_ips);
      }
      if (expiresInMs !== undefined) await checkLifetime(ctx, target.workspaceId, expiresInMs);
      const updated = await updateKey(
        keyDeps(ctx, now),
        target.id,
        {
          name: body.name,
          scopes: body.scopes,
          models: body.models,
          allowedIps: body.allowed_ips,
          limits: limitsFrom(body.limits),
          budget: budgetFrom(body.budget),
          expiresInMs,
        },
        ctx.actor,
      );
      await applyChanges(ctx, [target.id]);
      return { body: keyView(updated, now) };
    },
  }),

  defineRoute({
    method: 'POST',
    path: `${BASE}/keys/{id}/revoke`,
    operationId: 'revokeKey',
    summary: 'Revoke a key',
    description:
      'Revokes the key at once, on every gateway within one poll of the change feed. Revoking a revoked key changes nothing.',
    tag: 'keys',
    scope: 'keys:write',
    query: NoQuery,
    body: RevokeKeyRequest,
    status: 200,
    response: Key,
    async handle(ctx) {
      const target = await visibleKey(ctx, ctx.params.id ?? '');
      // Not bounded by the caller's restrictions: revoking takes power away and hands out
      // nothing, and any key trusted with keys:write here may stop a leaked key at once. It
      // still cannot revoke a key holding a management scope it lacks.
      assertCanModify(ctx.caller, target);
      const now = Date.now();
      const revoked = await ctx.deps.store.revokeKey(target.id, now, ctx.actor);
      if (!revoked) throw notFound('key', target.id);
      await applyChanges(ctx, [target.id]);
      ctx.deps.logger.info(
        { reqId: ctx.requestId, keyId: target.id, by: ctx.caller.id },
        'key revoked through the admin API',
      );
      return { body: keyView(revoked, now) };
    },
  }),

  defineRoute({
    method: 'POST',
    path: `${BASE}/keys/{id}/rotate`,
    operationId: 'rotateKey',
    summary: 'Rotate a key',
    description:
      'Issues a new secret for the same key (id, restrictions and history stay); the previous secret keeps working for the grace period (default 24h).',
    tag: 'keys',
    scope: 'keys:write',
    query: NoQuery,
    body: RotateKeyRequest,
    status: 200,
    conflict:
      'The key is revoked or expired: a revoked key cannot be rotated, and an expired one needs a new expiry first (its new secret would not work).',
    response: RotatedKey,
    async handle(ctx) {
      const target = await visibleKey(ctx, ctx.params.id ?? '');
      // Rotation hands the caller the key's new secret: the key must lie within the caller.
      assertWithinCaller(
        ctx.caller,
        reachOfKey(target),
        `rotate key ${target.id}, which may do more than this key (rotating hands out its new secret)`,
      );
      if (target.revokedAt !== null) {
        throw new AdminError(
          'conflict',
          `Key ${target.id} is revoked and cannot be rotated; create a new key.`,
        );
      }
      const now = Date.now();
      if (target.expiresAt !== null && target.expiresAt <= now) {
        throw new AdminError(
          'conflict',
          `Key ${target.id} expired at ${iso(target.expiresAt)}: a new secret for it would not work. Give it a new expiry first (PATCH with expires_in), then rotate it.`,
        );
      }
      const graceMs = ctx.body.grace === undefined ? DEFAULT_GRACE_MS : durationMs(ctx.body.grace);
      const rotated = await rotateKey(keyDeps(ctx, now), target.id, graceMs, ctx.actor);
      await applyChanges(ctx, [target.id]);
      ctx.deps.logger.info(
        { reqId: ctx.requestId, keyId: target.id, by: ctx.caller.id, graceMs },
        'key rotated through the admin API',
      );
      return {
        body: {
          ...keyView(rotated.record, now),
          key: rotated.key,
          previous_secret_valid_until: iso(now + graceMs),
        },
      };
    },
  }),

  defineRoute({
    method: 'GET',
    path: `${BASE}/workspaces`,
    operationId: 'listWorkspaces',
    summary: 'List workspaces',
    description: 'The calling key’s workspace (every workspace for the operator key).',
    tag: 'workspaces',
    scope: 'workspaces:read',
    query: NoQuery,
    status: 200,
    response: WorkspaceList,
    async handle(ctx) {
      const { store } = ctx.deps;
      const list =
        actsOnAllWorkspaces(ctx.caller) || ctx.operator
          ? await store.listWorkspaces()
          : [await store.getWorkspace(ctx.caller.workspaceId)].filter((w) => w !== undefined);
      return { body: { data: list.map(workspaceView) } };
    },
  }),

  defineRoute({
    method: 'GET',
    path: `${BASE}/workspaces/{id}`,
    operationId: 'getWorkspace',
    summary: 'Get a workspace',
    tag: 'workspaces',
    scope: 'workspaces:read',
    query: NoQuery,
    status: 200,
    response: Workspace,
    async handle(ctx) {
      return { body: workspaceView(await visibleWorkspace(ctx, ctx.params.id ?? '')) };
    },
  }),

  defineRoute({
    method: 'PATCH',
    path: `${BASE}/workspaces/{id}`,
    operationId: 'updateWorkspace',
    summary: 'Update a workspace',
    description:
      'Sets the workspace policy: the longest lifetime of new keys, the default IP allowlist, the shared budget.',
    tag: 'workspaces',
    scope: 'workspaces:write',
    query: NoQuery,
    body: UpdateWorkspaceRequest,
    status: 200,
    response: Workspace,
    async handle(ctx) {
      const { body } = ctx;
      const ws = await visibleWorkspace(ctx, ctx.params.id ?? '');
      const changesPolicy =
        body.max_key_lifetime !== undefined || body.allowed_ips !== undefined || body.budget !== undefined;
      if (changesPolicy && !actsOnAllWorkspaces(ctx.caller) && !ctx.operator) {
        throw new AdminError(
          'forbidden',
          "Only the operator's key (an admin key of ws_default) may change a workspace's lifetime cap, IP allowlist or budget.",
        );
      }
      const patch: WorkspacePatch = {};
      if (body.name !== undefined) patch.name = body.name.trim();
      if (body.max_key_lifetime !== undefined) patch.maxKeyLifetimeMs = lifetimeFrom(body.max_key_lifetime);
      if (body.allowed_ips !== undefined)
        patch.allowedIps = [...new Set(parseCidrs(body.allowed_ips).map((c) => c.text))];
      const budget = budgetFrom(body.budget);
      if (budget !== undefined) patch.budget = budget;
      const updated = await ctx.deps.store.updateWorkspace(ws.id, patch, ctx.actor, Date.now());
      if (!updated) throw notFound('workspace', ws.id);
      await applyChanges(ctx, [ws.id]);
      return { body: workspaceView(updated) };
    },
  }),

  defineRoute({
    method: 'POST',
    path: `${BASE}/workspaces`,
    operationId: 'createWorkspace',
    summary: 'Create a workspace',
    description: 'Only the operator key (an admin key of ws_default) may create workspaces.',
    tag: 'workspaces',
    scope: 'workspaces:write',
    query: NoQuery,
    body: CreateWorkspaceRequest,
    status: 201,
    response: Workspace,
    async handle(ctx) {
      if (!actsOnAllWorkspaces(ctx.caller) && !ctx.operator) {
        throw new AdminError('insufficient_scope', 'Only an admin key of ws_default can create workspaces.', {
          scope: 'admin',
        });
      }
      const created = await createWorkspace(ctx.deps.store, ctx.body.name, ctx.actor);
      return { body: workspaceView(created), headers: { location: `${BASE}/workspaces/${created.id}` } };
    },
  }),

  defineRoute({
    method: 'GET',
    path: `${BASE}/workspaces/{id}/members`,
    operationId: 'listMembers',
    summary: 'List the members of a workspace',
    tag: 'workspaces',
    scope: 'workspaces:read',
    query: NoQuery,
    status: 200,
    response: MemberList,
    async handle(ctx) {
      const ws = await visibleWorkspace(ctx, ctx.params.id ?? '');
      return { body: { data: (await ctx.deps.store.listMembers(ws.id)).map(memberView) } };
    },
  }),

  defineRoute({
    method: 'PUT',
    path: `${BASE}/workspaces/{id}/members/{user}`,
    operationId: 'setMemberRole',
    summary: 'Change a member’s role (the operator: or add an account)',
    description:
      '`user` is a user id or an email address. Owners and admins change the roles of members; people join by invitation (POST /workspaces/{id}/invites). Only the operator adds an existing account directly. Anyone else gets the same 404 whether or not such an account exists. A workspace always keeps one owner.',
    tag: 'workspaces',
    scope: 'workspaces:write',
    query: NoQuery,
    body: SetRoleRequest,
    status: 200,
    response: Member,
    async handle(ctx) {
      const ws = await visibleWorkspace(ctx, ctx.params.id ?? '');
      const user = ctx.params.user ?? '';
      const current = await findMember(ctx, ws.id, user);
      if (!current && !isOperator(ctx)) {
        // Adding someone needs their consent: an invitation they accept while signed in.
        throw noMember(
          ws.id,
          user,
          ` To add someone, invite them (POST /admin/v1/workspaces/${ws.id}/invites): they join when they accept.`,
        );
      }
      assertCanGiveRole(ctx.caller, ctx.body.role, current?.role);
      const member = await setRole(
        ctx.deps.store,
        { workspaceId: ws.id, user: current?.userId ?? user, role: ctx.body.role },
        ctx.actor,
      );
      return { body: memberView(member) };
    },
  }),

  defineRoute({
    method: 'DELETE',
    path: `${BASE}/workspaces/{id}/members/{user}`,
    operationId: 'removeMember',
    summary: 'Remove a member',
    description:
      'The keys the member owns in the workspace (made by them or their keys) are revoked with the membership, each revocation audited. The last owner cannot be removed.',
    tag: 'workspaces',
    scope: 'workspaces:write',
    query: NoQuery,
    status: 200,
    response: Removed,
    async handle(ctx) {
      const ws = await visibleWorkspace(ctx, ctx.params.id ?? '');
      const user = ctx.params.user ?? '';
      const member = await findMember(ctx, ws.id, user);
      if (!member) throw noMember(ws.id, user);
      assertCanAssign(ctx.caller, [member.role]);
      const { revokedKeyIds } = await removeMember(
        ctx.deps.store,
        { workspaceId: ws.id, user: member.userId },
        ctx.actor,
      );
      // The keys they owned here were revoked with the membership: drop them on every gateway now.
      if (revokedKeyIds.length > 0) await applyChanges(ctx, revokedKeyIds);
      return { body: { removed: true as const } };
    },
  }),

  defineRoute({
    method: 'GET',
    path: `${BASE}/audit`,
    operationId: 'listAuditEvents',
    summary: 'Read the audit log',
    description:
      'Who changed what, when and from where; newest first. Events of no workspace (users, console sign-ins) are listed for the operator: its key without `workspace_id`, its console session in ws_default.',
    tag: 'audit',
    scope: 'audit:read',
    query: ListAuditQuery,
    status: 200,
    response: AuditList,
    async handle(ctx) {
      const { query } = ctx;
      const limit = query.limit ?? DEFAULT_PAGE;
      const workspaceId = workspaceFilter(ctx.caller, query.workspace_id);
      const events = await ctx.deps.store.listAudit({
        workspaceId,
        // The operator's console session, in ws_default, also sees the server-wide events
        // (sign-ins, users), as the operator's key does.
        withGlobal: ctx.operator && workspaceId === DEFAULT_WORKSPACE_ID,
        targetId: query.target_id,
        action: query.action,
        since: query.since === undefined ? undefined : Date.parse(query.since),
        before: query.before,
        limit: limit + 1,
      });
      const page = events.slice(0, limit);
      return {
        body: {
          data: page.map(auditView),
          next_before: events.length > limit ? (page.at(-1)?.seq ?? null) : null,
        },
      };
    },
  }),

  defineRoute({
    method: 'GET',
    path: `${BASE}/usage`,
    operationId: 'getUsage',
    summary: 'Usage report',
    description:
      'Requests, errors, tokens, latency (average, p50, p95) and cost, grouped by key (default), model, ' +
      'endpoint, workspace, hour or UTC day, over a time range (default: all recorded usage). Only the ' +
      'usage of the keys the caller may see: its workspace’s, and for a member only their own keys.',
    tag: 'usage',
    scope: 'usage:read',
    query: UsageQuery,
    status: 200,
    response: UsageList,
    async handle(ctx) {
      const { query, deps } = ctx;
      const workspaceId = workspaceFilter(ctx.caller, query.workspace_id);
      if (query.key_id !== undefined) await visibleKey(ctx, query.key_id);
      if (query.since !== undefined && query.from !== undefined)
        throw invalid(['query', 'since'], 'give `from` or `since`, not both');
      const fromText = query.from ?? query.since;
      const from = fromText === undefined ? undefined : Date.parse(fromText);
      const to = query.to === undefined ? undefined : Date.parse(query.to);
      if (from !== undefined && to !== undefined && from >= to)
        throw invalid(['query', 'to'], 'must be later than `from`');
      const report = await deps.store.usageReport({
        by: query.by ?? 'key',
        from,
        to,
        workspaceId,
        keyId: query.key_id,
        model: query.model,
        endpoint: query.endpoint,
        // A member sees the usage of the keys they created only.
        createdBy: ctx.owner?.role === 'member' ? ctx.owner.userId : undefined,
        pricing: deps.pricing,
      });
      return { body: usageReportView(report) };
    },
  }),

  ...INVITE_ROUTES,

  ...ALERT_ROUTES,

  defineRoute({
    method: 'GET',
    path: `${BASE}/openapi.json`,
    operationId: 'getOpenApiDocument',
    summary: 'This API’s OpenAPI 3.1 document',
    description: 'Needs no key.',
    tag: 'meta',
    scope: null,
    query: NoQuery,
    status: 200,
    response: OpenApiDocument,
    async handle() {
      return { body: openApiDocument() };
    },
  }),
];

let document: OpenApiDoc | undefined;

/** The OpenAPI document of ROUTES, built once. */
export function openApiDocument(): OpenApiDoc {
  document ??= buildOpenApi(ROUTES);
  return document;
}
