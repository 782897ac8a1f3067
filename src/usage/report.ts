/**
 * Usage reports from aggregated cells: the store sums its rollups (and, for the partial hours at
 * the ends of a range, its raw records) per (group, model); this folds the cells into one row per
 * group, merging latency histograms for p50 / p95 and pricing each model's tokens. Kept apart
 * from the SQL so that every store folds and prices the same way.
 */
import type { UsageCounts, UsageGroup, UsageReportRow } from '../store/types.ts';
import { emptyHistogram, latencyPercentile, mergeHistogram } from './histogram.ts';
import { costOf, type Pricing, priceOf, roundCost } from './pricing.ts';

/** Sums for one (group, model); '' stands for "none" (a record without a key, a model…). */
export interface UsageCell extends LatencyCounts {
  group: string | number;
  model: string;
}

/** Zero of everything, to add records to. */
export function emptyLatencyCounts(): LatencyCounts {
  return {
    requests: 0,
    errors: 0,
    promptTokens: 0,
    completionTokens: 0,
    totalTokens: 0,
    estimatedRequests: 0,
    latencySumMs: 0,
    latencyMaxMs: 0,
    histogram: emptyHistogram(),
  };
}

/** The counts and the latency figures a rollup row holds. */
export interface LatencyCounts extends UsageCounts {
  latencySumMs: number;
  latencyMaxMs: number;
  histogram: number[];
}

/** Cells by (group, model), added to from any number of queries. */
export class UsageCells {
  readonly #cells = new Map<string, UsageCell>();

  /** The cell of (group, model), created empty on first use. */
  at(group: string | number, model: string): UsageCell {
    const id = `${typeof group}:${group}\u0000${model}`;
    let cell = this.#cells.get(id);
    if (!cell) {
      cell = { group, model, ...emptyLatencyCounts() };
      this.#cells.set(id, cell);
    }
    return cell;
  }

  values(): IterableIterator<UsageCell> {
    return this.#cells.values();
  }
}

const TIME_GROUPS: ReadonlySet<UsageGroup> = new Set(['hour', 'day']);

function roundMs(ms: number | null): number | null {
  return ms === null ? null : Math.round(ms * 10) / 10;
}

/**
 * One row per group: sums, p50 / p95 from the merged histograms, and the cost: the sum of each
 * model's tokens at its price, or null as soon as tokens of a model without a price are part of
 * it (a part of a cost is not a cost). Rows without tokens cost 0. Time groups come in time
 * order, the others by total tokens (most first), then group.
 */
export function foldUsage(cells: Iterable<UsageCell>, by: UsageGroup, pricing: Pricing): UsageReportRow[] {
  interface Acc {
    row: UsageReportRow;
    histogram: number[];
    latencySumMs: number;
    latencyMaxMs: number;
    cost: number | null;
  }
  const groups = new Map<string | number, Acc>();
  for (const cell of cells) {
    if (cell.requests === 0) continue;
    let acc = groups.get(cell.group);
    if (!acc) {
      acc = {
        row: {
          group: cell.group === '' ? null : cell.group,
          name: null,
          requests: 0,
          errors: 0,
          promptTokens: 0,
          completionTokens: 0,
          totalTokens: 0,
          estimatedRequests: 0,
          latencyAvgMs: null,
          latencyP50Ms: null,
          latencyP95Ms: null,
          cost: 0,
        },
        histogram: emptyHistogram(),
        latencySumMs: 0,
        latencyMaxMs: 0,
        cost: 0,
      };
      groups.set(cell.group, acc);
    }
    const row = acc.row;
    row.requests += cell.requests;
    row.errors += cell.errors;
    row.promptTokens += cell.promptTokens;
    row.completionTokens += cell.completionTokens;
    row.totalTokens += cell.totalTokens;
    row.estimatedRequests += cell.estimatedRequests;
    acc.latencySumMs += cell.latencySumMs;
    acc.latencyMaxMs = Math.max(acc.latencyMaxMs, cell.latencyMaxMs);
    mergeHistogram(acc.histogram, cell.histogram);
    if (acc.cost !== null && cell.promptTokens + cell.completionTokens > 0) {
      const price = priceOf(pricing, cell.model === '' ? null : cell.model);
      acc.cost =
        price === undefined ? null : acc.cost + costOf(price, cell.promptTokens, cell.completionTokens);
    }
  }
  const rows: UsageReportRow[] = [];
  for (const acc of groups.values()) {
    const row = acc.row;
    row.latencyAvgMs = roundMs(acc.latencySumMs / row.requests);
    row.latencyP50Ms = roundMs(latencyPercentile(acc.histogram, 0.5, acc.latencyMaxMs));
    row.latencyP95Ms = roundMs(latencyPercentile(acc.histogram, 0.95, acc.latencyMaxMs));
    row.cost = acc.cost === null ? null : roundCost(acc.cost);
    rows.push(row);
  }
  if (TIME_GROUPS.has(by)) return rows.sort((a, b) => Number(a.group) - Number(b.group));
  return rows.sort(
    (a, b) =>
      b.totalTokens - a.totalTokens ||
      (a.group === null ? 1 : b.group === null ? -1 : String(a.group) < String(b.group) ? -1 : 1),
  );
}
