/**
 * Sends alerts to the channels of their workspace: every channel in parallel, each with retries
 * (exponential backoff with jitter), every attempt recorded in the delivery log
 * (`store.recordDelivery`). `notify` never throws and is not meant to be awaited on a request
 * path: it returns at once and works in the background. `sendTest` sends one test alert to every
 * channel, once each, and says how each went. `close` waits briefly for deliveries in flight and
 * cancels pending retries.
 *
 * Outcomes: webhook and Slack — 2xx is sent; 4xx other than 408 and 429 (and any redirect, which
 * is not followed) fail for good; anything else (5xx, 408, 429 — which honours Retry-After —,
 * timeouts, refused connections) is retried. Email — every SMTP or connection error is retried.
 * A destination the gateway's policy refuses (src/net/destinations.ts: checked on the address
 * connected to, so a channel stored before a policy change is held to the policy of today) fails
 * for good.
 *
 * What a tenant sees of a delivery — the test results, the delivery log of `alerts show` and of
 * `GET /admin/v1/alerts/{id}` — is a fixed reason (DeliveryReason), never what the other side said
 * (a body, an SMTP greeting) nor a connection error's text: a channel would otherwise be a way to
 * read, or map, what listens where the gateway can connect. The details go to the operator's log.
 */
import type { Socket } from 'node:net';
import { type Dispatcher, request } from 'undici';
import { isLoopbackAddress } from '../net/addresses.ts';
import {
  connectGuarded,
  DEFAULT_DESTINATIONS,
  type DestinationPolicy,
  guardedAgent,
  isDestinationRefused,
} from '../net/destinations.ts';
import type { Alert, AlertChannel, ChannelType, Store } from '../store/types.ts';
import { newId } from '../util/ids.ts';
import {
  type ChannelConfig,
  type EmailConfig,
  openSettings,
  type SlackConfig,
  type WebhookConfig,
} from './channels.ts';
import { type AlertKey, emailMessage, slackPayload, webhookPayload } from './messages.ts';
import { signatureHeader } from './signature.ts';

export { verifyWebhookSignature } from './signature.ts';

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: Readonly<RetryPolicy> = Object.freeze({
  attempts: 5,
  baseDelayMs: 1000,
  maxDelayMs: 60_000,
});

/** How long one attempt may take (connection, TLS, answer). */
export const DELIVERY_TIMEOUT_MS = 10_000;
export const USER_AGENT = 'keygate/0.1';

/** What the notifier logs through (a pino logger fits). */
export interface NotifierLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface NotifierOptions {
  store: Store;
  dataKey: Buffer;
  logger: NotifierLogger;
  /** Epoch ms; default Date.now. */
  clock?: () => number;
  /** Where channels may connect (config `alerts.allowedDestinations`); default: the public internet only. */
  destinations?: DestinationPolicy;
  /** Test sends per workspace per minute (config `alerts.testSendsPerMinute`); default 5. */
  testSendsPerMinute?: number;
  retry?: Partial<RetryPolicy>;
  /** Per attempt; default 10 s. */
  timeoutMs?: number;
  /** How long `close` waits for deliveries in flight before cutting them off; default 5 s. */
  closeTimeoutMs?: number;
  /** In [0, 1): the jitter; default Math.random. */
  random?: () => number;
}

/**
 * How a delivery went, from a fixed set: `delivered`; `refused_by_policy` (the destination policy
 * refused the address); `unreachable` (no connection, no TLS, no answer in time, not a receiver
 * the gateway understands); `http_<status>` (a webhook or Slack receiver's answer other than 2xx);
 * `smtp_<code>` (an SMTP server's refusal); `unreadable_settings` (sealed under another server
 * secret); `failed` (a failure recorded by a version before reasons were kept).
 */
export type DeliveryReason =
  | 'delivered'
  | 'refused_by_policy'
  | 'unreachable'
  | 'unreadable_settings'
  | 'failed'
  | `http_${number}`
  | `smtp_${number}`;

const FIXED_REASONS = new Set<string>(['refused_by_policy', 'unreachable', 'unreadable_settings']);

/** What the delivery log holds (its `error` column) read back as a reason; anything else is `failed`. */
export function storedReason(error: string | null): DeliveryReason {
  if (error === null) return 'delivered';
  if (FIXED_REASONS.has(error)) return error as DeliveryReason;
  if (/^(?:http|smtp)_[1-5]\d\d$/.test(error)) return error as DeliveryReason;
  return 'failed';
}

