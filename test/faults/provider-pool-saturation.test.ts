/**
 * Fault: one key fills the provider pool, as in issue 13 (300 slow requests, hundreds of open
 * streams, against a pool of 128 connections: another key then waited > 15 s or never got a head,
 * and /readyz stayed ready). Asserted: the other key's requests get their heads promptly while the
 * flood lasts; with the pool full (two keys at their share) a request gets 503 + Retry-After
 * within upstream.queueTimeoutMs, never a hang; /readyz says saturated; every connection comes back.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Agent, request } from 'undici';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { eventually, within } from '../support/wait.ts';

const CONNECTIONS = 128;
const QUEUE_TIMEOUT_MS = 1000;
const FLOOD = 300;
let t: TestGateway;
/**
 * The flood's own client connections (more than it holds at the provider, so that the refusals
 * flow past the held ones; fewer than the flood, so that a loaded machine is not asked for 600 TLS
 * handshakes at once), kept apart from the probes'.
 */
let flood: Agent;

before(async () => {
  t = await startTestGateway({
    configure: (config) => {
      config.upstream.connections = CONNECTIONS;
      config.upstream.queueTimeoutMs = QUEUE_TIMEOUT_MS;
      config.server.maxConnectionsPerAddress = 4096;
    },
  });
  flood = new Agent({ connect: { ca: t.ca }, connections: CONNECTIONS + 32 });
});
after(async () => {
  t.stub.release();
  await flood.close();
  await t.close();
});

function held(key: string, stream: boolean): Promise<number> {
  return request(`${t.url}/v1/chat/completions`, {
    method: 'POST',
    headers: bearer(key),
    body: chatBody({ model: stream ? 'stub-hold-stream' : 'stub-hold', stream }),
    dispatcher: flood,
  }).then(
    async (res) => {
      await res.body.text().catch(() => '');
      return res.statusCode;
    },
    (error: unknown) => {
      // Counted as 0 below; said here, so that a failure shows why.
      process.stdout.write(`# flood request failed: ${(error as { code?: string }).code ?? String(error)}\n`);
      return 0;
    },
  );
}

/** Time to the response head of one plain request of `key`, and its status. */
async function probe(key: string): Promise<{ status: number; ms: number }> {
  const started = performance.now();
  const res = await within(
    request(`${t.url}/v1/chat/completions`, {
      method: 'POST',
      headers: bearer(key),
      body: chatBody(),
      dispatcher: t.dispatcher,
    }),
    QUEUE_TIMEOUT_MS + 5000,
    'a response head',
  );
  const ms = performance.now() - started;
  await res.body.text();
  return { status: res.statusCode, ms };
}

test(`${FLOOD} slow requests and ${FLOOD} open streams of one key do not starve another`, async () => {
  const a = await t.createKey('flood');
  const b = await t.createKey('bystander');
  let answered = 0;
  const floodDone = Array.from({ length: 2 * FLOOD }, (_, i) =>
    held(a.key, i % 2 === 1).finally(() => answered++),
  );
  const share = CONNECTIONS / 2;
  await eventually(
    () => t.stub.held === share && answered === 2 * FLOOD - share,
    () => `the flood at its share (${t.stub.held} held, ${answered} answered)`,
    30_000,
  );
  const probes = [];
  for (let i = 0; i < 10; i++) probes.push(await probe(b.key));
  const worst = Math.max(...probes.map((p) => p.ms));
  process.stdout.write(
    `# flood of ${2 * FLOOD} (key A holds ${share} of ${CONNECTIONS} connections, ${2 * FLOOD - share} refused 429): key B's 10 requests answered in at most ${worst.toFixed(0)} ms\n`,
  );
  assert.deepEqual(new Set(probes.map((p) => p.status)), new Set([200]));
  assert.ok(worst < 2000, `key B waited ${worst.toFixed(0)} ms`);
  assert.equal((await t.call('/readyz')).status, 200, 'half the pool is free: ready');
  t.stub.release();
  const statuses = await Promise.all(floodDone);
  assert.equal(statuses.filter((s) => s === 200).length, share);
  assert.equal(statuses.filter((s) => s === 429).length, 2 * FLOOD - share);
  await eventually(() => t.gateway.upstream.stats.inUse === 0, 'every connection given back');
});

test('a full pool: 503 with Retry-After within the bound, /readyz saturated, then back', async () => {
  const a = await t.createKey('first half');
  const c = await t.createKey('second half');
  const b = await t.createKey('latecomer');
  const holding = [
    ...Array.from({ length: CONNECTIONS / 2 }, () => held(a.key, true)),
    ...Array.from({ length: CONNECTIONS / 2 }, () => held(c.key, false)),
  ];
  await eventually(() => t.stub.held === CONNECTIONS, 'every connection held', 30_000);
  const ready = await t.call('/readyz');
  assert.equal(ready.status, 503);
  assert.equal((ready.json() as { checks: { upstreamPool: string } }).checks.upstreamPool, 'saturated');
  const probes = await Promise.all(Array.from({ length: 20 }, () => probe(b.key)));
  const times = probes.map((p) => p.ms).sort((x, y) => x - y);
  process.stdout.write(
    `# pool full (${CONNECTIONS} held): 20 requests answered 503 in ${times[0]?.toFixed(0)}-${times.at(-1)?.toFixed(0)} ms (queueTimeoutMs ${QUEUE_TIMEOUT_MS})\n`,
  );
  assert.deepEqual(new Set(probes.map((p) => p.status)), new Set([503]));
  assert.ok((times.at(-1) ?? 0) < QUEUE_TIMEOUT_MS + 2000, 'answered within the bound');
  t.stub.release();
  assert.deepEqual(new Set(await Promise.all(holding)), new Set([200]));
  await eventually(() => t.gateway.upstream.stats.inUse === 0, 'every connection given back');
  assert.equal((await t.call('/readyz')).status, 200);
  assert.equal((await probe(b.key)).status, 200);
});
