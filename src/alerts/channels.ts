/**
 * Alert channels: where alerts go (a signed JSON webhook, a Slack-compatible incoming webhook, or
 * email over SMTP) and their settings.
 *
 * Every channel is given as a type and a URL (plus, for a webhook, an optional signing secret):
 *
 * - webhook: `https://…` (or `http://`, only to the operator's `alerts.allowedDestinations`); the
 *   signing secret is generated (32 random bytes) when none is given, and shown once, at creation.
 * - slack: the incoming-webhook URL, `https://hooks.slack.com/services/…` or any Slack-compatible
 *   one (Mattermost, Rocket.Chat…).
 * - email: `smtp://[user:pass@]host[:port]?from=ADDR&to=ADDR[,ADDR…]` (STARTTLS, port 587 by
 *   default) or `smtps://…` (TLS from the start, port 465 by default). Percent-encode special
 *   characters of the user and password.
 *
 * The settings hold credentials (URL tokens, the signing secret, the SMTP password), so they are
 * stored sealed with the server's data key (util/seal.ts) and opened only to send. Views
 * (`channelView`) show the URL's origin and path (segments that look like tokens masked), the
 * SMTP host and the addresses: never a secret, a query string, credentials or a password.
 *
 * Where a channel may send is the gateway's destination policy (src/net/destinations.ts), checked
 * on the address connected to at every send; `checkDestination` refuses, when a channel is added,
 * what can be refused before any connection (plain http:// without the operator's ranges, an IP
 * literal the policy refuses).
 */
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';
import { type DestinationPolicy, refusalOf, type Transport } from '../net/destinations.ts';
import { type AlertChannel, CHANNEL_TYPES, type ChannelType } from '../store/types.ts';
import { UserInputError } from '../users/service.ts';
import { seal, unseal } from '../util/seal.ts';
import { iso } from '../views.ts';

/** A field of a new channel that is wrong; `field` names it (`url` → `--url` / `body.url`). */
export class ChannelInputError extends UserInputError {
  override name = 'ChannelInputError';
  readonly field: 'type' | 'name' | 'url' | 'secret';
  constructor(field: ChannelInputError['field'], message: string) {
    super(message);
    this.field = field;
  }
}

// ---- stored settings (what is sealed) ------------------------------------------------------------

const urlText = z.string().min(1).max(2048);
const secretText = z
  .string()
  .min(16)
  .max(256)
  .regex(/^[\x21-\x7e]+$/);
const address = z.email();

export const WebhookConfig = z.strictObject({ url: urlText, secret: secretText });
export const SlackConfig = z.strictObject({ url: urlText });
export const EmailConfig = z.strictObject({
  host: z.string().min(1).max(253),
  port: z.int().min(1).max(65_535),
  /** true: TLS from the start (smtps, usually port 465); false: STARTTLS when offered (or required, see below). */
  secure: z.boolean(),
  user: z.string().max(512).optional(),
  pass: z.string().max(512).optional(),
  from: address,
  to: z.array(address).min(1).max(20),
});

export type WebhookConfig = z.infer<typeof WebhookConfig>;
export type SlackConfig = z.infer<typeof SlackConfig>;
export type EmailConfig = z.infer<typeof EmailConfig>;

export type ChannelConfig =
  | { type: 'webhook'; config: WebhookConfig }
  | { type: 'slack'; config: SlackConfig }
  | { type: 'email'; config: EmailConfig };

// ---- input ---------------------------------------------------------------------------------------

/** A new channel as the CLI and the management API take it. */
export interface ChannelInput {
  type: string;
  name?: string | undefined;
  url: string;
  /** Webhook only: the signing secret (at least 16 characters); generated when absent. */
  secret?: string | undefined;
}

export interface ParsedChannel {
  type: ChannelType;
  name: string;
  settings: ChannelConfig;
  /** The webhook signing secret when it was generated here (to show once); undefined otherwise. */
  generatedSecret: string | undefined;
}

/** A new webhook signing secret: `whsec_` and 32 random bytes (base64url). */
export function generateSecret(): string {
  return `whsec_${randomBytes(32).toString('base64url')}`;
}

function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1');
}

function isChannelType(value: string): value is ChannelType {
  return (CHANNEL_TYPES as readonly string[]).includes(value);
}

function parseUrl(text: string): URL {
  if (text.length > 2048) throw new ChannelInputError('url', 'the URL is longer than 2048 characters');
  try {
    return new URL(text.trim());
  } catch {
    throw new ChannelInputError('url', 'not a URL');
  }
}

