/**
 * PostgreSQL cut off from running instances: their DATABASE_URL points at a TCP proxy in front of
 * 127.0.0.1:5432 that the test cuts (every connection destroyed, nothing listening) and restores
 * (listening on the same port again). While it is cut, keys verified before keep working past
 * their cache TTL (`auth.staleIfErrorMs`), what needs the database fails with an error rather than
 * a crash or a hang, and usage records wait in memory; once it is back, the pg pool reconnects by
 * itself and the queued usage is written.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PostgresStore } from '../../src/store/postgres.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import {
  api,
  Cluster,
  chat,
  describeDistributed,
  errorOf,
  eventually,
  type HttpReply,
  type Instance,
  readyz,
  sleep,
  within,
} from '../support/cluster.ts';
import { TcpProxy } from '../support/tcp-proxy.ts';

const CACHE_TTL_MS = 500;

interface UsageRow {
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** The value of a metric without labels in a Prometheus text exposition. */
function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  if (line === undefined) throw new Error(`no metric ${name}`);
  return Number(line.slice(name.length + 1));
}

/**
 * Makes `instance` verify a key by `call` until its cache holds it: a second call right after
 * the first (within the TTL) is answered from the cache.
 */
async function cached(instance: Instance, call: () => Promise<void>): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    await call();
    const hits = instance.gateway.verifier.hits;
    await call();
    if (instance.gateway.verifier.hits > hits) return;
    await sleep(100); // lets the usage queue flush (one instance here keeps two records only)
  }
  throw new Error(`${instance.url} does not keep the key in its cache`);
}

