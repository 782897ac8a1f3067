/**
 * Usage reports through the real gateway: streaming and non-streaming calls on two priced models
 * (and one without a price) come back, grouped by model, with exactly the tokens the provider
 * reported and the cost of the configured price table: through the management API and through
 * `keygate usage` on the data directory and with --url. And the server's retention sweep.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, test } from 'node:test';
import { costOf, type Pricing } from '../../src/usage/pricing.ts';
import type { UsageReportView, UsageRowView } from '../../src/views.ts';
import { baseEnv, type CliResult, createCliHarness } from '../support/cli.ts';
import { bearer, chatBody, startTestGateway, type TestGateway, tempDir } from '../support/gateway.ts';
import { eventually } from '../support/wait.ts';

const PRICING: Pricing = {
  currency: 'EUR',
  models: {
    'mistral-small-*': { prompt: 0.1, completion: 0.3 },
    'mistral-large-latest': { prompt: 2, completion: 6 },
  },
};

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

const harness = createCliHarness({ tempPrefix: 'keygate-usage-report-' });
let t: TestGateway;
let admin: { id: string; key: string };
let configFile: string;
let configDir: string;

before(async () => {
  t = await startTestGateway({
    configure: (c) => {
      c.pricing = structuredClone(PRICING);
    },
  });
  admin = await t.createKey('operator', undefined, { scopes: ['admin'] });
  configDir = tempDir('keygate-usage-config-');
  configFile = join(configDir, 'keygate.yaml');
  writeFileSync(
    configFile,
    [
      'pricing:',
      '  currency: EUR',
      '  models:',
      '    mistral-small-*: { prompt: 0.1, completion: 0.3 }',
      '    mistral-large-latest: { prompt: 2, completion: 6 }',
      '',
    ].join('\n'),
  );
});

after(async () => {
  await harness.cleanup();
  await t?.close();
  if (configDir) rmSync(configDir, { recursive: true, force: true });
});

function describe(result: CliResult): string {
  return `keygate ${result.args.join(' ')}\nexit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

async function cliJson<T>(args: readonly string[], env: NodeJS.ProcessEnv = baseEnv()): Promise<T> {
  const result = await harness.runCli(args, env);
  assert.equal(result.code, 0, describe(result));
  return JSON.parse(result.stdout) as T;
}

/** `keygate ARGS` on the gateway's data directory, with the same price table in a config file. */
function local<T>(args: readonly string[]): Promise<T> {
  return cliJson<T>([...args, '--json', '--data-dir', t.dataDir, '--config', configFile]);
}

/** `keygate ARGS --url …` through the gateway's management API. */
function remote<T>(args: readonly string[]): Promise<T> {
  return cliJson<T>(
    [
      ...args,
      '--json',
      '--url',
      t.url,
      '--ca-file',
      join(t.dataDir, 'tls', 'cert.pem'),
      '--data-dir',
      configDir,
    ],
    { ...baseEnv(), KEYGATE_ADMIN_KEY: admin.key },
  );
}

async function report(query: string): Promise<UsageReportView> {
  const res = await t.call(`/admin/v1/usage${query}`, { headers: bearer(admin.key) });
  assert.equal(res.status, 200, res.text);
  return res.json() as UsageReportView;
}

/** One chat call; the usage the provider reported (the last chunk's when streaming). */
async function chat(
  key: string,
  model: string,
  content: string,
  stream: boolean,
): Promise<Usage | undefined> {
  const res = await t.call('/v1/chat/completions', {
    method: 'POST',
    headers: bearer(key),
    body: chatBody({ model, stream, messages: [{ role: 'user', content }] }),
  });
  if (res.status !== 200) return undefined;
  if (!stream) return (res.json() as { usage: Usage }).usage;
  const frames = res.text
    .split(/\r?\n\r?\n/)
    .map((f) => f.trim())
    .filter((f) => f.startsWith('data:') && !f.endsWith('[DONE]'))
    .map((f) => JSON.parse(f.slice('data:'.length)) as { usage?: Usage });
  return frames.findLast((f) => f.usage)?.usage;
}

function sum(rows: readonly UsageRowView[], field: 'requests' | 'total_tokens'): number {
  return rows.reduce((n, r) => n + r[field], 0);
}

const close = (a: number | null, b: number) => a !== null && Math.abs(a - b) < 1e-9;

