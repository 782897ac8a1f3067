/**
 * `/metrics` over real HTTPS: a known mix of /v1 requests, then the exposition text parsed by a
 * strict parser of the Prometheus text format (test/support/prometheus.ts) and the exact values
 * checked; who may read it; and that no label carries a key or a client's query string.
 */

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { generateKey } from '../../src/keys/format.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { type MetricFamily, parseExposition, samplesNamed, sampleValue } from '../support/prometheus.ts';
import { eventually } from '../support/wait.ts';

let t: TestGateway;
const keys = { main: '', chatOnly: '', limited: '', metrics: '', admin: '' };
const unknownKey = generateKey();
const QUERY_MARKER = 'query-marker-7f3a';
let modelByIdStatus = 0;

const CHAT = '/v1/chat/completions';
const EMBEDDINGS = '/v1/embeddings';
const MODELS = '/v1/models';
const MODEL_BY_ID = '/v1/models/{id}';

async function scrape(key = keys.metrics): Promise<{ text: string; families: Map<string, MetricFamily> }> {
  const res = await t.call('/metrics', { headers: { authorization: `Bearer ${key}` } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  assert.equal(res.headers['cache-control'], 'no-store');
  return { text: res.text, families: parseExposition(res.text) };
}

function total(families: Map<string, MetricFamily>, name: string): number {
  return samplesNamed(families, name).reduce((sum, s) => sum + s.value, 0);
}

/** Scrapes until `done` holds (the access log, metrics and usage are recorded when a response closes). */
async function scrapeUntil(
  done: (families: Map<string, MetricFamily>) => boolean,
): Promise<{ text: string; families: Map<string, MetricFamily> }> {
  return eventually(async () => {
    const result = await scrape();
    return done(result.families) ? result : undefined;
  }, 'the metrics of the requests to be recorded');
}

before(async () => {
  t = await startTestGateway({
    configure: (c) => {
      c.auth.failuresPerMinute = 1000;
    },
  });
  keys.main = (await t.createKey('main')).key;
  keys.chatOnly = (await t.createKey('chat only', undefined, { scopes: ['chat'] })).key;
  keys.limited = (await t.createKey('limited', undefined, { limits: { rpm: 1 } })).key;
  keys.metrics = (await t.createKey('prometheus', undefined, { scopes: ['metrics'] })).key;
  keys.admin = (await t.createKey('operator', undefined, { scopes: ['admin'] })).key;
  // The creations reach the verifier first: a poll seeing one later drops what the requests below
  // cached, and the hit count asserted then depends on when the poll ran.
  await t.gateway.verifier.syncChanges();

  const post = (path: string, key: string, body: string) =>
    t.call(path, { method: 'POST', headers: bearer(key), body });
  const expectStatus = async (pending: ReturnType<typeof t.call>, status: number) => {
    const res = await pending;
    assert.equal(res.status, status, res.text);
    return res;
  };
  // The known mix; each line is one request.
  await expectStatus(post(CHAT, keys.main, chatBody()), 200);
  const streamed = await expectStatus(post(CHAT, keys.main, chatBody({ stream: true })), 200);
  assert.ok(streamed.text.endsWith('data: [DONE]\n\n'));
  await expectStatus(
    post(EMBEDDINGS, keys.main, JSON.stringify({ model: 'mistral-embed', input: ['one two three'] })),
    200,
  );
  await expectStatus(post(CHAT, unknownKey, chatBody()), 401);
  await expectStatus(
    post(EMBEDDINGS, keys.chatOnly, JSON.stringify({ model: 'mistral-embed', input: 'x' })),
    403,
  );
  await expectStatus(post(CHAT, keys.limited, chatBody()), 200);
  await expectStatus(post(CHAT, keys.limited, chatBody()), 429);
  await expectStatus(t.call(`${MODELS}?marker=${QUERY_MARKER}`, { headers: bearer(keys.main) }), 200);
  await expectStatus(t.call(`${MODELS}?api_key=${keys.main}`), 400);
  // A key pasted where a model name goes: refused (422), never forwarded, never a label value.
  await expectStatus(post(CHAT, keys.main, chatBody({ model: keys.main })), 422);
  // A key pasted into the path.
  const byId = await t.call(`${MODELS}/${keys.limited}`, { headers: bearer(keys.main) });
  modelByIdStatus = byId.status;
  assert.ok(modelByIdStatus >= 400, byId.text);
});
after(async () => {
  await t.close();
});

describe('/metrics after a known mix of requests', () => {
  let families: Map<string, MetricFamily>;
  let text: string;

  before(async () => {
    // 11 requests; 9 of them with a valid key, so 9 usage records.
    ({ families, text } = await scrapeUntil(
      (f) =>
        total(f, 'keygate_requests_total') >= 11 &&
        sampleValue(f, 'keygate_usage_records_written_total') === 9,
    ));
  });

  test('requests are counted by route template, status and model', () => {
    const requests = (route: string, status: number, model: string) =>
      sampleValue(families, 'keygate_requests_total', { route, status: String(status), model });
    assert.equal(requests(CHAT, 200, 'mistral-small-latest'), 3);
    assert.equal(requests(CHAT, 422, ''), 1, 'the key-shaped model');
    assert.equal(requests(EMBEDDINGS, 200, 'mistral-embed'), 1);
    assert.equal(requests(CHAT, 401, ''), 1);
    assert.equal(requests(EMBEDDINGS, 403, ''), 1);
    assert.equal(requests(CHAT, 429, 'mistral-small-latest'), 1);
    assert.equal(requests(MODELS, 200, ''), 1);
    assert.equal(requests(MODELS, 400, ''), 1);
    assert.equal(requests(MODEL_BY_ID, modelByIdStatus, ''), 1, 'a key-shaped id names no model');
    assert.equal(total(families, 'keygate_requests_total'), 11);
    assert.equal(families.get('keygate_requests_total')?.type, 'counter');
  });

  test('tokens by type and model, as the provider reported them', () => {
    const tokens = (type: string, model: string) =>
      sampleValue(families, 'keygate_tokens_total', { type, model });
    // chat: "hello there" → 2 prompt tokens, "Echo: hello there" → 3 completion tokens; three served.
    assert.equal(tokens('prompt', 'mistral-small-latest'), 6);
    assert.equal(tokens('completion', 'mistral-small-latest'), 9);
    // The key-shaped model was refused before the provider: no tokens, no `other` series.
    assert.equal(tokens('prompt', 'other'), undefined);
    assert.equal(tokens('prompt', 'mistral-embed'), 3);
    assert.equal(tokens('completion', 'mistral-embed'), 0);
    assert.equal(samplesNamed(families, 'keygate_tokens_total').length, 4);
  });

  test('authentication failures and refusals by reason, every reason present from the start', () => {
    const auth = (reason: string) => sampleValue(families, 'keygate_auth_failures_total', { reason });
    assert.equal(auth('unknown'), 1);
    assert.equal(auth('key_in_url'), 1);
    for (const reason of ['missing', 'malformed', 'revoked', 'expired', 'rotated', 'flood']) {
      assert.equal(auth(reason), 0, reason);
    }
    const refused = (reason: string) => sampleValue(families, 'keygate_refusals_total', { reason });
    assert.equal(refused('insufficient_scope'), 1);
    assert.equal(refused('rpm'), 1);
    for (const reason of ['model_not_allowed', 'ip_not_allowed', 'tpm', 'concurrency', 'key_budget_day']) {
      assert.equal(refused(reason), 0, reason);
    }
    assert.equal(total(families, 'keygate_refusals_total'), 2);
    for (const kind of ['timeout', 'unreachable', 'broken']) {
      assert.equal(sampleValue(families, 'keygate_upstream_errors_total', { kind }), 0, kind);
    }
  });

  test('latency histograms agree with the request counts', () => {
    const count = (name: string, route: string) => sampleValue(families, `${name}_count`, { route });
    const duration = 'keygate_request_duration_seconds';
    assert.equal(families.get(duration)?.type, 'histogram');
    assert.equal(count(duration, CHAT), 6);
    assert.equal(count(duration, EMBEDDINGS), 2);
    assert.equal(count(duration, MODELS), 2);
    assert.equal(count(duration, MODEL_BY_ID), 1);
    assert.equal(total(families, `${duration}_count`), total(families, 'keygate_requests_total'));
    // Only requests forwarded to the provider have an upstream latency.
    const upstream = 'keygate_upstream_duration_seconds';
    assert.equal(count(upstream, CHAT), 3);
    assert.equal(count(upstream, EMBEDDINGS), 1);
    assert.equal(count(upstream, MODELS), 1);
    // A key-shaped id names no model: never forwarded.
    assert.equal(count(upstream, MODEL_BY_ID) ?? 0, 0);
    // Time to first byte: streams only.
    assert.equal(count('keygate_time_to_first_byte_seconds', CHAT), 1);
    assert.equal(samplesNamed(families, 'keygate_time_to_first_byte_seconds_count').length, 1);

    for (const name of [duration, upstream, 'keygate_time_to_first_byte_seconds']) {
      for (const c of samplesNamed(families, `${name}_count`)) {
        const route = c.labels.route!;
        const buckets = samplesNamed(families, `${name}_bucket`).filter((b) => b.labels.route === route);
        assert.equal(buckets.length, 16, `${name} ${route}: 15 buckets and +Inf`);
        assert.equal(buckets[0]!.labels.le, '0.0005');
        assert.equal(buckets.at(-2)!.labels.le, '30');
        assert.equal(buckets.at(-1)!.labels.le, '+Inf');
        assert.equal(buckets.at(-1)!.value, c.value);
        const sum = sampleValue(families, `${name}_sum`, { route })!;
        assert.ok(sum > 0 && sum < 30 * c.value, `${name} ${route}: sum ${sum}`);
      }
    }
  });

  test('gauges and mirrored counters read the live components', () => {
    const { verifier } = t.gateway;
    assert.equal(sampleValue(families, 'keygate_key_cache_hits_total'), verifier.hits);
    assert.equal(sampleValue(families, 'keygate_key_cache_misses_total'), verifier.misses);
    assert.ok(verifier.misses >= 5, 'four keys and the unknown one were each looked up once');
    assert.ok(verifier.hits >= 5);
    assert.equal(families.get('keygate_key_cache_entries')?.type, 'gauge');
    // The entries gauge is read at scrape time (a key created meanwhile may have been evicted by
    // the change feed, so its level is checked against the live cache below).
    assert.ok(sampleValue(families, 'keygate_key_cache_entries')! >= 1);
    assert.equal(families.get('keygate_usage_queue_depth')?.type, 'gauge');
    assert.equal(sampleValue(families, 'keygate_usage_queue_depth'), 0);
    assert.equal(sampleValue(families, 'keygate_usage_records_written_total'), 9);
    assert.equal(sampleValue(families, 'keygate_usage_records_dropped_total'), 0);
    assert.equal(families.get('keygate_inflight_requests')?.type, 'gauge');
    assert.equal(sampleValue(families, 'keygate_inflight_requests'), 0);
  });

  test('the cache-entries gauge is the cache size at the moment of the scrape', async () => {
    // The change feed may drop entries between a scrape and the read of the cache below: the two
    // agree when nothing happened in between.
    let seen: [number | undefined, number] = [undefined, 0];
    await eventually(
      async () => {
        const { families: fresh } = await scrape();
        seen = [sampleValue(fresh, 'keygate_key_cache_entries'), t.gateway.verifier.cacheSize];
        return seen[0] === seen[1];
      },
      () => `the gauge to read the cache size (gauge ${seen[0]}, cache ${seen[1]})`,
    );
  });

  test('process metrics are there', () => {
    assert.ok(sampleValue(families, 'process_resident_memory_bytes')! > 0);
    assert.equal(families.get('process_cpu_seconds_total')?.type, 'counter');
    assert.ok(families.has('nodejs_eventloop_lag_seconds'));
  });

  test('the Grafana dashboard in docs/ reads metrics that exist', () => {
    const dashboard = JSON.parse(
      readFileSync(new URL('../../docs/grafana-dashboard.json', import.meta.url), 'utf8'),
    ) as {
      schemaVersion: number;
      __inputs: { name: string; pluginId: string }[];
      panels: { type: string; datasource?: { uid: string }; targets?: { expr: string }[] }[];
    };
    assert.ok(dashboard.schemaVersion >= 38);
    assert.deepEqual(
      dashboard.__inputs.map((i) => [i.name, i.pluginId]),
      [['DS_PROMETHEUS', 'prometheus']],
    );
    const names = new Set<string>();
    for (const panel of dashboard.panels) {
      if (panel.type === 'row') continue;
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's placeholder for the data source input
      assert.equal(panel.datasource?.uid, '${DS_PROMETHEUS}');
      assert.ok(panel.targets && panel.targets.length > 0);
      for (const target of panel.targets) {
        for (const [name] of target.expr.matchAll(/\b(?:keygate|process|nodejs)_[a-z0-9_]+/g))
          names.add(name);
      }
    }
    assert.ok(names.size >= 15, [...names].join(' '));
    for (const name of names) assert.ok(samplesNamed(families, name).length > 0, `${name} is not exposed`);
  });

  test('no label value carries a key, a query string or a raw path', () => {
    const secrets = [...Object.values(keys), unknownKey];
    for (const secret of secrets) assert.ok(!text.includes(secret), 'a key in the exposition text');
    assert.ok(!text.includes(QUERY_MARKER));
    const routes = new Set<string>();
    for (const family of families.values()) {
      for (const sample of family.samples) {
        for (const [name, value] of Object.entries(sample.labels)) {
          assert.ok(!value.includes('?'), `${sample.name} ${name}="${value}"`);
          assert.ok(
            !/\b[a-z][a-z0-9]{0,9}_[0-9A-Za-z]{38}\b/.test(value),
            `${sample.name} ${name}: key-shaped`,
          );
          if (name === 'route') routes.add(value);
        }
      }
    }
    assert.deepEqual([...routes].sort(), [CHAT, EMBEDDINGS, MODELS, MODEL_BY_ID].sort());
  });
});

describe('requests in flight', () => {
  test('a stream being served is in the gauge; a client that hangs up is counted as 499', async () => {
    const before = await scrape();
    const aborted = (f: Map<string, MetricFamily>) =>
      sampleValue(f, 'keygate_requests_total', { route: CHAT, status: '499', model: 'other' }) ?? 0;
    assert.equal(aborted(before.families), 0);
    const res = await request(`${t.url}${CHAT}`, {
      method: 'POST',
      headers: bearer(keys.main),
      body: JSON.stringify({
        model: 'stub-slow-stream',
        stream: true,
        messages: [{ role: 'user', content: 'hi' }],
      }),
      dispatcher: t.dispatcher,
    });
    assert.equal(res.statusCode, 200);
    const chunks = res.body[Symbol.asyncIterator]();
    assert.equal((await chunks.next()).done, false);
    const during = (await scrape()).families;
    assert.equal(sampleValue(during, 'keygate_inflight_requests'), 1);
    await chunks.return?.(); // hang up mid-stream
    const { families } = await scrapeUntil((f) => aborted(f) === 1);
    assert.equal(aborted(families), 1);
    assert.equal(sampleValue(families, 'keygate_inflight_requests'), 0);
    const ttfb = (f: Map<string, MetricFamily>) =>
      sampleValue(f, 'keygate_time_to_first_byte_seconds_count', { route: CHAT });
    assert.equal(ttfb(families), ttfb(before.families)! + 1);
  });
});

describe('who may read /metrics', () => {
  test('no credentials: 401 with a Bearer challenge', async () => {
    const res = await t.call('/metrics');
    assert.equal(res.status, 401);
    assert.equal(res.headers['www-authenticate'], 'Bearer realm="keygate"');
    assert.match(res.text, /metrics/);
    assert.ok(!res.text.includes('keygate_'));
  });

  test('a malformed header: 400 invalid_request; an unknown key: 401 invalid_token', async () => {
    const malformed = await t.call('/metrics', { headers: { authorization: `Bearer ${keys.metrics} x` } });
    assert.equal(malformed.status, 400);
    assert.equal(malformed.headers['www-authenticate'], 'Bearer realm="keygate", error="invalid_request"');
    const unknown = await t.call('/metrics', { headers: { authorization: `Bearer ${generateKey()}` } });
    assert.equal(unknown.status, 401);
    assert.equal(unknown.headers['www-authenticate'], 'Bearer realm="keygate", error="invalid_token"');
  });

  test('an inference-only key: 403 naming the scope "metrics"', async () => {
    const res = await t.call('/metrics', { headers: { authorization: `Bearer ${keys.main}` } });
    assert.equal(res.status, 403);
    assert.equal(
      res.headers['www-authenticate'],
      'Bearer realm="keygate", error="insufficient_scope", scope="metrics"',
    );
    const body = res.json() as { code: string; message: string };
    assert.equal(body.code, 'insufficient_scope');
    assert.match(body.message, /"metrics"/);
  });

  test('a key in the URL: 400, even a valid one', async () => {
    const res = await t.call(`/metrics?token=${keys.metrics}`);
    assert.equal(res.status, 400);
    assert.ok(!res.text.includes(keys.metrics));
  });

  test('an admin key may read it; other methods: 405', async () => {
    const { families } = await scrape(keys.admin);
    assert.ok(families.has('keygate_requests_total'));
    const post = await t.call('/metrics', { method: 'POST', headers: bearer(keys.metrics), body: '' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET');
  });
});
