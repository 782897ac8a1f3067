/**
 * Regression (issue 13, item 4): provider error bodies and base64 embeddings were held whole,
 * without a cap: 8 error bodies of 50 MB took RSS from 162 MB to 1.6 GB and stalled the event loop
 * for 1.7 s (each was decoded, parsed and scrubbed in one go). Now an error body over 64 KiB is not
 * passed on (the client gets the provider's status and a note quoting its start, and the rest is
 * not read), and embeddings asked for as base64 are encoded as they stream through.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { largeEmbeddingOf } from '../support/upstream-stub.ts';
import { eventually, within } from '../support/wait.ts';

let t: TestGateway;
let key: string;
before(async () => {
  t = await startTestGateway();
  key = (await t.createKey()).key;
});
after(() => t.close());

test('an error body over 64 KiB: its status and a note quoting its start, in the error shape', async () => {
  const res = await t.call('/v1/chat/completions', {
    method: 'POST',
    headers: bearer(key),
    body: chatBody({ model: 'stub-huge-error', stub_error_bytes: 8 << 20 }),
  });
  assert.equal(res.status, 500);
  assert.ok(res.text.length < 8 << 10, `${res.text.length} bytes passed on`);
  const body = res.json() as { object: string; message: string; error: { message: string } };
  assert.equal(body.object, 'error');
  assert.match(body.message, /error body larger than 65536 bytes/);
  assert.match(body.message, /It began: \{"object":"error","message":"xxx/);
  assert.equal(body.error.message, body.message);
  // The provider's answer was cut off, and its connection given back to the pool.
  await eventually(() => t.gateway.upstream.stats.inUse === 0, 'the connection back in the pool');
  // A small error body still passes whole (scrubbed).
  const small = await t.call('/v1/chat/completions', {
    method: 'POST',
    headers: bearer(key),
    body: chatBody({ model: 'stub-huge-error', stub_error_bytes: 1000 }),
  });
  assert.equal(small.status, 500);
  assert.equal(small.text.length > 1000, true);
  assert.equal((small.json() as { code: string }).code, '5000');
});

test('base64 embeddings are encoded as they stream, not once the whole body is in', async () => {
  const inputs = Array.from({ length: 64 }, (_, i) => `input ${i}`);
  const res = await request(`${t.url}/v1/embeddings`, {
    method: 'POST',
    headers: bearer(key),
    body: JSON.stringify({
      model: 'mistral-embed',
      input: inputs,
      encoding_format: 'base64',
      output_dimension: 1024,
      stub_hold_after: 2,
    }),
    dispatcher: t.dispatcher,
  });
  assert.equal(res.statusCode, 200);
  // The provider holds the rest of its body: the first embeddings reach the client encoded.
  let text = '';
  const body = res.body[Symbol.asyncIterator]();
  await within(
    (async () => {
      while ((text.match(/"embedding":"/g) ?? []).length < 2) {
        const next = await body.next();
        if (next.done) break;
        text += String(next.value);
      }
    })(),
    5000,
    'the first two embeddings while the provider holds the rest',
  );
  assert.equal(t.stub.held, 1, 'the provider has not finished');
  t.stub.release();
  for (let next = await body.next(); !next.done; next = await body.next()) text += String(next.value);
  const parsed = JSON.parse(text) as {
    data: { embedding: string; index: number }[];
    usage: { prompt_tokens: number };
  };
  assert.equal(parsed.data.length, inputs.length);
  for (const item of [parsed.data[0], parsed.data[63]]) {
    assert.ok(item);
    const bytes = Buffer.from(item.embedding, 'base64');
    const expected = largeEmbeddingOf(inputs[item.index] ?? '', 1024);
    assert.equal(bytes.length, 1024 * 4);
    for (const i of [0, 1, 1023])
      assert.equal(bytes.readFloatLE(i * 4), Math.fround(expected[i] ?? Number.NaN));
  }
  assert.equal(parsed.usage.prompt_tokens, 128);
});
