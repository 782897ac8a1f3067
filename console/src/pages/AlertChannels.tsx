import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { type FormEvent, useState } from 'react';
import { admin, api, query } from '../api.ts';
import { Badge } from '../components/Badge.tsx';
import { Button } from '../components/Button.tsx';
import { ConfirmDialog } from '../components/ConfirmDialog.tsx';
import { Dialog } from '../components/Dialog.tsx';
import { EmptyState } from '../components/EmptyState.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { Field } from '../components/Field.tsx';
import { Icon } from '../components/Icon.tsx';
import { Loading } from '../components/Loading.tsx';
import { SecretReveal } from '../components/SecretReveal.tsx';
import { Time } from '../components/Time.tsx';
import { enc } from '../queries.ts';
import { useSession } from '../session.tsx';
import {
  type AlertChannel,
  type AlertChannelList,
  CHANNEL_TYPES,
  type ChannelType,
  type CreatedAlertChannel,
  type TestAlertResult,
} from '../types.ts';

const URL_HINTS: Record<ChannelType, string> = {
  webhook: 'An https:// URL that receives a signed JSON POST (http:// only for loopback).',
  slack: 'A Slack (or compatible) incoming webhook URL, https://hooks.slack.com/services/…',
  email: 'smtp://[user:pass@]host[:port]?from=ADDR&to=ADDR[,ADDR] or smtps://…',
};

