import { keepPreviousData, useQueries, useQuery } from '@tanstack/react-query';
import { type ReactNode, useMemo, useState } from 'react';
import { admin, api, query } from '../api.ts';
import { Button } from '../components/Button.tsx';
import { EmptyState } from '../components/EmptyState.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { Loading } from '../components/Loading.tsx';
import { PageHeader } from '../components/PageHeader.tsx';
import { Segmented } from '../components/Segmented.tsx';
import type { ChartSeries } from '../components/TimeChart.tsx';
import { TimeChart } from '../components/TimeChart.tsx';
import { formatCompact } from '../format.ts';
import { useSession } from '../session.tsx';
import type { UsageList, UsageRow } from '../types.ts';
import { UsageStats } from './UsageStats.tsx';
import { UsageTables } from './UsageTables.tsx';

const RANGES = {
  '24h': { label: '24 hours', buckets: 24, by: 'hour' },
  '7d': { label: '7 days', buckets: 7 * 24, by: 'hour' },
  '30d': { label: '30 days', buckets: 30, by: 'day' },
  '90d': { label: '90 days', buckets: 90, by: 'day' },
} as const;
type Range = keyof typeof RANGES;
type Metric = 'total_tokens' | 'requests';

const HOUR = 3_600_000;
const DAY = 86_400_000;
const TOP = 5;

/** The first bucket's start and every bucket start (in seconds) of a range ending now. */
function bucketsOf(range: Range, now: number): { from: string; xs: number[] } {
  const { buckets, by } = RANGES[range];
  const step = by === 'hour' ? HOUR : DAY;
  const last = Math.floor(now / step) * step;
  const first = last - (buckets - 1) * step;
  const xs: number[] = [];
  for (let t = first; t <= last; t += step) xs.push(t / 1000);
  return { from: new Date(first).toISOString(), xs };
}

function bucketOf(row: UsageRow): number | undefined {
  if (row.hour) return Date.parse(row.hour) / 1000;
  if (row.day) return Date.parse(`${row.day}T00:00:00Z`) / 1000;
  return undefined;
}

/** A report's rows laid on the range's buckets (missing buckets are zero). */
function align(xs: number[], report: UsageList | undefined, metric: Metric): number[] {
  const byBucket = new Map<number, number>();
  for (const row of report?.data ?? []) {
    const x = bucketOf(row);
    if (x !== undefined) byBucket.set(x, row[metric]);
  }
  return xs.map((x) => byBucket.get(x) ?? 0);
}

const formatAxis = (v: number) => formatCompact(v);

const RANGE_OPTIONS = (Object.keys(RANGES) as Range[]).map((r) => [r, r] as const);
const METRIC_OPTIONS = [
  ['total_tokens', 'Tokens'],
  ['requests', 'Requests'],
] as const;

/** A chart in a card under its title; when there is no series, the children say why. */
function ChartCard({
  title,
  label,
  bars,
  xs,
  series,
  children,
}: {
  title: ReactNode;
  /** The chart's accessible name. */
  label: string;
  bars?: boolean;
  xs: number[];
  series: ChartSeries[];
  children?: ReactNode;
}) {
  return (
    <section className="card">
      <h2 className="card-title">{title}</h2>
      {series.length > 0 ? (
        <TimeChart xs={xs} series={series} bars={bars} label={label} format={formatAxis} />
      ) : (
        <p className="muted">{children}</p>
      )}
    </section>
  );
}

