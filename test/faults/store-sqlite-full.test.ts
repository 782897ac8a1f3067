/**
 * Fault: the disk of the SQLite store fills up under a running gateway (a real full disk: a small
 * tmpfs; root only, skipped otherwise). The alert evaluation (here every 50 ms instead of every
 * minute) then fails at each attempt: on SQLite, that used to end the process at the first alert.
 * Asserted: the process lives (no unhandled rejection, the failure counted per task), requests
 * with a verified key keep being answered, /healthz and /readyz answer; the stop keeps the usage it
 * cannot write in a spill file, and the next start writes it: every request counted exactly once.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ALERT_RULES_TASK } from '../../src/alerts/engine.ts';
import { USAGE_FLUSH_TASK } from '../../src/usage/queue.ts';
import { fullDiskUnavailable, mountSmallDisk, type SmallDisk } from '../support/full-disk.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { eventually } from '../support/wait.ts';

const unavailable = fullDiskUnavailable();
if (unavailable) process.stdout.write(`# skipping the SQLite full-disk faults: ${unavailable}\n`);

describe('fault: the SQLite store on a full disk', { skip: unavailable ?? false }, () => {
  let disk: SmallDisk | undefined;
  const running: TestGateway[] = [];
  before(() => {
    disk = mountSmallDisk(4096);
  });
  after(async () => {
    for (const t of running) await t.close().catch(() => {});
    disk?.unmount();
  });
  const start = async (dataDir: string) => {
    const t = await startTestGateway({
      configure: (c) => {
        c.dataDir = dataDir;
        c.usage.maxQueued = 5000;
        c.auth.failuresPerMinute = 100_000;
      },
      start: { alertEvaluateIntervalMs: 50 },
    });
    running.push(t);
    return t;
  };
  const stop = async (t: TestGateway) => {
    running.splice(running.indexOf(t), 1);
    await t.close();
  };

  test('the process lives and answers, and no usage is lost', async (t) => {
    const dataDir = join(disk?.dir ?? '', 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const gw = await start(dataDir);
    const { id, key } = await gw.createKey('in use when the disk fills');
    const chat = () =>
      gw.call('/v1/chat/completions', { method: 'POST', headers: bearer(key), body: chatBody() });
    let sent = 0;
    for (; sent < 10; sent++) assert.equal((await chat()).status, 200);
    await gw.gateway.alerts.settle();

    disk?.fill();
    // A burst of failed authentications: the next evaluation raises an alert, which needs a write.
    for (let i = 0; i < 30; i++)
      assert.equal((await gw.call('/v1/models', { headers: bearer('kg_not_a_key') })).status, 401);
    const bg = gw.gateway.background;
    const statuses: Record<number, number> = {};
    // Requests go on while the evaluation fails again and again.
    await eventually(async () => {
      const res = await chat();
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      sent++;
      return (bg.failures.get(ALERT_RULES_TASK) ?? 0) >= 5 && sent >= 300;
    }, 'five failed alert evaluations on the full disk');
    assert.deepEqual(statuses, { 200: sent - 10 }, 'every request made with the verified key is answered');
    assert.equal(bg.state(ALERT_RULES_TASK).failing, true);
    assert.match(bg.state(ALERT_RULES_TASK).cause ?? '', /database or disk is full/);
    assert.equal(bg.failures.get('unhandled_rejection') ?? 0, 0, 'no rejection went unhandled');
    assert.equal((await gw.call('/healthz')).status, 200);
    const ready = await gw.call('/readyz');
    assert.ok([200, 503].includes(ready.status), ready.text);
    assert.equal(typeof (ready.json() as { checks: { store: string } }).checks.store, 'string');
    const queued = gw.gateway.background.state(USAGE_FLUSH_TASK).failing;

    await stop(gw);
    const spilled = gw.logLines.find((l) => l.includes('kept in a spill file'));
    const kept = spilled ? ((JSON.parse(spilled) as { records?: number }).records ?? 0) : 0;
    const failingLines = gw.logLines.filter((l) => l.includes(`${ALERT_RULES_TASK} failing`));
    assert.equal(failingLines.length, 1, 'the failure is logged once, not per attempt');
    assert.doesNotMatch(failingLines[0] ?? '', /"stack"/);

    disk?.unfill();
    const next = await start(dataDir);
    const [totals] = await next.gateway.store.usageTotals({ keyId: id });
    assert.equal(totals?.requests, sent, `${sent} requests sent, each counted once`);
    t.diagnostic(
      `full disk: ${sent} requests sent, all answered 200; ${bg.failures.get(ALERT_RULES_TASK)} failed alert ` +
        `evaluations, 0 exits; usage writes failing at the stop: ${queued}; ${kept} records kept in the spill ` +
        `file and written at the next start; ${totals?.requests} of ${sent} stored, 0 lost`,
    );
    await stop(next);
  });
});
