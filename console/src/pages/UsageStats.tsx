import { formatCompact, formatCost, formatInt, formatMs, formatPercent } from '../format.ts';
import type { UsageRow } from '../types.ts';

function Stat({
  label,
  value,
  sub,
  testId,
}: {
  label: string;
  value: string;
  sub?: string;
  testId?: string;
}) {
  return (
    <div className="stat" data-stat={testId}>
      <div className="stat-label">{label}</div>
      <div className="stat-value">{value}</div>
      {sub ? <div className="stat-sub">{sub}</div> : null}
    </div>
  );
}

/** The range's totals: requests, tokens, error rate, latency, cost. */
export function UsageStats({
  totals,
  currency,
  rangeLabel,
}: {
  totals: UsageRow | undefined;
  currency: string;
  rangeLabel: string;
}) {
  const requests = totals?.requests ?? 0;
  const errors = totals?.errors ?? 0;
  return (
    <section className="stats" aria-label={`Totals of the last ${rangeLabel}`}>
      <Stat
        label="Requests"
        testId="requests"
        value={formatInt(requests)}
        sub={
          totals?.estimated_requests
            ? `${formatInt(totals.estimated_requests)} with estimated tokens`
            : `last ${rangeLabel}`
        }
      />
      <Stat
        label="Tokens"
        testId="tokens"
        value={formatCompact(totals?.total_tokens ?? 0)}
        sub={`${formatCompact(totals?.prompt_tokens ?? 0)} prompt · ${formatCompact(totals?.completion_tokens ?? 0)} completion`}
      />
      <Stat
        label="Error rate"
        testId="errors"
        value={formatPercent(errors, requests)}
        sub={`${formatInt(errors)} of ${formatInt(requests)} requests`}
      />
      <Stat
        label="Latency (median)"
        testId="latency"
        value={formatMs(totals?.latency_p50_ms)}
        sub={`average ${formatMs(totals?.latency_avg_ms)} · p95 ${formatMs(totals?.latency_p95_ms)}`}
      />
      <Stat
        label="Cost"
        testId="cost"
        value={formatCost(totals?.cost ?? (requests === 0 ? 0 : null), currency)}
        sub={
          totals && totals.cost === null && requests > 0
            ? 'some models have no price'
            : 'from the price table'
        }
      />
    </section>
  );
}
