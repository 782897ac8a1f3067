/**
 * Metering that adds up, as a user runs Keygate: totals equal what the provider reported under
 * concurrent streaming and non-streaming load; a `kill -9` after the flush interval loses
 * nothing; a restart counts nothing twice.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { createCliHarness, type Gateway } from '../support/cli.ts';
import { eventually } from '../support/wait.ts';

const harness = createCliHarness({ tempPrefix: 'keygate-metering-' });
before(() => harness.start());
after(() => harness.cleanup());

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

async function chat(gw: Gateway, key: string, i: number): Promise<Usage> {
  const stream = i % 2 === 0;
  const res = await request(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'mistral-small-latest',
      stream,
      messages: [{ role: 'user', content: `request ${i} ${'word '.repeat(i % 7)}` }],
    }),
    dispatcher: gw.agent,
  });
  const text = await res.body.text();
  assert.equal(res.statusCode, 200, text);
  const json = stream ? (text.split('\n\n').find((e) => e.includes('"usage"')) ?? '').slice(6) : text;
  return (JSON.parse(json) as { usage: Usage }).usage;
}

/** What `keygate usage --json` says of a key: its requests and the three token counts. */
async function totals(dataDir: string, keyId: string): Promise<Usage & { requests: number }> {
  const result = await harness.runCli(['usage', '--key', keyId, '--json', '--data-dir', dataDir]);
  assert.equal(result.code, 0, result.stderr);
  const rows = JSON.parse(result.stdout) as (Usage & { requests: number; key_id: string })[];
  const row = rows.find((r) => r.key_id === keyId);
  assert.ok(row, result.stdout);
  const { requests, prompt_tokens, completion_tokens, total_tokens } = row;
  return { requests, prompt_tokens, completion_tokens, total_tokens };
}

/** How many usage records of the key the gateway has written (read beside the running gateway). */
function written(dataDir: string, keyId: string): number {
  const db = new DatabaseSync(join(dataDir, 'keygate.db'), { readOnly: true });
  try {
    const row = db.prepare('SELECT count(*) AS n FROM usage_records WHERE key_id = ?').get(keyId);
    return Number(row?.n);
  } finally {
    db.close();
  }
}

test('concurrent load, kill -9 after the flush interval, restart: every request counted once', {
  timeout: 90_000,
}, async () => {
  const dataDir = harness.newDataDir();
  const created = await harness.runCli([
    'keys',
    'create',
    '--name',
    'metered',
    '--json',
    '--data-dir',
    dataDir,
  ]);
  const { id, key } = JSON.parse(created.stdout) as { id: string; key: string };
  const expected = { requests: 0, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
  const add = (u: Usage) => {
    expected.requests++;
    expected.prompt_tokens += u.prompt_tokens;
    expected.completion_tokens += u.completion_tokens;
    expected.total_tokens += u.total_tokens;
  };

  const first = await harness.startGateway(dataDir, harness.upstreamEnv());
  for (const u of await Promise.all(Array.from({ length: 40 }, (_, i) => chat(first, key, i)))) add(u);
  // Once the usage queue has flushed (every 500 ms) what it held, a kill -9 must lose none of it.
  await eventually(() => written(dataDir, id) >= expected.requests, 'the usage queue to flush', 20_000);
  first.proc.child.kill('SIGKILL');
  await first.proc.exited;
  assert.deepEqual(await totals(dataDir, id), expected, 'kill -9 after the flush interval lost nothing');

  const second = await harness.startGateway(dataDir, harness.upstreamEnv());
  for (const u of await Promise.all(Array.from({ length: 20 }, (_, i) => chat(second, key, 100 + i)))) add(u);
  second.proc.child.kill('SIGTERM');
  const exit = await second.proc.exited;
  assert.equal(exit.code, 0);
  assert.deepEqual(
    await totals(dataDir, id),
    expected,
    'a restart counts nothing twice, and a graceful stop loses nothing',
  );
});
