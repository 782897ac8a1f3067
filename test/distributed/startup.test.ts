/**
 * Ten instances starting at the same moment on a fresh, empty database: every one starts, the
 * schema is migrated exactly once (under PostgreSQL's advisory lock), and they serve as one.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PG_MIGRATIONS } from '../../src/store/pg-migrations.ts';
import { chat, describeDistributed, readyz, useCluster } from '../support/cluster.ts';

await describeDistributed('ten instances starting at once', () => {
  const cluster = useCluster({ instances: 0, configure: (c) => (c.database.poolSize = 2) });

  test('all ten start on a fresh database, and the migrations are applied once', async () => {
    const c = cluster();
    const [{ n: tables }] = (await c.query<{ n: number }>(
      "SELECT COUNT(*)::int AS n FROM information_schema.tables WHERE table_schema = 'public'",
    )) as [{ n: number }];
    assert.equal(tables, 0, 'the database starts empty');

    const started = Date.now();
    const outcomes = await Promise.allSettled(Array.from({ length: 10 }, () => c.add()));
    const failures = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    assert.deepEqual(
      failures.map((f) => String(f.reason)),
      [],
      'every instance starts',
    );
    process.stdout.write(`# ten instances started in ${Date.now() - started} ms\n`);
    assert.equal(c.instances.length, 10);

    const rows = await c.query<{ version: number; name: string }>(
      'SELECT version, name FROM schema_migrations ORDER BY version',
    );
    assert.deepEqual(
      rows,
      PG_MIGRATIONS.map((m) => ({ version: m.version, name: m.name })),
      'one row per migration version, each once',
    );

    for (const instance of c.instances) {
      const ready = await readyz(instance);
      assert.equal(ready.status, 200, JSON.stringify(ready.body));
      assert.deepEqual(ready.body.checks, {
        store: 'ok',
        upstream: 'reachable',
        limits: 'redis',
        upstreamPool: 'ok',
        draining: false,
      });
    }
    const { key } = await c.createKey('after the start');
    for (const instance of c.instances) assert.equal((await chat(instance, key)).status, 200);
  });
});
