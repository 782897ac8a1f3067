/**
 * Alert rules: what counts as "looks wrong", as pure functions over plain numbers, so each is
 * tested with an injected clock and synthetic history. The engine (engine.ts) feeds them.
 */
import type { AlertKind } from '../store/types.ts';

export interface SpikeSettings {
  enabled: boolean;
  /** The short window compared against the key's own history. */
  windowMinutes: number;
  /** How many times the usual rate a window must reach. */
  factor: number;
  /** Floors: below these a window never alerts, so a new or idle key does not page anyone. */
  minRequests: number;
  minTokens: number;
  /** Days of history the baseline is computed from. */
  baselineDays: number;
  cooldownMinutes: number;
}

export interface BudgetSettings {
  enabled: boolean;
  /** Percentages of a budget at which an alert is raised (once per budget period each). */
  thresholds: number[];
  cooldownMinutes: number;
}

export interface NewNetworkSettings {
  enabled: boolean;
  cooldownMinutes: number;
}

export interface AuthFailureSettings {
  enabled: boolean;
  /** Failed authentications from one address within a minute that make a burst. */
  failuresPerMinute: number;
  cooldownMinutes: number;
}

export interface ExpirySettings {
  enabled: boolean;
  cooldownMinutes: number;
}

export interface RuleSettings {
  usage_spike: SpikeSettings;
  budget_threshold: BudgetSettings;
  new_network: NewNetworkSettings;
  auth_failures: AuthFailureSettings;
  key_expiring: ExpirySettings;
}

export const DEFAULT_RULES: Readonly<RuleSettings> = Object.freeze({
  usage_spike: {
    enabled: true,
    windowMinutes: 5,
    factor: 10,
    minRequests: 100,
    minTokens: 200_000,
    baselineDays: 7,
    cooldownMinutes: 60,
  },
  budget_threshold: { enabled: true, thresholds: [50, 80, 100], cooldownMinutes: 60 * 24 * 31 },
  new_network: { enabled: true, cooldownMinutes: 60 * 24 },
  auth_failures: { enabled: true, failuresPerMinute: 20, cooldownMinutes: 60 },
  key_expiring: { enabled: true, cooldownMinutes: 60 * 24 },
});

export type RuleKind = Exclude<AlertKind, 'test'>;

/** The rules whose settings a workspace can change, in the order they are listed. */
export const RULE_KINDS: readonly RuleKind[] = Object.freeze([
  'usage_spike',
  'budget_threshold',
  'new_network',
  'auth_failures',
  'key_expiring',
]);

/** What each rule watches, for listings and the API. */
export const RULE_DESCRIPTIONS: Readonly<Record<RuleKind, string>> = Object.freeze({
  usage_spike:
    'A key makes far more requests or uses far more tokens in a short window than its own history says is usual.',
  budget_threshold: 'A key or its workspace crosses a percentage of its daily or monthly token budget.',
  new_network: 'A key is used from a network (IPv4 /24, IPv6 /48) it was never used from before.',
  auth_failures:
    'A revoked, expired or rotated-out key is still tried; or one address sends a burst of failed ' +
    'authentications (the burst threshold is read from ws_default, as an address belongs to no workspace).',
  key_expiring:
    'A key expires soon (reminders at the days of keys.expiryReminderDays in the configuration, 14 and 3 by default).',
});

/** What a setting accepts. The API, the CLI and the engine all check values against it. */
export type SettingSpec =
  | { type: 'boolean'; description: string }
  | { type: 'integer' | 'number'; min: number; max: number; unit?: string; description: string }
  | { type: 'percentages'; min: number; max: number; maxItems: number; description: string };

export type RuleSpecs<K extends RuleKind> = { readonly [F in keyof RuleSettings[K]]: SettingSpec };

/** A year, in minutes: the longest cooldown. */
export const MAX_COOLDOWN_MINUTES = 525_600;

