/**
 * Usage reports from summed rows, the same in both stores: rows added to their cells, group names
 * filled in, and the answers that are read off a report (totals per key, hourly counts).
 */
import { LATENCY_COLUMNS } from '../usage/histogram.ts';
import type { Pricing } from '../usage/pricing.ts';
import type { UsageCell, UsageCells } from '../usage/report.ts';
import type { Row } from './rows.ts';
import type {
  HourlyCount,
  UsageGroup,
  UsageReport,
  UsageReportQuery,
  UsageReportRow,
  UsageTotals,
} from './types.ts';

/** Adds a summed row (`g`, `model`, the sums) to the cell of its group and model; returns the cell. */
export function addSums(cells: UsageCells, row: Row, by: UsageGroup): UsageCell {
  const group = by === 'hour' || by === 'day' ? Number(row.g) : String(row.g ?? '');
  const cell = cells.at(group, String(row.model ?? ''));
  cell.requests += Number(row.requests);
  cell.errors += Number(row.errors);
  cell.promptTokens += Number(row.prompt_tokens);
  cell.completionTokens += Number(row.completion_tokens);
  cell.totalTokens += Number(row.total_tokens);
  cell.estimatedRequests += Number(row.estimated_requests);
  cell.latencySumMs += Number(row.latency_sum_ms);
  cell.latencyMaxMs = Math.max(cell.latencyMaxMs, Number(row.latency_max_ms));
  return cell;
}

/** Adds a row's latency histogram columns (`LATENCY_COLUMNS`) to a cell. */
export function addHistogram(cell: UsageCell, row: Row): void {
  LATENCY_COLUMNS.forEach((c, i) => {
    cell.histogram[i] = (cell.histogram[i] ?? 0) + Number(row[c]);
  });
}

/** Whether a report's groups are ids with names (keys, workspaces): the table to read them from. */
export function namedTable(by: UsageGroup): 'api_keys' | 'workspaces' | undefined {
  return by === 'key' ? 'api_keys' : by === 'workspace' ? 'workspaces' : undefined;
}

/** The ids a report's rows group by (none for "no key"). */
export function groupIds(rows: readonly UsageReportRow[]): string[] {
  return rows.flatMap((r) => (r.group === null ? [] : [String(r.group)]));
}

/** Names each report row from `(id, name)` rows; an id not found has no name. */
export function nameGroups(rows: UsageReportRow[], found: readonly Row[]): void {
  const names = new Map(found.map((r) => [String(r.id), String(r.name)]));
  for (const row of rows) row.name = row.group === null ? null : (names.get(String(row.group)) ?? null);
}

export function usageReportOf(
  query: UsageReportQuery,
  pricing: Pricing,
  rows: UsageReportRow[],
): UsageReport {
  return {
    by: query.by,
    from: query.from ?? null,
    to: query.to ?? null,
    currency: pricing.currency,
    rows,
  };
}

/** The totals per key of a report by key (records without a key left out). */
export function totalsOf(report: UsageReport): UsageTotals[] {
  const totals: UsageTotals[] = [];
  for (const row of report.rows) {
    if (row.group === null) continue;
    totals.push({
      keyId: String(row.group),
      name: row.name,
      requests: row.requests,
      errors: row.errors,
      promptTokens: row.promptTokens,
      completionTokens: row.completionTokens,
      totalTokens: row.totalTokens,
    });
  }
  return totals;
}

/** The requests and tokens of each hour of a report by hour. */
export function hourlyCountsOf(report: UsageReport): HourlyCount[] {
  return report.rows.map((row) => ({
    hour: Number(row.group),
    requests: row.requests,
    tokens: row.totalTokens,
  }));
}
