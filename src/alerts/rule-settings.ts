/**
 * Rule settings per workspace, as the CLI (`keygate alerts rules …`) and the management API
 * (`/admin/v1/alerts/rules`) show and change them.
 *
 * The store keeps, per workspace and rule, only the settings that differ from the defaults (the
 * "overrides"), under the engine's names (`minRequests`); views and request bodies use the API's
 * names (`min_requests`). Setting a rule replaces its overrides as a whole: a setting left out takes
 * its default, and `{}` resets the rule. Each change is recorded in the audit log by the store
 * (`alert_rule.update`).
 *
 * What each setting accepts is in rules.ts (`SETTING_SPECS`); the zod schemas here are built from
 * it, so the API, the CLI and the engine agree.
 */
import { z } from 'zod';
import type { Actor, Store } from '../store/types.ts';
import { UserInputError } from '../users/service.ts';
import {
  DEFAULT_RULES,
  mergeSettings,
  RULE_DESCRIPTIONS,
  RULE_KINDS,
  type RuleKind,
  SETTING_SPECS,
  type SettingSpec,
  settingNames,
  validOverrides,
} from './rules.ts';

/** A setting's value as views and bodies carry it. */
export type SettingValue = boolean | number | number[];

/** A setting of a request body that is wrong; `field` is its API name (`min_requests`). */
export class RuleSettingsError extends UserInputError {
  override name = 'RuleSettingsError';
  readonly field: string | undefined;
  constructor(field: string | undefined, message: string) {
    super(message);
    this.field = field;
  }
}

