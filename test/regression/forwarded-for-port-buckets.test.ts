/**
 * Issue 12, item 11: behind a trusted proxy that writes `ip:port` X-Forwarded-For hops (Azure
 * Application Gateway does), each port was a client of its own: 100 bad keys from one address got
 * no 429 and raised no alert. The port is dropped (IPv4 `a.b.c.d:port`, IPv6 `[addr]:port`), so
 * the failure limiter and the auth_failures alert see one client.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

let t: TestGateway;

before(async () => {
  t = await startTestGateway({
    configure: (config) => {
      config.server.trustedProxies = ['127.0.0.1/32', '::1/128'];
    },
  });
});
after(async () => {
  await t.close();
});

/** 100 unknown keys from one client, each through the proxy from another source port. */
async function badKeysFrom(hop: (port: number) => string): Promise<{ status: number; code: unknown }[]> {
  const results: { status: number; code: unknown }[] = [];
  for (let i = 0; i < 100; i++) {
    const res = await t.call('/v1/models', {
      headers: {
        authorization: `Bearer kg_${'A'.repeat(32)}${String(i).padStart(6, '0')}`,
        'x-forwarded-for': `198.51.100.250, ${hop(40_000 + i)}`,
      },
    });
    results.push({ status: res.status, code: (res.json() as { code?: unknown }).code });
  }
  return results;
}

function assertLimited(results: { status: number; code: unknown }[], limit: number): void {
  assert.deepEqual(
    results.slice(0, limit).map((r) => r.status),
    Array(limit).fill(401),
  );
  const refused = results.slice(limit);
  assert.deepEqual(
    refused.map((r) => [r.status, r.code]),
    Array(refused.length).fill([429, 'too_many_auth_failures']),
    'past the limit the address gets 429, whatever port it came from',
  );
}

test('IPv4 `address:port` hops: one client, limited after 30 failures, and an alert', async () => {
  assertLimited(await badKeysFrom((port) => `203.0.113.7:${port}`), t.config.auth.failuresPerMinute);
  await t.gateway.alerts.tick();
  const alerts = await t.gateway.store.listAlerts({ kind: 'auth_failures' });
  const burst = alerts.find((a) => a.details.ip === '203.0.113.7');
  assert.ok(burst, `an auth_failures alert for 203.0.113.7: ${JSON.stringify(alerts.map((a) => a.details))}`);
  assert.ok(
    alerts.every((a) => !String(a.details.ip).includes(':4')),
    'no alert names an address with a port',
  );
});

test('IPv6 `[address]:port` hops: one client too', async () => {
  assertLimited(await badKeysFrom((port) => `[2001:db8::7]:${port}`), t.config.auth.failuresPerMinute);
  // Its address, not the hop's text, is what the log (and an alert) names.
  const lines = t.logLines.filter((l) => l.includes('2001:db8::7'));
  assert.ok(lines.length >= 100, `${lines.length} log lines for the client`);
  assert.ok(
    lines.every((l) => l.includes('"ip":"2001:db8::7"')),
    'the address, without brackets or port',
  );
});

test('the access log names the client without its port', () => {
  const lines = t.logLines.filter((l) => l.includes('"ip":"203.0.113.7'));
  assert.ok(lines.length >= 100, `${lines.length} log lines for the client`);
  assert.ok(
    lines.every((l) => l.includes('"ip":"203.0.113.7"')),
    'no port in the logged address',
  );
});
