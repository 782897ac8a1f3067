/**
 * The key lifecycle as a user runs it: `keygate keys create / update / rotate / revoke`,
 * `keygate workspaces`, and `keygate audit`, each a real child process (`bin/keygate.js` on this
 * Node) against a temporary data directory; one test runs a gateway in front of the upstream stub
 * to show that the changes reach it.
 *
 * Most tests share one data directory and build on each other in file order (node:test runs the
 * tests of a file one after another): the audit test at the end reads what the others did.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { createUser, setRole } from '../../src/users/service.ts';
import type { CliResult, CreatedKey, Gateway, HttpResult, KeyView, RotatedKey } from '../support/cli.ts';
import {
  ANY_KEY_RE,
  createCliHarness,
  KEY_RE,
  limited,
  pollStatus,
  STACK_LINE,
  stopGateway,
} from '../support/cli.ts';
import { pastTime } from '../support/wait.ts';

const DAY_MS = 86_400_000;
const DEFAULT_SCOPES = ['chat', 'fim', 'embeddings', 'models'];
const MANAGEMENT_SCOPES = [
  'admin',
  'keys:read',
  'keys:write',
  'usage:read',
  'audit:read',
  'workspaces:read',
  'workspaces:write',
  'metrics',
];

interface AuditView {
  id: string;
  at: string;
  workspace_id: string | null;
  actor: { type: string; id: string | null; ip: string | null };
  action: string;
  target: { type: string; id: string | null };
  changes: Record<string, { before?: unknown; after?: unknown }>;
}

interface WorkspaceView {
  id: string;
  name: string;
  created_at: string | null;
  policy: {
    max_key_lifetime: string | null;
    allowed_ips: string[];
    budget: { tokens_per_day: number | null; tokens_per_month: number | null };
  };
}

interface ErrorBody {
  message?: string;
}

/** The upstream stub, processes, data directories and agents of this file. */
const harness = createCliHarness({ tempPrefix: 'keygate-cli-keys-test-' });
const { newDataDir } = harness;
/** Every finished CLI run, for the secrets scan at the end. */
const runs: CliResult[] = [];
/** Every secret printed by `keys create` / `keys rotate` in this file. */
const secrets: string[] = [];
/** The data directory most tests share. */
let shared: string;
/** The key of test 1, carried through update, rotate and revoke, and read back from the audit log. */
let fullKey: CreatedKey | undefined;

before(async () => {
  await harness.start();
  shared = newDataDir();
});

after(() => harness.cleanup());

// ---------------------------------------------------------------------------------------------
// helpers

/** Runs `keygate ARGS --data-dir DIR` to completion (bounded). */
async function cli(args: readonly string[], dir: string = shared): Promise<CliResult> {
  const result = await harness.runCli([...args, '--data-dir', dir]);
  runs.push(result);
  return result;
}

