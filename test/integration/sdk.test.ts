/**
 * The official SDKs (`@mistralai/mistralai` 2.x and `openai` 6.x), unmodified except for the base
 * URL, against the real gateway (HTTPS, SQLite) in front of the upstream stub.
 */

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Mistral } from '@mistralai/mistralai';
import { HTTPClient } from '@mistralai/mistralai/lib/http.js';
import { HTTPValidationError, MistralError } from '@mistralai/mistralai/models/errors';
import OpenAI from 'openai';
import type { ChatCompletionCreateParamsNonStreaming } from 'openai/resources/chat/completions';
import { Agent, setGlobalDispatcher } from 'undici';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { bearer, startTestGateway, type TestGateway, UPSTREAM_KEY } from '../support/gateway.ts';
import { eventually } from '../support/wait.ts';

const PROMPT = 'hello there from the sdk';
const REPLY = `Echo: ${PROMPT}`;
/** As the stub counts them: words of all messages, words of the reply. */
const USAGE = { prompt: 5, completion: 6, total: 11 };
const EMBED_INPUTS = ['first input', 'second one here'];

let t: TestGateway;
let agent: Agent;
let key: string;
/** Every Keygate key sent by a client in this file: none may ever reach the upstream. */
const clientKeys: string[] = [];

interface Captured {
  url: string;
  status: number;
  headers: string;
  body: string;
}
/** Raw copies of every response the SDKs receive (headers + body, streams included). */
const captured: Promise<Captured>[] = [];

/** The global fetch, unchanged, except that a copy of every response is recorded. */
async function recordingFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
  const res = await fetch(input, init);
  const copy = res.clone();
  captured.push(
    copy.text().then((body) => ({
      url: res.url,
      status: res.status,
      headers: JSON.stringify([...copy.headers]),
      body,
    })),
  );
  return res;
}

function mistral(apiKey: string): Mistral {
  return new Mistral({ apiKey, serverURL: t.url, httpClient: new HTTPClient({ fetcher: recordingFetch }) });
}

function openai(apiKey: string): OpenAI {
  return new OpenAI({ apiKey, baseURL: `${t.url}/v1`, maxRetries: 0, fetch: recordingFetch });
}

const messages = [{ role: 'user' as const, content: PROMPT }];

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

async function rawPost(
  path: string,
  apiKey: string,
  body: unknown,
): Promise<{ status: number; json: unknown }> {
  const res = await fetch(t.url + path, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

function mistralStatus(status: number, bodyIncludes?: string): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof MistralError, `expected a MistralError, got ${String(error)}`);
    assert.equal(error.statusCode, status, error.body);
    if (bodyIncludes !== undefined) assert.ok(error.body.includes(bodyIncludes), error.body);
    return true;
  };
}

before(async () => {
  t = await startTestGateway();
  agent = new Agent({ connect: { ca: t.ca } });
  setGlobalDispatcher(agent);
  key = (await t.createKey('sdk test')).key;
  clientKeys.push(key);
});

after(async () => {
  await t.close();
  await agent.close();
});

test('Mistral SDK: chat.complete returns the echo and the usage the provider counted', async () => {
  const res = await mistral(key).chat.complete({ model: 'mistral-small-latest', messages });
  assert.equal(res.object, 'chat.completion');
  assert.equal(res.model, 'mistral-small-latest');
  assert.equal(res.choices.length, 1);
  assert.equal(res.choices[0]?.message?.content, REPLY);
  assert.equal(res.choices[0]?.finishReason, 'stop');
  assert.equal(res.usage.promptTokens, USAGE.prompt);
  assert.equal(res.usage.completionTokens, USAGE.completion);
  assert.equal(res.usage.totalTokens, USAGE.total);
});

