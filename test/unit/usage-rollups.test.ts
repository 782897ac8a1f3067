import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { loadConfig } from '../../src/config/config.ts';
import { createMemoryLimiter } from '../../src/limits/memory.ts';
import type { LimitSubject } from '../../src/limits/types.ts';
import { MIGRATIONS } from '../../src/store/migrations.ts';
import { splitRange } from '../../src/store/sqlite.ts';
import {
  type Store,
  USAGE_GROUPS,
  type UsageGroup,
  type UsageRecord,
  type UsageReportRow,
} from '../../src/store/types.ts';
import {
  LATENCY_BUCKETS,
  LATENCY_COLUMNS,
  LATENCY_EDGES_MS,
  latencyBucket,
  latencyPercentile,
} from '../../src/usage/histogram.ts';
import { costOf, type Pricing, priceOf } from '../../src/usage/pricing.ts';
import { tempDir } from '../support/gateway.ts';
import { describeStore, type StoreUnderTest, storesUnderTest } from '../support/stores.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** Thursday 15 January 2026, 00:00 UTC. */
const BASE = Date.UTC(2026, 0, 15);

const PRICING: Pricing = {
  currency: 'EUR',
  models: {
    'mistral-small-*': { prompt: 0.1, completion: 0.3 },
    'mistral-large-latest': { prompt: 2, completion: 6 },
  },
};

const STORES = await storesUnderTest();

let dir: string;
let runs = 0;

before(() => {
  dir = tempDir('keygate-rollups-');
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

// ---- the exact answers, computed from the records themselves ---------------------------------

/** The records as stored: the first of each id (a later one with the same id is a duplicate). */
function firstOfEachId(records: readonly UsageRecord[]): UsageRecord[] {
  const seen = new Set<string>();
  return records.filter((r) => !seen.has(r.id) && seen.add(r.id));
}

function groupOf(r: UsageRecord, by: UsageGroup): string | number | null {
  switch (by) {
    case 'key':
      return r.keyId;
    case 'model':
      return r.model;
    case 'endpoint':
      return r.endpoint;
    case 'workspace':
      return r.workspaceId;
    case 'hour':
      return Math.floor(r.time / HOUR) * HOUR;
    case 'day':
      return Math.floor(r.time / DAY) * DAY;
  }
}

/** Nearest rank, as the histogram estimates it. */
function exactPercentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(1, Math.ceil(p * sorted.length)) - 1] ?? Number.NaN;
}

interface Expected {
  requests: number;
  errors: number;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  estimatedRequests: number;
  latencies: number[];
  cost: number | null;
}

function expectedReport(
  records: readonly UsageRecord[],
  by: UsageGroup,
  from: number | undefined,
  to: number | undefined,
  pricing: Pricing,
): Map<string | number | null, Expected> {
  const out = new Map<string | number | null, Expected>();
  for (const r of records) {
    if ((from !== undefined && r.time < from) || (to !== undefined && r.time >= to)) continue;
    const group = groupOf(r, by);
    let e = out.get(group);
    if (!e) {
      e = {
        requests: 0,
        errors: 0,
        promptTokens: 0,
        completionTokens: 0,
        totalTokens: 0,
        estimatedRequests: 0,
        latencies: [],
        cost: 0,
      };
      out.set(group, e);
    }
    e.requests++;
    if (r.status >= 400) e.errors++;
    e.promptTokens += r.promptTokens;
    e.completionTokens += r.completionTokens;
    e.totalTokens += r.totalTokens;
    if (r.tokensEstimated) e.estimatedRequests++;
    e.latencies.push(r.latencyMs);
    if (e.cost !== null && r.promptTokens + r.completionTokens > 0) {
      const price = priceOf(pricing, r.model);
      e.cost = price === undefined ? null : e.cost + costOf(price, r.promptTokens, r.completionTokens);
    }
  }
  return out;
}

