import { useMutation, useQueryClient } from '@tanstack/react-query';
import { admin, api } from '../api.ts';
import { Badge } from '../components/Badge.tsx';
import { ConfirmDialog } from '../components/ConfirmDialog.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { Loading } from '../components/Loading.tsx';
import { Section } from '../components/Section.tsx';
import { ActionsHeader, RowAction, Table } from '../components/Table.tsx';
import { Time } from '../components/Time.tsx';
import { enc, useConfirmedMutation, useMembers } from '../queries.ts';
import { useSession } from '../session.tsx';
import type { Member, Role } from '../types.ts';
import { InvitesSection, RoleOptions } from './InvitesSection.tsx';

export function MembersSection() {
  const { workspace, user, can } = useSession();
  const queryClient = useQueryClient();
  const members = useMembers();
  const invalidate = () => queryClient.invalidateQueries({ queryKey: [workspace.id, 'members'] });
  const setRole = useMutation({
    mutationFn: ({ member, role }: { member: Member; role: Role }) =>
      api.put<Member>(admin(`/workspaces/${enc(workspace.id)}/members/${enc(member.user_id)}`), { role }),
    onSettled: invalidate,
  });
  const remove = useConfirmedMutation(
    (member: Member) => api.delete(admin(`/workspaces/${enc(workspace.id)}/members/${enc(member.user_id)}`)),
    invalidate,
  );

  return (
    <>
      <Section id="members-title" title="Members">
        <p className="muted">
          Owners and admins manage everything in the workspace; members manage their own keys; viewers only
          read. People join by invitation, below.
        </p>
        <ErrorBanner error={members.error ?? setRole.error} />
        {members.isPending ? (
          <Loading />
        ) : (
          <Table
            head={
              <>
                <th scope="col">Email</th>
                <th scope="col">Role</th>
                <th scope="col">Member since</th>
                {can.manageWorkspace ? <ActionsHeader /> : null}
              </>
            }
          >
            {(members.data ?? []).map((member) => (
              <tr key={member.user_id}>
                <td>
                  <span className="cell-main">{member.email}</span>
                  {member.user_id === user.id ? <Badge tone="gray">you</Badge> : null}
                </td>
                <td>
                  {can.manageWorkspace ? (
                    <select
                      className="select select-small"
                      aria-label={`Role of ${member.email}`}
                      value={member.role}
                      disabled={setRole.isPending}
                      onChange={(e) => setRole.mutate({ member, role: e.target.value as Role })}
                    >
                      <RoleOptions />
                    </select>
                  ) : (
                    <Badge tone="blue">{member.role}</Badge>
                  )}
                </td>
                <td className="nowrap">
                  <Time iso={member.since} />
                </td>
                {can.manageWorkspace ? (
                  <td className="row-actions">
                    <RowAction danger onClick={() => remove.ask(member)} label={`Remove ${member.email}`}>
                      Remove
                    </RowAction>
                  </td>
                ) : null}
              </tr>
            ))}
          </Table>
        )}
      </Section>
      <InvitesSection />
      {remove.target ? (
        <ConfirmDialog
          title={`Remove ${remove.target.email}?`}
          confirmLabel="Remove member"
          {...remove.dialog}
        >
          <p>
            They lose access to {workspace.name} at once, and the keys they own in it are revoked on every
            gateway: apps using those keys stop working.
          </p>
        </ConfirmDialog>
      ) : null}
    </>
  );
}
