import { useMutation, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { admin, api } from '../api.ts';
import { Badge } from '../components/Badge.tsx';
import { Button } from '../components/Button.tsx';
import { ConfirmDialog } from '../components/ConfirmDialog.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { Loading } from '../components/Loading.tsx';
import { Time } from '../components/Time.tsx';
import { enc, useMembers } from '../queries.ts';
import { useSession } from '../session.tsx';
import { type Member, ROLES, type Role } from '../types.ts';
import { InvitesSection } from './InvitesSection.tsx';

export function MembersSection() {
  const { workspace, user, can } = useSession();
  const queryClient = useQueryClient();
  const members = useMembers();
  const [removing, setRemoving] = useState<Member | null>(null);
  const invalidate = () => queryClient.invalidateQueries({ queryKey: [workspace.id, 'members'] });
  const setRole = useMutation({
    mutationFn: ({ member, role }: { member: Member; role: Role }) =>
      api.put<Member>(admin(`/workspaces/${enc(workspace.id)}/members/${enc(member.user_id)}`), { role }),
    onSettled: invalidate,
  });
  const remove = useMutation({
    mutationFn: (member: Member) =>
      api.delete(admin(`/workspaces/${enc(workspace.id)}/members/${enc(member.user_id)}`)),
    onSuccess: () => {
      void invalidate();
      setRemoving(null);
    },
  });

  return (
    <>
      <section className="section" aria-labelledby="members-title">
        <div className="section-header">
          <h2 id="members-title">Members</h2>
        </div>
        <p className="muted">
          Owners and admins manage everything in the workspace; members manage their own keys; viewers only
          read.
        </p>
        <ErrorBanner error={members.error ?? setRole.error} />
        {members.isPending ? (
          <Loading />
        ) : (
          <div className="table-wrap">
            <table className="table">
              <thead>
                <tr>
                  <th scope="col">Email</th>
                  <th scope="col">Role</th>
                  <th scope="col">Member since</th>
                  {can.manageWorkspace ? (
                    <th scope="col">
                      <span className="visually-hidden">Actions</span>
                    </th>
                  ) : null}
                </tr>
              </thead>
              <tbody>
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
                          {ROLES.map((r) => (
                            <option key={r} value={r}>
                              {r}
                            </option>
                          ))}
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
                        <Button
                          size="small"
                          variant="ghost"
                          className="danger-text"
                          onClick={() => setRemoving(member)}
                          aria-label={`Remove ${member.email}`}
                        >
                          Remove
                        </Button>
                      </td>
                    ) : null}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
      <InvitesSection />
      {removing ? (
        <ConfirmDialog
          title={`Remove ${removing.email}?`}
          confirmLabel="Remove member"
          onConfirm={() => remove.mutate(removing)}
          onClose={() => {
            setRemoving(null);
            remove.reset();
          }}
          busy={remove.isPending}
          error={remove.error}
        >
          <p>
            They lose access to {workspace.name} at once, and keys that act with their role lose their
            management scopes. Their keys keep working for /v1 until you revoke them.
          </p>
        </ConfirmDialog>
      ) : null}
    </>
  );
}