function assertRowMatches(row: UsageReportRow, e: Expected | undefined, what: string): void {
  assert.ok(e, `${what}: a row for a group without records`);
  const counts = {
    requests: row.requests,
    errors: row.errors,
    promptTokens: row.promptTokens,
    completionTokens: row.completionTokens,
    totalTokens: row.totalTokens,
    estimatedRequests: row.estimatedRequests,
  };
  const { latencies, cost, ...want } = e;
  assert.deepEqual(counts, want, what);
  const mean = latencies.reduce((a, b) => a + b, 0) / latencies.length;
  assert.ok(Math.abs((row.latencyAvgMs ?? Number.NaN) - mean) <= 0.05 + mean * 1e-9, `${what}: average`);
  for (const [p, got] of [
    [0.5, row.latencyP50Ms],
    [0.95, row.latencyP95Ms],
  ] as const) {
    const exact = exactPercentile(latencies, p);
    assert.ok(got !== null, `${what}: p${p * 100}`);
    assert.ok(
      Math.abs(latencyBucket(got) - latencyBucket(exact)) <= 1,
      `${what}: p${p * 100} ${got} is not within a bucket of the exact ${exact}`,
    );
  }
  if (cost === null) assert.equal(row.cost, null, `${what}: no cost with unpriced tokens`);
  else
    assert.ok(row.cost !== null && Math.abs(row.cost - cost) < 1e-6, `${what}: cost ${row.cost} ≠ ${cost}`);
}

// ---- generated records -----------------------------------------------------------------------

const KEYS = [
  { keyId: 'key_a', workspaceId: 'ws_default' },
  { keyId: 'key_b', workspaceId: 'ws_default' },
  { keyId: 'key_c', workspaceId: 'ws_other' },
  { keyId: null, workspaceId: null },
] as const;

const recordArb = fc
  .record({
    // A small id space: many records share an id (duplicates and retried batches).
    id: fc.integer({ min: 0, max: 80 }),
    offset: fc.integer({ min: 0, max: 3 * DAY - 1 }),
    who: fc.constantFrom(...KEYS),
    model: fc.constantFrom(
      'mistral-small-latest',
      'mistral-small-2506',
      'mistral-large-latest',
      'codestral',
      null,
    ),
    endpoint: fc.constantFrom('/v1/chat/completions', '/v1/embeddings'),
    status: fc.constantFrom(200, 200, 200, 400, 429, 502),
    prompt: fc.integer({ min: 0, max: 20_000 }),
    completion: fc.integer({ min: 0, max: 20_000 }),
    // 0.01 ms to about 5 minutes, spread over every bucket.
    latencyExp: fc.double({ min: -2, max: 5.5, noNaN: true }),
    estimated: fc.boolean(),
  })
  .map(
    (g): UsageRecord => ({
      id: `req_${g.id}`,
      time: BASE + g.offset,
      keyId: g.who.keyId,
      workspaceId: g.who.workspaceId,
      model: g.model,
      endpoint: g.endpoint,
      status: g.status,
      promptTokens: g.prompt,
      completionTokens: g.completion,
      totalTokens: g.prompt + g.completion,
      latencyMs: 10 ** g.latencyExp,
      ttftMs: null,
      clientIp: '10.0.0.1',
      tokensEstimated: g.estimated,
    }),
  );

/** Records, written in batches of a size, some batches sent again (a retry after a lost answer). */
interface Workload {
  records: UsageRecord[];
  batchSize: number;
  retried: number[];
}

const workloadArb: fc.Arbitrary<Workload> = fc.record({
  records: fc.array(recordArb, { minLength: 1, maxLength: 120 }),
  batchSize: fc.integer({ min: 1, max: 40 }),
  retried: fc.array(fc.nat(), { maxLength: 4 }),
});

async function write(store: Store, w: Workload): Promise<void> {
  const batches: UsageRecord[][] = [];
  for (let i = 0; i < w.records.length; i += w.batchSize) batches.push(w.records.slice(i, i + w.batchSize));
  for (const batch of batches) await store.recordUsage(batch);
  for (const n of w.retried) await store.recordUsage(batches[n % batches.length] ?? []);
}

