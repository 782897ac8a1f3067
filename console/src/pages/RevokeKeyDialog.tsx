import { useMutation, useQueryClient } from '@tanstack/react-query';
import { admin, api } from '../api.ts';
import { ConfirmDialog } from '../components/ConfirmDialog.tsx';
import { enc } from '../queries.ts';
import { useSession } from '../session.tsx';
import type { Key } from '../types.ts';

export function RevokeKeyDialog({ apiKey, onClose }: { apiKey: Key; onClose: () => void }) {
  const { workspace } = useSession();
  const queryClient = useQueryClient();
  const mutation = useMutation({
    mutationFn: () => api.post<Key>(admin(`/keys/${enc(apiKey.id)}/revoke`)),
    onSuccess: () => {
      void queryClient.invalidateQueries({ queryKey: [workspace.id, 'keys'] });
      onClose();
    },
  });
  return (
    <ConfirmDialog
      title={`Revoke ${apiKey.name}?`}
      confirmLabel="Revoke key"
      onConfirm={() => mutation.mutate()}
      onClose={onClose}
      busy={mutation.isPending}
      error={mutation.error}
    >
      <p>
        Every request with this key (<code>{apiKey.display}</code>) is refused within a second, on every
        gateway. A revoked key cannot be restored: the apps that use it need a new key.
      </p>
    </ConfirmDialog>
  );
}
