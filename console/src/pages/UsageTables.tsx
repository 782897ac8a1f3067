import { formatCost, formatInt, formatMs, formatPercent } from '../format.ts';
import type { UsageRow } from '../types.ts';

/** The keys and models of the range, most tokens first. */
export function UsageTables({
  keys,
  models,
  currency,
}: {
  keys: UsageRow[];
  models: UsageRow[];
  currency: string;
}) {
  return (
    <div className="table-grid">
      <section className="card">
        <h2 className="card-title" id="top-keys-title">
          Top keys
        </h2>
        <div className="table-wrap table-flat">
          <table className="table" aria-labelledby="top-keys-title">
            <thead>
              <tr>
                <th scope="col">Key</th>
                <th scope="col" className="num">
                  Requests
                </th>
                <th scope="col" className="num">
                  Error rate
                </th>
                <th scope="col" className="num">
                  Tokens
                </th>
                <th scope="col" className="num">
                  p50
                </th>
                <th scope="col" className="num">
                  p95
                </th>
                <th scope="col" className="num">
                  Cost
                </th>
              </tr>
            </thead>
            <tbody>
              {keys.slice(0, 10).map((row) => (
                <tr key={row.key_id ?? 'none'}>
                  <td>
                    <div className="cell-main" title={row.key_id ?? undefined}>
                      {row.name ?? row.key_id ?? 'no key'}
                    </div>
                  </td>
                  <td className="num">{formatInt(row.requests)}</td>
                  <td className="num">{formatPercent(row.errors, row.requests)}</td>
                  <td className="num">{formatInt(row.total_tokens)}</td>
                  <td className="num">{formatMs(row.latency_p50_ms)}</td>
                  <td className="num">{formatMs(row.latency_p95_ms)}</td>
                  <td className="num">{formatCost(row.cost, currency)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </section>
      <section className="card">
        <h2 className="card-title" id="models-title">
          Models
        </h2>
        <div className="table-wrap table-flat">
          <table className="table" aria-labelledby="models-title">
            <thead>
              <tr>
                <th scope="col">Model</th>
                <th scope="col" className="num">
                  Requests
                </th>
                <th scope="col" className="num">
                  Tokens
                </th>
                <th scope="col" className="num">
                  Cost
                </th>
              </tr>
            </thead>
            <tbody>
              {models.slice(0, 10).map((row) => (
                <tr key={row.model ?? 'none'}>
                  <td className="mono">{row.model ?? <span className="muted">(no model)</span>}</td>
                  <td className="num">{formatInt(row.requests)}</td>
                  <td className="num">{formatInt(row.total_tokens)}</td>
                  <td className="num">{formatCost(row.cost, currency)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </section>
    </div>
  );
}
