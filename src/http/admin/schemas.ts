/**
 * Every request and response body of the management API, defined once. The same definitions
 * validate requests, type the handlers' results, and generate the OpenAPI document (openapi.ts):
 * each schema registered in `components` becomes `#/components/schemas/<id>`.
 */
import { z } from 'zod';
import { RULE_SETTINGS_SCHEMAS, RULE_UPDATE_SCHEMAS } from '../../alerts/rule-settings.ts';
import type { RuleKind } from '../../alerts/rules.ts';
import { parseCidr } from '../../auth/ip.ts';
import { parseDuration } from '../../config/duration.ts';
import {
  ALERT_KINDS,
  CHANNEL_TYPES,
  INFERENCE_SCOPES,
  MANAGEMENT_SCOPES,
  USAGE_GROUPS,
} from '../../store/types.ts';

/** The named schemas that appear under `components.schemas` in the OpenAPI document. */
export const components = z.registry<{ id: string }>();

function named<T extends z.ZodType>(id: string, schema: T): T {
  components.add(schema, { id });
  return schema;
}

// ---- building blocks -------------------------------------------------------------------------

/** Longest duration accepted anywhere (expiry, grace, workspace lifetime): 100 years. */
export const MAX_DURATION_MS = 36_500 * 86_400_000;
const DURATION_HINT = 'a duration such as "90d", "24h", "30m" or "45s", or a number of seconds';

/** `"90d"` → ms, `3600` (seconds) → ms. */
export function durationMs(value: string | number): number {
  return typeof value === 'number' ? value * 1000 : (parseDuration(value) ?? Number.NaN);
}

function duration(allowZero: boolean, description: string) {
  const text = allowZero
    ? z.string().regex(/^(?:0|\d{1,9}[smhd])$/, { error: `expected ${DURATION_HINT}` })
    : z.string().regex(/^(?!0+[smhd]$)\d{1,9}[smhd]$/, {
        error: `expected ${DURATION_HINT}, greater than zero`,
      });
  const seconds = allowZero
    ? z.int({ error: `expected ${DURATION_HINT}` }).min(0, { error: 'cannot be negative' })
    : z.int({ error: `expected ${DURATION_HINT}` }).positive({ error: 'must be greater than zero' });
  return z
    .union([text, seconds])
    .refine((value) => durationMs(value) <= MAX_DURATION_MS, { error: 'at most 36500d (100 years)' })
    .describe(description);
}

export const scopeSchema = z
  .enum([...INFERENCE_SCOPES, ...MANAGEMENT_SCOPES], {
    error: (issue) =>
      `unknown scope ${JSON.stringify(issue.input)}; scopes are ${[...INFERENCE_SCOPES, ...MANAGEMENT_SCOPES].join(', ')}`,
  })
  .describe('Inference scopes (chat, fim, embeddings, models) or management scopes (admin implies all).');

/** An address or CIDR range, refused with parseCidr's own message (which says what is wrong). */
const cidrSchema = z
  .string()
  .max(64)
  .superRefine((text, ctx) => {
    try {
      parseCidr(text);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
    }
  });

const idSchema = z.string().min(1).max(128);
const nameSchema = z
  .string()
  .trim()
  .min(1, { error: 'cannot be empty' })
  .max(128)
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  .regex(/^[^\u0000-\u001f\u007f]*$/, { error: 'cannot contain control characters' });
const count = z.int().positive({ error: 'must be a positive whole number' });
const timestamp = z.iso.datetime({ offset: true });

// ---- keys ------------------------------------------------------------------------------------

export const KeyLimits = named(
  'KeyLimits',
  z
    .strictObject({
      requests_per_minute: count.nullable(),
      tokens_per_minute: count.nullable(),
      concurrent_requests: count.nullable(),
    })
    .describe('Per-key rate limits; null means no limit.'),
);

export const TokenBudget = named(
  'TokenBudget',
  z
    .strictObject({ tokens_per_day: count.nullable(), tokens_per_month: count.nullable() })
    .describe('Token budgets per UTC day and UTC calendar month; null means no budget.'),
);

export const KeyLimitsInput = named(
  'KeyLimitsInput',
  z
    .strictObject({
      requests_per_minute: count.nullable().optional(),
      tokens_per_minute: count.nullable().optional(),
      concurrent_requests: count.nullable().optional(),
    })
    .describe('Rate limits to set; an absent field is unchanged, null removes the limit.'),
);

