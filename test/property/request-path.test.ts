/**
 * The request path's property suite (issue 12): arbitrary Authorization headers, paths and JSON
 * bodies (with duplicate and escaped members) sent to a real gateway over HTTPS, in front of the
 * upstream stub, which records what reached it. For every input:
 * - nothing crashes: every answer is a success or an error in the API's shape, never a 500, and
 *   the gateway keeps answering;
 * - nothing authenticates that should not: only the one real key, in a well-formed bearer header,
 *   gets past authentication;
 * - nothing is forwarded that was not authorised: every body the provider received names each
 *   top-level member once, and its model is a model id the key may use;
 * - nothing key-shaped that the client sent is echoed back in an error.
 * (X-Forwarded-For chains have their own file, forwarded-for.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { modelAllowed } from '../../src/auth/policy.ts';
import { duplicateTopLevelMember } from '../../src/http/json-members.ts';
import { generateKey } from '../../src/keys/format.ts';
import { looksLikeKey } from '../../src/keys/scrub.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

const ALLOWED = ['mistral-small-*', 'mistral-embed'];

type Answer = { status: number; text: string; headers: Record<string, string | string[] | undefined> };

let t: TestGateway;
let key: string;
let revoked: string;

before(async () => {
  t = await startTestGateway({
    configure(config) {
      // The properties send many bad keys from one address: keep the failure limiter out of the way.
      config.auth.failuresPerMinute = 1_000_000;
    },
  });
  key = (
    await t.createKey('fuzzed', undefined, { models: ALLOWED, scopes: ['chat', 'embeddings', 'models'] })
  ).key;
  const gone = await t.createKey('revoked');
  await t.gateway.store.revokeKey(gone.id, Date.now(), { type: 'cli', id: null, ip: null });
  await t.gateway.verifier.syncChanges();
  revoked = gone.key;
});
after(async () => {
  await t.close();
});

/**
 * An answer is well formed: a success, or an error in the API's JSON shape (the console's static
 * pages, outside the APIs, answer their 404 and 405 in plain text). Never a 500.
 */
function assertWellFormed(res: Answer, what: string, pathname = ''): void {
  assert.ok(res.status >= 200 && res.status < 500, `${what}: ${res.status} ${res.text.slice(0, 300)}`);
  if (res.status < 400) return;
  const isStaticPage = pathname.startsWith('/console') && !pathname.startsWith('/console/api/');
  if (isStaticPage && String(res.headers['content-type']).startsWith('text/plain')) return;
  const body = JSON.parse(res.text) as { object?: unknown; code?: unknown };
  assert.equal(body.object, 'error', `${what}: ${res.text.slice(0, 300)}`);
  assert.equal(typeof body.code, 'string');
}

/** Every body forwarded since `from` was authorised: one of each member, an allowed model. */
function assertForwardedAuthorised(from: number): void {
  for (const received of t.stub.requests.slice(from)) {
    if (received.method !== 'POST') continue;
    assert.equal(
      duplicateTopLevelMember(received.body),
      undefined,
      `forwarded with a duplicate: ${received.body}`,
    );
    const model = (JSON.parse(received.body) as { model?: unknown }).model;
    assert.ok(typeof model === 'string' && modelAllowed(ALLOWED, model), `forwarded model ${String(model)}`);
  }
}

/** undici refuses some header values and paths itself: those inputs never reach the gateway. */
async function send(
  path: string,
  init: { method?: 'GET' | 'POST'; headers?: Record<string, string>; body?: string },
): Promise<Answer | undefined> {
  try {
    return await t.call(path, init);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'UND_ERR_INVALID_ARG' || error instanceof TypeError) return undefined;
    throw error;
  }
}

const CHAT = JSON.stringify({ model: 'mistral-small-latest', messages: [{ role: 'user', content: 'hi' }] });

test('Authorization headers: only the real key, well formed, authenticates; nothing crashes', async () => {
  const credential = fc.oneof(
    fc.constant(() => key),
    fc.constant(() => revoked),
    fc.constant(() => generateKey('kg')),
    fc.constant(() => generateKey('other')),
    fc.constant(() => `${key}x`),
    fc.constant(() => key.slice(0, -1)),
    fc.constant(() => key.toUpperCase()),
    fc.string({ maxLength: 300 }).map((s) => () => s),
    fc.string({ unit: 'binary', maxLength: 80 }).map((s) => () => s),
  );
  const scheme = fc.constantFrom(
    'Bearer ',
    'bearer ',
    'BEARER  ',
    'Bearer',
    'Basic ',
    '',
    'Bearer\t',
    'Token ',
  );
  await fc.assert(
    fc.asyncProperty(scheme, credential, fc.constantFrom('', ' ', '  '), async (s, c, tail) => {
      const token = c();
      const header = `${s}${token}${tail}`;
      const from = t.stub.requests.length;
      const res = await send('/v1/chat/completions', {
        method: 'POST',
        headers: { authorization: header, 'content-type': 'application/json' },
        body: CHAT,
      });
      if (res === undefined) return;
      assertWellFormed(res, JSON.stringify(header));
      const wellFormedRealKey = /^bearer +$/i.test(s.replace(/\t/, '!')) && token === key;
      if (res.status === 200) assert.ok(wellFormedRealKey, `authenticated with ${JSON.stringify(header)}`);
      else if (wellFormedRealKey) assert.fail(`the real key was refused: ${res.text}`);
      if (!wellFormedRealKey) assert.equal(t.stub.requests.length, from, 'forwarded without authentication');
      if (res.status >= 400 && looksLikeKey(token) && token !== key) assert.ok(!res.text.includes(token));
    }),
    { numRuns: 300 },
  );
});

