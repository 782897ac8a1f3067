/**
 * Alerts from end to end: real traffic through the gateway raises alerts that reach a signed
 * webhook, stored and listed, without a secret anywhere.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import { verifyWebhookSignature } from '../../src/alerts/notifier.ts';
import { addChannel, channelRules } from '../../src/alerts/service.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { eventually } from '../support/wait.ts';

interface Received {
  body: string;
  signature: string | undefined;
}

let t: TestGateway;
let receiver: Server;
let receiverUrl: string;
const received: Received[] = [];
const SECRET = 'whsec_end-to-end-secret-123';

before(async () => {
  receiver = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      body += chunk;
    });
    req.on('end', () => {
      const header = req.headers['x-keygate-signature'];
      received.push({ body, signature: typeof header === 'string' ? header : undefined });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const address = receiver.address();
  receiverUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/hooks/keygate`;
  t = await startTestGateway({
    configure: (c) => {
      c.auth.failuresPerMinute = 10_000;
      c.alerts.allowedDestinations = ['127.0.0.0/8']; // the receiver listens on loopback
    },
  });
  await addChannel(
    { store: t.gateway.store, dataKey: t.gateway.secrets.dataKey, rules: channelRules(t.config.alerts) },
    { type: 'webhook', url: receiverUrl, secret: SECRET, workspaceId: 'ws_default' },
    CLI_ACTOR,
  );
});
after(async () => {
  await t.close();
  await new Promise<void>((resolve) => receiver.close(() => resolve()));
});

/** The first alert of `kind` (and `which`, if given) that reached the webhook, its signature checked. */
async function waitFor(
  kind: string,
  which: (payload: Record<string, unknown>) => boolean = () => true,
): Promise<Record<string, unknown>> {
  const { r, payload } = await eventually(() => {
    for (const r of received) {
      const payload = JSON.parse(r.body) as Record<string, unknown>;
      if (payload.kind === kind && which(payload)) return { r, payload };
    }
    return undefined;
  }, `a ${kind} alert at the webhook`);
  assert.ok(verifyWebhookSignature(SECRET, r.signature, r.body, Math.floor(Date.now() / 1000)), 'signed');
  return payload;
}

test('a revoked key still being tried raises a critical alert that reaches the webhook, signed', async () => {
  const { id, key } = await t.createKey('leaked key');
  assert.equal(
    (await t.call('/v1/chat/completions', { method: 'POST', headers: bearer(key), body: chatBody() })).status,
    200,
  );
  await t.gateway.store.revokeKey(id, Date.now(), CLI_ACTOR);
  // Tried until the revocation has reached the server (a 200 before it is no failure).
  await eventually(async () => {
    await t.gateway.verifier.syncChanges();
    const res = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody(),
    });
    return res.status === 401;
  }, 'the revoked key to be refused');
  const payload = await waitFor('auth_failures');
  assert.equal(payload.severity, 'critical');
  assert.deepEqual(payload.key, { id, name: 'leaked key' });
  assert.match(String(payload.message), /revoked/);
  const stored = await t.gateway.store.listAlerts({ keyId: id });
  assert.equal(stored.length, 1);
  // The delivery is stored once the webhook has answered, which may follow its receipt above.
  const deliveries = await eventually(async () => {
    const list = await t.gateway.store.listDeliveries({ alertId: stored[0]?.id ?? '' });
    return list.length > 0 ? list : undefined;
  }, 'the delivery to be recorded');
  assert.equal(deliveries[0]?.outcome, 'sent');
  // The delivery log through the management API.
  const { key: admin } = await t.createKey('alert reader', undefined, { scopes: ['admin'] });
  const detail = await t.call(`/admin/v1/alerts/${stored[0]?.id}`, { headers: bearer(admin) });
  assert.equal(detail.status, 200, detail.text);
  const body = detail.json() as {
    alert: { id: string };
    deliveries: { outcome: string; status: number; attempt: number }[];
  };
  assert.equal(body.alert.id, stored[0]?.id);
  assert.deepEqual(
    body.deliveries.map((d) => [d.outcome, d.status, d.attempt]),
    [['sent', 204, 1]],
  );
  // A literal route still wins over the alert id parameter.
  assert.equal((await t.call('/admin/v1/alerts/channels', { headers: bearer(admin) })).status, 200);
});

test('a burst of bad keys from one address raises one alert per cooldown', async () => {
  for (let i = 0; i < 25; i++) {
    await t.call('/v1/models', { headers: { authorization: `Bearer kg_${String(i).padStart(38, 'B')}` } });
  }
  await t.gateway.alerts.tick();
  await t.gateway.alerts.tick();
  // This burst's alert, not the revoked key's of the test above.
  const payload = await waitFor('auth_failures', (p) => String(p.title).startsWith('Burst'));
  assert.ok(payload);
  const bursts = (await t.gateway.store.listAlerts({ kind: 'auth_failures' })).filter((a) =>
    a.title.startsWith('Burst'),
  );
  assert.equal(bursts.length, 1);
  assert.equal(bursts[0]?.occurrences, 2, 'the second tick folded into the first alert');
});

test('a key over 80% of its budget raises a budget alert', async () => {
  const { id, key } = await t.createKey('budget watch', undefined, { budget: { day: 200 } });
  // 50 words: about 55 tokens used per request against an admission estimate of ~85 (bytes / 4 +
  // max_tokens): three requests are admitted and pass 80% of the budget.
  const body = chatBody({ max_tokens: 5, messages: [{ role: 'user', content: 'word '.repeat(50) }] });
  const statuses: number[] = [];
  for (let i = 0; i < 4; i++)
    statuses.push(
      (await t.call('/v1/chat/completions', { method: 'POST', headers: bearer(key), body })).status,
    );
  assert.deepEqual(statuses, [200, 200, 200, 429], 'the fourth would overshoot the budget');
  // The usage queue flushes every 50 ms: wait for it to hold the three requests.
  const since = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  await eventually(
    async () => (await t.gateway.store.tokensUsed({ keyId: id, since })) >= 160,
    'the usage of the three requests to be recorded',
  );
  await t.gateway.alerts.tick();
  const payload = await waitFor('budget_threshold');
  assert.equal((payload.key as { id: string }).id, id);
  for (const r of received) assert.doesNotMatch(r.body, /kg_[0-9A-Za-z]{38}/, 'never a secret');
});