/** A rollup table as stored, and as summed from the raw table, row by row (in one order). */
async function rollupsAndRawSums(
  s: StoreUnderTest,
  store: Store,
  unit: 'hour' | 'day' = 'hour',
): Promise<{ rollups: unknown[]; raw: unknown[] }> {
  const width = unit === 'hour' ? HOUR : DAY;
  const order = (r: Record<string, unknown>) =>
    JSON.stringify([r[unit], r.workspace_id, r.key_id, r.model, r.endpoint]);
  const sorted = (rows: Record<string, unknown>[]) =>
    rows.sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));
  const rollups = await s.query(
    store,
    `SELECT ${unit}, workspace_id, key_id, model, endpoint, requests, errors, prompt_tokens, completion_tokens,
       total_tokens, estimated_requests, ${LATENCY_COLUMNS.join(', ')} FROM usage_${unit === 'hour' ? 'hourly' : 'daily'}`,
  );
  const byRow = new Map<string, Record<string, number | string>>();
  for (const r of (await s.query(store, 'SELECT * FROM usage_records')) as Record<
    string,
    number | string
  >[]) {
    const id = [
      Math.floor(Number(r.time) / width) * width,
      r.workspace_id ?? '',
      r.key_id ?? '',
      r.model ?? '',
      r.endpoint,
    ];
    const key = JSON.stringify(id);
    let row = byRow.get(key);
    if (!row) {
      row = {
        [unit]: id[0] as number,
        workspace_id: id[1] as string,
        key_id: id[2] as string,
        model: id[3] as string,
        endpoint: id[4] as string,
        requests: 0,
        errors: 0,
        prompt_tokens: 0,
        completion_tokens: 0,
        total_tokens: 0,
        estimated_requests: 0,
      };
      for (const c of LATENCY_COLUMNS) row[c] = 0;
      byRow.set(key, row);
    }
    const add = (field: string, n: number) => {
      row[field] = Number(row[field]) + n;
    };
    add('requests', 1);
    add('errors', Number(r.status) >= 400 ? 1 : 0);
    add('prompt_tokens', Number(r.prompt_tokens));
    add('completion_tokens', Number(r.completion_tokens));
    add('total_tokens', Number(r.total_tokens));
    add('estimated_requests', Number(r.tokens_estimated));
    add(LATENCY_COLUMNS[latencyBucket(Number(r.latency_ms))] ?? '', 1);
  }
  return { rollups: sorted(rollups), raw: sorted([...byRow.values()]) };
}

/**
 * Where a report over [from, to) really starts and ends once retention has deleted the raw records
 * before `rawSince`: an end inside a deleted hour takes that hour whole.
 */
function effectiveRange(
  from: number | undefined,
  to: number | undefined,
  rawSince: number,
): [number | undefined, number | undefined] {
  const floor = (t: number) => Math.floor(t / HOUR) * HOUR;
  return [
    from === undefined || floor(from) >= rawSince ? from : floor(from),
    to === undefined || floor(to) >= rawSince ? to : Math.ceil(to / HOUR) * HOUR,
  ];
}

// ---- tests -----------------------------------------------------------------------------------
test('the latency scale: 32 log-scale buckets from 1 ms to 120 s, and percentiles stay in their bucket', () => {
  assert.equal(LATENCY_BUCKETS, 32);
  assert.equal(LATENCY_EDGES_MS[0], 1);
  assert.equal(LATENCY_EDGES_MS.at(-1), 120_000);
  assert.equal(latencyBucket(0), 0);
  assert.equal(latencyBucket(0.999), 0);
  assert.equal(latencyBucket(1), 1);
  assert.equal(latencyBucket(119_999), 30);
  assert.equal(latencyBucket(120_000), 31);
  assert.equal(latencyBucket(3_600_000), 31);
  assert.equal(latencyPercentile(new Array(32).fill(0), 0.5), null);
  fc.assert(
    fc.property(
      fc.array(
        fc.double({ min: -2, max: 5.5, noNaN: true }).map((e) => 10 ** e),
        { minLength: 1, maxLength: 300 },
      ),
      fc.constantFrom(0.5, 0.9, 0.95, 0.99),
      (latencies, p) => {
        const histogram = new Array<number>(LATENCY_BUCKETS).fill(0);
        for (const ms of latencies) histogram[latencyBucket(ms)]!++;
        const estimate = latencyPercentile(histogram, p, Math.max(...latencies));
        assert.ok(estimate !== null);
        assert.equal(latencyBucket(estimate), latencyBucket(exactPercentile(latencies, p)));
      },
    ),
    { numRuns: 300 },
  );
});

