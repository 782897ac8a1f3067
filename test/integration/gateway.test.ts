/**
 * The public API over real HTTPS, driven with raw HTTP: authentication, validation, forwarding,
 * streaming, failure of the upstream, metering. (The official SDKs are in sdk.test.ts.)
 */

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { type AddressInfo, connect } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { startUpstreamStub } from '../support/upstream-stub.ts';
import { usageTotalsOf } from '../support/usage-totals.ts';
import { eventually, pastTime } from '../support/wait.ts';

let t: TestGateway;
let key: string;
let keyId: string;

before(async () => {
  t = await startTestGateway({
    configure: (c) => {
      c.auth.failuresPerMinute = 1000;
    },
  });
  ({ key, id: keyId } = await t.createKey('integration'));
});
after(async () => {
  await t.close();
});

interface ErrorBody {
  object: string;
  message: string;
  type: string;
  code: string;
  error: { message: string; type: string; code: string };
  detail?: { loc: (string | number)[]; msg: string; type: string }[];
}

describe('bearer authentication', () => {
  test('no credentials: 401 with a Bearer challenge and no error code', async () => {
    const res = await t.call('/v1/models');
    assert.equal(res.status, 401);
    assert.equal(res.headers['www-authenticate'], 'Bearer realm="keygate"');
    const body = res.json() as ErrorBody;
    assert.equal(body.object, 'error');
    assert.equal(body.type, 'authentication_error');
    assert.equal(body.error.message, body.message, 'OpenAI clients read the error member');
    assert.match(body.message, /Authorization: Bearer/);
  });

  test('another authentication scheme is a malformed header: 400 naming the scheme', async () => {
    const res = await t.call('/v1/models', {
      headers: { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` },
    });
    assert.equal(res.status, 400);
    assert.equal(res.headers['www-authenticate'], 'Bearer realm="keygate", error="invalid_request"');
    assert.match((res.json() as ErrorBody).message, /"Basic" scheme is not accepted/);
  });

  test('the scheme is case-insensitive', async () => {
    for (const scheme of ['bearer', 'BEARER', 'Bearer', 'bEARER']) {
      const res = await t.call('/v1/models', { headers: { authorization: `${scheme}   ${key}` } });
      assert.equal(res.status, 200, `${scheme}: ${res.text}`);
    }
  });

  test('malformed headers: 400 invalid_request, and the token is never echoed', async () => {
    const cases: (string | string[])[] = [
      'Bearer',
      `Bearer${key}`,
      `Bearer ${key} trailing`,
      `Bearer ${'x'.repeat(2000)}`,
      [`Bearer ${key}`, `Bearer ${key}`],
    ];
    for (const authorization of cases) {
      const res = await t.call('/v1/models', { headers: { authorization } });
      assert.equal(res.status, 400, String(authorization));
      assert.equal(res.headers['www-authenticate'], 'Bearer realm="keygate", error="invalid_request"');
      assert.ok(!res.text.includes(key));
      assert.ok(!res.text.includes('xxxxxxxx'));
    }
  });

  test('unknown, look-alike, revoked and expired keys get byte-identical 401s', async () => {
    const revoked = await t.createKey('revoked');
    await t.gateway.store.revokeKey(revoked.id, Date.now(), CLI_ACTOR);
    const expired = await t.createKey('expired', 1);
    // Its real expiry (1 ms) has passed; none of these was verified before, so nothing is cached.
    await pastTime((await t.gateway.store.getKey(expired.id))?.expiresAt ?? 0);
    const unknown = (await t.createKey('unknown-in-other-store')).key.replace(/^kg_/, 'kg_');
    const lookAlike = `${key.slice(0, -1)}${key.endsWith('a') ? 'b' : 'a'}`;
    const bodies = new Set<string>();
    const challenges = new Set<string>();
    for (const token of [
      revoked.key,
      expired.key,
      lookAlike,
      'kg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
      'sk-notakeygatekey',
      `${unknown}x`,
    ]) {
      const res = await t.call('/v1/chat/completions', {
        method: 'POST',
        headers: bearer(token),
        body: chatBody(),
      });
      assert.equal(res.status, 401, token);
      bodies.add(res.text);
      challenges.add(String(res.headers['www-authenticate']));
      assert.ok(!res.text.includes(token));
    }
    assert.equal(bodies.size, 1, [...bodies].join('\n'));
    assert.deepEqual([...challenges], ['Bearer realm="keygate", error="invalid_token"']);
  });

  test('a key in the URL is refused with 400, whatever the key', async () => {
    const queries = [`?key=${key}`, `?api_key=${key}`, `?x=1&access_token=${key}`];
    for (const [i, query] of queries.entries()) {
      const res = await t.call(`/v1/models${query}`, {
        headers: { authorization: `Bearer ${key}`, 'x-request-id': `key-in-url-${i}` },
      });
      assert.equal(res.status, 400);
      assert.match((res.json() as ErrorBody).message, /not accepted in the URL/);
    }
    // Their access lines are written (after the response), so their absence below means something.
    await eventually(async () => {
      await new Promise<void>((resolve) => t.gateway.logger.flush(() => resolve()));
      return queries.every((_, i) => t.logLines.some((line) => line.includes(`"key-in-url-${i}"`)));
    }, 'the access log lines of the refused requests');
    assert.ok(!t.logLines.some((line) => line.includes('api_key=')), 'the query string is not logged');
  });
});

describe('request validation', () => {
  test('invalid JSON: 400 in the error shape', async () => {
    const res = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: '{"model": ',
    });
    assert.equal(res.status, 400);
    assert.equal((res.json() as ErrorBody).code, 'invalid_json');
  });

  test('missing and mistyped fields: 422 with the detail shape', async () => {
    const cases: [string, string, (string | number)[]][] = [
      ['/v1/chat/completions', JSON.stringify({ model: 'm' }), ['body', 'messages']],
      [
        '/v1/chat/completions',
        JSON.stringify({ messages: [{ role: 'user', content: 'x' }] }),
        ['body', 'model'],
      ],
      [
        '/v1/chat/completions',
        JSON.stringify({ model: 42, messages: [{ role: 'user', content: 'x' }] }),
        ['body', 'model'],
      ],
      ['/v1/chat/completions', chatBody({ stream: 'yes' }), ['body', 'stream']],
      ['/v1/chat/completions', chatBody({ messages: [] }), ['body', 'messages']],
      ['/v1/chat/completions', chatBody({ messages: ['hi'] }), ['body', 'messages', 0]],
      ['/v1/chat/completions', '[1,2]', ['body']],
      ['/v1/embeddings', JSON.stringify({ model: 'mistral-embed', input: [1, 2] }), ['body', 'input']],
      ['/v1/fim/completions', JSON.stringify({ model: 'codestral-latest' }), ['body', 'prompt']],
    ];
    for (const [path, body, loc] of cases) {
      const res = await t.call(path, { method: 'POST', headers: bearer(key), body });
      assert.equal(res.status, 422, `${body}: ${res.text}`);
      const parsed = res.json() as ErrorBody;
      assert.deepEqual(parsed.detail?.[0]?.loc, loc, body);
      assert.equal(typeof parsed.detail?.[0]?.msg, 'string');
      assert.equal(typeof parsed.detail?.[0]?.type, 'string');
      assert.ok(parsed.error.message.length > 0);
    }
  });

  test('unknown fields and unicode pass through unchanged', async () => {
    const body = chatBody({
      messages: [{ role: 'user', content: 'héllo 世界 🙂 \u0000 zero' }],
      some_future_field: { nested: [1, 'two'] },
      safe_prompt: false,
    });
    const before = t.stub.requests.length;
    const res = await t.call('/v1/chat/completions', { method: 'POST', headers: bearer(key), body });
    assert.equal(res.status, 200, res.text);
    const received = t.stub.requests[before];
    assert.equal(received?.body, body, 'forwarded byte for byte');
    assert.match(res.text, /héllo 世界 🙂/);
  });

  test('bodies over the limit get 413, declared or streamed', async () => {
    const small = await startTestGateway({
      configure: (c) => {
        c.server.bodyLimitBytes = 1024;
      },
    });
    try {
      const { key: k } = await small.createKey();
      const big = chatBody({ messages: [{ role: 'user', content: 'x'.repeat(5000) }] });
      const declared = await small.call('/v1/chat/completions', {
        method: 'POST',
        headers: bearer(k),
        body: big,
      });
      assert.equal(declared.status, 413);
      // Chunked (no content-length): the limit is enforced while reading.
      const chunked = await request(`${small.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${k}` },
        body: Readable.from(
          (function* () {
            for (let i = 0; i < 10; i++) yield Buffer.from('x'.repeat(500));
          })(),
        ),
        dispatcher: small.dispatcher,
      });
      assert.equal(chunked.statusCode, 413);
      await chunked.body.dump();
      assert.equal(small.stub.requests.length, 0, 'nothing oversized reached the upstream');
    } finally {
      await small.close();
    }
  });

  test('a huge body within the default limit is forwarded', async () => {
    const content = 'word '.repeat(1_000_000); // 5 MB
    const res = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody({ messages: [{ role: 'user', content }] }),
    });
    assert.equal(res.status, 200);
  });

  test('unknown endpoints: 404; wrong method: 405 with Allow', async () => {
    const missing = await t.call('/v1/nope', { headers: bearer(key) });
    assert.equal(missing.status, 404);
    const wrong = await t.call('/v1/chat/completions', { headers: bearer(key) });
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.allow, 'POST');
    const outside = await t.call('/admin/whatever');
    assert.equal(outside.status, 404);
  });
});

describe('forwarding', () => {
  test('the upstream gets the provider key, never the client key, and no hop-by-hop headers', async () => {
    const before = t.stub.requests.length;
    const res = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: {
        ...bearer(key),
        'x-request-id': 'client-chosen-id',
        'proxy-authorization': 'Basic abc',
        te: 'trailers',
        cookie: 'a=b',
      },
      body: chatBody(),
    });
    assert.equal(res.status, 200);
    const gatewayId = String(res.headers['x-keygate-request-id']);
    assert.match(gatewayId, /^req_/, 'the gateway answers with its own id too');
    assert.equal(res.headers['x-request-id'], 'client-chosen-id', "the client's id is echoed");
    const received = t.stub.requests[before];
    assert.ok(received);
    assert.equal(received.headers.authorization, 'Bearer upstream-secret-key');
    assert.equal(received.headers['x-request-id'], 'client-chosen-id', "the provider sees the client's id");
    assert.equal(received.headers['x-keygate-request-id'], gatewayId, "and the gateway's");
    for (const header of ['proxy-authorization', 'te', 'cookie'])
      assert.equal(received.headers[header], undefined, header);
    assert.ok(!JSON.stringify(received).includes(key));
    assert.ok(!res.text.includes('upstream-secret-key'));
    assert.ok(!JSON.stringify(res.headers).includes('upstream-secret-key'));
  });

  test('every response has an x-request-id and HSTS', async () => {
    for (const path of ['/v1/models', '/healthz', '/nowhere']) {
      const res = await t.call(path, { headers: bearer(key) });
      assert.match(String(res.headers['x-request-id']), /^[\w.:-]{8,}$/);
      assert.equal(res.headers['strict-transport-security'], 'max-age=31536000');
    }
  });

  test('legacy model names are mapped through the alias table', async () => {
    const before = t.stub.requests.length;
    const res = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody({ model: 'mistral-tiny' }),
    });
    assert.equal(res.status, 200);
    assert.equal(
      (JSON.parse(t.stub.requests[before]?.body ?? '{}') as { model: string }).model,
      'ministral-8b-latest',
    );
    const card = await t.call('/v1/models/mistral-small', { headers: bearer(key) });
    assert.equal(card.status, 200, card.text);
    assert.equal((card.json() as { id: string }).id, 'mistral-small-latest');
  });

  test('streaming is passed through chunk by chunk, decided by the body not by Accept', async () => {
    const started = performance.now();
    const res = await request(`${t.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { ...bearer(key), accept: 'application/json' },
      body: JSON.stringify({
        model: 'stub-slow-stream',
        stream: true,
        messages: [{ role: 'user', content: 'hi' }],
      }),
      dispatcher: t.dispatcher,
    });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /^text\/event-stream/);
    let firstAt = 0;
    let text = '';
    for await (const chunk of res.body) {
      if (firstAt === 0) firstAt = performance.now() - started;
      text += String(chunk);
    }
    const total = performance.now() - started;
    assert.ok(
      firstAt < 1000 && total > 1500,
      `first chunk at ${firstAt} ms, end at ${total} ms: not buffered`,
    );
    assert.ok(text.endsWith('data: [DONE]\n\n'));
    assert.equal(text.match(/"usage"/g)?.length, 1);
  });

  test('embeddings asked as base64 are encoded by the gateway when the provider sends floats', async () => {
    const body = { model: 'mistral-embed', input: ['alpha beta'] };
    const floats = await t.call('/v1/embeddings', {
      method: 'POST',
      headers: bearer(key),
      body: JSON.stringify(body),
    });
    const b64 = await t.call('/v1/embeddings', {
      method: 'POST',
      headers: bearer(key),
      body: JSON.stringify({ ...body, encoding_format: 'base64' }),
    });
    assert.equal(b64.status, 200);
    const vector = (floats.json() as { data: { embedding: number[] }[] }).data[0]?.embedding ?? [];
    const encoded =
      (b64.json() as { data: { embedding: string }[]; usage: unknown }).data[0]?.embedding ?? '';
    const decoded = new Float32Array(new Uint8Array(Buffer.from(encoded, 'base64')).buffer);
    assert.equal(decoded.length, vector.length);
    assert.ok(vector.length > 0);
    for (const [i, v] of vector.entries()) assert.ok(Math.abs(v - (decoded[i] ?? Number.NaN)) < 1e-6);
    assert.deepEqual((b64.json() as { usage: unknown }).usage, (floats.json() as { usage: unknown }).usage);
  });

  test('provider 4xx and 5xx are passed through with their body', async () => {
    const bad = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody({ model: 'stub-error-400' }),
    });
    assert.equal(bad.status, 400);
    assert.match((bad.json() as ErrorBody).message, /Invalid model: stub-error-400/);
    assert.match(
      (bad.json() as ErrorBody).error.message,
      /Invalid model/,
      'an error member is added for OpenAI clients',
    );
    assert.equal(Number(bad.headers['content-length']), Buffer.byteLength(bad.text));
    const broken = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody({ model: 'stub-error-500' }),
    });
    assert.equal(broken.status, 500);
    assert.equal((broken.json() as ErrorBody).type, 'server_error');
  });
});