test('Mistral SDK: chat.stream chunks join to the same content; the last one carries usage', async () => {
  const stream = await mistral(key).chat.stream({ model: 'mistral-small-latest', messages });
  const parts: string[] = [];
  const chunks = [];
  for await (const event of stream) {
    chunks.push(event.data);
    const content = event.data.choices[0]?.delta.content;
    if (typeof content === 'string') parts.push(content);
  }
  assert.ok(chunks.length >= 3, `only ${chunks.length} chunks`);
  assert.equal(parts.join(''), REPLY);
  const last = chunks.at(-1);
  assert.equal(last?.choices[0]?.finishReason, 'stop');
  assert.equal(last?.usage?.promptTokens, USAGE.prompt);
  assert.equal(last?.usage?.completionTokens, USAGE.completion);
  assert.equal(last?.usage?.totalTokens, USAGE.total);
  for (const chunk of chunks.slice(0, -1)) assert.equal(chunk.usage, undefined);
});

test('Mistral SDK: fim.complete', async () => {
  const res = await mistral(key).fim.complete({
    model: 'codestral-latest',
    prompt: 'def add(a, b):',
    suffix: 'return a + b',
  });
  assert.equal(res.choices[0]?.message?.content, '/* middle */');
  assert.equal(res.usage.promptTokens, 7);
  assert.equal(res.usage.completionTokens, 3);
  assert.equal(res.usage.totalTokens, 10);
});

