/**
 * Regression (issue 13, items 7 and 11): a stream the provider cut off (a reset, or silence past
 * upstream.bodyTimeoutMs) was recorded as 499, the status of a client that hung up; and the usage
 * scanner matched `"content":"` literally, so a cut stream of pretty-printed events (`"content":
 * "w1"`, as Python and many OpenAI-compatible servers write, spread over several `data:` lines)
 * was recorded with 0 completion tokens. Now the usage record, the metrics and the access log say
 * 502 / 504 with the upstream failure, and the events seen are counted however they are written.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { parseExposition, sampleValue } from '../support/prometheus.ts';
import { accessLine, usageRows } from '../support/usage-rows.ts';

let t: TestGateway;
before(async () => {
  t = await startTestGateway({
    configure: (config) => {
      config.upstream.bodyTimeoutMs = 300;
    },
  });
});
after(() => t.close());

/** Streams `model` and reads what the client gets until the connection ends, cut or not. */
async function stream(key: string, model: string): Promise<{ status: number; text: string; cut: boolean }> {
  const res = await request(`${t.url}/v1/chat/completions`, {
    method: 'POST',
    headers: bearer(key),
    body: chatBody({ model, stream: true }),
    dispatcher: t.dispatcher,
  });
  let text = '';
  try {
    for await (const chunk of res.body) text += String(chunk);
    return { status: res.statusCode, text, cut: false };
  } catch {
    return { status: res.statusCode, text, cut: true };
  }
}

for (const [model, status, failure] of [
  ['stub-reset-stream', 502, 'upstream_broke_midstream'],
  ['stub-stall-stream', 504, 'upstream_timeout_midstream'],
  ['stub-pretty-reset-stream', 502, 'upstream_broke_midstream'],
  ['stub-pretty-stall-stream', 504, 'upstream_timeout_midstream'],
] as const) {
  test(`${model}: recorded as ${status} ${failure}, with the 3 events seen counted`, async () => {
    const { id, key } = await t.createKey(model);
    const got = await stream(key, model);
    assert.equal(got.status, 200, 'the head had been sent');
    assert.ok(got.cut, 'the client sees its stream cut off, not a clean end');
    assert.match(got.text, /w3/);
    const [row] = await usageRows(t, id);
    assert.equal(row?.status, status);
    assert.equal(row?.completion_tokens, 3, 'one token per content event seen');
    assert.equal(row?.tokens_estimated, 1);
    const line = await accessLine(t, { keyId: id });
    assert.equal(line.status, status);
    assert.equal(line.failure, failure);
  });
}

test('metrics count the cut streams under their status, not 499', async () => {
  const scraper = await t.createKey('prometheus', undefined, { scopes: ['metrics'] });
  const res = await t.call('/metrics', { headers: bearer(scraper.key) });
  const families = parseExposition(res.text);
  const route = '/v1/chat/completions';
  assert.equal(sampleValue(families, 'keygate_requests_total', { route, status: '502', model: 'other' }), 2);
  assert.equal(sampleValue(families, 'keygate_requests_total', { route, status: '504', model: 'other' }), 2);
  assert.equal(
    sampleValue(families, 'keygate_requests_total', { route, status: '499', model: 'other' }),
    undefined,
  );
  assert.equal(sampleValue(families, 'keygate_upstream_errors_total', { kind: 'broken' }), 2);
  assert.equal(sampleValue(families, 'keygate_upstream_errors_total', { kind: 'timeout' }), 2);
});
