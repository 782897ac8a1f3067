/**
 * The management API's alert routes: list and acknowledge alerts, manage alert channels, send a
 * test alert, show and change the rules' settings of a workspace. Part of the route table
 * (routes.ts spreads them in).
 *
 * Scopes: reading alerts, channels and rules needs `usage:read` (every role has it); changing
 * channels and rules, acknowledging and test sends need `workspaces:write` (owner and admin). A
 * `member` sees only the alerts about their own keys (and those about no key), as with keys
 * themselves.
 *
 * Rule settings: one `PUT` route per rule kind, each with its own strict body schema, so the
 * OpenAPI document says exactly what each rule takes. A change applies on this gateway at once
 * (the engine's settings cache is told); other processes on the same database within a minute.
 */
import { ChannelInputError, channelView } from '../../alerts/channels.ts';
import { TestSendLimitError } from '../../alerts/notifier.ts';
import { RuleSettingsError, ruleViews, setRuleOverrides } from '../../alerts/rule-settings.ts';
import { RULE_KINDS, type RuleKind } from '../../alerts/rules.ts';
import { addChannel, alertDetail, alertViews, deliveryView } from '../../alerts/service.ts';
import type { Alert } from '../../store/types.ts';
import { canSeeWorkspace, workspaceFilter } from './access.ts';
import { AdminError, invalid, safeId } from './errors.ts';
import { type AnyRoute, type Context, defineRoute } from './router.ts';
import {
  AcknowledgeAlertRequest,
  AlertChannelList,
  AlertDetail,
  AlertList,
  AlertRule,
  AlertRuleList,
  AlertRulesQuery,
  AlertRuleUpdate,
  Alert as AlertSchema,
  CreateAlertChannelRequest,
  CreatedAlertChannel,
  ListAlertChannelsQuery,
  ListAlertsQuery,
  NoQuery,
  Removed,
  TestAlertRequest,
  TestAlertResult,
} from './schemas.ts';

const BASE = '/admin/v1/alerts';
const DEFAULT_LIMIT = 50;

function missing(what: 'alert' | 'alert channel', id: string): AdminError {
  return new AdminError('not_found', `No ${what} with id ${safeId(id)}.`);
}

function dataKeyOf(ctx: Context<unknown, unknown>): Buffer {
  const key = ctx.deps.dataKey;
  if (key === undefined)
    throw new AdminError('internal_error', 'Alert channels are not available on this gateway (no data key).');
  return key;
}

/** A workspace the caller may act on (404 otherwise, whether or not it exists). */
async function visibleWorkspaceId(ctx: Context<unknown, unknown>, id: string | undefined): Promise<string> {
  const wanted = id ?? ctx.caller.workspaceId;
  const ws = canSeeWorkspace(ctx.caller, wanted) ? await ctx.deps.store.getWorkspace(wanted) : undefined;
  if (!ws) throw new AdminError('not_found', `No workspace with id ${safeId(wanted)}.`);
  return ws.id;
}

/** A member sees the alerts about no key or about their own keys. */
async function visibleToOwner(ctx: Context<unknown, unknown>, alert: Alert): Promise<boolean> {
  if (ctx.owner?.role !== 'member' || alert.keyId === null) return true;
  return (await ctx.deps.store.getKey(alert.keyId))?.createdBy === ctx.owner.userId;
}

/** `usage_spike` → `setUsageSpikeRule`. */
function setRuleOperation(kind: RuleKind): string {
  return `set${kind.replace(/(?:^|_)([a-z])/g, (_, c: string) => c.toUpperCase())}Rule`;
}

