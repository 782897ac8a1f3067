import { useMutation, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { admin, api } from '../api.ts';
import { SelectField } from '../components/Field.tsx';
import { FormDialog } from '../components/FormDialog.tsx';
import { enc } from '../queries.ts';
import { useSession } from '../session.tsx';
import type { Key, RotatedKey } from '../types.ts';

const GRACE_OPTIONS: { value: string; label: string }[] = [
  { value: '0', label: 'None: the old secret stops working now' },
  { value: '1h', label: '1 hour' },
  { value: '24h', label: '24 hours' },
  { value: '3d', label: '3 days' },
  { value: '7d', label: '7 days' },
];

/** A new secret for the same key; the old one keeps working for the grace period. */
export function RotateKeyDialog({
  apiKey,
  onClose,
  onRotated,
}: {
  apiKey: Key;
  onClose: () => void;
  onRotated: (rotated: RotatedKey) => void;
}) {
  const { workspace } = useSession();
  const queryClient = useQueryClient();
  const [grace, setGrace] = useState('24h');
  const mutation = useMutation({
    mutationFn: () => api.post<RotatedKey>(admin(`/keys/${enc(apiKey.id)}/rotate`), { grace }),
    onSuccess: (rotated) => {
      void queryClient.invalidateQueries({ queryKey: [workspace.id, 'keys'] });
      onRotated(rotated);
    },
  });

  return (
    <FormDialog
      title={`Rotate ${apiKey.name}`}
      description="Issues a new secret for this key. Its id, restrictions and history stay the same."
      onClose={onClose}
      onSubmit={() => mutation.mutate()}
      sending={mutation}
      submitLabel="Rotate key"
      errorTitle="The key was not rotated."
    >
      <SelectField
        label="Grace period"
        hint="How long the current secret keeps working, so you can deploy the new one."
        value={grace}
        onChange={setGrace}
        data-autofocus
      >
        {GRACE_OPTIONS.map((o) => (
          <option key={o.value} value={o.value}>
            {o.label}
          </option>
        ))}
      </SelectField>
    </FormDialog>
  );
}
