import { useMutation, useQueryClient } from '@tanstack/react-query';
import { type FormEvent, useState } from 'react';
import { admin, api } from '../api.ts';
import { Button } from '../components/Button.tsx';
import { Dialog } from '../components/Dialog.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { Field } from '../components/Field.tsx';
import {
  DURATION_PATTERN,
  durationLabel,
  durationMs,
  formatDateTime,
  parsePositive,
  splitList,
} from '../format.ts';
import { enc } from '../queries.ts';
import { useSession } from '../session.tsx';
import {
  type CreatedKey,
  INFERENCE_SCOPES,
  type Key,
  type KeyInput,
  MANAGEMENT_SCOPES,
  type Scope,
  type Workspace,
} from '../types.ts';

const EXPIRY_PRESETS = ['7d', '30d', '90d', '180d', '365d'] as const;

const SCOPE_HINTS: Record<Scope, string> = {
  chat: 'POST /v1/chat/completions',
  fim: 'POST /v1/fim/completions',
  embeddings: 'POST /v1/embeddings',
  models: 'GET /v1/models',
  admin: 'every management scope',
  'keys:read': 'list and show keys',
  'keys:write': 'create, change, rotate, revoke keys',
  'usage:read': 'usage reports and alerts',
  'audit:read': 'the audit log',
  'workspaces:read': 'workspace, members',
  'workspaces:write': 'policy, members, alerts',
  metrics: 'GET /metrics',
};

interface FormState {
  name: string;
  scopes: Scope[];
  models: string;
  allowedIps: string;
  rpm: string;
  tpm: string;
  concurrency: string;
  budgetDay: string;
  budgetMonth: string;
  /** 'keep' (edit only), 'never', a preset or 'custom'. */
  expiry: string;
  customExpiry: string;
}

const text = (n: number | null) => (n === null ? '' : String(n));

function initialState(key: Key | undefined, maxLifetime: string | null): FormState {
  if (key) {
    return {
      name: key.name,
      scopes: [...key.scopes],
      models: key.models.join('\n'),
      allowedIps: key.allowed_ips.join('\n'),
      rpm: text(key.limits.requests_per_minute),
      tpm: text(key.limits.tokens_per_minute),
      concurrency: text(key.limits.concurrent_requests),
      budgetDay: text(key.budget.tokens_per_day),
      budgetMonth: text(key.budget.tokens_per_month),
      expiry: 'keep',
      customExpiry: '',
    };
  }
  const presetMax = maxLifetime && (EXPIRY_PRESETS as readonly string[]).includes(maxLifetime);
  return {
    name: '',
    scopes: [...INFERENCE_SCOPES],
    models: '',
    allowedIps: '',
    rpm: '',
    tpm: '',
    concurrency: '',
    budgetDay: '',
    budgetMonth: '',
    expiry: maxLifetime === null ? 'never' : presetMax ? maxLifetime : 'custom',
    customExpiry: maxLifetime !== null && !presetMax ? maxLifetime : '',
  };
}

type Errors = Partial<Record<keyof FormState, string>>;

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().every((v, i) => v === [...b].sort()[i]);
}