function setRuleRoute(kind: RuleKind): AnyRoute {
  return defineRoute({
    method: 'PUT',
    path: `${BASE}/rules/${kind}`,
    operationId: setRuleOperation(kind),
    summary: `Set the ${kind} rule of a workspace`,
    description:
      `Replaces the workspace’s settings of the \`${kind}\` rule with the ones given: a setting left out takes its default, so \`{}\` resets the rule. ` +
      'Answers the rule with its effective settings. Recorded in the audit log (`alert_rule.update`). Applies on this gateway at once; other gateway processes on the same database pick it up within a minute.',
    tag: 'alerts',
    scope: 'workspaces:write',
    query: AlertRulesQuery,
    body: AlertRuleUpdate[kind],
    status: 200,
    response: AlertRule,
    async handle(ctx) {
      const workspaceId = await visibleWorkspaceId(ctx, ctx.query.workspace_id);
      try {
        const view = await setRuleOverrides(
          { store: ctx.deps.store },
          { workspaceId, kind, overrides: ctx.body },
          ctx.actor,
        );
        ctx.deps.alerts?.forgetSettings(workspaceId);
        ctx.deps.logger.info(
          { reqId: ctx.requestId, workspaceId, kind, overridden: view.overridden, by: ctx.caller.id },
          'alert rule settings changed through the admin API',
        );
        return { body: view };
      } catch (error) {
        if (error instanceof RuleSettingsError)
          throw invalid(error.field === undefined ? ['body'] : ['body', error.field], error.message);
        throw error;
      }
    },
  });
}