describe('upstream failures', () => {
  test('an unreachable provider gives 502, a slow one 504, both with Retry-After and no internals', async () => {
    const stub = await startUpstreamStub();
    const slow = await startTestGateway({
      stub,
      configure: (c) => {
        c.upstream.timeoutMs = 300;
      },
    });
    try {
      const { key: k } = await slow.createKey();
      const timedOut = await slow.call('/v1/chat/completions', {
        method: 'POST',
        headers: bearer(k),
        body: chatBody({ model: 'stub-slow' }),
      });
      assert.equal(timedOut.status, 504, timedOut.text);
      assert.equal(timedOut.headers['retry-after'], '1');
      await stub.close();
      const dead = await slow.call('/v1/chat/completions', {
        method: 'POST',
        headers: bearer(k),
        body: chatBody(),
      });
      assert.equal(dead.status, 502, dead.text);
      assert.equal(dead.headers['retry-after'], '1');
      const ready = await slow.call('/readyz');
      assert.equal(ready.status, 503, 'not ready while the provider cannot be reached');
      assert.equal((ready.json() as { checks: { upstream: string } }).checks.upstream, 'unreachable');
      for (const text of [timedOut.text, dead.text]) {
        assert.doesNotMatch(text, /ECONNREFUSED|UND_ERR|at .*\.ts:\d+|127\.0\.0\.1/);
        assert.ok(!text.includes('upstream-secret-key'));
      }
    } finally {
      await slow.close();
    }
  });

  test('with no provider key the gateway answers 503 saying how to configure it', async () => {
    const bare = await startTestGateway({ upstreamKey: undefined });
    try {
      const { key: k } = await bare.createKey();
      const res = await bare.call('/v1/models', { headers: bearer(k) });
      assert.equal(res.status, 503);
      assert.equal(res.headers['retry-after'], '60');
      assert.match((res.json() as ErrorBody).message, /KEYGATE_UPSTREAM_KEY/);
      const ready = await bare.call('/readyz');
      assert.equal(ready.status, 503);
    } finally {
      await bare.close();
    }
  });

  test('a client that hangs up mid-stream does not disturb the gateway, and the provider request stops', async () => {
    const res = await request(`${t.url}/v1/chat/completions`, {
      method: 'POST',
      headers: bearer(key),
      body: JSON.stringify({
        model: 'stub-slow-stream',
        stream: true,
        messages: [{ role: 'user', content: 'bye' }],
      }),
      dispatcher: t.dispatcher,
    });
    const requestId = res.headers['x-request-id'];
    for await (const _chunk of res.body) break; // first chunk, then hang up
    // The stub's request ends when its client (the gateway) goes: at once if the gateway stopped
    // it, or only once the stream is over (10 chunks, 200 ms apart) with its usage chunk served.
    await eventually(() => t.stub.inFlight === 0, 'the provider request to end');
    const after = await t.call('/v1/models', { headers: bearer(key) });
    assert.equal(after.status, 200);
    assert.ok(typeof requestId === 'string');
    assert.equal(
      t.stub.served.some((s) => s.requestId === requestId),
      false,
      'the provider request went on after the client left',
    );
  });
});

