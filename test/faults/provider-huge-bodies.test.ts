/**
 * Fault: the provider answers with huge bodies — 8 error bodies of 50 MB at once (which took RSS
 * from 162 MB to 1.6 GB and stalled the event loop for 1.7 s when they were held whole), and a
 * large batch of embeddings asked for as base64 (~80 MB of floats, which were parsed and
 * re-serialised whole: a block of seconds). The stub runs in a process of its own, so that what is measured is the
 * gateway's: its resident memory and its event loop. Asserted with generous bounds (CI runs on two
 * shared cores): RSS grows by less than 150 MB, no callback holds the loop for 300 ms of CPU
 * (before: seconds), every request is answered, and the gateway serves normally afterwards.
 */
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { startUpstreamStubProcess, type UpstreamStub } from '../support/upstream-stub.ts';
import { eventually } from '../support/wait.ts';

const MB = 1 << 20;
let stub: UpstreamStub;
let t: TestGateway;
let key: string;

before(async () => {
  stub = await startUpstreamStubProcess();
  t = await startTestGateway({ stub });
  key = (await t.createKey()).key;
  // Warm up (TLS, the first request's allocations) before the baseline is taken.
  assert.equal((await t.call('/v1/models', { headers: bearer(key) })).status, 200);
});
after(async () => {
  await t.close();
  await stub.close();
});

/**
 * Runs `work` while sampling, every 10 ms, RSS, the event loop's delay and the CPU time the
 * process used between two samples. The delay counts time the process waited for a CPU (other
 * processes on a loaded machine); the CPU time between two samples is what a callback holding the
 * loop costs, which waiting does not, so that is what the bound is on (`heldCpuMs`).
 */
async function measured<T>(
  work: () => Promise<T>,
): Promise<{ result: T; rssGrowthMb: number; maxDelayMs: number; heldCpuMs: number; seconds: number }> {
  global.gc?.();
  const baseline = process.memoryUsage.rss();
  let peak = baseline;
  let heldCpuMs = 0;
  let cpu = process.cpuUsage();
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
    const used = process.cpuUsage(cpu);
    cpu = process.cpuUsage();
    heldCpuMs = Math.max(heldCpuMs, (used.user + used.system) / 1000);
  }, 10);
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const started = performance.now();
  try {
    const result = await work();
    return {
      result,
      rssGrowthMb: (peak - baseline) / MB,
      maxDelayMs: delay.max / 1e6,
      heldCpuMs,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    delay.disable();
    clearInterval(sampler);
  }
}

test('8 error bodies of 50 MB at once: each answered with a note, memory and loop unharmed', async () => {
  const { result, rssGrowthMb, maxDelayMs, heldCpuMs, seconds } = await measured(() =>
    Promise.all(
      Array.from({ length: 8 }, () =>
        t.call('/v1/chat/completions', {
          method: 'POST',
          headers: bearer(key),
          body: chatBody({ model: 'stub-huge-error', stub_error_bytes: 50 * MB }),
        }),
      ),
    ),
  );
  process.stdout.write(
    `# 8 x 50 MB error bodies: answered in ${seconds.toFixed(2)} s, RSS +${rssGrowthMb.toFixed(1)} MB, event-loop delay at most ${maxDelayMs.toFixed(1)} ms, CPU between two 10 ms ticks at most ${heldCpuMs.toFixed(1)} ms\n`,
  );
  for (const res of result) {
    assert.equal(res.status, 500);
    assert.ok(res.text.length < 4096, `${res.text.length} bytes`);
    assert.match((res.json() as { message: string }).message, /larger than 65536 bytes/);
  }
  assert.ok(rssGrowthMb < 150, `RSS grew by ${rssGrowthMb.toFixed(1)} MB`);
  assert.ok(heldCpuMs < 300, `a callback held the event loop for ${heldCpuMs.toFixed(1)} ms of CPU`);
  await eventually(() => t.gateway.upstream.stats.inUse === 0, 'every connection given back');
});

test('~80 MB of embeddings encoded as base64 on the way: memory and loop unharmed', async () => {
  const inputs = Array.from({ length: 2048 }, (_, i) => `text ${i}`);
  const { result, rssGrowthMb, maxDelayMs, heldCpuMs, seconds } = await measured(async () => {
    const res = await request(`${t.url}/v1/embeddings`, {
      method: 'POST',
      headers: bearer(key),
      body: JSON.stringify({
        model: 'mistral-embed',
        input: inputs,
        encoding_format: 'base64',
        output_dimension: 4096,
      }),
      dispatcher: t.dispatcher,
    });
    // The client reads the body as it comes (what it holds is not the gateway's to count).
    let bytes = 0;
    let last: Buffer = Buffer.alloc(0);
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      last = chunk;
    }
    return { status: res.statusCode, bytes, tail: last.toString('utf8') };
  });
  process.stdout.write(
    `# 2048 x 4096 embeddings as base64 (${(result.bytes / MB).toFixed(1)} MB out): ${seconds.toFixed(2)} s, RSS +${rssGrowthMb.toFixed(1)} MB, event-loop delay at most ${maxDelayMs.toFixed(1)} ms, CPU between two 10 ms ticks at most ${heldCpuMs.toFixed(1)} ms\n`,
  );
  assert.equal(result.status, 200);
  // base64 of 2048 x 4096 float32: 32 MiB of floats, 4/3 of that as text.
  assert.ok(result.bytes > 42 * MB && result.bytes < 46 * MB, `${result.bytes} bytes`);
  assert.match(result.tail, /"usage":\{"prompt_tokens":4096,/);
  assert.ok(rssGrowthMb < 150, `RSS grew by ${rssGrowthMb.toFixed(1)} MB`);
  assert.ok(heldCpuMs < 300, `a callback held the event loop for ${heldCpuMs.toFixed(1)} ms of CPU`);
  // And the gateway serves as before.
  const after = await t.call('/v1/chat/completions', {
    method: 'POST',
    headers: bearer(key),
    body: chatBody(),
  });
  assert.equal(after.status, 200);
});
