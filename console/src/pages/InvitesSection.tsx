import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { type FormEvent, useState } from 'react';
import { admin, api } from '../api.ts';
import { Badge, type Tone } from '../components/Badge.tsx';
import { Button } from '../components/Button.tsx';
import { Dialog } from '../components/Dialog.tsx';
import { EmptyState } from '../components/EmptyState.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { SelectField, TextField } from '../components/Field.tsx';
import { Loading } from '../components/Loading.tsx';
import { SecretReveal } from '../components/SecretReveal.tsx';
import { Section } from '../components/Section.tsx';
import { ActionsHeader, RowAction, Table } from '../components/Table.tsx';
import { Time } from '../components/Time.tsx';
import { formatDateTime } from '../format.ts';
import { enc } from '../queries.ts';
import { useSession } from '../session.tsx';
import { type CreatedInvite, type Invite, ROLES, type Role } from '../types.ts';

type InviteState = 'pending' | 'accepted' | 'revoked' | 'expired';
const STATE_TONE: Record<InviteState, Tone> = {
  pending: 'amber',
  accepted: 'green',
  revoked: 'red',
  expired: 'gray',
};

function stateOf(invite: Invite): InviteState {
  if (invite.accepted_at) return 'accepted';
  if (invite.revoked_at) return 'revoked';
  if (Date.parse(invite.expires_at) <= Date.now()) return 'expired';
  return 'pending';
}

/** The options of a role `<select>`. */
export function RoleOptions() {
  return ROLES.map((r) => (
    <option key={r} value={r}>
      {r}
    </option>
  ));
}

export function inviteLink(token: string): string {
  return `${window.location.origin}/console/invite#${token}`;
}

export function InvitesSection() {
  const { workspace, can } = useSession();
  const queryClient = useQueryClient();
  const [email, setEmail] = useState('');
  const [role, setRole] = useState<Role>('member');
  const [created, setCreated] = useState<CreatedInvite | null>(null);
  const invitesKey = [workspace.id, 'invites'];
  const invites = useQuery({
    queryKey: invitesKey,
    queryFn: () => api.get<{ data: Invite[] }>(admin(`/workspaces/${enc(workspace.id)}/invites`)),
    enabled: can.manageWorkspace,
  });
  const create = useMutation({
    mutationFn: () =>
      api.post<CreatedInvite>(admin(`/workspaces/${enc(workspace.id)}/invites`), {
        email: email.trim(),
        role,
      }),
    onSuccess: (invite) => {
      void queryClient.invalidateQueries({ queryKey: invitesKey });
      setCreated(invite);
      setEmail('');
    },
  });
  const revoke = useMutation({
    mutationFn: (id: string) => api.delete(admin(`/workspaces/${enc(workspace.id)}/invites/${enc(id)}`)),
    onSettled: () => queryClient.invalidateQueries({ queryKey: invitesKey }),
  });

  if (!can.manageWorkspace) return null;

  function submit(event: FormEvent) {
    event.preventDefault();
    create.mutate();
  }

  const list = [...(invites.data?.data ?? [])].sort((a, b) =>
    (b.created_at ?? '').localeCompare(a.created_at ?? ''),
  );

  return (
    <Section id="invites-title" title="Invitations">
      <form className="card invite-form" onSubmit={submit} noValidate>
        <TextField
          label="Email to invite"
          fieldClassName="grow"
          type="email"
          value={email}
          onChange={setEmail}
          placeholder="colleague@example.com"
        />
        <SelectField label="Role" value={role} onChange={setRole}>
          <RoleOptions />
        </SelectField>
        <Button type="submit" variant="primary" busy={create.isPending} disabled={email.trim() === ''}>
          Invite
        </Button>
      </form>
      <ErrorBanner error={create.error ?? revoke.error ?? invites.error} />
      {invites.isPending ? (
        <Loading />
      ) : list.length === 0 ? (
        <EmptyState title="No invitations yet.">
          Invite someone by email: you get a link to send them, valid for 7 days. They join when they open it
          and accept, signed in to their account or with a new one.
        </EmptyState>
      ) : (
        <Table
          head={
            <>
              <th scope="col">Email</th>
              <th scope="col">Role</th>
              <th scope="col">Status</th>
              <th scope="col">Invited</th>
              <th scope="col">Expires</th>
              <ActionsHeader />
            </>
          }
        >
          {list.map((invite) => {
            const state = stateOf(invite);
            return (
              <tr key={invite.id}>
                <td className="cell-main">{invite.email}</td>
                <td>{invite.role}</td>
                <td>
                  <Badge tone={STATE_TONE[state]}>{state}</Badge>
                </td>
                <td className="nowrap">
                  <Time iso={invite.created_at} />
                </td>
                <td className="nowrap">{formatDateTime(invite.expires_at)}</td>
                <td className="row-actions">
                  {state === 'pending' ? (
                    <RowAction
                      danger
                      onClick={() => revoke.mutate(invite.id)}
                      label={`Revoke the invitation of ${invite.email}`}
                    >
                      Revoke
                    </RowAction>
                  ) : null}
                </td>
              </tr>
            );
          })}
        </Table>
      )}
      {created ? (
        <Dialog title={`Invitation for ${created.email}`} onClose={() => setCreated(null)} wide>
          <SecretReveal
            label="Invitation link"
            value={inviteLink(created.token)}
            warning="Send this link to them yourself; Keygate does not email it. You will not see it again."
          >
            <p className="muted">
              It lets {created.email} join {workspace.name} as {created.role} until{' '}
              {formatDateTime(created.expires_at)}.
            </p>
          </SecretReveal>
          <div className="dialog-actions">
            <Button variant="primary" onClick={() => setCreated(null)}>
              Done
            </Button>
          </div>
        </Dialog>
      ) : null}
    </Section>
  );
}