describe('abuse', () => {
  test('a flood of bad keys from one address gets 429, a valid key from another address is unaffected', async () => {
    const guarded = await startTestGateway({
      configure: (c) => {
        c.auth.failuresPerMinute = 20;
      },
    });
    try {
      const { key: k } = await guarded.createKey();
      const statuses: number[] = [];
      for (let i = 0; i < 40; i++) {
        const res = await guarded.call('/v1/models', {
          headers: { authorization: `Bearer kg_${String(i).padStart(38, 'A')}` },
        });
        statuses.push(res.status);
      }
      assert.deepEqual(statuses.slice(0, 20), Array(20).fill(401));
      assert.deepEqual(statuses.slice(20), Array(20).fill(429));
      const blocked = await guarded.call('/v1/models', { headers: { authorization: `Bearer ${k}` } });
      assert.equal(blocked.status, 429, 'the flooding address is slowed down even with a good key');
      assert.ok(Number(blocked.headers['retry-after']) > 0);
      // Another client: the same machine, but connecting from 127.0.0.2.
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpsRequest(
          `${guarded.url}/v1/models`,
          { ca: guarded.ca, localAddress: '127.0.0.2', headers: { authorization: `Bearer ${k}` } },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        req.end();
      });
      assert.equal(status, 200);
    } finally {
      await guarded.close();
    }
  });

  test('garbage on the socket gets 400 and the server keeps serving', async () => {
    const { port } = t.gateway;
    await new Promise<void>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => socket.end('\x16\x03\x01 not tls at all\r\n\r\n'));
      socket.on('close', () => resolve());
      socket.on('error', () => resolve());
    });
    const res = await t.call('/healthz');
    assert.equal(res.status, 200);
  });
});