const ENABLED: SettingSpec = { type: 'boolean', description: 'Whether the rule raises alerts at all.' };
const COOLDOWN: SettingSpec = {
  type: 'integer',
  min: 1,
  max: MAX_COOLDOWN_MINUTES,
  unit: 'minutes',
  description:
    'Minutes during which the same alert (same kind, key and detail) seen again is folded into the first one instead of being sent again.',
};

export const SETTING_SPECS: { readonly [K in RuleKind]: RuleSpecs<K> } = Object.freeze({
  usage_spike: {
    enabled: ENABLED,
    windowMinutes: {
      type: 'integer',
      min: 1,
      max: 60,
      unit: 'minutes',
      description: 'The short window (minutes) compared against the key’s own history.',
    },
    factor: {
      type: 'number',
      min: 1,
      max: 1000,
      description: 'How many times the usual level the window must reach to count as a spike.',
    },
    minRequests: {
      type: 'integer',
      min: 1,
      max: 1_000_000_000,
      description:
        'Floor: a window with fewer requests (and fewer tokens than the token floor) never alerts.',
    },
    minTokens: {
      type: 'integer',
      min: 1,
      max: 1_000_000_000_000,
      description:
        'Floor: a window with fewer tokens (and fewer requests than the request floor) never alerts.',
    },
    baselineDays: {
      type: 'integer',
      min: 1,
      max: 90,
      unit: 'days',
      description: 'Days of the key’s history its usual level is computed from.',
    },
    cooldownMinutes: COOLDOWN,
  },
  budget_threshold: {
    enabled: ENABLED,
    thresholds: {
      type: 'percentages',
      min: 1,
      max: 1000,
      maxItems: 10,
      description:
        'Percentages of a budget at which an alert is raised, once per budget period each: 1 to 1000, in increasing order.',
    },
    cooldownMinutes: COOLDOWN,
  },
  new_network: { enabled: ENABLED, cooldownMinutes: COOLDOWN },
  auth_failures: {
    enabled: ENABLED,
    failuresPerMinute: {
      type: 'integer',
      min: 1,
      max: 1_000_000,
      description: 'Failed authentications from one address within a minute that make a burst.',
    },
    cooldownMinutes: COOLDOWN,
  },
  key_expiring: { enabled: ENABLED, cooldownMinutes: COOLDOWN },
});

/** The settings of a rule (its field names), in their listing order. */
export function settingNames(kind: RuleKind): string[] {
  return Object.keys(SETTING_SPECS[kind]);
}

/** The spec of one setting of a rule, if it has that setting. */
export function settingSpec(kind: RuleKind, name: string): SettingSpec | undefined {
  const specs = SETTING_SPECS[kind] as Readonly<Record<string, SettingSpec>>;
  return Object.hasOwn(specs, name) ? specs[name] : undefined;
}

/** Whether a value is one a setting accepts (type and range). */
export function validSetting(spec: SettingSpec, value: unknown): boolean {
  switch (spec.type) {
    case 'boolean':
      return typeof value === 'boolean';
    case 'integer':
      return Number.isSafeInteger(value) && (value as number) >= spec.min && (value as number) <= spec.max;
    case 'number':
      return typeof value === 'number' && Number.isFinite(value) && value >= spec.min && value <= spec.max;
    case 'percentages':
      return (
        Array.isArray(value) &&
        value.length >= 1 &&
        value.length <= spec.maxItems &&
        value.every(
          (v: unknown, i) =>
            Number.isSafeInteger(v) &&
            (v as number) >= spec.min &&
            (v as number) <= spec.max &&
            (i === 0 || (v as number) > (value[i - 1] as number)),
        )
      );
  }
}

/** A rule's stored overrides that are still valid settings (unknown or invalid ones are ignored). */
export function validOverrides(
  kind: RuleKind,
  override: Record<string, unknown> | undefined,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(override ?? {})) {
    const spec = settingSpec(kind, name);
    if (spec && validSetting(spec, value)) out[name] = structuredClone(value);
  }
  return out;
}