/** The request body, or the field errors that keep it from being sent. */
function toBody(
  form: FormState,
  key: Key | undefined,
  maxLifetimeMs: number | null,
): { body: KeyInput } | { errors: Errors } {
  const errors: Errors = {};
  const numbers: Record<'rpm' | 'tpm' | 'concurrency' | 'budgetDay' | 'budgetMonth', number | null> = {
    rpm: null,
    tpm: null,
    concurrency: null,
    budgetDay: null,
    budgetMonth: null,
  };
  for (const field of Object.keys(numbers) as (keyof typeof numbers)[]) {
    const parsed = parsePositive(form[field]);
    if ('error' in parsed) errors[field] = parsed.error;
    else numbers[field] = parsed.value;
  }
  const name = form.name.trim();
  if (name === '') errors.name = 'Give the key a name: who or what uses it.';
  if (form.scopes.length === 0) errors.scopes = 'Choose at least one scope.';
  let expires: string | null | undefined;
  if (form.expiry === 'keep') expires = undefined;
  else if (form.expiry === 'never') expires = null;
  else if (form.expiry === 'custom') {
    const custom = form.customExpiry.trim();
    if (!DURATION_PATTERN.test(custom) || (durationMs(custom) ?? 0) <= 0)
      errors.customExpiry = 'Enter a duration such as 45d, 12h or 30m.';
    expires = custom;
  } else expires = form.expiry;
  if (typeof expires === 'string' && maxLifetimeMs !== null && (durationMs(expires) ?? 0) > maxLifetimeMs) {
    errors[form.expiry === 'custom' ? 'customExpiry' : 'expiry'] = 'Longer than this workspace allows.';
  }
  if (Object.keys(errors).length > 0) return { errors };

  const models = splitList(form.models);
  const ips = splitList(form.allowedIps);
  const limits = {
    requests_per_minute: numbers.rpm,
    tokens_per_minute: numbers.tpm,
    concurrent_requests: numbers.concurrency,
  };
  const budget = { tokens_per_day: numbers.budgetDay, tokens_per_month: numbers.budgetMonth };

  if (!key) {
    const body: KeyInput = { name, scopes: form.scopes };
    if (models.length > 0) body.models = models;
    if (ips.length > 0) body.allowed_ips = ips;
    const setLimits = Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== null));
    if (Object.keys(setLimits).length > 0) body.limits = setLimits;
    const setBudget = Object.fromEntries(Object.entries(budget).filter(([, v]) => v !== null));
    if (Object.keys(setBudget).length > 0) body.budget = setBudget;
    if (expires) body.expires_in = expires;
    return { body };
  }

  // Editing: send only what changed.
  const body: KeyInput = {};
  if (name !== key.name) body.name = name;
  if (!sameList(form.scopes, key.scopes)) body.scopes = form.scopes;
  if (!sameList(models, key.models)) body.models = models;
  if (!sameList(ips, key.allowed_ips)) body.allowed_ips = ips;
  const changedLimits = Object.fromEntries(
    Object.entries(limits).filter(([field, v]) => key.limits[field as keyof Key['limits']] !== v),
  );
  if (Object.keys(changedLimits).length > 0) body.limits = changedLimits;
  const changedBudget = Object.fromEntries(
    Object.entries(budget).filter(([field, v]) => key.budget[field as keyof Key['budget']] !== v),
  );
  if (Object.keys(changedBudget).length > 0) body.budget = changedBudget;
  if (expires !== undefined) body.expires_in = expires;
  return { body };
}

interface KeyFormDialogProps {
  /** The key to edit; none to create one. */
  editing?: Key;
  policy: Workspace['policy'] | undefined;
  onClose: () => void;
  onCreated: (key: CreatedKey) => void;
}