export function AlertChannels() {
  const { workspace, can } = useSession();
  const queryClient = useQueryClient();
  const [adding, setAdding] = useState(false);
  const [removing, setRemoving] = useState<AlertChannel | null>(null);
  const channels = useQuery({
    queryKey: [workspace.id, 'alert-channels'],
    queryFn: () =>
      api.get<AlertChannelList>(admin(`/alerts/channels${query({ workspace_id: workspace.id })}`)),
  });
  const test = useMutation({
    mutationFn: () => api.post<TestAlertResult>(admin('/alerts/test'), { workspace_id: workspace.id }),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: [workspace.id, 'alerts'] }),
  });
  const remove = useMutation({
    mutationFn: (id: string) => api.delete(admin(`/alerts/channels/${enc(id)}`)),
    onSuccess: () => {
      void queryClient.invalidateQueries({ queryKey: [workspace.id, 'alert-channels'] });
      setRemoving(null);
    },
  });
  const list = channels.data?.data ?? [];

  return (
    <section className="section" aria-labelledby="channels-title">
      <div className="section-header">
        <h2 id="channels-title">Channels</h2>
        {can.manageWorkspace ? (
          <div className="page-actions">
            <Button onClick={() => test.mutate()} busy={test.isPending}>
              Send test
            </Button>
            <Button variant="primary" onClick={() => setAdding(true)}>
              <Icon name="plus" />
              Add channel
            </Button>
          </div>
        ) : null}
      </div>
      <ErrorBanner error={channels.error ?? test.error} />
      {test.data ? (
        <div className="banner banner-info" role="status">
          <strong className="banner-title">Test alert raised.</strong>
          {test.data.data.length === 0 ? (
            <span> It is in the feed above; there is no channel to send it to.</span>
          ) : null}
          <ul>
            {test.data.data.map((r) => (
              <li key={r.channel_id}>
                {r.name}:{' '}
                {r.outcome === 'sent' ? <Badge tone="green">sent</Badge> : <Badge tone="red">failed</Badge>}
                {r.status !== null ? ` (status ${r.status})` : ''}
                {r.error ? ` — ${r.error}` : ''}
              </li>
            ))}
          </ul>
        </div>
      ) : null}
      {channels.isPending ? (
        <Loading />
      ) : list.length === 0 && !channels.isError ? (
        <EmptyState title="No channels — alerts stay in this feed only.">
          {can.manageWorkspace
            ? 'Add a webhook, a Slack incoming webhook or an email address to be told as soon as something happens.'
            : 'An owner or admin of this workspace can add a webhook, Slack or email channel.'}
        </EmptyState>
      ) : (
        <div className="table-wrap">
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Type</th>
                <th scope="col">Sends to</th>
                <th scope="col">Added</th>
                {can.manageWorkspace ? (
                  <th scope="col">
                    <span className="visually-hidden">Actions</span>
                  </th>
                ) : null}
              </tr>
            </thead>
            <tbody>
              {list.map((channel) => (
                <tr key={channel.id}>
                  <td className="cell-main">{channel.name}</td>
                  <td>
                    <Badge>{channel.type}</Badge>
                  </td>
                  <td className="mono break">
                    {channel.target}
                    {channel.email ? (
                      <div className="cell-sub">
                        from {channel.email.from} to {channel.email.to.join(', ')}
                      </div>
                    ) : null}
                  </td>
                  <td className="nowrap">
                    <Time iso={channel.created_at} />
                  </td>
                  {can.manageWorkspace ? (
                    <td className="row-actions">
                      <Button
                        size="small"
                        variant="ghost"
                        className="danger-text"
                        onClick={() => setRemoving(channel)}
                        aria-label={`Delete the channel ${channel.name}`}
                      >
                        Delete
                      </Button>
                    </td>
                  ) : null}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {adding ? <ChannelDialog onClose={() => setAdding(false)} /> : null}
      {removing ? (
        <ConfirmDialog
          title={`Delete the channel ${removing.name}?`}
          confirmLabel="Delete channel"
          onConfirm={() => remove.mutate(removing.id)}
          onClose={() => {
            setRemoving(null);
            remove.reset();
          }}
          busy={remove.isPending}
          error={remove.error}
        >
          <p>Alerts will no longer be sent to {removing.target}.</p>
        </ConfirmDialog>
      ) : null}
    </section>
  );
}

function ChannelDialog({ onClose }: { onClose: () => void }) {
  const { workspace } = useSession();
  const queryClient = useQueryClient();
  const [type, setType] = useState<ChannelType>('webhook');
  const [name, setName] = useState('');
  const [url, setUrl] = useState('');
  const [secret, setSecret] = useState('');
  const create = useMutation({
    mutationFn: () =>
      api.post<CreatedAlertChannel>(admin('/alerts/channels'), {
        type,
        url: url.trim(),
        workspace_id: workspace.id,
        ...(name.trim() ? { name: name.trim() } : {}),
        ...(type === 'webhook' && secret ? { secret } : {}),
      }),
    onSuccess: (created) => {
      void queryClient.invalidateQueries({ queryKey: [workspace.id, 'alert-channels'] });
      if (!created.secret) onClose();
    },
  });

  function submit(event: FormEvent) {
    event.preventDefault();
    create.mutate();
  }

  if (create.data?.secret) {
    return (
      <Dialog title={`Channel ${create.data.name} added`} onClose={onClose} wide>
        <SecretReveal
          label="Signing secret"
          value={create.data.secret}
          warning="Copy the webhook's signing secret now: you will not see it again. Your receiver checks each alert's signature with it."
        />
        <div className="dialog-actions">
          <Button variant="primary" onClick={onClose}>
            Done
          </Button>
        </div>
      </Dialog>
    );
  }

  return (
    <Dialog title="Add an alert channel" onClose={onClose}>
      <form className="form" onSubmit={submit} noValidate>
        <Field label="Type">
          {(props) => (
            <select
              {...props}
              className="select"
              value={type}
              onChange={(e) => setType(e.target.value as ChannelType)}
              data-autofocus
            >
              {CHANNEL_TYPES.map((t) => (
                <option key={t} value={t}>
                  {t === 'webhook' ? 'Webhook (signed JSON)' : t === 'slack' ? 'Slack' : 'Email (SMTP)'}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Name" hint="Optional; default: the type and the host.">
          {(props) => (
            <input {...props} className="input" value={name} onChange={(e) => setName(e.target.value)} />
          )}
        </Field>
        <Field label={type === 'email' ? 'SMTP URL' : 'URL'} hint={URL_HINTS[type]}>
          {(props) => (
            <input
              {...props}
              className="input mono"
              value={url}
              onChange={(e) => setUrl(e.target.value)}
              spellCheck={false}
              required
            />
          )}
        </Field>
        {type === 'webhook' ? (
          <Field
            label="Signing secret"
            hint="Optional, 16 characters or more; generated and shown once when empty."
          >
            {(props) => (
              <input
                {...props}
                className="input mono"
                type="password"
                value={secret}
                onChange={(e) => setSecret(e.target.value)}
                autoComplete="off"
              />
            )}
          </Field>
        ) : null}
        <ErrorBanner error={create.error} title="The channel was not added." />
        <div className="dialog-actions">
          <Button onClick={onClose}>Cancel</Button>
          <Button type="submit" variant="primary" busy={create.isPending} disabled={url.trim() === ''}>
            Add channel
          </Button>
        </div>
      </form>
    </Dialog>
  );
}