test('reported by model: the tokens the provider reported, the cost of the price table, p50 and p95', async () => {
  const priced = await t.createKey('priced models');
  const mixed = await t.createKey('mixed models');
  const expected = new Map<string, Usage & { requests: number }>();
  const calls: [key: string, model: string][] = [];
  for (let i = 0; i < 4; i++) {
    calls.push([priced.key, 'mistral-small-latest'], [priced.key, 'mistral-large-latest']);
  }
  calls.push(
    [mixed.key, 'codestral-latest'],
    [mixed.key, 'codestral-latest'],
    [mixed.key, 'mistral-small-latest'],
  );
  /** What the priced key's calls cost, call by call. */
  let pricedCost = 0;
  for (const [i, [key, model]] of calls.entries()) {
    const words = Array.from({ length: 1 + ((i * 7) % 13) }, (_, w) => `word${w}`).join(' ');
    const usage = await chat(key, model, words, i % 2 === 1);
    assert.ok(usage && usage.total_tokens > 0, `${model}: the provider reported usage`);
    if (key === priced.key) {
      const price =
        model === 'mistral-large-latest' ? { prompt: 2, completion: 6 } : { prompt: 0.1, completion: 0.3 };
      pricedCost += costOf(price, usage.prompt_tokens, usage.completion_tokens);
    }
    const e = expected.get(model) ?? { requests: 0, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
    e.requests++;
    e.prompt_tokens += usage.prompt_tokens;
    e.completion_tokens += usage.completion_tokens;
    e.total_tokens += usage.total_tokens;
    expected.set(model, e);
  }
  // An upstream error: counted as a request and an error, with no tokens (and so no cost).
  assert.equal(await chat(priced.key, 'stub-error-400', 'nope', false), undefined);
  const requests = calls.length + 1;

  // Usage is written behind the responses: wait (bounded) until every call is in.
  let byModel = await report('?by=model');
  await eventually(
    async () => {
      byModel = await report('?by=model');
      return sum(byModel.data, 'requests') >= requests;
    },
    () => `usage to settle: ${JSON.stringify(byModel.data)}`,
  );
  assert.equal(byModel.by, 'model');
  assert.equal(byModel.currency, 'EUR');
  const rows = new Map(byModel.data.map((r) => [r.model, r]));
  for (const [model, e] of expected) {
    const row = rows.get(model);
    assert.ok(row, `a row for ${model}`);
    assert.deepEqual(
      {
        requests: row.requests,
        prompt_tokens: row.prompt_tokens,
        completion_tokens: row.completion_tokens,
        total_tokens: row.total_tokens,
      },
      e,
      model,
    );
    assert.equal(row.errors, 0);
    assert.ok(row.latency_p50_ms !== null && row.latency_p95_ms !== null);
    assert.ok(row.latency_p50_ms <= row.latency_p95_ms, `${model}: p50 ≤ p95`);
  }
  const small = expected.get('mistral-small-latest')!;
  const large = expected.get('mistral-large-latest')!;
  const costSmall = costOf({ prompt: 0.1, completion: 0.3 }, small.prompt_tokens, small.completion_tokens);
  const costLarge = costOf({ prompt: 2, completion: 6 }, large.prompt_tokens, large.completion_tokens);
  assert.ok(close(rows.get('mistral-small-latest')!.cost, costSmall), 'mistral-small-* price');
  assert.ok(close(rows.get('mistral-large-latest')!.cost, costLarge), 'mistral-large-latest price');
  assert.equal(rows.get('codestral-latest')?.cost, null, 'no price, no cost');
  assert.deepEqual(
    { requests: rows.get('stub-error-400')?.requests, errors: rows.get('stub-error-400')?.errors },
    { requests: 1, errors: 1 },
  );
  assert.equal(rows.get('stub-error-400')?.cost, 0, 'no tokens cost nothing');

  // By key: the key on priced models has a cost; the one with unpriced tokens has none.
  const byKey = new Map((await report('?by=key')).data.map((r) => [r.key_id, r]));
  assert.ok(
    close(byKey.get(priced.id)?.cost ?? null, pricedCost),
    'the cost of a key: its models at their prices',
  );
  assert.equal(byKey.get(priced.id)?.errors, 1);
  assert.equal(byKey.get(priced.id)?.name, 'priced models');
  assert.equal(byKey.get(mixed.id)?.cost, null);

  // Filters: a model pattern, a key, an endpoint.
  const smallOnly = await report('?by=model&model=mistral-small-*');
  assert.deepEqual(
    smallOnly.data.map((r) => r.model),
    ['mistral-small-latest'],
  );
  const mixedByModel = await report(`?by=model&key_id=${mixed.id}`);
  assert.deepEqual(mixedByModel.data.map((r) => r.model).sort(), [
    'codestral-latest',
    'mistral-small-latest',
  ]);
  const byEndpoint = await report('?by=endpoint&endpoint=/v1/chat/completions');
  assert.equal(byEndpoint.data.length, 1);
  assert.equal(byEndpoint.data[0]?.requests, requests);
  const bad = await t.call('/admin/v1/usage?by=colour', { headers: bearer(admin.key) });
  assert.equal(bad.status, 422, bad.text);
  const backwards = await t.call(
    `/admin/v1/usage?from=${new Date().toISOString()}&to=${new Date(Date.now() - 1000).toISOString()}`,
    { headers: bearer(admin.key) },
  );
  assert.equal(backwards.status, 422, backwards.text);

  // The CLI by day, on the data directory and through the API: the same rows, the same totals.
  const allTokens = [...expected.values()].reduce((n, e) => n + e.total_tokens, 0);
  const [localDays, remoteDays] = await Promise.all([
    local<UsageRowView[]>(['usage', '--by', 'day']),
    remote<UsageRowView[]>(['usage', '--by', 'day']),
  ]);
  assert.deepEqual(remoteDays, localDays);
  assert.ok(localDays.every((r) => /^\d{4}-\d{2}-\d{2}$/.test(r.day ?? '')));
  assert.equal(sum(localDays, 'requests'), requests);
  assert.equal(sum(localDays, 'total_tokens'), allTokens);
  const pricedDays = await remote<UsageRowView[]>([
    'usage',
    '--by',
    'day',
    '--key',
    priced.id,
    '--since',
    '1d',
  ]);
  const pricedDaysCost = pricedDays.reduce((n, r) => n + (r.cost ?? Number.NaN), 0);
  assert.ok(close(pricedDaysCost, pricedCost), `${pricedDaysCost} ≠ ${pricedCost}`);
  assert.ok(pricedDays.every((r) => r.currency === 'EUR'));

  // By key, the JSON keeps its fields; the table shows p50, p95 and the cost column.
  const keys = await remote<UsageRowView[]>(['usage', '--key', priced.id]);
  assert.deepEqual(Object.keys(keys[0] ?? {}).slice(0, 7), [
    'key_id',
    'name',
    'requests',
    'errors',
    'prompt_tokens',
    'completion_tokens',
    'total_tokens',
  ]);
  const table = await harness.runCli(
    ['usage', '--by', 'model', '--data-dir', t.dataDir, '--config', configFile],
    baseEnv(),
  );
  assert.equal(table.code, 0, describe(table));
  assert.match(
    table.stdout.split('\n')[0] ?? '',
    /^MODEL +REQUESTS +ERRORS +PROMPT +COMPLETION +TOTAL +P50 MS +P95 MS +COST EUR$/,
  );
  assert.match(table.stdout, /codestral-latest .* -$/m, 'no cost shown as -');
});

test('retention: the running server deletes raw records past usage.retentionDays, the report keeps them', async () => {
  const dir = tempDir('keygate-retention-');
  const now = Date.now();
  const record = (id: string, time: number, tokens: number) => ({
    id,
    time,
    keyId: 'key_retained',
    workspaceId: 'ws_default',
    model: 'mistral-small-latest',
    endpoint: '/v1/chat/completions',
    status: 200,
    promptTokens: tokens,
    completionTokens: 0,
    totalTokens: tokens,
    latencyMs: 100,
    ttftMs: null,
    clientIp: '127.0.0.1',
  });
  const rawIds = () => {
    const db = new DatabaseSync(join(dir, 'keygate.db'), { readOnly: true });
    try {
      return (db.prepare('SELECT id FROM usage_records ORDER BY id').all() as { id: string }[]).map(
        (r) => r.id,
      );
    } finally {
      db.close();
    }
  };
  try {
    const first = await startTestGateway({
      configure: (c) => {
        c.dataDir = dir;
      },
    });
    try {
      await first.gateway.store.recordUsage([
        record('old', now - 10 * 86_400_000, 1000),
        record('new', now, 5),
      ]);
    } finally {
      await first.close();
    }
    assert.deepEqual(rawIds(), ['new', 'old']);

    const second = await startTestGateway({
      configure: (c) => {
        c.dataDir = dir;
        c.usage.retentionDays = 5;
      },
    });
    try {
      // The first sweep runs in the background at start.
      await eventually(() => !rawIds().includes('old'), 'the old raw record to be deleted');
      assert.deepEqual(rawIds(), ['new']);
      const operator = await second.createKey('operator', undefined, { scopes: ['admin'] });
      const res = await second.call('/admin/v1/usage?key_id=key_retained', { headers: bearer(operator.key) });
      // The key is not in this data directory's key table: an unknown key is a 404 for its filter …
      assert.equal(res.status, 404, res.text);
      // … but the report of every key keeps the deleted record's tokens.
      const all = await second.call('/admin/v1/usage?by=model', { headers: bearer(operator.key) });
      const data = (all.json() as UsageReportView).data;
      assert.equal(data.find((r) => r.model === 'mistral-small-latest')?.total_tokens, 1005);
    } finally {
      await second.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
