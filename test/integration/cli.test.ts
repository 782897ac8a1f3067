/**
 * The `keygate` command as a user runs it: real child processes (`bin/keygate.js` on this Node),
 * a fresh data directory per test, and the local upstream stub as the model provider.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, connect as netConnect, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect } from 'node:tls';
import { request } from 'undici';
import type { CliResult, Gateway, HttpResult } from '../support/cli.ts';
import {
  ANY_KEY_RE,
  baseEnv,
  CLI_TIMEOUT_MS,
  createCliHarness,
  KEY_RE,
  pollStatus,
  STACK_LINE,
  STOP_TIMEOUT_MS,
  stopGateway,
  stopProc,
  waitForOutput,
  within,
} from '../support/cli.ts';
import { DEFAULT_STUB_API_KEY, type UpstreamStub } from '../support/upstream-stub.ts';
import { eventually } from '../support/wait.ts';

interface KeyView {
  id: string;
  name: string;
  display: string;
  status: string;
  created_at: string | null;
  expires_at: string | null;
  revoked_at: string | null;
}

interface CreatedKey extends KeyView {
  key: string;
}

interface UsageRow {
  key_id: string;
  name: string | null;
  requests: number;
  errors: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

interface ChatCompletion {
  usage: Usage;
}

interface ChatChunk {
  choices: { delta: { content?: string | null } }[];
  usage?: Usage;
}

/** The upstream stub, processes, data directories and agents of this file. */
const harness = createCliHarness({ tempPrefix: 'keygate-cli-test-' });
const { newDataDir, dataDirs } = harness;
/** Every Keygate key created in this file. */
const createdKeys: string[] = [];
let stub: UpstreamStub;

before(async () => {
  stub = await harness.start();
});

after(() => harness.cleanup());

// ---------------------------------------------------------------------------------------------
// helpers

function runCli(
  args: readonly string[],
  env: NodeJS.ProcessEnv = harness.upstreamEnv(),
  ms = CLI_TIMEOUT_MS,
): Promise<CliResult> {
  return harness.runCli(args, env, ms);
}

