import { useMutation, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { admin, api } from '../api.ts';
import { LinesField, SelectField, TextField } from '../components/Field.tsx';
import { FormDialog } from '../components/FormDialog.tsx';
import { durationLabel, durationMs, formatDateTime } from '../format.ts';
import { enc } from '../queries.ts';
import { useSession } from '../session.tsx';
import type { CreatedKey, Key, KeyInput, Scope, Workspace } from '../types.ts';
import { type Errors, EXPIRY_PRESETS, type FormState, initialState, toBody } from './keyForm.ts';
import { ScopeFields } from './ScopeFields.tsx';

interface KeyFormDialogProps {
  /** The key to edit; none to create one. */
  editing?: Key;
  policy: Workspace['policy'] | undefined;
  onClose: () => void;
  onCreated: (key: CreatedKey) => void;
}

export function KeyFormDialog({ editing, policy, onClose, onCreated }: KeyFormDialogProps) {
  const { workspace } = useSession();
  const queryClient = useQueryClient();
  const maxLifetime = policy?.max_key_lifetime ?? null;
  const maxLifetimeMs = maxLifetime === null ? null : durationMs(maxLifetime);
  const [form, setForm] = useState(() => initialState(editing, maxLifetime));
  const [errors, setErrors] = useState<Errors>({});

  const mutation = useMutation({
    mutationFn: (body: KeyInput) =>
      editing
        ? api.patch<Key>(admin(`/keys/${enc(editing.id)}`), body)
        : api.post<CreatedKey>(admin('/keys'), { ...body, workspace_id: workspace.id }),
    onSuccess: (result) => {
      void queryClient.invalidateQueries({ queryKey: [workspace.id, 'keys'] });
      if (!editing) onCreated(result as CreatedKey);
      else onClose();
    },
  });

  function set<K extends keyof FormState>(field: K, value: FormState[K]) {
    setForm((f) => ({ ...f, [field]: value }));
  }

  function toggleScope(scope: Scope, on: boolean) {
    setForm((f) => ({ ...f, scopes: on ? [...f.scopes, scope] : f.scopes.filter((s) => s !== scope) }));
  }

  function submit() {
    const result = toBody(form, editing, maxLifetimeMs);
    if ('errors' in result) {
      setErrors(result.errors);
      return;
    }
    setErrors({});
    if (editing && Object.keys(result.body).length === 0) {
      onClose();
      return;
    }
    mutation.mutate(result.body);
  }

  const numberInput = (field: 'rpm' | 'tpm' | 'concurrency' | 'budgetDay' | 'budgetMonth', label: string) => (
    <TextField
      label={label}
      error={errors[field]}
      inputMode="numeric"
      placeholder="No limit"
      value={form[field]}
      onChange={(text) => set(field, text)}
    />
  );

  const tooLong = (preset: string) => maxLifetimeMs !== null && (durationMs(preset) ?? 0) > maxLifetimeMs;
  const workspaceIps = policy?.allowed_ips ?? [];

  return (
    <FormDialog
      title={editing ? `Edit ${editing.name}` : 'Create a key'}
      description={
        editing
          ? 'Change what this key may do. The secret stays the same.'
          : 'The secret is shown once, after you create the key. Every restriction can be changed later.'
      }
      onClose={onClose}
      wide
      onSubmit={submit}
      sending={mutation}
      submitLabel={editing ? 'Save changes' : 'Create key'}
      errorTitle={editing ? 'The key was not changed.' : 'The key was not created.'}
    >
      <TextField
        label="Name"
        hint="Who or what uses the key, e.g. support-bot (prod)."
        error={errors.name}
        value={form.name}
        onChange={(text) => set('name', text)}
        maxLength={128}
        data-autofocus
        required
      />

      <ScopeFields scopes={form.scopes} error={errors.scopes} onToggle={toggleScope} />

      <div className="form-grid">
        <LinesField
          label="Models"
          hint="One model id or pattern per line, e.g. mistral-small-*. Empty: every model."
          value={form.models}
          onChange={(text) => set('models', text)}
        />
        <LinesField
          label="Allowed IP ranges"
          hint={
            workspaceIps.length > 0
              ? `One address or CIDR range per line. Empty: the workspace's allowlist (${workspaceIps.join(', ')}).`
              : 'One address or CIDR range per line, e.g. 10.0.0.0/8. Empty: anywhere.'
          }
          value={form.allowedIps}
          onChange={(text) => set('allowedIps', text)}
        />
      </div>

      <fieldset className="fieldset">
        <legend>Rate limits</legend>
        <div className="form-grid form-grid-3">
          {numberInput('rpm', 'Requests per minute')}
          {numberInput('tpm', 'Tokens per minute')}
          {numberInput('concurrency', 'Concurrent requests')}
        </div>
      </fieldset>

      <fieldset className="fieldset">
        <legend>Token budget</legend>
        <div className="form-grid">
          {numberInput('budgetDay', 'Tokens per day (UTC)')}
          {numberInput('budgetMonth', 'Tokens per month (UTC)')}
        </div>
      </fieldset>

      <div className="form-grid">
        <SelectField
          label="Expires"
          error={errors.expiry}
          hint={
            maxLifetime
              ? `This workspace allows keys to live at most ${durationLabel(maxLifetime)}.`
              : undefined
          }
          value={form.expiry}
          onChange={(value) => set('expiry', value)}
        >
          {editing ? (
            <option value="keep">
              Keep as is ({editing.expires_at ? formatDateTime(editing.expires_at) : 'never'})
            </option>
          ) : null}
          <option value="never" disabled={maxLifetime !== null}>
            Never
          </option>
          {EXPIRY_PRESETS.map((preset) => (
            <option key={preset} value={preset} disabled={tooLong(preset)}>
              In {durationLabel(preset)}
            </option>
          ))}
          <option value="custom">Custom…</option>
        </SelectField>
        {form.expiry === 'custom' ? (
          <TextField
            label="Custom lifetime"
            hint="From now: e.g. 45d, 12h, 30m."
            error={errors.customExpiry}
            className="input mono"
            value={form.customExpiry}
            onChange={(text) => set('customExpiry', text)}
          />
        ) : null}
      </div>
    </FormDialog>
  );
}
