/**
 * Keys across instances: a key created anywhere (an instance's management API, or the CLI on the
 * shared database) works on every instance, and a revocation made anywhere is refused by every
 * instance within a second — through the Redis broadcast when an instance revokes, through the
 * change-feed poll when the CLI does.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { INVALID_KEY_BODY } from '../../src/http/errors.ts';
import { generateKey } from '../../src/keys/format.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { baseEnv, createCliHarness } from '../support/cli.ts';
import {
  api,
  CHAT,
  chat,
  describeDistributed,
  type Instance,
  sleep,
  useCluster,
} from '../support/cluster.ts';
import { UPSTREAM_KEY } from '../support/gateway.ts';

/** How long a revocation may take to reach every instance. */
const REVOKE_BOUND_MS = 1000;

/**
 * Sends a request with `key` to `instance` every ~20 ms until it is refused (401); returns the ms
 * from `since` to that refusal. Every answer before it must be a success.
 */
async function refusedAfter(instance: Instance, key: string, since: number): Promise<number> {
  for (;;) {
    const sent = Date.now();
    const res = await chat(instance, key, { max_tokens: 1 });
    if (res.status === 401) {
      assert.equal(res.text, INVALID_KEY_BODY, 'the one body for every refused key');
      return Date.now() - since;
    }
    assert.equal(res.status, 200, res.text);
    if (Date.now() - since > 5000) throw new Error(`${instance.url} still accepts the key after 5 s`);
    await sleep(Math.max(0, 20 - (Date.now() - sent)));
  }
}

await describeDistributed('keys across instances', () => {
  const cluster = useCluster({ instances: 2 });
  const cli = createCliHarness({ tempPrefix: 'keygate-dist-cli-' });
  after(() => cli.cleanup());

  test('two instances, then three: a key made on one works on the others, and so does a key made by the CLI', async () => {
    const c = cluster();
    const [a, b] = c.instances as [Instance, Instance];
    const admin = await c.adminKey();
    const stubFrom = c.stub.requests.length;

    // Made through A's management API; B has never seen it and reads it from PostgreSQL.
    const made = await api(a, admin.key, 'POST', '/keys', { name: 'made on A', scopes: ['chat'] });
    assert.equal(made.status, 201, made.text);
    const onA = made.json() as { id: string; key: string; name: string };
    const first = await chat(b, onA.key);
    assert.equal(first.status, 200, first.text);
    assert.equal(
      (first.json() as { choices: { message: { content: string } }[] }).choices[0]?.message.content,
      `Echo: ${CHAT.content}`,
    );
    assert.equal((await chat(a, onA.key)).status, 200);
    const seenByB = await api(b, admin.key, 'GET', `/keys/${onA.id}`);
    assert.equal(seenByB.status, 200, seenByB.text);
    assert.equal((seenByB.json() as { name: string }).name, 'made on A');

    // A third instance joins later: the same key works there, and one made on it works on A and B.
    const third = await c.add();
    assert.equal(c.instances.length, 3);
    assert.equal((await chat(third, onA.key)).status, 200);
    const madeOnC = await api(third, admin.key, 'POST', '/keys', { name: 'made on C' });
    assert.equal(madeOnC.status, 201, madeOnC.text);
    const onC = madeOnC.json() as { id: string; key: string };
    for (const instance of [a, b, third]) assert.equal((await chat(instance, onC.key)).status, 200);

    // `keygate keys create` on the same database (DATABASE_URL + KEYGATE_SECRET), no gateway involved.
    const run = await cli.runCli(
      ['keys', 'create', '--name', 'made by the CLI', '--scopes', 'chat', '--json'],
      {
        ...baseEnv(),
        DATABASE_URL: c.databaseUrl,
        KEYGATE_SECRET: c.secret,
        KEYGATE_DATA_DIR: cli.newDataDir(),
      },
    );
    assert.equal(run.code, 0, run.stderr);
    const byCli = JSON.parse(run.stdout) as { id: string; key: string };
    for (const instance of [a, b, third]) {
      const res = await chat(instance, byCli.key);
      assert.equal(res.status, 200, `${instance.url}: ${res.text}`);
    }

    // A well-formed key that exists nowhere is refused everywhere, with the one 401 body.
    const stranger = generateKey('kg');
    for (const instance of [a, b, third]) {
      const res = await chat(instance, stranger);
      assert.equal(res.status, 401);
      assert.equal(res.text, INVALID_KEY_BODY);
    }

    // 1 + 1 + 1 + 3 + 3 completions reached the provider, each with the provider's key only.
    const sent = c.stub.requests.slice(stubFrom);
    assert.equal(sent.length, 9);
    for (const r of sent) assert.equal(r.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
  });

  test('revoked through instance A: refused (401) by B and C within 1 s', async () => {
    const c = cluster();
    if (c.instances.length < 3) await c.addMany(3 - c.instances.length);
    const [a, b, third] = c.instances as [Instance, Instance, Instance];
    const admin = await c.adminKey();
    const { id, key } = await c.createKey('to revoke through the API');
    // Every instance has verified the key and keeps it in its cache (TTL 60 s): only an
    // invalidation can make it refuse the key within the second.
    for (const instance of [a, b, third]) assert.equal((await chat(instance, key)).status, 200);

    const since = Date.now();
    const revoked = await api(a, admin.key, 'POST', `/keys/${id}/revoke`);
    assert.equal(revoked.status, 200, revoked.text);
    const [onA, onB, onC] = await Promise.all([
      refusedAfter(a, key, since),
      refusedAfter(b, key, since),
      refusedAfter(third, key, since),
    ]);
    process.stdout.write(`# revoke through A refused after: A ${onA} ms, B ${onB} ms, C ${onC} ms\n`);
    assert.ok(onB < REVOKE_BOUND_MS, `B refused the key only after ${onB} ms`);
    assert.ok(onC < REVOKE_BOUND_MS, `C refused the key only after ${onC} ms`);
    assert.ok(onA < REVOKE_BOUND_MS, `A refused the key only after ${onA} ms`);
  });

  test('revoked by the CLI on the database (no broadcast): refused by every instance within 1 s', async () => {
    const c = cluster();
    const { id, key } = await c.createKey('to revoke in the database');
    for (const instance of c.instances) assert.equal((await chat(instance, key)).status, 200);

    const store = await c.store();
    const since = Date.now();
    assert.ok(await store.revokeKey(id, Date.now(), CLI_ACTOR));
    const elapsed = await Promise.all(c.instances.map((i) => refusedAfter(i, key, since)));
    process.stdout.write(`# revoke in the database refused after: ${elapsed.join(', ')} ms\n`);
    for (const [n, ms] of elapsed.entries())
      assert.ok(ms < REVOKE_BOUND_MS, `instance ${n} refused the key only after ${ms} ms`);
  });
});