test('paths: every answer well formed, nothing forwarded off the routes, nothing key-shaped echoed', async () => {
  const segment = fc.oneof(
    fc.constantFrom(
      'v1',
      'models',
      'chat',
      'completions',
      'embeddings',
      '..',
      '.',
      '',
      '%2e%2e',
      '%2F',
      '%00',
    ),
    fc.constant(generateKey('kg')),
    fc.webSegment(),
    fc.string({ maxLength: 40 }).map(encodeURIComponent),
  );
  const path = fc
    .tuple(
      fc.constantFrom('/v1/', '/v1/models/', '/', '/admin/v1/', '/console/api/'),
      fc.array(segment, { maxLength: 6 }),
    )
    .map(([head, parts]) => head + parts.join('/'));
  await fc.assert(
    fc.asyncProperty(path, fc.constantFrom('GET' as const, 'POST' as const), async (p, method) => {
      const from = t.stub.requests.length;
      const res = await send(p, {
        method,
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        ...(method === 'POST' ? { body: CHAT } : {}),
      });
      if (res === undefined) return;
      assertWellFormed(res, `${method} ${p}`, new URL(t.url + p).pathname);
      for (const part of p.split('/')) if (looksLikeKey(part)) assert.ok(!res.text.includes(part), res.text);
      for (const received of t.stub.requests.slice(from)) {
        assert.match(
          received.path,
          /^\/v1\/(chat\/completions|embeddings|models(\/[A-Za-z0-9._%-]+)?)$/,
          received.path,
        );
      }
      assertForwardedAuthorised(from);
    }),
    { numRuns: 300 },
  );
});

/** The ways to write the name `model` in JSON. */
const modelName = fc.constantFrom('"model"', '"mod\\u0065l"', '"\\u006dodel"', '"model "', '"Model"');
const modelValue = fc.oneof(
  fc.constantFrom(
    'mistral-small-latest',
    'mistral-large-latest',
    'mistral-embed',
    '*',
    '..',
    'a/../b',
    'mistral-small',
  ),
  fc.constant(generateKey('kg')),
  fc.string({ maxLength: 200 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }).map((s) => `mistral-small-${s}`),
);

test('JSON bodies with duplicate and escaped members: only what was authorised is forwarded', async () => {
  const member = fc.oneof(
    fc.tuple(modelName, modelValue).map(([n, v]) => `${n}:${JSON.stringify(v)}`),
    fc.constant('"messages":[{"role":"user","content":"hi"}]'),
    fc.constant('"input":"hi"'),
    fc.constantFrom('"stream":false', '"stream":true', '"stream":"yes"', '"max_tokens":5', '"n":2'),
    fc
      .tuple(fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 3 }))
      .map(([n, v]) => `${JSON.stringify(n)}:${JSON.stringify(v)}`),
  );
  const body = fc.array(member, { minLength: 1, maxLength: 7 }).map((members) => `{${members.join(',')}}`);
  await fc.assert(
    fc.asyncProperty(body, fc.constantFrom('/v1/chat/completions', '/v1/embeddings'), async (text, path) => {
      const from = t.stub.requests.length;
      const res = await send(path, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: text,
      });
      if (res === undefined) return;
      assertWellFormed(res, text);
      if (duplicateTopLevelMember(text) !== undefined)
        assert.ok(res.status === 422, `${res.status} for ${text}`);
      assertForwardedAuthorised(from);
      // Unless an alias was rewritten (then the body is re-serialised), the bytes are the client's.
      const model = (JSON.parse(text) as { model?: unknown }).model;
      if (!(typeof model === 'string' && Object.hasOwn(t.config.modelAliases, model))) {
        for (const received of t.stub.requests.slice(from))
          assert.equal(received.body, text, 'forwarded byte for byte');
      }
    }),
    { numRuns: 400 },
  );
  // The gateway still answers after all that.
  const res = await send('/v1/chat/completions', {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: CHAT,
  });
  assert.equal(res?.status, 200);
});
