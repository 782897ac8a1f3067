/**
 * Alert channels end to end: a webhook receiver (node:http on 127.0.0.1) that verifies the
 * signature and the payload, a Slack-format receiver, an SMTP server (smtp-server) that receives
 * the email; retries with backoff, permanent failures, the delivery log; `keygate alerts …`
 * through the CLI (locally and through KEYGATE_URL); the management API routes; and that no view,
 * message or database file shows a secret in plaintext.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { setGlobalDispatcher } from 'undici';
import {
  ChannelInputError,
  checkDestination,
  parseChannelInput,
  shownUrl,
} from '../../src/alerts/channels.ts';
import {
  backoffDelay,
  createNotifier,
  DEFAULT_RETRY,
  type Notifier,
  type RetryPolicy,
  verifyWebhookSignature,
} from '../../src/alerts/notifier.ts';
import { addChannel, channelRules, DEFAULT_CHANNEL_RULES } from '../../src/alerts/service.ts';
import { signatureHeader } from '../../src/alerts/signature.ts';
import type { Config } from '../../src/config/config.ts';
import * as S from '../../src/http/admin/schemas.ts';
import { createKey } from '../../src/keys/service.ts';
import { openStore } from '../../src/store/index.ts';
import {
  type Alert,
  CLI_ACTOR,
  DEFAULT_WORKSPACE_ID,
  type NewAlert,
  type Store,
} from '../../src/store/types.ts';
import { newId } from '../../src/util/ids.ts';
import { ANY_KEY_RE, baseEnv, createCliHarness } from '../support/cli.ts';
import { startTestGateway, type TestGateway, tempDir } from '../support/gateway.ts';
import { eventually } from '../support/wait.ts';

// ---- receivers -----------------------------------------------------------------------------------

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

interface Receiver {
  url: string;
  received: Received[];
  /** Status to answer each request with (default 200). */
  respond: (req: Received) => number;
  on(path: string): Received[];
  close(): Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const received: Received[] = [];
  const receiver = {
    url: '',
    received,
    respond: (_req: Received) => 200,
    on: (path: string) => received.filter((r) => r.path === path),
    close: async () => {},
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const entry: Received = {
        path: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        at: Date.now(),
      };
      received.push(entry);
      const status = receiver.respond(entry);
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(status < 300 ? 'ok' : `refused with ${status}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  receiver.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return receiver;
}

interface Mail {
  from: string;
  to: string[];
  user: string | undefined;
  raw: string;
}

const SMTP_USER = 'alerts@example.com';
const SMTP_PASS = 'p@ss Word-SMTP-8d1f0c';

async function startSmtp(): Promise<{ port: number; mails: Mail[]; close(): Promise<void> }> {
  const mails: Mail[] = [];
  const server = new SMTPServer({
    disabledCommands: ['STARTTLS'],
    authOptional: true,
    allowInsecureAuth: true,
    logger: false,
    closeTimeout: 1000,
    onAuth(auth, _session, callback) {
      if (auth.username === SMTP_USER && auth.password === SMTP_PASS) callback(null, { user: auth.username });
      else callback(new Error('Invalid username or password'));
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        mails.push({
          from: session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address,
          to: session.envelope.rcptTo.map((r) => r.address),
          user: typeof session.user === 'string' ? session.user : undefined,
          raw: Buffer.concat(chunks).toString('utf8'),
        });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.server.address() as AddressInfo).port;
  return { port, mails, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** A raw email's headers unfolded and its quoted-printable body decoded, for plain checks. */
function readable(raw: string): string {
  return raw
    .replace(/\r\n[ \t]+/g, ' ')
    .replace(/=\r?\n/g, '')
    .replace(/=([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

/** Every file of a data directory (the database, its WAL) as one string, to look for plaintext. */
function dataDirText(dir: string): string {
  return readdirSync(dir)
    .filter((f) => f.startsWith('keygate.db'))
    .map((f) => readFileSync(join(dir, f)).toString('latin1'))
    .join('\n');
}

const SILENT = { info() {}, warn() {}, error() {} };
/** The receivers here listen on loopback, which an operator must allow (config alerts.allowedDestinations). */
const allowLoopback = (config: Config) => {
  config.alerts.allowedDestinations = ['127.0.0.0/8', '::1/128'];
};
const LOCAL = channelRules({ allowedDestinations: ['127.0.0.0/8', '::1/128'], maxChannelsPerWorkspace: 20 });
const WEBHOOK_TOKEN = 'hooktoken-4b1e9a7c2d';
const SLACK_TOKEN = 'SlAcKtOkEn0123456789abcd';

// ---- shared fixtures -----------------------------------------------------------------------------

let receiver: Receiver;
let smtp: Awaited<ReturnType<typeof startSmtp>>;

before(async () => {
  receiver = await startReceiver();
  smtp = await startSmtp();
});
after(async () => {
  await receiver.close();
  await smtp.close();
});

function smtpUrl(): string {
  return `smtp://${encodeURIComponent(SMTP_USER)}:${encodeURIComponent(SMTP_PASS)}@127.0.0.1:${smtp.port}?from=keygate@example.com&to=ops@example.com,oncall@example.com`;
}

// ---- signatures ----------------------------------------------------------------------------------

describe('webhook signatures', () => {
  test('verify: the right secret and body within 5 minutes; nothing else', () => {
    const body = '{"hello":"world"}';
    const t = 1_750_000_000;
    const header = signatureHeader('whsec_test-secret-1234', t, body);
    assert.match(header, /^t=1750000000,v1=[0-9a-f]{64}$/);
    assert.ok(verifyWebhookSignature('whsec_test-secret-1234', header, body, t));
    assert.ok(verifyWebhookSignature('whsec_test-secret-1234', header, Buffer.from(body), t + 299));
    assert.ok(!verifyWebhookSignature('whsec_test-secret-1234', header, body, t + 301), 'too old');
    assert.ok(!verifyWebhookSignature('whsec_test-secret-1234', header, body, t - 301), 'from the future');
    assert.ok(!verifyWebhookSignature('whsec_other-secret-123', header, body, t), 'another secret');
    assert.ok(!verifyWebhookSignature('whsec_test-secret-1234', header, `${body} `, t), 'another body');
    assert.ok(!verifyWebhookSignature('whsec_test-secret-1234', undefined, body, t));
    assert.ok(!verifyWebhookSignature('whsec_test-secret-1234', 'v1=abc', body, t));
    const other = signatureHeader('whsec_other-secret-123', t, body).split(',')[1];
    assert.ok(verifyWebhookSignature('whsec_test-secret-1234', `${header},${other}`, body, t), 'any v1');
  });
});

// ---- channel settings ----------------------------------------------------------------------------

describe('channel settings', () => {
  test('validation names the field at fault', () => {
    const refused = (input: Parameters<typeof parseChannelInput>[0], field: string, message: RegExp) => {
      assert.throws(
        () => parseChannelInput(input),
        (error: unknown) =>
          error instanceof ChannelInputError && error.field === field && message.test(error.message),
      );
    };
    refused({ type: 'pager', url: 'https://x.example' }, 'type', /unknown channel type/);
    refused({ type: 'webhook', url: 'ftp://hooks.example.com/x' }, 'url', /https/);
    refused({ type: 'webhook', url: 'https://u:p@hooks.example.com/x' }, 'url', /user name or password/);
    refused({ type: 'webhook', url: 'https://hooks.example.com', secret: 'short' }, 'secret', /16 to 256/);
    refused(
      { type: 'slack', url: 'https://hooks.slack.com/x', secret: 'a'.repeat(20) },
      'secret',
      /only webhook/,
    );
    refused({ type: 'email', url: 'https://mail.example.com' }, 'url', /smtp:\/\//);
    refused({ type: 'email', url: 'smtp://mail.example.com?to=a@example.com' }, 'url', /from=/);
    refused({ type: 'email', url: 'smtp://mail.example.com?from=a@example.com' }, 'url', /to=/);
    refused(
      { type: 'email', url: 'smtp://mail.example.com?from=a@example.com&to=nope' },
      'url',
      /not an email/,
    );
    refused(
      { type: 'email', url: 'smtp://h.example?from=a@example.com&to=b@example.com&x=1' },
      'url',
      /unknown/,
    );
    refused({ type: 'webhook', name: ' ', url: 'https://hooks.example.com' }, 'name', /1 to 128/);

    const webhook = parseChannelInput({ type: 'webhook', url: 'http://127.0.0.1:9/hook' });
    assert.match(webhook.generatedSecret ?? '', /^whsec_[A-Za-z0-9_-]{43}$/);
    const email = parseChannelInput({
      type: 'email',
      url: 'smtps://u%40x:p%2Fw@mail.example.com?from=a@example.com&to=b@example.com',
    });
    assert.deepEqual(email.settings, {
      type: 'email',
      config: {
        host: 'mail.example.com',
        port: 465,
        secure: true,
        user: 'u@x',
        pass: 'p/w',
        from: 'a@example.com',
        to: ['b@example.com'],
      },
    });
  });

  test('destinations: plain http:// and non-public IP literals only within the operator ranges', () => {
    const check = (url: string, rules = DEFAULT_CHANNEL_RULES) =>
      checkDestination(parseChannelInput({ type: 'webhook', url }).settings, rules.destinations);
    const refusedBy = (message: RegExp) => (error: unknown) =>
      error instanceof ChannelInputError && error.field === 'url' && message.test(error.message);
    assert.throws(
      () => check('http://hooks.example.com/x'),
      refusedBy(/plain http:\/\/ only to addresses the operator allows in alerts\.allowedDestinations/),
    );
    for (const [url, kind] of [
      ['https://127.0.0.1/x', 'loopback'],
      ['https://169.254.169.254/latest/meta-data', 'linkLocal'],
      ['https://10.1.2.3/x', 'private'],
      ['https://[::1]/x', 'loopback'],
      ['https://[::ffff:127.0.0.1]/x', 'loopback'],
      ['https://0.0.0.0/x', 'unspecified'],
    ] as const)
      assert.throws(() => check(url), refusedBy(new RegExp(`${kind} address`)), url);
    // A name is judged on what it resolves to when connecting, not here.
    check('https://127.attacker.example/x');
    check('https://hooks.example.com/x');
    // The operator's ranges open loopback, plain http included; nothing else.
    check('http://127.0.0.1:9/hook', LOCAL);
    check('https://[::1]:9/hook', LOCAL);
    assert.throws(() => check('https://10.1.2.3/x', LOCAL), refusedBy(/private address/));
    assert.throws(
      () => check('http://10.1.2.3/x', LOCAL),
      refusedBy(/plain text goes only to the allowed ranges/),
    );
  });

  test('backoff: exponential, half of it random, capped, Retry-After honoured within the cap', () => {
    const low = () => 0;
    const high = () => 0.999_999;
    assert.deepEqual(
      [1, 2, 3, 4].map((n) => backoffDelay(n, DEFAULT_RETRY, low)),
      [500, 1000, 2000, 4000],
    );
    assert.deepEqual(
      [1, 2, 3, 4].map((n) => backoffDelay(n, DEFAULT_RETRY, high)),
      [1000, 2000, 4000, 8000],
    );
    assert.equal(backoffDelay(12, DEFAULT_RETRY, high), 60_000);
    assert.equal(backoffDelay(1, DEFAULT_RETRY, low, 5000), 5000);
    assert.equal(backoffDelay(1, DEFAULT_RETRY, low, 3_600_000), 60_000);
  });

  test('views show the origin and path, tokens masked', () => {
    assert.equal(
      shownUrl('https://u:p@hooks.example.com/in/abc?token=x#y'),
      'https://hooks.example.com/in/abc',
    );
    assert.equal(
      shownUrl(`https://hooks.slack.com/services/T000/B000/${SLACK_TOKEN}`, true),
      'https://hooks.slack.com/services/T000/B000/…',
    );
    assert.equal(shownUrl(`https://x.example/hooks/${'a'.repeat(30)}/go`), 'https://x.example/hooks/…/go');
  });
});

// ---- the notifier against real receivers -------------------------------------------------------

describe('notifier', () => {
  let dir: string;
  let store: Store;
  const dataKey = randomBytes(32);
  let keyId: string;
  let keySecret: string;
  const notifiers: Notifier[] = [];

  before(async () => {
    dir = tempDir('keygate-alerts-');
    store = await openStore(dir);
    const created = await createKey(
      { store, pepper: randomBytes(32), prefix: 'kg' },
      { name: 'billing-service' },
    );
    keyId = created.record.id;
    keySecret = created.key;
  });
  after(async () => {
    for (const n of notifiers) await n.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function notifier(retry: Partial<RetryPolicy> = { baseDelayMs: 20, maxDelayMs: 200 }): Notifier {
    const n = createNotifier({ store, dataKey, logger: SILENT, retry, destinations: LOCAL.destinations });
    notifiers.push(n);
    return n;
  }

  /** A workspace of its own per test, so each test sees only its own channels. */
  async function workspace(): Promise<string> {
    const id = newId('ws');
    await store.createWorkspace({ id, name: id, createdAt: Date.now() }, CLI_ACTOR);
    return id;
  }

  async function raise(workspaceId: string, extra: Partial<NewAlert> = {}): Promise<Alert> {
    const { alert } = await store.raiseAlert(
      {
        id: newId('alr'),
        workspaceId,
        kind: 'usage_spike',
        fingerprint: `spike:${newId('alr')}`,
        keyId,
        severity: 'warning',
        title: 'Usage spike on billing-service',
        message: '1200 requests in 5 minutes; usually about 40.',
        details: { window_minutes: 5, requests: 1200, usual: 40 },
        at: Date.now(),
        ...extra,
      },
      60_000,
    );
    return alert;
  }

  async function deliveries(alertId: string) {
    return (await store.listDeliveries({ alertId })).reverse();
  }

  test('webhook: a signed JSON payload that names the key and says what to do', async () => {
    const ws = await workspace();
    const path = `/hook/a?token=${WEBHOOK_TOKEN}`;
    const channel = await addChannel(
      { store, dataKey, rules: LOCAL },
      { type: 'webhook', url: receiver.url + path, workspaceId: ws },
      CLI_ACTOR,
    );
    assert.ok(channel.secret);
    const alert = await raise(ws);
    const started = Date.now();
    await notifier().notify(alert);
    const [got, ...more] = receiver.on(path);
    assert.ok(got, 'the receiver got the alert');
    assert.equal(more.length, 0);
    assert.equal(got.headers['content-type'], 'application/json');
    assert.equal(got.headers['user-agent'], 'keygate/0.1');
    assert.equal(got.headers['x-keygate-event-id'], alert.id);
    const signature = got.headers['x-keygate-signature'];
    assert.equal(typeof signature, 'string');
    assert.ok(
      verifyWebhookSignature(channel.secret, String(signature), got.body, Math.floor(Date.now() / 1000)),
    );
    assert.ok(
      !verifyWebhookSignature(
        'whsec_wrong-secret-0000',
        String(signature),
        got.body,
        Math.floor(Date.now() / 1000),
      ),
    );
    const t = Number(/t=(\d+)/.exec(String(signature))?.[1]);
    assert.ok(Math.abs(t - started / 1000) < 5);

    const payload = JSON.parse(got.body) as Record<string, unknown>;
    assert.deepEqual(Object.keys(payload).sort(), [
      'action',
      'details',
      'first_at',
      'id',
      'key',
      'kind',
      'last_at',
      'message',
      'occurrences',
      'sent_at',
      'severity',
      'title',
      'type',
      'workspace_id',
    ]);
    assert.equal(payload.id, alert.id);
    assert.equal(payload.type, 'keygate.alert');
    assert.equal(payload.kind, 'usage_spike');
    assert.equal(payload.severity, 'warning');
    assert.equal(payload.workspace_id, ws);
    assert.deepEqual(payload.key, { id: keyId, name: 'billing-service' });
    assert.equal(payload.occurrences, 1);
    assert.deepEqual(payload.details, { window_minutes: 5, requests: 1200, usual: 40 });
    assert.match(String(payload.action), new RegExp(`keygate keys revoke ${keyId}`));
    assert.ok(!Number.isNaN(Date.parse(String(payload.sent_at))));
    assert.ok(!got.body.includes(keySecret), 'never the key secret');
    assert.doesNotMatch(got.body, ANY_KEY_RE);

    const log = await deliveries(alert.id);
    assert.deepEqual(
      log.map((d) => [d.channelId, d.attempt, d.outcome, d.status, d.error]),
      [[channel.id, 1, 'sent', 200, null]],
    );
  });

  test('slack: text and blocks with the title, severity, key, message and what to do', async () => {
    const ws = await workspace();
    const path = `/slack/services/T000/B000/${SLACK_TOKEN}`;
    const channel = await addChannel(
      { store, dataKey, rules: LOCAL },
      { type: 'slack', url: receiver.url + path, workspaceId: ws },
      CLI_ACTOR,
    );
    assert.equal(channel.secret, null);
    assert.equal(channel.target, `${receiver.url}/slack/services/T000/B000/…`);
    const alert = await raise(ws, { details: { action: 'Call the billing team & check <the dashboard>.' } });
    await notifier().notify(alert);
    const [got] = receiver.on(path);
    assert.ok(got);
    assert.equal(got.headers['content-type'], 'application/json');
    assert.equal(got.headers['x-keygate-signature'], undefined, 'Slack webhooks are not signed');
    const body = JSON.parse(got.body) as {
      text: string;
      blocks: { type: string; text?: { text: string } }[];
    };
    assert.equal(body.text, '[warning] Usage spike on billing-service');
    assert.equal(body.blocks[0]?.type, 'header');
    const all = JSON.stringify(body.blocks);
    for (const part of [
      'Usage spike on billing-service',
      '*Severity:* warning',
      'billing-service',
      keyId,
      '1200 requests in 5 minutes',
    ]) {
      assert.ok(all.includes(part), `${part} in ${all}`);
    }
    assert.ok(all.includes('*What to do:* Call the billing team &amp; check &lt;the dashboard&gt;.'), all);
    assert.ok(!got.body.includes(keySecret));
    assert.equal((await deliveries(alert.id))[0]?.outcome, 'sent');
  });

  test('email: sent over SMTP with the subject, a text and an HTML body, no secret', async () => {
    const ws = await workspace();
    const channel = await addChannel(
      { store, dataKey, rules: LOCAL },
      { type: 'email', url: smtpUrl(), workspaceId: ws },
      CLI_ACTOR,
    );
    assert.equal(channel.target, `smtp://127.0.0.1:${smtp.port}`);
    assert.deepEqual(channel.email, {
      from: 'keygate@example.com',
      to: ['ops@example.com', 'oncall@example.com'],
      authenticated: true,
    });
    const before = smtp.mails.length;
    const alert = await raise(ws, { severity: 'critical', title: 'Budget 100% used' });
    await notifier().notify(alert);
    const mail = smtp.mails[before];
    assert.ok(mail, 'the SMTP server received the email');
    assert.equal(mail.user, SMTP_USER, 'authenticated with the user of the URL');
    assert.equal(mail.from, 'keygate@example.com');
    assert.deepEqual(mail.to, ['ops@example.com', 'oncall@example.com']);
    const text = readable(mail.raw);
    assert.match(text, /^Subject: \[Keygate\] critical: Budget 100% used\r?$/m);
    assert.match(text, /Content-Type: text\/plain/);
    assert.match(text, /Content-Type: text\/html/);
    assert.match(text, new RegExp(`Key: "billing-service" \\(${keyId}\\)`));
    assert.match(text, /1200 requests in 5 minutes/);
    assert.match(text, /What to do: /);
    assert.match(text, new RegExp(`X-Keygate-Event-Id: ${alert.id}`, 'i'));
    assert.ok(!text.includes(SMTP_PASS), 'never the SMTP password');
    assert.ok(!text.includes(keySecret), 'never the key secret');
    const [delivery] = await deliveries(alert.id);
    assert.equal(delivery?.outcome, 'sent');
    assert.equal(delivery?.status, 250);
  });

  test('retries with backoff: two failures, then sent; three deliveries recorded', async () => {
    const ws = await workspace();
    const path = '/hook/flaky';
    let calls = 0;
    receiver.respond = (req) => (req.path === path && ++calls <= 2 ? 503 : 200);
    try {
      await addChannel(
        { store, dataKey, rules: LOCAL },
        { type: 'webhook', url: receiver.url + path, workspaceId: ws },
        CLI_ACTOR,
      );
      const alert = await raise(ws);
      await notifier({ baseDelayMs: 40, maxDelayMs: 1000 }).notify(alert);
      const got = receiver.on(path);
      assert.equal(got.length, 3);
      assert.deepEqual(
        got.map((r) => r.headers['x-keygate-delivery-attempt']),
        ['1', '2', '3'],
      );
      assert.deepEqual(new Set(got.map((r) => r.headers['x-keygate-event-id'])), new Set([alert.id]));
      // Equal jitter: at least half the exponential delay (20 ms, then 40 ms).
      const gaps = [got[1]!.at - got[0]!.at, got[2]!.at - got[1]!.at];
      assert.ok(gaps[0]! >= 18 && gaps[1]! >= 38, `backoff gaps ${gaps}`);
      const log = await deliveries(alert.id);
      assert.deepEqual(
        log.map((d) => [d.attempt, d.outcome, d.status]),
        [
          [1, 'failed', 503],
          [2, 'failed', 503],
          [3, 'sent', 200],
        ],
      );
      assert.equal(log[0]?.error, 'http_503', 'a fixed reason: what the receiver answers is not quoted');
    } finally {
      receiver.respond = () => 200;
    }
  });

  test('a 400 fails for good (no retry); a refused connection is retried up to the limit', async () => {
    const ws = await workspace();
    receiver.respond = (req) => (req.path === '/hook/bad' ? 400 : 200);
    try {
      const bad = await addChannel(
        { store, dataKey, rules: LOCAL },
        { type: 'webhook', url: `${receiver.url}/hook/bad`, workspaceId: ws },
        CLI_ACTOR,
      );
      const closed = await addChannel(
        { store, dataKey, rules: LOCAL },
        { type: 'webhook', url: 'http://127.0.0.1:9/unreachable', workspaceId: ws },
        CLI_ACTOR,
      );
      const alert = await raise(ws);
      await notifier({ baseDelayMs: 5, maxDelayMs: 20, attempts: 3 }).notify(alert);
      assert.equal(receiver.on('/hook/bad').length, 1);
      const log = await deliveries(alert.id);
      const of = (id: string) =>
        log.filter((d) => d.channelId === id).map((d) => [d.attempt, d.outcome, d.status]);
      assert.deepEqual(of(bad.id), [[1, 'failed', 400]]);
      assert.deepEqual(of(closed.id), [
        [1, 'failed', null],
        [2, 'failed', null],
        [3, 'failed', null],
      ]);
      const refused = log.find((d) => d.channelId === closed.id);
      assert.equal(refused?.error, 'unreachable', 'a fixed reason, not the socket error (a port scan)');
    } finally {
      receiver.respond = () => 200;
    }
  });

  test('notify returns at once; close cancels pending retries promptly', async () => {
    const ws = await workspace();
    const path = '/hook/down';
    receiver.respond = (req) => (req.path === path ? 500 : 200);
    try {
      await addChannel(
        { store, dataKey, rules: LOCAL },
        { type: 'webhook', url: receiver.url + path, workspaceId: ws },
        CLI_ACTOR,
      );
      const alert = await raise(ws);
      const n = createNotifier({
        store,
        dataKey,
        logger: SILENT,
        retry: { baseDelayMs: 30_000 },
        destinations: LOCAL.destinations,
      });
      const sent = n.notify(alert);
      assert.equal(receiver.on(path).length, 0, 'nothing is sent on the caller’s turn');
      await eventually(
        async () => (await store.listDeliveries({ alertId: alert.id })).length === 1,
        'the first attempt',
      );
      const started = Date.now();
      await n.close();
      await sent;
      assert.ok(Date.now() - started < 2000, 'close does not wait for the retry');
      assert.equal(receiver.on(path).length, 1);
      assert.equal((await store.listDeliveries({ alertId: alert.id })).length, 1);
      await n.notify(alert);
      assert.equal(receiver.on(path).length, 1, 'a closed notifier sends nothing');
    } finally {
      receiver.respond = () => 200;
    }
  });

  test('sendTest: one test alert, each channel tried once, results per channel', async () => {
    const ws = await workspace();
    const n = notifier();
    assert.deepEqual(await n.sendTest(ws), [], 'no channels, nothing sent');
    receiver.respond = (req) => (req.path === '/hook/test-down' ? 500 : 200);
    try {
      const up = await addChannel(
        { store, dataKey, rules: LOCAL },
        { type: 'webhook', url: `${receiver.url}/hook/test-up`, workspaceId: ws },
        CLI_ACTOR,
      );
      const down = await addChannel(
        { store, dataKey, rules: LOCAL },
        { type: 'webhook', url: `${receiver.url}/hook/test-down`, workspaceId: ws },
        CLI_ACTOR,
      );
      const results = await n.sendTest(ws);
      const byId = new Map(results.map((r) => [r.channelId, r]));
      assert.deepEqual(byId.get(up.id), {
        channelId: up.id,
        name: up.name,
        type: 'webhook',
        outcome: 'sent',
        reason: 'delivered',
        status: 200,
        error: null,
      });
      assert.equal(byId.get(down.id)?.outcome, 'failed');
      assert.equal(byId.get(down.id)?.reason, 'http_500');
      assert.equal(byId.get(down.id)?.error, 'HTTP 500', 'a fixed text, never the body');
      assert.equal(byId.get(down.id)?.status, 500);
      assert.equal(receiver.on('/hook/test-down').length, 1, 'no retries for a test');
      const payload = JSON.parse(receiver.on('/hook/test-up')[0]?.body ?? '{}') as {
        kind: string;
        key: unknown;
        id: string;
      };
      assert.equal(payload.kind, 'test');
      assert.equal(payload.key, null);
      const stored = await store.listAlerts({ workspaceId: ws, kind: 'test' });
      assert.deepEqual(
        stored.map((a) => a.id),
        [payload.id],
      );
      await n.sendTest(ws);
      assert.equal(
        (await store.listAlerts({ workspaceId: ws, kind: 'test' })).length,
        2,
        'each test is its own alert',
      );
    } finally {
      receiver.respond = () => 200;
    }
  });

  test('settings are sealed: the database holds no URL token, signing secret or password', async () => {
    const ws = await workspace();
    const hook = await addChannel(
      { store, dataKey, rules: LOCAL },
      { type: 'webhook', url: `${receiver.url}/hook/sealed?token=${WEBHOOK_TOKEN}`, workspaceId: ws },
      CLI_ACTOR,
    );
    await addChannel(
      { store, dataKey, rules: LOCAL },
      { type: 'slack', url: `${receiver.url}/s/T0/B0/${SLACK_TOKEN}`, workspaceId: ws },
      CLI_ACTOR,
    );
    await addChannel(
      { store, dataKey, rules: LOCAL },
      { type: 'email', url: smtpUrl(), workspaceId: ws },
      CLI_ACTOR,
    );
    const text = dataDirText(dir);
    assert.ok(text.length > 0);
    for (const secret of [
      WEBHOOK_TOKEN,
      SLACK_TOKEN,
      SMTP_PASS,
      encodeURIComponent(SMTP_PASS),
      hook.secret ?? 'x',
    ]) {
      assert.ok(!text.includes(secret), `${secret} is in the database in plaintext`);
    }
    const channels = await store.listChannels(ws);
    assert.equal(channels.length, 3);
    assert.ok(channels.every((c) => c.configSealed.startsWith('v1.')));
  });
});

// ---- the CLI -------------------------------------------------------------------------------------

describe('keygate alerts (CLI)', () => {
  const harness = createCliHarness({ tempPrefix: 'keygate-alerts-cli-' });
  after(() => harness.cleanup());

  function json<T>(result: { code: number | null; stdout: string; stderr: string }): T {
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    return JSON.parse(result.stdout) as T;
  }

  test('channels add / list / remove, test reaching all three channels, list and ack alerts', async () => {
    const dir = harness.newDataDir();
    // The receivers listen on loopback, which the operator allows in the configuration file.
    const configFile = join(dir, '..', `${basename(dir)}-loopback.yaml`);
    writeFileSync(configFile, 'alerts:\n  allowedDestinations: [127.0.0.0/8, "::1/128"]\n');
    const d = ['--data-dir', dir, '--config', configFile];
    const hookPath = `/cli/hook?token=${WEBHOOK_TOKEN}`;
    const slackPath = `/cli/services/T1/B1/${SLACK_TOKEN}`;
    const hook = json<{ id: string; secret: string; target: string }>(
      await harness.runCli([
        'alerts',
        'channels',
        'add',
        '--type',
        'webhook',
        '--url',
        receiver.url + hookPath,
        '--name',
        'ops hook',
        ...d,
        '--json',
      ]),
    );
    assert.match(hook.secret, /^whsec_/);
    assert.equal(hook.target, `${receiver.url}/cli/hook`);
    const slack = json<{ id: string; secret: null }>(
      await harness.runCli([
        'alerts',
        'channels',
        'add',
        '--type',
        'slack',
        '--url',
        receiver.url + slackPath,
        ...d,
        '--json',
      ]),
    );
    assert.equal(slack.secret, null);
    const human = await harness.runCli([
      'alerts',
      'channels',
      'add',
      '--type',
      'email',
      '--url',
      smtpUrl(),
      ...d,
    ]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(
      human.stdout,
      /^Added email channel ch_\S+ "email ops@example.com, oncall@example.com" → smtp:\/\/127\.0\.0\.1:\d+ \(workspace ws_default\)\./,
    );
    assert.doesNotMatch(human.stdout, /Signing secret/);

    const bad = await harness.runCli([
      'alerts',
      'channels',
      'add',
      '--type',
      'webhook',
      '--url',
      'http://10.0.0.1/x',
      ...d,
    ]);
    assert.equal(bad.code, 2);
    assert.match(
      bad.stderr,
      /^keygate: --url: this gateway does not send alerts to 10\.0\.0\.1 \(plain text goes only to the allowed ranges\); its operator can allow a range with alerts\.allowedDestinations\n$/,
    );

    const listed = await harness.runCli(['alerts', 'channels', 'list', ...d, '--json']);
    const table = await harness.runCli(['alerts', 'channels', 'list', ...d]);
    const channels = json<{ id: string; type: string; target: string }[]>(listed);
    assert.deepEqual(
      channels.map((c) => c.type),
      ['webhook', 'slack', 'email'],
    );
    assert.match(table.stdout, /ops hook/);
    for (const out of [listed.stdout, table.stdout]) {
      for (const secret of [
        WEBHOOK_TOKEN,
        SLACK_TOKEN,
        SMTP_PASS,
        encodeURIComponent(SMTP_PASS),
        SMTP_USER,
        hook.secret,
      ]) {
        assert.ok(!out.includes(secret), `channels list shows ${secret}:\n${out}`);
      }
    }

    const mailsBefore = smtp.mails.length;
    const sent = json<
      { channel_id: string; type: string; outcome: string; status: number | null; error: string | null }[]
    >(await harness.runCli(['alerts', 'test', ...d, '--json']));
    assert.deepEqual(
      sent.map((r) => [r.type, r.outcome, r.status, r.error]),
      [
        ['webhook', 'sent', 200, null],
        ['slack', 'sent', 200, null],
        ['email', 'sent', 250, null],
      ],
    );
    const [got] = receiver.on(hookPath);
    assert.ok(got, 'the webhook receiver got the test alert');
    assert.ok(
      verifyWebhookSignature(
        hook.secret,
        String(got.headers['x-keygate-signature']),
        got.body,
        Math.floor(Date.now() / 1000),
      ),
    );
    assert.equal((JSON.parse(got.body) as { kind: string }).kind, 'test');
    assert.equal(receiver.on(slackPath).length, 1);
    assert.equal(smtp.mails.length, mailsBefore + 1);
    assert.match(
      readable(smtp.mails[mailsBefore]?.raw ?? ''),
      /Subject: \[Keygate\] info: Test alert from Keygate/,
    );

    const testTable = await harness.runCli(['alerts', 'test', ...d]);
    assert.equal(testTable.code, 0, testTable.stderr);
    assert.match(testTable.stdout, /CHANNEL\s+TYPE\s+NAME\s+OUTCOME/);
    assert.match(testTable.stdout, /The test alert reached all 3 channel\(s\)\./);

    const alerts = json<{ id: string; kind: string; acknowledged_at: string | null; action: string }[]>(
      await harness.runCli(['alerts', 'list', ...d, '--json', '--kind', 'test']),
    );
    assert.equal(alerts.length, 2);
    assert.ok(alerts.every((a) => a.kind === 'test' && a.acknowledged_at === null && a.action.length > 0));
    const ack = await harness.runCli(['alerts', 'ack', alerts[0]?.id ?? '', ...d]);
    assert.equal(ack.code, 0, ack.stderr);
    assert.match(ack.stdout, /^Acknowledged alert alr_\S+ \(Test alert from Keygate\) at \d{4}-/);
    const open = json<{ id: string }[]>(
      await harness.runCli(['alerts', 'list', ...d, '--json', '--unacknowledged']),
    );
    assert.deepEqual(
      open.map((a) => a.id),
      [alerts[1]?.id],
    );
    const missing = await harness.runCli(['alerts', 'ack', 'alr_nope', ...d]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^keygate: no alert with id alr_nope/);

    // A failing channel makes `alerts test` exit 1 after printing every result.
    const dead = json<{ id: string }>(
      await harness.runCli([
        'alerts',
        'channels',
        'add',
        '--type',
        'webhook',
        '--url',
        'http://127.0.0.1:9/dead',
        ...d,
        '--json',
      ]),
    );
    const failing = await harness.runCli(['alerts', 'test', ...d]);
    assert.equal(failing.code, 1);
    assert.match(failing.stdout, /failed/);
    assert.match(failing.stderr, /^keygate: 1 of 4 channels failed/);
    const removed = await harness.runCli(['alerts', 'channels', 'remove', dead.id, ...d]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal(
      json<unknown[]>(await harness.runCli(['alerts', 'channels', 'list', ...d, '--json'])).length,
      3,
    );

    const text = dataDirText(dir);
    for (const secret of [
      WEBHOOK_TOKEN,
      SLACK_TOKEN,
      SMTP_PASS,
      encodeURIComponent(SMTP_PASS),
      hook.secret,
    ]) {
      assert.ok(!text.includes(secret), `${secret} is in the database in plaintext`);
    }
  });

  test('through KEYGATE_URL: add a channel and send a test alert via the management API', async () => {
    const t = await startTestGateway({ configure: allowLoopback });
    try {
      const admin = await t.createKey('operator', undefined, { scopes: ['admin'] });
      const caFile = join(t.dataDir, 'ca-for-cli.pem');
      writeFileSync(caFile, t.ca ?? '');
      const env = { ...baseEnv(), KEYGATE_URL: t.url, KEYGATE_ADMIN_KEY: admin.key, KEYGATE_CA_FILE: caFile };
      const path = '/remote/hook';
      const hook = json<{ id: string; secret: string; workspace_id: string }>(
        await harness.runCli(
          ['alerts', 'channels', 'add', '--type', 'webhook', '--url', receiver.url + path, '--json'],
          env,
        ),
      );
      assert.equal(hook.workspace_id, DEFAULT_WORKSPACE_ID);
      const bad = await harness.runCli(
        ['alerts', 'channels', 'add', '--type', 'email', '--url', 'smtp://x.example?from=a@example.com'],
        env,
      );
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /^keygate: --url: the SMTP URL needs &to=/);
      const results = json<{ channel_id: string; outcome: string }[]>(
        await harness.runCli(['alerts', 'test', '--json'], env),
      );
      assert.deepEqual(results, [
        {
          channel_id: hook.id,
          name: `webhook ${new URL(receiver.url).host}`,
          type: 'webhook',
          outcome: 'sent',
          reason: 'delivered',
          status: 200,
          error: null,
        },
      ]);
      const [got] = receiver.on(path);
      assert.ok(got);
      assert.ok(
        verifyWebhookSignature(
          hook.secret,
          String(got.headers['x-keygate-signature']),
          got.body,
          Math.floor(Date.now() / 1000),
        ),
      );
      const alerts = json<{ id: string }[]>(await harness.runCli(['alerts', 'list', '--json'], env));
      assert.equal(alerts.length, 1);
      const ack = await harness.runCli(['alerts', 'ack', alerts[0]?.id ?? ''], env);
      assert.equal(ack.code, 0, ack.stderr);
      const listed = await harness.runCli(['alerts', 'channels', 'list', '--json'], env);
      assert.ok(!listed.stdout.includes(hook.secret));
      const removed = await harness.runCli(['alerts', 'channels', 'remove', hook.id], env);
      assert.equal(removed.code, 0, removed.stderr);
      const none = await harness.runCli(['alerts', 'test'], env);
      assert.equal(none.code, 1);
      assert.match(none.stderr, /^keygate: no alert channels to test/);
      for (const r of [hook, results, alerts]) assert.doesNotMatch(JSON.stringify(r), ANY_KEY_RE);
    } finally {
      await t.close();
    }
  });
});

// ---- the management API --------------------------------------------------------------------------

describe('management API', () => {
  let t: TestGateway;
  let admin: string;

  before(async () => {
    t = await startTestGateway({ configure: allowLoopback });
    setGlobalDispatcher(t.dispatcher);
    admin = (await t.createKey('operator', undefined, { scopes: ['admin'] })).key;
    await t.gateway.store.createWorkspace(
      { id: 'ws_other', name: 'Other', createdAt: Date.now() },
      CLI_ACTOR,
    );
  });
  after(async () => {
    await t.close();
  });

  async function call(method: string, path: string, key: string, body?: unknown) {
    const res = await fetch(t.url + path, {
      method,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, text, json: JSON.parse(text) as unknown };
  }

  test('channels: create (the secret once), list without secrets, test, alerts, acknowledge, delete', async () => {
    const path = `/api/hook?token=${WEBHOOK_TOKEN}`;
    const created = await call('POST', '/admin/v1/alerts/channels', admin, {
      type: 'webhook',
      url: receiver.url + path,
      name: 'api hook',
    });
    assert.equal(created.status, 201, created.text);
    const channel = S.CreatedAlertChannel.parse(created.json);
    assert.match(channel.secret ?? '', /^whsec_/);
    assert.equal(channel.target, `${receiver.url}/api/hook`);
    const given = S.CreatedAlertChannel.parse(
      (await call('POST', '/admin/v1/alerts/channels', admin, { type: 'email', url: smtpUrl() })).json,
    );
    assert.equal(given.secret, null);

    const list = await call('GET', '/admin/v1/alerts/channels', admin);
    assert.equal(list.status, 200);
    assert.deepEqual(
      S.AlertChannelList.parse(list.json).data.map((c) => c.id),
      [channel.id, given.id],
    );
    for (const secret of [channel.secret ?? 'x', WEBHOOK_TOKEN, SMTP_PASS, encodeURIComponent(SMTP_PASS)]) {
      assert.ok(!list.text.includes(secret), `the channel list shows ${secret}`);
    }

    const mails = smtp.mails.length;
    const tested = await call('POST', '/admin/v1/alerts/test', admin);
    assert.equal(tested.status, 200, tested.text);
    assert.deepEqual(
      S.TestAlertResult.parse(tested.json).data.map((r) => [r.channel_id, r.outcome, r.status]),
      [
        [channel.id, 'sent', 200],
        [given.id, 'sent', 250],
      ],
    );
    const [got] = receiver.on(path);
    assert.ok(got);
    assert.ok(
      verifyWebhookSignature(
        channel.secret ?? '',
        String(got.headers['x-keygate-signature']),
        got.body,
        Math.floor(Date.now() / 1000),
      ),
    );
    assert.equal(smtp.mails.length, mails + 1);

    const alerts = S.AlertList.parse(
      (await call('GET', '/admin/v1/alerts?kind=test&unacknowledged=true', admin)).json,
    );
    assert.equal(alerts.data.length, 1);
    const alertId = alerts.data[0]?.id ?? '';
    assert.equal((JSON.parse(got.body) as { id: string }).id, alertId);
    const acked = await call('POST', `/admin/v1/alerts/${alertId}/acknowledge`, admin);
    assert.equal(acked.status, 200, acked.text);
    assert.ok(S.Alert.parse(acked.json).acknowledged_at);
    assert.equal(
      S.AlertList.parse((await call('GET', '/admin/v1/alerts?unacknowledged=true', admin)).json).data.length,
      0,
    );
    const audit = await call('GET', `/admin/v1/audit?target_id=${alertId}`, admin);
    assert.match(audit.text, /alert\.acknowledge/);

    assert.equal((await call('DELETE', `/admin/v1/alerts/channels/${given.id}`, admin)).status, 200);
    assert.equal((await call('DELETE', `/admin/v1/alerts/channels/${given.id}`, admin)).status, 404);
    assert.equal(t.gateway.notifier !== undefined, true, 'the running gateway exports its notifier');
  });

  test('validation names the field; other workspaces are 404', async () => {
    const bad = await call('POST', '/admin/v1/alerts/channels', admin, {
      type: 'webhook',
      url: 'http://10.9.9.9/x',
    });
    assert.equal(bad.status, 422, bad.text);
    const issue = S.ValidationError.parse(bad.json).detail[0];
    assert.deepEqual(issue?.loc, ['body', 'url']);
    assert.match(issue?.msg ?? '', /plain text goes only to the allowed ranges/);
    const unknown = await call('POST', '/admin/v1/alerts/channels', admin, {
      type: 'pager',
      url: 'https://x.example',
    });
    assert.equal(unknown.status, 422);
    assert.equal((await call('GET', '/admin/v1/alerts?unacknowledged=maybe', admin)).status, 422);

    const outsider = (
      await createKey(
        { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix },
        { name: 'other admin', scopes: ['admin'], workspaceId: 'ws_other' },
      )
    ).key;
    const mine = S.CreatedAlertChannel.parse(
      (
        await call('POST', '/admin/v1/alerts/channels', admin, {
          type: 'webhook',
          url: `${receiver.url}/iso`,
        })
      ).json,
    );
    const { alert } = await t.gateway.store.raiseAlert(
      {
        id: newId('alr'),
        workspaceId: DEFAULT_WORKSPACE_ID,
        kind: 'new_network',
        fingerprint: newId('alr'),
        keyId: null,
        severity: 'warning',
        title: 'x',
        message: 'y',
        details: {},
        at: Date.now(),
      },
      0,
    );
    for (const [method, path, body] of [
      ['DELETE', `/admin/v1/alerts/channels/${mine.id}`, undefined],
      ['POST', `/admin/v1/alerts/${alert.id}/acknowledge`, {}],
      ['GET', `/admin/v1/alerts?workspace_id=${DEFAULT_WORKSPACE_ID}`, undefined],
      ['GET', `/admin/v1/alerts/channels?workspace_id=${DEFAULT_WORKSPACE_ID}`, undefined],
      [
        'POST',
        '/admin/v1/alerts/channels',
        { type: 'webhook', url: `${receiver.url}/x`, workspace_id: DEFAULT_WORKSPACE_ID },
      ],
      ['POST', '/admin/v1/alerts/test', { workspace_id: DEFAULT_WORKSPACE_ID }],
    ] as const) {
      const res = await call(method, path, outsider, body);
      assert.equal(res.status, 404, `${method} ${path}: ${res.text}`);
    }
    const theirs = S.AlertChannelList.parse((await call('GET', '/admin/v1/alerts/channels', outsider)).json);
    assert.deepEqual(theirs.data, []);
    const theirAlerts = S.AlertList.parse((await call('GET', '/admin/v1/alerts', outsider)).json);
    assert.ok(theirAlerts.data.every((a) => a.workspace_id === 'ws_other'));
  });
});
