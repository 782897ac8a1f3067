/**
 * The five alert kinds, each caused by real requests through a running gateway (listening on
 * 127.0.0.1 and ::1), reach all three kinds of channel: a signed webhook, a Slack-format receiver
 * and an SMTP server. Each delivery names the key (by name and id) and none holds anything shaped
 * like a key's secret.
 *
 * - usage_spike: a new key makes a burst of requests (the workspace's floor lowered to 5), then
 *   the engine evaluates its rules (`tick()`);
 * - budget_threshold: a key with a small daily budget uses more than half of it, then `tick()`;
 * - new_network: a key used from 127.0.0.1, then from ::1;
 * - auth_failures: a revoked key still tried (named), and a burst of bad keys from one address;
 * - key_expiring: a key created to expire in 5 days; the gateway's periodic sweep (every 200 ms
 *   here) raises the 14-day reminder.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { request } from 'undici';
import { verifyWebhookSignature } from '../../src/alerts/notifier.ts';
import { addChannel, channelRules } from '../../src/alerts/service.ts';
import { createKey } from '../../src/keys/service.ts';
import { utcPeriods } from '../../src/limits/period.ts';
import { type AlertKind, CLI_ACTOR, DEFAULT_WORKSPACE_ID } from '../../src/store/types.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { eventually } from '../support/wait.ts';

const KEY_SHAPE = /kg_[0-9A-Za-z]{38}/;
const SECRET = 'whsec_five-kinds-signing-secret-0123';
const SLACK_PATH = '/slack/services/T0FIVE/B0KINDS/slacktoken0123456789';
const HOOK_PATH = '/hooks/keygate';
const DEADLINE_MS = 15_000;

// ---- receivers -----------------------------------------------------------------------------------

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

interface Mail {
  raw: string;
  /** Headers unfolded, quoted-printable and base64 parts decoded: what a reader sees. */
  text: string;
}

const received: Received[] = [];
const mails: Mail[] = [];
let http: Server;
let httpBase: string;
let smtp: SMTPServer;
let smtpPort: number;
let t: TestGateway;
let v4: string;
let v6: string;

/** RFC 2047 encoded words (`=?UTF-8?Q?…?=`, `=?UTF-8?B?…?=`) of a header, decoded. */
function decodeWords(header: string): string {
  return header
    .replace(/(\?=)\s+(?==\?)/g, '$1')
    .replace(/=\?[^?]+\?([QqBb])\?([^?]*)\?=/g, (_, encoding: string, text: string) =>
      encoding.toUpperCase() === 'B'
        ? Buffer.from(text, 'base64').toString('utf8')
        : Buffer.from(
            text
              .replaceAll('_', ' ')
              .replace(/=([0-9A-Fa-f]{2})/g, (_m, hex: string) =>
                String.fromCharCode(Number.parseInt(hex, 16)),
              ),
            'latin1',
          ).toString('utf8'),
    );
}

/** A raw email as a reader sees it: headers unfolded and decoded, each part's transfer encoding undone. */
function readable(raw: string): string {
  const split = raw.indexOf('\r\n\r\n');
  const head = decodeWords(raw.slice(0, split).replace(/\r\n[ \t]+/g, ' '));
  const body = raw
    .slice(split)
    // Base64 parts: the lines after a "Content-Transfer-Encoding: base64" header and a blank line.
    .replace(
      /(Content-Transfer-Encoding: base64\r\n(?:[^\r\n]+\r\n)*\r\n)([A-Za-z0-9+/=\r\n]+)/gi,
      (_, part: string, data: string) =>
        part + Buffer.from(data.replace(/\s+/g, ''), 'base64').toString('utf8'),
    )
    // Quoted-printable: soft line breaks and escaped bytes.
    .replace(/=\r\n/g, '')
    .replace(/(?:=[0-9A-F]{2})+/g, (bytes) => Buffer.from(bytes.replaceAll('=', ''), 'hex').toString('utf8'));
  return head + body;
}

