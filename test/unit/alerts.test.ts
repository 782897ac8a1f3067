import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { before, beforeEach, describe, test } from 'node:test';
import { AlertEngine } from '../../src/alerts/engine.ts';
import {
  crossedThreshold,
  detectSpike,
  mad,
  median,
  mergeSettings,
  networkOf,
} from '../../src/alerts/rules.ts';
import { createLogger } from '../../src/http/log.ts';
import { createKey } from '../../src/keys/service.ts';
import {
  type Alert,
  CLI_ACTOR,
  type KeyRecord,
  type Store,
  type UsageRecord,
} from '../../src/store/types.ts';
import { describeStore, storesUnderTest } from '../support/stores.ts';

const STORES = await storesUnderTest();

const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

describe('rules (pure)', () => {
  test('median and MAD', () => {
    assert.equal(median([]), 0);
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.equal(mad([1, 1, 1, 1]), 0);
    assert.ok(Math.abs(mad([1, 2, 3, 4, 100]) - 1.4826) < 1e-9, 'one outlier does not move it');
  });

  test("a spike is far above the key's own usual level and above the floor", () => {
    const week = Array(168).fill(120); // 10 per 5-minute window
    assert.equal(detectSpike(300, week, 5, 10, 50).spike, true);
    assert.equal(detectSpike(60, week, 5, 10, 50).spike, false, 'six times usual is not ten times');
    assert.equal(detectSpike(40, Array(168).fill(0), 5, 10, 50).spike, false, 'a new key under the floor');
    assert.equal(detectSpike(60, Array(168).fill(0), 5, 10, 50).spike, true, 'a new key over the floor');
    const bursty = Array.from({ length: 168 }, (_, i) => (i % 24 === 9 ? 2400 : 120));
    assert.equal(
      detectSpike(300, bursty, 5, 10, 50).spike,
      true,
      'a few busy hours do not raise the baseline',
    );
    assert.equal(detectSpike(0, week, 5, 10, 0).spike, false);
  });

  test('budget thresholds and networks', () => {
    assert.equal(crossedThreshold(499, 1000, [50, 80, 100]), undefined);
    assert.equal(crossedThreshold(500, 1000, [50, 80, 100]), 50);
    assert.equal(crossedThreshold(1200, 1000, [50, 80, 100]), 100);
    assert.equal(networkOf('203.0.113.77'), '203.0.113.0/24');
    assert.equal(networkOf('2001:db8:abcd:12::1'), '2001:db8:abcd::/48');
    assert.equal(networkOf('2001:db8::1'), '2001:db8:0::/48');
  });

  test('workspace overrides replace only known fields of the right type', () => {
    const merged = mergeSettings({
      usage_spike: { factor: 4, bogus: 1, minRequests: 'x' },
      new_network: { enabled: false },
    });
    assert.equal(merged.usage_spike.factor, 4);
    assert.equal(merged.usage_spike.minRequests, 100);
    assert.equal(merged.new_network.enabled, false);
    assert.ok(!('bogus' in merged.usage_spike));
  });
});

