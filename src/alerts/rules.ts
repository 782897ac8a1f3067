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

/** The defaults with a workspace's overrides laid over them (unknown fields are ignored). */
export function mergeSettings(overrides: Record<string, Record<string, unknown>>): RuleSettings {
  const merged = structuredClone(DEFAULT_RULES) as RuleSettings;
  for (const kind of Object.keys(merged) as RuleKind[]) {
    const override = overrides[kind];
    if (!override) continue;
    const target = merged[kind] as unknown as Record<string, unknown>;
    for (const [name, value] of Object.entries(override)) {
      if (name in target && typeof value === typeof target[name]) target[name] = value;
    }
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
