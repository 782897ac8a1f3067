import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { type AccessEntry, createLogger, redactor, writeAccessLine } from '../../src/http/log.ts';
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

test('the access line written past pino is the line pino writes, redacted the same way', async () => {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(chunk.toString('utf8'));
      callback();
    },
  });
  const logger = createLogger({
    level: 'info',
    keyPrefix: 'kg',
    secrets: ['upstream-secret-key'],
    destination,
  });
  const key = generateKey('kg');
  const entries: AccessEntry[] = [
    {
      reqId: 'req_1',
      clientReqId: 'client-7',
      keyId: 'key_1',
      ip: '::1',
      method: 'POST',
      userAgent: 'OpenAI/JS 6.49.0 "quoted"',
      path: '/v1/chat/completions',
      model: 'mistral-small-latest',
      status: 200,
      latencyMs: 1.234,
      upstreamMs: 0.5,
      promptTokens: 3,
      completionTokens: 4,
      failure: undefined,
    },
    {
      reqId: 'req_2',
      clientReqId: undefined,
      keyId: null,
      ip: '10.0.0.1',
      method: 'GET',
      userAgent: undefined,
      path: `/v1/"odd"\\path\u0001ü😀 ${key}`,
      model: null,
      status: 401,
      latencyMs: 0,
      upstreamMs: null,
      promptTokens: undefined,
      completionTokens: undefined,
      failure: 'key_unknown',
    },
  ];
  for (const entry of entries) {
    writeAccessLine(logger, entry);
    logger.info(entry, 'request');
  }
  assert.equal(lines.length, 0, 'the lines of one turn are held...');
  await new Promise<void>((resolve) => logger.flush(() => resolve()));
  assert.equal(lines.length, 1, '...and written as one chunk');
  lines.splice(0, 1, ...lines[0]!.split(/(?<=\n)/));
  assert.equal(lines.length, 4);
  for (let i = 0; i < 4; i += 2) {
    const [fast, slow] = [JSON.parse(lines[i]!), JSON.parse(lines[i + 1]!)] as Record<string, unknown>[];
    assert.ok(lines[i]!.endsWith('}\n'));
    delete fast!.time;
    delete slow!.time;
    assert.equal(JSON.stringify(fast), JSON.stringify(slow), 'same fields, same order, same values');
  }
  assert.ok(!lines.join('').includes(key), 'the key in the path was redacted');
  assert.match(lines[2]!, /\[REDACTED\]/);
  logger.level = 'warn';
  writeAccessLine(logger, entries[0]!);
  await new Promise<void>((resolve) => logger.flush(() => resolve()));
  assert.equal(lines.length, 4, 'nothing below the level is written');
});

test('lines still held when the process exits are written', () => {
  const script = `
    const { createLogger } = await import(${JSON.stringify(new URL('../../src/http/log.ts', import.meta.url).href)});
    const logger = createLogger({ level: 'info', keyPrefix: 'kg' });
    logger.info({ n: 1 }, 'first');
    logger.warn('last words');
    process.exit(3);
  `;
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(run.status, 3, run.stderr);
  const lines = run.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { msg: string });
  assert.deepEqual(
    lines.map((l) => l.msg),
    ['first', 'last words'],
  );
});
