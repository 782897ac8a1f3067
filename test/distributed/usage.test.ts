/**
 * Usage adds up exactly across instances: every instance meters its own requests into the shared
 * database, and the report read from any instance equals what the provider (the stub) counted.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  api,
  bearer,
  chat,
  describeDistributed,
  type HttpReply,
  type Instance,
  servedSince,
  sleep,
  useCluster,
} from '../support/cluster.ts';
import { eventually } from '../support/wait.ts';

interface UsageRow {
  key_id?: string | null;
  endpoint?: string | null;
  requests: number;
  errors: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  estimated_requests: number;
}

function embed(instance: Instance, key: string, input: string[]): Promise<HttpReply> {
  return instance.call('/v1/embeddings', {
    method: 'POST',
    headers: bearer(key),
    body: JSON.stringify({ model: 'mistral-embed', input }),
  });
}

function fim(instance: Instance, key: string): Promise<HttpReply> {
  return instance.call('/v1/fim/completions', {
    method: 'POST',
    headers: bearer(key),
    body: JSON.stringify({ model: 'codestral-latest', prompt: 'def add(a, b):', suffix: 'return c' }),
  });
}

await describeDistributed('usage across instances', () => {
  const cluster = useCluster({ instances: 3, configure: (c) => (c.usage.flushIntervalMs = 25) });

  test('usage totals read from any instance equal what the provider served, request for request', async () => {
    const c = cluster();
    const admin = await c.adminKey();
    const k1 = await c.createKey('usage one');
    const k2 = await c.createKey('usage two');
    const stubFrom = c.stub.served.length;

    // 60 requests of four kinds, spread over the three instances and the two keys, 12 at a time.
    const replies: HttpReply[] = [];
    for (let batch = 0; batch < 5; batch++) {
      replies.push(
        ...(await Promise.all(
          Array.from({ length: 12 }, (_, i) => {
            const instance = c.instances[i % 3]!;
            const key = (i + batch) % 2 === 0 ? k1.key : k2.key;
            switch (i % 4) {
              case 0:
                return chat(instance, key, {
                  messages: [{ role: 'user', content: `batch ${batch} item ${i}` }],
                });
              case 1:
                return chat(instance, key, { stream: true });
              case 2:
                return embed(instance, key, ['first input', `second input number ${i}`]);
              default:
                return fim(instance, key);
            }
          }),
        )),
      );
    }
    for (const r of replies) assert.equal(r.status, 200, r.text);
    const expected = servedSince(c.stub, stubFrom);
    assert.equal(expected.requests, 60, 'the stub reported usage for every request');

    // Read from the third instance, which served only a third of them.
    const report = async (by: 'key' | 'endpoint') => {
      const res = await api(c.instances[2]!, admin.key, 'GET', `/usage?by=${by}`);
      assert.equal(res.status, 200, res.text);
      return (res.json() as { data: UsageRow[] }).data;
    };
    const mine = (rows: UsageRow[]) => rows.filter((r) => r.key_id === k1.id || r.key_id === k2.id);
    const sum = (rows: UsageRow[]) => ({
      requests: rows.reduce((n, r) => n + r.requests, 0),
      promptTokens: rows.reduce((n, r) => n + r.prompt_tokens, 0),
      completionTokens: rows.reduce((n, r) => n + r.completion_tokens, 0),
      totalTokens: rows.reduce((n, r) => n + r.total_tokens, 0),
    });
    let totals = sum([]);
    await eventually(
      async () => {
        totals = sum(mine(await report('key')));
        return totals.requests >= expected.requests;
      },
      () => `the usage of ${expected.requests} requests (${totals.requests} so far)`,
    );
    assert.deepEqual(totals, expected);
    const rows = mine(await report('key'));
    for (const row of rows) {
      assert.equal(row.errors, 0);
      assert.equal(row.estimated_requests, 0);
    }
    assert.equal(rows.length, 2);

    // Nothing arrives twice: several flushes later (every 25 ms here) the totals are the same. A
    // wait for something not to happen: it has to be a length of time.
    await sleep(200);
    assert.deepEqual(sum(mine(await report('key'))), expected);

    // Per endpoint, against what the stub served on each path.
    const byEndpoint = await report('endpoint');
    for (const path of ['/v1/chat/completions', '/v1/embeddings', '/v1/fim/completions']) {
      const row = byEndpoint.find((r) => r.endpoint === path);
      const stub = c.stub.served.slice(stubFrom).filter((s) => s.path === path);
      assert.ok(row, `no usage row for ${path}`);
      assert.deepEqual(
        [row.requests, row.total_tokens],
        [stub.length, stub.reduce((n, s) => n + s.totalTokens, 0)],
        path,
      );
    }

    // Request for request: the records in the database are the requests the provider answered.
    const byId = (x: { id: string }, y: { id: string }) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0);
    const records = await c.query<{ id: string; total_tokens: number }>(
      'SELECT id, total_tokens::int AS total_tokens FROM usage_records WHERE key_id = ANY($1)',
      [[k1.id, k2.id]],
    );
    const served = c.stub.served
      .slice(stubFrom)
      .map((s) => ({ id: s.requestId ?? '', total_tokens: s.totalTokens }));
    assert.deepEqual(records.sort(byId), served.sort(byId));
  });
});