/** https:// (or http://, which checkDestination then holds to the operator's ranges); no credentials. */
function httpUrl(text: string, what: string): URL {
  const url = parseUrl(text);
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new ChannelInputError('url', `a ${what} URL must start with https://`);
  if (url.username !== '' || url.password !== '')
    throw new ChannelInputError('url', `a ${what} URL cannot hold a user name or password`);
  if (url.hash !== '') throw new ChannelInputError('url', `a ${what} URL cannot have a #fragment`);
  return url;
}

function decoded(text: string, what: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new ChannelInputError('url', `the SMTP ${what} is not properly percent-encoded`);
  }
}

/** `smtp://user:pass@host:587?from=a@example.com&to=b@example.com,c@example.com` (or smtps://). */
export function parseSmtpUrl(text: string): EmailConfig {
  const url = parseUrl(text);
  if (url.protocol !== 'smtp:' && url.protocol !== 'smtps:')
    throw new ChannelInputError(
      'url',
      'an email channel takes smtp://[user:pass@]host[:port]?from=ADDRESS&to=ADDRESS (or smtps://)',
    );
  const host = hostOf(url);
  if (host === '') throw new ChannelInputError('url', 'the SMTP URL has no host');
  const secure = url.protocol === 'smtps:';
  const port = url.port === '' ? (secure ? 465 : 587) : Number(url.port);
  for (const name of url.searchParams.keys()) {
    if (name !== 'from' && name !== 'to')
      throw new ChannelInputError('url', `unknown SMTP URL parameter "${name}" (only from and to)`);
  }
  const from = url.searchParams.get('from')?.trim() ?? '';
  const to = url.searchParams
    .getAll('to')
    .flatMap((t) => t.split(','))
    .map((t) => t.trim())
    .filter((t) => t.length > 0);
  if (from === '') throw new ChannelInputError('url', 'the SMTP URL needs ?from=ADDRESS (the sender)');
  if (to.length === 0) throw new ChannelInputError('url', 'the SMTP URL needs &to=ADDRESS[,ADDRESS…]');
  for (const addr of [from, ...to]) {
    if (!address.safeParse(addr).success)
      throw new ChannelInputError('url', `"${addr.slice(0, 100)}" is not an email address`);
  }
  if (to.length > 20) throw new ChannelInputError('url', 'at most 20 recipients');
  const config: EmailConfig = { host, port, secure, from, to };
  if (url.username !== '') config.user = decoded(url.username, 'user name');
  if (url.password !== '') config.pass = decoded(url.password, 'password');
  if (config.pass !== undefined && config.user === undefined)
    throw new ChannelInputError('url', 'the SMTP URL has a password but no user name');
  return config;
}

function channelName(input: string | undefined, fallback: string): string {
  if (input === undefined) return fallback;
  const name = input.trim();
  if (name.length === 0 || name.length > 128)
    throw new ChannelInputError('name', 'a channel name has 1 to 128 characters');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(name))
    throw new ChannelInputError('name', 'a channel name cannot contain control characters');
  return name;
}

/** Validates a new channel and builds its settings; throws ChannelInputError naming the field. */
export function parseChannelInput(input: ChannelInput): ParsedChannel {
  const type = input.type.trim().toLowerCase();
  if (!isChannelType(type))
    throw new ChannelInputError(
      'type',
      `unknown channel type "${type}"; types are ${CHANNEL_TYPES.join(', ')}`,
    );
  if (input.secret !== undefined && type !== 'webhook')
    throw new ChannelInputError('secret', 'only webhook channels take a signing secret');
  if (type === 'webhook') {
    const url = httpUrl(input.url, 'webhook');
    let secret = input.secret;
    if (secret !== undefined && !secretText.safeParse(secret).success)
      throw new ChannelInputError(
        'secret',
        'a signing secret has 16 to 256 printable characters and no spaces (leave it out to have one generated)',
      );
    const generatedSecret = secret === undefined ? generateSecret() : undefined;
    secret ??= generatedSecret ?? '';
    return {
      type,
      name: channelName(input.name, `webhook ${url.host}`),
      settings: { type, config: { url: url.href, secret } },
      generatedSecret,
    };
  }
  if (type === 'slack') {
    const url = httpUrl(input.url, 'Slack webhook');
    return {
      type,
      name: channelName(input.name, `slack ${url.host}`),
      settings: { type, config: { url: url.href } },
      generatedSecret: undefined,
    };
  }
  const config = parseSmtpUrl(input.url);
  return {
    type,
    name: channelName(input.name, `email ${config.to.join(', ')}`.slice(0, 128)),
    settings: { type, config },
    generatedSecret: undefined,
  };
}