/** The vectors the stub computes for EMBED_INPUTS, asked directly with `encoding_format: "float"`. */
async function stubEmbeddings(): Promise<number[][]> {
  const res = await fetch(`${t.stub.url}/v1/embeddings`, {
    method: 'POST',
    headers: { authorization: `Bearer ${UPSTREAM_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'mistral-embed', input: EMBED_INPUTS, encoding_format: 'float' }),
  });
  assert.equal(res.status, 200);
  const body: unknown = await res.json();
  assert.ok(isRecord(body) && Array.isArray(body.data));
  return body.data.map((item: unknown) => {
    assert.ok(isRecord(item) && Array.isArray(item.embedding));
    return item.embedding.map((v: unknown) => {
      assert.equal(typeof v, 'number');
      return Number(v);
    });
  });
}

test('Mistral SDK: embeddings.create returns the provider vectors of 8 floats', async () => {
  const res = await mistral(key).embeddings.create({ model: 'mistral-embed', inputs: EMBED_INPUTS });
  const expected = await stubEmbeddings();
  assert.equal(res.data.length, 2);
  assert.deepEqual(
    res.data.map((d) => d.embedding),
    expected,
  );
  for (const d of res.data) assert.equal(d.embedding?.length, 8);
  assert.equal(res.usage.promptTokens, 5);
});

test('Mistral SDK: models.list and models.retrieve give base cards with ids', async () => {
  const client = mistral(key);
  const list = await client.models.list();
  const data = list.data ?? [];
  assert.ok(data.length > 0);
  const ids: string[] = [];
  for (const card of data) {
    assert.equal(card.type, 'base');
    assert.ok('id' in card && typeof card.id === 'string' && card.id.length > 0);
    ids.push(card.id);
  }
  assert.ok(ids.includes('mistral-small-latest'), ids.join(','));
  const one = await client.models.retrieve({ modelId: 'mistral-small-latest' });
  assert.equal(one.type, 'base');
  assert.ok('id' in one);
  assert.equal(one.id, 'mistral-small-latest');
});

test('legacy alias: mistral-small reaches the provider as mistral-small-latest', async () => {
  const before = t.stub.requests.length;
  const res = await mistral(key).chat.complete({ model: 'mistral-small', messages });
  assert.equal(res.choices[0]?.message?.content, REPLY);
  const sent = t.stub.requests.slice(before).filter((r) => r.path === '/v1/chat/completions');
  assert.equal(sent.length, 1);
  const body: unknown = JSON.parse(sent[0]!.body);
  assert.ok(isRecord(body));
  assert.equal(body.model, 'mistral-small-latest');
});

test('OpenAI SDK: chat.completions.create, plain and streamed', async () => {
  const client = openai(key);
  const res = await client.chat.completions.create({ model: 'mistral-small-latest', messages });
  assert.equal(res.choices[0]?.message.content, REPLY);
  assert.equal(res.choices[0]?.finish_reason, 'stop');
  assert.deepEqual(
    [res.usage?.prompt_tokens, res.usage?.completion_tokens, res.usage?.total_tokens],
    [USAGE.prompt, USAGE.completion, USAGE.total],
  );

  const stream = await client.chat.completions.create({
    model: 'mistral-small-latest',
    messages,
    stream: true,
  });
  let content = '';
  let finish: string | null | undefined;
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const chunk of stream) {
    content += chunk.choices[0]?.delta.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
    usage = chunk.usage ?? usage;
  }
  assert.equal(content, REPLY);
  assert.equal(finish, 'stop');
  assert.equal(usage?.total_tokens, USAGE.total);
});

test('OpenAI SDK: embeddings.create (base64 by default) decodes to the provider floats', async () => {
  const res = await openai(key).embeddings.create({ model: 'mistral-embed', input: EMBED_INPUTS });
  const sent: unknown = JSON.parse(t.stub.requests.findLast((r) => r.path === '/v1/embeddings')!.body);
  assert.ok(isRecord(sent));
  assert.equal(sent.encoding_format, 'base64', 'the SDK asked for base64, so its decoding is exercised');
  const expected = await stubEmbeddings();
  assert.equal(res.data.length, 2);
  res.data.forEach((item, i) => {
    assert.equal(item.embedding.length, 8);
    for (const v of item.embedding) assert.ok(v !== 0 && Number.isFinite(v));
    for (const [j, v] of item.embedding.entries()) assert.ok(Math.abs(v - expected[i]![j]!) < 1e-6);
    // base64 carries float32: exactly the provider's values rounded to float32.
    assert.deepEqual(item.embedding, expected[i]!.map(Math.fround));
  });
  assert.equal(res.usage.prompt_tokens, 5);
});

test('OpenAI SDK: models.list', async () => {
  const page = await openai(key).models.list();
  const ids = page.data.map((m) => m.id);
  assert.ok(ids.includes('mistral-small-latest'), ids.join(','));
  for (const m of page.data) assert.equal(m.object, 'model');
});

const wellFormedGarbage = `kg_${'A'.repeat(38)}`;
const randomGarbage = randomBytes(30).toString('base64url');

for (const [label, bad] of [
  ['a well-formed look-alike key', wellFormedGarbage],
  ['a random string', randomGarbage],
] as const) {
  test(`wrong key (${label}): 401 through both SDKs, with the message and request id`, async () => {
    clientKeys.push(bad);
    const raw = await rawPost('/v1/chat/completions', bad, { model: 'mistral-small-latest', messages });
    assert.equal(raw.status, 401);
    assert.ok(isRecord(raw.json) && typeof raw.json.message === 'string' && raw.json.message.length > 0);
    const gatewayMessage = raw.json.message;

    await assert.rejects(
      mistral(bad).chat.complete({ model: 'mistral-small-latest', messages }),
      mistralStatus(401, gatewayMessage),
    );
    await assert.rejects(
      openai(bad).chat.completions.create({ model: 'mistral-small-latest', messages }),
      (error) => {
        assert.ok(error instanceof OpenAI.AuthenticationError, String(error));
        assert.equal(error.status, 401);
        assert.ok(error.message.includes(gatewayMessage), error.message);
        assert.ok(typeof error.requestID === 'string' && error.requestID.length > 0);
        assert.equal(error.headers?.get('x-request-id'), error.requestID);
        return true;
      },
    );
  });
}

test('revoked key: 401 through both SDKs once the change feed has run', async () => {
  const { id, key: revoked } = await t.createKey('to revoke');
  clientKeys.push(revoked);
  const ok = await mistral(revoked).chat.complete({ model: 'mistral-small-latest', messages });
  assert.equal(ok.choices[0]?.message?.content, REPLY);
  await t.gateway.store.revokeKey(id, Date.now(), CLI_ACTOR);
  await eventually(async () => {
    await t.gateway.verifier.syncChanges();
    return (await t.call('/v1/models', { headers: bearer(revoked) })).status === 401;
  }, 'the revocation to reach the server');
  await assert.rejects(
    mistral(revoked).chat.complete({ model: 'mistral-small-latest', messages }),
    mistralStatus(401),
  );
  await assert.rejects(
    openai(revoked).models.list(),
    (error) => error instanceof OpenAI.AuthenticationError && error.status === 401,
  );
});

test('upstream 400: OpenAI BadRequestError carries the provider message', async () => {
  // Mistral SDK: SDKError with the raw provider body.
  await assert.rejects(
    mistral(key).chat.complete({ model: 'stub-error-400', messages }),
    mistralStatus(400, 'Invalid model: stub-error-400'),
  );
  // KNOWN GATEWAY BUG, fails until fixed: OpenAI Node reads only `body.error`, and the gateway relays
  // the provider's Mistral-style error body unchanged (src/http/gateway.ts #forward), so the SDK
  // message is "400 status code (no body)". The gateway should add an `error` member, as it does
  // for its own errors (mistral-api.md §7.2).
  await assert.rejects(
    openai(key).chat.completions.create({ model: 'stub-error-400', messages }),
    (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.equal(error.status, 400);
      assert.ok(error.message.includes('Invalid model: stub-error-400'), error.message);
      return true;
    },
  );
});

test('upstream 500: status 500 through both SDKs', async () => {
  await assert.rejects(mistral(key).chat.complete({ model: 'stub-error-500', messages }), mistralStatus(500));
  await assert.rejects(
    openai(key).chat.completions.create({ model: 'stub-error-500', messages }),
    (error) => {
      assert.ok(error instanceof OpenAI.InternalServerError, String(error));
      assert.equal(error.status, 500);
      return true;
    },
  );
});

test('missing messages: 422 with a FastAPI-style detail', async () => {
  const params = { model: 'mistral-small-latest' } as unknown as ChatCompletionCreateParamsNonStreaming;
  await assert.rejects(openai(key).chat.completions.create(params), (error) => {
    assert.ok(error instanceof OpenAI.UnprocessableEntityError, String(error));
    assert.equal(error.status, 422);
    assert.ok(error.message.includes('messages'), error.message);
    return true;
  });
  const raw = await rawPost('/v1/chat/completions', key, { model: 'mistral-small-latest' });
  assert.equal(raw.status, 422);
  assert.ok(isRecord(raw.json) && Array.isArray(raw.json.detail));
  const first: unknown = raw.json.detail[0];
  assert.ok(isRecord(first));
  assert.deepEqual(first.loc, ['body', 'messages']);
  assert.equal(typeof first.msg, 'string');
  assert.equal(typeof first.type, 'string');

  // The Mistral SDK parses the same shape as HTTPValidationError.
  await assert.rejects(
    mistral(key).chat.complete({ model: 'mistral-small-latest', messages: [] }),
    (error) => {
      assert.ok(error instanceof HTTPValidationError, String(error));
      assert.deepEqual(error.detail?.[0]?.loc, ['body', 'messages']);
      return true;
    },
  );
});

test('the Keygate key never reaches the provider; the provider key is always the one sent', () => {
  assert.ok(t.stub.requests.length >= 10, `only ${t.stub.requests.length} upstream requests`);
  for (const r of t.stub.requests) {
    const seen = JSON.stringify(r.headers) + r.body;
    for (const k of clientKeys) assert.ok(!seen.includes(k), `client key reached the upstream on ${r.path}`);
    assert.ok(!seen.includes('kg_'), `something key-like reached the upstream on ${r.path}`);
    assert.equal(r.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
  }
});

test('the provider key never reaches the client', async () => {
  const responses = await Promise.all(captured);
  assert.ok(responses.length >= 20, `only ${responses.length} responses recorded`);
  for (const r of responses) {
    assert.ok(!r.headers.includes(UPSTREAM_KEY), `upstream key in the headers of ${r.url}`);
    assert.ok(!r.body.includes(UPSTREAM_KEY), `upstream key in the body of ${r.url}`);
    assert.ok(!r.url.startsWith(t.stub.url), 'an SDK talked to the upstream directly');
  }
});
