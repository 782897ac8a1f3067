import { Badge } from '../components/Badge.tsx';
import { formatDateTime } from '../format.ts';
import type { AuditEvent } from '../types.ts';

function short(field: string, value: unknown): string {
  if (value === undefined) return '∅';
  // The API gives times as ISO 8601 (events recorded before it did so held epoch milliseconds).
  if (/(_at|_until)$/.test(field)) {
    const at = typeof value === 'number' || typeof value === 'string' ? new Date(value) : undefined;
    if (at !== undefined && !Number.isNaN(at.getTime())) return formatDateTime(at.toISOString());
  }
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 59)}…` : text;
}

/** A creation lists every field; the empty ones (null, []) say nothing. */
function meaningful([, change]: [string, { before?: unknown; after?: unknown }]): boolean {
  if ('before' in change) return true;
  const after = change.after;
  return !(after === null || (Array.isArray(after) && after.length === 0));
}

function Actor({ actor, emails }: { actor: AuditEvent['actor']; emails: Map<string, string> }) {
  if (actor.type === 'cli') return <span>CLI</span>;
  if (actor.type === 'system') return <span className="muted">system</span>;
  const who = actor.id ? (emails.get(actor.id) ?? actor.id) : 'unknown';
  return (
    <span>
      <Badge tone={actor.type === 'user' ? 'blue' : 'neutral'}>{actor.type}</Badge>{' '}
      <span className={actor.type === 'key' ? 'mono' : ''}>{who}</span>
    </span>
  );
}

export function AuditTable({ events, emails }: { events: AuditEvent[]; emails: Map<string, string> }) {
  return (
    <div className="table-wrap">
      <table className="table">
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Actor</th>
            <th scope="col">Action</th>
            <th scope="col">Target</th>
            <th scope="col">Changes</th>
            <th scope="col">Address</th>
          </tr>
        </thead>
        <tbody>
          {events.map((event) => {
            const changes = Object.entries(event.changes).filter(meaningful);
            return (
              <tr key={event.id}>
                <td className="nowrap">
                  <time dateTime={event.at}>{formatDateTime(event.at)}</time>
                </td>
                <td>
                  <Actor actor={event.actor} emails={emails} />
                </td>
                <td>
                  <code>{event.action}</code>
                </td>
                <td>
                  <span className="muted">{event.target.type}</span>{' '}
                  <span className="mono">
                    {event.target.id ? (emails.get(event.target.id) ?? event.target.id) : ''}
                  </span>
                </td>
                <td>
                  {changes.length === 0 ? (
                    <span className="muted">—</span>
                  ) : (
                    <ul className="changes">
                      {changes.map(([field, change]) => (
                        <li key={field}>
                          <span className="change-field">{field}</span>{' '}
                          {'before' in change ? (
                            <span className="change-before">{short(field, change.before)}</span>
                          ) : null}
                          {'before' in change && 'after' in change ? ' → ' : null}
                          {'after' in change ? (
                            <span className="change-after">{short(field, change.after)}</span>
                          ) : null}
                        </li>
                      ))}
                    </ul>
                  )}
                </td>
                <td className="mono nowrap">{event.actor.ip ?? '—'}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
