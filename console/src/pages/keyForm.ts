/** The key form's state, and the create or update body it makes (only what changed, when editing). */
import { DURATION_PATTERN, durationMs, parsePositive, splitList } from '../format.ts';
import { INFERENCE_SCOPES, type Key, type KeyInput, type Scope } from '../types.ts';

export const EXPIRY_PRESETS = ['7d', '30d', '90d', '180d', '365d'] as const;

export interface FormState {
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

export function initialState(key: Key | undefined, maxLifetime: string | null): FormState {
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

export type Errors = Partial<Record<keyof FormState, string>>;

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().every((v, i) => v === [...b].sort()[i]);
}

/** The request body, or the field errors that keep it from being sent. */
export function toBody(
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