export function UsagePage() {
  const { workspace } = useSession();
  const [range, setRange] = useState<Range>('7d');
  const [now, setNow] = useState(() => Date.now());
  const [splitMetric, setSplitMetric] = useState<Metric>('total_tokens');
  const { by } = RANGES[range];
  const { from, xs } = useMemo(() => bucketsOf(range, now), [range, now]);

  const report = (params: Record<string, string>) => ({
    queryKey: [workspace.id, 'usage', from, params],
    queryFn: () =>
      api.get<UsageList>(admin(`/usage${query({ from, workspace_id: workspace.id, ...params })}`)),
    placeholderData: keepPreviousData,
  });

  const series = useQuery(report({ by }));
  const byKey = useQuery(report({ by: 'key' }));
  const byModel = useQuery(report({ by: 'model' }));
  const total = useQuery(report({ by: 'workspace' }));

  const topKeys = (byKey.data?.data ?? []).filter((r) => r.key_id).slice(0, TOP);
  const topModels = (byModel.data?.data ?? []).filter((r) => r.model).slice(0, TOP);
  const keySeries = useQueries({
    queries: topKeys.map((row) => report({ by, key_id: row.key_id ?? '' })),
  });
  const modelSeries = useQueries({
    queries: topModels.map((row) => report({ by, model: row.model ?? '' })),
  });

  const requestsChart: ChartSeries[] = [{ label: 'Requests', values: align(xs, series.data, 'requests') }];
  const tokensChart: ChartSeries[] = [{ label: 'Tokens', values: align(xs, series.data, 'total_tokens') }];
  const keyChart: ChartSeries[] = topKeys.map((row, i) => ({
    label: row.name ?? row.key_id ?? 'key',
    values: align(xs, keySeries[i]?.data, splitMetric),
  }));
  const modelChart: ChartSeries[] = topModels.map((row, i) => ({
    label: row.model ?? 'model',
    values: align(xs, modelSeries[i]?.data, splitMetric),
  }));

  const totals = total.data?.data[0];
  const currency = total.data?.currency ?? 'EUR';
  const error = series.error ?? byKey.error ?? byModel.error ?? total.error;
  const loading = series.isPending || total.isPending;
  const empty = !loading && (totals?.requests ?? 0) === 0;
  const bucketLabel = by === 'hour' ? 'per hour' : 'per day (UTC)';
  const metricLabel = splitMetric === 'requests' ? 'Requests' : 'Tokens';

  return (
    <>
      <PageHeader
        title="Usage"
        description="Requests, tokens, errors, latency and cost of this workspace's keys."
        actions={
          <div className="range-picker">
            <Segmented
              legend="Time range"
              options={RANGE_OPTIONS}
              value={range}
              onChange={(r) => {
                setRange(r);
                setNow(Date.now());
              }}
            />
            <Button size="small" variant="ghost" onClick={() => setNow(Date.now())}>
              Refresh
            </Button>
          </div>
        }
      />
      <ErrorBanner error={error} title="The usage report could not be loaded." />
      {loading ? (
        <Loading label="Loading usage…" />
      ) : (
        <>
          <UsageStats totals={totals} currency={currency} rangeLabel={RANGES[range].label} />
          {empty ? (
            <EmptyState title={`No requests in the last ${RANGES[range].label}.`}>
              Calls to <code>/v1</code> with this workspace's keys show up here within seconds. Create a key
              on the Keys page and make a request, or choose a longer range.
            </EmptyState>
          ) : (
            <>
              <div className="chart-grid">
                <ChartCard
                  title={<>Requests {bucketLabel}</>}
                  label={`Requests ${bucketLabel}`}
                  bars
                  xs={xs}
                  series={requestsChart}
                />
                <ChartCard
                  title={<>Tokens {bucketLabel}</>}
                  label={`Tokens ${bucketLabel}`}
                  bars
                  xs={xs}
                  series={tokensChart}
                />
              </div>
              <div className="split-header">
                <h2>Top keys and models</h2>
                <Segmented
                  legend="Metric of the split charts"
                  options={METRIC_OPTIONS}
                  value={splitMetric}
                  onChange={setSplitMetric}
                />
              </div>
              <div className="chart-grid">
                <ChartCard
                  title={
                    <>
                      {metricLabel} by key (top {TOP})
                    </>
                  }
                  label="Usage of the top keys over time"
                  xs={xs}
                  series={keyChart}
                >
                  No key used in this range.
                </ChartCard>
                <ChartCard
                  title={
                    <>
                      {metricLabel} by model (top {TOP})
                    </>
                  }
                  label="Usage of the top models over time"
                  xs={xs}
                  series={modelChart}
                >
                  No model requested in this range.
                </ChartCard>
              </div>
              <UsageTables
                keys={byKey.data?.data ?? []}
                models={byModel.data?.data ?? []}
                currency={currency}
              />
            </>
          )}
        </>
      )}
    </>
  );
}
