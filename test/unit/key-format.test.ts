import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  BASE62,
  checksumOf,
  displayParts,
  generateKey,
  isWellFormedKey,
  keyPattern,
  RANDOM_LENGTH,
} from '../../src/keys/format.ts';
import { hashKey } from '../../src/keys/hash.ts';

const KEY_RE = /^kg_[0-9A-Za-z]{38}$/;

test('generated keys have the published shape and a valid checksum', () => {
  for (let i = 0; i < 1000; i++) {
    const key = generateKey();
    assert.match(key, KEY_RE);
    assert.ok(isWellFormedKey(key), key);
    assert.equal(key.match(keyPattern())?.[0], key);
  }
});

test('keys carry at least 190 bits of randomness', () => {
  assert.ok(RANDOM_LENGTH * Math.log2(62) >= 190);
});

test('100,000 keys are distinct and their characters are uniformly spread', () => {
  const seen = new Set<string>();
  const counts = new Map<string, number>();
  for (let i = 0; i < 100_000; i++) {
    const key = generateKey();
    seen.add(key);
    for (const c of key.slice(3, 3 + RANDOM_LENGTH)) counts.set(c, (counts.get(c) ?? 0) + 1);
  }
  assert.equal(seen.size, 100_000);
  // Chi-square goodness of fit over the 62 symbols (61 degrees of freedom; p = 0.0001 cut-off ≈ 110).
  const total = 100_000 * RANDOM_LENGTH;
  const expected = total / 62;
  let chi = 0;
  for (const symbol of BASE62) chi += ((counts.get(symbol) ?? 0) - expected) ** 2 / expected;
  assert.ok(chi < 110, `chi-square ${chi.toFixed(1)} says the alphabet is not uniform`);
});

test('the key generator uses only the CSPRNG', () => {
  const source = readFileSync(new URL('../../src/keys/format.ts', import.meta.url), 'utf8');
  assert.doesNotMatch(source, /Math\.random/);
  assert.match(source, /from 'node:crypto'/);
});

test('changing, inserting or deleting any one character breaks the checksum', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 40 }),
      fc.constantFrom(...BASE62),
      fc.constantFrom('replace', 'insert', 'delete'),
      (position, char, edit) => {
        const key = generateKey();
        let mutated: string;
        if (edit === 'replace') {
          fc.pre(key[position] !== char);
          mutated = key.slice(0, position) + char + key.slice(position + 1);
        } else if (edit === 'insert') {
          mutated = key.slice(0, position) + char + key.slice(position);
        } else {
          mutated = key.slice(0, position) + key.slice(position + 1);
        }
        return !isWellFormedKey(mutated);
      },
    ),
    { numRuns: 5000 },
  );
});

test('random key-shaped strings essentially never pass the checksum', () => {
  let passed = 0;
  for (let i = 0; i < 200_000; i++) {
    let body = 'kg_';
    for (let j = 0; j < 38; j++) body += BASE62[Math.floor(Math.random() * 62)];
    if (isWellFormedKey(body)) passed++;
  }
  assert.equal(passed, 0);
});

test('arbitrary strings never crash the checker and are rejected', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (text) => !isWellFormedKey(text)),
    { numRuns: 20_000 },
  );
});

test('a key with another deployment prefix is not ours', () => {
  const key = generateKey('acme');
  assert.ok(isWellFormedKey(key, 'acme'));
  assert.ok(!isWellFormedKey(key));
  const swapped = `kg${key.slice(4)}`;
  assert.ok(!isWellFormedKey(swapped));
});

test('the checksum is 6 base62 characters of CRC32', () => {
  assert.equal(checksumOf('kg_').length, 6);
  assert.match(checksumOf('anything'), /^[0-9A-Za-z]{6}$/);
});

test('display parts reveal only a short prefix and the last four characters', () => {
  const key = generateKey();
  const { start, last4 } = displayParts(key);
  assert.equal(start, key.slice(0, 7));
  assert.equal(last4, key.slice(-4));
});

test('hashes are HMAC-SHA256 under the pepper: another pepper gives another hash', () => {
  const key = generateKey();
  const a = hashKey(Buffer.alloc(32, 1), key);
  const b = hashKey(Buffer.alloc(32, 2), key);
  assert.match(a, /^[0-9a-f]{64}$/);
  assert.notEqual(a, b);
  assert.equal(a, hashKey(Buffer.alloc(32, 1), key));
  assert.ok(!a.includes(key));
});
