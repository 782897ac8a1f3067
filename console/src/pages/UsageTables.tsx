import type { ReactNode } from 'react';
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
      <UsageTable id="top-keys-title" title="Top keys" columns={KEY_COLUMNS}>
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
      </UsageTable>
      <UsageTable id="models-title" title="Models" columns={MODEL_COLUMNS}>
        {models.slice(0, 10).map((row) => (
          <tr key={row.model ?? 'none'}>
            <td className="mono">{row.model ?? <span className="muted">(no model)</span>}</td>
            <td className="num">{formatInt(row.requests)}</td>
            <td className="num">{formatInt(row.total_tokens)}</td>
            <td className="num">{formatCost(row.cost, currency)}</td>
          </tr>
        ))}
      </UsageTable>
    </div>
  );
}

const KEY_COLUMNS = ['Key', 'Requests', 'Error rate', 'Tokens', 'p50', 'p95', 'Cost'];
const MODEL_COLUMNS = ['Model', 'Requests', 'Tokens', 'Cost'];

/** A card with a table labelled by its title; the columns after the first hold numbers. */
function UsageTable({
  id,
  title,
  columns,
  children,
}: {
  id: string;
  title: string;
  columns: string[];
  children: ReactNode;
}) {
  return (
    <section className="card">
      <h2 className="card-title" id={id}>
        {title}
      </h2>
      <div className="table-wrap table-flat">
        <table className="table" aria-labelledby={id}>
          <thead>
            <tr>
              {columns.map((column, i) => (
                <th key={column} scope="col" className={i === 0 ? undefined : 'num'}>
                  {column}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>{children}</tbody>
        </table>
      </div>
    </section>
  );
}