export const TokenBudgetInput = named(
  'TokenBudgetInput',
  z
    .strictObject({
      tokens_per_day: count.nullable().optional(),
      tokens_per_month: count.nullable().optional(),
    })
    .describe('Budgets to set; an absent field is unchanged, null removes the budget.'),
);

const keyFields = {
  scopes: z.array(scopeSchema).min(1).max(20).describe('Default: chat, fim, embeddings, models.'),
  models: z
    .array(z.string().min(1).max(200))
    .max(100)
    .describe('Allowed model ids or patterns such as "mistral-small-*"; empty allows every model.'),
  allowed_ips: z
    .array(cidrSchema)
    .max(100)
    .describe('Allowed client addresses (CIDR); empty falls back to the workspace allowlist.'),
  limits: KeyLimitsInput.nullable().describe('null removes every rate limit.'),
  budget: TokenBudgetInput.nullable().describe('null removes both budgets.'),
};

export const CreateKeyRequest = named(
  'CreateKeyRequest',
  z
    .strictObject({
      name: nameSchema.describe('Who or what uses the key.'),
      workspace_id: idSchema
        .optional()
        .describe('Workspace of the new key; default: the workspace of the calling key.'),
      scopes: keyFields.scopes.optional(),
      models: keyFields.models.optional(),
      allowed_ips: keyFields.allowed_ips.optional(),
      limits: keyFields.limits.optional(),
      budget: keyFields.budget.optional(),
      expires_in: duration(false, 'Lifetime from now; absent or null: no expiry (if the workspace allows).')
        .nullable()
        .optional(),
    })
    .describe('A new key. The calling key cannot grant management scopes it does not have itself.'),
);

export const UpdateKeyRequest = named(
  'UpdateKeyRequest',
  z
    .strictObject({
      name: nameSchema.optional(),
      scopes: keyFields.scopes.optional(),
      models: keyFields.models.optional(),
      allowed_ips: keyFields.allowed_ips.optional(),
      limits: keyFields.limits.optional(),
      budget: keyFields.budget.optional(),
      expires_in: duration(false, 'New lifetime from now; null removes the expiry.').nullable().optional(),
    })
    .describe('Fields to change; absent fields stay as they are. A key cannot move between workspaces.'),
);

export const RotateKeyRequest = named(
  'RotateKeyRequest',
  z
    .strictObject({
      grace: duration(
        true,
        'How long the previous secret keeps working; default "24h", 0 ends it at once.',
      ).optional(),
    })
    .describe('The body may be empty.'),
);

export const RevokeKeyRequest = named(
  'RevokeKeyRequest',
  z.strictObject({}).describe('No fields; the body may be empty.'),
);

const keyStatus = z.enum(['active', 'revoked', 'expired']);

export const Key = named(
  'Key',
  z
    .strictObject({
      id: z.string(),
      name: z.string(),
      workspace_id: z.string(),
      display: z.string().describe('Non-secret hint: the first and last characters of the secret.'),
      status: keyStatus,
      scopes: z.array(scopeSchema),
      models: z.array(z.string()),
      allowed_ips: z.array(z.string()),
      limits: KeyLimits,
      budget: TokenBudget,
      created_at: timestamp.nullable(),
      created_by: z.string().nullable(),
      updated_at: timestamp.nullable(),
      rotated_at: timestamp.nullable(),
      expires_at: timestamp.nullable(),
      revoked_at: timestamp.nullable(),
      last_used_at: timestamp.nullable(),
      last_used_ip: z.string().nullable(),
    })
    .describe('A key without its secret (the same view as `keygate keys show --json`).'),
);

const secretField = z.string().describe('The secret. Shown once, in this response only; never stored.');

export const CreatedKey = named(
  'CreatedKey',
  Key.extend({ key: secretField }).describe('The new key with its secret.'),
);

export const RotatedKey = named(
  'RotatedKey',
  Key.extend({
    key: secretField,
    previous_secret_valid_until: timestamp.describe('Until when the previous secret keeps working.'),
  }).describe('The key with its new secret.'),
);

export const KeyList = named(
  'KeyList',
  z.strictObject({
    data: z.array(Key),
    next_after: z.string().nullable().describe('Pass as `after` for the next page; null on the last page.'),
  }),
);

