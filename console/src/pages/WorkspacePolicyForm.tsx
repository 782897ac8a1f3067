import { useMutation, useQueryClient } from '@tanstack/react-query';
import { type FormEvent, useState } from 'react';
import { admin, api } from '../api.ts';
import { Button } from '../components/Button.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { LinesField, TextField } from '../components/Field.tsx';
import { Loading } from '../components/Loading.tsx';
import { SuccessBanner } from '../components/SuccessBanner.tsx';
import { DURATION_PATTERN, parsePositive, splitList } from '../format.ts';
import { enc, useWorkspaceDetails } from '../queries.ts';
import { isOperator, useSession } from '../session.tsx';
import type { Workspace } from '../types.ts';
import { NewWorkspaceForm } from './NewWorkspaceForm.tsx';

interface PolicyBody {
  name?: string;
  max_key_lifetime?: string | null;
  allowed_ips?: string[];
  budget?: { tokens_per_day?: number | null; tokens_per_month?: number | null };
}

export function WorkspacePolicyForm() {
  const { session } = useSession();
  const details = useWorkspaceDetails();
  if (details.isPending) return <Loading />;
  if (!details.data) return <ErrorBanner error={details.error} title="The workspace could not be loaded." />;
  return (
    <>
      <PolicyForm key={details.data.id} current={details.data} />
      {isOperator(session) ? <NewWorkspaceForm /> : null}
    </>
  );
}

function PolicyForm({ current }: { current: Workspace }) {
  const { workspace, can } = useSession();
  const queryClient = useQueryClient();
  const [name, setName] = useState(current.name);
  const [lifetime, setLifetime] = useState(current.policy.max_key_lifetime ?? '');
  const [ips, setIps] = useState(current.policy.allowed_ips.join('\n'));
  const [day, setDay] = useState(current.policy.budget.tokens_per_day?.toString() ?? '');
  const [month, setMonth] = useState(current.policy.budget.tokens_per_month?.toString() ?? '');
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [saved, setSaved] = useState(false);
  const save = useMutation({
    mutationFn: (body: PolicyBody) => api.patch<Workspace>(admin(`/workspaces/${enc(workspace.id)}`), body),
    onSuccess: (updated) => {
      queryClient.setQueryData([workspace.id, 'workspace'], updated);
      setSaved(true);
    },
  });
  const readOnly = !can.manageWorkspace;

  function submit(event: FormEvent) {
    event.preventDefault();
    setSaved(false);
    const found: Record<string, string> = {};
    const body: PolicyBody = {};
    if (name.trim() !== current.name) body.name = name.trim();
    const life = lifetime.trim();
    if (life !== '' && !DURATION_PATTERN.test(life))
      found.lifetime = 'Enter a duration such as 90d, or leave it empty.';
    if ((life === '' ? null : life) !== current.policy.max_key_lifetime)
      body.max_key_lifetime = life === '' ? null : life;
    const ipList = splitList(ips);
    if (ipList.join('\n') !== current.policy.allowed_ips.join('\n')) body.allowed_ips = ipList;
    const d = parsePositive(day);
    const m = parsePositive(month);
    if ('error' in d) found.day = d.error;
    if ('error' in m) found.month = m.error;
    if ('value' in d && 'value' in m) {
      const budget: PolicyBody['budget'] = {};
      if (d.value !== current.policy.budget.tokens_per_day) budget.tokens_per_day = d.value;
      if (m.value !== current.policy.budget.tokens_per_month) budget.tokens_per_month = m.value;
      if (Object.keys(budget).length > 0) body.budget = budget;
    }
    setErrors(found);
    if (Object.keys(found).length > 0) return;
    if (Object.keys(body).length === 0) {
      setSaved(true);
      return;
    }
    save.mutate(body);
  }

  const budgetInput = (per: string, value: string, onChange: (value: string) => void, error?: string) => (
    <TextField
      label={`Workspace budget: tokens ${per}`}
      error={error}
      inputMode="numeric"
      placeholder="No budget"
      value={value}
      onChange={onChange}
    />
  );

  return (
    <form className="card form form-narrow" onSubmit={submit} noValidate>
      <h2 className="card-title">Workspace policy</h2>
      <p className="muted">
        Applies to every key of the workspace. Only the operator (the owner who set up Keygate) may change the
        lifetime cap, the IP allowlist and the budget; owners and admins may rename the workspace.
      </p>
      <fieldset className="fieldset-plain" disabled={readOnly}>
        <TextField label="Workspace name" value={name} onChange={setName} />
        <TextField
          label="Max key lifetime"
          hint="New keys must expire within this, e.g. 90d. Empty: keys may live forever."
          error={errors.lifetime}
          className="input mono"
          placeholder="unlimited"
          value={lifetime}
          onChange={setLifetime}
        />
        <LinesField
          label="Allowed IP ranges"
          hint="The default allowlist of keys without their own, one address or CIDR range per line. Empty: anywhere."
          value={ips}
          onChange={setIps}
        />
        <div className="form-grid">
          {budgetInput('per day', day, setDay, errors.day)}
          {budgetInput('per month', month, setMonth, errors.month)}
        </div>
      </fieldset>
      <ErrorBanner error={save.error} title="The policy was not changed." />
      {saved && !save.isPending ? <SuccessBanner>Saved.</SuccessBanner> : null}
      {readOnly ? (
        <p className="muted">Your role ({workspace.role}) can read the policy but not change it.</p>
      ) : (
        <div className="form-actions">
          <Button type="submit" variant="primary" busy={save.isPending}>
            Save policy
          </Button>
        </div>
      )}
    </form>
  );
}
