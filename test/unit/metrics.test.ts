/**
 * The metrics module without a server: label values stay in small, bounded sets (the model label
 * is capped), the mirrored counters and gauges read their sources at scrape time, and the test
 * parser of the exposition format refuses what Prometheus would.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { generateKey } from '../../src/keys/format.ts';
import { Metrics, ModelLabels, type RequestOutcome, routeOf } from '../../src/metrics/index.ts';
import { parseExposition, samplesNamed, sampleValue } from '../support/prometheus.ts';

function outcome(fields: Partial<RequestOutcome> = {}): RequestOutcome {
  return {
    endpoint: '/v1/chat/completions',
    status: 200,
    model: 'mistral-small-latest',
    key: {},
    failure: undefined,
    upstreamMs: 10,
    ttftMs: null,
    stream: false,
    usage: { promptTokens: 2, completionTokens: 3 },
    ...fields,
  };
}

function sources() {
  return {
    keyCache: { hits: 0, misses: 0, cacheSize: 0 },
    usageQueue: { depth: 0, dropped: 0, written: 0 },
    inflight: () => 0,
  };
}

describe('model labels', () => {
  test('capped: past the limit, new models are "other" and the known ones stay', () => {
    const labels = new ModelLabels(3);
    assert.equal(labels.label('a', true), 'a');
    assert.equal(labels.label('b', true), 'b');
    assert.equal(labels.label('c', true), 'c');
    assert.equal(labels.label('d', true), 'other');
    assert.equal(labels.label('a', true), 'a');
    assert.equal(labels.label('c', false), 'c', 'a known model keeps its label on failures too');
    assert.equal(labels.size, 3);
  });

  test('only a model the provider served, shaped like a model id and not like a key, becomes a label', () => {
    const labels = new ModelLabels();
    assert.equal(labels.label('mistral-large-latest', false), 'other', 'refused or failed: not yet');
    assert.equal(labels.label(null, true), '');
    assert.equal(labels.label(generateKey(), true), 'other');
    assert.equal(labels.label(generateKey('acme'), true), 'other');
    assert.equal(labels.label('a"b', true), 'other');
    assert.equal(labels.label('x'.repeat(129), true), 'other');
    assert.equal(labels.label('other', true), 'other');
    assert.equal(labels.size, 0);
    assert.equal(
      labels.label('ft:open-mistral-7b:abc123:20240101', true),
      'ft:open-mistral-7b:abc123:20240101',
    );
  });

  test('through Metrics: 1000 distinct served models give at most limit + 1 label values', async () => {
    const metrics = new Metrics({ sources: sources(), modelLabelLimit: 200, defaultMetrics: false });
    for (let i = 0; i < 1000; i++) metrics.recordRequest(outcome({ model: `model-${i}` }), 5);
    const families = parseExposition((await metrics.scrape()).body);
    const requestModels = new Set(
      samplesNamed(families, 'keygate_requests_total').map((s) => s.labels.model),
    );
    assert.equal(requestModels.size, 201);
    assert.ok(
      requestModels.has('model-0') && requestModels.has('model-199') && !requestModels.has('model-200'),
    );
    const route = '/v1/chat/completions';
    assert.equal(
      sampleValue(families, 'keygate_requests_total', { route, status: '200', model: 'other' }),
      800,
    );
    const tokenModels = new Set(samplesNamed(families, 'keygate_tokens_total').map((s) => s.labels.model));
    assert.equal(tokenModels.size, 201);
    assert.equal(sampleValue(families, 'keygate_tokens_total', { type: 'prompt', model: 'other' }), 1600);
  });
});

describe('route labels', () => {
  test('a path template, never the raw path', () => {
    assert.equal(routeOf('/v1/chat/completions'), '/v1/chat/completions');
    assert.equal(routeOf('/v1/models'), '/v1/models');
    assert.equal(routeOf('/v1/models/mistral-small-latest'), '/v1/models/{id}');
    assert.equal(routeOf(`/v1/models/${generateKey()}`), '/v1/models/{id}');
    assert.equal(routeOf('/v1/models/'), 'other');
    assert.equal(routeOf('/v1/chat/completions/'), 'other');
    assert.equal(routeOf('/v1/anything'), 'other');
  });
});

describe('recording', () => {
  test('failures count under their reason; unknown failures under none', async () => {
    const metrics = new Metrics({ sources: sources(), defaultMetrics: false });
    const refused = { upstreamMs: null, usage: undefined, model: null };
    metrics.recordRequest(outcome({ ...refused, key: undefined, status: 401, failure: 'key_revoked' }), 1);
    metrics.recordRequest(
      outcome({ ...refused, key: undefined, status: 429, failure: 'too_many_auth_failures' }),
      1,
    );
    metrics.recordRequest(outcome({ ...refused, status: 429, failure: 'limit_workspace_budget_month' }), 1);
    metrics.recordRequest(outcome({ ...refused, status: 504, failure: 'upstream_timeout' }), 1);
    metrics.recordRequest(outcome({ ...refused, status: 422, failure: 'validation_error' }), 1);
    const families = parseExposition((await metrics.scrape()).body);
    assert.equal(sampleValue(families, 'keygate_auth_failures_total', { reason: 'revoked' }), 1);
    assert.equal(sampleValue(families, 'keygate_auth_failures_total', { reason: 'flood' }), 1);
    assert.equal(sampleValue(families, 'keygate_refusals_total', { reason: 'workspace_budget_month' }), 1);
    assert.equal(sampleValue(families, 'keygate_upstream_errors_total', { kind: 'timeout' }), 1);
    const all = (name: string) => samplesNamed(families, name).reduce((n, s) => n + s.value, 0);
    assert.equal(all('keygate_auth_failures_total') + all('keygate_refusals_total'), 3);
    assert.equal(all('keygate_requests_total'), 5);
    assert.equal(samplesNamed(families, 'keygate_upstream_duration_seconds_count').length, 0);
  });

  test('time to first byte is observed for streams only', async () => {
    const metrics = new Metrics({ sources: sources(), defaultMetrics: false });
    metrics.recordRequest(outcome({ ttftMs: 3 }), 5);
    metrics.recordRequest(outcome({ ttftMs: 4, stream: true }), 50);
    const families = parseExposition((await metrics.scrape()).body);
    const route = '/v1/chat/completions';
    assert.equal(sampleValue(families, 'keygate_time_to_first_byte_seconds_count', { route }), 1);
    assert.equal(sampleValue(families, 'keygate_time_to_first_byte_seconds_sum', { route }), 0.004);
    assert.equal(sampleValue(families, 'keygate_request_duration_seconds_count', { route }), 2);
    assert.equal(sampleValue(families, 'keygate_request_duration_seconds_bucket', { route, le: '0.005' }), 1);
  });

  test('mirrored counters and gauges are read from their sources at scrape time', async () => {
    const s = sources();
    let inflight = 0;
    const metrics = new Metrics({ sources: { ...s, inflight: () => inflight }, defaultMetrics: false });
    const read = async () => parseExposition((await metrics.scrape()).body);
    s.keyCache.hits = 7;
    s.keyCache.misses = 2;
    s.keyCache.cacheSize = 3;
    s.usageQueue.depth = 4;
    s.usageQueue.written = 10;
    s.usageQueue.dropped = 1;
    inflight = 5;
    let families = await read();
    assert.equal(sampleValue(families, 'keygate_key_cache_hits_total'), 7);
    assert.equal(sampleValue(families, 'keygate_key_cache_misses_total'), 2);
    assert.equal(sampleValue(families, 'keygate_key_cache_entries'), 3);
    assert.equal(sampleValue(families, 'keygate_usage_queue_depth'), 4);
    assert.equal(sampleValue(families, 'keygate_usage_records_written_total'), 10);
    assert.equal(sampleValue(families, 'keygate_usage_records_dropped_total'), 1);
    assert.equal(sampleValue(families, 'keygate_inflight_requests'), 5);
    s.keyCache.hits = 9;
    inflight = 0;
    families = await read();
    assert.equal(sampleValue(families, 'keygate_key_cache_hits_total'), 9);
    assert.equal(sampleValue(families, 'keygate_inflight_requests'), 0);
  });

  test('a value prom-client refuses does not throw out of recordRequest', async () => {
    const metrics = new Metrics({ sources: sources(), defaultMetrics: false });
    metrics.recordRequest(outcome({ usage: { promptTokens: -1, completionTokens: 0 } }), Number.NaN);
    assert.equal(metrics.recordErrors, 1);
    metrics.recordRequest(outcome(), 1);
    assert.equal(metrics.recordErrors, 1);
  });

  test('two instances do not share a registry', async () => {
    const a = new Metrics({ sources: sources(), defaultMetrics: false });
    const b = new Metrics({ sources: sources(), defaultMetrics: false });
    a.recordRequest(outcome(), 1);
    const fromB = parseExposition((await b.scrape()).body);
    assert.equal(samplesNamed(fromB, 'keygate_requests_total').length, 0);
  });
});

describe('the exposition parser used by the tests', () => {
  test('reads what the format allows', () => {
    const families = parseExposition(
      [
        '# a comment',
        '# HELP x_total Help with \\\\ and \\n.',
        '# TYPE x_total counter',
        'x_total{a="q\\"uote",b="back\\\\slash\\nline",} 1.5e3 1700000000000',
        'x_total{a="2"} +Inf',
        '# TYPE g gauge',
        'g Nan',
        'untyped_thing -1',
        '',
      ].join('\n'),
    );
    assert.equal(families.get('x_total')?.help, 'Help with \\ and \n.');
    assert.equal(sampleValue(families, 'x_total', { a: 'q"uote', b: 'back\\slash\nline' }), 1500);
    assert.equal(sampleValue(families, 'x_total', { a: '2' }), Number.POSITIVE_INFINITY);
    assert.ok(Number.isNaN(sampleValue(families, 'g')));
    assert.equal(families.get('untyped_thing')?.type, 'untyped');
  });

  test('refuses what Prometheus would, and broken histograms', () => {
    const bad: [string, RegExp][] = [
      ['x 1', /end with/],
      ['x{a="1"} 1\nx{a="1"} 2\n', /duplicate series/],
      ['x{a="1",a="2"} 1\n', /duplicate label/],
      ['x{a="\\t"} 1\n', /invalid escape/],
      ['x{a=1} 1\n', /quoted value/],
      ['x{__a="1"} 1\n', /reserved/],
      ['x one\n', /not a float/],
      ['x 1 1.5\n', /timestamp/],
      ['1x 1\n', /metric name/],
      ['x 1\n# TYPE x counter\n', /after its samples/],
      ['# TYPE x counter\n# TYPE x counter\n', /second TYPE/],
      ['# TYPE x countr\n', /invalid TYPE/],
      ['x 1\ny 1\nx{a="1"} 1\n', /one group/],
      ['# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n', /\+Inf/],
      ['# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', /cumulative/],
      ['# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n', /differs from _count/],
      ['# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n', /_sum or _count/],
      ['# TYPE h histogram\nh_bucket 1\n', /without "le"/],
    ];
    for (const [text, error] of bad) assert.throws(() => parseExposition(text), error, JSON.stringify(text));
  });
});