function describe(result: CliResult): string {
  return `exit ${result.code} (signal ${result.signal})\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

function startGateway(
  dataDir: string,
  options: { env?: NodeJS.ProcessEnv; args?: readonly string[] } = {},
): Promise<Gateway> {
  return harness.startGateway(dataDir, options.env ?? harness.upstreamEnv(), options.args);
}

async function call(
  gw: Gateway,
  path: string,
  init: { method?: 'GET' | 'POST'; key?: string; body?: unknown; url?: string } = {},
): Promise<HttpResult> {
  const headers: Record<string, string> = {};
  if (init.key !== undefined) headers.authorization = `Bearer ${init.key}`;
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  const res = await request(`${init.url ?? gw.url}${path}`, {
    method: init.method ?? 'GET',
    headers,
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
    dispatcher: gw.agent,
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text };
}

function chat(content: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: 'mistral-small-latest', messages: [{ role: 'user', content }], ...extra };
}

/** `data:` payloads of an SSE body, in order. */
function sseData(text: string): string[] {
  return text
    .split(/\r?\n\r?\n/)
    .map((frame) => frame.trim())
    .filter((frame) => frame.startsWith('data:'))
    .map((frame) => frame.slice('data:'.length).trim());
}

async function createKeyCli(
  dataDir: string,
  name: string,
  extra: readonly string[] = [],
): Promise<CreatedKey> {
  const result = await runCli(['keys', 'create', '--name', name, '--json', '--data-dir', dataDir, ...extra]);
  assert.equal(result.code, 0, describe(result));
  const created = JSON.parse(result.stdout) as CreatedKey;
  if (typeof created.key === 'string') createdKeys.push(created.key);
  return created;
}

async function usageRows(dataDir: string, extra: readonly string[] = []): Promise<UsageRow[]> {
  const result = await runCli(['usage', '--json', '--data-dir', dataDir, ...extra]);
  assert.equal(result.code, 0, describe(result));
  return JSON.parse(result.stdout) as UsageRow[];
}

type ConnectOutcome = 'connected' | string;

function tryConnect(port: number): Promise<ConnectOutcome> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('timeout');
    }, 1000);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(error.code ?? error.message);
    });
  });
}

function tlsHandshake(
  port: number,
  ca: string,
  versions: { minVersion: 'TLSv1' | 'TLSv1.2'; maxVersion: 'TLSv1.1' | 'TLSv1.3' },
): Promise<{ ok: true; protocol: string | null } | { ok: false; error: string }> {
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      ca,
      ...versions,
      // OpenSSL 3 disables TLS < 1.2 at the default security level on the client side too; lower
      // it so that the refusal, if any, comes from the server.
      ciphers: 'DEFAULT@SECLEVEL=0',
    });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ ok: false, error: 'timeout' });
    }, 5000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const protocol = socket.getProtocol();
      socket.destroy();
      resolve({ ok: true, protocol });
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ ok: false, error: `${error.code ?? ''} ${error.message}` });
    });
  });
}

function fileMode(path: string): string {
  return (statSync(path).mode & 0o777).toString(8);
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(path));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

/** A user-facing failure: non-zero exit, something on stderr, no stack trace. */
function assertCleanFailure(result: CliResult, mentions: RegExp): void {
  assert.notEqual(result.code, 0, describe(result));
  assert.equal(result.signal, null, describe(result));
  assert.match(result.stderr, mentions, describe(result));
  assert.doesNotMatch(result.stderr, STACK_LINE, describe(result));
  assert.doesNotMatch(
    result.stderr,
    /\b(?:TypeError|ReferenceError|ZodError|node:internal)\b/,
    describe(result),
  );
  const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
  assert.ok(lines.length >= 1 && lines.length <= 3, `expected a short message, got:\n${result.stderr}`);
  // One line on its own says what is wrong.
  assert.ok(
    lines.some((line) => mentions.test(line)),
    `no single line matches ${mentions}:\n${result.stderr}`,
  );
}

// ---------------------------------------------------------------------------------------------
// 1. help

test('keygate --help lists every command with a description; keys --help lists its subcommands', async () => {
  const top = await runCli(['--help']);
  assert.equal(top.code, 0, describe(top));
  for (const command of ['start', 'keys', 'usage']) {
    assert.match(top.stdout, new RegExp(`^\\s+${command}\\b[^\\n]*?\\s{2,}\\w[^\\n]{5,}`, 'm'), top.stdout);
  }
  const keys = await runCli(['keys', '--help']);
  assert.equal(keys.code, 0, describe(keys));
  for (const command of ['create', 'list', 'show', 'revoke']) {
    assert.match(keys.stdout, new RegExp(`^\\s+${command}\\b[^\\n]*?\\s{2,}\\w[^\\n]{5,}`, 'm'), keys.stdout);
  }
  const version = await runCli(['--version']);
  assert.equal(version.code, 0, describe(version));
  assert.match(version.stdout, /^\d+\.\d+\.\d+\s*$/);
});

// ---------------------------------------------------------------------------------------------
// 2. keys

test('keys create / list / show / revoke, with --json', { timeout: 60_000 }, async () => {
  const dataDir = newDataDir();
  const created = await createKeyCli(dataDir, 'billing-app');
  assert.match(created.key, KEY_RE);
  assert.equal(created.name, 'billing-app');
  assert.match(created.id, /\S/);
  assert.equal(created.status, 'active');

  const list = await runCli(['keys', 'list', '--json', '--data-dir', dataDir]);
  assert.equal(list.code, 0, describe(list));
  assert.ok(!list.stdout.includes(created.key), 'keys list must not print the secret');
  assert.doesNotMatch(list.stdout, ANY_KEY_RE);
  const listed = JSON.parse(list.stdout) as KeyView[];
  const entry = listed.find((k) => k.id === created.id);
  assert.ok(entry, `key ${created.id} missing from ${list.stdout}`);
  assert.equal(entry.name, 'billing-app');
  assert.equal(entry.status, 'active');
  assert.ok(!('key' in entry) && !('secret' in entry) && !('hash' in entry), list.stdout);

  const listText = await runCli(['keys', 'list', '--data-dir', dataDir]);
  assert.equal(listText.code, 0, describe(listText));
  assert.ok(listText.stdout.includes(created.id));
  assert.ok(!listText.stdout.includes(created.key));

  const show = await runCli(['keys', 'show', created.id, '--json', '--data-dir', dataDir]);
  assert.equal(show.code, 0, describe(show));
  assert.ok(!show.stdout.includes(created.key));
  const shown = JSON.parse(show.stdout) as KeyView;
  assert.equal(shown.id, created.id);
  assert.equal(shown.name, 'billing-app');
  assert.equal(shown.status, 'active');
  assert.equal(shown.revoked_at, null);

  const revoke = await runCli(['keys', 'revoke', created.id, '--data-dir', dataDir]);
  assert.equal(revoke.code, 0, describe(revoke));
  assert.ok(!revoke.stdout.includes(created.key));
  const afterRevoke = await runCli(['keys', 'show', created.id, '--json', '--data-dir', dataDir]);
  assert.equal(afterRevoke.code, 0, describe(afterRevoke));
  const revoked = JSON.parse(afterRevoke.stdout) as KeyView;
  assert.equal(revoked.status, 'revoked');
  assert.notEqual(revoked.revoked_at, null);
});

test('keys show / revoke of an unknown id fail cleanly', async () => {
  const dataDir = newDataDir();
  const show = await runCli(['keys', 'show', 'key_doesnotexist', '--json', '--data-dir', dataDir]);
  assertCleanFailure(show, /key_doesnotexist/);
  assert.equal(show.stdout, '');
  const revoke = await runCli(['keys', 'revoke', 'key_doesnotexist', '--data-dir', dataDir]);
  assertCleanFailure(revoke, /key_doesnotexist/);
});

test('keys create --expires 90d sets the expiry; --expires banana is refused with exit 2', async () => {
  const dataDir = newDataDir();
  const startedAt = Date.now();
  const created = await createKeyCli(dataDir, 'expiring', ['--expires', '90d']);
  const afterCreate = Date.now();
  assert.ok(created.expires_at, `no expires_at in ${JSON.stringify({ ...created, key: '<secret>' })}`);
  const expires = Date.parse(created.expires_at);
  const ninetyDays = 90 * 86_400_000;
  assert.ok(
    expires >= startedAt + ninetyDays - 1000 && expires <= afterCreate + ninetyDays + 1000,
    `expires_at ${created.expires_at} is not ~90 days ahead`,
  );

  const banana = await runCli([
    'keys',
    'create',
    '--name',
    'x',
    '--expires',
    'banana',
    '--data-dir',
    dataDir,
  ]);
  assertCleanFailure(banana, /--expires/);
  assert.equal(banana.code, 2, describe(banana));
  assert.doesNotMatch(banana.stdout, ANY_KEY_RE, 'no key may be created');
  const list = await runCli(['keys', 'list', '--json', '--data-dir', dataDir]);
  assert.equal((JSON.parse(list.stdout) as KeyView[]).length, 1, list.stdout);
});

// ---------------------------------------------------------------------------------------------
// 3. start validation

test('start refuses bad flags with a clear message and no stack trace', { timeout: 90_000 }, async (t) => {
  await t.test('unknown flag', async () => {
    const result = await runCli(['start', '--bogus', '--data-dir', newDataDir()]);
    assertCleanFailure(result, /--bogus/);
  });
  await t.test('port out of range', async () => {
    const result = await runCli(['start', '--port', '70000', '--data-dir', newDataDir()]);
    assertCleanFailure(result, /port.*65535|65535.*port/i);
  });
  await t.test('port not a number', async () => {
    const result = await runCli(['start', '--port', 'abc', '--data-dir', newDataDir()]);
    assertCleanFailure(result, /port.*(?:number|abc)/i);
  });
  await t.test('port in use', async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve, reject) => {
      blocker.once('error', reject);
      blocker.listen(0, '127.0.0.1', () => resolve());
    });
    try {
      const address = blocker.address();
      assert.ok(address && typeof address === 'object');
      const port = String(address.port);
      const result = await runCli([
        'start',
        '--port',
        port,
        '--host',
        '127.0.0.1',
        '--data-dir',
        newDataDir(),
      ]);
      assertCleanFailure(result, new RegExp(`${port}.*in use|in use.*${port}`, 'i'));
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });
  await t.test('unreadable certificate', async () => {
    const result = await runCli([
      'start',
      '--port',
      '0',
      '--tls-cert',
      '/nonexistent',
      '--tls-key',
      '/nonexistent',
      '--data-dir',
      newDataDir(),
    ]);
    assertCleanFailure(result, /\/nonexistent/);
  });
  await t.test('--tls-cert without --tls-key', async () => {
    const result = await runCli([
      'start',
      '--port',
      '0',
      '--tls-cert',
      '/nonexistent',
      '--data-dir',
      newDataDir(),
    ]);
    assertCleanFailure(result, /--tls-key/);
  });
});

// ---------------------------------------------------------------------------------------------
// 4. first start: generated secrets, certificate, HSTS, TLS >= 1.2

test('first start generates private secret, certificate and database; HTTPS only, TLS >= 1.2', {
  timeout: 60_000,
}, async (t) => {
  const dataDir = join(newDataDir(), 'fresh');
  const gw = await startGateway(dataDir);
  t.after(() => stopGateway(gw));
  assert.match(gw.url, /^https:\/\/127\.0\.0\.1:\d+$/);

  for (const file of ['secret', 'tls/cert.pem', 'tls/key.pem', 'keygate.db']) {
    assert.equal(fileMode(join(dataDir, file)), '600', `${file} must be mode 0600`);
  }
  assert.equal(fileMode(dataDir), '700', 'the data directory must be mode 0700');

  const certPem = readFileSync(join(dataDir, 'tls', 'cert.pem'), 'utf8');
  const fingerprint = new X509Certificate(certPem).fingerprint256;
  const banner = await waitForOutput(gw.proc, /fingerprint:?\s+([0-9A-F]{2}(?::[0-9A-F]{2}){31})/i, 5000);
  assert.equal(banner[1]?.toUpperCase(), fingerprint.toUpperCase());

  const health = await call(gw, '/healthz');
  assert.equal(health.status, 200, health.text);
  assert.match(String(health.headers['strict-transport-security']), /max-age=\d+/);
  const unauthorized = await call(gw, '/v1/models');
  assert.equal(unauthorized.status, 401, unauthorized.text);
  assert.match(String(unauthorized.headers['strict-transport-security']), /max-age=\d+/);

  const modern = await tlsHandshake(gw.port, certPem, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3' });
  assert.ok(modern.ok, `a TLS 1.2+ client must connect: ${JSON.stringify(modern)}`);
  const old = await tlsHandshake(gw.port, certPem, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1' });
  assert.equal(old.ok, false, `a TLS 1.1 client must be refused: ${JSON.stringify(old)}`);
  // Refused by the server (a protocol_version alert), not by this client's own settings.
  if (!old.ok) assert.match(old.error, /protocol version|PROTOCOL_VERSION/i);
});

// ---------------------------------------------------------------------------------------------
// 5. --http on a non-loopback address

test('--http on a non-loopback host warns loudly but starts', { timeout: 60_000 }, async (t) => {
  const gw = await startGateway(newDataDir(), { args: ['--http', '--host', '0.0.0.0'] });
  t.after(() => stopGateway(gw));
  assert.match(gw.url, /^http:\/\//);
  assert.match(gw.proc.stderr, /WARNING/);
  assert.match(gw.proc.stderr, /0\.0\.0\.0/);
  const health = await call(gw, '/healthz', { url: `http://127.0.0.1:${gw.port}` });
  assert.equal(health.status, 200, health.text);
  const exit = await stopProc(gw.proc);
  assert.deepEqual(exit, { code: 0, signal: null }, gw.proc.stderr);
});

