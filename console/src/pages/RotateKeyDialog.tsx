import { useMutation, useQueryClient } from '@tanstack/react-query';
import { type FormEvent, useState } from 'react';
import { admin, api } from '../api.ts';
import { Button } from '../components/Button.tsx';
import { Dialog } from '../components/Dialog.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { Field } from '../components/Field.tsx';
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

  function submit(event: FormEvent) {
    event.preventDefault();
    mutation.mutate();
  }

  return (
    <Dialog
      title={`Rotate ${apiKey.name}`}
      description="Issues a new secret for this key. Its id, restrictions and history stay the same."
      onClose={onClose}
    >
      <form className="form" onSubmit={submit}>
        <Field
          label="Grace period"
          hint="How long the current secret keeps working, so you can deploy the new one."
        >
          {(props) => (
            <select
              {...props}
              className="select"
              value={grace}
              onChange={(e) => setGrace(e.target.value)}
              data-autofocus
            >
              {GRACE_OPTIONS.map((o) => (
                <option key={o.value} value={o.value}>
                  {o.label}
                </option>
              ))}
            </select>
          )}
        </Field>
        <ErrorBanner error={mutation.error} title="The key was not rotated." />
        <div className="dialog-actions">
          <Button onClick={onClose}>Cancel</Button>
          <Button type="submit" variant="primary" busy={mutation.isPending}>
            Rotate key
          </Button>
        </div>
      </form>
    </Dialog>
  );
}