export const ListKeysQuery = z.strictObject({
  status: keyStatus.optional().describe('Only keys with this status.'),
  search: z
    .string()
    .max(200)
    .optional()
    .describe('Case-insensitive substring of the name, or an exact id or display prefix.'),
  workspace_id: idSchema.optional().describe('Only keys of this workspace.'),
  limit: z.coerce.number().int().min(1).max(500).optional().describe('Page size, 1 to 500 (default 50).'),
  after: idSchema.optional().describe('The `next_after` of the previous page.'),
});

// ---- workspaces ------------------------------------------------------------------------------

export const Workspace = named(
  'Workspace',
  z
    .strictObject({
      id: z.string(),
      name: z.string(),
      created_at: timestamp.nullable(),
      policy: z.strictObject({
        max_key_lifetime: z
          .string()
          .nullable()
          .describe('Longest lifetime of a new key, e.g. "90d"; null: unlimited.'),
        allowed_ips: z.array(z.string()).describe('IP allowlist of keys that have none of their own.'),
        budget: TokenBudget.describe('Budget shared by all keys of the workspace.'),
      }),
    })
    .describe('A workspace (the same view as `keygate workspaces show --json`).'),
);

export const WorkspaceList = named('WorkspaceList', z.strictObject({ data: z.array(Workspace) }));

export const UpdateWorkspaceRequest = named(
  'UpdateWorkspaceRequest',
  z
    .strictObject({
      name: nameSchema.optional(),
      max_key_lifetime: duration(false, 'Longest lifetime of a new key; null: unlimited.')
        .nullable()
        .optional(),
      allowed_ips: keyFields.allowed_ips
        .optional()
        .describe('Default allowlist for keys without their own; empty: anywhere.'),
      budget: TokenBudgetInput.nullable().optional().describe('Workspace budget; null removes both.'),
    })
    .describe('Fields to change; absent fields stay as they are.'),
);

// ---- audit and usage -------------------------------------------------------------------------

export const AuditEvent = named(
  'AuditEvent',
  z.strictObject({
    id: z.string(),
    seq: z.int().describe('Position in the log; pass as `before` to page backwards.'),
    at: timestamp,
    workspace_id: z.string().nullable(),
    actor: z.strictObject({
      type: z.enum(['user', 'key', 'cli', 'system']),
      id: z.string().nullable(),
      ip: z.string().nullable(),
    }),
    action: z.string().describe('e.g. key.create, key.update, key.rotate, key.revoke, workspace.update'),
    target: z.strictObject({
      type: z.enum(['key', 'workspace', 'user', 'membership', 'alert', 'channel', 'session', 'invite']),
      id: z.string().nullable(),
    }),
    changes: z
      .record(z.string(), z.strictObject({ before: z.unknown().optional(), after: z.unknown().optional() }))
      .describe('Each changed field with its value before and after (never a secret).'),
  }),
);

export const AuditList = named(
  'AuditList',
  z.strictObject({
    data: z.array(AuditEvent).describe('Newest first.'),
    next_before: z.int().nullable().describe('Pass as `before` for the next (older) page; null on the last.'),
  }),
);

export const ListAuditQuery = z.strictObject({
  target_id: idSchema.optional().describe('Only events about this key or workspace.'),
  action: z.string().max(64).optional().describe('Only this action, e.g. key.revoke.'),
  since: timestamp.optional().describe('Only events at or after this time (ISO 8601).'),
  workspace_id: idSchema.optional().describe('Only events of this workspace.'),
  limit: z.coerce.number().int().min(1).max(500).optional().describe('Page size, 1 to 500 (default 50).'),
  before: z.coerce.number().int().min(1).optional().describe('The `next_before` of the previous page.'),
});

const nullableGroup = (what: string) => z.string().nullable().optional().describe(what);

export const UsageRow = named(
  'UsageRow',
  z
    .strictObject({
      key_id: nullableGroup('By key: the key (null: requests made without one).'),
      model: nullableGroup('By model: the model requested (null: requests without one).'),
      endpoint: nullableGroup('By endpoint: the path, e.g. /v1/chat/completions.'),
      workspace_id: nullableGroup('By workspace: the workspace.'),
      hour: timestamp.optional().describe('By hour: the start of the hour (UTC).'),
      day: z.iso.date().optional().describe('By day: the UTC day, YYYY-MM-DD.'),
      name: z.string().nullable().optional().describe('By key or workspace: its name.'),
      requests: z.int(),
      errors: z.int().describe('Requests answered with a status of 400 or more.'),
      prompt_tokens: z.int(),
      completion_tokens: z.int(),
      total_tokens: z.int(),
      estimated_requests: z
        .int()
        .describe('Requests whose tokens are estimated: streams cut off before the usage report.'),
      latency_avg_ms: z.number().nullable(),
      latency_p50_ms: z
        .number()
        .nullable()
        .describe(
          'Median latency, from the latency histogram: within one bucket (about ×1.5) of the exact value.',
        ),
      latency_p95_ms: z.number().nullable().describe('95th percentile latency, likewise.'),
      cost: z
        .number()
        .nullable()
        .describe(
          'In `currency`, from the price table (config `pricing`); null when the row holds tokens of a model without a price.',
        ),
      currency: z.string(),
    })
    .describe('One group: its first field names it (key_id, model, endpoint, workspace_id, hour or day).'),
);

