import assert from 'node:assert/strict';
import { test } from 'node:test';
import { redactor } from '../../src/http/log.ts';
import { generateKey } from '../../src/keys/format.ts';

const redact = redactor('kg', ['upstream-secret-key']);

test('the log redactor removes each kind of secret on its own', () => {
  const key = generateKey('kg');
  const cases: [string, string][] = [
    [`{"msg":"oops ${key}"}`, key],
    ['{"h":"Bearer opaque.token-value_123"}', 'opaque.token-value_123'],
    ['{"h":"bEaReR   opaque.token-value_123"}', 'opaque.token-value_123'],
    ['{"upstream":"upstream-secret-key"}', 'upstream-secret-key'],
  ];
  for (const [line, secret] of cases) {
    const out = redact(line);
    assert.ok(!out.includes(secret), out);
    assert.match(out, /\[REDACTED\]/);
  }
});

test('a line without anything key-shaped is returned unchanged', () => {
  const line =
    '{"level":"info","time":"2026-11-30T06:00:00.000Z","reqId":"req_abc","keyId":"key_123","path":"/v1/chat/completions","status":200,"msg":"request"}';
  assert.equal(redact(line), line);
  // The prefix alone, or a short secret-like word after "bearer", is not a secret.
  assert.equal(redact('{"note":"kg_ is our prefix; bearer x"}'), '{"note":"kg_ is our prefix; bearer x"}');
});