// ---------------------------------------------------------------------------------------------
// 6. no provider key

test('without a provider key the gateway starts, keys work, and /v1 answers 503', {
  timeout: 60_000,
}, async (t) => {
  const dataDir = newDataDir();
  const env: NodeJS.ProcessEnv = { ...baseEnv(), KEYGATE_UPSTREAM_URL: stub.url };
  assert.equal(env.KEYGATE_UPSTREAM_KEY, undefined);
  assert.equal(env.MISTRAL_API_KEY, undefined);
  const gw = await startGateway(dataDir, { env });
  t.after(() => stopGateway(gw));
  await waitForOutput(gw.proc, /no provider key/i, 5000);

  const created = await createKeyCli(dataDir, 'early-bird');
  assert.match(created.key, KEY_RE);
  const upstreamCalls = stub.requests.length;
  const res = await call(gw, '/v1/models', { key: created.key });
  assert.equal(res.status, 503, res.text);
  assert.match(String(res.headers['retry-after']), /^\d+$/);
  const body = JSON.parse(res.text) as { message?: string };
  assert.match(String(body.message), /KEYGATE_UPSTREAM_KEY/);
  assert.equal(stub.requests.length, upstreamCalls, 'nothing may be sent upstream without a provider key');
});

// ---------------------------------------------------------------------------------------------
// 7. key changes from another process reach the running gateway within 1 s

