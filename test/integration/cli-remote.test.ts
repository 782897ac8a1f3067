/**
 * `keygate … --url URL`: the management commands against a running gateway through its
 * management API, authenticated with KEYGATE_ADMIN_KEY. The gateway runs in this process
 * (startTestGateway); the CLI runs as child processes (`bin/keygate.js` on this Node), spawned
 * asynchronously because the gateway shares this process's event loop, with a clean environment
 * and a different, empty `--data-dir`, to show that nothing local is used. The same commands run
 * locally against the gateway's own data directory print the same JSON and tables.
 *
 * The tests build on each other in file order (node:test runs a file's tests one after another).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createKey } from '../../src/keys/service.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { createUser } from '../../src/users/service.ts';
import type { CreatedKey, KeyView, RotatedKey } from '../support/cli.ts';
import { ANY_KEY_RE, baseEnv, KEY_RE, limited, pollStatus, STACK_LINE } from '../support/cli.ts';
import { bearer, chatBody, startTestGateway, type TestGateway, tempDir } from '../support/gateway.ts';
import { usageTotalsOf } from '../support/usage-totals.ts';
import { eventually } from '../support/wait.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const CLI_TIMEOUT_MS = 30_000;
const DAY_MS = 86_400_000;

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface CliResult extends Exit {
  args: readonly string[];
  stdout: string;
  stderr: string;
  ms: number;
}

interface WorkspaceView {
  id: string;
  name: string;
  policy: {
    max_key_lifetime: string | null;
    allowed_ips: string[];
    budget: { tokens_per_day: number | null; tokens_per_month: number | null };
  };
}

interface AuditView {
  id: string;
  seq: number;
  at: string;
  actor: { type: string; id: string | null; ip: string | null };
  action: string;
  target: { type: string; id: string | null };
  changes: Record<string, { before?: unknown; after?: unknown }>;
}

interface MemberView {
  user_id: string;
  email: string;
  role: string;
  since: string | null;
}

interface UsageView {
  key_id: string;
  name: string | null;
  requests: number;
  errors: number;
  total_tokens: number;
}

let t: TestGateway;
/** The gateway's certificate, for --ca-file. */
let caFile: string;
/** The --data-dir of every remote run: it must stay empty. */
let emptyDir: string;
let admin: { id: string; key: string };
let inferenceOnly: { id: string; key: string };
/** The key of the first test, carried through update, rotate, revoke and audit. */
let remoteKey: CreatedKey | undefined;
/** Its secret after the rotation. */
let rotatedSecret: string | undefined;

const children = new Set<ChildProcess>();
const runs: CliResult[] = [];
const servers: Server[] = [];
const sockets = new Set<Socket>();

before(async () => {
  t = await startTestGateway();
  caFile = join(t.dataDir, 'tls', 'cert.pem');
  emptyDir = tempDir('keygate-cli-remote-empty-');
  const deps = { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix };
  const created = await createKey(deps, { name: 'operator', scopes: ['admin'] });
  admin = { id: created.record.id, key: created.key };
  inferenceOnly = await t.createKey('inference only');
});

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await eventually(() => children.size === 0, 'the CLI processes to exit', 5000).catch(() => {});
  for (const socket of sockets) socket.destroy();
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  await t?.close();
  if (emptyDir) rmSync(emptyDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// helpers

function adminEnv(key = admin.key): NodeJS.ProcessEnv {
  return { ...baseEnv(), KEYGATE_ADMIN_KEY: key };
}

/** Runs `keygate ARGS` as a child process to completion, within CLI_TIMEOUT_MS (then SIGKILL). */
async function run(args: readonly string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  const started = Date.now();
  const child = spawn(process.execPath, ['bin/keygate.js', ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
  });
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
  });
  let timer: NodeJS.Timeout | undefined;
  const exit = await new Promise<Exit>((resolve) => {
    child.once('error', (error) => {
      stderr += `\n[spawn error: ${error.message}]`;
      resolve({ code: null, signal: null });
    });
    child.once('close', (code, signal) => resolve({ code, signal }));
    timer = setTimeout(() => {
      stderr += `\n[killed after ${CLI_TIMEOUT_MS} ms]`;
      child.kill('SIGKILL');
    }, CLI_TIMEOUT_MS);
  });
  clearTimeout(timer);
  children.delete(child);
  const result: CliResult = { ...exit, args, stdout, stderr, ms: Date.now() - started };
  runs.push(result);
  return result;
}

