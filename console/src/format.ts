/** Formatting of numbers, times and durations for display. */

const integer = new Intl.NumberFormat('en-US');
const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });
const relative = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });
const dateTime = new Intl.DateTimeFormat('en-GB', {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
});
const dateOnly = new Intl.DateTimeFormat('en-GB', { year: 'numeric', month: 'short', day: 'numeric' });

export function formatInt(value: number | null | undefined): string {
  return value === null || value === undefined ? '—' : integer.format(value);
}

export function formatCompact(value: number): string {
  return value < 10_000 ? integer.format(value) : compact.format(value);
}

export function formatPercent(part: number, whole: number): string {
  if (whole === 0) return '—';
  const value = (part / whole) * 100;
  return `${value < 10 && value !== 0 ? value.toFixed(1) : Math.round(value)}%`;
}

export function formatMs(value: number | null | undefined): string {
  if (value === null || value === undefined) return '—';
  if (value >= 10_000) return `${(value / 1000).toFixed(1)} s`;
  return `${integer.format(Math.round(value))} ms`;
}

export function formatCost(value: number | null | undefined, currency: string): string {
  if (value === null || value === undefined) return '—';
  if (value > 0 && value < 0.0001) return `< ${formatCost(0.0001, currency)}`;
  try {
    // Small sums keep four decimals (€0.0720), larger ones two (€12.40).
    const digits = value < 1 && value > 0 ? 4 : 2;
    return new Intl.NumberFormat('en-US', {
      style: 'currency',
      currency,
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    }).format(value);
  } catch {
    return `${value.toFixed(4)} ${currency}`;
  }
}

export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  return dateTime.format(new Date(iso));
}

export function formatDate(iso: string | null | undefined): string {
  if (!iso) return '—';
  return dateOnly.format(new Date(iso));
}

const UNITS: [Intl.RelativeTimeFormatUnit, number][] = [
  ['year', 365 * 86_400_000],
  ['month', 30 * 86_400_000],
  ['day', 86_400_000],
  ['hour', 3_600_000],
  ['minute', 60_000],
];

/** "3 minutes ago", "in 89 days", "just now". */
export function formatRelative(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '—';
  const diff = new Date(iso).getTime() - now;
  const abs = Math.abs(diff);
  if (abs < 60_000) return diff < 0 ? 'just now' : 'in under a minute';
  for (const [unit, ms] of UNITS) {
    if (abs >= ms) return relative.format(Math.round(diff / ms), unit);
  }
  return relative.format(Math.round(diff / 60_000), 'minute');
}

/** Start of the current UTC month, ISO. */
export function startOfUtcMonth(now = new Date()): string {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
}

/** Splits a textarea's lines or commas into trimmed, non-empty, unique entries. */
export function splitList(text: string): string[] {
  return [
    ...new Set(
      text
        .split(/[\n,]/)
        .map((s) => s.trim())
        .filter((s) => s !== ''),
    ),
  ];
}

/** Parses an optional positive whole number field: '' → null, else a number or an error text. */
export function parsePositive(text: string): { value: number | null } | { error: string } {
  const trimmed = text.trim().replaceAll(/[_\s,]/g, '');
  if (trimmed === '') return { value: null };
  if (!/^\d+$/.test(trimmed) || Number(trimmed) <= 0 || !Number.isSafeInteger(Number(trimmed))) {
    return { error: 'Enter a positive whole number, or leave it empty for no limit.' };
  }
  return { value: Number(trimmed) };
}

/** A duration like "90d", "24h", "30m", "45s". */
export const DURATION_PATTERN = /^\d{1,9}[smhd]$/;

export function durationLabel(text: string): string {
  const match = /^(\d+)([smhd])$/.exec(text);
  if (!match) return text;
  const n = Number(match[1]);
  const unit = { s: 'second', m: 'minute', h: 'hour', d: 'day' }[match[2] as 's' | 'm' | 'h' | 'd'];
  return `${n} ${unit}${n === 1 ? '' : 's'}`;
}

export function durationMs(text: string): number | null {
  const match = /^(\d+)([smhd])$/.exec(text);
  if (!match) return null;
  const factor = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * factor;
}