test('splitting a range: whole days and hours from the rollups, the ends from raw records while kept', () => {
  const h = (n: number) => BASE + n * HOUR;
  const r = (from: number | null, to: number | null) => ({ from, to });
  assert.deepEqual(splitRange(undefined, undefined, 0), { daily: [r(null, null)], hourly: [], raw: [] });
  assert.deepEqual(splitRange(h(1), h(5), 0), { daily: [], hourly: [r(h(1), h(5))], raw: [] });
  assert.deepEqual(splitRange(h(1) + 5, h(5) - 5, 0), {
    daily: [],
    hourly: [r(h(2), h(4))],
    raw: [r(h(1) + 5, h(2)), r(h(4), h(5) - 5)],
  });
  assert.deepEqual(splitRange(h(-2) + 5, h(50) + 5, 0), {
    daily: [r(h(0), h(48))],
    hourly: [r(h(-1), h(0)), r(h(48), h(50))],
    raw: [r(h(-2) + 5, h(-1)), r(h(50), h(50) + 5)],
  });
  assert.deepEqual(splitRange(h(-2) + 5, h(50) + 5, 0, false), {
    daily: [],
    hourly: [r(h(-1), h(50))],
    raw: [r(h(-2) + 5, h(-1)), r(h(50), h(50) + 5)],
  });
  assert.deepEqual(splitRange(h(3), undefined, 0), {
    daily: [r(h(24), null)],
    hourly: [r(h(3), h(24))],
    raw: [],
  });
  assert.deepEqual(splitRange(h(1) + 5, h(1) + 50, 0), {
    daily: [],
    hourly: [],
    raw: [r(h(1) + 5, h(1) + 50)],
  });
  assert.deepEqual(splitRange(h(1), h(1) + 50, 0), { daily: [], hourly: [], raw: [r(h(1), h(1) + 50)] });
  assert.deepEqual(splitRange(h(1) + 5, h(2) + 5, 0), {
    daily: [],
    hourly: [],
    raw: [r(h(1) + 5, h(2)), r(h(2), h(2) + 5)],
  });
  // Raw records kept from h(3) on: earlier partial hours are read whole from the rollups.
  assert.deepEqual(splitRange(h(1) + 5, h(4) + 5, h(3)), {
    daily: [],
    hourly: [r(h(1), h(4))],
    raw: [r(h(4), h(4) + 5)],
  });
  assert.deepEqual(splitRange(h(1) + 5, h(1) + 50, h(3)), { daily: [], hourly: [r(h(1), h(2))], raw: [] });
  assert.deepEqual(splitRange(h(2), h(1), 0), { daily: [], hourly: [], raw: [] });
});

test('the price table: first match wins, patterns as in allowlists, no price means no cost', () => {
  const pricing: Pricing = {
    currency: 'USD',
    models: {
      'mistral-small-2506': { prompt: 1, completion: 1 },
      'mistral-small-*': { prompt: 0.1, completion: 0.3 },
      '*': { prompt: 9, completion: 9 },
    },
  };
  assert.deepEqual(priceOf(pricing, 'mistral-small-2506'), { prompt: 1, completion: 1 });
  assert.deepEqual(priceOf(pricing, 'mistral-small-latest'), { prompt: 0.1, completion: 0.3 });
  assert.deepEqual(priceOf(pricing, 'codestral-latest'), { prompt: 9, completion: 9 });
  assert.equal(priceOf(PRICING, 'codestral-latest'), undefined);
  assert.equal(priceOf(PRICING, null), undefined);
  assert.equal(costOf({ prompt: 0.1, completion: 0.3 }, 1_000_000, 2_000_000), 0.7);
});

