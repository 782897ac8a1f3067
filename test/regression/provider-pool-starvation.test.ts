/**
 * Regression (issue 13, item 2): one undici pool of 128 connections to the provider, first come
 * first served. 300 slow requests (or 2,000 open streams) of one key held every connection;
 * another key's request waited > 15 s or never got its head, and /readyz stayed ready. Now one key
 * holds at most its share of the connections (429 beyond it), a request waits for a connection at
 * most upstream.queueTimeoutMs (then 503 with Retry-After), and saturation shows in /readyz and
 * /metrics.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { parseExposition, sampleValue } from '../support/prometheus.ts';
import { usageRows } from '../support/usage-rows.ts';
import { eventually, within } from '../support/wait.ts';

const CONNECTIONS = 8;
const QUEUE_TIMEOUT_MS = 400;
let t: TestGateway;

before(async () => {
  t = await startTestGateway({
    configure: (config) => {
      config.upstream.connections = CONNECTIONS;
      Object.assign(config.upstream, { queueTimeoutMs: QUEUE_TIMEOUT_MS, keySharePercent: 50 });
    },
  });
});
after(async () => {
  t.stub.release();
  await t.close();
});

/** Starts a request whose provider answer waits for `stub.release()`; resolves with its status. */
function held(key: string, stream = false): Promise<number> {
  return request(`${t.url}/v1/chat/completions`, {
    method: 'POST',
    headers: bearer(key),
    body: chatBody({ model: stream ? 'stub-hold-stream' : 'stub-hold', stream }),
    dispatcher: t.dispatcher,
  }).then(async (res) => {
    await res.body.text().catch(() => '');
    return res.statusCode;
  });
}

async function readyz(): Promise<{ status: number; body: { checks: Record<string, unknown> } }> {
  const res = await t.call('/readyz');
  return { status: res.status, body: res.json() as { checks: Record<string, unknown> } };
}

test('one key holding slow requests and open streams cannot starve another key', async () => {
  const a = await t.createKey('greedy');
  const b = await t.createKey('modest');
  // Key A: slow requests and open streams, far more than the pool has connections.
  let settled = 0;
  const greedy = [
    ...Array.from({ length: 10 }, () => held(a.key)),
    ...Array.from({ length: 10 }, () => held(a.key, true)),
  ].map((p) => p.finally(() => settled++));
  // Every one of A's requests has reached the gateway: held by the provider, or refused.
  await eventually(
    () => t.stub.held === CONNECTIONS / 2 && settled === 20 - CONNECTIONS / 2,
    () => `key A holding its share (${t.stub.held} held, ${settled} answered)`,
  );
  // B gets its answer promptly: its request does not queue behind A's.
  const started = performance.now();
  const res = await within(
    t.call('/v1/chat/completions', { method: 'POST', headers: bearer(b.key), body: chatBody() }),
    3000,
    "key B's answer",
  );
  assert.equal(res.status, 200, res.text);
  const waitedMs = performance.now() - started;
  assert.ok(waitedMs < 2000, `key B waited ${waitedMs} ms`);
  // A's requests past its share were refused at once, with a message that says why.
  assert.equal(t.stub.held, CONNECTIONS / 2, 'key A holds exactly its share');
  t.stub.release();
  const statuses = await Promise.all(greedy);
  assert.equal(statuses.filter((s) => s === 200).length, CONNECTIONS / 2);
  assert.equal(statuses.filter((s) => s === 429).length, 20 - CONNECTIONS / 2);
  const rows = await usageRows(t, a.id, 20);
  assert.equal(rows.filter((r) => r.status === 429).length, 20 - CONNECTIONS / 2);
});

test('a full pool answers 503 with Retry-After within the bound, and /readyz and /metrics say so', async () => {
  const a = await t.createKey('first half');
  const c = await t.createKey('second half');
  const b = await t.createKey('latecomer');
  assert.equal((await readyz()).status, 200);
  const holding = Array.from({ length: CONNECTIONS / 2 }, () => [held(a.key), held(c.key, true)]).flat();
  await eventually(() => t.stub.held === CONNECTIONS, 'every connection held');
  const ready = await readyz();
  assert.equal(ready.status, 503);
  assert.equal(ready.body.checks.upstreamPool, 'saturated');

  const started = performance.now();
  const res = await within(
    t.call('/v1/chat/completions', { method: 'POST', headers: bearer(b.key), body: chatBody() }),
    QUEUE_TIMEOUT_MS + 3000,
    'the answer to a request that found the pool full',
  );
  const waitedMs = performance.now() - started;
  assert.equal(res.status, 503, res.text);
  assert.equal(res.headers['retry-after'], '1');
  const body = res.json() as { code: string; message: string; error: { code: string } };
  assert.equal(body.code, 'upstream_busy');
  assert.equal(body.error.code, 'upstream_busy');
  assert.ok(waitedMs >= QUEUE_TIMEOUT_MS - 50, `answered after ${waitedMs} ms, before the wait bound`);

  const scraper = await t.createKey('prometheus', undefined, { scopes: ['metrics'] });
  const metrics = await t.call('/metrics', { headers: bearer(scraper.key) });
  assert.equal(metrics.status, 200);
  const families = parseExposition(metrics.text);
  assert.equal(sampleValue(families, 'keygate_upstream_pool_in_use'), CONNECTIONS);
  assert.equal(sampleValue(families, 'keygate_upstream_pool_connections'), CONNECTIONS);
  assert.equal(sampleValue(families, 'keygate_upstream_errors_total', { kind: 'busy' }), 1);
  t.stub.release();
  assert.deepEqual(new Set(await Promise.all(holding)), new Set([200]));
  assert.equal((await readyz()).status, 200);
  const [row] = await usageRows(t, b.id);
  assert.equal(row?.status, 503);
});
