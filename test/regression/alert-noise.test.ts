/**
 * Issue 13, item 9: alert noise. A key created with `--expires 7d` heard "expires in 7 days" at
 * once (a reminder is for crossing a threshold, not for being made inside one); a key 3 minutes
 * from its expiry was said to expire "in 1 day"; the budget alert's count rose at every evaluation
 * for as long as an idle key was remembered; and a budget too small for the next request's
 * estimate refused every request without any alert. Real stores, injected clock.
 */
import assert from 'node:assert/strict';
import { before, beforeEach, test } from 'node:test';
import { pino } from 'pino';
import { AlertEngine } from '../../src/alerts/engine.ts';
import { createKey } from '../../src/keys/service.ts';
import type { Alert, KeyRecord, Store } from '../../src/store/types.ts';
import { describeStore, storesUnderTest } from '../support/stores.ts';
import { usageRecord } from '../support/usage-records.ts';

const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const THRESHOLDS = [14 * DAY, 3 * DAY]; // keys.expiryReminderDays by default

for (const s of await storesUnderTest()) {
  describeStore(s, 'alert noise', () => {
    let store: Store;
    let now: number;
    let engine: AlertEngine;
    let notified: Alert[];
    const pepper = Buffer.alloc(32, 9);
    before(async () => {
      store = await s.open();
    });
    beforeEach(() => {
      now = Math.floor(Date.now() / DAY) * DAY + 12 * HOUR; // mid-day
      notified = [];
      engine = new AlertEngine({
        store,
        logger: pino({ level: 'silent' }),
        clock: () => now,
        evaluateIntervalMs: 0,
      });
      engine.onAlert((a) => notified.push(a));
    });
    const make = async (name: string, madeAgo: number, expiresInMs?: number, restrictions = {}) =>
      (
        await createKey(
          { store, pepper, prefix: 'kg', now: now - madeAgo },
          { name, expiresInMs, ...restrictions },
        )
      ).record;
    /** The reminder sweep as the gateway runs it. */
    const sweep = async () => {
      for (const r of await store.recordExpiryReminders(now, THRESHOLDS)) await engine.onExpiryReminder(r);
    };
    const expiring = (key: KeyRecord) =>
      notified.filter((a) => a.kind === 'key_expiring' && a.keyId === key.id);

    test('a key made to expire in 7 days is not reminded at once; it is at 3 days, saying 3 days', async () => {
      const key = await make('seven days', 0, 7 * DAY);
      await sweep();
      assert.deepEqual(
        expiring(key).map((a) => a.title),
        [],
      );
      now += 4 * DAY + MINUTE; // it crosses the 3-day threshold
      await sweep();
      assert.deepEqual(
        expiring(key).map((a) => a.title),
        ['Key "seven days" expires in 3 days'],
      );
    });

    test('a key made long ago for a while: reminded at the threshold it crossed, in the right unit', async () => {
      const weeks = await make('weeks', 10 * DAY, 15 * DAY); // crossed 14 days a day ago
      const minutes = await make('minutes', 4 * DAY, 4 * DAY + 3 * MINUTE); // crossed 3 days a day ago
      const brand = await make('three minutes', 0, 3 * MINUTE); // made inside every threshold
      await sweep();
      assert.deepEqual(
        expiring(weeks).map((a) => a.title),
        ['Key "weeks" expires in 5 days'],
      );
      assert.deepEqual(
        expiring(minutes).map((a) => a.title),
        ['Key "minutes" expires in 3 minutes'],
      );
      assert.deepEqual(expiring(brand), []);
    });

    const usage = (key: KeyRecord, time: number, tokens: number, id: string) =>
      usageRecord({
        id,
        time,
        keyId: key.id,
        workspaceId: key.workspaceId,
        promptTokens: tokens,
        completionTokens: 0,
        totalTokens: tokens,
      });

    test('an idle key past a budget threshold: the alert is raised once, its count does not climb', async () => {
      const key = await make('idle', DAY, DAY + 20 * MINUTE, { budget: { day: 1000 } });
      await store.recordUsage([usage(key, now - MINUTE, 900, 'req_idle_1')]);
      engine.observe({ key, ip: '10.0.0.1', totalTokens: 900 });
      now += 21 * MINUTE; // the key expires; nothing uses it any more (it is remembered for an hour)
      for (let i = 0; i < 5; i++) {
        await engine.tick();
        now += MINUTE;
      }
      const alerts = await store.listAlerts({ keyId: key.id, kind: 'budget_threshold' });
      assert.equal(alerts.length, 1);
      assert.equal(alerts[0]?.occurrences, 1, 'raised once, not once per evaluation');
    });

    test('requests refused because the budget is too small for them raise the budget alert', async () => {
      const key = await make('small budget', DAY, undefined, { budget: { day: 100 } });
      for (let i = 0; i < 3; i++)
        engine.observe({ key, ip: '10.0.0.1', totalTokens: 0, failure: 'limit_key_budget_day' });
      await engine.tick();
      const alerts = await store.listAlerts({ keyId: key.id, kind: 'budget_threshold' });
      assert.equal(alerts.length, 1, 'nothing is used, yet every request is refused');
      assert.equal(alerts[0]?.severity, 'critical');
      assert.match(
        alerts[0]?.message ?? '',
        /3 requests were refused with 429 .* 100 of its daily budget of 100 tokens left/,
      );
      assert.match(alerts[0]?.message ?? '', new RegExp(`keygate keys update ${key.id} --budget`));
    });
  });
}
