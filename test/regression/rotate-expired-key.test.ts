/**
 * Regression (issue 13, item 12): `keygate keys rotate` on an expired key printed a new secret that
 * could never authenticate (the key stays expired), with exit 0. Now the rotation is refused, on
 * the data directory and through the management API (409), with the way out: give the key a new
 * expiry first, then rotate it. No secret is printed or returned.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ANY_KEY_RE, type CreatedKey, createCliHarness } from '../support/cli.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

const harness = createCliHarness({ tempPrefix: 'keygate-rotate-expired-' });
let t: TestGateway;
before(async () => {
  t = await startTestGateway({ http: true });
});
after(async () => {
  await harness.cleanup();
  await t.close();
});

/** Waits (bounded) for a time to pass: an expiry of a second, set by the command under test. */
async function until(ms: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() <= ms) {
    assert.ok(Date.now() < deadline, 'the key expired in time');
    await new Promise((resolve) => setImmediate(resolve));
  }
}

test('the CLI refuses to rotate an expired key and says how to renew it', async () => {
  const dir = harness.newDataDir();
  const created = await harness.runCli([
    'keys',
    'create',
    '--name',
    'short',
    '--expires',
    '1s',
    '--json',
    '--data-dir',
    dir,
  ]);
  assert.equal(created.code, 0, created.stderr);
  const key = JSON.parse(created.stdout) as CreatedKey;
  await until(Date.parse(key.expires_at ?? ''));

  const rotated = await harness.runCli(['keys', 'rotate', key.id, '--data-dir', dir]);
  assert.equal(rotated.code, 1, rotated.stdout + rotated.stderr);
  assert.match(
    rotated.stderr,
    new RegExp(
      `^keygate: key ${key.id} expired at \\S+Z: a new secret for it would not work\\. Give it a new expiry first \\(\`keygate keys update ${key.id} --expires 90d\`\\), then rotate it; or create a new key\\n$`,
    ),
  );
  assert.doesNotMatch(rotated.stdout + rotated.stderr, ANY_KEY_RE, 'no secret is printed');

  // The way out works.
  const renewed = await harness.runCli(['keys', 'update', key.id, '--expires', '90d', '--data-dir', dir]);
  assert.equal(renewed.code, 0, renewed.stderr);
  const again = await harness.runCli(['keys', 'rotate', key.id, '--data-dir', dir]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, ANY_KEY_RE);
});

test('the management API answers 409 for the rotation of an expired key, without a secret', async () => {
  const admin = await t.createKey('operator', undefined, { scopes: ['admin'] });
  const expired = await t.createKey('short', 1);
  await until(Date.now() + 1);
  const res = await t.call(`/admin/v1/keys/${expired.id}/rotate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${admin.key}`, 'content-type': 'application/json' },
    body: '{}',
  });
  assert.equal(res.status, 409, res.text);
  const body = res.json() as { error: { code: string; message: string } };
  assert.equal(body.error.code, 'conflict');
  assert.match(
    body.error.message,
    /expired at \S+: a new secret for it would not work\. Give it a new expiry first/,
  );
  assert.doesNotMatch(res.text, ANY_KEY_RE);
});
