/**
 * Faults of the provider, one gateway each: dead (connection refused), slow (no head), and cut
 * mid-stream (a stall, a reset). Asserted: the process lives, every request is answered clearly
 * (502/504 in the error shape, or a stream cut off after what it delivered), nothing hangs, each
 * request is recorded with the status of what happened (never 499, which is a client hanging up),
 * and every provider connection is given back.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, describe, test } from 'node:test';
import { request } from 'undici';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { usageRows } from '../support/usage-rows.ts';
import { eventually, within } from '../support/wait.ts';

const CONCURRENT = 40;

/** A loopback port nothing listens on (taken, then released). */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

interface Outcome {
  status: number;
  text: string;
  ms: number;
  /** The connection ended before the body did. */
  cut: boolean;
}

async function send(t: TestGateway, key: string, body: string): Promise<Outcome> {
  const started = performance.now();
  const res = await request(`${t.url}/v1/chat/completions`, {
    method: 'POST',
    headers: bearer(key),
    body,
    dispatcher: t.dispatcher,
  });
  let text = '';
  let cut = false;
  try {
    for await (const chunk of res.body) text += String(chunk);
  } catch {
    cut = true;
  }
  return { status: res.statusCode, text, ms: performance.now() - started, cut };
}

function report(what: string, outcomes: Outcome[]): void {
  const ms = outcomes.map((o) => o.ms).sort((a, b) => a - b);
  process.stdout.write(
    `# ${what}: ${outcomes.length} requests, answered in ${ms[0]?.toFixed(0)}-${ms.at(-1)?.toFixed(0)} ms\n`,
  );
}

describe('fault: the provider is dead (connection refused)', () => {
  let t: TestGateway;
  after(() => t?.close());

  test('every request gets 502 upstream_unreachable at once; /readyz is not ready', async () => {
    const port = await deadPort();
    t = await startTestGateway({
      configure: (config) => {
        config.upstream.url = `http://127.0.0.1:${port}`;
      },
    });
    const { id, key } = await t.createKey('dead provider');
    const outcomes = await within(
      Promise.all(
        Array.from({ length: CONCURRENT }, (_, i) => send(t, key, chatBody({ stream: i % 2 === 0 }))),
      ),
      10_000,
      'answers from a gateway whose provider is down',
    );
    report('dead provider', outcomes);
    for (const o of outcomes) {
      assert.equal(o.status, 502, o.text);
      assert.equal(o.cut, false);
      const body = JSON.parse(o.text) as { code: string; type: string; error: { code: string } };
      assert.equal(body.code, 'upstream_unreachable');
      assert.equal(body.error.code, 'upstream_unreachable');
    }
    const rows = await usageRows(t, id, CONCURRENT);
    assert.deepEqual(new Set(rows.map((r) => r.status)), new Set([502]));
    const ready = await t.call('/readyz');
    assert.equal(ready.status, 503);
    assert.equal((ready.json() as { checks: { upstream: string } }).checks.upstream, 'unreachable');
    assert.equal(t.gateway.upstream.stats.inUse, 0);
  });
});

describe('fault: the provider is slow (no head within upstream.timeoutMs)', () => {
  let t: TestGateway;
  after(async () => {
    t?.stub.release();
    await t?.close();
  });

  test('every request gets 504 upstream_timeout within the bound', async () => {
    t = await startTestGateway({
      configure: (config) => {
        config.upstream.timeoutMs = 500;
      },
    });
    const { id, key } = await t.createKey('slow provider');
    const outcomes = await within(
      Promise.all(
        Array.from({ length: CONCURRENT }, (_, i) =>
          send(t, key, chatBody({ model: 'stub-hold', stream: i % 2 === 0 })),
        ),
      ),
      10_000,
      'answers from a gateway whose provider does not answer',
    );
    report('slow provider (timeoutMs 500)', outcomes);
    for (const o of outcomes) {
      assert.equal(o.status, 504, o.text);
      assert.equal((JSON.parse(o.text) as { code: string }).code, 'upstream_timeout');
      assert.ok(o.ms >= 450, `answered after ${o.ms} ms, before the timeout`);
    }
    const rows = await usageRows(t, id, CONCURRENT);
    assert.deepEqual(new Set(rows.map((r) => r.status)), new Set([504]));
    await eventually(() => t.gateway.upstream.stats.inUse === 0, 'every connection given back');
    // The gateway still serves once the provider answers again.
    assert.equal((await send(t, key, chatBody())).status, 200);
  });
});

describe('fault: the provider stalls or resets mid-stream', () => {
  let t: TestGateway;
  after(() => t?.close());

  test('each stream is cut after what it delivered, and recorded as 504 or 502 with its tokens', async () => {
    t = await startTestGateway({
      configure: (config) => {
        config.upstream.bodyTimeoutMs = 500;
      },
    });
    const stall = await t.createKey('stalling provider');
    const reset = await t.createKey('resetting provider');
    const models = [
      'stub-stall-stream',
      'stub-pretty-stall-stream',
      'stub-reset-stream',
      'stub-pretty-reset-stream',
    ];
    const outcomes = await within(
      Promise.all(
        Array.from({ length: CONCURRENT }, (_, i) => {
          const model = models[i % models.length] ?? '';
          return send(t, model.includes('stall') ? stall.key : reset.key, chatBody({ model, stream: true }));
        }),
      ),
      10_000,
      'the cut streams to end',
    );
    report('streams stalled (bodyTimeoutMs 500) or reset after 3 events', outcomes);
    for (const o of outcomes) {
      assert.equal(o.status, 200, 'the head was passed on');
      assert.ok(o.cut, 'the client sees the cut, not a clean end');
      assert.match(o.text, /w1[\s\S]*w2[\s\S]*w3/);
    }
    for (const [key, status] of [
      [stall, 504],
      [reset, 502],
    ] as const) {
      const rows = await usageRows(t, key.id, CONCURRENT / 2);
      assert.deepEqual(new Set(rows.map((r) => r.status)), new Set([status]));
      assert.deepEqual(new Set(rows.map((r) => r.completion_tokens)), new Set([3]), 'the 3 events seen');
      assert.ok(rows.every((r) => r.tokens_estimated === 1));
    }
    await eventually(() => t.gateway.upstream.stats.inUse === 0, 'every connection given back');
    assert.equal((await send(t, stall.key, chatBody({ stream: true }))).status, 200);
  });
});
