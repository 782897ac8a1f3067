import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { hashKey, pepperKey } from '../../src/keys/hash.ts';
import { createKey, rotateKey } from '../../src/keys/service.ts';
import { MIGRATIONS } from '../../src/store/migrations.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import type { Store, UsageRecord } from '../../src/store/types.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { UsageQueue } from '../../src/usage/queue.ts';
import { tempDir } from '../support/gateway.ts';
import { describeStore, storesUnderTest } from '../support/stores.ts';

const pepper = Buffer.alloc(32, 3);
const STORES = await storesUnderTest();

function record(id: string, keyId: string, prompt: number, completion: number): UsageRecord {
  return {
    id,
    time: Date.now(),
    keyId,
    workspaceId: 'ws_default',
    model: 'm',
    endpoint: '/v1/chat/completions',
    status: 200,
    promptTokens: prompt,
    completionTokens: completion,
    totalTokens: prompt + completion,
    latencyMs: 1,
    ttftMs: null,
    clientIp: '127.0.0.1',
  };
}

test('several processes migrating one new SQLite database at once all succeed', () => {
  const dir = tempDir();
  const path = join(dir, 'race.db');
  const script = `import { SqliteStore } from ${JSON.stringify(new URL('../../src/store/sqlite.ts', import.meta.url).href)};
    const s = new SqliteStore(${JSON.stringify(path)}); console.log(await s.migrate()); await s.close();`;
  const children = Array.from({ length: 4 }, () =>
    spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 }),
  );
  for (const child of children) {
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), String(MIGRATIONS.at(-1)?.version));
  }
  rmSync(dir, { recursive: true, force: true });
});