test('a key created, then revoked, by the CLI while the gateway runs takes effect within 1 s', {
  timeout: 60_000,
}, async (t) => {
  const dataDir = newDataDir();
  const gw = await startGateway(dataDir);
  t.after(() => stopGateway(gw));
  const models = (key: string) => async () => (await call(gw, '/v1/models', { key })).status;

  const created = await createKeyCli(dataDir, 'hot-key');
  const createdAt = Date.now();
  const usable = await pollStatus(models(created.key), 200, createdAt, 3000);
  assert.ok(
    usable.elapsed !== undefined && usable.elapsed <= 1000,
    `a new key must work within 1 s; took ${usable.elapsed} ms, statuses ${usable.seen.join(',')}`,
  );

  t.diagnostic(`new key usable after ${usable.elapsed} ms`);

  const revoke = await runCli(['keys', 'revoke', created.id, '--data-dir', dataDir]);
  assert.equal(revoke.code, 0, describe(revoke));
  const revokedAt = Date.now();
  const refused = await pollStatus(models(created.key), 401, revokedAt, 3000);
  assert.ok(
    refused.elapsed !== undefined && refused.elapsed <= 1000,
    `a revoked key must be refused within 1 s; took ${refused.elapsed} ms, statuses ${refused.seen.join(',')}`,
  );
  t.diagnostic(`revoked key refused after ${refused.elapsed} ms`);
  const res = await call(gw, '/v1/models', { key: created.key });
  assert.equal(res.status, 401, res.text);
  assert.match(String(res.headers['www-authenticate']), /^Bearer/);
});

