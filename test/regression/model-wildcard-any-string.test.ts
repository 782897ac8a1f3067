/**
 * Regression (issue 12, item 13): the model wildcard `*` matched anything — `/`, `..`, NUL,
 * non-ASCII, megabytes. A pattern now matches only ids of the model id grammar.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { modelAllowed } from '../../src/auth/policy.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';

const NOT_IDS = [
  '../../etc/passwd',
  'mistral-small/../large',
  'mistral-small\u0000',
  'mistral-smäll',
  'mistral-small\n',
  `mistral-${'x'.repeat(1 << 16)}`,
  'mistral-small latest',
  '',
];

test('no pattern, not even `*`, matches a string outside the model id grammar', () => {
  for (const patterns of [['*'], ['mistral-*'], ['*-small*'], ['mistral-*', 'codestral-latest']]) {
    for (const model of NOT_IDS) {
      assert.equal(
        modelAllowed(patterns, model),
        false,
        `${patterns} matched ${JSON.stringify(model.slice(0, 30))}`,
      );
    }
  }
  assert.equal(modelAllowed(['*'], 'mistral-small-latest'), true);
  assert.equal(modelAllowed(['mistral-*'], 'mistral-small-latest'), true);
  assert.equal(modelAllowed(['mistralai/*'], 'mistralai/Mistral-7B-Instruct-v0.3'), true);
  assert.equal(modelAllowed(['ft:*'], 'ft:open-mistral-7b:587a6b29:20240514:7e773925'), true);
});

let t: TestGateway;
before(async () => {
  t = await startTestGateway();
});
after(async () => {
  await t.close();
});

test('a wildcard key cannot send a model outside the grammar to the provider', async () => {
  const { key } = await t.createKey('wildcard', undefined, { models: ['mistral-*'] });
  const before = t.stub.requests.length;
  for (const model of NOT_IDS.slice(0, 7)) {
    const res = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody({ model }),
    });
    assert.ok(
      res.status === 422 || res.status === 403,
      `${JSON.stringify(model.slice(0, 30))}: ${res.status}`,
    );
  }
  assert.equal(t.stub.requests.length, before, 'nothing was forwarded');
});