/**
 * The defaults with a workspace's overrides laid over them. Unknown settings, and values a setting
 * does not accept (wrong type, out of range), are ignored: the default stands.
 */
export function mergeSettings(overrides: Record<string, Record<string, unknown>>): RuleSettings {
  const merged = structuredClone(DEFAULT_RULES) as RuleSettings;
  for (const kind of RULE_KINDS) {
    const target = merged[kind] as unknown as Record<string, unknown>;
    Object.assign(target, validOverrides(kind, overrides[kind]));
  }
  return merged;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** Median absolute deviation, scaled to estimate a standard deviation (×1.4826). */
export function mad(values: readonly number[]): number {
  const m = median(values);
  return 1.4826 * median(values.map((v) => Math.abs(v - m)));
}

export interface SpikeVerdict {
  spike: boolean;
  /** What the window would usually hold, from the key's history. */
  usual: number;
  /** The level above which the window counts as a spike. */
  threshold: number;
}

/**
 * Whether `current` (the count in the last window) is far above the key's own baseline.
 * `hourly` is the key's count per hour over the baseline period, zeros included. The baseline is
 * robust (median and MAD), so a few busy hours in the history do not raise it; the window must
 * beat both `factor` × the usual level and the usual level + 6 robust standard deviations, and
 * the floor.
 */
export function detectSpike(
  current: number,
  hourly: readonly number[],
  windowMinutes: number,
  factor: number,
  floor: number,
): SpikeVerdict {
  const scale = windowMinutes / 60;
  const perWindow = hourly.map((h) => h * scale);
  const usual = median(perWindow);
  const spread = mad(perWindow);
  const threshold = Math.max(floor, usual * factor, usual + 6 * spread);
  return { spike: current >= threshold && current > 0, usual, threshold };
}

/** The limiter's refusal reasons that are budgets (`limit_<reason>` in the gateway's failures). */
export const BUDGET_REFUSALS = [
  'key_budget_day',
  'key_budget_month',
  'workspace_budget_day',
  'workspace_budget_month',
] as const;
export type BudgetRefusal = (typeof BUDGET_REFUSALS)[number];

/**
 * How long until an expiry, in the unit that reads right: days from two days on, hours from two
 * hours on, minutes below (a key expiring in 3 minutes does not "expire in 1 day").
 */
export function expiresIn(ms: number): string {
  const plural = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'}`;
  if (ms >= 2 * 86_400_000) return plural(Math.round(ms / 86_400_000), 'day');
  if (ms >= 2 * 3_600_000) return plural(Math.round(ms / 3_600_000), 'hour');
  return plural(Math.max(1, Math.ceil(ms / 60_000)), 'minute');
}

/** The highest threshold (percent) that usage has crossed, or undefined. */
export function crossedThreshold(
  used: number,
  budget: number,
  thresholds: readonly number[],
): number | undefined {
  if (budget <= 0) return undefined;
  const percent = (used / budget) * 100;
  let crossed: number | undefined;
  for (const t of thresholds) if (percent >= t && (crossed === undefined || t > crossed)) crossed = t;
  return crossed;
}

/** The network an address belongs to for the "new network" rule: IPv4 /24, IPv6 /48. */
export function networkOf(address: string): string {
  if (address.includes('.') && !address.includes(':')) {
    const parts = address.split('.');
    return parts.length === 4 ? `${parts[0]}.${parts[1]}.${parts[2]}.0/24` : address;
  }
  if (address.includes(':')) {
    const [head = ''] = address.split('::');
    const groups = head.split(':').filter((g) => g.length > 0);
    const full = address.includes('::')
      ? [...groups, '0', '0', '0'].slice(0, 3)
      : address.split(':').slice(0, 3);
    return `${full.map((g) => g.toLowerCase().replace(/^0+(?=.)/, '')).join(':')}::/48`;
  }
  return address;
}