function describe(result: CliResult): string {
  return `keygate ${result.args.join(' ')}\nexit ${result.code} (signal ${result.signal})\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

/** Runs a command that must succeed and print JSON; returns the parsed value. */
async function cliJson<T>(args: readonly string[], dir: string = shared): Promise<T> {
  const result = await cli([...args, '--json'], dir);
  assert.equal(result.code, 0, describe(result));
  let value: T;
  try {
    value = JSON.parse(result.stdout) as T;
  } catch {
    assert.fail(`not JSON:\n${describe(result)}`);
  }
  const maybeKey = (value as { key?: unknown }).key;
  if (typeof maybeKey === 'string') secrets.push(maybeKey);
  return value;
}

async function createKey(name: string, extra: readonly string[] = [], dir: string = shared) {
  return cliJson<CreatedKey>(['keys', 'create', '--name', name, ...extra], dir);
}

async function keyCount(dir: string = shared): Promise<number> {
  return (await cliJson<KeyView[]>(['keys', 'list'], dir)).length;
}

/** A view without the secret, for assertion messages (the test output must not hold secrets either). */
function redact(view: object): string {
  return JSON.stringify({ ...view, key: '<secret>' });
}

/** A refusal: the exit code, one line on stderr matching `mentions`, no stack trace, nothing on stdout. */
function assertRefused(result: CliResult, mentions: RegExp, code: number | 'non-zero' = 2): void {
  if (code === 'non-zero') assert.ok(result.code !== 0 && result.code !== null, describe(result));
  else assert.equal(result.code, code, describe(result));
  assert.equal(result.signal, null, describe(result));
  const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
  assert.equal(lines.length, 1, `expected a one-line message:\n${describe(result)}`);
  assert.match(lines[0]!, mentions, describe(result));
  assert.doesNotMatch(result.stderr, STACK_LINE, describe(result));
  assert.doesNotMatch(
    result.stderr,
    /\b(?:TypeError|ReferenceError|ZodError|SqliteError|node:internal)\b/,
    describe(result),
  );
  assert.doesNotMatch(result.stdout, ANY_KEY_RE, `no key may be printed:\n${describe(result)}`);
}

/** `iso` lies within [from + offset - slack, to + offset + slack]. */
function assertAbout(iso: string | null, from: number, to: number, offsetMs: number, what: string): void {
  assert.ok(iso, `${what}: expected a time, got ${iso}`);
  const at = Date.parse(iso);
  assert.ok(
    at >= from + offsetMs - 1000 && at <= to + offsetMs + 1000,
    `${what}: ${iso} is not within [${new Date(from + offsetMs).toISOString()}, ${new Date(to + offsetMs).toISOString()}] (±1 s)`,
  );
}

/**
 * A plain text table: a header line holding `columns` in order, at least one row, and every row's
 * cells starting where their column's name starts (preceded by the two-space gap).
 */
function assertTable(text: string, columns: readonly string[]): string[] {
  const lines = text.split('\n').filter((line) => line.trim() !== '');
  assert.ok(lines.length >= 2, `expected a header and rows:\n${text}`);
  const header = lines[0]!;
  assert.ok(
    header.startsWith(columns[0]!),
    `the first line must be the header ${columns.join(' ')}:\n${text}`,
  );
  const starts: number[] = [];
  let from = 0;
  for (const column of columns) {
    const at = header.indexOf(column, from);
    assert.ok(at >= 0, `no column ${column} in the header (in order ${columns.join(', ')}):\n${header}`);
    if (at > 0) assert.equal(header.slice(at - 2, at), '  ', `columns are separated by spaces:\n${header}`);
    starts.push(at);
    from = at + column.length;
  }
  const rows = lines.slice(1);
  for (const row of rows) {
    for (const start of starts.slice(1)) {
      if (row.length <= start) continue;
      assert.equal(row.slice(start - 2, start), '  ', `row not aligned with the header:\n${header}\n${row}`);
    }
  }
  return rows;
}

function assertNoSecret(text: string, where: string): void {
  assert.doesNotMatch(text, ANY_KEY_RE, `${where} printed something shaped like a key`);
  for (const secret of secrets) assert.ok(!text.includes(secret), `${where} printed a key's secret`);
}