/** The fixed sentence shown for a reason (null when delivered). */
export function reasonText(reason: DeliveryReason): string | null {
  switch (reason) {
    case 'delivered':
      return null;
    case 'refused_by_policy':
      return "refused: this gateway's destination policy does not allow the address (the operator's alerts.allowedDestinations)";
    case 'unreachable':
      return 'unreachable: no connection, no TLS, or no answer in time';
    case 'unreadable_settings':
      return "the channel's settings cannot be opened with this server's secret: remove it and add it again";
    case 'failed':
      return 'failed';
  }
  const [kind, code] = reason.split('_');
  if (kind === 'http' && code?.startsWith('3'))
    return `HTTP ${code}: redirects are not followed; give the final URL`;
  return kind === 'http' ? `HTTP ${code}` : `SMTP ${code}`;
}

export interface DeliveryResult {
  channelId: string;
  name: string;
  type: ChannelType;
  outcome: 'sent' | 'failed';
  reason: DeliveryReason;
  /** HTTP status or SMTP reply code, when there was one. */
  status: number | null;
  /** reasonText(reason): a fixed sentence, never what the receiver said. */
  error: string | null;
}

/** Too many test sends for a workspace (config `alerts.testSendsPerMinute`). */
export class TestSendLimitError extends Error {
  override name = 'TestSendLimitError';
  /** Whole seconds until the next test send is allowed (at least 1). */
  readonly retryAfterSeconds: number;
  constructor(limit: number, retryAfterSeconds: number) {
    super(
      `at most ${limit} test alert${limit === 1 ? '' : 's'} per minute for a workspace; try again in ${retryAfterSeconds} s`,
    );
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

export interface Notifier {
  /** Delivers an alert to every channel of its workspace, in the background; never rejects. */
  notify(alert: Alert): Promise<void>;
  /**
   * Raises a `test` alert and sends it once to every channel of the workspace (no retries).
   * Throws TestSendLimitError past `testSendsPerMinute` for the workspace (in this process).
   */
  sendTest(workspaceId: string): Promise<DeliveryResult[]>;
  close(): Promise<void>;
}

interface Attempt {
  outcome: 'sent' | 'failed';
  reason: DeliveryReason;
  status: number | null;
  /** What went wrong, secrets taken out: for the operator's log only. */
  detail: string | null;
  /** Worth another try. */
  retry: boolean;
  /** What the receiver asked for (Retry-After), in ms. */
  retryAfterMs?: number;
}

/** A failed attempt whose reason is a refusal or a connection failure. */
function connectionFailure(error: unknown, secrets: readonly string[]): Attempt {
  const refused = isDestinationRefused(error);
  return {
    outcome: 'failed',
    reason: refused ? 'refused_by_policy' : 'unreachable',
    status: null,
    detail: cleanError(errorText(error), secrets),
    retry: !refused,
  };
}

/**
 * Test sends per workspace in the last minute (a sliding window of their times): a test fans out
 * to every channel of the workspace, so it is a way to make the gateway connect, on demand.
 */
function testSendLimiter(limit: number, clock: () => number) {
  const sent = new Map<string, number[]>();
  return (workspaceId: string): void => {
    const now = clock();
    const recent = (sent.get(workspaceId) ?? []).filter((at) => at > now - 60_000);
    const oldest = recent[0];
    if (recent.length >= limit && oldest !== undefined)
      throw new TestSendLimitError(limit, Math.max(1, Math.ceil((oldest + 60_000 - now) / 1000)));
    recent.push(now);
    sent.set(workspaceId, recent);
    // Workspaces quiet for a minute are forgotten, so the map stays as small as the active set.
    if (sent.size > 1000)
      for (const [id, times] of sent) if (times.every((at) => at <= now - 60_000)) sent.delete(id);
  };
}

/** The delay before attempt `attempt + 1`: exponential, capped, half of it random ("equal jitter"). */
export function backoffDelay(
  attempt: number,
  policy: RetryPolicy,
  random: () => number,
  retryAfterMs?: number,
): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  const delay = exp / 2 + random() * (exp / 2);
  return Math.round(
    retryAfterMs === undefined ? delay : Math.min(policy.maxDelayMs, Math.max(delay, retryAfterMs)),
  );
}

function retryAfterOf(value: string | string[] | undefined, now: number): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined) return undefined;
  if (/^\d{1,7}$/.test(text.trim())) return Number(text.trim()) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** One line, short, with every given secret (URL, path, query, password…) taken out. */
function cleanError(text: string, secrets: readonly string[]): string {
  let out = text.replace(/\s+/g, ' ').trim();
  for (const secret of [...secrets].sort((a, b) => b.length - a.length)) {
    if (secret.length >= 4) out = out.replaceAll(secret, '…');
  }
  return out.length > 300 ? `${out.slice(0, 300)}…` : out;
}