export const UsageList = named(
  'UsageList',
  z.strictObject({
    by: z.enum(USAGE_GROUPS),
    from: timestamp.nullable().describe('Start of the range (inclusive); null: from the first record.'),
    to: timestamp.nullable().describe('End of the range (exclusive); null: up to the last record.'),
    currency: z.string().describe('The currency of `cost` (config `pricing.currency`).'),
    data: z
      .array(UsageRow)
      .describe('Hours and days in time order; other groups by total tokens, most first.'),
  }),
);

const timeOrDate = z
  .union([timestamp, z.iso.date()])
  .describe('ISO 8601: a time with its offset, or a date (its UTC midnight).');

export const UsageQuery = z.strictObject({
  by: z
    .enum(USAGE_GROUPS, {
      error: (issue) =>
        `unknown grouping ${JSON.stringify(issue.input)}; group by ${USAGE_GROUPS.join(', ')}`,
    })
    .optional()
    .describe('What each row is: key (default), model, endpoint, workspace, hour or day (UTC).'),
  from: timeOrDate.optional().describe('Only requests at or after this time.'),
  to: timeOrDate.optional().describe('Only requests before this time.'),
  since: timestamp.optional().describe('The same as `from` (give one or the other).'),
  key_id: idSchema.optional().describe('Only this key.'),
  workspace_id: idSchema.optional().describe('Only keys of this workspace.'),
  model: z
    .string()
    .max(200)
    .regex(/^[A-Za-z0-9._:\-*/]+$/, { error: 'a model id or pattern: letters, digits, . _ : - / and *' })
    .optional()
    .describe('Only this model, or the models matching a pattern such as mistral-small-*.'),
  endpoint: z.string().max(256).optional().describe('Only this endpoint, e.g. /v1/chat/completions.'),
});

export const NoQuery = z.strictObject({});

// ---- errors and the document itself ----------------------------------------------------------

const errorFields = {
  message: z.string(),
  type: z.string(),
  param: z.string().nullable(),
  code: z.string(),
};

export const ErrorResponse = named(
  'Error',
  z
    .strictObject({
      object: z.literal('error'),
      ...errorFields,
      error: z.strictObject(errorFields),
    })
    .describe('An error, in the shape of the upstream API (and readable by the OpenAI SDKs).'),
);

export const ValidationError = named(
  'ValidationError',
  ErrorResponse.extend({
    detail: z.array(
      z.strictObject({
        loc: z
          .array(z.union([z.string(), z.int()]))
          .describe('e.g. ["body", "limits", "requests_per_minute"]'),
        msg: z.string(),
        type: z.string(),
      }),
    ),
  }).describe('A request that failed validation (code validation_error).'),
);

export const OpenApiDocument = z
  .looseObject({ openapi: z.string(), info: z.looseObject({}), paths: z.looseObject({}) })
  .describe('This document.');

export const CreateWorkspaceRequest = named(
  'CreateWorkspaceRequest',
  z.strictObject({ name: nameSchema }).describe('A new workspace; its policy starts empty (see PATCH).'),
);

const role = z.enum(['owner', 'admin', 'member', 'viewer']);

export const Member = named(
  'Member',
  z.strictObject({
    user_id: z.string(),
    email: z.string(),
    role,
    since: timestamp.nullable(),
  }),
);

export const MemberList = named('MemberList', z.strictObject({ data: z.array(Member) }));

export const SetRoleRequest = named(
  'SetRoleRequest',
  z.strictObject({ role: role.describe('owner, admin, member or viewer') }),
);

export const Removed = named('Removed', z.strictObject({ removed: z.literal(true) }));

export const CreateInviteRequest = named(
  'CreateInviteRequest',
  z.strictObject({
    email: z.string().min(3).max(254).describe('Who is invited; they sign in with this address.'),
    role: role.describe('owner, admin, member or viewer'),
  }),
);