// ---- destination --------------------------------------------------------------------------------

/** Where a channel connects, and whether the connection is encrypted (http:// is not). */
function destinationOf(settings: ChannelConfig): { host: string; transport: Transport; what: string } {
  if (settings.type === 'email') return { host: settings.config.host, transport: 'tls', what: 'an SMTP' };
  const url = new URL(settings.config.url);
  return {
    host: hostOf(url),
    transport: url.protocol === 'http:' ? 'plain' : 'tls',
    what: settings.type === 'webhook' ? 'a webhook' : 'a Slack webhook',
  };
}

/**
 * Refuses a new channel the gateway's destination policy refuses whatever a name resolves to:
 * plain http:// when the operator allows no range, an IP-literal host the policy refuses. Names
 * are checked when connecting (src/net/destinations.ts), at every send.
 */
export function checkDestination(settings: ChannelConfig, policy: DestinationPolicy): void {
  const { host, transport, what } = destinationOf(settings);
  if (transport === 'plain' && policy.allowed.length === 0)
    throw new ChannelInputError(
      'url',
      `${what} URL must be https:// (plain http:// only to addresses the operator allows in alerts.allowedDestinations)`,
    );
  const why = isIP(host) === 0 ? undefined : refusalOf(host, policy, transport);
  if (why !== undefined)
    throw new ChannelInputError(
      'url',
      `this gateway does not send alerts to ${host.includes(':') ? `[${host}]` : host} (${why}); its operator can allow a range with alerts.allowedDestinations`,
    );
}

// ---- sealing -------------------------------------------------------------------------------------

export function sealSettings(dataKey: Buffer, settings: ChannelConfig): string {
  return seal(dataKey, JSON.stringify(settings.config));
}

/** Opens a channel's settings; throws when they were sealed under another secret or are damaged. */
export function openSettings(dataKey: Buffer, channel: AlertChannel): ChannelConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(unseal(dataKey, channel.configSealed));
  } catch {
    throw new Error(
      `the settings of channel ${channel.id} cannot be opened with this server's secret (was KEYGATE_SECRET or <data-dir>/secret changed?)`,
    );
  }
  switch (channel.type) {
    case 'webhook':
      return { type: 'webhook', config: WebhookConfig.parse(raw) };
    case 'slack':
      return { type: 'slack', config: SlackConfig.parse(raw) };
    case 'email':
      return { type: 'email', config: EmailConfig.parse(raw) };
  }
}

// ---- views ---------------------------------------------------------------------------------------

/** Path segments this long are taken for tokens and masked in views. */
const TOKEN_SEGMENT = 24;

/**
 * A URL as views show it: origin and path only (no credentials, query or fragment), with every
 * path segment that may be a token masked; `maskLast` masks the last one whatever its length
 * (a Slack-style URL's last segment is its token).
 */
export function shownUrl(text: string, maskLast = false): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return '(invalid URL)';
  }
  const segments = url.pathname.split('/');
  const last = segments.length - 1;
  const masked = segments.map((s, i) =>
    s !== '' && (s.length >= TOKEN_SEGMENT || (maskLast && i === last)) ? '…' : s,
  );
  return `${url.origin}${masked.join('/')}`;
}

/** What a view says a channel sends to. */
export function targetOf(settings: ChannelConfig): string {
  switch (settings.type) {
    case 'webhook':
      return shownUrl(settings.config.url);
    case 'slack':
      return shownUrl(settings.config.url, true);
    case 'email': {
      const { host, port, secure } = settings.config;
      return `${secure ? 'smtps' : 'smtp'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
    }
  }
}

/** The public view of a channel (CLI `--json` and the management API): never a secret. */
export function channelView(channel: AlertChannel, dataKey: Buffer) {
  let settings: ChannelConfig | undefined;
  try {
    settings = openSettings(dataKey, channel);
  } catch {
    settings = undefined;
  }
  return {
    id: channel.id,
    workspace_id: channel.workspaceId,
    type: channel.type,
    name: channel.name,
    target: settings ? targetOf(settings) : '(sealed under another server secret: remove and add it again)',
    email:
      settings?.type === 'email'
        ? {
            from: settings.config.from,
            to: settings.config.to,
            authenticated: settings.config.user !== undefined,
          }
        : null,
    created_at: iso(channel.createdAt),
  };
}

export type ChannelView = ReturnType<typeof channelView>;
/** A new channel's view, with the generated webhook signing secret (shown once; null otherwise). */
export type CreatedChannelView = ChannelView & { secret: string | null };
