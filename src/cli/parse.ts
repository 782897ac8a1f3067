/** Parsers for option values; each throws a UserError naming the option and the expected form. */
import { parseDuration } from '../config/duration.ts';
import type { TokenBudget } from '../store/types.ts';
import { UserError } from './common.ts';

export function duration(option: string, value: string, { allowZero = false } = {}): number {
  const ms = parseDuration(value);
  if (ms === undefined || (ms === 0 && !allowZero)) {
    throw new UserError(`${option} takes a duration such as 90d, 24h, 30m or 45s, not "${value}"`, 2);
  }
  return ms;
}

/** A duration, or `never`/`none` for "no expiry" (null). */
export function optionalDuration(option: string, value: string): number | null {
  return value === 'never' || value === 'none' ? null : duration(option, value);
}

/** A comma-separated list; `any`/`all` (for allowlists) gives the empty list, meaning "no restriction". */
export function list(value: string, { emptyWords = [] as string[] } = {}): string[] {
  if (emptyWords.includes(value.trim())) return [];
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** A positive whole number, or `none` (null) to remove a limit. */
export function count(option: string, value: string): number | null {
  if (value === 'none') return null;
  if (!/^\d{1,15}$/.test(value) || Number(value) <= 0) {
    throw new UserError(`${option} takes a positive whole number (or "none"), not "${value}"`, 2);
  }
  return Number(value);
}

/** `--budget 1000000/month --budget 50000/day`, or `none/day` to remove one. */
export function budgets(values: readonly string[]): Partial<TokenBudget> {
  const budget: Partial<TokenBudget> = {};
  for (const value of values) {
    const match = /^(\d{1,15}|none)\s*\/\s*(day|month)$/.exec(value.trim());
    if (!match)
      throw new UserError(
        `--budget takes TOKENS/day or TOKENS/month (e.g. 1000000/month), not "${value}"`,
        2,
      );
    const period = match[2] as 'day' | 'month';
    const amount = match[1] === 'none' ? null : Number(match[1]);
    if (amount === 0)
      throw new UserError('--budget must be positive (use none/day or none/month to remove one)', 2);
    budget[period] = amount;
  }
  return budget;
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