await describeDistributed('PostgreSQL cut off under running instances', () => {
  let proxy: TcpProxy | undefined;
  let cluster: Cluster | undefined;
  before(async () => {
    proxy = await TcpProxy.start('127.0.0.1', 5432);
    const port = proxy.port;
    cluster = await Cluster.start({
      instances: 2,
      // The instances reach the database only through the proxy; the test's own SQL goes direct.
      configure: (c) => {
        c.database.url = c.database.url?.replace(/:5432\//, `:${port}/`);
        c.auth.cacheTtlMs = CACHE_TTL_MS;
        c.usage.flushIntervalMs = 50;
      },
    });
    // A third instance whose usage queue holds two records only.
    await cluster.add({ configure: (c) => (c.usage.maxQueued = 2) });
    for (const instance of cluster.instances)
      assert.match(instance.config.database.url ?? '', new RegExp(`:${port}/`));
  });
  after(async () => {
    await proxy?.restore();
    await cluster?.close();
    await proxy?.close();
  });
  const c = () => {
    if (!cluster || !proxy) throw new Error('not started');
    return { cluster, proxy };
  };

  test('cut: verified keys keep working, key creation fails cleanly, usage waits in memory; restored: it is all written', async () => {
    const { cluster, proxy } = c();
    const [a, b, small] = cluster.instances as [Instance, Instance, Instance];
    const admin = await cluster.adminKey();
    const made = await api(a, admin.key, 'POST', '/keys', { name: 'verified before the cut' });
    assert.equal(made.status, 201, made.text);
    const verified = made.json() as { id: string; key: string };
    const bounded = await cluster.createKey('used on the instance with the small queue');
    const neverUsed = await cluster.createKey('never verified');

    /** The gateway's request id of every success, per key (the stub saw the same ids). */
    const ids = new Map<string, string[]>([
      [verified.id, []],
      [bounded.id, []],
    ]);
    const ok = async (instance: Instance, key: { id: string; key: string }) => {
      const res = await chat(instance, key.key);
      assert.equal(res.status, 200, `${instance.url}: ${res.text}`);
      ids.get(key.id)?.push(String(res.headers['x-request-id']));
    };
    const recorded = async (keyId: string) =>
      (await cluster.query<{ id: string }>('SELECT id FROM usage_records WHERE key_id = $1', [keyId])).map(
        (r) => r.id,
      );

    // Verified and cached by every instance, the admin key too. (A verification that overlaps a
    // key change anywhere is not cached, so the changes above must have reached them first.)
    await sleep(300);
    for (const instance of [a, b]) {
      await cached(instance, () => ok(instance, verified));
      await cached(instance, async () =>
        assert.equal((await api(instance, admin.key, 'GET', '/keys?limit=1')).status, 200),
      );
    }
    await cached(small, () => ok(small, bounded));
    await cached(small, async () =>
      assert.equal((await api(small, admin.key, 'GET', '/keys?limit=1')).status, 200),
    );
    // Written before the cut, so that the cut interrupts nothing in flight.
    const before = new Map([...ids].map(([id, list]) => [id, list.length]));
    await eventually(async () => {
      for (const [keyId, list] of ids) if ((await recorded(keyId)).length !== list.length) return false;
      return true;
    }, 'the first usage records to be written');

    await proxy.cut();
    const cutAt = Date.now();
    await sleep(2 * CACHE_TTL_MS); // every cached entry is now past its TTL

    for (const instance of cluster.instances) {
      // Degraded but still ready: cached keys are served, and every instance shares the store.
      const ready = await readyz(instance);
      assert.equal(ready.status, 200, JSON.stringify(ready.body));
      assert.equal(ready.body.status, 'degraded');
      assert.equal(ready.body.checks.store, 'unreachable');
    }

    // A key verified before: served from the cache past its TTL (stale-if-error), on both instances.
    const staleBefore = [a.gateway.verifier.staleServed, b.gateway.verifier.staleServed];
    for (const instance of [a, b]) for (let i = 0; i < 3; i++) await ok(instance, verified);
    assert.ok(a.gateway.verifier.staleServed > staleBefore[0]!, 'A answered from an expired cache entry');
    assert.ok(b.gateway.verifier.staleServed > staleBefore[1]!, 'B answered from an expired cache entry');
    for (let i = 0; i < 4; i++) await ok(small, bounded);
    // A key never verified cannot be checked: an error of the gateway, not "invalid key".
    const unknown = await within(chat(a, neverUsed.key), 15_000, 'a never-verified key to be answered');
    const unknownError = errorOf(unknown);
    process.stdout.write(`# never-verified key while cut: ${unknown.status} ${unknownError.code}\n`);
    assert.ok(unknown.status >= 500, `a key that cannot be verified got ${unknown.status}: ${unknown.text}`);
    assert.equal(unknownError.type, 'server_error');

    // Creating a key through the management API: a prompt, clear error, not a crash or a hang.
    const started = Date.now();
    const refused: HttpReply = await within(
      api(a, admin.key, 'POST', '/keys', { name: 'made while cut' }),
      15_000,
      'POST /admin/v1/keys to be answered while PostgreSQL is cut',
    );
    const took = Date.now() - started;
    const refusal = errorOf(refused);
    process.stdout.write(
      `# POST /admin/v1/keys while cut: ${refused.status} ${refusal.code} in ${took} ms: ${refusal.message}\n`,
    );
    assert.ok(refused.status >= 500, `status ${refused.status}: ${refused.text}`);
    assert.equal(refusal.type, 'server_error');
    assert.ok(took < 5000, `the refusal took ${took} ms`);
    assert.doesNotMatch(
      refused.text,
      /ECONNREFUSED|postgres|127\.0\.0\.1|password/i,
      'no internals in the body',
    );

    // Usage records wait in memory: three on A and on B; on the small queue the two newest of
    // four, the two oldest dropped, counted and logged.
    const queues = async () =>
      Promise.all(
        cluster.instances.map(async (instance) => {
          const res = await instance.call('/metrics', { headers: { authorization: `Bearer ${admin.key}` } });
          assert.equal(res.status, 200, res.text);
          return [
            metric(res.text, 'keygate_usage_queue_depth'),
            metric(res.text, 'keygate_usage_records_dropped_total'),
          ];
        }),
      );
    assert.deepEqual(await queues(), [
      [3, 0],
      [3, 0],
      [2, 2],
    ]);
    assert.ok(
      small.logLines.some((line) => line.includes('usage queue full: records dropped')),
      'the drop is logged',
    );
    const cutFor = Date.now() - cutAt;

    await proxy.restore();
    // The pools reconnect by themselves: ready again, and every queued record written.
    await eventually(async () => {
      const states = await Promise.all(cluster.instances.map(readyz));
      return states.every((s) => s.status === 200 && s.body.checks.store === 'ok');
    }, 'every instance to be ready again');

    // Every queued record is written: the report equals what the stub served for those requests.
    const kept = new Map([
      [verified.id, ids.get(verified.id) ?? []],
      // The small queue kept the two newest of the four made during the cut.
      [
        bounded.id,
        [
          ...(ids.get(bounded.id) ?? []).slice(0, before.get(bounded.id)),
          ...(ids.get(bounded.id) ?? []).slice(-2),
        ],
      ],
    ]);
    assert.equal(kept.get(verified.id)?.length, (before.get(verified.id) ?? 0) + 6);
    for (const [keyId, list] of kept) {
      const wanted = new Set(list);
      const served = cluster.stub.served.filter((s) => s.requestId !== undefined && wanted.has(s.requestId));
      assert.equal(served.length, list.length, 'the stub served each of them');
      const expected = {
        requests: served.length,
        promptTokens: served.reduce((n, s) => n + s.promptTokens, 0),
        completionTokens: served.reduce((n, s) => n + s.completionTokens, 0),
        totalTokens: served.reduce((n, s) => n + s.totalTokens, 0),
      };
      const totals = async () => {
        const res = await api(b, admin.key, 'GET', `/usage?key_id=${keyId}`);
        assert.equal(res.status, 200, res.text);
        const row = (res.json() as { data: UsageRow[] }).data[0];
        return {
          requests: row?.requests ?? 0,
          promptTokens: row?.prompt_tokens ?? 0,
          completionTokens: row?.completion_tokens ?? 0,
          totalTokens: row?.total_tokens ?? 0,
        };
      };
      await eventually(
        async () => (await totals()).requests >= expected.requests,
        'the queued usage to be written',
      );
      assert.deepEqual(await totals(), expected);
      assert.deepEqual((await recorded(keyId)).sort(), [...list].sort(), 'exactly these records');
    }
    assert.deepEqual(await queues(), [
      [0, 0],
      [0, 0],
      [0, 2],
    ]);

    // Writes work again through the reconnected pool, and the new key works on the other instance.
    const again = await api(a, admin.key, 'POST', '/keys', { name: 'made after the restore' });
    assert.equal(again.status, 201, again.text);
    assert.equal((await chat(b, (again.json() as { key: string }).key)).status, 200);
    process.stdout.write(`# PostgreSQL was cut for ${cutFor} ms\n`);
  });

  test('a connection lost in the middle of a transaction is an error for the caller, not an uncaught exception', async () => {
    const { cluster, proxy } = c();
    await proxy.restore();
    // The gateway's store class on a one-connection pool through the proxy, so the transaction
    // below is certain to run on the connection that the cut drops.
    const url = cluster.databaseUrl.replace(/:5432\//, `:${proxy.port}/`);
    const store = new PostgresStore({ url, poolSize: 1 });
    const victim = await cluster.createKey('revoked while the connection drops');
    const uncaught: unknown[] = [];
    process.setUncaughtExceptionCaptureCallback((error) => uncaught.push(error));
    try {
      await store.ping(); // the pool's one connection, idle
      proxy.stall();
      const revoking = store.revokeKey(victim.id, Date.now(), CLI_ACTOR);
      const outcome = revoking.then(
        () => 'resolved',
        (error: unknown) => `rejected: ${(error as Error).message}`,
      );
      await sleep(100); // BEGIN is on the wire, held by the proxy
      await proxy.cut();
      assert.match(await within(outcome, 5000, 'the transaction to fail'), /^rejected: /);
      await sleep(100);
      await proxy.restore();
      assert.deepEqual(
        uncaught.map((e) => (e as Error).message),
        [],
        'an uncaught exception here ends a gateway process',
      );
    } finally {
      process.setUncaughtExceptionCaptureCallback(null);
      await proxy.restore();
      await store.close().catch(() => {});
    }
  });
});
