/**
 * Invitations to a workspace: an owner or admin invites an email address with a role; the
 * invitee redeems the token (shown once) in the console, creating an account if they have none,
 * or signed in to the one they have: joining a workspace takes the invitee's consent, which is why
 * a tenant's owners and admins invite rather than add accounts (only the operator adds directly).
 * A caller cannot invite with a role whose powers it lacks, nor, if it is a restricted key, with
 * any role (a member's session has no restrictions): `assertCanGiveRole`.
 */
import { INVITE_TTL_MS, newInviteToken } from '../../console/api.ts';
import type { Invite } from '../../store/types.ts';
import { normaliseEmail } from '../../users/service.ts';
import { newId } from '../../util/ids.ts';
import { assertCanGiveRole, canSeeWorkspace } from './access.ts';
import { AdminError, notFound, safeId } from './errors.ts';
import { type AnyRoute, type Context, defineRoute } from './router.ts';
import { CreatedInvite, CreateInviteRequest, InviteList, NoQuery, Removed } from './schemas.ts';

const BASE = '/admin/v1/workspaces/{id}/invites';

async function visibleWorkspaceId(ctx: Context<unknown, unknown>): Promise<string> {
  const id = ctx.params.id ?? '';
  const ws = canSeeWorkspace(ctx.caller, id) ? await ctx.deps.store.getWorkspace(id) : undefined;
  if (!ws) throw notFound('workspace', id);
  return ws.id;
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

export function inviteView(invite: Invite, now = Date.now()) {
  return {
    id: invite.id,
    workspace_id: invite.workspaceId,
    email: invite.email,
    role: invite.role,
    created_by: invite.createdBy,
    created_at: new Date(invite.createdAt).toISOString(),
    expires_at: new Date(invite.expiresAt).toISOString(),
    accepted_at: iso(invite.acceptedAt),
    revoked_at: iso(invite.revokedAt),
    status:
      invite.acceptedAt !== null
        ? ('accepted' as const)
        : invite.revokedAt !== null
          ? ('revoked' as const)
          : invite.expiresAt <= now
            ? ('expired' as const)
            : ('open' as const),
  };
}

export const INVITE_ROUTES: AnyRoute[] = [
  defineRoute({
    method: 'POST',
    path: BASE,
    operationId: 'createInvite',
    summary: 'Invite someone to a workspace',
    description:
      'Creates an invitation valid for 7 days. The answer holds the token, shown only here: the invitee opens /console/invite#<token> and accepts, signed in to their account or creating one. A caller cannot invite with a role whose powers it lacks, and a restricted key cannot invite (a member’s session has no restrictions).',
    tag: 'workspaces',
    scope: 'workspaces:write',
    query: NoQuery,
    body: CreateInviteRequest,
    status: 201,
    response: CreatedInvite,
    async handle(ctx) {
      const workspaceId = await visibleWorkspaceId(ctx);
      assertCanGiveRole(ctx.caller, ctx.body.role, undefined);
      const email = normaliseEmail(ctx.body.email);
      // Read off the member list, not the user table: whether the email has an account anywhere
      // (another tenant's, say) changes nothing in the answer.
      if ((await ctx.deps.store.listMembers(workspaceId)).some((m) => m.email === email)) {
        throw new AdminError('conflict', `${email} is a member of this workspace already.`);
      }
      const { token, hash } = newInviteToken();
      const now = Date.now();
      const invite = await ctx.deps.store.createInvite(
        {
          id: newId('inv'),
          tokenHash: hash,
          workspaceId,
          email,
          role: ctx.body.role,
          createdBy: ctx.owner?.userId ?? ctx.caller.id,
          createdAt: now,
          expiresAt: now + INVITE_TTL_MS,
          acceptedAt: null,
          revokedAt: null,
        },
        ctx.actor,
      );
      ctx.deps.logger.info({ reqId: ctx.requestId, inviteId: invite.id, workspaceId }, 'invitation created');
      return { body: { ...inviteView(invite, now), token } };
    },
  }),

  defineRoute({
    method: 'GET',
    path: BASE,
    operationId: 'listInvites',
    summary: 'List a workspace’s invitations',
    description: 'Newest first, with their status (open, accepted, revoked, expired); never their tokens.',
    tag: 'workspaces',
    scope: 'workspaces:read',
    query: NoQuery,
    status: 200,
    response: InviteList,
    async handle(ctx) {
      const workspaceId = await visibleWorkspaceId(ctx);
      const now = Date.now();
      return {
        body: { data: (await ctx.deps.store.listInvites(workspaceId)).map((i) => inviteView(i, now)) },
      };
    },
  }),

  defineRoute({
    method: 'DELETE',
    path: `${BASE}/{invite_id}`,
    operationId: 'revokeInvite',
    summary: 'Revoke an open invitation',
    tag: 'workspaces',
    scope: 'workspaces:write',
    query: NoQuery,
    status: 200,
    response: Removed,
    async handle(ctx) {
      const workspaceId = await visibleWorkspaceId(ctx);
      const id = ctx.params.invite_id ?? '';
      if (!(await ctx.deps.store.revokeInvite(workspaceId, id, ctx.actor, Date.now()))) {
        throw new AdminError('not_found', `No open invitation with id ${safeId(id)} in this workspace.`);
      }
      return { body: { removed: true as const } };
    },
  }),
];