/** `keygate ARGS --url <gateway> --ca-file <its certificate> --data-dir <empty>` with the admin key. */
function remote(args: readonly string[], env: NodeJS.ProcessEnv = adminEnv()): Promise<CliResult> {
  return run([...args, '--url', t.url, '--ca-file', caFile, '--data-dir', emptyDir], env);
}

/** `keygate ARGS --data-dir <the gateway's data directory>`, without any KEYGATE_ variable. */
function local(args: readonly string[]): Promise<CliResult> {
  return run([...args, '--data-dir', t.dataDir], baseEnv());
}

function describe(result: CliResult): string {
  return `keygate ${result.args.join(' ')}\nexit ${result.code} (signal ${result.signal})\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

function parse<T>(result: CliResult): T {
  assert.equal(result.code, 0, describe(result));
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    assert.fail(`not JSON:\n${describe(result)}`);
  }
}

async function remoteJson<T>(args: readonly string[]): Promise<T> {
  return parse<T>(await remote([...args, '--json']));
}

async function localJson<T>(args: readonly string[]): Promise<T> {
  return parse<T>(await local([...args, '--json']));
}

/** A refusal: a non-zero exit (or `code`), one line on stderr, no stack trace, nothing on stdout. */
function assertRefused(result: CliResult, mentions: RegExp, code?: number): string {
  if (code === undefined) assert.ok(result.code !== 0 && result.code !== null, describe(result));
  else assert.equal(result.code, code, describe(result));
  assert.equal(result.signal, null, describe(result));
  const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
  assert.equal(lines.length, 1, `expected a one-line message:\n${describe(result)}`);
  assert.match(lines[0]!, /^keygate: /, describe(result));
  assert.match(lines[0]!, mentions, describe(result));
  assert.doesNotMatch(result.stderr, STACK_LINE, describe(result));
  assert.doesNotMatch(
    result.stderr,
    /\b(?:TypeError|ReferenceError|node:internal|undici)\b/,
    describe(result),
  );
  assert.equal(result.stdout, '', describe(result));
  return lines[0]!;
}

/** `iso` lies within [from + offset - 1 s, to + offset + 1 s]. */
function assertAbout(iso: string | null, from: number, to: number, offsetMs: number, what: string): void {
  assert.ok(iso, `${what}: expected a time, got ${iso}`);
  const at = Date.parse(iso);
  assert.ok(
    at >= from + offsetMs - 1000 && at <= to + offsetMs + 1000,
    `${what}: ${iso} is not within ${new Date(from + offsetMs).toISOString()} .. ${new Date(to + offsetMs).toISOString()}`,
  );
}

function byId<T extends { id: string }>(items: T[]): T[] {
  return [...items].sort((a, b) => a.id.localeCompare(b.id));
}

async function chat(secret: string, model = 'mistral-small-latest'): Promise<number> {
  const res = await t.call('/v1/chat/completions', {
    method: 'POST',
    headers: bearer(secret),
    body: chatBody({ model }),
  });
  return res.status;
}

// ---------------------------------------------------------------------------------------------
// 1. create

test('keys create --url with every restriction: the key is made by the gateway and works against /v1', async () => {
  const started = Date.now();
  const created = await remoteJson<CreatedKey>([
    'keys',
    'create',
    '--name',
    'remote-app',
    '--scopes',
    'chat,models',
    '--models',
    'mistral-small-*',
    '--allow-ip',
    '127.0.0.0/8,::1',
    '--rpm',
    '100',
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
  remoteKey = created;
  assert.match(created.key, KEY_RE);
  assert.equal(created.name, 'remote-app');
  assert.equal(created.workspace_id, 'ws_default');
  assert.equal(created.status, 'active');
  assert.equal(created.created_by, admin.id, 'created through the API, by the admin key');
  assert.deepEqual(created.scopes, ['chat', 'models']);
  assert.deepEqual(created.models, ['mistral-small-*']);
  assert.deepEqual(created.allowed_ips, ['127.0.0.0/8', '::1/128']);
  assert.deepEqual(created.limits, {
    requests_per_minute: 100,
    tokens_per_minute: 100_000,
    concurrent_requests: 4,
  });
  assert.deepEqual(created.budget, { tokens_per_day: 50_000, tokens_per_month: 1_000_000 });
  assertAbout(created.expires_at, started, finished, 30 * DAY_MS, 'expires_at');

  // It is in the gateway's store, and enforced at once.
  const stored = await t.gateway.store.getKey(created.id);
  assert.equal(stored?.name, 'remote-app');
  assert.equal(await chat(created.key), 200);
  assert.equal(await chat(created.key, 'mistral-large-latest'), 403, 'the model allowlist holds');
  const embed = await t.call('/v1/embeddings', {
    method: 'POST',
    headers: bearer(created.key),
    body: JSON.stringify({ model: 'mistral-small-latest', input: 'x' }),
  });
  assert.equal(embed.status, 403, 'the scopes hold');

  // Human output: the secret once, and the expiry.
  const human = await remote(['keys', 'create', '--name', 'remote-human', '--scopes', 'models']);
  assert.equal(human.code, 0, describe(human));
  assert.match(human.stdout, /^Created key key_\S+ "remote-human"\./);
  assert.match(human.stdout, /^ {2}kg_[0-9A-Za-z]{38}$/m);
  assert.match(human.stdout, /only time the secret is shown/);

  // Bad values are refused before anything is sent, exactly as locally (exit 2, the option named).
  const bad = await remote(['keys', 'create', '--name', 'nope', '--scopes', 'bogus']);
  assertRefused(bad, /--scopes.*bogus/, 2);
  const badLocal = await local(['keys', 'create', '--name', 'nope', '--scopes', 'bogus']);
  assert.equal(bad.stderr, badLocal.stderr, 'the same message either way');
});

// ---------------------------------------------------------------------------------------------
// 2. the same JSON and tables as locally

test('keys list / show, workspaces, usage and audit print the same JSON and tables as the local CLI', async () => {
  assert.ok(remoteKey, 'needs the key of the first test');
  // The three /v1 calls above are metered after the response: wait until they are written (with
  // last_used_at, in the same transaction), so that both reads see the same.
  await usageTotalsOf(t.gateway.store, remoteKey.id, 3);

  const remoteKeys = await remoteJson<KeyView[]>(['keys', 'list']);
  const localKeys = await localJson<KeyView[]>(['keys', 'list']);
  assert.ok(remoteKeys.length >= 4, JSON.stringify(remoteKeys));
  assert.deepEqual(byId(remoteKeys), byId(localKeys));
  assert.ok(remoteKeys.some((k) => k.id === admin.id));
  assert.doesNotMatch(JSON.stringify(remoteKeys), ANY_KEY_RE, 'a listing holds no secret');

  const jsonCases = [
    ['keys', 'show', remoteKey.id],
    ['keys', 'list', '--status', 'active', '--search', 'remote'],
    ['keys', 'list', '--limit', '2'],
    ['keys', 'list', '--after', admin.id],
    ['workspaces', 'list'],
    ['workspaces', 'show', 'ws_default'],
    ['usage'],
    ['usage', '--key', remoteKey.id, '--since', '1h'],
    ['audit', '--limit', '1000'],
  ];
  // Reads only: each remote run beside its local twin, two pairs at a time.
  const slot = limited(4);
  const jsonPairs = await Promise.all(
    jsonCases.map((args) =>
      Promise.all([slot(() => remote([...args, '--json'])), slot(() => local([...args, '--json']))]),
    ),
  );
  for (const [index, [fromGateway, fromDisk]] of jsonPairs.entries()) {
    const what = jsonCases[index]!.join(' ');
    const value = parse<unknown>(fromGateway);
    assert.deepEqual(value, parse<unknown>(fromDisk), `${what}: remote and local JSON differ`);
    assert.notDeepEqual(value, [], `${what}: expected something to compare`);
  }

  // The usage of the key of test 1 (its chat was answered with tokens).
  const usage = await remoteJson<UsageView[]>(['usage', '--key', remoteKey.id]);
  assert.equal(usage.length, 1, JSON.stringify(usage));
  assert.equal(usage[0]!.key_id, remoteKey.id);
  assert.ok(usage[0]!.requests >= 1 && usage[0]!.total_tokens > 0, JSON.stringify(usage));

  // The same human tables, character for character.
  const tableCases = [
    ['keys', 'list'],
    ['keys', 'show', remoteKey.id],
    ['workspaces', 'list'],
    ['workspaces', 'show', 'ws_default'],
    ['usage'],
    ['audit'],
  ];
  const tablePairs = await Promise.all(
    tableCases.map((args) => Promise.all([slot(() => remote(args)), slot(() => local(args))])),
  );
  for (const [index, [fromGateway, fromDisk]] of tablePairs.entries()) {
    const what = tableCases[index]!.join(' ');
    assert.equal(fromGateway.code, 0, describe(fromGateway));
    assert.equal(fromGateway.stdout, fromDisk.stdout, `${what}: the tables differ`);
    assert.match(
      fromGateway.stdout.split('\n')[0]!,
      /^[A-Z]+(?: {2,}[A-Z][A-Z0-9 /]*)+$/,
      `${what}: a header`,
    );
  }

  // KEYGATE_URL and KEYGATE_CA_FILE instead of the flags.
  const viaEnv = await run(['keys', 'show', remoteKey.id, '--json', '--data-dir', emptyDir], {
    ...adminEnv(),
    KEYGATE_URL: t.url,
    KEYGATE_CA_FILE: caFile,
  });
  assert.deepEqual(parse<KeyView>(viaEnv), await localJson<KeyView>(['keys', 'show', remoteKey.id]));
});

// ---------------------------------------------------------------------------------------------
// 3. update, rotate, revoke

test('keys update --url clears and changes restrictions (null in the PATCH), effective at once', async () => {
  assert.ok(remoteKey, 'needs the key of the first test');
  const updated = await remoteJson<KeyView>([
    'keys',
    'update',
    remoteKey.id,
    '--name',
    'remote-renamed',
    '--rpm',
    'none',
    '--models',
    'any',
    '--budget',
    'none/day',
    '--expires',
    'never',
  ]);
  assert.equal(updated.name, 'remote-renamed');
  assert.equal(updated.limits.requests_per_minute, null);
  assert.equal(updated.limits.tokens_per_minute, 100_000, 'unchanged');
  assert.deepEqual(updated.models, []);
  assert.deepEqual(updated.budget, { tokens_per_day: null, tokens_per_month: 1_000_000 });
  assert.equal(updated.expires_at, null);
  assert.deepEqual(updated.scopes, ['chat', 'models'], 'unchanged');
  assert.deepEqual(await localJson<KeyView>(['keys', 'show', remoteKey.id]), updated);
  assert.equal(await chat(remoteKey.key, 'mistral-large-latest'), 200, 'every model is allowed now');

  const human = await remote(['keys', 'update', remoteKey.id, '--tpm', 'none']);
  assert.equal(human.code, 0, describe(human));
  assert.equal(human.stdout, `Updated key ${remoteKey.id} "remote-renamed".\n`);

  const nothing = await remote(['keys', 'update', remoteKey.id]);
  assertRefused(nothing, /nothing to change/, 2);
  const unknown = await remote(['keys', 'update', 'key_doesnotexist', '--rpm', '5']);
  assertRefused(unknown, /No key with id key_doesnotexist.*HTTP 404/, 1);
});

test('keys rotate --url issues a new secret; the old one keeps working within the grace period', async () => {
  assert.ok(remoteKey, 'needs the key of the first test');
  const started = Date.now();
  const rotated = await remoteJson<RotatedKey>(['keys', 'rotate', remoteKey.id, '--grace', '1h']);
  const finished = Date.now();
  rotatedSecret = rotated.key;
  assert.match(rotated.key, KEY_RE);
  assert.notEqual(rotated.key, remoteKey.key);
  assert.equal(rotated.id, remoteKey.id);
  assertAbout(rotated.previous_secret_valid_until, started, finished, 3_600_000, 'grace 1h');
  assertAbout(rotated.rotated_at, started, finished, 0, 'rotated_at');
  assert.equal(await chat(rotated.key), 200, 'the new secret works at once');
  assert.equal(await chat(remoteKey.key), 200, 'the old secret works during the grace period');

  const human = await remote(['keys', 'rotate', remoteKey.id, '--grace', '1h']);
  assert.equal(human.code, 0, describe(human));
  assert.match(human.stdout, new RegExp(`^Rotated key ${remoteKey.id} "remote-renamed"\\.`));
  assert.match(human.stdout, /The previous secret keeps working until \d{4}-\d\d-\d\dT/);
  rotatedSecret = /^ {2}(kg_[0-9A-Za-z]{38})$/m.exec(human.stdout)?.[1];
  assert.ok(rotatedSecret, human.stdout);
});

test('keys revoke --url: the gateway refuses the key within 1 s; a second revoke says so', async () => {
  assert.ok(remoteKey && rotatedSecret, 'needs the key of the earlier tests');
  const secret = rotatedSecret;
  assert.equal(await chat(secret), 200);
  const revoked = await remoteJson<KeyView>(['keys', 'revoke', remoteKey.id]);
  const at = Date.now();
  assert.equal(revoked.status, 'revoked');
  assert.ok(revoked.revoked_at);
  const refused = await pollStatus(() => chat(secret), 401, at, 3000);
  assert.ok(refused.elapsed !== undefined, 'the revoked key was still accepted after 3 s');
  const since = Date.now() - at;
  assert.ok(since <= 1000 + 100, `the revoked key was refused only ${since} ms after the revoke returned`);

  const again = await remote(['keys', 'revoke', remoteKey.id]);
  assert.equal(again.code, 0, describe(again));
  assert.equal(again.stdout, `Key ${remoteKey.id} was already revoked at ${revoked.revoked_at}.\n`);

  const rotate = await remote(['keys', 'rotate', remoteKey.id]);
  assertRefused(rotate, /revoked.*HTTP 409/, 1);
});

// ---------------------------------------------------------------------------------------------
// 4. workspaces

test('workspaces update --url sets the policy, which the gateway enforces on keys created through it', async () => {
  const set = await remoteJson<WorkspaceView>([
    'workspaces',
    'update',
    'ws_default',
    '--max-key-lifetime',
    '90d',
    '--allow-ip',
    '127.0.0.0/8,::1',
    '--budget',
    '5000000/month',
  ]);
  assert.deepEqual(set.policy, {
    max_key_lifetime: '90d',
    allowed_ips: ['127.0.0.0/8', '::1/128'],
    budget: { tokens_per_day: null, tokens_per_month: 5_000_000 },
  });
  assert.deepEqual(await localJson<WorkspaceView>(['workspaces', 'show', 'ws_default']), set);

  const forever = await remote(['keys', 'create', '--name', 'forever']);
  assertRefused(forever, /^keygate: --expires: .*90d.*HTTP 422/, 2);
  const tooLong = await remote(['keys', 'create', '--name', 'too-long', '--expires', '91d']);
  assertRefused(tooLong, /--expires: .*90d/, 2);
  const fine = await remoteJson<CreatedKey>(['keys', 'create', '--name', 'thirty-days', '--expires', '30d']);
  assert.equal(fine.status, 'active');

  const lift = await remote([
    'workspaces',
    'update',
    'ws_default',
    '--max-key-lifetime',
    'none',
    '--allow-ip',
    'any',
    '--budget',
    'none/month',
  ]);
  assert.equal(lift.code, 0, describe(lift));
  assert.equal(lift.stdout, 'Updated workspace ws_default.\n');
  const lifted = await remoteJson<WorkspaceView>(['workspaces', 'show', 'ws_default']);
  assert.deepEqual(lifted.policy, {
    max_key_lifetime: null,
    allowed_ips: [],
    budget: { tokens_per_day: null, tokens_per_month: null },
  });

  const nosuch = await remote(['workspaces', 'update', 'ws_nosuch', '--name', 'x']);
  assertRefused(nosuch, /ws_nosuch.*HTTP 404/, 1);
  const badIp = await remote(['workspaces', 'update', 'ws_default', '--allow-ip', '10.0.0.0/33']);
  assertRefused(badIp, /--allow-ip/, 2);
});

test('workspaces create / set-role / members / remove-member --url manage members through the API', async () => {
  // Users are made on the gateway's data directory (the API has no users endpoints).
  for (const email of ['alice@example.com', 'bob@example.com']) {
    await createUser(t.gateway.store, { email, password: 'a long enough password' }, CLI_ACTOR);
  }
  const created = await remoteJson<{ id: string; name: string; created_at: string }>([
    'workspaces',
    'create',
    '--name',
    'team-remote',
  ]);
  assert.deepEqual(Object.keys(created), ['id', 'name', 'created_at'], 'the shape the local command prints');
  assert.equal(created.name, 'team-remote');
  const ws = created.id;
  const shown = await localJson<WorkspaceView>(['workspaces', 'show', ws]);
  assert.equal(shown.name, 'team-remote');

  const owner = await remoteJson<Record<string, string>>([
    'workspaces',
    'set-role',
    ws,
    '--user',
    'alice@example.com',
    '--role',
    'owner',
  ]);
  assert.deepEqual(
    { ...owner, user_id: typeof owner.user_id },
    { user_id: 'string', email: 'alice@example.com', role: 'owner', workspace_id: ws },
  );
  const bob = await remote(['workspaces', 'set-role', ws, '--user', 'bob@example.com', '--role', 'viewer']);
  assert.equal(bob.code, 0, describe(bob));
  assert.equal(bob.stdout, `bob@example.com is now viewer of ${ws}.\n`);

  const [members, membersLocal] = await Promise.all([
    remoteJson<MemberView[]>(['workspaces', 'members', ws]),
    localJson<MemberView[]>(['workspaces', 'members', ws]),
  ]);
  assert.deepEqual(members, membersLocal);
  assert.deepEqual(members.map((m) => [m.email, m.role]).sort(), [
    ['alice@example.com', 'owner'],
    ['bob@example.com', 'viewer'],
  ]);
  const [table, tableLocal] = await Promise.all([
    remote(['workspaces', 'members', ws]),
    local(['workspaces', 'members', ws]),
  ]);
  assert.match(table.stdout, /^USER {2,}EMAIL {2,}ROLE {2,}SINCE/);
  assert.equal(table.stdout, tableLocal.stdout);

  const lastOwner = await remote(['workspaces', 'remove-member', ws, '--user', 'alice@example.com']);
  assertRefused(lastOwner, /owner.*HTTP 409/, 1);
  const removed = await remote(['workspaces', 'remove-member', ws, '--user', 'bob@example.com']);
  assert.equal(removed.code, 0, describe(removed));
  assert.equal(
    removed.stdout,
    `Removed bob@example.com from ${ws}; the keys they owned there are revoked.\n`,
  );
  const remaining = await remoteJson<MemberView[]>(['workspaces', 'members', ws]);
  assert.deepEqual(
    remaining.map((m) => m.email),
    ['alice@example.com'],
  );

  const nobody = await remote([
    'workspaces',
    'set-role',
    ws,
    '--user',
    'nobody@example.com',
    '--role',
    'admin',
  ]);
  assertRefused(nobody, /nobody@example\.com.*HTTP 404/, 1);
  const [emptyName, emptyNameLocal] = await Promise.all([
    remote(['workspaces', 'create', '--name', ' ']),
    local(['workspaces', 'create', '--name', ' ']),
  ]);
  assertRefused(emptyName, /workspace name has 1 to 128 characters/, 2);
  assert.equal(emptyName.stderr, emptyNameLocal.stderr);

  const events = await remoteJson<AuditView[]>(['audit', '--workspace', ws]);
  assert.deepEqual(events.map((e) => e.action).sort(), [
    'member.add',
    'member.add',
    'member.remove',
    'workspace.create',
  ]);
  for (const event of events) {
    assert.equal(event.actor.type, 'key', JSON.stringify(event));
    assert.equal(event.actor.id, admin.id, JSON.stringify(event));
  }
});

// ---------------------------------------------------------------------------------------------
// 5. audit

test('audit --url shows every remote change as made by the admin key (actor type key)', async () => {
  assert.ok(remoteKey, 'needs the key of the first test');
  const events = await remoteJson<AuditView[]>(['audit', '--key', remoteKey.id]);
  // Newest first; the second revoke changed nothing, so it is not an event.
  assert.deepEqual(
    events.map((e) => e.action),
    ['key.revoke', 'key.rotate', 'key.rotate', 'key.update', 'key.update', 'key.create'],
  );
  for (const event of events) {
    assert.equal(event.actor.type, 'key', JSON.stringify(event));
    assert.equal(event.actor.id, admin.id, JSON.stringify(event));
    assert.match(event.actor.ip ?? '', /127\.0\.0\.1|::1/, JSON.stringify(event));
  }
  const update = events.find((e) => e.action === 'key.update' && 'rpm' in e.changes);
  assert.deepEqual(update?.changes.rpm, { before: 100, after: null });
  assert.deepEqual(update?.changes.name, { before: 'remote-app', after: 'remote-renamed' });

  const workspace = await remoteJson<AuditView[]>(['audit', '--action', 'workspace.update', '--since', '1h']);
  assert.equal(workspace.length, 2, JSON.stringify(workspace));
  for (const event of workspace) assert.equal(event.actor.id, admin.id);

  // Paging: more events than one API page would hold come back whole, newest first.
  const all = await remoteJson<AuditView[]>(['audit', '--limit', '1000']);
  const seqs = all.map((e) => e.seq);
  assert.deepEqual(
    seqs,
    [...seqs].sort((a, b) => b - a),
  );
  const two = await remoteJson<AuditView[]>(['audit', '--limit', '2']);
  assert.deepEqual(two, all.slice(0, 2));

  const table = await remote(['audit', '--key', remoteKey.id]);
  assert.equal(table.code, 0, describe(table));
  assert.match(table.stdout, /^TIME {2,}ACTOR {2,}ACTION {2,}TARGET/);
  assert.match(table.stdout, new RegExp(`key ${admin.id} \\S+\\s+key\\.revoke\\s+${remoteKey.id}`));
});

// ---------------------------------------------------------------------------------------------
// 6. errors

/** A port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok(address && typeof address === 'object');
  return address.port;
}

/** A server that accepts connections and never says anything. */
async function silentServer(): Promise<number> {
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address && typeof address === 'object');
  return address.port;
}

test('remote failures are one line with a non-zero exit, never a stack trace or the key', {
  timeout: 90_000,
}, async (s) => {
  const port = await closedPort();
  const silent = await silentServer();
  const badAdmin = 'kg_thisisnotarealkeythisisnotarealkey00';
  const slot = limited(4);
  const [
    noKey,
    emptyKey,
    inference,
    invalid,
    refused,
    notAUrl,
    plainHttpElsewhere,
    untrusted,
    timeout,
    notKeygate,
    wrongScheme,
  ] = await Promise.all([
    slot(() => remote(['keys', 'list'], baseEnv())),
    slot(() => remote(['keys', 'list'], { ...baseEnv(), KEYGATE_ADMIN_KEY: ' ' })),
    slot(() => remote(['keys', 'list'], adminEnv(inferenceOnly.key))),
    slot(() => remote(['usage'], adminEnv(badAdmin))),
    slot(() =>
      run(['keys', 'list', '--url', `https://127.0.0.1:${port}`, '--data-dir', emptyDir], adminEnv()),
    ),
    slot(() => run(['keys', 'list', '--url', 'not a url', '--data-dir', emptyDir], adminEnv())),
    slot(() => run(['keys', 'list', '--url', 'http://gateway.example', '--data-dir', emptyDir], adminEnv())),
    slot(() => run(['keys', 'list', '--url', t.url, '--data-dir', emptyDir], adminEnv())),
    // Waits idle for its 10 s, and is timed: outside the slots.
    run(['keys', 'list', '--url', `https://127.0.0.1:${silent}`, '--data-dir', emptyDir], adminEnv()),
    slot(() => run(['keys', 'list', '--url', t.stub.url, '--data-dir', emptyDir], adminEnv())),
    slot(() =>
      run(['keys', 'list', '--url', t.url.replace('https:', 'http:'), '--data-dir', emptyDir], adminEnv()),
    ),
  ]);

  for (const result of [noKey, inference, invalid, refused, untrusted, timeout, notKeygate, wrongScheme])
    s.diagnostic(result.stderr.trim());
  await s.test('no KEYGATE_ADMIN_KEY', () => {
    const line = assertRefused(noKey, /KEYGATE_ADMIN_KEY/, 2);
    assert.match(line, /never taken as a flag/);
    assertRefused(emptyKey, /KEYGATE_ADMIN_KEY/, 2);
  });
  await s.test('a key without management scopes: the API’s 403', () => {
    assertRefused(inference, /lacks the scope "keys:read".*\(HTTP 403\)$/, 1);
  });
  await s.test('an invalid key: the API’s 401', () => {
    assertRefused(invalid, /Invalid API key.*HTTP 401/, 1);
  });
  await s.test('a closed port', () => {
    assertRefused(
      refused,
      new RegExp(`cannot connect to https://127\\.0\\.0\\.1:${port}: connection refused`),
      1,
    );
  });
  await s.test('not a URL', () => {
    assertRefused(notAUrl, /--url takes the gateway's address/, 2);
  });
  await s.test('plain http to another host is refused before the key is sent', () => {
    assertRefused(plainHttpElsewhere, /refusing to send KEYGATE_ADMIN_KEY unencrypted/, 2);
  });
  await s.test('an untrusted certificate without --ca-file', () => {
    const line = assertRefused(untrusted, /TLS error with https:\/\/127\.0\.0\.1:\d+: .*self-signed/i, 1);
    assert.match(line, /--ca-file/);
  });
  await s.test('no answer within 10 s', () => {
    assertRefused(timeout, /no answer from https:\/\/127\.0\.0\.1:\d+ within 10 s/, 1);
    assert.ok(timeout.ms >= 9_000 && timeout.ms < 25_000, `took ${timeout.ms} ms`);
  });
  await s.test('a server that is not a Keygate gateway', () => {
    assertRefused(notKeygate, /HTTP \d{3}/, 1);
  });
  await s.test('http:// to an HTTPS gateway', () => {
    assertRefused(wrongScheme, /connection to http:\/\/.* closed.*https:\/\//, 1);
  });
  await s.test('the key appears nowhere', () => {
    for (const result of [noKey, inference, invalid, refused, untrusted, timeout, notKeygate, wrongScheme]) {
      const output = result.stdout + result.stderr;
      assert.ok(!output.includes(admin.key), `the admin key was printed: ${describe(result)}`);
      assert.ok(!output.includes(inferenceOnly.key), `a key was printed: ${describe(result)}`);
      assert.ok(!output.includes(badAdmin), `the given key was printed: ${describe(result)}`);
    }
  });
});

