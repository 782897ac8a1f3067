/**
 * Statistics and output of the micro-benchmarks (`bench/micro.ts`): pooled percentiles, the
 * results table (terminal and Markdown), the targets with ✓/✗, the Markdown record.
 */

/** One measured operation (all times per operation, in microseconds). */
export interface Row {
  /** Stable identifier, e.g. `verify.miss.sqlite.large`. */
  id: string;
  section: string;
  name: string;
  /** 1 000 000 / mean: operations per second of one caller doing nothing else. */
  opsPerSec: number;
  meanUs: number;
  p50Us: number;
  p99Us: number;
  /** Relative margin of error of the mean (95 %), percent. */
  rmePct: number;
  samples: number;
  /** CPU used by other processes while this was measured, in cores (2 = the whole machine). */
  otherCores: number;
  /** Per round (cache-miss rows measured in alternating rounds). */
  rounds?: { meanUs: number; p50Us: number; p99Us: number; samples: number }[];
  note?: string;
}

export interface Target {
  name: string;
  limit: string;
  figure: string;
  /** null: not measured (skipped). */
  pass: boolean | null;
  comment: string;
}

/** Mean, p50, p99 and the 95 % margin of error of samples (any order, any unit). */
export function describe(samples: readonly number[]): {
  mean: number;
  p50: number;
  p99: number;
  rme: number;
} {
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) return { mean: Number.NaN, p50: Number.NaN, p99: Number.NaN, rme: Number.NaN };
  const mean = sorted.reduce((s, v) => s + v, 0) / n;
  const variance = n > 1 ? sorted.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1) : 0;
  const rme = mean > 0 ? ((1.96 * Math.sqrt(variance / n)) / mean) * 100 : 0;
  return { mean, p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), rme };
}

/** Linear interpolation between closest ranks (the same definition tinybench uses). */
function quantile(sorted: readonly number[], q: number): number {
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  const a = sorted[lo] ?? Number.NaN;
  const b = sorted[hi] ?? a;
  return a + (b - a) * (at - lo);
}

export function median(values: readonly number[]): number {
  return quantile(
    [...values].sort((a, b) => a - b),
    0.5,
  );
}

/** Microseconds with three significant digits (at least one decimal below 100). */
export function us(value: number): string {
  if (!Number.isFinite(value)) return '—';
  const size = Math.abs(value);
  if (size >= 100) return value.toFixed(0);
  if (size >= 10) return value.toFixed(1);
  if (size >= 1) return value.toFixed(2);
  return value.toFixed(3);
}

export function thousands(value: number): string {
  return Number.isFinite(value) ? Math.round(value).toLocaleString('en-US') : '—';
}

const HEADER = ['operation', 'ops/s', 'mean µs', 'p50 µs', 'p99 µs', '± %', 'samples', 'other CPU'];
const ALIGN_RIGHT = [false, true, true, true, true, true, true, true];

function cells(row: Row): string[] {
  return [
    row.name,
    thousands(row.opsPerSec),
    us(row.meanUs),
    us(row.p50Us),
    us(row.p99Us),
    row.rmePct.toFixed(1),
    thousands(row.samples),
    row.otherCores.toFixed(2),
  ];
}

/** A Markdown table, columns padded so it also reads well as plain text. */
export function markdownTable(
  header: readonly string[],
  rows: readonly string[][],
  right: readonly boolean[],
) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]) =>
    `| ${r.map((c, i) => (right[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (right[i] ? `${'-'.repeat(w + 1)}:` : `:${'-'.repeat(w + 1)}`)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

export function resultsTable(rows: readonly Row[]): string {
  return markdownTable(HEADER, rows.map(cells), ALIGN_RIGHT);
}

export function targetsTable(targets: readonly Target[]): string {
  return markdownTable(
    ['target', 'limit', 'measured', '', 'comment'],
    targets.map((t) => [t.name, t.limit, t.figure, t.pass === null ? '–' : t.pass ? '✓' : '✗', t.comment]),
    [false, true, false, false, false],
  );
}
