/**
 * What an alert says, in each channel's format: the webhook's JSON payload, Slack's `text` and
 * `blocks`, and an email's subject and bodies; plus the alert's public view (CLI `--json`, the
 * management API). Each names the key by name and id (never a secret) and says what to do.
 *
 * What to do: `details.action` when the rule that raised the alert put a string there, else a
 * default for the alert's kind.
 */
import type { Alert, AlertKind } from '../store/types.ts';
import { iso } from '../views.ts';

/** The key an alert is about, as messages name it. */
export interface AlertKey {
  id: string;
  name: string | null;
}

const DEFAULT_ACTIONS: Record<AlertKind, (keyId: string) => string> = {
  usage_spike: (id) =>
    `Check what is using the key (keygate usage --key ${id}). If the traffic is not expected, revoke it (keygate keys revoke ${id}) or lower its limits (keygate keys update ${id} --rpm N).`,
  budget_threshold: (id) =>
    `Check the key's usage (keygate usage --key ${id}); raise its budget (keygate keys update ${id} --budget N/month) or expect its requests to be refused once the budget is spent.`,
  new_network: (id) =>
    `If you do not recognise the address, rotate the key now (keygate keys rotate ${id} --grace 0) and restrict where it may be used from (keygate keys update ${id} --allow-ip CIDR).`,
  auth_failures: () =>
    'Someone is sending invalid keys from this address. If it is not one of your clients with a stale key, block the address in front of the gateway.',
  key_expiring: (id) =>
    `Rotate the key before it expires (keygate keys rotate ${id}) and deploy the new secret, or extend it (keygate keys update ${id} --expires 90d).`,
  test: () => 'Nothing: this is a test alert (keygate alerts test). Receiving it means the channel works.',
};

/** What the reader of an alert should do. */
export function actionOf(alert: Alert): string {
  const given = alert.details.action;
  if (typeof given === 'string' && given.trim() !== '') return given.trim();
  return DEFAULT_ACTIONS[alert.kind](alert.keyId ?? 'KEY_ID');
}

function keyText(key: AlertKey | null): string {
  if (key === null) return 'none';
  return key.name === null ? key.id : `"${key.name}" (${key.id})`;
}

// ---- the public view -----------------------------------------------------------------------------

export function alertView(alert: Alert, key: AlertKey | null) {
  return {
    id: alert.id,
    workspace_id: alert.workspaceId,
    kind: alert.kind,
    severity: alert.severity,
    title: alert.title,
    message: alert.message,
    key,
    action: actionOf(alert),
    details: alert.details,
    first_at: iso(alert.firstAt),
    last_at: iso(alert.lastAt),
    occurrences: alert.occurrences,
    acknowledged_at: iso(alert.acknowledgedAt),
    acknowledged_by: alert.acknowledgedBy,
  };
}

export type AlertView = ReturnType<typeof alertView>;

// ---- webhook -------------------------------------------------------------------------------------

export interface WebhookPayload {
  id: string;
  type: 'keygate.alert';
  kind: AlertKind;
  severity: Alert['severity'];
  title: string;
  message: string;
  workspace_id: string;
  key: AlertKey | null;
  action: string;
  first_at: string;
  last_at: string;
  occurrences: number;
  details: Record<string, unknown>;
  sent_at: string;
}

export function webhookPayload(alert: Alert, key: AlertKey | null, sentAt: number): WebhookPayload {
  return {
    id: alert.id,
    type: 'keygate.alert',
    kind: alert.kind,
    severity: alert.severity,
    title: alert.title,
    message: alert.message,
    workspace_id: alert.workspaceId,
    key,
    action: actionOf(alert),
    first_at: new Date(alert.firstAt).toISOString(),
    last_at: new Date(alert.lastAt).toISOString(),
    occurrences: alert.occurrences,
    details: alert.details,
    sent_at: new Date(sentAt).toISOString(),
  };
}

// ---- Slack ---------------------------------------------------------------------------------------