// ---------------------------------------------------------------------------------------------
// 8. graceful stop

test('SIGTERM finishes an in-flight stream, refuses new connections, flushes usage, exits 0', {
  timeout: 60_000,
}, async (t) => {
  const dataDir = newDataDir();
  const gw = await startGateway(dataDir);
  t.after(() => stopGateway(gw));
  const created = await createKeyCli(dataDir, 'streamer');

  const res = await request(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${created.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'stub-slow-stream',
      stream: true,
      messages: [{ role: 'user', content: 'hi' }],
    }),
    dispatcher: gw.agent,
    signal: AbortSignal.timeout(15_000),
  });
  assert.equal(res.statusCode, 200);
  res.body.setEncoding('utf8');
  let text = '';
  let refusal: Promise<{ at: number | undefined; outcomes: string[] }> | undefined;
  for await (const chunk of res.body) {
    text += String(chunk);
    if (!refusal) {
      gw.proc.child.kill('SIGTERM');
      refusal = (async () => {
        const outcomes: string[] = [];
        const deadline = Date.now() + 1500;
        while (Date.now() < deadline) {
          const outcome = await tryConnect(gw.port);
          outcomes.push(outcome);
          if (outcome === 'ECONNREFUSED') return { at: Date.now(), outcomes };
          await sleep(25);
        }
        return { at: undefined, outcomes };
      })();
    }
  }
  const streamEndedAt = Date.now();

  const data = sseData(text);
  assert.equal(data.at(-1), '[DONE]', text);
  const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as ChatChunk);
  const contents = chunks.map((c) => c.choices[0]?.delta.content ?? '').filter((c) => c !== '');
  assert.equal(contents.length, 10, text);
  assert.equal(contents.join(''), 'tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9 tok10');
  const usage = chunks.at(-1)?.usage;
  assert.deepEqual(usage, { prompt_tokens: 1, completion_tokens: 10, total_tokens: 11 });

  assert.ok(refusal, 'no chunk arrived');
  const refused = await refusal;
  t.diagnostic(`connection attempts after SIGTERM: ${refused.outcomes.join(',')}`);
  assert.ok(
    refused.at !== undefined && refused.at <= streamEndedAt,
    `new connections must be refused while draining; saw ${refused.outcomes.join(',')}`,
  );

  const exit = await within(gw.proc.exited, STOP_TIMEOUT_MS, 'the gateway to exit after SIGTERM');
  assert.deepEqual(exit, { code: 0, signal: null }, gw.proc.stderr);

  const rows = await usageRows(dataDir);
  const row = rows.find((r) => r.key_id === created.id);
  assert.ok(row, `no usage for ${created.id}: ${JSON.stringify(rows)}`);
  assert.ok(row.requests >= 1, JSON.stringify(row));
  assert.equal(row.completion_tokens, 10, JSON.stringify(row));
  assert.equal(row.prompt_tokens, 1, JSON.stringify(row));
  assert.equal(row.total_tokens, 11, JSON.stringify(row));
});

