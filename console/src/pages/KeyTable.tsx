import { Badge, type Tone } from '../components/Badge.tsx';
import { ActionsHeader, RowAction, Table } from '../components/Table.tsx';
import { Time } from '../components/Time.tsx';
import { formatInt } from '../format.ts';
import { INFERENCE_SCOPES, type Key, type KeyStatus } from '../types.ts';

const STATUS_TONE: Record<KeyStatus, Tone> = { active: 'green', revoked: 'red', expired: 'gray' };

function Scopes({ scopes }: { scopes: Key['scopes'] }) {
  const inference = scopes.filter((s) => (INFERENCE_SCOPES as readonly string[]).includes(s));
  const management = scopes.filter((s) => !(INFERENCE_SCOPES as readonly string[]).includes(s));
  return (
    <div className="badges">
      {inference.length === INFERENCE_SCOPES.length ? (
        <Badge title={inference.join(', ')}>all inference</Badge>
      ) : (
        inference.map((s) => <Badge key={s}>{s}</Badge>)
      )}
      {management.map((s) => (
        <Badge key={s} tone="amber">
          {s}
        </Badge>
      ))}
    </div>
  );
}

function Restrictions({ apiKey }: { apiKey: Key }) {
  const parts: string[] = [];
  const { limits, budget } = apiKey;
  if (limits.requests_per_minute !== null) parts.push(`${formatInt(limits.requests_per_minute)} rpm`);
  if (limits.tokens_per_minute !== null) parts.push(`${formatInt(limits.tokens_per_minute)} tpm`);
  if (limits.concurrent_requests !== null) parts.push(`${limits.concurrent_requests} concurrent`);
  if (budget.tokens_per_day !== null) parts.push(`${formatInt(budget.tokens_per_day)}/day`);
  if (budget.tokens_per_month !== null) parts.push(`${formatInt(budget.tokens_per_month)}/month`);
  if (apiKey.allowed_ips.length > 0) parts.push(`IPs: ${apiKey.allowed_ips.join(', ')}`);
  if (parts.length === 0) return null;
  return <div className="cell-sub">{parts.join(' · ')}</div>;
}

interface KeyTableProps {
  keys: Key[];
  emails: Map<string, string>;
  monthTokens: Map<string, number> | undefined;
  canWrite: boolean;
  onEdit: (key: Key) => void;
  onRotate: (key: Key) => void;
  onRevoke: (key: Key) => void;
}

export function KeyTable({ keys, emails, monthTokens, canWrite, onEdit, onRotate, onRevoke }: KeyTableProps) {
  return (
    <Table
      head={
        <>
          <th scope="col">Name</th>
          <th scope="col">Key</th>
          <th scope="col">Scopes</th>
          <th scope="col">Models</th>
          <th scope="col">Created</th>
          <th scope="col">Last used</th>
          <th scope="col">Expires</th>
          <th scope="col">Status</th>
          <th scope="col" className="num">
            Tokens <span className="th-sub">this month</span>
          </th>
          {canWrite ? <ActionsHeader /> : null}
        </>
      }
    >
      {keys.map((key) => (
        <tr key={key.id} data-key-id={key.id}>
          <td>
            <div className="cell-main">{key.name}</div>
            <div className="cell-sub mono cell-id" title={key.id}>
              {key.id}
            </div>
            <Restrictions apiKey={key} />
          </td>
          <td className="mono nowrap">{key.display}</td>
          <td>
            <Scopes scopes={key.scopes} />
          </td>
          <td>
            {key.models.length === 0 ? (
              <span className="muted">any</span>
            ) : (
              <div className="badges">
                {key.models.map((m) => (
                  <Badge key={m} tone="blue">
                    {m}
                  </Badge>
                ))}
              </div>
            )}
          </td>
          <td>
            <div className="nowrap">
              <Time iso={key.created_at} />
            </div>
            <div className="cell-sub">
              by{' '}
              {key.created_by
                ? (emails.get(key.created_by) ?? <span className="mono">{key.created_by}</span>)
                : 'the CLI'}
            </div>
          </td>
          <td className="nowrap">
            <Time iso={key.last_used_at} empty="never" />
          </td>
          <td className="nowrap">
            <Time iso={key.expires_at} empty="never" />
          </td>
          <td>
            <Badge tone={STATUS_TONE[key.status]}>{key.status}</Badge>
          </td>
          <td className="num">{monthTokens ? formatInt(monthTokens.get(key.id) ?? 0) : '…'}</td>
          {canWrite ? (
            <td className="row-actions">
              {key.status === 'revoked' ? null : (
                <div className="row-actions-stack">
                  <RowAction onClick={() => onEdit(key)} label={`Edit ${key.name}`}>
                    Edit
                  </RowAction>
                  <RowAction onClick={() => onRotate(key)} label={`Rotate ${key.name}`}>
                    Rotate
                  </RowAction>
                  <RowAction danger onClick={() => onRevoke(key)} label={`Revoke ${key.name}`}>
                    Revoke
                  </RowAction>
                </div>
              )}
            </td>
          ) : null}
        </tr>
      ))}
    </Table>
  );
}
