/**
 * The latency histogram of the usage rollups: a fixed log-scale set of buckets from 1 ms to
 * 120 s, so that histograms of any hours, keys or models merge by adding counts, and p50 / p95
 * come from the merged counts.
 *
 * The edges are part of the stored data (migration 4 backfills with them, every rollup row counts
 * into them): never change them; a different scale needs a new set of columns.
 */

/**
 * Bucket upper edges in ms: the E6 series (1, 1.5, 2.2, 3.3, 4.7, 6.8 per decade, about ×1.47
 * apart) from 1 ms to 68 s, then 120 s. Bucket 0 holds [0, 1 ms), bucket i holds
 * [EDGES[i-1], EDGES[i]), and the last bucket everything from 120 s up.
 */
export const LATENCY_EDGES_MS: readonly number[] = Object.freeze([
  1, 1.5, 2.2, 3.3, 4.7, 6.8, 10, 15, 22, 33, 47, 68, 100, 150, 220, 330, 470, 680, 1000, 1500, 2200, 3300,
  4700, 6800, 10_000, 15_000, 22_000, 33_000, 47_000, 68_000, 120_000,
]);

/** How many buckets (and `lat_NN` columns in `usage_hourly`): one more than there are edges. */
export const LATENCY_BUCKETS = LATENCY_EDGES_MS.length + 1;

/** The bucket a latency falls in (binary search over the edges). */
export function latencyBucket(ms: number): number {
  if (!(ms >= 0)) return 0; // NaN or negative: the smallest bucket
  let lo = 0;
  let hi = LATENCY_EDGES_MS.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ms < (LATENCY_EDGES_MS[mid] ?? Number.POSITIVE_INFINITY)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** The bucket's bounds [lower, upper); the last bucket's upper bound is open (Infinity). */
export function bucketBounds(bucket: number): [number, number] {
  const lower = bucket === 0 ? 0 : (LATENCY_EDGES_MS[bucket - 1] ?? Number.POSITIVE_INFINITY);
  const upper = LATENCY_EDGES_MS[bucket] ?? Number.POSITIVE_INFINITY;
  return [lower, upper];
}

/** The names of the histogram columns of `usage_hourly`: lat_00 … lat_31. */
export const LATENCY_COLUMNS: readonly string[] = Object.freeze(
  Array.from({ length: LATENCY_BUCKETS }, (_, i) => `lat_${String(i).padStart(2, '0')}`),
);

/** A SQL expression giving the bucket of the column `latency_ms` (the same edges as `latencyBucket`). */
export function latencyBucketSql(column = 'latency_ms'): string {
  const cases = LATENCY_EDGES_MS.map((edge, i) => `WHEN ${column} < ${edge} THEN ${i}`).join(' ');
  return `(CASE ${cases} ELSE ${LATENCY_EDGES_MS.length} END)`;
}

/** A new histogram with every count at zero. */
export function emptyHistogram(): number[] {
  return new Array<number>(LATENCY_BUCKETS).fill(0);
}

/** Adds `from` into `into` (bucket by bucket). */
export function mergeHistogram(into: number[], from: readonly number[]): void {
  for (let i = 0; i < LATENCY_BUCKETS; i++) into[i] = (into[i] ?? 0) + (from[i] ?? 0);
}

/**
 * The p-quantile (0 < p ≤ 1) of the latencies counted in a histogram, by nearest rank: the bucket
 * holding the ⌈p·n⌉-th smallest latency, interpolated inside it (geometrically: the buckets are
 * log-scale; linearly in the first bucket and in the open last one, up to `maxMs`). The estimate
 * is therefore in the same bucket as the exact value. Null for an empty histogram.
 */
export function latencyPercentile(histogram: readonly number[], p: number, maxMs?: number): number | null {
  let total = 0;
  for (const count of histogram) total += count;
  if (total <= 0) return null;
  const rank = Math.min(total, Math.max(1, Math.ceil(p * total)));
  let before = 0;
  for (let bucket = 0; bucket < histogram.length; bucket++) {
    const count = histogram[bucket] ?? 0;
    if (count <= 0 || before + count < rank) {
      before += count;
      continue;
    }
    // The middle of the rank's share of the bucket: strictly inside it.
    const fraction = (rank - before - 0.5) / count;
    const [lower, upper] = bucketBounds(bucket);
    let value: number;
    if (bucket === 0) value = fraction * upper;
    else if (upper === Number.POSITIVE_INFINITY) {
      const top = maxMs !== undefined && maxMs > lower ? maxMs : lower;
      value = lower + fraction * (top - lower);
    } else value = lower * (upper / lower) ** fraction;
    return maxMs !== undefined && maxMs >= 0 ? Math.min(value, maxMs) : value;
  }
  return null;
}
