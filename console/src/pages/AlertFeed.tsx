import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { admin, api, query } from '../api.ts';
import { Badge, type Tone } from '../components/Badge.tsx';
import { Button } from '../components/Button.tsx';
import { EmptyState } from '../components/EmptyState.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { Loading } from '../components/Loading.tsx';
import { RichText } from '../components/RichText.tsx';
import { Section } from '../components/Section.tsx';
import { Time } from '../components/Time.tsx';
import { formatInt } from '../format.ts';
import { enc } from '../queries.ts';
import { useSession } from '../session.tsx';
import type { Alert, AlertList, Severity } from '../types.ts';

const SEVERITY_TONE: Record<Severity, Tone> = { info: 'blue', warning: 'amber', critical: 'red' };

function AlertItem({ alert }: { alert: Alert }) {
  const { workspace, can } = useSession();
  const queryClient = useQueryClient();
  const acknowledge = useMutation({
    mutationFn: () => api.post<Alert>(admin(`/alerts/${enc(alert.id)}/acknowledge`)),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: [workspace.id, 'alerts'] }),
  });
  const acknowledged = alert.acknowledged_at !== null;
  return (
    <li className={acknowledged ? 'alert-item acknowledged' : 'alert-item'} data-alert-kind={alert.kind}>
      <div className="alert-head">
        <Badge tone={SEVERITY_TONE[alert.severity]}>{alert.severity}</Badge>
        <h3 className="alert-title">{alert.title}</h3>
        <span className="alert-when">
          <Time iso={alert.last_at} />
          {alert.occurrences > 1 ? ` · ${formatInt(alert.occurrences)} times since ` : null}
          {alert.occurrences > 1 ? <Time iso={alert.first_at} /> : null}
        </span>
      </div>
      <p className="alert-message">
        <RichText text={alert.message} />
      </p>
      {alert.action ? (
        <p className="alert-action">
          <RichText text={alert.action} />
        </p>
      ) : null}
      <div className="alert-foot">
        {alert.key ? (
          <span className="muted">
            Key: {alert.key.name ?? alert.key.id} <span className="mono">({alert.key.id})</span>
          </span>
        ) : (
          <span />
        )}
        {acknowledged ? (
          <span className="muted">
            Acknowledged <Time iso={alert.acknowledged_at} />
          </span>
        ) : can.manageWorkspace ? (
          <Button size="small" onClick={() => acknowledge.mutate()} busy={acknowledge.isPending}>
            Acknowledge
          </Button>
        ) : null}
      </div>
      <ErrorBanner error={acknowledge.error} />
    </li>
  );
}

export function AlertFeed() {
  const { workspace } = useSession();
  const [onlyOpen, setOnlyOpen] = useState(false);
  const alerts = useQuery({
    queryKey: [workspace.id, 'alerts', { onlyOpen }],
    queryFn: () =>
      api.get<AlertList>(
        admin(
          `/alerts${query({ workspace_id: workspace.id, unacknowledged: onlyOpen ? 'true' : undefined, limit: 100 })}`,
        ),
      ),
    refetchInterval: 30_000,
  });
  const list = alerts.data?.data ?? [];
  const open = list.filter((a) => a.acknowledged_at === null).length;
  return (
    <Section
      id="feed-title"
      title={<>Feed {open > 0 ? <Badge tone="red">{`${open} open`}</Badge> : null}</>}
      actions={
        <label className="check">
          <input type="checkbox" checked={onlyOpen} onChange={(e) => setOnlyOpen(e.target.checked)} />
          <span>Unacknowledged only</span>
        </label>
      }
    >
      <ErrorBanner error={alerts.error} title="The alerts could not be loaded." />
      {alerts.isPending ? (
        <Loading label="Loading alerts…" />
      ) : list.length === 0 && !alerts.isError ? (
        <EmptyState title={onlyOpen ? 'Nothing to acknowledge.' : 'No alerts yet.'}>
          Keygate raises an alert when a key's usage spikes, a budget passes a threshold, a key is used from a
          new network, authentication keeps failing, or a key is about to expire. Add a channel below to be
          told at once.
        </EmptyState>
      ) : (
        <ul className="alert-list">
          {list.map((alert) => (
            <AlertItem key={alert.id} alert={alert} />
          ))}
        </ul>
      )}
    </Section>
  );
}
