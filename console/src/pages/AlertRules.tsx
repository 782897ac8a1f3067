import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { admin, api, query } from '../api.ts';
import { Badge } from '../components/Badge.tsx';
import { Button } from '../components/Button.tsx';
import { ErrorBanner } from '../components/ErrorBanner.tsx';
import { TextField } from '../components/Field.tsx';
import { FormDialog } from '../components/FormDialog.tsx';
import { Loading } from '../components/Loading.tsx';
import { Section } from '../components/Section.tsx';
import { ActionsHeader, RowAction, Table } from '../components/Table.tsx';
import { formatInt } from '../format.ts';
import { enc } from '../queries.ts';
import { useSession } from '../session.tsx';
import type { AlertRule, AlertRuleList, SettingValue } from '../types.ts';

const RULE_NAMES: Record<string, string> = {
  usage_spike: 'Usage spike',
  budget_threshold: 'Budget threshold',
  new_network: 'New network',
  auth_failures: 'Failed authentication',
  key_expiring: 'Key expiring',
};

const SETTING_NAMES: Record<string, string> = {
  enabled: 'Enabled',
  window_minutes: 'Window',
  factor: 'Spike factor',
  min_requests: 'Minimum requests',
  min_tokens: 'Minimum tokens',
  baseline_days: 'Baseline days',
  cooldown_minutes: 'Cooldown',
  thresholds: 'Thresholds',
  failures_per_minute: 'Failures per minute',
};

export const ruleName = (kind: string) => RULE_NAMES[kind] ?? kind;
const settingName = (name: string) => SETTING_NAMES[name] ?? name.replaceAll('_', ' ');

/** The label of a setting's input, with the unit the number is in. */
function inputLabel(name: string): string {
  if (name.endsWith('_minutes')) return `${settingName(name)} (minutes)`;
  if (name === 'thresholds') return 'Thresholds (% of a budget, comma-separated)';
  if (name === 'factor') return 'Spike factor (× the usual level)';
  return settingName(name);
}

/** 44640 minutes → "31 days". */
function minutes(value: number): string {
  const plural = (n: number, unit: string) => `${formatInt(n)} ${unit}${n === 1 ? '' : 's'}`;
  if (value >= 1440 && value % 1440 === 0) return plural(value / 1440, 'day');
  if (value >= 60 && value % 60 === 0) return plural(value / 60, 'hour');
  return plural(value, 'minute');
}

function showValue(value: SettingValue, name = ''): string {
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  if (Array.isArray(value)) return value.map((v) => `${v}%`).join(', ');
  if (name.endsWith('_minutes')) return minutes(value);
  if (name === 'factor') return `×${value}`;
  return formatInt(value);
}

export function AlertRules() {
  const { workspace, can } = useSession();
  const [editing, setEditing] = useState<AlertRule | null>(null);
  const rules = useQuery({
    queryKey: [workspace.id, 'alert-rules'],
    queryFn: () => api.get<AlertRuleList>(admin(`/alerts/rules${query({ workspace_id: workspace.id })}`)),
  });
  return (
    <Section id="rules-title" title="Rules">
      <ErrorBanner error={rules.error} title="The rules could not be loaded." />
      {rules.isPending ? (
        <Loading />
      ) : (
        <Table
          head={
            <>
              <th scope="col" className="col-wide">
                Rule
              </th>
              <th scope="col">Status</th>
              <th scope="col">Thresholds</th>
              {can.manageWorkspace ? <ActionsHeader /> : null}
            </>
          }
        >
          {(rules.data?.data ?? []).map((rule) => (
            <tr key={rule.kind}>
              <td>
                <div className="cell-main">{ruleName(rule.kind)}</div>
                <div className="cell-sub">{rule.description}</div>
              </td>
              <td>
                {rule.settings.enabled === false ? (
                  <Badge tone="gray">off</Badge>
                ) : (
                  <Badge tone="green">on</Badge>
                )}
              </td>
              <td>
                <Settings rule={rule} />
              </td>
              {can.manageWorkspace ? (
                <td className="row-actions">
                  <RowAction onClick={() => setEditing(rule)} label={`Edit the ${ruleName(rule.kind)} rule`}>
                    Edit
                  </RowAction>
                </td>
              ) : null}
            </tr>
          ))}
        </Table>
      )}
      {editing ? <RuleDialog rule={editing} onClose={() => setEditing(null)} /> : null}
    </Section>
  );
}

