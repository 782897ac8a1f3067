import { useMutation, useQueryClient } from '@tanstack/react-query';
import { type FormEvent, useState } from 'react';
import { admin, api } from '../api.ts';
import { Button } from '../components/Button.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { TextField } from '../components/Field.tsx';
import { SESSION_KEY, useSession } from '../session.tsx';
import type { Workspace } from '../types.ts';

/** The operator (owner of ws_default) creates workspaces; the console then switches to the new one. */
export function NewWorkspaceForm() {
  const { setWorkspace } = useSession();
  const queryClient = useQueryClient();
  const [name, setName] = useState('');
  const create = useMutation({
    mutationFn: () => api.post<Workspace>(admin('/workspaces'), { name: name.trim() }),
    onSuccess: async (created) => {
      await queryClient.refetchQueries({ queryKey: SESSION_KEY });
      setWorkspace(created.id);
      setName('');
    },
  });

  function submit(event: FormEvent) {
    event.preventDefault();
    create.mutate();
  }

  return (
    <form className="card form form-narrow" onSubmit={submit} noValidate>
      <h2 className="card-title">New workspace</h2>
      <p className="muted">
        A workspace has its own keys, members, policy, budget and alerts. Invite its owner from the Members
        tab once it exists.
      </p>
      <div className="invite-form invite-form-plain">
        <TextField
          label="Workspace name"
          fieldClassName="grow"
          value={name}
          onChange={setName}
          placeholder="e.g. Research"
          maxLength={128}
        />
        <Button type="submit" variant="primary" busy={create.isPending} disabled={name.trim() === ''}>
          Create workspace
        </Button>
      </div>
      <ErrorBanner error={create.error} title="The workspace was not created." />
    </form>
  );
}