test('SQLite writes a big usage batch in short transactions, giving the event loop back between them', async () => {
  const dir = tempDir();
  const store = new SqliteStore(join(dir, 'chunks.db'));
  try {
    await store.migrate();
    const { record: k } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'chunks' });
    const batch = Array.from({ length: 300 }, (_, i) => record(`chunk_${i}`, k.id, 1, 2));
    let ticks = 0;
    const tick = () => {
      ticks++;
      if (ticks < 1000) setImmediate(tick);
    };
    setImmediate(tick);
    await store.recordUsage(batch);
    const during = ticks;
    ticks = 1000; // stops the ticking
    // 300 records in transactions of 64: the loop turned between each two of the five.
    assert.ok(during >= 4, `the event loop turned ${during} times during the write`);
    const [totals] = await store.usageTotals({ keyId: k.id });
    assert.equal(totals?.requests, 300);
    assert.equal(totals?.totalTokens, 900);
    // Written again (a retry after a failure half-way): nothing counts twice.
    await store.recordUsage(batch);
    const [again] = await store.usageTotals({ keyId: k.id });
    assert.equal(again?.requests, 300);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const s of STORES) {
  describeStore(s, 'store and usage', () => {
    let store: Store;
    before(async () => {
      store = await s.open();
    });

    test('migrations are versioned and running them again changes nothing', async () => {
      assert.equal(await store.migrate(), MIGRATIONS.at(-1)?.version);
      assert.equal(await store.migrate(), MIGRATIONS.at(-1)?.version);
    });

    test('migration 6 keeps every key hash: old and rotated secrets open the same keys as before', async () => {
      // The schema as Keygate left it at version 5, with a key, a rotated key (two secrets, the
      // old one with an end) and a revoked key.
      const old = await s.open({ version: 5 });
      try {
        const deps = { store: old, pepper, prefix: 'kg', now: 1_000_000 };
        const plain = await createKey(deps, { name: 'plain' });
        const rotating = await createKey(deps, { name: 'rotating' });
        const rotated = await rotateKey(deps, rotating.record.id, 60_000, CLI_ACTOR);
        const revoked = await createKey(deps, { name: 'revoked' });
        await old.revokeKey(revoked.record.id, 1_000_001, CLI_ACTOR);
        const secrets = [plain.key, rotating.key, rotated.key, revoked.key];
        const before = await Promise.all(
          secrets.map((k) => old.findKeyByHash(hashKey(pepperKey(pepper), k), 1_000_002)),
        );
        assert.equal(await old.migrate(), MIGRATIONS.at(-1)?.version);
        const after = await Promise.all(
          secrets.map((k) => old.findKeyByHash(hashKey(pepperKey(pepper), k), 1_000_002)),
        );
        assert.deepEqual(after, before);
        assert.deepEqual(
          after.map((m) => [m?.key.name, m?.validUntil ?? null]),
          [
            ['plain', null],
            ['rotating', 1_060_000],
            ['rotating', null],
            ['revoked', null],
          ],
        );
        assert.equal(await old.findKeyByHash(hashKey(pepperKey(pepper), rotating.key), 1_060_001), undefined);
        if (s.name === 'sqlite') {
          const [table] = await s.query(
            old,
            "SELECT wr FROM pragma_table_list WHERE name = 'api_key_hashes'",
          );
          assert.equal(table?.wr, 1, 'api_key_hashes is a WITHOUT ROWID table');
        }
      } finally {
        await old.close();
      }
    });

    test('the database holds only the hash of a key, never the key', async () => {
      const { key, record: created } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'hashed' });
      const bytes = await s.dump(store);
      assert.ok(bytes.includes(created.id), 'the key record was written');
      assert.ok(!bytes.includes(key));
      assert.ok(!bytes.includes(key.slice(7, 30)), 'no long run of the secret part either');
    });

    test('revoking twice keeps the first revocation time and records one change', async () => {
      const { record: created } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'revoke twice' });
      const before = (await store.keyChanges(-1)).cursor;
      const first = await store.revokeKey(created.id, 1000, CLI_ACTOR);
      const second = await store.revokeKey(created.id, 2000, CLI_ACTOR);
      assert.equal(first?.revokedAt, 1000);
      assert.equal(second?.revokedAt, 1000);
      const changes = await store.keyChanges(before);
      assert.deepEqual(changes.keyIds, [created.id]);
    });

    test('usage records are idempotent by request id and totals add up per key', async () => {
      const { record: a } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'usage a' });
      await store.recordUsage([record('req_1', a.id, 3, 4), record('req_2', a.id, 5, 6)]);
      await store.recordUsage([record('req_2', a.id, 5, 6)]); // a retried batch
      const [totals] = await store.usageTotals({ keyId: a.id });
      assert.deepEqual(totals, {
        keyId: a.id,
        name: 'usage a',
        requests: 2,
        errors: 0,
        promptTokens: 8,
        completionTokens: 10,
        totalTokens: 18,
      });
      const touched = await store.getKey(a.id);
      assert.equal(touched?.lastUsedIp, '127.0.0.1');
    });

    test('the usage queue batches, keeps records when the store fails, and drains on close', async () => {
      const { record: k } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'queue' });
      let failing = true;
      let batches = 0;
      const flaky: Store = Object.create(store) as Store;
      flaky.recordUsage = async (records) => {
        if (failing) throw new Error('store down');
        batches++;
        await store.recordUsage(records);
      };
      const errors: unknown[] = [];
      const queue = new UsageQueue({
        store: flaky,
        flushIntervalMs: 60_000,
        batchSize: 10,
        maxQueued: 1000,
        onError: (e) => errors.push(e),
      });
      for (let i = 0; i < 25; i++) queue.push(record(`q_${i}`, k.id, 1, 1));
      await queue.flush();
      assert.ok(errors.length > 0);
      assert.equal(queue.depth, 25, 'nothing is lost while the store is down');
      failing = false;
      await queue.close();
      assert.equal(queue.depth, 0);
      assert.equal(batches, 3);
      const [totals] = await store.usageTotals({ keyId: k.id });
      assert.equal(totals?.requests, 25);
    });

    test('under a steady load the usage queue writes whole batches, not what trickled in during the last write', async () => {
      const { record: k } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'steady' });
      const sizes: number[] = [];
      const slow: Store = Object.create(store) as Store;
      slow.recordUsage = async (records) => {
        sizes.push(records.length);
        await sleep(15); // a store taking milliseconds per write, as PostgreSQL does
        await store.recordUsage(records);
      };
      const queue = new UsageQueue({
        store: slow,
        flushIntervalMs: 60_000,
        batchSize: 20,
        maxQueued: 10_000,
      });
      // One record a millisecond or so for ~250 ms: a write's worth of records arrives during each write.
      for (let i = 0; i < 250; i++) {
        queue.push(record(`steady_${i}`, k.id, 1, 1));
        await sleep(1);
      }
      await queue.close();
      assert.equal(queue.depth, 0);
      assert.equal(queue.written, 250);
      assert.deepEqual(
        sizes.slice(0, -1),
        new Array(sizes.length - 1).fill(20),
        `batch sizes: ${sizes.join(', ')}`,
      );
      assert.ok(sizes.at(-1)! <= 20);
      const [totals] = await store.usageTotals({ keyId: k.id });
      assert.equal(totals?.requests, 250);
    });

    test('flush() writes what is queued even while a batch is being written', async () => {
      const { record: k } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'flush during write' });
      const slow: Store = Object.create(store) as Store;
      slow.recordUsage = async (records) => {
        await sleep(10);
        await store.recordUsage(records);
      };
      const queue = new UsageQueue({ store: slow, flushIntervalMs: 60_000, batchSize: 5, maxQueued: 1000 });
      for (let i = 0; i < 5; i++) queue.push(record(`fdw_${i}`, k.id, 1, 1)); // a whole batch: its write starts
      for (let i = 5; i < 8; i++) queue.push(record(`fdw_${i}`, k.id, 1, 1)); // these arrive during it
      await queue.flush();
      assert.equal(queue.depth, 0);
      assert.equal(queue.written, 8);
      await queue.close();
    });

    test('the usage queue drops the oldest records past its bound and counts them', async () => {
      const drops: number[] = [];
      const down: Store = Object.create(store) as Store;
      down.recordUsage = async () => {
        throw new Error('down');
      };
      const queue = new UsageQueue({
        store: down,
        flushIntervalMs: 60_000,
        batchSize: 1000,
        maxQueued: 5,
        onDrop: (n) => drops.push(n),
      });
      for (let i = 0; i < 8; i++) queue.push(record(`d_${i}`, 'key_x', 1, 1));
      assert.equal(queue.depth, 5);
      assert.equal(queue.dropped, 3);
      assert.equal(
        drops.reduce((a, b) => a + b, 0),
        3,
      );
      await queue.flush();
    });

    test('expiries are recorded in the audit log once, by whichever process gets there first', async () => {
      const now = Date.now();
      const { record: soon } = await createKey(
        { store, pepper, prefix: 'kg', now: now - 2000 },
        { name: 'soon', expiresInMs: 1000 },
      );
      const { record: later } = await createKey(
        { store, pepper, prefix: 'kg' },
        { name: 'later', expiresInMs: 3_600_000 },
      );
      const second = await s.reopen(store);
      try {
        const [a, b] = await Promise.all([store.recordExpiries(now), second.recordExpiries(now)]);
        const recorded = [...a, ...b];
        assert.ok(recorded.includes(soon.id));
        assert.ok(!recorded.includes(later.id));
        assert.equal(recorded.filter((id) => id === soon.id).length, 1);
        const events = await store.listAudit({ targetId: soon.id, action: 'key.expire' });
        assert.equal(events.length, 1);
        assert.equal(events[0]?.actor.type, 'system');
        assert.equal(events[0]?.at, soon.expiresAt);
        assert.deepEqual(await store.recordExpiries(now), []);
      } finally {
        await second.close();
      }
    });

    test('expiry reminders go out once per threshold crossed, the most urgent one first, and again after an extension', async () => {
      const day = 86_400_000;
      const now = Date.now();
      // Made 20 days ago: they crossed their thresholds since (a key made inside one is not reminded at it).
      const made = now - 20 * day;
      const { record: inTen } = await createKey(
        { store, pepper, prefix: 'kg', now: made },
        { name: 'ten days', expiresInMs: 30 * day },
      );
      const { record: inTwo } = await createKey(
        { store, pepper, prefix: 'kg', now: made },
        { name: 'two days', expiresInMs: 22 * day },
      );
      const { record: far } = await createKey(
        { store, pepper, prefix: 'kg', now: made },
        { name: 'far', expiresInMs: 80 * day },
      );
      const { record: madeInside } = await createKey(
        { store, pepper, prefix: 'kg', now },
        { name: 'made for seven days', expiresInMs: 7 * day },
      );
      const thresholds = [14 * day, 3 * day];
      const first = await store.recordExpiryReminders(now, thresholds);
      const byKey = new Map(first.map((r) => [r.keyId, r.thresholdMs]));
      assert.equal(byKey.get(inTen.id), 14 * day);
      assert.equal(byKey.get(inTwo.id), 3 * day, 'only the most urgent reminder');
      assert.ok(!byKey.has(far.id));
      assert.ok(!byKey.has(madeInside.id), 'made inside 14 days: not reminded at once');
      const again = await store.recordExpiryReminders(now + 1000, thresholds);
      assert.ok(!again.some((r) => [inTen.id, inTwo.id].includes(r.keyId)), 'each reminder once');
      const mid = await store.recordExpiryReminders(now + 5 * day, thresholds);
      assert.deepEqual(
        mid.map((r) => [r.keyId, r.thresholdMs]),
        [[madeInside.id, 3 * day]],
        'the key made for seven days crossed 3 days',
      );
      // Eight days on, the ten-day key is inside three days: its second reminder.
      const later = await store.recordExpiryReminders(now + 8 * day, thresholds);
      assert.ok(later.some((r) => r.keyId === inTen.id && r.thresholdMs === 3 * day));
      // Extending the key starts its reminders over for the new expiry, from when it was extended.
      await store.updateKey(inTwo.id, { expiresAt: now + 20 * day }, CLI_ACTOR, now);
      const extended = await store.recordExpiryReminders(now + 7 * day, thresholds);
      assert.ok(extended.some((r) => r.keyId === inTwo.id && r.thresholdMs === 14 * day));
      const audit = await store.listAudit({ targetId: inTen.id, action: 'key.expiry_reminder' });
      assert.equal(audit.length, 2);
    });
  });
}
