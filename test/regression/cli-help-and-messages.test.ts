/**
 * Regression (issue 13, items 12 and 10): what the CLI says when it is asked for help or given a
 * wrong name.
 * - `--scopes chatt` said "unknown scope" and sent the user to docs/security.md: it lists the
 *   valid scopes now.
 * - `keys update --help` showed create's defaults ("default: chat,fim,embeddings,models"), as if
 *   an update without --scopes reset them: update's options say what they replace, without defaults.
 * - `usage --key key_nope` printed "No usage recorded", as for a key that exists and was not used:
 *   it says there is no such key (and the same for --workspace).
 * - `start --help` said that more than one worker needs REDIS_URL: the workers share their limits
 *   through the primary process (src/limits/ipc.ts); Redis is one option.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { createCliHarness } from '../support/cli.ts';

const harness = createCliHarness({ tempPrefix: 'keygate-cli-messages-' });
after(() => harness.cleanup());

test('an unknown scope is refused with the list of valid scopes', async () => {
  const dir = harness.newDataDir();
  const res = await harness.runCli(['keys', 'create', '--name', 'x', '--scopes', 'chatt', '--data-dir', dir]);
  assert.equal(res.code, 2, res.stdout + res.stderr);
  assert.match(
    res.stderr,
    /^keygate: --scopes: unknown scope "chatt"; the scopes are chat, fim, embeddings, models, admin, keys:read, keys:write, [^\n]*\(see docs\/security\.md\)\n$/,
  );
});

test("keys update --help shows no defaults; keys create --help shows create's", async () => {
  const update = await harness.runCli(['keys', 'update', '--help']);
  assert.equal(update.code, 0, update.stderr);
  assert.match(update.stdout, /--scopes <list>/);
  assert.doesNotMatch(update.stdout.replace(/\s+/g, ' '), /\(default: /, update.stdout);
  const create = await harness.runCli(['keys', 'create', '--help']);
  assert.match(create.stdout.replace(/\s+/g, ' '), /\(default: chat,fim,embeddings,models\)/);
});

test('usage for a key or workspace that does not exist says so', async () => {
  const dir = harness.newDataDir();
  const key = await harness.runCli(['usage', '--key', 'key_nope', '--data-dir', dir]);
  assert.equal(key.code, 1, key.stdout + key.stderr);
  assert.equal(key.stderr, 'keygate: no key with id key_nope (see `keygate keys list`)\n');
  assert.equal(key.stdout, '');
  const ws = await harness.runCli(['usage', '--workspace', 'ws_nope', '--data-dir', dir]);
  assert.equal(ws.code, 1, ws.stdout + ws.stderr);
  assert.match(ws.stderr, /no workspace with id ws_nope/);
  // An existing key that was not used still gets the empty report.
  const created = await harness.runCli(['keys', 'create', '--name', 'idle', '--json', '--data-dir', dir]);
  const id = (JSON.parse(created.stdout) as { id: string }).id;
  const idle = await harness.runCli(['usage', '--key', id, '--data-dir', dir]);
  assert.equal(idle.code, 0, idle.stderr);
  assert.match(idle.stdout, /No usage recorded/);
});

test('start --help does not say that --workers needs Redis', async () => {
  const res = await harness.runCli(['start', '--help']);
  assert.equal(res.code, 0, res.stderr);
  const help = res.stdout.replace(/\s+/g, ' ');
  assert.doesNotMatch(help, /needs REDIS_URL|needs Redis/);
  assert.match(
    help,
    /--workers <n> processes serving the port; their limits stay exact, kept by the primary process \(no Redis needed\) or in Redis with REDIS_URL/,
  );
});