test('commands the API does not offer say they work on the local data directory only', async () => {
  const cases = [
    ['users', 'list'],
    ['users', 'create', '--email', 'someone@example.com', '--password-stdin'],
  ];
  const results = await Promise.all(cases.map((args) => remote(args)));
  for (const [index, args] of cases.entries()) {
    assertRefused(
      results[index]!,
      new RegExp(`\`${args.slice(0, 2).join(' ')}\` works on the local data directory only`),
      2,
    );
  }
  const viaEnv = await run(['users', 'list', '--data-dir', emptyDir], { ...adminEnv(), KEYGATE_URL: t.url });
  assertRefused(viaEnv, /local data directory only.*KEYGATE_URL is set/, 2);
  const start = await run(['start', '--url', t.url, '--data-dir', emptyDir], adminEnv());
  assertRefused(start, /`start` .*takes no --url/, 2);
});

// ---------------------------------------------------------------------------------------------
// 7. over everything above

test('nothing was written to the --data-dir of the remote runs, and no run printed the admin key', () => {
  assert.deepEqual(readdirSync(emptyDir), [], 'the remote runs must not touch their --data-dir');
  assert.ok(runs.length > 40, `expected the runs above, got ${runs.length}`);
  for (const result of runs) {
    const output = result.stdout + result.stderr;
    assert.ok(!output.includes(admin.key), `the admin key was printed by keygate ${result.args.join(' ')}`);
    const issues = result.args[0] === 'keys' && (result.args[1] === 'create' || result.args[1] === 'rotate');
    if (!issues) assert.doesNotMatch(output, ANY_KEY_RE, `keygate ${result.args.join(' ')} printed a key`);
  }
});
