/**
 * Regression (issue 12, item 3): any inference key could fill the disk. A 1 MiB `model` was
 * forwarded and stored in the usage record and the rollups kept for ever, and the raw request path
 * was recorded as the endpoint. Now a model id must match the id grammar (else 422, nothing
 * forwarded) and the endpoint recorded is the route template or `other`.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Store, UsageGroup } from '../../src/store/types.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { eventually } from '../support/wait.ts';

let t: TestGateway;
let key: string;

before(async () => {
  t = await startTestGateway();
  key = (await t.createKey('filler')).key;
});
after(async () => {
  await t.close();
});

/** The usage report grouped by `by`, once `requests` requests have been recorded (5 s at most). */
async function report(store: Store, by: UsageGroup, requests: number) {
  return eventually(
    async () => {
      const { rows } = await store.usageReport({ by });
      return rows.reduce((n, r) => n + r.requests, 0) >= requests && rows;
    },
    `${requests} requests in the usage report`,
    5000,
  );
}

test('a megabyte model id is refused with 422 before anything is forwarded or stored', async () => {
  const forwarded = t.stub.requests.length;
  const huge = 'm'.repeat(1 << 20);
  for (const model of [huge, 'mistral/../../etc', 'bad model', 'mistral\u0000small', 'modèle', '/leading']) {
    const res = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody({ model }),
    });
    assert.equal(res.status, 422, `${JSON.stringify(model.slice(0, 20))}: ${res.text.slice(0, 200)}`);
    const body = res.json() as { detail: { loc: string[] }[] };
    assert.deepEqual(body.detail[0]?.loc, ['body', 'model']);
    assert.ok(res.text.length < 2000, 'the answer does not echo the model back');
  }
  assert.equal(t.stub.requests.length, forwarded, 'nothing reached the provider');
  const rows = await report(t.gateway.store, 'model', 6);
  for (const row of rows)
    assert.ok(row.group === null || String(row.group).length <= 128, 'no long model stored');
});

test('the endpoint recorded is the route template, never the raw path', async () => {
  const paths = [
    `/v1/models/${'x'.repeat(5000)}`,
    '/v1/models/mistral-small-latest',
    `/v1/${'junk/'.repeat(2000)}`,
    '/v1/chat/completions/extra',
  ];
  for (const path of paths) await t.call(path, { headers: bearer(key) });
  const rows = await report(t.gateway.store, 'endpoint', 6 + paths.length);
  const endpoints = new Set(rows.map((r) => r.group));
  for (const endpoint of endpoints) {
    assert.ok(
      ['/v1/chat/completions', '/v1/models/{id}', 'other'].includes(String(endpoint)),
      `recorded endpoint ${String(endpoint).slice(0, 80)}`,
    );
  }
  assert.ok(endpoints.has('/v1/models/{id}'));
  assert.ok(endpoints.has('other'));
});
