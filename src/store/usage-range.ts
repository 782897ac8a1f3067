/**
 * Where usage is read from, the same in both stores: a time range split into whole days (the
 * daily rollups), whole hours (the hourly rollups) and the partial hours at its ends (the raw
 * records), and the expressions that group and filter each source.
 */
import type { UsageGroup, UsageReportQuery } from './types.ts';

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;
/** Raw usage records deleted per transaction (or statement) by the retention sweep. */
export const PRUNE_CHUNK = 5000;

/** [from, to) in epoch ms; a null bound is open. */
export interface TimeRange {
  from: number | null;
  to: number | null;
}

/** A time range split by where its usage is read from; the pieces do not overlap. */
export interface UsageRange {
  /** Whole UTC days, from the daily rollups. */
  daily: TimeRange[];
  /** Whole hours, from the hourly rollups. */
  hourly: TimeRange[];
  /** Partial hours at the ends, from the raw records. */
  raw: TimeRange[];
}

const floorTo = (t: number, unit: number) => Math.floor(t / unit) * unit;
const ceilTo = (t: number, unit: number) => Math.ceil(t / unit) * unit;

/**
 * Splits [from, to) by where its usage is read from: whole days from the daily rollups (unless
 * `days` is false), whole hours from the hourly ones, and the partial hours at the ends from the
 * raw records while retention keeps them (from `rawSince`, an hour boundary, on): exact to the
 * millisecond there, whole hours before.
 */
export function splitRange(
  from: number | undefined,
  to: number | undefined,
  rawSince: number,
  days = true,
): UsageRange {
  const out: UsageRange = { daily: [], hourly: [], raw: [] };
  if (from !== undefined && to !== undefined && from >= to) return out;
  // Whole hours [start, end), the partial ones at the ends going to the raw records.
  let start: number | null = null;
  let end: number | null = null;
  if (from !== undefined && to !== undefined && floorTo(from, HOUR_MS) === floorTo(to, HOUR_MS)) {
    // Inside one hour, short of its end.
    const hour = floorTo(from, HOUR_MS);
    if (hour >= rawSince) {
      out.raw.push({ from, to });
      return out;
    }
    start = hour;
    end = hour + HOUR_MS;
  } else {
    if (from !== undefined) {
      start = ceilTo(from, HOUR_MS);
      if (start !== from) {
        if (start - HOUR_MS >= rawSince) out.raw.push({ from, to: start });
        else start -= HOUR_MS;
      }
    }
    if (to !== undefined) {
      end = floorTo(to, HOUR_MS);
      if (end !== to) {
        if (end >= rawSince) out.raw.push({ from: end, to });
        else end += HOUR_MS;
      }
    }
  }
  if (start !== null && end !== null && start >= end) return out;
  // Whole days inside the whole hours, the hours at the ends going to the hourly rollups.
  const dayStart = start === null ? null : ceilTo(start, DAY_MS);
  const dayEnd = end === null ? null : floorTo(end, DAY_MS);
  if (!days || (dayStart !== null && dayEnd !== null && dayStart >= dayEnd)) {
    out.hourly.push({ from: start, to: end });
    return out;
  }
  out.daily.push({ from: dayStart, to: dayEnd });
  if (start !== null && dayStart !== null && start < dayStart) out.hourly.push({ from: start, to: dayStart });
  if (end !== null && dayEnd !== null && dayEnd < end) out.hourly.push({ from: dayEnd, to: end });
  return out;
}

/** Where usage sums are read from: the daily or hourly rollups, or the raw records. */
export type UsageSource = 'daily' | 'hourly' | 'raw';

export const TIME_COLUMN: Record<UsageSource, string> = { daily: 'day', hourly: 'hour', raw: 'time' };

export const SOURCE_TABLE: Record<UsageSource, string> = {
  daily: 'usage_daily',
  hourly: 'usage_hourly',
  raw: 'usage_records',
};

/** The pieces of a split range, with the source each is read from. */
export function pieces(range: UsageRange): { source: UsageSource; range: TimeRange }[] {
  return [
    ...range.daily.map((r) => ({ source: 'daily' as const, range: r })),
    ...range.hourly.map((r) => ({ source: 'hourly' as const, range: r })),
    ...range.raw.map((r) => ({ source: 'raw' as const, range: r })),
  ];
}

/** The group of a usage report as an expression over a source (`hour` never reads the daily rollups). */
export function groupSql(by: UsageGroup, source: UsageSource): string {
  const raw = source === 'raw';
  switch (by) {
    case 'key':
      return raw ? "COALESCE(key_id, '')" : 'key_id';
    case 'workspace':
      return raw ? "COALESCE(workspace_id, '')" : 'workspace_id';
    case 'model':
      return raw ? "COALESCE(model, '')" : 'model';
    case 'endpoint':
      return 'endpoint';
    case 'hour':
      return raw ? '(time / 3600000) * 3600000' : 'hour';
    case 'day':
      return source === 'daily' ? 'day' : `(${TIME_COLUMN[source]} / 86400000) * 86400000`;
  }
}

/** What a usage query filters by (besides time). */
export type UsageWhere = Pick<UsageReportQuery, 'workspaceId' | 'keyId' | 'model' | 'endpoint' | 'createdBy'>;

/** The model column of a source (raw records may have none: ''). */
export function modelColumn(source: UsageSource): string {
  return source === 'raw' ? "COALESCE(model, '')" : 'model';
}

/** Whether a model filter is a pattern: `*` is its only wildcard (policy.ts refuses ? and [). */
export function isModelPattern(model: string): boolean {
  return model.includes('*') && /^[A-Za-z0-9._:\-*/]+$/.test(model);
}
