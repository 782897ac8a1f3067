/**
 * Fault: Redis killed (SIGKILL, no goodbye) and then frozen (SIGSTOP: connections open, commands
 * unanswered) under a running gateway, with a key that has a rate limit and a budget (both kept in
 * Redis). Asserted: the process lives (no unhandled rejection; the Redis probe counted as failing
 * and logged once per change of state), every request is answered, from the local fallback limits,
 * /readyz stays ready and says the limits fell back; after Redis is back the limits are shared again
 * by themselves, and the usage records stored are exactly the requests sent.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { REDIS_PROBE_TASK } from '../../src/limits/resilient.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { RedisProcess, redisServerMissing } from '../support/redis.ts';
import { eventually } from '../support/wait.ts';

const missing = redisServerMissing();
if (missing) process.stdout.write(`# skipping the Redis fault: ${missing}\n`);

describe('fault: Redis killed, then frozen', {
  skip: missing !== undefined && !process.env.CI ? missing : false,
}, () => {
  let redis: RedisProcess;
  let gw: TestGateway;
  before(async () => {
    redis = await RedisProcess.start();
    gw = await startTestGateway({
      configure: (c) => {
        c.redis.url = redis.url;
        c.redis.prefix = `keygate-fault-${process.pid}:`;
        c.redis.commandTimeoutMs = 200;
        c.usage.flushIntervalMs = 50;
      },
    });
  });
  after(async () => {
    await gw?.close();
    await redis?.stop();
  });

  test('requests are answered from local limits; usage is exact; the limits are shared again after', async (t) => {
    const { id, key } = await gw.createKey('through the Redis faults', undefined, {
      limits: { rpm: 100_000 },
      budget: { day: 100_000_000 },
    });
    await gw.gateway.verifier.syncChanges();
    const chat = () =>
      gw.call('/v1/chat/completions', { method: 'POST', headers: bearer(key), body: chatBody() });
    const limitsCheck = async () =>
      ((await gw.call('/readyz')).json() as { checks: { limits: string } }).checks.limits;
    const statuses: Record<number, number> = {};
    let sent = 0;
    const send = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const res = await chat();
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        sent++;
      }
    };
    await send(10);
    assert.equal(await limitsCheck(), 'redis');
    const bg = gw.gateway.background;

    await redis.stop(); // SIGKILL
    await send(50);
    await eventually(async () => (await limitsCheck()) !== 'redis', 'readyz to say the limits fell back');
    const ready = await gw.call('/readyz');
    assert.equal(ready.status, 200, `a local fallback keeps the instance ready: ${ready.text}`);

    await redis.start();
    await eventually(async () => (await limitsCheck()) === 'redis', 'the limits to be shared again', 30_000);
    redis.pause(); // SIGSTOP: the commands time out instead of failing fast
    await send(30);
    redis.resume();
    await eventually(async () => (await limitsCheck()) === 'redis', 'the limits to be shared again', 30_000);
    await send(10);

    assert.deepEqual(statuses, { 200: sent }, 'every request was answered');
    assert.equal(bg.failures.get('unhandled_rejection') ?? 0, 0, 'no rejection went unhandled');
    assert.equal(bg.state(REDIS_PROBE_TASK).failing, false, 'the probe is not failing');
    // Logged once per change of state: two outages, two fallbacks and two recoveries.
    const said = (text: string) => gw.logLines.filter((l) => l.includes(text)).length;
    assert.equal(said('Redis unreachable: limits fall back'), 2, gw.logLines.join('\n'));
    assert.equal(said('Redis reachable again'), 2, gw.logLines.join('\n'));
    await eventually(
      async () => ((await gw.gateway.store.usageTotals({ keyId: id }))[0]?.requests ?? 0) === sent,
      () => `${sent} usage records stored`,
    );
    t.diagnostic(
      `Redis killed, restarted, frozen, resumed: ${sent} requests sent, all answered 200; ` +
        `2 fallbacks and 2 recoveries logged, one line each; ${sent} of ${sent} records stored, 0 lost`,
    );
  });
});