// ---------------------------------------------------------------------------------------------
// 9. usage

test('usage --json adds up exactly what the upstream reported', { timeout: 60_000 }, async (t) => {
  const dataDir = newDataDir();
  const gw = await startGateway(dataDir);
  t.after(() => stopGateway(gw));
  const counted = await createKeyCli(dataDir, 'counted');
  const other = await createKeyCli(dataDir, 'other');

  const expected: Usage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
  const add = (usage: Usage | undefined) => {
    assert.ok(usage, 'the response carries usage');
    expected.prompt_tokens += usage.prompt_tokens;
    expected.completion_tokens += usage.completion_tokens;
    expected.total_tokens += usage.total_tokens;
  };
  for (const content of ['hello', 'how many words are in this prompt', 'one two three four five six seven']) {
    const res = await call(gw, '/v1/chat/completions', {
      method: 'POST',
      key: counted.key,
      body: chat(content),
    });
    assert.equal(res.status, 200, res.text);
    add((JSON.parse(res.text) as ChatCompletion).usage);
  }
  const streamed = await call(gw, '/v1/chat/completions', {
    method: 'POST',
    key: counted.key,
    body: chat('a streamed request here', { stream: true }),
  });
  assert.equal(streamed.status, 200, streamed.text);
  const frames = sseData(streamed.text);
  assert.equal(frames.at(-1), '[DONE]');
  add(
    frames
      .slice(0, -1)
      .map((d) => JSON.parse(d) as ChatChunk)
      .find((c) => c.usage)?.usage,
  );

  const otherRes = await call(gw, '/v1/chat/completions', {
    method: 'POST',
    key: other.key,
    body: chat('x y'),
  });
  assert.equal(otherRes.status, 200, otherRes.text);

  // Usage is written behind the responses: poll the CLI (bounded) until all four are in.
  let row: UsageRow | undefined;
  await eventually(
    async () => {
      row = (await usageRows(dataDir)).find((r) => r.key_id === counted.id);
      return (row?.requests ?? 0) >= 4;
    },
    () => `the four requests in keygate usage (${row?.requests ?? 0} so far)`,
    10_000,
    200,
  );
  assert.ok(row, 'no usage row for the key');
  assert.deepEqual(
    {
      requests: row.requests,
      prompt_tokens: row.prompt_tokens,
      completion_tokens: row.completion_tokens,
      total_tokens: row.total_tokens,
    },
    { requests: 4, ...expected },
  );
  assert.equal(row.errors, 0);

  const only = await usageRows(dataDir, ['--key', counted.id]);
  assert.deepEqual(
    only.map((r) => r.key_id),
    [counted.id],
  );
});

// ---------------------------------------------------------------------------------------------
// 10. secrets hygiene (runs last: it inspects everything the tests above produced)

test('no Keygate key or provider key appears in gateway output or in plaintext on disk', () => {
  /** Every `keygate start` process (including the ones that refused to start). */
  const gatewayProcs = harness.procs.filter((proc) => proc.args[0] === 'start');
  assert.ok(createdKeys.length >= 5, `expected keys from the tests above, got ${createdKeys.length}`);
  assert.ok(
    gatewayProcs.length >= 5,
    `expected gateway runs from the tests above, got ${gatewayProcs.length}`,
  );
  for (const proc of gatewayProcs) {
    const output = `${proc.stdout}\n${proc.stderr}`;
    const where = `keygate ${proc.args.join(' ')}`;
    assert.ok(!output.includes(DEFAULT_STUB_API_KEY), `${where} printed the provider key`);
    for (const key of createdKeys) assert.ok(!output.includes(key), `${where} printed a Keygate key`);
    assert.doesNotMatch(output, ANY_KEY_RE, `${where} printed something shaped like a Keygate key`);
  }
  for (const dir of dataDirs) {
    for (const file of filesUnder(dir)) {
      const content = readFileSync(file, 'latin1');
      for (const key of createdKeys)
        assert.ok(!content.includes(key), `${file} holds a Keygate key in plaintext`);
    }
  }
  for (const req of stub.requests) {
    const sent = `${JSON.stringify(req.headers)}\n${req.body}`;
    for (const key of createdKeys)
      assert.ok(!sent.includes(key), `a Keygate key was sent upstream to ${req.path}`);
    assert.equal(req.headers.authorization, `Bearer ${DEFAULT_STUB_API_KEY}`);
  }
});