const inviteFields = {
  id: z.string(),
  workspace_id: z.string(),
  email: z.string(),
  role,
  created_by: z.string().nullable(),
  created_at: timestamp,
  expires_at: timestamp,
  accepted_at: timestamp.nullable(),
  revoked_at: timestamp.nullable(),
  status: z.enum(['open', 'accepted', 'revoked', 'expired']),
};

export const Invite = named('Invite', z.strictObject(inviteFields));

export const CreatedInvite = named(
  'CreatedInvite',
  z.strictObject({
    ...inviteFields,
    token: z
      .string()
      .describe(
        'The invitation token, shown only here. The invitee opens /console/invite#<token> (in the fragment, so it reaches no server log).',
      ),
  }),
);

export const InviteList = named('InviteList', z.strictObject({ data: z.array(Invite) }));

// ---- alerts and alert channels ---------------------------------------------------------------

const alertKind = z.enum(ALERT_KINDS);
const channelType = z.enum(CHANNEL_TYPES);

export const AlertKey = named(
  'AlertKey',
  z
    .strictObject({ id: z.string(), name: z.string().nullable() })
    .describe('The key an alert is about, by id and name (never its secret).'),
);

export const Alert = named(
  'Alert',
  z
    .strictObject({
      id: z.string(),
      workspace_id: z.string(),
      kind: alertKind,
      severity: z.enum(['info', 'warning', 'critical']),
      title: z.string(),
      message: z.string().describe('What happened.'),
      key: AlertKey.nullable(),
      action: z.string().describe('What to do about it.'),
      details: z.record(z.string(), z.unknown()),
      first_at: timestamp.nullable(),
      last_at: timestamp.nullable().describe('Repeats within the cooldown are folded into one alert.'),
      occurrences: z.int(),
      acknowledged_at: timestamp.nullable(),
      acknowledged_by: z.string().nullable(),
    })
    .describe('An alert (the same view as `keygate alerts list --json`).'),
);

export const AlertList = named(
  'AlertList',
  z.strictObject({ data: z.array(Alert).describe('Newest first.') }),
);

export const ListAlertsQuery = z.strictObject({
  workspace_id: idSchema.optional().describe('Only alerts of this workspace.'),
  kind: alertKind.optional().describe('Only alerts of this kind.'),
  key_id: idSchema.optional().describe('Only alerts about this key.'),
  unacknowledged: z.enum(['true', 'false']).optional().describe('"true": only alerts not yet acknowledged.'),
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(500)
    .optional()
    .describe('At most this many, 1 to 500 (default 50).'),
});

export const ListAlertChannelsQuery = z.strictObject({
  workspace_id: idSchema.optional().describe('Only channels of this workspace.'),
});

export const AcknowledgeAlertRequest = named(
  'AcknowledgeAlertRequest',
  z.strictObject({}).describe('No fields; the body may be empty.'),
);

export const AlertChannel = named(
  'AlertChannel',
  z
    .strictObject({
      id: z.string(),
      workspace_id: z.string(),
      type: channelType,
      name: z.string(),
      target: z
        .string()
        .describe(
          'Where it sends: the URL’s origin and path (token-like segments masked), or smtp(s)://host:port. Never a secret.',
        ),
      email: z
        .strictObject({ from: z.string(), to: z.array(z.string()), authenticated: z.boolean() })
        .nullable()
        .describe('Email channels: sender and recipients; null for other types.'),
      created_at: timestamp.nullable(),
    })
    .describe('An alert channel. Its settings are stored sealed; no view shows a secret.'),
);

export const CreatedAlertChannel = named(
  'CreatedAlertChannel',
  AlertChannel.extend({
    secret: z
      .string()
      .nullable()
      .describe('A webhook’s generated signing secret: shown once, in this response only. null otherwise.'),
  }),
);

export const AlertChannelList = named('AlertChannelList', z.strictObject({ data: z.array(AlertChannel) }));

export const CreateAlertChannelRequest = named(
  'CreateAlertChannelRequest',
  z
    .strictObject({
      type: channelType,
      name: nameSchema.optional().describe('Default: the type and the host.'),
      url: z
        .string()
        .min(1)
        .max(2048)
        .describe(
          'webhook, slack: https:// (http:// for loopback only). email: smtp://[user:pass@]host[:port]?from=ADDR&to=ADDR[,ADDR] or smtps://…',
        ),
      secret: z
        .string()
        .min(16)
        .max(256)
        .optional()
        .describe('Webhook only: the signing secret; generated (and returned once) when absent.'),
      workspace_id: idSchema.optional().describe('Default: the workspace of the calling key.'),
    })
    .describe('A new alert channel.'),
);