async function startGateway(dataDir: string): Promise<Gateway> {
  const gw = await harness.startGateway(dataDir, harness.upstreamEnv());
  assert.match(gw.url, /^https:\/\//, 'the gateway serves HTTPS by default');
  return gw;
}

async function post(gw: Gateway, path: string, key: string, body: unknown): Promise<HttpResult> {
  const res = await request(`${gw.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    dispatcher: gw.agent,
    signal: AbortSignal.timeout(5000),
  });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

function chat(model: string): Record<string, unknown> {
  return { model, messages: [{ role: 'user', content: 'hello there' }] };
}

function errorMessage(res: HttpResult): string {
  try {
    return String((JSON.parse(res.text) as ErrorBody).message);
  } catch {
    return res.text;
  }
}

// ---------------------------------------------------------------------------------------------
// 1. create with every restriction

test('keys create with every restriction prints exactly those values and the secret', async () => {
  const started = Date.now();
  const created = await createKey('full-options', [
    '--scopes',
    'embeddings,models',
    '--models',
    'mistral-small-*,codestral-latest',
    '--allow-ip',
    '10.0.0.0/8,2001:db8::/32',
    '--rpm',
    '60',
    '--tpm',
    '100000',
    '--concurrency',
    '4',
    '--budget',
    '1000000/month',
    '--budget',
    '50000/day',
    '--expires',
    '30d',
  ]);
  const finished = Date.now();
  fullKey = created;
  const what = redact(created);
  assert.match(created.key, KEY_RE, what);
  assert.match(created.id, /^\S+$/, what);
  assert.equal(created.name, 'full-options');
  assert.equal(created.workspace_id, 'ws_default');
  assert.equal(created.status, 'active');
  assert.ok(created.display.startsWith(created.key.slice(0, 7)), what);
  assert.ok(created.display.endsWith(created.key.slice(-4)), what);
  assert.deepEqual(created.scopes, ['embeddings', 'models']);
  assert.deepEqual(created.models, ['mistral-small-*', 'codestral-latest']);
  assert.deepEqual(created.allowed_ips, ['10.0.0.0/8', '2001:db8::/32']);
  assert.deepEqual(created.limits, {
    requests_per_minute: 60,
    tokens_per_minute: 100_000,
    concurrent_requests: 4,
  });
  assert.deepEqual(created.budget, { tokens_per_day: 50_000, tokens_per_month: 1_000_000 });
  assertAbout(created.expires_at, started, finished, 30 * DAY_MS, 'expires_at');
  assertAbout(created.created_at, started, finished, 0, 'created_at');
  assert.equal(created.revoked_at, null);
  assert.equal(created.rotated_at, null);

  // What `keys show` reads back from the store is what `create` printed (minus the secret).
  const shown = await cliJson<KeyView>(['keys', 'show', created.id]);
  const { key: _secret, ...view } = created;
  assert.deepEqual(shown, view);

  // IP ranges are normalised: IPv6 lower-case and compressed, a bare address becomes a /32, an
  // IPv4-mapped range becomes the IPv4 range (one with host bits is refused: see
  // test/regression/cidr-host-bits.test.ts).
  const normalised = await createKey('normalised-ips', [
    '--allow-ip',
    '10.0.0.0/8, 2001:DB8:0:0:0:0:0:0/32,192.168.1.7,::ffff:172.16.0.0/108',
  ]);
  assert.deepEqual(normalised.allowed_ips, [
    '10.0.0.0/8',
    '2001:db8::/32',
    '192.168.1.7/32',
    '172.16.0.0/12',
  ]);
});

// ---------------------------------------------------------------------------------------------
// 2. defaults

test('a key created with only --name gets the inference scopes and no restrictions', async () => {
  const created = await createKey('defaults-only');
  assert.match(created.key, KEY_RE);
  assert.deepEqual([...created.scopes].sort(), [...DEFAULT_SCOPES].sort());
  for (const scope of MANAGEMENT_SCOPES) {
    assert.ok(!created.scopes.includes(scope), `a default key must not have the management scope ${scope}`);
  }
  assert.deepEqual(created.models, []);
  assert.deepEqual(created.allowed_ips, []);
  assert.deepEqual(created.limits, {
    requests_per_minute: null,
    tokens_per_minute: null,
    concurrent_requests: null,
  });
  assert.deepEqual(created.budget, { tokens_per_day: null, tokens_per_month: null });
  assert.equal(created.expires_at, null);
  assert.equal(created.status, 'active');
});

// ---------------------------------------------------------------------------------------------
// 3. bad values

test('keys create refuses each bad value with exit 2, a one-line message naming the option, and creates nothing', {
  timeout: 90_000,
}, async (t) => {
  const before = await keyCount();
  const cases: { args: string[]; mentions: RegExp }[] = [
    { args: ['--scopes', 'bogus'], mentions: /--scopes.*bogus|bogus.*--scopes/ },
    { args: ['--scopes', ''], mentions: /--scopes/ },
    { args: ['--models', 'bad pattern!'], mentions: /--models.*bad pattern!|bad pattern!.*--models/ },
    {
      args: ['--allow-ip', '10.0.0.0/33'],
      mentions: /--allow-ip.*10\.0\.0\.0\/33|10\.0\.0\.0\/33.*--allow-ip/,
    },
    { args: ['--allow-ip', 'example.com'], mentions: /--allow-ip.*example\.com|example\.com.*--allow-ip/ },
    { args: ['--rpm', '0'], mentions: /--rpm/ },
    { args: ['--rpm', '-5'], mentions: /--rpm/ },
    { args: ['--rpm', 'abc'], mentions: /--rpm.*abc/ },
    { args: ['--budget', '100/week'], mentions: /--budget.*100\/week/ },
    { args: ['--budget', '0/day'], mentions: /--budget/ },
    { args: ['--expires', '0'], mentions: /--expires/ },
  ];
  // The refusals are independent: run them side by side (a few at a time), then report each.
  const slot = limited(4);
  const results = await Promise.all(
    cases.map(({ args }) => slot(() => cli(['keys', 'create', '--name', 'must-not-exist', ...args]))),
  );
  for (const [index, { args, mentions }] of cases.entries()) {
    await t.test(`${args[0]} ${JSON.stringify(args[1])}`, () => {
      assertRefused(results[index]!, mentions);
    });
  }
  assert.equal(await keyCount(), before, 'a refused create must not create a key');
});

// ---------------------------------------------------------------------------------------------
// 4. update

test('keys update clears restrictions with none/any/never and renames; without options it exits 2', async () => {
  assert.ok(fullKey, 'needs the key of the first test');
  const updated = await cliJson<KeyView>([
    'keys',
    'update',
    fullKey.id,
    '--rpm',
    'none',
    '--models',
    'any',
    '--allow-ip',
    'any',
    '--name',
    'renamed',
    '--expires',
    'never',
  ]);
  assert.equal(updated.id, fullKey.id);
  assert.equal(updated.name, 'renamed');
  assert.equal(updated.limits.requests_per_minute, null);
  assert.deepEqual(updated.models, []);
  assert.deepEqual(updated.allowed_ips, []);
  assert.equal(updated.expires_at, null);
  assert.ok(updated.updated_at, 'updated_at is set');
  // Everything not mentioned stays as it was.
  assert.deepEqual(updated.scopes, ['embeddings', 'models']);
  assert.equal(updated.limits.tokens_per_minute, 100_000);
  assert.equal(updated.limits.concurrent_requests, 4);
  assert.deepEqual(updated.budget, { tokens_per_day: 50_000, tokens_per_month: 1_000_000 });
  assert.equal(updated.display, fullKey.display, 'an update does not change the secret');
  assert.doesNotMatch(JSON.stringify(updated), ANY_KEY_RE, 'update prints no secret');

  const shown = await cliJson<KeyView>(['keys', 'show', fullKey.id]);
  assert.deepEqual(shown, updated);

  const nothing = await cli(['keys', 'update', fullKey.id]);
  assertRefused(nothing, /nothing to change/);

  const unknown = await cli(['keys', 'update', 'key_doesnotexist', '--rpm', '5']);
  assertRefused(unknown, /key_doesnotexist/, 'non-zero');
});

// ---------------------------------------------------------------------------------------------
// 5. rotate

test('keys rotate issues a new secret for the same id; --grace 0 ends the old one now, the default is 24h', async () => {
  assert.ok(fullKey, 'needs the key of the first test');
  let started = Date.now();
  const now = await cliJson<RotatedKey>(['keys', 'rotate', fullKey.id, '--grace', '0']);
  let finished = Date.now();
  assert.match(now.key, KEY_RE, redact(now));
  assert.notEqual(now.key, fullKey.key, 'a rotation issues a new secret');
  assert.equal(now.id, fullKey.id);
  assert.equal(now.name, 'renamed');
  assert.ok(now.display.startsWith(now.key.slice(0, 7)) && now.display.endsWith(now.key.slice(-4)));
  assertAbout(
    now.previous_secret_valid_until,
    started,
    finished,
    0,
    'previous_secret_valid_until (--grace 0)',
  );
  assertAbout(now.rotated_at, started, finished, 0, 'rotated_at');
  assert.deepEqual(now.scopes, ['embeddings', 'models'], 'a rotation keeps the restrictions');

  started = Date.now();
  const later = await cliJson<RotatedKey>(['keys', 'rotate', fullKey.id]);
  finished = Date.now();
  assert.match(later.key, KEY_RE);
  assert.notEqual(later.key, now.key);
  assert.equal(later.id, fullKey.id);
  assertAbout(later.previous_secret_valid_until, started, finished, DAY_MS, 'default grace (24h)');

  const revoked = await cliJson<KeyView>(['keys', 'revoke', fullKey.id]);
  assert.equal(revoked.status, 'revoked');
  const refused = await cli(['keys', 'rotate', fullKey.id, '--json']);
  assertRefused(refused, /revoked/, 'non-zero');
  assert.equal(refused.stdout, '');
  const shown = await cliJson<KeyView>(['keys', 'show', fullKey.id]);
  assert.equal(shown.display, later.display, 'a refused rotation changes nothing');
});

// ---------------------------------------------------------------------------------------------
// 6. through a running gateway

test('a running gateway enforces the model allowlist and picks up scope changes and rotations', {
  timeout: 90_000,
}, async (t) => {
  const dir = newDataDir();
  const gw = await startGateway(dir);
  t.after(() => stopGateway(gw));

  const key = await createKey('small-only', ['--models', 'mistral-small-*'], dir);
  const small = await post(gw, '/v1/chat/completions', key.key, chat('mistral-small-latest'));
  assert.equal(small.status, 200, small.text);
  const large = await post(gw, '/v1/chat/completions', key.key, chat('mistral-large-latest'));
  assert.equal(large.status, 403, large.text);
  assert.match(errorMessage(large), /mistral-large-latest/);

  const update = await cli(['keys', 'update', key.id, '--scopes', 'embeddings'], dir);
  assert.equal(update.code, 0, describe(update));
  const updatedAt = Date.now();
  const chatStatus = async () =>
    (await post(gw, '/v1/chat/completions', key.key, chat('mistral-small-latest'))).status;
  const refused = await pollStatus(chatStatus, 403, updatedAt, 3000);
  t.diagnostic(`scope change enforced after ${refused.elapsed} ms`);
  assert.ok(
    refused.elapsed !== undefined && refused.elapsed <= 1000,
    `a scope change must be enforced within 1 s; took ${refused.elapsed} ms, statuses ${refused.seen.join(',')}`,
  );
  const noChat = await post(gw, '/v1/chat/completions', key.key, chat('mistral-small-latest'));
  assert.equal(noChat.status, 403, noChat.text);
  assert.match(errorMessage(noChat), /scope "chat"/);

  // The key may now only embed, and only with models matching mistral-small-* (the stub embeds with
  // any model name).
  const embed = (secret: string) =>
    post(gw, '/v1/embeddings', secret, { model: 'mistral-small-latest', input: 'rotate me' });
  const beforeRotation = await embed(key.key);
  assert.equal(beforeRotation.status, 200, beforeRotation.text);

  const rotated = await cliJson<RotatedKey>(['keys', 'rotate', key.id, '--grace', '2s'], dir);
  assert.equal(rotated.id, key.id);
  assert.notEqual(rotated.key, key.key);
  const validUntil = Date.parse(rotated.previous_secret_valid_until);
  assert.ok(Number.isFinite(validUntil), rotated.previous_secret_valid_until);
  const graceLeft = validUntil - Date.now();
  t.diagnostic(`grace left when the rotate command returned: ${graceLeft} ms`);
  assert.ok(
    graceLeft > 300,
    `the rotate command took too long to test the grace period (${graceLeft} ms left)`,
  );

  const [oldDuring, newDuring] = await Promise.all([embed(key.key), embed(rotated.key)]);
  const checkedAt = Date.now();
  assert.ok(checkedAt < validUntil, 'the grace period ended before the check finished');
  assert.equal(oldDuring.status, 200, `the old secret works during the grace period: ${oldDuring.text}`);
  assert.equal(newDuring.status, 200, `the new secret works at once: ${newDuring.text}`);
  const newChat = await post(gw, '/v1/chat/completions', rotated.key, chat('mistral-small-latest'));
  assert.equal(newChat.status, 403, 'the new secret keeps the restrictions of the key');

  // A real grace period: once it is over, the old secret is refused (the gateway judges it by the
  // clock, once the change feed has dropped the secret it cached before the rotation).
  await pastTime(validUntil);
  const afterGrace = await pollStatus(async () => (await embed(key.key)).status, 401, validUntil, 3000);
  assert.ok(
    afterGrace.elapsed !== undefined,
    `the old secret is refused after the grace period: statuses ${afterGrace.seen.join(',')}`,
  );
  const newAfter = await embed(rotated.key);
  assert.equal(newAfter.status, 200, `the new secret still works: ${newAfter.text}`);

  for (const text of [gw.proc.stdout, gw.proc.stderr]) {
    assertNoSecret(text, 'the gateway');
  }
});

// ---------------------------------------------------------------------------------------------
// 7. workspaces

test('workspaces list / update: a maximum key lifetime is enforced on create and update, and can be lifted', {
  timeout: 90_000,
}, async () => {
  const listed = await cliJson<WorkspaceView[]>(['workspaces', 'list']);
  const initial = listed.find((w) => w.id === 'ws_default');
  assert.ok(initial, `no ws_default in ${JSON.stringify(listed)}`);
  assert.equal(initial.policy.max_key_lifetime, null);

  const set = await cli(['workspaces', 'update', 'ws_default', '--max-key-lifetime', '90d']);
  assert.equal(set.code, 0, describe(set));
  const limited = (await cliJson<WorkspaceView[]>(['workspaces', 'list'])).find((w) => w.id === 'ws_default');
  assert.equal(limited?.policy.max_key_lifetime, '90d');

  const count = await keyCount();
  const forever = await cli(['keys', 'create', '--name', 'forever']);
  assertRefused(forever, /90d/);
  const tooLong = await cli(['keys', 'create', '--name', 'too-long', '--expires', '91d']);
  assertRefused(tooLong, /90d/);
  const started = Date.now();
  const ok = await createKey('thirty-days', ['--expires', '30d']);
  assertAbout(ok.expires_at, started, Date.now(), 30 * DAY_MS, 'expires_at');
  assert.equal(await keyCount(), count + 1, 'only the allowed key is created');

  // The limit holds for updates too.
  const unlimit = await cli(['keys', 'update', ok.id, '--expires', 'never']);
  assertRefused(unlimit, /90d/);
  const extend = await cli(['keys', 'update', ok.id, '--expires', '91d']);
  assertRefused(extend, /90d/);

  const lift = await cli(['workspaces', 'update', 'ws_default', '--max-key-lifetime', 'none']);
  assert.equal(lift.code, 0, describe(lift));
  const lifted = (await cliJson<WorkspaceView[]>(['workspaces', 'list'])).find((w) => w.id === 'ws_default');
  assert.equal(lifted?.policy.max_key_lifetime, null);
  const free = await createKey('no-expiry-again');
  assert.equal(free.expires_at, null);

  const nosuch = await cli(['workspaces', 'update', 'nosuch', '--name', 'x']);
  assertRefused(nosuch, /no workspace.*nosuch|nosuch.*(?:not found|no such|unknown)/i, 'non-zero');
});

// ---------------------------------------------------------------------------------------------
// 8. audit

test('audit records every change by the CLI with before/after, filters by key and action, and holds no secret', async () => {
  assert.ok(fullKey, 'needs the key of the first test');
  const id = fullKey.id;
  const events = await cliJson<AuditView[]>(['audit', '--limit', '1000']);
  const text = JSON.stringify(events);
  assert.doesNotMatch(text, ANY_KEY_RE, 'no audit event may contain a key');
  for (const secret of secrets) assert.ok(!text.includes(secret), 'no audit event may contain a secret');

  for (const event of events) {
    assert.equal(event.actor.type, 'cli', `every change above was made by the CLI: ${JSON.stringify(event)}`);
    assert.match(event.at, /^\d{4}-\d\d-\d\dT/, JSON.stringify(event));
  }
  // Newest first.
  const times = events.map((e) => Date.parse(e.at));
  assert.deepEqual(
    times,
    [...times].sort((a, b) => b - a),
    'events are listed newest first',
  );

  const of = (action: string) => events.filter((e) => e.action === action && e.target.id === id);
  const [create] = of('key.create');
  assert.ok(create, `no key.create for ${id}`);
  assert.equal(create.target.type, 'key');
  assert.equal(create.workspace_id, 'ws_default');
  assert.deepEqual(create.changes.rpm, { after: 60 });
  assert.deepEqual(create.changes.name, { after: 'full-options' });
  assert.deepEqual(create.changes.scopes, { after: ['embeddings', 'models'] });

  const updates = of('key.update');
  assert.equal(updates.length, 1, `one key.update for ${id}: ${JSON.stringify(updates)}`);
  const changes = updates[0]!.changes;
  assert.deepEqual(changes.rpm, { before: 60, after: null });
  assert.deepEqual(changes.name, { before: 'full-options', after: 'renamed' });
  assert.deepEqual(changes.models, { before: ['mistral-small-*', 'codestral-latest'], after: [] });
  assert.deepEqual(changes.allowed_ips, { before: ['10.0.0.0/8', '2001:db8::/32'], after: [] });
  assert.equal(changes.expires_at?.after, null);
  assert.match(
    String(changes.expires_at?.before),
    /^\d{4}-\d{2}-\d{2}T.*Z$/,
    JSON.stringify(changes.expires_at),
  );
  for (const unchanged of ['tpm', 'concurrency', 'scopes', 'budget_day', 'budget_month']) {
    assert.ok(!(unchanged in changes), `${unchanged} did not change but is in ${JSON.stringify(changes)}`);
  }

  assert.equal(of('key.rotate').length, 2, 'two rotations');
  const revokes = of('key.revoke');
  assert.equal(revokes.length, 1);
  assert.equal(revokes[0]!.changes.revoked_at?.before, null);
  assert.match(String(revokes[0]!.changes.revoked_at?.after), /^\d{4}-\d{2}-\d{2}T.*Z$/);

  const wsUpdates = events.filter((e) => e.action === 'workspace.update' && e.target.id === 'ws_default');
  assert.equal(wsUpdates.length, 2, JSON.stringify(wsUpdates));
  assert.equal(wsUpdates[0]!.target.type, 'workspace');
  assert.deepEqual(wsUpdates[0]!.changes.max_key_lifetime_ms, { before: 90 * DAY_MS, after: null });
  assert.deepEqual(wsUpdates[1]!.changes.max_key_lifetime_ms, { before: null, after: 90 * DAY_MS });

  const byKey = await cliJson<AuditView[]>(['audit', '--key', id]);
  assert.ok(byKey.length >= 5, JSON.stringify(byKey));
  for (const event of byKey) assert.equal(event.target.id, id, JSON.stringify(event));
  assert.deepEqual(
    byKey.map((e) => e.action),
    ['key.revoke', 'key.rotate', 'key.rotate', 'key.update', 'key.create'],
  );

  const revokesOnly = await cliJson<AuditView[]>(['audit', '--action', 'key.revoke']);
  assert.ok(revokesOnly.length >= 1);
  for (const event of revokesOnly) assert.equal(event.action, 'key.revoke', JSON.stringify(event));
  assert.ok(revokesOnly.some((e) => e.target.id === id));
});

// ---------------------------------------------------------------------------------------------
// 9. human output

test('keys list / show, audit and workspaces list print readable tables and never a secret', async () => {
  assert.ok(fullKey, 'needs the key of the first test');
  const id = fullKey.id;

  const list = await cli(['keys', 'list']);
  assert.equal(list.code, 0, describe(list));
  const listRows = assertTable(list.stdout, ['ID', 'NAME', 'KEY', 'STATUS', 'SCOPES', 'MODELS', 'EXPIRES']);
  const row = listRows.find((r) => r.startsWith(`${id} `));
  assert.ok(row, `no row for ${id}:\n${list.stdout}`);
  assert.match(row, /\brenamed\b/);
  assert.match(row, /\brevoked\b/);
  assert.match(row, /\bkg_[0-9A-Za-z]{4}…[0-9A-Za-z]{4}\b/, 'the KEY column shows the display form only');

  const show = await cli(['keys', 'show', id]);
  assert.equal(show.code, 0, describe(show));
  const showRows = assertTable(show.stdout, ['FIELD', 'VALUE']);
  assert.ok(
    showRows.some((r) => new RegExp(`^id\\s+${id}$`).test(r)),
    show.stdout,
  );
  assert.ok(
    showRows.some((r) => /^status\s+revoked$/.test(r)),
    show.stdout,
  );

  const audit = await cli(['audit']);
  assert.equal(audit.code, 0, describe(audit));
  const auditRows = assertTable(audit.stdout, ['TIME', 'ACTOR', 'ACTION', 'TARGET']);
  assert.ok(
    auditRows.some((r) => r.includes('key.revoke') && r.includes(id)),
    audit.stdout,
  );

  const workspaces = await cli(['workspaces', 'list']);
  assert.equal(workspaces.code, 0, describe(workspaces));
  const wsRows = assertTable(workspaces.stdout, ['ID', 'NAME']);
  assert.ok(
    wsRows.some((r) => r.startsWith('ws_default ')),
    workspaces.stdout,
  );

  for (const result of [list, show, audit, workspaces]) {
    assertNoSecret(`${result.stdout}\n${result.stderr}`, `keygate ${result.args.join(' ')}`);
  }
});

// ---------------------------------------------------------------------------------------------
// 10. secrets hygiene over every command run above

test('only keys create / keys rotate print a secret, and only their own', () => {
  assert.ok(secrets.length >= 5, `expected secrets from the tests above, got ${secrets.length}`);
  for (const run of runs) {
    const where = `keygate ${run.args.join(' ')}`;
    assertNoSecret(run.stderr, where);
    const issues = run.args[0] === 'keys' && (run.args[1] === 'create' || run.args[1] === 'rotate');
    if (!issues) {
      assertNoSecret(run.stdout, where);
      continue;
    }
    const printed = run.stdout.match(new RegExp(ANY_KEY_RE.source, 'g')) ?? [];
    assert.ok(printed.length <= 1, `${where} printed ${printed.length} key-shaped strings`);
    for (const secret of secrets) {
      if (secret !== printed[0])
        assert.ok(!run.stdout.includes(secret), `${where} printed another key's secret`);
    }
  }
});

