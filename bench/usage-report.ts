/**
 * `npm run bench:usage`: how fast the usage reports behind the console's Usage page answer with
 * months of data. Seeds a SQLite store with 90 days of traffic (every hour, `--keys` keys × 3
 * models), then times the queries the page makes through the management API over HTTPS.
 *
 *   npm run bench:usage                     50 keys (324 000 hourly rows), 20 runs per query
 *   npm run bench:usage -- --keys 10 --runs 5
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { loadConfig } from '../src/config/config.ts';
import { startGateway } from '../src/http/server.ts';
import { createKey } from '../src/keys/service.ts';
import type { UsageRecord } from '../src/store/types.ts';

const { values } = parseArgs({
  options: { keys: { type: 'string', default: '50' }, runs: { type: 'string', default: '20' } },
});
const KEYS = Number(values.keys);
const RUNS = Number(values.runs);
const DAYS = 90;
const MODELS = ['mistral-small-latest', 'mistral-large-latest', 'mistral-embed'];
const HOUR = 3_600_000;

const dataDir = mkdtempSync(join(tmpdir(), 'keygate-bench-usage-'));
const config = loadConfig({ dataDir, port: '0' }, { KEYGATE_UPSTREAM_URL: 'http://127.0.0.1:9' });
config.log.level = 'silent';
const gateway = await startGateway(config, { env: {} });
try {
  const deps = { store: gateway.store, pepper: gateway.secrets.pepper, prefix: config.keys.prefix };
  const admin = await createKey(deps, { name: 'bench admin', scopes: ['admin'] });
  const keyIds: string[] = [];
  for (let k = 0; k < KEYS; k++) keyIds.push((await createKey(deps, { name: `app ${k}` })).record.id);

  const now = Math.floor(Date.now() / HOUR) * HOUR;
  const seedStarted = performance.now();
  let rows = 0;
  for (let h = DAYS * 24; h > 0; h--) {
    const batch: UsageRecord[] = [];
    for (const keyId of keyIds) {
      for (const model of MODELS) {
        batch.push({
          id: `bench-${h}-${keyId}-${model}`,
          time: now - h * HOUR + 1000,
          keyId,
          workspaceId: 'ws_default',
          model,
          endpoint: model === 'mistral-embed' ? '/v1/embeddings' : '/v1/chat/completions',
          status: (h + rows) % 50 === 0 ? 429 : 200,
          promptTokens: 100 + (h % 7),
          completionTokens: 50,
          totalTokens: 150 + (h % 7),
          latencyMs: 200 + (h % 300),
          ttftMs: null,
          clientIp: '127.0.0.1',
        });
        rows++;
      }
    }
    await gateway.store.recordUsage(batch);
  }
  const seedSeconds = (performance.now() - seedStarted) / 1000;
  // Raw records older than the retention are deleted, as the gateway's sweep does: reports then
  // read the hourly and daily rollups for most of the range, as they will after months of use.
  await gateway.store.pruneUsage(Date.now() - 7 * 86_400_000);

  const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
  const iso = (ms: number) => encodeURIComponent(new Date(ms).toISOString());
  const queries: [string, string][] = [
    ['24 h by hour', `/admin/v1/usage?by=hour&from=${iso(now - 24 * HOUR)}`],
    ['7 d by hour', `/admin/v1/usage?by=hour&from=${iso(now - 7 * 24 * HOUR)}`],
    ['30 d by day', `/admin/v1/usage?by=day&from=${iso(now - 30 * 24 * HOUR)}`],
    ['90 d by day', `/admin/v1/usage?by=day&from=${iso(now - 90 * 24 * HOUR)}`],
    ['90 d by key (top keys)', `/admin/v1/usage?by=key&from=${iso(now - 90 * 24 * HOUR)}`],
    ['90 d by model', `/admin/v1/usage?by=model&from=${iso(now - 90 * 24 * HOUR)}`],
    ['90 d one key by day', `/admin/v1/usage?by=day&key_id=${keyIds[0]}&from=${iso(now - 90 * 24 * HOUR)}`],
  ];
  console.log(
    `seeded ${rows} usage records (${KEYS} keys × ${MODELS.length} models × ${DAYS * 24} hours) in ${seedSeconds.toFixed(1)} s`,
  );
  console.log('| query | median ms | p95 ms | rows |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const [name, path] of queries) {
    const times: number[] = [];
    let count = 0;
    for (let i = 0; i < RUNS; i++) {
      const started = performance.now();
      const res = await request(gateway.url + path, {
        dispatcher,
        headers: { authorization: `Bearer ${admin.key}` },
      });
      const body = (await res.body.json()) as { data: unknown[] };
      times.push(performance.now() - started);
      if (res.statusCode !== 200) throw new Error(`${path}: ${res.statusCode}`);
      count = body.data.length;
    }
    times.sort((a, b) => a - b);
    const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))] ?? 0;
    console.log(`| ${name} | ${at(0.5).toFixed(1)} | ${at(0.95).toFixed(1)} | ${count} |`);
  }
  await dispatcher.close();
} finally {
  await gateway.close();
  rmSync(dataDir, { recursive: true, force: true });
}
