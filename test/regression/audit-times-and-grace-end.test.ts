/**
 * Regression (issue 13, item 12):
 * - audit events mixed ISO times (`at`) with epoch milliseconds in their changes
 *   (`expires_at`, `revoked_at`, `previous_secret_valid_until`): every time in them is ISO 8601
 *   now, in `keygate audit --json` and the management API alike (stored events included: the
 *   store keeps milliseconds, the view converts);
 * - `keys show` did not say until when a rotated key's previous secret keeps working.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createCliHarness, type RotatedKey } from '../support/cli.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

const harness = createCliHarness({ tempPrefix: 'keygate-audit-iso-' });
let t: TestGateway;
before(async () => {
  t = await startTestGateway({ http: true });
});
after(async () => {
  await harness.cleanup();
  await t.close();
});

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

interface AuditView {
  action: string;
  at: string;
  changes: Record<string, { before?: unknown; after?: unknown }>;
}

/** Every time in the events' changes, as [action, field, value]; asserts there was at least one. */
function times(events: AuditView[]): [string, string, unknown][] {
  const found: [string, string, unknown][] = [];
  for (const event of events) {
    assert.match(event.at, ISO);
    for (const [field, change] of Object.entries(event.changes))
      if (/(_at|_until)$/.test(field))
        for (const side of ['before', 'after'] as const)
          if (side in change && change[side] !== null) found.push([event.action, field, change[side]]);
  }
  assert.ok(found.length >= 3, JSON.stringify(events));
  return found;
}

test('audit times are ISO 8601 in the CLI and the API; keys show says when the grace ends', async () => {
  const dir = t.dataDir;
  const cli = (args: string[]) => harness.runCli([...args, '--data-dir', dir]);
  const created = await cli(['keys', 'create', '--name', 'timed', '--expires', '30d', '--json']);
  assert.equal(created.code, 0, created.stderr);
  const { id } = JSON.parse(created.stdout) as { id: string };
  const rotate = await cli(['keys', 'rotate', id, '--grace', '2h', '--json']);
  assert.equal(rotate.code, 0, rotate.stderr);
  const rotated = JSON.parse(rotate.stdout) as RotatedKey;

  const show = await cli(['keys', 'show', id]);
  assert.equal(show.code, 0, show.stderr);
  const row = show.stdout.split('\n').find((line) => line.startsWith('previous_secret_valid_until'));
  assert.equal(
    row?.replace(/\s+/g, ' '),
    `previous_secret_valid_until ${rotated.previous_secret_valid_until}`,
  );

  assert.equal((await cli(['keys', 'revoke', id])).code, 0);
  const audit = await cli(['audit', '--key', id, '--json']);
  assert.equal(audit.code, 0, audit.stderr);
  const fromCli = times(JSON.parse(audit.stdout) as AuditView[]);
  for (const [action, field, value] of fromCli)
    assert.match(String(value), ISO, `${action} ${field}: ${value}`);
  assert.ok(
    fromCli.some(
      ([, field, value]) =>
        field === 'previous_secret_valid_until' && value === rotated.previous_secret_valid_until,
    ),
  );

  const admin = await t.createKey('operator', undefined, { scopes: ['admin'] });
  const res = await t.call(`/admin/v1/audit?target_id=${id}`, {
    headers: { authorization: `Bearer ${admin.key}` },
  });
  assert.equal(res.status, 200, res.text);
  const fromApi = times((res.json() as { data: AuditView[] }).data);
  assert.deepEqual(fromApi, fromCli);
});
