/**
 * Issue 13, item 6: on a full disk SQLite fails a write with SQLITE_FULL and rolls the
 * transaction back itself; the store's ROLLBACK then failed with "cannot rollback - no transaction
 * is active", and that error replaced "database or disk is full" in the logs and in the CLI. Now
 * the cause reaches the caller. A real full disk: a 2 MiB tmpfs (root only; skipped otherwise).
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createKey } from '../../src/keys/service.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import type { UsageRecord } from '../../src/store/types.ts';
import { baseEnv, createCliHarness, STACK_LINE } from '../support/cli.ts';
import { fullDiskUnavailable, mountSmallDisk, type SmallDisk } from '../support/full-disk.ts';
import { usageRecord } from '../support/usage-records.ts';

const unavailable = fullDiskUnavailable();
if (unavailable) process.stdout.write(`# skipping the full-disk tests: ${unavailable}\n`);

/** Usage records that take room (long ids and models), for key `keyId`. */
function bulkyRecords(keyId: string, workspaceId: string, from: number, count: number): UsageRecord[] {
  return Array.from({ length: count }, (_, i) =>
    usageRecord({ id: `req_${from + i}_${'x'.repeat(200)}`, keyId, workspaceId, model: 'm'.repeat(100) }),
  );
}

describe('SQLite on a full disk', { skip: unavailable ?? false }, () => {
  let disk: SmallDisk | undefined;
  const cli = createCliHarness({ tempPrefix: 'keygate-full-' });
  before(() => {
    disk = mountSmallDisk(2048);
  });
  after(async () => {
    await cli.cleanup();
    disk?.unmount();
  });

  test('the error is "database or disk is full", in the store and in the CLI', async () => {
    const dataDir = join(disk?.dir ?? '', 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const env = { ...baseEnv(), KEYGATE_DATA_DIR: dataDir };
    const first = await cli.runCli(['keys', 'create', '--name', 'before the disk filled'], env);
    assert.equal(first.code, 0, first.stderr);

    const store = new SqliteStore(join(dataDir, 'keygate.db'));
    const pepper = Buffer.alloc(32, 7);
    const { record } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'bulk' });
    let error: unknown;
    for (let at = 0; at < 100_000 && error === undefined; at += 64) {
      try {
        await store.recordUsage(bulkyRecords(record.id, record.workspaceId, at, 64));
      } catch (e) {
        error = e;
      }
    }
    assert.ok(error instanceof Error, 'the disk never filled');
    assert.match(error.message, /database or disk is full/);
    assert.doesNotMatch(error.message, /cannot rollback/);
    // Then one record at a time, until not even that fits in what SQLite's files have left.
    for (let at = 200_000; at < 300_000; at++) {
      try {
        await store.recordUsage(bulkyRecords(record.id, record.workspaceId, at, 1));
      } catch {
        break;
      }
    }
    await store.close();

    disk?.fill(); // what room SQLite's files left
    const full = await cli.runCli(['keys', 'create', '--name', 'on a full disk'], env);
    assert.notEqual(full.code, 0, full.stdout);
    assert.match(full.stderr, /database or disk is full/);
    assert.doesNotMatch(full.stderr, /cannot rollback/);
    assert.doesNotMatch(full.stderr, STACK_LINE);
  });
});
