import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { admin, api, query } from '../api.ts';
import { Badge } from '../components/Badge.tsx';
import { Button } from '../components/Button.tsx';
import { ConfirmDialog } from '../components/ConfirmDialog.tsx';
import { Dialog } from '../components/Dialog.tsx';
import { EmptyState } from '../components/EmptyState.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { SelectField, TextField } from '../components/Field.tsx';
import { FormDialog } from '../components/FormDialog.tsx';
import { Icon } from '../components/Icon.tsx';
import { Loading } from '../components/Loading.tsx';
import { SecretReveal } from '../components/SecretReveal.tsx';
import { Section } from '../components/Section.tsx';
import { ActionsHeader, RowAction, Table } from '../components/Table.tsx';
import { Time } from '../components/Time.tsx';
import { enc, useConfirmedMutation } from '../queries.ts';
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
  const channels = useQuery({
    queryKey: [workspace.id, 'alert-channels'],
    queryFn: () =>
      api.get<AlertChannelList>(admin(`/alerts/channels${query({ workspace_id: workspace.id })}`)),
  });
  const test = useMutation({
    mutationFn: () => api.post<TestAlertResult>(admin('/alerts/test'), { workspace_id: workspace.id }),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: [workspace.id, 'alerts'] }),
  });
  const remove = useConfirmedMutation(
    (channel: AlertChannel) => api.delete(admin(`/alerts/channels/${enc(channel.id)}`)),
    () => queryClient.invalidateQueries({ queryKey: [workspace.id, 'alert-channels'] }),
  );
  const list = channels.data?.data ?? [];
  const actions = (
    <div className="page-actions">
      <Button onClick={() => test.mutate()} busy={test.isPending}>
        Send test
      </Button>
      <Button variant="primary" onClick={() => setAdding(true)}>
        <Icon name="plus" />
        Add channel
      </Button>
    </div>
  );

  return (
    <Section id="channels-title" title="Channels" actions={can.manageWorkspace ? actions : null}>
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
        <Table
          head={
            <>
              <th scope="col">Name</th>
              <th scope="col">Type</th>
              <th scope="col">Sends to</th>
              <th scope="col">Added</th>
              {can.manageWorkspace ? <ActionsHeader /> : null}
            </>
          }
        >
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
                  <RowAction
                    danger
                    onClick={() => remove.ask(channel)}
                    label={`Delete the channel ${channel.name}`}
                  >
                    Delete
                  </RowAction>
                </td>
              ) : null}
            </tr>
          ))}
        </Table>
      )}
      {adding ? <ChannelDialog onClose={() => setAdding(false)} /> : null}
      {remove.target ? (
        <ConfirmDialog
          title={`Delete the channel ${remove.target.name}?`}
          confirmLabel="Delete channel"
          {...remove.dialog}
        >
          <p>Alerts will no longer be sent to {remove.target.target}.</p>
        </ConfirmDialog>
      ) : null}
    </Section>
  );
}

const TYPE_LABELS: Record<ChannelType, string> = {
  webhook: 'Webhook (signed JSON)',
  slack: 'Slack',
  email: 'Email (SMTP)',
};

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
    <FormDialog
      title="Add an alert channel"
      onClose={onClose}
      onSubmit={() => create.mutate()}
      sending={create}
      submitLabel="Add channel"
      errorTitle="The channel was not added."
      disabled={url.trim() === ''}
    >
      <SelectField label="Type" value={type} onChange={setType} data-autofocus>
        {CHANNEL_TYPES.map((t) => (
          <option key={t} value={t}>
            {TYPE_LABELS[t]}
          </option>
        ))}
      </SelectField>
      <TextField
        label="Name"
        hint="Optional; default: the type and the host."
        value={name}
        onChange={setName}
      />
      <TextField
        label={type === 'email' ? 'SMTP URL' : 'URL'}
        hint={URL_HINTS[type]}
        className="input mono"
        value={url}
        onChange={setUrl}
        spellCheck={false}
        required
      />
      {type === 'webhook' ? (
        <TextField
          label="Signing secret"
          hint="Optional, 16 characters or more; generated and shown once when empty."
          className="input mono"
          type="password"
          value={secret}
          onChange={setSecret}
          autoComplete="off"
        />
      ) : null}
    </FormDialog>
  );
}
