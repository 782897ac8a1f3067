/**
 * Regression (issue 12, item 7): `{"model":"mistral-large-latest","model":"mistral-small-latest"}`
 * was authorised by its last `model` and forwarded byte for byte, so a provider that reads the
 * first would serve a model the key may not use. The same with `"mod\u0065l"`. A body whose
 * top-level object names a member twice is now refused (422) and never forwarded.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { bearer, startTestGateway, type TestGateway } from '../support/gateway.ts';

let t: TestGateway;
let key: string;

before(async () => {
  t = await startTestGateway();
  key = (await t.createKey('small only', undefined, { models: ['mistral-small-*'] })).key;
});
after(async () => {
  await t.close();
});

const MESSAGES = '"messages":[{"role":"user","content":"hi"}]';

test('a member named twice at the top level is refused, escaped or not, and nothing is forwarded', async () => {
  const bodies = [
    `{"model":"mistral-large-latest","model":"mistral-small-latest",${MESSAGES}}`,
    `{"mod\\u0065l":"mistral-large-latest","model":"mistral-small-latest",${MESSAGES}}`,
    `{"model":"mistral-large-latest",${MESSAGES},"\\u006d\\u006f\\u0064\\u0065\\u006c":"mistral-small-latest"}`,
    `{"model":"mistral-small-latest","stream":true,${MESSAGES},"stream":false}`,
    `{"model":"mistral-small-latest",${MESSAGES},${MESSAGES}}`,
  ];
  for (const body of bodies) {
    const before = t.stub.requests.length;
    const res = await t.call('/v1/chat/completions', { method: 'POST', headers: bearer(key), body });
    assert.equal(res.status, 422, `${body}: ${res.text}`);
    assert.equal((res.json() as { code: string }).code, 'validation_error');
    assert.equal(t.stub.requests.length, before, `${body} was forwarded`);
  }
});

test('the same names deeper in the body, or in strings, are not duplicates', async () => {
  const body = JSON.stringify({
    model: 'mistral-small-latest',
    messages: [
      { role: 'user', content: '{"model":"mistral-large-latest","model":"x"}' },
      { role: 'assistant', content: 'ok' },
      { role: 'user', content: 'again' },
    ],
    response_format: { type: 'json_object', model: 'a', nested: { model: 'b' } },
  });
  const res = await t.call('/v1/chat/completions', { method: 'POST', headers: bearer(key), body });
  assert.equal(res.status, 200, res.text);
  assert.equal(t.stub.requests.at(-1)?.body, body, 'forwarded byte for byte');
});