export function KeyFormDialog({ editing, policy, onClose, onCreated }: KeyFormDialogProps) {
  const { workspace, can } = useSession();
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

  function submit(event: FormEvent) {
    event.preventDefault();
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
    <Field label={label} error={errors[field]}>
      {(props) => (
        <input
          {...props}
          className="input"
          inputMode="numeric"
          placeholder="No limit"
          value={form[field]}
          onChange={(e) => set(field, e.target.value)}
        />
      )}
    </Field>
  );

  const tooLong = (preset: string) => maxLifetimeMs !== null && (durationMs(preset) ?? 0) > maxLifetimeMs;
  const workspaceIps = policy?.allowed_ips ?? [];

  return (
    <Dialog
      title={editing ? `Edit ${editing.name}` : 'Create a key'}
      description={
        editing
          ? 'Change what this key may do. The secret stays the same.'
          : 'The secret is shown once, after you create the key. Every restriction can be changed later.'
      }
      onClose={onClose}
      wide
    >
      <form className="form" onSubmit={submit} noValidate>
        <Field label="Name" hint="Who or what uses the key, e.g. support-bot (prod)." error={errors.name}>
          {(props) => (
            <input
              {...props}
              className="input"
              value={form.name}
              onChange={(e) => set('name', e.target.value)}
              maxLength={128}
              data-autofocus
              required
            />
          )}
        </Field>

        <fieldset className="fieldset">
          <legend>Scopes</legend>
          {errors.scopes ? <div className="field-error">{errors.scopes}</div> : null}
          <div className="scope-groups">
            <div>
              <div className="scope-group-title">Inference (/v1)</div>
              {INFERENCE_SCOPES.map((scope) => (
                <label key={scope} className="check">
                  <input
                    type="checkbox"
                    checked={form.scopes.includes(scope)}
                    onChange={(e) => toggleScope(scope, e.target.checked)}
                  />
                  <span>
                    <code>{scope}</code> <span className="muted">{SCOPE_HINTS[scope]}</span>
                  </span>
                </label>
              ))}
            </div>
            <div>
              <div className="scope-group-title">Management API (/admin/v1)</div>
              {MANAGEMENT_SCOPES.map((scope) => {
                const allowed = can.grantable(scope) || form.scopes.includes(scope);
                return (
                  <label key={scope} className={allowed ? 'check' : 'check check-disabled'}>
                    <input
                      type="checkbox"
                      checked={form.scopes.includes(scope)}
                      disabled={!allowed}
                      onChange={(e) => toggleScope(scope, e.target.checked)}
                    />
                    <span>
                      <code>{scope}</code> <span className="muted">{SCOPE_HINTS[scope]}</span>
                    </span>
                  </label>
                );
              })}
              <div className="field-hint">A key can only be given management scopes your role has.</div>
            </div>
          </div>
        </fieldset>

        <div className="form-grid">
          <Field
            label="Models"
            hint="One model id or pattern per line, e.g. mistral-small-*. Empty: every model."
          >
            {(props) => (
              <textarea
                {...props}
                className="input mono"
                rows={3}
                value={form.models}
                onChange={(e) => set('models', e.target.value)}
                spellCheck={false}
              />
            )}
          </Field>
          <Field
            label="Allowed IP ranges"
            hint={
              workspaceIps.length > 0
                ? `One address or CIDR range per line. Empty: the workspace's allowlist (${workspaceIps.join(', ')}).`
                : 'One address or CIDR range per line, e.g. 10.0.0.0/8. Empty: anywhere.'
            }
          >
            {(props) => (
              <textarea
                {...props}
                className="input mono"
                rows={3}
                value={form.allowedIps}
                onChange={(e) => set('allowedIps', e.target.value)}
                spellCheck={false}
              />
            )}
          </Field>
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
          <Field
            label="Expires"
            error={errors.expiry}
            hint={
              maxLifetime
                ? `This workspace allows keys to live at most ${durationLabel(maxLifetime)}.`
                : undefined
            }
          >
            {(props) => (
              <select
                {...props}
                className="select"
                value={form.expiry}
                onChange={(e) => set('expiry', e.target.value)}
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
              </select>
            )}
          </Field>
          {form.expiry === 'custom' ? (
            <Field label="Custom lifetime" hint="From now: e.g. 45d, 12h, 30m." error={errors.customExpiry}>
              {(props) => (
                <input
                  {...props}
                  className="input mono"
                  value={form.customExpiry}
                  onChange={(e) => set('customExpiry', e.target.value)}
                />
              )}
            </Field>
          ) : null}
        </div>

        <ErrorBanner
          error={mutation.error}
          title={editing ? 'The key was not changed.' : 'The key was not created.'}
        />
        <div className="dialog-actions">
          <Button onClick={onClose}>Cancel</Button>
          <Button type="submit" variant="primary" busy={mutation.isPending}>
            {editing ? 'Save changes' : 'Create key'}
          </Button>
        </div>
      </form>
    </Dialog>
  );
}