/** A rule's settings but `enabled`, each marked when the workspace changed it from the default. */
function Settings({ rule }: { rule: AlertRule }) {
  return (
    <dl className="settings-list">
      {Object.entries(rule.settings)
        .filter(([name]) => name !== 'enabled')
        .map(([name, value]) => (
          <div key={name}>
            <dt>{settingName(name)}</dt>
            <dd>
              {showValue(value, name)}
              {rule.overridden.includes(name) ? (
                <span className="muted" title={`default: ${showValue(rule.defaults[name] ?? value, name)}`}>
                  {' '}
                  (changed)
                </span>
              ) : null}
            </dd>
          </div>
        ))}
    </dl>
  );
}

function toText(value: SettingValue): string | boolean {
  if (typeof value === 'boolean') return value;
  if (Array.isArray(value)) return value.join(', ');
  return String(value);
}

function RuleDialog({ rule, onClose }: { rule: AlertRule; onClose: () => void }) {
  const { workspace } = useSession();
  const queryClient = useQueryClient();
  const [values, setValues] = useState<Record<string, string | boolean>>(() =>
    Object.fromEntries(Object.entries(rule.settings).map(([name, v]) => [name, toText(v)])),
  );
  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});
  const save = useMutation({
    mutationFn: (body: Record<string, SettingValue>) =>
      api.put<AlertRule>(
        admin(`/alerts/rules/${enc(rule.kind)}${query({ workspace_id: workspace.id })}`),
        body,
      ),
    onSuccess: () => {
      void queryClient.invalidateQueries({ queryKey: [workspace.id, 'alert-rules'] });
      onClose();
    },
  });

  function submit() {
    const body: Record<string, SettingValue> = {};
    const errors: Record<string, string> = {};
    for (const [name, defaultValue] of Object.entries(rule.defaults)) {
      const raw = values[name];
      let value: SettingValue;
      if (typeof defaultValue === 'boolean') value = raw === true;
      else if (Array.isArray(defaultValue)) {
        const parts = String(raw)
          .split(/[\s,%]+/)
          .filter(Boolean)
          .map(Number);
        if (parts.some((n) => !Number.isFinite(n))) {
          errors[name] = 'Enter whole percentages separated by commas, e.g. 50, 80, 100.';
          continue;
        }
        value = parts;
      } else {
        const n = Number(String(raw).trim());
        if (String(raw).trim() === '' || !Number.isFinite(n)) {
          errors[name] = 'Enter a number.';
          continue;
        }
        value = n;
      }
      // Only what differs from the default is the workspace's own setting.
      if (JSON.stringify(value) !== JSON.stringify(defaultValue)) body[name] = value;
    }
    setFieldErrors(errors);
    if (Object.keys(errors).length === 0) save.mutate(body);
  }

  return (
    <FormDialog
      title={`${ruleName(rule.kind)} rule`}
      description={rule.description}
      onClose={onClose}
      onSubmit={submit}
      sending={save}
      submitLabel="Save rule"
      errorTitle="The rule was not changed."
      extraAction={
        <Button onClick={() => save.mutate({})} disabled={save.isPending}>
          Reset to defaults
        </Button>
      }
    >
      {Object.entries(rule.defaults).map(([name, defaultValue]) =>
        typeof defaultValue === 'boolean' ? (
          <label key={name} className="check">
            <input
              type="checkbox"
              checked={values[name] === true}
              onChange={(e) => setValues((v) => ({ ...v, [name]: e.target.checked }))}
            />
            <span>{settingName(name)}</span>
          </label>
        ) : (
          <TextField
            key={name}
            label={inputLabel(name)}
            hint={`Default: ${showValue(defaultValue, name)}`}
            error={fieldErrors[name]}
            inputMode={Array.isArray(defaultValue) ? 'text' : 'decimal'}
            value={String(values[name] ?? '')}
            onChange={(text) => setValues((v) => ({ ...v, [name]: text }))}
          />
        ),
      )}
    </FormDialog>
  );
}