test('keys create --owner makes a key that belongs to a member of the workspace', async () => {
  const dir = newDataDir();
  assert.equal((await cli(['keys', 'list'], dir)).code, 0, 'the data directory exists');
  const store = new SqliteStore(join(dir, 'keygate.db'));
  try {
    await store.migrate();
    const user = await createUser(
      store,
      { email: 'Owner.Of.Keys@example.com', password: 'a long enough password' },
      CLI_ACTOR,
    );
    await setRole(store, { workspaceId: 'ws_default', user: user.id, role: 'member' }, CLI_ACTOR);
    await createUser(store, { email: 'outsider@example.com', password: 'a long enough password' }, CLI_ACTOR);
    const created = await cliJson<{ created_by: string }>(
      [
        'keys',
        'create',
        '--name',
        'owned',
        '--scopes',
        'keys:write,chat',
        '--owner',
        'owner.of.keys@example.com',
      ],
      dir,
    );
    assert.equal(created.created_by, user.id);
  } finally {
    await store.close();
  }
  for (const [owner, message] of [
    ['nobody@example.com', /--owner: no user nobody@example.com/],
    ['outsider@example.com', /--owner: outsider@example.com is not a member of ws_default/],
  ] as const) {
    const refused = await cli(['keys', 'create', '--name', 'x', '--owner', owner], dir);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, message);
  }
});
