/**
 * Issue 13, item 3: a graceful stop that could not write the queued usage records (a full disk)
 * dropped them and exited 0 (2,360 records lost in 33 ms). Now they are kept in a spill file of
 * the data directory, fsynced, and written to the store at the next start, exactly once (a third
 * start finds nothing more to write). A real full disk: a tmpfs (root only; skipped otherwise).
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fullDiskUnavailable, mountSmallDisk, type SmallDisk } from '../support/full-disk.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';

const unavailable = fullDiskUnavailable();
if (unavailable) process.stdout.write(`# skipping the full-disk stop test: ${unavailable}\n`);

describe('a graceful stop on a full disk', { skip: unavailable ?? false }, () => {
  let disk: SmallDisk | undefined;
  const started: TestGateway[] = [];
  before(() => {
    disk = mountSmallDisk(4096);
  });
  after(async () => {
    for (const t of started) await t.close().catch(() => {});
    disk?.unmount();
  });

  const start = async (dataDir: string) => {
    const t = await startTestGateway({
      configure: (c) => {
        c.dataDir = dataDir;
        c.usage.maxQueued = 5000;
        c.usage.flushIntervalMs = 20;
      },
    });
    started.push(t);
    return t;
  };
  const stop = async (t: TestGateway) => {
    started.splice(started.indexOf(t), 1);
    await t.close();
  };

  test('keeps the usage it cannot write in a spill file and writes it at the next start, once', async (t) => {
    const dataDir = join(disk?.dir ?? '', 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const first = await start(dataDir);
    const { id, key } = await first.createKey('metered');
    const send = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const res = await first.call('/v1/chat/completions', {
          method: 'POST',
          headers: bearer(key),
          body: chatBody(),
        });
        assert.equal(res.status, 200, res.text);
      }
    };
    await send(20);
    await first.gateway.alerts.settle();
    disk?.fill();
    // Enough that what SQLite's files had left cannot hold them all.
    await send(400);
    await stop(first);
    const spilled = first.logLines.filter((l) => l.includes('kept in a spill file'));
    assert.equal(spilled.length, 1, first.logLines.slice(-5).join('\n'));
    const kept = (JSON.parse(spilled[0] ?? '{}') as { records?: number }).records ?? 0;
    assert.ok(kept > 0);
    t.diagnostic(`420 requests, ${kept} of their records kept in the spill file at the stop`);
    assert.ok(
      readdirSync(dataDir).some((f) => f.startsWith('usage-spill-') && f.endsWith('.jsonl')),
      readdirSync(dataDir).join(' '),
    );

    disk?.unfill();
    const second = await start(dataDir);
    const [totals] = await second.gateway.store.usageTotals({ keyId: id });
    assert.equal(totals?.requests, 420, `every request is counted once (${kept} came from the spill file)`);
    assert.deepEqual(
      readdirSync(dataDir).filter((f) => f.startsWith('usage-spill-')),
      [],
      'the spill file is gone once written',
    );
    await stop(second); // (log lines are written out by then)
    assert.ok(
      second.logLines.some((l) => l.includes('kept by the previous stop written to the store')),
      second.logLines.join('\n'),
    );

    const third = await start(dataDir);
    const [again] = await third.gateway.store.usageTotals({ keyId: id });
    assert.equal(again?.requests, 420, 'nothing is written twice');
    await stop(third);
  });
});