for (const s of STORES) {
  describeStore(s, 'engine (real store, injected clock)', () => {
    let store: Store;
    let now: number;
    let engine: AlertEngine;
    let notified: Alert[];
    const pepper = Buffer.alloc(32, 5);
    const logger = createLogger({
      level: 'silent',
      keyPrefix: 'kg',
      destination: new Writable({ write: (_c, _e, cb) => cb() }),
    });

    before(async () => {
      store = await s.open();
    });
    beforeEach(() => {
      // Mid-day, on a minute boundary, so windows are whole.
      now = Math.floor(Date.now() / DAY) * DAY + 12 * HOUR;
      notified = [];
      engine = new AlertEngine({ store, logger, clock: () => now, evaluateIntervalMs: 0 });
      engine.onAlert((a) => notified.push(a));
    });

    async function key(name: string, restrictions = {}): Promise<KeyRecord> {
      return (await createKey({ store, pepper, prefix: 'kg', now: now - 8 * DAY }, { name, ...restrictions }))
        .record;
    }

    let seq = 0;
    function usage(k: KeyRecord, time: number, tokens = 10): UsageRecord {
      return {
        id: `u_${seq++}`,
        time,
        keyId: k.id,
        workspaceId: k.workspaceId,
        model: 'm',
        endpoint: '/v1/chat/completions',
        status: 200,
        promptTokens: tokens,
        completionTokens: 0,
        totalTokens: tokens,
        latencyMs: 1,
        ttftMs: null,
        clientIp: '10.0.0.1',
      };
    }

    /** A week of steady traffic: `perHour` requests every hour, spread over the hour. */
    async function week(k: KeyRecord, perHour: number): Promise<void> {
      const records: UsageRecord[] = [];
      for (let hour = 7 * 24; hour >= 1; hour--) {
        for (let i = 0; i < perHour; i++)
          records.push(usage(k, now - hour * HOUR + Math.floor((i * HOUR) / perHour)));
      }
      await store.recordUsage(records);
    }

    async function lowFloors(): Promise<void> {
      await store.setRuleSettings(
        'ws_default',
        'usage_spike',
        { minRequests: 50, minTokens: 1_000_000 },
        CLI_ACTOR,
        now,
      );
    }

    test('a week of normal traffic, then a spike: an alert naming the key and what to do', async () => {
      await lowFloors();
      const k = await key('spiky');
      await week(k, 120);
      for (let i = 0; i < 300; i++) engine.observe({ key: k, ip: '10.0.0.1', totalTokens: 10 });
      await engine.tick();
      await engine.settle();
      const spikes = (await store.listAlerts({ keyId: k.id })).filter((a) => a.kind === 'usage_spike');
      assert.equal(spikes.length, 1);
      assert.match(spikes[0]?.title ?? '', /Usage spike on key "spiky"/);
      assert.match(
        spikes[0]?.message ?? '',
        new RegExp(`${k.id}.*300 requests.*keygate keys revoke ${k.id}`),
      );
      assert.deepEqual(
        notified.map((a) => a.kind),
        ['usage_spike'],
      );
      // Still spiking a minute later: the same alert, not a new one (cooldown).
      now += MINUTE;
      await engine.tick();
      assert.equal((await store.listAlerts({ keyId: k.id, kind: 'usage_spike' })).length, 1);
      assert.equal((await store.listAlerts({ keyId: k.id, kind: 'usage_spike' }))[0]?.occurrences, 2);
      assert.equal(notified.length, 1);
    });

    test('the same volume spread evenly over the week: no alert', async () => {
      await lowFloors();
      const k = await key('steady');
      await week(k, 122); // 120 an hour plus the 300 of the spike, spread over the week
      for (let i = 0; i < 10; i++) engine.observe({ key: k, ip: '10.0.0.1', totalTokens: 10 });
      await engine.tick();
      assert.equal((await store.listAlerts({ keyId: k.id, kind: 'usage_spike' })).length, 0);
    });

    test('a new key under the floor never pages anyone', async () => {
      const k = await key('brand new');
      for (let i = 0; i < 10; i++) engine.observe({ key: k, ip: '10.0.0.1', totalTokens: 10 });
      await engine.tick();
      assert.equal((await store.listAlerts({ keyId: k.id })).length, 0);
    });

    test('budget thresholds: 50, 80 and 100 % once each per period', async () => {
      const k = await key('budgeted', { budget: { day: 1000 } });
      await store.recordUsage([usage(k, now - HOUR, 850)]);
      engine.observe({ key: (await store.getKey(k.id)) as KeyRecord, ip: '10.0.0.1', totalTokens: 0 });
      await engine.tick();
      await engine.tick();
      let alerts = await store.listAlerts({ keyId: k.id, kind: 'budget_threshold' });
      assert.equal(alerts.length, 1, 'the highest crossed threshold, once');
      assert.match(alerts[0]?.title ?? '', /80% of its daily token budget/);
      assert.equal(alerts[0]?.severity, 'warning');
      await store.recordUsage([usage(k, now - MINUTE, 200)]);
      await engine.tick();
      alerts = await store.listAlerts({ keyId: k.id, kind: 'budget_threshold' });
      assert.equal(alerts.length, 2);
      const full = alerts.find((a) => a.details.threshold === 100);
      assert.equal(full?.severity, 'critical');
      assert.match(full?.message ?? '', /refused with 429/);
    });

    test('a workspace budget alert names the workspace', async () => {
      const ws = await store.createWorkspace({ id: 'ws_alerts', name: 'alerts', createdAt: now }, CLI_ACTOR);
      await store.updateWorkspace(ws.id, { budget: { month: 100 } }, CLI_ACTOR, now);
      const k = await key('ws member', { workspaceId: ws.id });
      await store.recordUsage([usage(k, now - HOUR, 60)]);
      engine.observe({ key: (await store.getKey(k.id)) as KeyRecord, ip: '10.0.0.1', totalTokens: 0 });
      await engine.tick();
      const [alert] = await store.listAlerts({ workspaceId: ws.id, kind: 'budget_threshold' });
      assert.match(alert?.title ?? '', /Workspace ws_alerts has used 50% of its monthly token budget/);
    });

    test('a key used from a new network: alert; the first network and its neighbours: none', async () => {
      const k = await key('office key');
      engine.observe({ key: k, ip: '10.0.0.1', totalTokens: 1 });
      await engine.settle();
      engine.observe({ key: k, ip: '10.0.0.9', totalTokens: 1 });
      await engine.settle();
      assert.equal((await store.listAlerts({ keyId: k.id })).length, 0);
      engine.observe({ key: k, ip: '203.0.113.5', totalTokens: 1 });
      await engine.settle();
      const [alert] = await store.listAlerts({ keyId: k.id, kind: 'new_network' });
      assert.match(alert?.message ?? '', /203\.0\.113\.5 \(network 203\.0\.113\.0\/24\)/);
      assert.ok(!JSON.stringify(alert).includes('kg_'), 'never a secret');
    });

    test('a burst of failed authentications from one address, and a revoked key still tried', async () => {
      for (let i = 0; i < 25; i++) engine.observeAuthFailure('198.51.100.7', undefined, 'unknown');
      engine.observeAuthFailure('198.51.100.8', undefined, 'unknown');
      await engine.tick();
      const bursts = await store.listAlerts({ kind: 'auth_failures' });
      assert.ok(bursts.some((a) => a.title === 'Burst of failed authentications from 198.51.100.7'));
      assert.ok(!bursts.some((a) => a.title.includes('198.51.100.8')));
      const k = await key('leaked');
      const revoked = (await store.revokeKey(k.id, now, CLI_ACTOR)) as KeyRecord;
      engine.observeAuthFailure('192.0.2.1', revoked, 'revoked');
      await engine.settle();
      const [dead] = await store.listAlerts({ keyId: k.id, kind: 'auth_failures' });
      assert.equal(dead?.severity, 'critical');
      assert.match(dead?.title ?? '', /Revoked key "leaked" is still being used/);
    });

    test('expiry reminders become alerts', async () => {
      const k = await key('expiring', { expiresInMs: 9 * DAY });
      await engine.onExpiryReminder({
        keyId: k.id,
        name: k.name,
        workspaceId: k.workspaceId,
        expiresAt: now + 3 * DAY,
        thresholdMs: 3 * DAY,
      });
      const [alert] = await store.listAlerts({ keyId: k.id, kind: 'key_expiring' });
      assert.match(alert?.title ?? '', /expires in 3 days/);
      assert.match(alert?.message ?? '', /keygate keys rotate/);
    });

    test('a rule switched off for a workspace stays quiet', async () => {
      await store.setRuleSettings('ws_default', 'new_network', { enabled: false }, CLI_ACTOR, now);
      try {
        const k = await key('quiet');
        engine.observe({ key: k, ip: '10.1.0.1', totalTokens: 1 });
        await engine.settle();
        engine.observe({ key: k, ip: '172.16.0.1', totalTokens: 1 });
        await engine.settle();
        assert.equal((await store.listAlerts({ keyId: k.id, kind: 'new_network' })).length, 0);
      } finally {
        await store.setRuleSettings('ws_default', 'new_network', { enabled: true }, CLI_ACTOR, now);
      }
    });
  });
}