function errorText(error: unknown): string {
  const parts: string[] = [];
  let at: unknown = error;
  for (let depth = 0; depth < 4 && at instanceof Error; depth++) {
    const code = (at as NodeJS.ErrnoException).code;
    const text =
      typeof code === 'string' && !at.message.includes(code) ? `${code}: ${at.message}` : at.message;
    if (text && !parts.includes(text)) parts.push(text);
    at = at.cause;
  }
  return parts.length > 0 ? parts.join(': ') : String(error);
}

/** The secrets of a channel's settings that must not reach the delivery log or the logs. */
function secretsOf(settings: ChannelConfig): string[] {
  if (settings.type === 'email') {
    return [settings.config.pass, settings.config.user].filter((s): s is string => s !== undefined);
  }
  const url = new URL(settings.config.url);
  const out = [settings.config.url, url.search, url.pathname.length > 1 ? url.pathname : ''];
  for (const segment of url.pathname.split('/')) if (segment.length >= 8) out.push(segment);
  if (settings.type === 'webhook') out.push(settings.config.secret);
  return out;
}

export function createNotifier(options: NotifierOptions): Notifier {
  const { store, dataKey, logger } = options;
  const clock = options.clock ?? Date.now;
  const random = options.random ?? Math.random;
  const policy: RetryPolicy = { ...DEFAULT_RETRY, ...options.retry };
  const timeoutMs = options.timeoutMs ?? DELIVERY_TIMEOUT_MS;
  const closeTimeoutMs = options.closeTimeoutMs ?? 5000;
  const destinations = options.destinations ?? DEFAULT_DESTINATIONS;
  const checkTestSend = testSendLimiter(options.testSendsPerMinute ?? 5, clock);
  // Every webhook and Slack connection goes through the destination policy (no other dispatcher:
  // one that skipped the check would be a way around it).
  const dispatcher: Dispatcher = guardedAgent(destinations, {
    connect: { timeout: timeoutMs },
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    keepAliveTimeout: 4000,
  });
  /** Aborted by `close` once its wait is over: cuts off what is still in flight. */
  const shutdown = new AbortController();
  const inFlight = new Set<Promise<unknown>>();
  /** Pending retry waits: resolving one with false cancels that retry. */
  const waits = new Set<(proceed: boolean) => void>();
  const transports = new Set<{ close(): void }>();
  let closed = false;

  function track<T>(promise: Promise<T>): Promise<T> {
    inFlight.add(promise);
    promise.finally(() => inFlight.delete(promise)).catch(() => {});
    return promise;
  }

  function wait(ms: number): Promise<boolean> {
    if (closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (proceed: boolean) => {
        clearTimeout(timer);
        waits.delete(done);
        resolve(proceed);
      };
      const timer = setTimeout(() => done(true), ms);
      waits.add(done);
    });
  }

  async function keyOf(alert: Alert): Promise<AlertKey | null> {
    if (alert.keyId === null) return null;
    try {
      const key = await store.getKey(alert.keyId);
      return { id: alert.keyId, name: key?.name ?? null };
    } catch {
      return { id: alert.keyId, name: null };
    }
  }

  function signal(): AbortSignal {
    return AbortSignal.any([shutdown.signal, AbortSignal.timeout(timeoutMs)]);
  }

  async function post(
    url: string,
    body: string,
    headers: Record<string, string>,
    secrets: readonly string[],
  ): Promise<Attempt> {
    try {
      const res = await request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': USER_AGENT, ...headers },
        body,
        dispatcher,
        signal: signal(),
      });
      const status = res.statusCode;
      // The body is never read: what a receiver answers is not the gateway's to pass on.
      await res.body.dump().catch(() => {});
      if (status >= 200 && status < 300)
        return { outcome: 'sent', reason: 'delivered', status, detail: null, retry: false };
      // Redirects are not followed (the policy checked this destination, not the next one).
      const permanent = status < 500 && status !== 408 && status !== 429;
      const attempt: Attempt = {
        outcome: 'failed',
        reason: `http_${status}`,
        status,
        detail: `HTTP ${status}`,
        retry: !permanent,
      };
      const after = retryAfterOf(res.headers['retry-after'], clock());
      if (after !== undefined) attempt.retryAfterMs = after;
      return attempt;
    } catch (error) {
      return connectionFailure(error, secrets);
    }
  }

  async function sendWebhook(config: WebhookConfig, alert: Alert, key: AlertKey | null, attempt: number) {
    const now = clock();
    const body = JSON.stringify(webhookPayload(alert, key, now));
    const timestamp = Math.floor(now / 1000);
    return post(
      config.url,
      body,
      {
        'x-keygate-event-id': alert.id,
        'x-keygate-delivery-attempt': String(attempt),
        'x-keygate-signature': signatureHeader(config.secret, timestamp, body),
      },
      secretsOf({ type: 'webhook', config }),
    );
  }

  async function sendSlack(config: SlackConfig, alert: Alert, key: AlertKey | null) {
    return post(
      config.url,
      JSON.stringify(slackPayload(alert, key)),
      {},
      secretsOf({ type: 'slack', config }),
    );
  }

  async function sendEmail(config: EmailConfig, alert: Alert, key: AlertKey | null): Promise<Attempt> {
    const message = emailMessage(alert, key);
    const auth = config.user === undefined ? undefined : { user: config.user, pass: config.pass ?? '' };
    const secrets = secretsOf({ type: 'email', config });
    // Loaded on first use: most deployments never send email, and nodemailer is large.
    const { createTransport } = await import('nodemailer');
    const transport = createTransport({
      host: config.host,
      port: config.port,
      secure: config.secure,
      auth,
      // nodemailer resolves names and connects on its own; the connection is made here instead,
      // under the destination policy, and handed over (it then runs TLS or STARTTLS on it).
      getSocket(_options, callback) {
        connectGuarded({ host: config.host, port: config.port }, destinations, 'tls', {
          timeoutMs,
          signal: shutdown.signal,
        }).then(
          (socket: Socket) =>
            callback(null, {
              connection: socket,
              // Credentials never cross the network in the clear: STARTTLS is required unless
              // the server is on this host (the address connected to, not the name, says so).
              requireTLS:
                !config.secure && auth !== undefined && !isLoopbackAddress(socket.remoteAddress ?? ''),
            }),
          (error: Error) => callback(error),
        );
      },
      requireTLS: !config.secure && auth !== undefined,
      connectionTimeout: timeoutMs,
      greetingTimeout: timeoutMs,
      socketTimeout: timeoutMs,
      dnsTimeout: timeoutMs,
    });
    transports.add(transport);
    // nodemailer's timeouts are per phase; this bounds the whole attempt.
    let deadline: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      deadline = setTimeout(() => {
        transport.close();
        reject(new Error(`no answer within ${timeoutMs} ms`));
      }, timeoutMs);
    });
    try {
      const sending = transport.sendMail({
        from: config.from,
        to: config.to,
        subject: message.subject,
        text: message.text,
        html: message.html,
        headers: { 'x-keygate-event-id': alert.id },
      });
      sending.catch(() => {});
      const info = (await Promise.race([sending, timedOut])) as { response?: unknown };
      const code = typeof info.response === 'string' ? /^(\d{3})/.exec(info.response)?.[1] : undefined;
      return {
        outcome: 'sent',
        reason: 'delivered',
        status: code === undefined ? null : Number(code),
        detail: null,
        retry: false,
      };
    } catch (error) {
      const code = (error as { responseCode?: unknown }).responseCode;
      // An SMTP server's refusal is a reply code; anything else (no connection, no TLS, a
      // greeting that is not SMTP's) is a connection failure, whatever the other side said.
      if (typeof code !== 'number' || !Number.isInteger(code) || code < 400 || code > 599)
        return connectionFailure(error, secrets);
      return {
        outcome: 'failed',
        reason: `smtp_${code}`,
        status: code,
        detail: cleanError(errorText(error), secrets),
        retry: true,
      };
    } finally {
      clearTimeout(deadline);
      transports.delete(transport);
      transport.close();
    }
  }

  function send(settings: ChannelConfig, alert: Alert, key: AlertKey | null, attempt: number) {
    switch (settings.type) {
      case 'webhook':
        return sendWebhook(settings.config, alert, key, attempt);
      case 'slack':
        return sendSlack(settings.config, alert, key);
      case 'email':
        return sendEmail(settings.config, alert, key);
    }
  }

  async function record(alert: Alert, channel: AlertChannel, attempt: number, result: Attempt) {
    try {
      await store.recordDelivery({
        alertId: alert.id,
        channelId: channel.id,
        attempt,
        outcome: result.outcome,
        status: result.status,
        // The log keeps the reason only (see DeliveryReason): tenants read it.
        error: result.reason === 'delivered' ? null : result.reason,
        at: clock(),
      });
    } catch (error) {
      logger.error(
        { alertId: alert.id, channelId: channel.id, err: error },
        'recording an alert delivery failed',
      );
    }
  }

  /** Opens the channel's settings; a channel that cannot be opened fails at once, for good. */
  function settingsOf(channel: AlertChannel): ChannelConfig | Attempt {
    try {
      return openSettings(dataKey, channel);
    } catch (error) {
      return {
        outcome: 'failed',
        reason: 'unreadable_settings',
        status: null,
        detail: (error as Error).message,
        retry: false,
      };
    }
  }

  async function deliver(alert: Alert, channel: AlertChannel, key: AlertKey | null, attempts: number) {
    const opened = settingsOf(channel);
    if ('outcome' in opened) {
      await record(alert, channel, 1, opened);
      logger.error({ alertId: alert.id, channelId: channel.id, error: opened.detail }, 'alert not delivered');
      return opened;
    }
    let result: Attempt = {
      outcome: 'failed',
      reason: 'unreachable',
      status: null,
      detail: 'not attempted',
      retry: false,
    };
    for (let attempt = 1; attempt <= attempts; attempt++) {
      result = await send(opened, alert, key, attempt);
      await record(alert, channel, attempt, result);
      const where = { alertId: alert.id, channelId: channel.id, type: channel.type, attempt };
      if (result.outcome === 'sent') {
        if (attempt > 1) logger.info(where, 'alert delivered after a retry');
        return result;
      }
      const final = !result.retry || attempt === attempts;
      // The operator's log has the details the tenant's views do not (secrets taken out).
      const why = { reason: result.reason, status: result.status, error: result.detail };
      if (final) {
        logger.error(
          { ...where, ...why },
          attempts === 1
            ? 'alert delivery failed (sent once: a test)'
            : result.retry
              ? 'alert delivery failed; giving up after the last attempt'
              : 'alert delivery failed for good',
        );
        return result;
      }
      const delay = backoffDelay(attempt, policy, random, result.retryAfterMs);
      logger.warn({ ...where, ...why, retryInMs: delay }, 'alert delivery failed; retrying');
      if (!(await wait(delay))) {
        logger.warn(where, 'shutting down: pending alert delivery retries cancelled');
        return result;
      }
    }
    return result;
  }

  function resultOf(channel: AlertChannel, attempt: Attempt): DeliveryResult {
    return {
      channelId: channel.id,
      name: channel.name,
      type: channel.type,
      outcome: attempt.outcome,
      reason: attempt.reason,
      status: attempt.status,
      error: reasonText(attempt.reason),
    };
  }

  async function notifyNow(alert: Alert): Promise<void> {
    // Whoever raised the alert goes on at once; the work starts on a later turn.
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (closed) return;
    const channels = await store.listChannels(alert.workspaceId);
    if (channels.length === 0) return;
    const key = await keyOf(alert);
    await Promise.all(channels.map((channel) => deliver(alert, channel, key, policy.attempts)));
  }

  return {
    notify(alert) {
      if (closed) {
        logger.warn({ alertId: alert.id }, 'the notifier is closed: alert not sent');
        return Promise.resolve();
      }
      return track(
        notifyNow(alert).catch((error: unknown) => {
          logger.error({ alertId: alert.id, err: error }, 'sending an alert failed');
        }),
      );
    },

    async sendTest(workspaceId) {
      checkTestSend(workspaceId);
      const channels = await store.listChannels(workspaceId);
      if (channels.length === 0) return [];
      const now = clock();
      const { alert } = await store.raiseAlert(
        {
          id: newId('alr'),
          workspaceId,
          kind: 'test',
          fingerprint: `test:${newId('alr')}`,
          keyId: null,
          severity: 'info',
          title: 'Test alert from Keygate',
          message: `This is a test alert for workspace ${workspaceId}, sent to each of its ${channels.length} alert channel${channels.length === 1 ? '' : 's'}.`,
          details: { test: true },
          at: now,
        },
        0,
      );
      return track(
        Promise.all(
          channels.map(async (channel) => resultOf(channel, await deliver(alert, channel, null, 1))),
        ),
      );
    },

    async close() {
      if (closed) return;
      closed = true;
      for (const cancel of [...waits]) cancel(false);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, closeTimeoutMs);
      });
      await Promise.race([Promise.allSettled([...inFlight]), timeout]);
      clearTimeout(timer);
      if (inFlight.size > 0) {
        shutdown.abort();
        for (const transport of transports) transport.close();
        await Promise.race([
          Promise.allSettled([...inFlight]),
          new Promise((resolve) => setTimeout(resolve, 1000).unref()),
        ]);
      }
      await dispatcher.close().catch(() => {});
    },
  };
}
