/**
 * Regression (issue 13, item 12): `--allow-ip 10.0.0.1/8` was stored as 10.0.0.0/8 without a word,
 * so a user who meant the one address got sixteen million. A range with host bits is now refused
 * wherever an allowlist is read (src/auth/ip.ts), naming both readings: the CLI (keys and
 * workspaces, exit 2), the management API (422, which the console shows) and the configuration.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { loadConfig } from '../../src/config/config.ts';
import { createCliHarness } from '../support/cli.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

const harness = createCliHarness({ tempPrefix: 'keygate-cidr-host-bits-' });
let t: TestGateway;
before(async () => {
  t = await startTestGateway({ http: true });
});
after(async () => {
  await harness.cleanup();
  await t.close();
});

const SAYS_BOTH =
  /"10\.0\.0\.1\/8" has host bits set: write the network 10\.0\.0\.0\/8, or 10\.0\.0\.1\/32 for that one address/;

test('the CLI refuses a range with host bits, for keys and for workspaces, and stores nothing', async () => {
  const dir = harness.newDataDir();
  const create = await harness.runCli([
    'keys',
    'create',
    '--name',
    'x',
    '--allow-ip',
    '10.0.0.1/8',
    '--data-dir',
    dir,
  ]);
  assert.equal(create.code, 2, create.stdout + create.stderr);
  assert.match(create.stderr, /^keygate: --allow-ip: /);
  assert.match(create.stderr, SAYS_BOTH);
  const list = await harness.runCli(['keys', 'list', '--json', '--data-dir', dir]);
  assert.deepEqual(JSON.parse(list.stdout), []);

  const ws = await harness.runCli([
    'workspaces',
    'update',
    'ws_default',
    '--allow-ip',
    '10.0.0.1/8',
    '--data-dir',
    dir,
  ]);
  assert.equal(ws.code, 2, ws.stdout + ws.stderr);
  assert.match(ws.stderr, SAYS_BOTH);

  // The network itself, and the one address, are taken as written.
  const ok = await harness.runCli([
    'keys',
    'create',
    '--name',
    'y',
    '--allow-ip',
    '10.0.0.0/8,10.0.0.1/32',
    '--json',
    '--data-dir',
    dir,
  ]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual(JSON.parse(ok.stdout).allowed_ips, ['10.0.0.0/8', '10.0.0.1/32']);
});

test('the management API refuses it as a validation error (422) with the same message', async () => {
  const admin = await t.createKey('operator', undefined, { scopes: ['admin'] });
  const res = await t.call('/admin/v1/keys', {
    method: 'POST',
    headers: { authorization: `Bearer ${admin.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'x', allowed_ips: ['10.0.0.1/8'] }),
  });
  assert.equal(res.status, 422, res.text);
  const body = res.json() as { error: { message: string } };
  assert.match(body.error.message, /^body\.allowed_ips\.0: /);
  assert.match(body.error.message, SAYS_BOTH);
});

test('the configuration refuses it in server.trustedProxies', () => {
  assert.throws(() => loadConfigWith(['10.0.0.1/8']), SAYS_BOTH);
  assert.deepEqual(loadConfigWith(['10.0.0.0/8']).server.trustedProxies, ['10.0.0.0/8']);
});

function loadConfigWith(trustedProxies: string[]) {
  return loadConfig({ config: writeConfig({ server: { trustedProxies } }) }, {});
}

function writeConfig(value: unknown): string {
  const file = `${harness.newDataDir()}/keygate.yaml`;
  writeFileSync(file, JSON.stringify(value));
  return file;
}