/** `minRequests` → `min_requests`. */
export function apiName(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** `min_requests` → `minRequests`. */
export function storedName(name: string): string {
  return name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

export function isRuleKind(value: string): value is RuleKind {
  return (RULE_KINDS as readonly string[]).includes(value);
}

/** The API names of a rule's settings, in listing order. */
export function apiNames(kind: RuleKind): string[] {
  return settingNames(kind).map(apiName);
}

function range(spec: { min: number; max: number; unit?: string }): string {
  return `must be ${spec.min} to ${spec.max}${spec.unit === undefined ? '' : ` ${spec.unit}`}`;
}

function fieldSchema(spec: SettingSpec): z.ZodType {
  switch (spec.type) {
    case 'boolean':
      return z.boolean({ error: 'must be true or false' }).describe(spec.description);
    case 'integer':
      return z
        .int({ error: 'must be a whole number' })
        .min(spec.min, { error: range(spec) })
        .max(spec.max, { error: range(spec) })
        .describe(spec.description);
    case 'number':
      return z
        .number({ error: 'must be a number' })
        .min(spec.min, { error: range(spec) })
        .max(spec.max, { error: range(spec) })
        .describe(spec.description);
    case 'percentages': {
      const each = `each percentage must be a whole number from ${spec.min} to ${spec.max}`;
      return z
        .array(z.int({ error: each }).min(spec.min, { error: each }).max(spec.max, { error: each }), {
          error: 'must be a list of percentages',
        })
        .min(1, { error: 'needs at least one percentage' })
        .max(spec.maxItems, { error: `takes at most ${spec.maxItems} percentages` })
        .refine((list) => list.every((v, i) => i === 0 || v > (list[i - 1] ?? 0)), {
          error: 'must be in increasing order without repeats, e.g. 50,80,100',
        })
        .describe(spec.description);
    }
  }
}

type Shape = Record<string, z.ZodType>;

function shapeOf(kind: RuleKind, optional: boolean): Shape {
  const specs = SETTING_SPECS[kind] as Readonly<Record<string, SettingSpec>>;
  const shape: Shape = {};
  for (const [name, spec] of Object.entries(specs)) {
    const schema = fieldSchema(spec);
    shape[apiName(name)] = optional ? schema.optional() : schema;
  }
  return shape;
}

function perKind<T>(make: (kind: RuleKind) => T): Record<RuleKind, T> {
  return Object.fromEntries(RULE_KINDS.map((kind) => [kind, make(kind)])) as Record<RuleKind, T>;
}

/** A rule's settings, every one of them (views: effective settings and defaults). */
export const RULE_SETTINGS_SCHEMAS = perKind((kind) =>
  z.strictObject(shapeOf(kind, false)).describe(`The settings of the ${kind} rule.`),
);

/** A request body: a rule's overrides for a workspace, each optional (left out: the default). */
export const RULE_UPDATE_SCHEMAS = perKind((kind) =>
  z
    .strictObject(shapeOf(kind, true))
    .describe(
      `The workspace's settings of the ${kind} rule. They replace its earlier ones: a setting left out takes its default, and {} resets the rule.`,
    ),
);

// ---- views ---------------------------------------------------------------------------------------

export interface RuleView {
  kind: RuleKind;
  workspace_id: string;
  description: string;
  /** The effective settings: the defaults with the workspace's overrides laid over them. */
  settings: Record<string, SettingValue>;
  defaults: Record<string, SettingValue>;
  /** The API names of the settings the workspace sets (the others are the defaults). */
  overridden: string[];
}

function apiSettings(values: object): Record<string, SettingValue> {
  const out: Record<string, SettingValue> = {};
  for (const [name, value] of Object.entries(values)) out[apiName(name)] = structuredClone(value);
  return out;
}

/** A rule as a workspace has it, from the workspace's stored overrides of that rule. */
export function ruleView(
  kind: RuleKind,
  workspaceId: string,
  stored: Record<string, unknown> | undefined,
): RuleView {
  const valid = validOverrides(kind, stored);
  return {
    kind,
    workspace_id: workspaceId,
    description: RULE_DESCRIPTIONS[kind],
    settings: apiSettings(mergeSettings({ [kind]: valid })[kind]),
    defaults: apiSettings(DEFAULT_RULES[kind]),
    overridden: settingNames(kind)
      .filter((name) => name in valid)
      .map(apiName),
  };
}

/** A rule's overrides in the API's names (what a body to set it again would hold). */
export function overridesOf(view: Pick<RuleView, 'settings' | 'overridden'>): Record<string, SettingValue> {
  const out: Record<string, SettingValue> = {};
  for (const name of view.overridden) {
    const value = view.settings[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}

/** Validates a body of overrides for a rule; throws RuleSettingsError naming the first bad setting. */
export function parseOverrides(kind: RuleKind, body: unknown): Record<string, SettingValue> {
  const result = RULE_UPDATE_SCHEMAS[kind].safeParse(body);
  if (result.success) {
    const out: Record<string, SettingValue> = {};
    for (const [name, value] of Object.entries(result.data))
      if (value !== undefined) out[name] = value as SettingValue;
    return out;
  }
  const issue = result.error.issues[0];
  if (issue?.code === 'unrecognized_keys') {
    const name = issue.keys[0] ?? '';
    throw new RuleSettingsError(
      name,
      `the ${kind} rule has no setting "${name.slice(0, 64)}" (its settings: ${apiNames(kind).join(', ')})`,
    );
  }
  const field = typeof issue?.path[0] === 'string' ? issue.path[0] : undefined;
  throw new RuleSettingsError(field, issue?.message ?? 'invalid settings');
}

// ---- operations (CLI on the data directory, and the management API) -----------------------------

async function existingWorkspace(store: Pick<Store, 'getWorkspace'>, workspaceId: string): Promise<string> {
  const ws = await store.getWorkspace(workspaceId);
  if (!ws) throw new UserInputError(`no workspace with id ${workspaceId}`, 'not_found');
  return ws.id;
}

/** Every rule of a workspace with its effective settings. */
export async function ruleViews(
  store: Pick<Store, 'getWorkspace' | 'ruleSettings'>,
  workspaceId: string,
): Promise<RuleView[]> {
  const id = await existingWorkspace(store, workspaceId);
  const stored = await store.ruleSettings(id);
  return RULE_KINDS.map((kind) => ruleView(kind, id, stored[kind]));
}

/**
 * Replaces a workspace's overrides of a rule (`{}`: back to the defaults), validated; the store
 * records the change in the audit log. A running engine caches settings for up to a minute: the
 * caller tells it (`AlertEngine.forgetSettings`) when it can.
 */
export async function setRuleOverrides(
  deps: { store: Pick<Store, 'getWorkspace' | 'ruleSettings' | 'setRuleSettings'>; now?: number },
  input: { workspaceId: string; kind: RuleKind; overrides: unknown },
  actor: Actor,
): Promise<RuleView> {
  const overrides = parseOverrides(input.kind, input.overrides);
  const id = await existingWorkspace(deps.store, input.workspaceId);
  const stored: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(overrides)) stored[storedName(name)] = value;
  await deps.store.setRuleSettings(id, input.kind, stored, actor, deps.now ?? Date.now());
  return ruleView(input.kind, id, (await deps.store.ruleSettings(id))[input.kind]);
}
