import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.ts';
import { eventually } from '../support/wait.ts';

const KEY = 'upstream-secret-key';

type JsonRecord = Record<string, unknown>;

function asRecord(value: unknown): JsonRecord {
  assert.ok(typeof value === 'object' && value !== null && !Array.isArray(value), 'expected a JSON object');
  return value as JsonRecord;
}

function asArray(value: unknown): unknown[] {
  assert.ok(Array.isArray(value), 'expected a JSON array');
  return value;
}

describe('upstream stub', () => {
  let stub: UpstreamStub;

  before(async () => {
    stub = await startUpstreamStub({ port: 0 });
  });

  after(async () => {
    await stub.close();
  });

  function post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
    return fetch(`${stub.url}${path}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
  }

  function get(path: string): Promise<Response> {
    return fetch(`${stub.url}${path}`, { headers: { Authorization: `Bearer ${KEY}` } });
  }

  /** Parses an SSE body into the JSON payloads of its `data:` events (plus the raw text). */
  async function readSse(res: Response): Promise<{ raw: string; events: JsonRecord[] }> {
    const raw = await res.text();
    assert.ok(raw.endsWith('data: [DONE]\n\n'), 'stream must end with data: [DONE]');
    const frames = raw.split('\n\n').filter((f) => f.length > 0);
    for (const f of frames) assert.ok(f.startsWith('data: '), `bad frame: ${f}`);
    assert.equal(frames.at(-1), 'data: [DONE]');
    const events = frames.slice(0, -1).map((f) => asRecord(JSON.parse(f.slice('data: '.length))));
    return { raw, events };
  }

  it('answers a non-streaming chat completion with the Mistral shape and deterministic usage', async () => {
    const res = await post('/v1/chat/completions', {
      model: 'mistral-small-latest',
      stream: false,
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'Say hello to the world' },
      ],
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    const body = asRecord(await res.json());
    assert.match(String(body.id), /^cmpl-[0-9a-f]{32}$/);
    assert.equal(body.object, 'chat.completion');
    assert.ok(Number.isInteger(body.created));
    assert.equal(body.model, 'mistral-small-latest');
    const choice = asRecord(asArray(body.choices)[0]);
    assert.equal(choice.index, 0);
    assert.equal(choice.finish_reason, 'stop');
    assert.deepEqual(choice.message, {
      role: 'assistant',
      content: 'Echo: Say hello to the world',
      tool_calls: null,
      prefix: false,
    });
    // prompt: 3 + 5 words; completion: "Echo: Say hello to the world" = 6 words.
    assert.deepEqual(body.usage, { prompt_tokens: 8, completion_tokens: 6, total_tokens: 14 });
  });

  it('truncates the echo to 20 words and counts usage from it', async () => {
    const long = Array.from({ length: 30 }, (_, i) => `w${i}`).join(' ');
    const body = asRecord(
      await (
        await post('/v1/chat/completions', { model: 'm', messages: [{ role: 'user', content: long }] })
      ).json(),
    );
    const message = asRecord(asRecord(asArray(body.choices)[0]).message);
    assert.equal(String(message.content).split(' ').length, 20);
    assert.deepEqual(body.usage, { prompt_tokens: 30, completion_tokens: 20, total_tokens: 50 });
  });

  it('streams chat completions with the exact SSE framing', async () => {
    const res = await post('/v1/chat/completions', {
      model: 'mistral-large-latest',
      stream: true,
      messages: [{ role: 'user', content: 'one two three four five' }],
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    const { events } = await readSse(res);
    assert.equal(events.length, 1 + 3, 'role chunk + 3 content chunks');

    const ids = new Set(events.map((e) => e.id));
    assert.equal(ids.size, 1);
    let content = '';
    events.forEach((event, i) => {
      const last = i === events.length - 1;
      assert.equal(event.object, 'chat.completion.chunk');
      assert.equal(event.model, 'mistral-large-latest');
      assert.ok(Number.isInteger(event.created));
      const choice = asRecord(asArray(event.choices)[0]);
      assert.ok(Object.hasOwn(choice, 'finish_reason'), 'finish_reason key must be present');
      assert.equal(choice.finish_reason, last ? 'stop' : null);
      assert.equal(Object.hasOwn(event, 'usage'), last, 'usage only on the last chunk');
      const delta = asRecord(choice.delta);
      if (i === 0) assert.deepEqual(delta, { role: 'assistant', content: '' });
      content += String(delta.content);
    });
    assert.equal(content, 'Echo: one two three four five');
    const usage = asRecord(events.at(-1)?.usage);
    assert.deepEqual(usage, { prompt_tokens: 5, completion_tokens: 6, total_tokens: 11 });
  });

  it('streams FIM completions and counts prompt + suffix words', async () => {
    const res = await post('/v1/fim/completions', {
      model: 'codestral-latest',
      prompt: 'def f(a, b):',
      suffix: 'return c',
      stream: true,
    });
    const { events } = await readSse(res);
    const content = events
      .map((e) => String(asRecord(asRecord(asArray(e.choices)[0]).delta).content))
      .join('');
    assert.equal(content, '/* middle */');
    assert.deepEqual(events.at(-1)?.usage, { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 });
  });

  it('returns float embeddings even when base64 is requested', async () => {
    for (const encoding_format of ['float', 'base64']) {
      const res = await post('/v1/embeddings', {
        model: 'mistral-embed',
        input: ['hello world', 'a b c'],
        encoding_format,
      });
      assert.equal(res.status, 200);
      const body = asRecord(await res.json());
      assert.equal(body.object, 'list');
      assert.equal(body.model, 'mistral-embed');
      assert.equal(typeof body.id, 'string');
      const data = asArray(body.data).map(asRecord);
      assert.equal(data.length, 2);
      data.forEach((item, index) => {
        assert.equal(item.object, 'embedding');
        assert.equal(item.index, index);
        const embedding = asArray(item.embedding);
        assert.equal(embedding.length, 8);
        for (const v of embedding) assert.ok(typeof v === 'number' && Number.isFinite(v));
      });
      assert.deepEqual(body.usage, { prompt_tokens: 5, completion_tokens: 0, total_tokens: 5 });
    }
    const a = asRecord(await (await post('/v1/embeddings', { model: 'mistral-embed', input: 'x' })).json());
    const b = asRecord(await (await post('/v1/embeddings', { model: 'mistral-embed', input: ['x'] })).json());
    assert.deepEqual(asRecord(asArray(a.data)[0]).embedding, asRecord(asArray(b.data)[0]).embedding);
  });

  it('lists base model cards and retrieves one', async () => {
    const res = await get('/v1/models');
    assert.equal(res.status, 200);
    const body = asRecord(await res.json());
    assert.equal(body.object, 'list');
    const cards = asArray(body.data).map(asRecord);
    const ids = cards.map((c) => c.id);
    for (const id of ['mistral-small-latest', 'mistral-embed', 'codestral-latest'])
      assert.ok(ids.includes(id));
    for (const card of cards) {
      assert.equal(card.type, 'base');
      assert.equal(card.object, 'model');
      assert.equal(card.owned_by, 'mistralai');
      assert.ok(Number.isInteger(card.created));
      assert.ok(Number.isInteger(card.max_context_length));
      assert.deepEqual(card.aliases, []);
      assert.equal(card.deprecation, null);
      for (const v of Object.values(asRecord(card.capabilities))) assert.equal(typeof v, 'boolean');
    }

    const one = await get('/v1/models/codestral-latest');
    assert.equal(one.status, 200);
    const card = asRecord(await one.json());
    assert.equal(card.id, 'codestral-latest');
    assert.equal(card.type, 'base');

    const missing = await get('/v1/models/nope');
    assert.equal(missing.status, 404);
    assert.equal(asRecord(await missing.json()).object, 'error');
  });

  it('rejects requests without the bearer key with 401', async () => {
    const res = await fetch(`${stub.url}/v1/models`);
    assert.equal(res.status, 401);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    const body = asRecord(await res.json());
    assert.equal(body.message, 'Unauthorized');
    assert.match(String(body.request_id), /^[0-9a-f]{32}$/);

    const wrong = await post(
      '/v1/chat/completions',
      { model: 'm', messages: [] },
      { Authorization: 'Bearer nope' },
    );
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
  });

  it('triggers failures from special model names and bad input', async () => {
    const e500 = await post('/v1/chat/completions', { model: 'stub-error-500', messages: [], stream: true });
    assert.equal(e500.status, 500);
    assert.deepEqual(await e500.json(), {
      object: 'error',
      message: 'Internal server error',
      type: 'server_error',
      param: null,
      code: '5000',
    });
    const e400 = await post('/v1/chat/completions', { model: 'stub-error-400', messages: [] });
    assert.equal(e400.status, 400);
    assert.equal(asRecord(await e400.json()).type, 'invalid_model');

    const badJson = await post('/v1/chat/completions', '{not json');
    assert.equal(badJson.status, 400);
    assert.equal(asRecord(await badJson.json()).object, 'error');

    const unknown = await get('/v1/nothing-here');
    assert.equal(unknown.status, 404);
    assert.equal(asRecord(await unknown.json()).object, 'error');
  });

  it('echoes request headers for stub-echo-headers', async () => {
    const res = await post(
      '/v1/chat/completions',
      { model: 'stub-echo-headers', messages: [{ role: 'user', content: 'hi' }] },
      { 'X-Custom': 'a b  c' },
    );
    const body = asRecord(await res.json());
    const message = asRecord(asRecord(asArray(body.choices)[0]).message);
    const headers = asRecord(JSON.parse(String(message.content)));
    assert.equal(headers['x-custom'], 'a b  c');
    assert.equal(headers.authorization, `Bearer ${KEY}`);
  });

  it('records requests in order', async () => {
    const before = stub.requests.length;
    await (await post('/v1/embeddings', { model: 'mistral-embed', input: 'recorded' })).text();
    const last = stub.requests.at(-1);
    assert.equal(stub.requests.length, before + 1);
    assert.equal(last?.method, 'POST');
    assert.equal(last?.path, '/v1/embeddings');
    assert.equal(JSON.parse(last?.body ?? '{}').input, 'recorded');
  });
});

describe('upstream stub lifecycle', () => {
  it('applies latency and closes promptly with a stub-slow request in flight', async () => {
    const stub = await startUpstreamStub({ port: 0, latencyMs: 50 });
    const started = Date.now();
    const res = await fetch(`${stub.url}/v1/models`, { headers: { Authorization: `Bearer ${KEY}` } });
    assert.equal(res.status, 200);
    await res.text();
    assert.ok(Date.now() - started >= 45, 'latency applied');
    stub.setLatency(0);

    const slow = fetch(`${stub.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'stub-slow', messages: [{ role: 'user', content: 'hi' }] }),
    });
    slow.catch(() => {}); // rejected by close() below, asserted then
    await eventually(() => stub.inFlight === 1, 'the slow request to reach the stub');
    const closeStarted = Date.now();
    await stub.close();
    assert.ok(Date.now() - closeStarted < 1000, 'close() does not wait for the slow reply');
    await assert.rejects(slow);
  });

  it('streams stub-slow-stream chunk by chunk', async () => {
    const stub = await startUpstreamStub({ port: 0 });
    try {
      const res = await fetch(`${stub.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({
          model: 'stub-slow-stream',
          stream: true,
          messages: [{ role: 'user', content: 'x' }],
        }),
      });
      assert.equal(res.status, 200);
      const reader = res.body?.getReader();
      assert.ok(reader);
      const first = await reader.read();
      assert.match(new TextDecoder().decode(first.value), /"role":"assistant"/);
      await reader.cancel();
    } finally {
      await stub.close();
    }
  });
});