/** The shared poll with this file's deadline (a delivery crosses HTTP and SMTP). */
const until = <T>(probe: () => T | Promise<T>, what: string) => eventually(probe, what, DEADLINE_MS, 25);

before(async () => {
  http = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      received.push({
        path: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  httpBase = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;

  smtp = new SMTPServer({
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    closeTimeout: 1000,
    onData(stream, _session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        mails.push({ raw, text: readable(raw) });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => smtp.listen(0, '127.0.0.1', () => resolve()));
  smtpPort = (smtp.server.address() as AddressInfo).port;

  t = await startTestGateway({
    configure: (c) => {
      c.server.host = '::'; // both 127.0.0.1 and ::1
      c.auth.expirySweepMs = 200; // expiry reminders swept quickly
      c.auth.failuresPerMinute = 10_000; // the failed-authentication limiter stays out of the way
      c.alerts.allowedDestinations = ['127.0.0.0/8', '::1/128']; // the receivers listen on loopback
    },
  });
  v4 = `https://127.0.0.1:${t.gateway.port}`;
  v6 = `https://[::1]:${t.gateway.port}`;

  const deps = {
    store: t.gateway.store,
    dataKey: t.gateway.secrets.dataKey,
    rules: channelRules(t.config.alerts),
  };
  const ws = DEFAULT_WORKSPACE_ID;
  await addChannel(
    deps,
    { type: 'webhook', url: httpBase + HOOK_PATH, secret: SECRET, workspaceId: ws },
    CLI_ACTOR,
  );
  await addChannel(deps, { type: 'slack', url: httpBase + SLACK_PATH, workspaceId: ws }, CLI_ACTOR);
  await addChannel(
    deps,
    {
      type: 'email',
      url: `smtp://127.0.0.1:${smtpPort}?from=keygate@example.com&to=ops@example.com`,
      workspaceId: ws,
    },
    CLI_ACTOR,
  );
  // Floors low enough for a test to cross.
  const now = Date.now();
  await t.gateway.store.setRuleSettings(ws, 'usage_spike', { minRequests: 5 }, CLI_ACTOR, now);
  await t.gateway.store.setRuleSettings(ws, 'auth_failures', { failuresPerMinute: 10 }, CLI_ACTOR, now);
  t.gateway.alerts.forgetSettings(ws);
});

after(async () => {
  await t?.close();
  await new Promise<void>((resolve) => {
    http.closeAllConnections();
    http.close(() => resolve());
  });
  await new Promise<void>((resolve) => smtp.close(() => resolve()));
});

// ---- helpers -------------------------------------------------------------------------------------

async function chat(base: string, key: string, body = chatBody()): Promise<number> {
  const res = await request(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: bearer(key),
    body,
    dispatcher: t.dispatcher,
  });
  await res.body.dump();
  return res.statusCode;
}

interface Delivered {
  payload: Record<string, unknown>;
  slack: { text: string; blocks: unknown[] };
  mail: Mail;
}

/**
 * Waits until an alert of `kind` about `key` (null: about no key) has reached the webhook (its
 * signature checked), the Slack receiver and the SMTP server; the three are matched by alert id.
 */
async function delivered(kind: AlertKind, key: { id: string; name: string } | null): Promise<Delivered> {
  const what = `a ${kind} alert about ${key === null ? 'no key' : `"${key.name}"`}`;
  const hook = await until(() => {
    for (const r of received) {
      if (r.path !== HOOK_PATH) continue;
      const payload = JSON.parse(r.body) as Record<string, unknown>;
      const about = payload.key as { id: string } | null;
      if (payload.kind === kind && (key === null ? about === null : about?.id === key.id))
        return { r, payload };
    }
    return undefined;
  }, `${what} at the webhook`);
  const signature = hook.r.headers['x-keygate-signature'];
  assert.ok(
    verifyWebhookSignature(
      SECRET,
      typeof signature === 'string' ? signature : undefined,
      hook.r.body,
      Math.floor(Date.now() / 1000),
    ),
    `the webhook delivery of ${what} is signed with the channel's secret`,
  );
  assert.equal(hook.r.headers['x-keygate-event-id'], hook.payload.id);
  const id = String(hook.payload.id);
  const slack = await until(() => {
    for (const r of received) {
      if (r.path !== SLACK_PATH || !r.body.includes(`Keygate alert \`${id}\``)) continue;
      return JSON.parse(r.body) as { text: string; blocks: unknown[] };
    }
    return undefined;
  }, `${what} at the Slack receiver`);
  const mail = await until(
    () => mails.find((m) => new RegExp(`^x-keygate-event-id: ${id}$`, 'im').test(m.text)),
    `${what} by email`,
  );
  return { payload: hook.payload, slack, mail };
}

/** What every receiver got about a key names it, by name and id. */
function assertNamesKey(got: Delivered, key: { id: string; name: string }): void {
  assert.deepEqual(got.payload.key, { id: key.id, name: key.name });
  assert.ok(got.slack.text.includes(key.name), `Slack text names "${key.name}": ${got.slack.text}`);
  const blocks = JSON.stringify(got.slack.blocks);
  assert.ok(blocks.includes(`*Key:* ${key.name} \`${key.id}\``), `Slack blocks name the key: ${blocks}`);
  assert.match(got.mail.text, /^Subject: \[Keygate\] (?:info|warning|critical): /m);
  const subject = /^Subject: (.*)$/m.exec(got.mail.text)?.[1] ?? '';
  assert.ok(subject.includes(key.name), `the subject names "${key.name}": ${subject}`);
  assert.ok(got.mail.text.includes(`Key: "${key.name}" (${key.id})`), 'the email body names the key');
  assert.ok(got.mail.text.includes(`Kind: ${String(got.payload.kind)}`));
}

// ---- the five kinds ------------------------------------------------------------------------------

test('usage_spike: a new key makes a burst of requests', async () => {
  const key = { ...(await t.createKey('spike key')), name: 'spike key' };
  for (let i = 0; i < 6; i++) assert.equal(await chat(v4, key.key), 200);
  await t.gateway.alerts.tick();
  const got = await delivered('usage_spike', key);
  assertNamesKey(got, key);
  assert.equal(got.payload.severity, 'warning');
  assert.ok((got.payload.details as { requests: number }).requests >= 5);
});

test('budget_threshold: a key with a small daily budget uses more than half of it', async () => {
  const created = await t.createKey('budget key', undefined, { budget: { day: 200 } });
  const key = { ...created, name: 'budget key' };
  const since = utcPeriods(Date.now()).dayStart;
  // 50 words: about 55 tokens used per request, against an admission estimate of ~85 (bytes / 4 +
  // max_tokens), so that the budget admits requests until more than half of it is used.
  const body = chatBody({ max_tokens: 5, messages: [{ role: 'user', content: 'word '.repeat(50) }] });
  // Until the usage recorded (the queue flushes every 50 ms) passes 50%; the budget may refuse some.
  await until(async () => {
    if ((await t.gateway.store.tokensUsed({ keyId: key.id, since })) >= 100) return true;
    await chat(v4, key.key, body);
    return undefined;
  }, 'the budget key to use 100 tokens');
  await t.gateway.alerts.tick();
  const got = await delivered('budget_threshold', key);
  assertNamesKey(got, key);
  const details = got.payload.details as { period: string; budget: number; threshold: number };
  assert.equal(details.period, 'day');
  assert.equal(details.budget, 200);
  assert.ok(details.threshold >= 50);
});

test('new_network: a key used from 127.0.0.1, then from ::1', async () => {
  const key = { ...(await t.createKey('roaming key')), name: 'roaming key' };
  assert.equal(await chat(v4, key.key), 200);
  await t.gateway.alerts.settle(); // its first network is recorded
  assert.equal(await chat(v6, key.key), 200);
  await t.gateway.alerts.settle();
  const got = await delivered('new_network', key);
  assertNamesKey(got, key);
  assert.deepEqual(got.payload.details, { ip: '::1', network: '0:0:0::/48' });
});

test('auth_failures: a revoked key still tried, and a burst of bad keys from one address', async () => {
  const key = { ...(await t.createKey('revoked key')), name: 'revoked key' };
  assert.equal(await chat(v4, key.key), 200);
  await t.gateway.store.revokeKey(key.id, Date.now(), CLI_ACTOR);
  await t.gateway.verifier.syncChanges();
  assert.equal(await chat(v4, key.key), 401);
  const named = await delivered('auth_failures', key);
  assertNamesKey(named, key);
  assert.equal(named.payload.severity, 'critical');
  assert.match(String(named.payload.message), /revoked/);

  // Bad keys, shaped like real ones: counted per address and minute. Should a minute end in the
  // middle of a round, the next round is whole.
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 12; i++) {
      const bad = `kg_${String(round * 100 + i).padStart(38, 'Z')}`;
      assert.equal(await chat(v4, bad), 401);
    }
    await t.gateway.alerts.tick();
    const bursts = await t.gateway.store.listAlerts({ kind: 'auth_failures' });
    if (bursts.some((a) => a.keyId === null)) break;
  }
  const burst = await delivered('auth_failures', null);
  assert.equal(burst.payload.key, null);
  assert.match(String(burst.payload.title), /^Burst of failed authentications from 127\.0\.0\.1$/);
  assert.match(burst.mail.text, /^Subject: \[Keygate\] warning: Burst of failed authentications/m);
  assert.ok(burst.mail.text.includes('Key: none'));
  assert.ok(JSON.stringify(burst.slack.blocks).includes('*Key:* none'));
});

test('key_expiring: the periodic sweep reminds of a key that expires within 14 days', async () => {
  // Made 10 days ago for 15 days: it crossed the 14-day reminder (a key made inside it would not).
  const made = await createKey(
    {
      store: t.gateway.store,
      pepper: t.gateway.secrets.pepper,
      prefix: t.config.keys.prefix,
      now: Date.now() - 10 * 86_400_000,
    },
    { name: 'expiring key', expiresInMs: 15 * 86_400_000 },
  );
  const key = { id: made.record.id, key: made.key, name: 'expiring key' };
  const got = await delivered('key_expiring', key);
  assertNamesKey(got, key);
  assert.match(String(got.payload.title), /^Key "expiring key" expires in 5 days$/);
});

test('all five kinds reached all three receivers, and nothing anywhere is shaped like a key', async () => {
  const kinds = new Set(
    received.filter((r) => r.path === HOOK_PATH).map((r) => (JSON.parse(r.body) as { kind: string }).kind),
  );
  assert.deepEqual([...kinds].sort(), [
    'auth_failures',
    'budget_threshold',
    'key_expiring',
    'new_network',
    'usage_spike',
  ]);
  assert.ok(received.filter((r) => r.path === SLACK_PATH).length >= 6);
  assert.ok(mails.length >= 6);
  for (const r of received) assert.doesNotMatch(r.body, KEY_SHAPE, `a delivery to ${r.path} holds a key`);
  for (const m of mails) {
    assert.doesNotMatch(m.raw, KEY_SHAPE, 'an email holds a key');
    assert.doesNotMatch(m.text, KEY_SHAPE, 'an email holds a key');
  }
  // Every delivery of every alert is recorded as sent. A receiver may hold a delivery a moment
  // before the notifier records its outcome, so each alert is given until the deadline.
  for (const alert of await t.gateway.store.listAlerts({ limit: 100 })) {
    const sent = async () =>
      (await t.gateway.store.listDeliveries({ alertId: alert.id })).filter((d) => d.outcome === 'sent')
        .length;
    await until(
      async () => ((await sent()) >= 3 ? true : undefined),
      `three sent deliveries of ${alert.kind}`,
    );
    assert.equal(await sent(), 3, `${alert.kind}: ${alert.title}`);
  }
});