/** Slack's mrkdwn control characters, escaped as its docs ask. */
function mrkdwn(text: string, max = 2900): string {
  const escaped = text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
  return escaped.length > max ? `${escaped.slice(0, max)}…` : escaped;
}

const SEVERITY_MARK: Record<Alert['severity'], string> = {
  info: ':information_source:',
  warning: ':warning:',
  critical: ':rotating_light:',
};

export function slackPayload(alert: Alert, key: AlertKey | null) {
  const keyLine =
    key === null ? 'none' : `${key.name === null ? '' : `${mrkdwn(key.name, 200)} `}\`${key.id}\``;
  return {
    text: mrkdwn(`[${alert.severity}] ${alert.title}`, 300),
    blocks: [
      {
        type: 'header',
        text: { type: 'plain_text', text: alert.title.slice(0, 150) || 'Keygate alert' },
      },
      {
        type: 'section',
        text: {
          type: 'mrkdwn',
          text: `${SEVERITY_MARK[alert.severity]} *Severity:* ${alert.severity}\n*Key:* ${keyLine}\n*Workspace:* \`${mrkdwn(alert.workspaceId, 200)}\``,
        },
      },
      { type: 'section', text: { type: 'mrkdwn', text: mrkdwn(alert.message) || '-' } },
      { type: 'section', text: { type: 'mrkdwn', text: `*What to do:* ${mrkdwn(actionOf(alert))}` } },
      {
        type: 'context',
        elements: [
          {
            type: 'mrkdwn',
            text: `Keygate alert \`${alert.id}\` · ${alert.kind} · first seen ${new Date(alert.firstAt).toISOString()} · ${alert.occurrences} occurrence${alert.occurrences === 1 ? '' : 's'}`,
          },
        ],
      },
    ],
  };
}

// ---- email ---------------------------------------------------------------------------------------

function html(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function detailLines(details: Record<string, unknown>): [string, string][] {
  return Object.entries(details)
    .filter(([name]) => name !== 'action')
    .map(([name, value]) => [name, typeof value === 'string' ? value : JSON.stringify(value)]);
}

export function emailMessage(alert: Alert, key: AlertKey | null) {
  // A subject is one line: whatever the title holds, no header can be smuggled in.
  const subject = `[Keygate] ${alert.severity}: ${alert.title}`.replace(/[\r\n]+/g, ' ').slice(0, 200);
  const facts: [string, string][] = [
    ['Key', keyText(key)],
    ['Workspace', alert.workspaceId],
    ['Severity', alert.severity],
    ['Kind', alert.kind],
    ['First seen', new Date(alert.firstAt).toISOString()],
    ['Last seen', new Date(alert.lastAt).toISOString()],
    ['Occurrences', String(alert.occurrences)],
  ];
  const details = detailLines(alert.details);
  const action = actionOf(alert);
  const text = [
    alert.title,
    '',
    alert.message,
    '',
    ...facts.map(([name, value]) => `${name}: ${value}`),
    '',
    `What to do: ${action}`,
    ...(details.length > 0 ? ['', 'Details:', ...details.map(([n, v]) => `  ${n}: ${v}`)] : []),
    '',
    `-- Keygate alert ${alert.id}`,
    '',
  ].join('\n');
  const rows = (pairs: [string, string][]) =>
    pairs
      .map(
        ([n, v]) => `<tr><th align="left" style="padding-right:1em">${html(n)}</th><td>${html(v)}</td></tr>`,
      )
      .join('');
  const body = [
    '<!doctype html><html><body style="font-family:sans-serif">',
    `<h2>${html(alert.title)}</h2>`,
    `<p>${html(alert.message)}</p>`,
    `<table>${rows(facts)}</table>`,
    `<p><strong>What to do:</strong> ${html(action)}</p>`,
    details.length > 0 ? `<h3>Details</h3><table>${rows(details)}</table>` : '',
    `<p style="color:#666">Keygate alert ${html(alert.id)}</p>`,
    '</body></html>',
  ].join('\n');
  return { subject, text, html: body };
}