test('configuration: pricing and retention are validated at start', () => {
  const config = loadConfig({}, {});
  assert.equal(config.usage.retentionDays, 90);
  assert.deepEqual(config.pricing, { currency: 'EUR', models: {} });
  const withFile = (yaml: string) => {
    const file = join(dir, `config-${runs++}.yaml`);
    writeFileSync(file, yaml);
    return loadConfig({ config: file }, {});
  };
  const good = withFile(
    'pricing:\n  currency: USD\n  models:\n    mistral-small-*: { prompt: 0.1, completion: 0.3 }\nusage:\n  retentionDays: 0\n',
  );
  assert.deepEqual(good.pricing.models, { 'mistral-small-*': { prompt: 0.1, completion: 0.3 } });
  assert.equal(good.usage.retentionDays, 0);
  assert.throws(() => withFile('pricing:\n  currency: euro\n'), /pricing\.currency/);
  assert.throws(
    () => withFile('pricing:\n  models:\n    m: { prompt: -1, completion: 1 }\n'),
    /pricing\.models\.m\.prompt/,
  );
  assert.throws(
    () => withFile('pricing:\n  models:\n    m: { prompt: 1 }\n'),
    /pricing\.models\.m\.completion/,
  );
  assert.throws(
    () => withFile('pricing:\n  models:\n    "bad model!": { prompt: 1, completion: 1 }\n'),
    /pricing\.models/,
  );
  assert.throws(() => withFile('usage:\n  retentionDays: -1\n'), /usage\.retentionDays/);
});