export const ALERT_ROUTES: readonly AnyRoute[] = [
  defineRoute({
    method: 'GET',
    path: BASE,
    operationId: 'listAlerts',
    summary: 'List alerts',
    description:
      'Alerts of the calling key’s workspace (all workspaces for the operator key), most recently seen first.',
    tag: 'alerts',
    scope: 'usage:read',
    query: ListAlertsQuery,
    status: 200,
    response: AlertList,
    async handle(ctx) {
      const { query, deps } = ctx;
      const alerts = await deps.store.listAlerts({
        workspaceId: workspaceFilter(ctx.caller, query.workspace_id),
        kind: query.kind,
        keyId: query.key_id,
        unacknowledged: query.unacknowledged === 'true',
        limit: query.limit ?? DEFAULT_LIMIT,
      });
      const visible: Alert[] = [];
      for (const alert of alerts) if (await visibleToOwner(ctx, alert)) visible.push(alert);
      return { body: { data: await alertViews(deps.store, visible) } };
    },
  }),

  defineRoute({
    method: 'GET',
    path: `${BASE}/{id}`,
    operationId: 'getAlert',
    summary: 'Get an alert with its delivery log',
    description:
      'The alert and every attempt to deliver it (channel, attempt, outcome, status, error, time).',
    tag: 'alerts',
    scope: 'usage:read',
    query: NoQuery,
    status: 200,
    response: AlertDetail,
    async handle(ctx) {
      const id = ctx.params.id ?? '';
      const alert = await ctx.deps.store.getAlert(id);
      if (!alert || !canSeeWorkspace(ctx.caller, alert.workspaceId) || !(await visibleToOwner(ctx, alert))) {
        throw missing('alert', id);
      }
      return { body: await alertDetail(ctx.deps.store, alert) };
    },
  }),

  defineRoute({
    method: 'POST',
    path: `${BASE}/{id}/acknowledge`,
    operationId: 'acknowledgeAlert',
    summary: 'Acknowledge an alert',
    description:
      'Marks the alert as seen (recorded in the audit log). Acknowledging it again changes nothing.',
    tag: 'alerts',
    scope: 'workspaces:write',
    query: NoQuery,
    body: AcknowledgeAlertRequest,
    status: 200,
    response: AlertSchema,
    async handle(ctx) {
      const id = ctx.params.id ?? '';
      const alert = await ctx.deps.store.getAlert(id);
      if (!alert || !canSeeWorkspace(ctx.caller, alert.workspaceId)) throw missing('alert', id);
      const acknowledged = await ctx.deps.store.acknowledgeAlert(id, ctx.actor, Date.now());
      if (!acknowledged) throw missing('alert', id);
      const [view] = await alertViews(ctx.deps.store, [acknowledged]);
      if (!view) throw missing('alert', id);
      return { body: view };
    },
  }),

  defineRoute({
    method: 'GET',
    path: `${BASE}/channels`,
    operationId: 'listAlertChannels',
    summary: 'List alert channels',
    description:
      'Where alerts are sent. No view holds a secret, a URL’s query or credentials, or a password.',
    tag: 'alerts',
    scope: 'usage:read',
    query: ListAlertChannelsQuery,
    status: 200,
    response: AlertChannelList,
    async handle(ctx) {
      const dataKey = dataKeyOf(ctx);
      const workspaceId = workspaceFilter(ctx.caller, ctx.query.workspace_id);
      const channels = await ctx.deps.store.listChannels(workspaceId);
      return { body: { data: channels.map((c) => channelView(c, dataKey)) } };
    },
  }),

  defineRoute({
    method: 'POST',
    path: `${BASE}/channels`,
    operationId: 'createAlertChannel',
    summary: 'Add an alert channel',
    description:
      'A signed JSON webhook, a Slack-compatible incoming webhook, or email over SMTP. The settings are stored sealed; a webhook’s signing secret, when generated, is returned once, in this response.',
    tag: 'alerts',
    scope: 'workspaces:write',
    query: NoQuery,
    body: CreateAlertChannelRequest,
    status: 201,
    response: CreatedAlertChannel,
    async handle(ctx) {
      const { body } = ctx;
      const workspaceId = await visibleWorkspaceId(ctx, body.workspace_id);
      try {
        const created = await addChannel(
          {
            store: ctx.deps.store,
            dataKey: dataKeyOf(ctx),
            ...(ctx.deps.channelRules ? { rules: ctx.deps.channelRules } : {}),
          },
          { type: body.type, name: body.name, url: body.url, secret: body.secret, workspaceId },
          ctx.actor,
        );
        ctx.deps.logger.info(
          { reqId: ctx.requestId, channelId: created.id, type: created.type, by: ctx.caller.id },
          'alert channel added through the admin API',
        );
        return { body: created };
      } catch (error) {
        if (error instanceof ChannelInputError) throw invalid(['body', error.field], error.message);
        throw error;
      }
    },
  }),

  defineRoute({
    method: 'DELETE',
    path: `${BASE}/channels/{id}`,
    operationId: 'deleteAlertChannel',
    summary: 'Remove an alert channel',
    tag: 'alerts',
    scope: 'workspaces:write',
    query: NoQuery,
    status: 200,
    response: Removed,
    async handle(ctx) {
      const id = ctx.params.id ?? '';
      const channel = await ctx.deps.store.getChannel(id);
      if (!channel || !canSeeWorkspace(ctx.caller, channel.workspaceId)) throw missing('alert channel', id);
      if (!(await ctx.deps.store.deleteChannel(id, ctx.actor, Date.now())))
        throw missing('alert channel', id);
      return { body: { removed: true as const } };
    },
  }),

  defineRoute({
    method: 'POST',
    path: `${BASE}/test`,
    operationId: 'sendTestAlert',
    summary: 'Send a test alert',
    description:
      'Raises a `test` alert and sends it once (no retries) to every channel of the workspace; answers how each delivery went.',
    tag: 'alerts',
    scope: 'workspaces:write',
    query: NoQuery,
    body: TestAlertRequest,
    status: 200,
    response: TestAlertResult,
    async handle(ctx) {
      const workspaceId = await visibleWorkspaceId(ctx, ctx.body.workspace_id);
      const notifier = ctx.deps.notifier;
      if (notifier === undefined)
        throw new AdminError('internal_error', 'Alerts cannot be sent from this gateway (no notifier).');
      const results = await notifier.sendTest(workspaceId).catch((error: unknown) => {
        if (!(error instanceof TestSendLimitError)) throw error;
        throw new AdminError('rate_limited', `Too many test alerts: ${error.message}.`, {
          retryAfter: error.retryAfterSeconds,
        });
      });
      return { body: { data: results.map(deliveryView) } };
    },
  }),

  defineRoute({
    method: 'GET',
    path: `${BASE}/rules`,
    operationId: 'listAlertRules',
    summary: 'List the alert rules of a workspace',
    description:
      'Every rule with its effective settings for the workspace: the defaults with the workspace’s own settings laid over them; `overridden` names the ones the workspace sets.',
    tag: 'alerts',
    scope: 'usage:read',
    query: AlertRulesQuery,
    status: 200,
    response: AlertRuleList,
    async handle(ctx) {
      const workspaceId = await visibleWorkspaceId(ctx, ctx.query.workspace_id);
      return { body: { data: await ruleViews(ctx.deps.store, workspaceId) } };
    },
  }),

  ...RULE_KINDS.map(setRuleRoute),
];
