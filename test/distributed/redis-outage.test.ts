/**
 * Redis stopped in the middle of the test: four instances on a private redis-server (two with
 * `limits.onRedisFailure: local`, two with `deny`, `expectedInstances: 2`). While it is down the
 * local ones serve with each instance enforcing half of every limit and stay ready; the deny ones
 * refuse with 503 limiter_unavailable and report not ready. Redis restarted on the same port: every
 * instance goes back to the shared limits by itself, without a restart.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  api,
  chat,
  describeDistributed,
  errorOf,
  eventually,
  type Instance,
  readyz,
  sleep,
  statuses,
  useCluster,
} from '../support/cluster.ts';
import { RedisProcess, redisServerMissing } from '../support/redis.ts';

/** `count` requests with `key` at once on `instance`. */
function burst(instance: Instance, key: string, count: number) {
  return Promise.all(Array.from({ length: count }, () => chat(instance, key, { max_tokens: 5 })));
}

await describeDistributed(
  'Redis stopped and restarted under running instances',
  () => {
    // Hooks run in the order they are declared: the instances stop before redis-server does.
    const cluster = useCluster({
      instances: 0,
      configure: (c) => {
        c.limits.expectedInstances = 2;
      },
    });
    let redis: RedisProcess | undefined;
    before(async () => {
      redis = await RedisProcess.start();
      // Should this process die before `after` runs, redis-server goes with it (stop kills at once).
      process.once('exit', () => void redis?.stop());
    });
    after(async () => {
      await redis?.stop();
    });
    let local: Instance[] = [];
    let deny: Instance[] = [];
    before(async () => {
      const c = cluster();
      if (!redis) throw new Error('no redis-server');
      const url = redis.url;
      local = await c.addMany(2, {
        redisUrl: url,
        configure: (cfg) => (cfg.limits.onRedisFailure = 'local'),
      });
      deny = await c.addMany(2, { redisUrl: url, configure: (cfg) => (cfg.limits.onRedisFailure = 'deny') });
    });

    test('Redis up: one shared limit over the four instances', async () => {
      const c = cluster();
      for (const instance of c.instances) {
        const ready = await readyz(instance);
        assert.equal(ready.status, 200, JSON.stringify(ready.body));
        assert.equal(ready.body.checks.limits, 'redis');
      }
      const { key } = await c.createKey('rpm 10, before', { limits: { rpm: 10 } });
      const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => chat(c.instances[i % 4]!, key)));
      assert.deepEqual(statuses(replies), { 200: 10, 429: 30 });
    });

    test('Redis killed: local instances serve with half the limit each and stay ready; deny instances refuse with 503', async () => {
      const c = cluster();
      const limited = await c.createKey('rpm 10, during', { limits: { rpm: 10 } });
      const unlimited = await c.createKey('no limits, during');
      await redis?.stop();

      await eventually(async () => {
        const states = await Promise.all(c.instances.map(readyz));
        return states.every((s) => s.body.checks.limits !== 'redis');
      }, 'every instance to notice that Redis is gone');
      for (const instance of local) {
        const ready = await readyz(instance);
        assert.equal(ready.status, 200, JSON.stringify(ready.body));
        assert.equal(ready.body.status, 'degraded');
        assert.equal(ready.body.checks.limits, 'fallback_local');
      }
      for (const instance of deny) {
        const ready = await readyz(instance);
        assert.equal(ready.status, 503, JSON.stringify(ready.body));
        assert.equal(ready.body.status, 'not_ready');
        assert.equal(ready.body.checks.limits, 'fallback_deny');
      }

      // rpm 10 over expectedInstances 2: each local instance allows exactly 5 — 10 in all.
      for (const instance of local) {
        const replies = await burst(instance, limited.key, 20);
        assert.deepEqual(statuses(replies), { 200: 5, 429: 15 }, instance.url);
        for (const r of replies.filter((r) => r.status === 429)) {
          assert.equal(r.headers['x-ratelimit-limit-requests'], '5');
          assert.equal(errorOf(r).code, 'rate_limited');
          assert.ok(Number(r.headers['retry-after']) >= 1);
        }
      }
      for (const instance of local) assert.equal((await chat(instance, unlimited.key)).status, 200);

      // deny: every request is refused, limited or not, with a Retry-After.
      for (const instance of deny) {
        for (const key of [limited.key, unlimited.key]) {
          const res = await chat(instance, key);
          assert.equal(res.status, 503, res.text);
          const body = errorOf(res);
          assert.equal(body.code, 'limiter_unavailable');
          assert.equal(body.type, 'server_error');
          assert.ok(Number(res.headers['retry-after']) >= 1, `Retry-After: ${res.headers['retry-after']}`);
        }
      }
    });

    test('Redis down: a revocation through one instance still reaches every instance within 1 s (change-feed poll)', async () => {
      const c = cluster();
      const admin = await c.adminKey();
      const { id, key } = await c.createKey('revoked while Redis is down');
      for (const instance of local) assert.equal((await chat(instance, key)).status, 200);
      const since = Date.now();
      const revoked = await api(local[0]!, admin.key, 'POST', `/keys/${id}/revoke`);
      assert.equal(revoked.status, 200, revoked.text);
      const elapsed = await Promise.all(
        local.map(async (instance) => {
          for (;;) {
            const sent = Date.now();
            const res = await chat(instance, key);
            if (res.status === 401) return Date.now() - since;
            assert.equal(res.status, 200, res.text);
            if (Date.now() - since > 5000) throw new Error(`${instance.url} still accepts the key`);
            await sleep(Math.max(0, 20 - (Date.now() - sent)));
          }
        }),
      );
      process.stdout.write(`# revoke while Redis is down refused after: ${elapsed.join(', ')} ms\n`);
      for (const ms of elapsed) assert.ok(ms < 1000, `refused only after ${ms} ms`);
    });

    test('Redis restarted on the same port: every instance is back on the shared limits, without a restart', async () => {
      const c = cluster();
      await redis?.start();
      await eventually(
        async () => {
          const states = await Promise.all(c.instances.map(readyz));
          return states.every((s) => s.status === 200 && s.body.checks.limits === 'redis');
        },
        'every instance to use Redis again',
        10_000,
      );
      const { key } = await c.createKey('rpm 10, after', { limits: { rpm: 10 } });
      const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => chat(c.instances[i % 4]!, key)));
      assert.deepEqual(statuses(replies), { 200: 10, 429: 40 });
      const remaining = replies
        .filter((r) => r.status === 200)
        .map((r) => Number(r.headers['x-ratelimit-remaining-requests']))
        .sort((x, y) => x - y);
      assert.deepEqual(remaining, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'one bucket again');
      for (const instance of deny) assert.equal((await chat(instance, key)).status, 429);
    });
  },
  redisServerMissing,
);