for (const s of STORES) {
  describeStore(s, 'usage rollups and reports', () => {
    test('rollups equal the sums of the raw records, whatever the batches, duplicates and retries', async () => {
      await fc.assert(
        fc.asyncProperty(workloadArb, async (w) => {
          const store = await s.open();
          try {
            await write(store, w);
            const { rollups, raw } = await rollupsAndRawSums(s, store);
            assert.deepEqual(rollups, raw);
            const daily = await rollupsAndRawSums(s, store, 'day');
            assert.deepEqual(daily.rollups, daily.raw);
            const requests = rollups.reduce<number>(
              (n, r) => n + Number((r as { requests: number }).requests),
              0,
            );
            assert.equal(requests, firstOfEachId(w.records).length, 'each id counted once');
          } finally {
            await store.close();
          }
        }),
        { numRuns: 60 },
      );
    });

    test('reports by every grouping and over any range equal the exact figures, before and after retention', async () => {
      // Any millisecond, or hour and day boundaries (so that every source is read: days, hours, raw).
      const rangeEnd = fc.option(
        fc.oneof(
          fc.integer({ min: -HOUR, max: 3 * DAY + HOUR }),
          fc.integer({ min: -1, max: 3 * 24 + 1 }).map((h) => h * HOUR),
          fc.integer({ min: 0, max: 3 }).map((d) => d * DAY),
        ),
        { nil: undefined },
      );
      await fc.assert(
        fc.asyncProperty(
          workloadArb,
          fc.constantFrom(...USAGE_GROUPS),
          rangeEnd,
          rangeEnd,
          fc.option(fc.integer({ min: 0, max: 3 * DAY }), { nil: undefined }),
          async (w, by, a, b, pruneAt) => {
            const store = await s.open();
            try {
              await write(store, w);
              const stored = firstOfEachId(w.records);
              let rawSince = 0;
              if (pruneAt !== undefined) {
                await store.pruneUsage(BASE + pruneAt);
                rawSince = Math.floor((BASE + pruneAt) / HOUR) * HOUR;
              }
              const [from, to] =
                a !== undefined && b !== undefined && a > b
                  ? [BASE + b, BASE + a]
                  : [a === undefined ? a : BASE + a, b === undefined ? b : BASE + b];
              const report = await store.usageReport({ by, from, to, pricing: PRICING });
              const empty = from !== undefined && to !== undefined && from >= to;
              const [realFrom, realTo] = effectiveRange(from, to, rawSince);
              const expected = expectedReport(stored, by, realFrom, realTo, PRICING);
              assert.equal(report.currency, 'EUR');
              assert.equal(report.rows.length, empty ? 0 : expected.size);
              for (const row of report.rows)
                assertRowMatches(row, expected.get(row.group), `${by} ${String(row.group)}`);
              if (by === 'hour' || by === 'day') {
                const times = report.rows.map((r) => Number(r.group));
                assert.deepEqual(
                  times,
                  [...times].sort((x, y) => x - y),
                  'time order',
                );
              }
              // Budgets and the spike baseline read the same sums.
              const since = from ?? BASE;
              const [realSince] = effectiveRange(since, undefined, rawSince);
              for (const keyId of ['key_a', 'key_b', 'key_c']) {
                const want = stored
                  .filter((r) => r.keyId === keyId && r.time >= (realSince ?? since))
                  .reduce((n, r) => n + r.totalTokens, 0);
                assert.equal(await store.tokensUsed({ keyId, since }), want, `tokensUsed ${keyId}`);
              }
              const hourly = await store.hourlyCounts('key_a', since);
              const wantHourly = expectedReport(
                stored.filter((r) => r.keyId === 'key_a'),
                'hour',
                realSince,
                undefined,
                PRICING,
              );
              assert.deepEqual(
                hourly,
                [...wantHourly]
                  .map(([hour, e]) => ({ hour: Number(hour), requests: e.requests, tokens: e.totalTokens }))
                  .sort((x, y) => x.hour - y.hour),
              );
            } finally {
              await store.close();
            }
          },
        ),
        { numRuns: 150 },
      );
    });

    test('a duplicate id never counts twice: in one batch, in a retried batch, or with other figures', async () => {
      const store = await s.open();
      try {
        const r = (id: string, prompt: number): UsageRecord => ({
          id,
          time: BASE + 90 * 60_000,
          keyId: 'key_dup',
          workspaceId: 'ws_default',
          model: 'mistral-small-latest',
          endpoint: '/v1/chat/completions',
          status: 200,
          promptTokens: prompt,
          completionTokens: 10,
          totalTokens: prompt + 10,
          latencyMs: 40,
          ttftMs: null,
          clientIp: '10.0.0.1',
        });
        await store.recordUsage([r('d1', 100), r('d1', 100), r('d2', 5)]);
        await store.recordUsage([r('d1', 100), r('d2', 5)]); // the same batch again
        await store.recordUsage([r('d2', 9999)]); // the same id with other figures: the first one stands
        const { rows } = await store.usageReport({ by: 'key', pricing: PRICING });
        assert.equal(rows.length, 1);
        assert.deepEqual(
          {
            requests: rows[0]?.requests,
            prompt: rows[0]?.promptTokens,
            total: rows[0]?.totalTokens,
            cost: rows[0]?.cost,
          },
          { requests: 2, prompt: 105, total: 125, cost: 0.0000165 },
        );
        assert.deepEqual(await store.usageTotals({ keyId: 'key_dup' }), [
          {
            keyId: 'key_dup',
            name: null,
            requests: 2,
            errors: 0,
            promptTokens: 105,
            completionTokens: 20,
            totalTokens: 125,
          },
        ]);
      } finally {
        await store.close();
      }
    });

    test('retention deletes raw records but keeps the rollups: reports and budgets still see every token', async () => {
      const store = await s.open();
      // 14:30 UTC on the 20th: the day started 14.5 h ago, the month 19 days ago.
      const now = Date.UTC(2026, 2, 20, 14, 30);
      const dayStart = Date.UTC(2026, 2, 20);
      const monthStart = Date.UTC(2026, 2, 1);
      const at = (time: number, id: string, tokens: number): UsageRecord => ({
        id,
        time,
        keyId: 'key_kept',
        workspaceId: 'ws_default',
        model: 'mistral-large-latest',
        endpoint: '/v1/chat/completions',
        status: 200,
        promptTokens: tokens,
        completionTokens: 0,
        totalTokens: tokens,
        latencyMs: 250,
        ttftMs: null,
        clientIp: '10.0.0.1',
      });
      const records = [
        at(now - 40 * DAY, 'old', 1000), // last month
        at(monthStart + 5 * DAY + 17 * 60_000, 'month', 200),
        at(dayStart + 3 * HOUR + 1, 'today', 30),
        at(now - 10 * 60_000, 'this hour', 4), // 14:20: kept (the current hour is never pruned)
      ];
      try {
        await store.recordUsage(records);
        const before = await store.usageReport({ by: 'day', pricing: PRICING });
        const budgetsBefore = [
          await store.tokensUsed({ keyId: 'key_kept', since: dayStart }),
          await store.tokensUsed({ keyId: 'key_kept', since: monthStart }),
          await store.tokensUsed({ workspaceId: 'ws_default', since: monthStart }),
        ];
        assert.deepEqual(budgetsBefore, [34, 234, 234]);

        assert.equal(await store.pruneUsage(now), 3, 'everything before 14:00 goes');
        const ids = (await s.query(store, 'SELECT id FROM usage_records')).map((r) => r.id);
        assert.deepEqual(ids, ['this hour']);
        const [rollups] = await s.query(store, 'SELECT SUM(total_tokens) AS t FROM usage_hourly');
        assert.equal(rollups?.t, 1234, 'the rollups are all kept');

        assert.deepEqual(await store.usageReport({ by: 'day', pricing: PRICING }), before);
        assert.deepEqual(
          [
            await store.tokensUsed({ keyId: 'key_kept', since: dayStart }),
            await store.tokensUsed({ keyId: 'key_kept', since: monthStart }),
            await store.tokensUsed({ workspaceId: 'ws_default', since: monthStart }),
          ],
          budgetsBefore,
        );
        // The limiter seeds its budget counters from the store: 34 used today of 40.
        const limiter = createMemoryLimiter({ store, clock: () => now });
        const subject: LimitSubject = {
          keyId: 'key_kept',
          workspaceId: 'ws_default',
          limits: { rpm: null, tpm: null, concurrency: null },
          keyBudget: { day: 40, month: null },
          workspaceBudget: { day: null, month: null },
        };
        const refused = await limiter.admit(subject, 10);
        assert.equal(refused.ok, false);
        assert.equal(refused.ok ? undefined : refused.reason, 'key_budget_day');
        assert.equal((await limiter.admit(subject, 6)).ok, true);
        limiter.close();

        // A late copy of a deleted record (or any record from the deleted hours) cannot be told from a
        // duplicate any more: it is not counted.
        await store.recordUsage([at(dayStart + 3 * HOUR + 1, 'today', 30), at(now - 2 * HOUR, 'late', 7)]);
        assert.equal(await store.tokensUsed({ keyId: 'key_kept', since: dayStart }), 34);
        // A range starting inside a deleted hour counts that hour whole; inside kept hours, exactly.
        const partial = await store.usageReport({ by: 'key', from: dayStart + 3 * HOUR + 30 * 60_000 });
        assert.equal(partial.rows[0]?.totalTokens, 34);
        const exact = await store.usageReport({ by: 'key', from: now - 5 * 60_000 });
        assert.equal(exact.rows.length, 0, '14:25 onwards: the record of 14:20 is out');
        // Pruning again changes nothing.
        assert.equal(await store.pruneUsage(now), 0);
      } finally {
        await store.close();
      }
    });

    test('migration 4 backfills the rollups from the raw records already stored', async () => {
      // The schema as Keygate left it at version 3, with raw records and no rollups.
      const store = await s.open({ version: 3 });
      const records = fc.sample(recordArb, { numRuns: 300, seed: 42 });
      await s.query(
        store,
        `INSERT INTO usage_records (id, time, key_id, workspace_id, model, endpoint, status, prompt_tokens,
           completion_tokens, total_tokens, latency_ms, ttft_ms, client_ip, tokens_estimated)
         VALUES ${records.map(() => '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')} ON CONFLICT DO NOTHING`,
        records.flatMap((r) => [
          r.id,
          r.time,
          r.keyId,
          r.workspaceId,
          r.model,
          r.endpoint,
          r.status,
          r.promptTokens,
          r.completionTokens,
          r.totalTokens,
          r.latencyMs,
          null,
          r.clientIp,
          r.tokensEstimated ? 1 : 0,
        ]),
      );
      try {
        assert.equal(await store.migrate(), MIGRATIONS.at(-1)?.version);
        const { rollups, raw } = await rollupsAndRawSums(s, store);
        assert.ok(rollups.length > 10);
        assert.deepEqual(rollups, raw);
        const daily = await rollupsAndRawSums(s, store, 'day');
        assert.deepEqual(daily.rollups, daily.raw);
        const stored = firstOfEachId(records);
        const report = await store.usageReport({ by: 'model', pricing: PRICING });
        const expected = expectedReport(stored, 'model', undefined, undefined, PRICING);
        for (const row of report.rows)
          assertRowMatches(row, expected.get(row.group), `model ${String(row.group)}`);
      } finally {
        await store.close();
      }
    });

    test('a report over a million requests’ worth of rollups answers (the time is printed)', async (t) => {
      const store = await s.open();
      // 30 days × 24 hours × 50 keys × 2 models × 2 endpoints = 144 000 hourly rollup rows of 7 requests
      // each (and their 6 000 daily sums).
      const rows = 30 * 24 * 50 * 2 * 2;
      const start = Date.UTC(2026, 0, 1);
      // (i is a BIGINT so that PostgreSQL computes the hours in 64 bits, as SQLite does anyway.)
      await s.exec(
        store,
        `
        WITH RECURSIVE n(i) AS (SELECT CAST(0 AS BIGINT) UNION ALL SELECT i + 1 FROM n WHERE i < ${rows - 1})
        INSERT INTO usage_hourly (hour, workspace_id, key_id, model, endpoint, requests, errors, prompt_tokens,
          completion_tokens, total_tokens, estimated_requests, latency_sum_ms, latency_max_ms, lat_10, lat_15, lat_20)
        SELECT ${start} + (i / 200) * ${HOUR}, 'ws_default', 'key_' || (i % 50),
          CASE (i / 50) % 2 WHEN 0 THEN 'mistral-small-latest' ELSE 'mistral-large-latest' END,
          CASE (i / 100) % 2 WHEN 0 THEN '/v1/chat/completions' ELSE '/v1/embeddings' END,
          7, 1, 700, 300, 1000, 0, 7 * 90.0, 1400.0, 3, 3, 1
        FROM n;
        -- The daily rollups are the sums of the hours, as recordUsage (and migration 4) keep them.
        INSERT INTO usage_daily (day, workspace_id, key_id, model, endpoint, requests, errors, prompt_tokens,
          completion_tokens, total_tokens, estimated_requests, latency_sum_ms, latency_max_ms, ${LATENCY_COLUMNS.join(', ')})
        SELECT (hour / ${DAY}) * ${DAY}, workspace_id, key_id, model, endpoint, SUM(requests), SUM(errors),
          SUM(prompt_tokens), SUM(completion_tokens), SUM(total_tokens), SUM(estimated_requests), SUM(latency_sum_ms),
          MAX(latency_max_ms), ${LATENCY_COLUMNS.map((c) => `SUM(${c})`).join(', ')}
        FROM usage_hourly GROUP BY 1, 2, 3, 4, 5`,
      );
      try {
        const timings: string[] = [];
        for (const by of ['key', 'model', 'endpoint', 'workspace', 'day', 'hour'] as const) {
          const began = performance.now();
          const report = await store.usageReport({ by, pricing: PRICING });
          const ms = performance.now() - began;
          timings.push(`by ${by}: ${report.rows.length} rows in ${ms.toFixed(0)} ms`);
          assert.equal(
            report.rows.reduce((n, r) => n + r.requests, 0),
            rows * 7,
          );
          assert.equal(
            report.rows.length,
            { key: 50, model: 2, endpoint: 2, workspace: 1, day: 30, hour: 720 }[by],
          );
        }
        const began = performance.now();
        const one = await store.usageReport({
          by: 'day',
          keyId: 'key_7',
          from: start + 7 * DAY,
          to: start + 14 * DAY,
        });
        timings.push(`one key, 7 days by day: ${(performance.now() - began).toFixed(0)} ms`);
        assert.equal(one.rows.length, 7);
        assert.equal(one.rows[0]?.requests, 24 * 4 * 7);
        const ranged = performance.now();
        const partial = await store.usageReport({
          by: 'key',
          from: start + 90 * 60_000,
          to: start + 20 * DAY + 5,
        });
        timings.push(`by key from 01:30 on day 1 to day 21: ${(performance.now() - ranged).toFixed(0)} ms`);
        assert.equal(
          partial.rows.reduce((n, r) => n + r.requests, 0),
          (20 * 24 - 2) * 200 * 7, // the partial hours at the ends: no raw records here
        );
        const budget = performance.now();
        const tokens = await store.tokensUsed({ workspaceId: 'ws_default', since: start + 29 * DAY });
        timings.push(`a workspace's tokens today: ${(performance.now() - budget).toFixed(0)} ms`);
        assert.equal(tokens, 24 * 200 * 1000);
        t.diagnostic(
          `${(rows * 7).toLocaleString('en')} requests in ${rows.toLocaleString('en')} rollup rows; ${timings.join('; ')}`,
        );
      } finally {
        await store.close();
      }
    });
  });
}