export const TestAlertRequest = named(
  'TestAlertRequest',
  z
    .strictObject({
      workspace_id: idSchema.optional().describe('Default: the workspace of the calling key.'),
    })
    .describe('The body may be empty.'),
);

/** A delivery's outcome as a fixed word: never what the receiver answered (a body, a banner). */
const deliveryReason = z
  .string()
  .regex(
    /^(?:delivered|refused_by_policy|unreachable|unreadable_settings|failed|http_[1-5]\d\d|smtp_[1-5]\d\d)$/,
  )
  .describe(
    '`delivered`; `refused_by_policy` (the destination is not allowed: the operator’s alerts.allowedDestinations); `unreachable` (no connection, no TLS or no answer in time); `http_<status>` or `smtp_<code>` (what the receiver answered, as a number only); `unreadable_settings`; `failed`.',
  );

export const AlertDeliveryResult = named(
  'AlertDeliveryResult',
  z.strictObject({
    channel_id: z.string(),
    name: z.string(),
    type: channelType,
    outcome: z.enum(['sent', 'failed']),
    reason: deliveryReason,
    status: z.int().nullable().describe('HTTP status or SMTP reply code, when there was one.'),
    error: z.string().nullable(),
  }),
);

export const TestAlertResult = named(
  'TestAlertResult',
  z.strictObject({
    data: z.array(AlertDeliveryResult).describe('One result per channel; empty when there is none.'),
  }),
);

// ---- alert rule settings ---------------------------------------------------------------------

/** `usage_spike` → `UsageSpike`, for the component names. */
function pascal(kind: RuleKind): string {
  return kind.replace(/(?:^|_)([a-z])/g, (_, c: string) => c.toUpperCase());
}

for (const [kind, schema] of Object.entries(RULE_SETTINGS_SCHEMAS))
  named(`${pascal(kind as RuleKind)}RuleSettings`, schema);
for (const [kind, schema] of Object.entries(RULE_UPDATE_SCHEMAS))
  named(`${pascal(kind as RuleKind)}RuleUpdate`, schema);

/** The request body of `PUT /admin/v1/alerts/rules/{kind}`, per kind. */
export const AlertRuleUpdate = RULE_UPDATE_SCHEMAS;

function ruleViewOf<K extends RuleKind>(kind: K) {
  const settings = RULE_SETTINGS_SCHEMAS[kind];
  return z.strictObject({
    kind: z.literal(kind),
    workspace_id: z.string(),
    description: z.string().describe('What the rule watches.'),
    settings,
    defaults: settings,
    overridden: z
      .array(z.enum(Object.keys(settings.shape) as [string, ...string[]]))
      .describe('The settings the workspace sets; the others are the defaults.'),
  });
}

export const AlertRule = named(
  'AlertRule',
  z
    .discriminatedUnion('kind', [
      ruleViewOf('usage_spike'),
      ruleViewOf('budget_threshold'),
      ruleViewOf('new_network'),
      ruleViewOf('auth_failures'),
      ruleViewOf('key_expiring'),
    ])
    .describe(
      'An alert rule of a workspace (the same view as `keygate alerts rules --json`): `settings` are the effective ones (the defaults with the workspace’s overrides laid over them), `defaults` the defaults.',
    ),
);

export const AlertRuleList = named(
  'AlertRuleList',
  z.strictObject({ data: z.array(AlertRule).describe('Every rule, in a fixed order.') }),
);

export const AlertRulesQuery = z.strictObject({
  workspace_id: idSchema.optional().describe('The workspace (default: the calling key’s).'),
});

export const AlertDetail = named(
  'AlertDetail',
  z.strictObject({
    alert: Alert,
    deliveries: z
      .array(
        z.strictObject({
          channel_id: z.string(),
          attempt: z.number().int(),
          outcome: z.enum(['sent', 'failed']),
          reason: deliveryReason,
          status: z.number().int().nullable().describe('HTTP status or SMTP reply code, when there was one'),
          error: z.string().nullable(),
          at: z.string(),
        }),
      )
      .describe('Every delivery attempt to every channel, newest first.'),
  }),
);