describe('metering and logs', () => {
  test('usage records add up to what the upstream reported, streaming or not', async () => {
    const { id, key: k } = await t.createKey('metered');
    let prompt = 0;
    let completion = 0;
    for (const stream of [false, true, false, true]) {
      const res = await t.call('/v1/chat/completions', {
        method: 'POST',
        headers: bearer(k),
        body: chatBody({ stream, messages: [{ role: 'user', content: `one two three ${stream}` }] }),
      });
      assert.equal(res.status, 200);
      const usageText = stream
        ? (res.text.split('\n\n').find((e) => e.includes('"usage"')) ?? '').slice(6)
        : res.text;
      const usage = (JSON.parse(usageText) as { usage: { prompt_tokens: number; completion_tokens: number } })
        .usage;
      prompt += usage.prompt_tokens;
      completion += usage.completion_tokens;
    }
    const totals = await usageTotalsOf(t.gateway.store, id, 4);
    assert.deepEqual(
      {
        requests: totals?.requests,
        prompt: totals?.promptTokens,
        completion: totals?.completionTokens,
        total: totals?.totalTokens,
      },
      { requests: 4, prompt, completion, total: prompt + completion },
    );
  });

  test('answers without a length, small and past the 1 MiB hold limit, arrive whole and are metered', async () => {
    // A provider that sends chunked JSON (no content-length), in pieces, with usage at the end.
    const content = (size: number) => 'ü'.repeat(size / 2);
    const server = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (part: Buffer) => parts.push(part));
      req.on('end', () => {
        // The size asked for is the prompt (the gateway passes no client header on).
        const asked = JSON.parse(Buffer.concat(parts).toString()) as { messages: { content: string }[] };
        const size = Number(asked.messages[0]?.content);
        const body = JSON.stringify({
          id: 'x',
          object: 'chat.completion',
          choices: [
            { index: 0, message: { role: 'assistant', content: content(size) }, finish_reason: 'stop' },
          ],
          usage: { prompt_tokens: 3, completion_tokens: size, total_tokens: size + 3 },
        });
        res.writeHead(200, { 'content-type': 'application/json' });
        const bytes = Buffer.from(body);
        for (let at = 0; at < bytes.length; at += 300_001) res.write(bytes.subarray(at, at + 300_001));
        res.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const chunked = await startTestGateway({
      http: true,
      configure: (config) => {
        config.upstream.url = `http://127.0.0.1:${port}`;
      },
    });
    try {
      const { id, key: k } = await chunked.createKey('chunked');
      let expected = 0;
      for (const size of [1000, 1_500_000]) {
        const res = await chunked.call('/v1/chat/completions', {
          method: 'POST',
          headers: bearer(k),
          body: chatBody({ messages: [{ role: 'user', content: String(size) }] }),
        });
        assert.equal(res.status, 200);
        const parsed = res.json() as {
          choices: { message: { content: string } }[];
          usage: { total_tokens: number };
        };
        assert.equal(parsed.choices[0]?.message.content, content(size), `the body of ${size} arrived whole`);
        expected += parsed.usage.total_tokens;
        // A held answer gets its length; a longer one streams on, chunked.
        if (size < 2 ** 20) assert.equal(res.headers['content-length'], String(Buffer.byteLength(res.text)));
        else assert.equal(res.headers['content-length'], undefined);
      }
      const totals = await usageTotalsOf(chunked.gateway.store, id, 2);
      assert.equal(totals?.totalTokens, expected);
    } finally {
      await chunked.close();
      server.close();
    }
  });

  test('usage is metered over plain HTTP too, and from the end of bodies of any size', async () => {
    const plain = await startTestGateway({ http: true });
    try {
      const { id, key: k } = await plain.createKey('plain http');
      let expected = 0;
      for (const stream of [false, true]) {
        const res = await plain.call('/v1/chat/completions', {
          method: 'POST',
          headers: bearer(k),
          body: chatBody({ stream }),
        });
        assert.equal(res.status, 200);
        const text = stream
          ? (res.text.split('\n\n').find((e) => e.includes('"usage"')) ?? '').slice(6)
          : res.text;
        expected += (JSON.parse(text) as { usage: { total_tokens: number } }).usage.total_tokens;
      }
      // A response of several MiB: its usage, at the very end, still counts.
      const big = await plain.call('/v1/embeddings', {
        method: 'POST',
        headers: bearer(k),
        body: JSON.stringify({
          model: 'mistral-embed',
          input: Array.from({ length: 6000 }, (_, i) => `text number ${i}`),
        }),
      });
      assert.equal(big.status, 200);
      assert.ok(big.text.length > 300_000);
      expected += (JSON.parse(big.text) as { usage: { total_tokens: number } }).usage.total_tokens;
      const totals = await usageTotalsOf(plain.gateway.store, id, 3);
      assert.equal(totals?.totalTokens, expected);
      assert.ok(expected > 0);
    } finally {
      await plain.close();
    }
  });

  test('a stream cut off by the client is recorded with what was delivered, marked as estimated', async () => {
    const { id, key: k } = await t.createKey('cut stream');
    const body = JSON.stringify({
      model: 'stub-slow-stream',
      stream: true,
      messages: [{ role: 'user', content: 'a prompt of some forty characters here' }],
    });
    const res = await request(`${t.url}/v1/chat/completions`, {
      method: 'POST',
      headers: bearer(k),
      body,
      dispatcher: t.dispatcher,
    });
    let seen = '';
    for await (const chunk of res.body) {
      seen += String(chunk);
      if ((seen.match(/"content":" ?tok/g) ?? []).length >= 3) break; // three tokens, then hang up
    }
    const totals = await usageTotalsOf(t.gateway.store, id, 1);
    assert.equal(totals.requests, 1);
    assert.ok(
      (totals?.completionTokens ?? 0) >= 3 && (totals?.completionTokens ?? 0) <= 5,
      `${totals?.completionTokens}`,
    );
    assert.equal(totals?.promptTokens, Math.ceil(body.length / 4), 'request bytes / 4');
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(`${t.dataDir}/keygate.db`);
    try {
      const row = db
        .prepare('SELECT status, tokens_estimated FROM usage_records WHERE key_id = ?')
        .get(id) as {
        status: number;
        tokens_estimated: number;
      };
      assert.deepEqual({ ...row }, { status: 499, tokens_estimated: 1 });
    } finally {
      db.close();
    }
  });

  test('a model id of "." or ".." cannot walk the provider\'s paths', async () => {
    const before = t.stub.requests.length;
    for (const id of ['..', '%2E%2E', '.']) {
      const res = await t.call(`/v1/models/${id}`, { headers: bearer(key) });
      assert.equal(res.status, 404, id);
    }
    assert.equal(t.stub.requests.length, before);
  });

  test('a client reusing its own x-request-id cannot make requests go unmetered', async () => {
    const { id, key: k } = await t.createKey('reused request id');
    for (let i = 0; i < 3; i++) {
      const res = await t.call('/v1/chat/completions', {
        method: 'POST',
        headers: { ...bearer(k), 'x-request-id': 'same-id-every-time' },
        body: chatBody(),
      });
      assert.equal(res.status, 200);
    }
    const totals = await usageTotalsOf(t.gateway.store, id, 3);
    assert.equal(totals.requests, 3);
  });

  test('the access log has one JSON line per request with the key id and never a key', async () => {
    const marker = 'log-line-marker';
    const res = await t.call('/v1/models', { headers: { ...bearer(key), 'x-request-id': marker } });
    // The access line is written when the response ends on the server side, which may follow
    // what the client read.
    const lines = await eventually(async () => {
      await new Promise<void>((resolve) => t.gateway.logger.flush(() => resolve()));
      const found = t.logLines
        .filter((l) => l.includes(marker))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      return found.length > 0 ? found : undefined;
    }, 'the access log line');
    assert.equal(lines.length, 1);
    assert.equal(lines[0]?.keyId, keyId);
    assert.equal(lines[0]?.reqId, res.headers['x-keygate-request-id']);
    assert.equal(res.headers['x-request-id'], marker);
    assert.equal(lines[0]?.clientReqId, marker);
    assert.equal(lines[0]?.status, 200);
    assert.equal(typeof lines[0]?.latencyMs, 'number');
    for (const line of t.logLines) {
      assert.ok(!line.includes(key), 'a key was logged');
      assert.ok(!line.includes('upstream-secret-key'), 'the upstream key was logged');
    }
  });

  test('the logger redacts anything key-shaped that reaches it', async () => {
    const { key: k } = await t.createKey();
    t.gateway.logger.info(
      { note: `oops ${k}`, header: `Bearer ${k}`, upstream: 'upstream-secret-key' },
      'accident',
    );
    await new Promise<void>((resolve) => t.gateway.logger.flush(() => resolve()));
    const line = t.logLines.find((l) => l.includes('accident')) ?? '';
    assert.match(line, /REDACTED/);
    assert.ok(!line.includes(k) && !line.includes('upstream-secret-key'), line);
  });

  test('health endpoints', async () => {
    assert.equal((await t.call('/healthz')).status, 200);
    const ready = await t.call('/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual((ready.json() as { checks: unknown }).checks, {
      store: 'ok',
      upstream: 'reachable',
      limits: 'memory',
      upstreamPool: 'ok',
      draining: false,
    });
  });
});
