import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { parseAuthorization } from '../../src/auth/bearer.ts';
import { generateKey, isWellFormedKey } from '../../src/keys/format.ts';

test('the scheme is matched case-insensitively and extra spaces are allowed', () => {
  const key = generateKey();
  for (const header of [
    `Bearer ${key}`,
    `bearer ${key}`,
    `BEARER ${key}`,
    `bEaReR    ${key}`,
    `Bearer ${key}  `,
  ]) {
    assert.deepEqual(parseAuthorization(header), { kind: 'token', token: key }, header);
  }
});

test('no header at all is "missing"; another scheme is malformed, named only when it is a word', () => {
  assert.deepEqual(parseAuthorization(undefined), { kind: 'missing' });
  const key = generateKey();
  const cases: [string, string][] = [
    [
      `Basic ${Buffer.from('user:pass').toString('base64')}`,
      'the "Basic" scheme is not accepted, only Bearer',
    ],
    [`Token ${key}`, 'the "Token" scheme is not accepted, only Bearer'],
    ['Digest username="x"', 'the "Digest" scheme is not accepted, only Bearer'],
    [key, 'no Bearer scheme before the credentials'],
    [`${key} ${key}`, 'no Bearer scheme before the credentials'],
  ];
  for (const [header, reason] of cases) {
    assert.deepEqual(parseAuthorization(header), { kind: 'malformed', reason }, header);
  }
});

test('malformed headers are reported as such', () => {
  const key = generateKey();
  const cases = [
    '',
    'Bearer',
    'Bearer ',
    `Bearer${key}`,
    `Bearer ${key} extra`,
    'Bearer ké',
    'Bearer a\tb',
    `Bearer ${'a'.repeat(300)}`,
    `Bearer ${key},${key}`,
  ];
  for (const header of cases)
    assert.equal(parseAuthorization(header).kind, 'malformed', JSON.stringify(header));
  assert.equal(parseAuthorization([`Bearer ${key}`, `Bearer ${key}`]).kind, 'malformed');
});

test('arbitrary headers never throw and never yield a token that is a valid key unless one was sent', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 400 }), (header) => {
      const result = parseAuthorization(header);
      if (result.kind === 'token') {
        assert.ok(result.token.length > 0 && result.token.length <= 256);
        assert.ok(!isWellFormedKey(result.token));
      }
      return true;
    }),
    { numRuns: 20_000 },
  );
});

test('a token is never altered by the parser (case is significant in the token)', () => {
  fc.assert(
    fc.property(fc.stringMatching(/^[A-Za-z0-9\-._~+/]{1,200}=*$/), (token) => {
      const result = parseAuthorization(`Bearer ${token}`);
      return result.kind === 'token' && result.token === token;
    }),
  );
  const key = generateKey();
  const flipped =
    key.slice(0, 10) +
    (key[10] === key[10]?.toUpperCase() ? key[10]?.toLowerCase() : key[10]?.toUpperCase()) +
    key.slice(11);
  if (flipped !== key) assert.ok(!isWellFormedKey(flipped));
});
