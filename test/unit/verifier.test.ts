import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { KeyVerifier } from '../../src/auth/verifier.ts';
import { generateKey } from '../../src/keys/format.ts';
import { createKey } from '../../src/keys/service.ts';
import type { Store } from '../../src/store/types.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { describeStore, storesUnderTest } from '../support/stores.ts';

const pepper = Buffer.alloc(32, 7);
const STORES = await storesUnderTest();
/** The store of the suite running (one per store kind, in turn). */
let store: Store;
let lookups = 0;

/** The real store, counting key lookups. */
function counting(inner: Store): Store {
  return new Proxy(inner, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if (property === 'findKeyByHash' && typeof value === 'function') {
        return (hash: string, now: number) => {
          lookups++;
          return (value as Store['findKeyByHash']).call(target, hash, now);
        };
      }
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

function verifier(options: Partial<{ ttlMs: number }> = {}) {
  return new KeyVerifier({
    store: counting(store),
    pepper,
    prefix: 'kg',
    ttlMs: options.ttlMs ?? 60_000,
    maxEntries: 1000,
    pollMs: 0,
  });
}

for (const s of STORES) {
  describeStore(s, 'key verification', () => {
    before(async () => {
      store = await s.open();
    });

    test('a key whose checksum does not match is refused without touching the store', async () => {
      const v = verifier();
      lookups = 0;
      const key = generateKey();
      const broken = `${key.slice(0, -1)}${key.endsWith('A') ? 'B' : 'A'}`;
      for (const token of [broken, 'kg_short', 'not-a-key-at-all', `${key}x`]) {
        assert.deepEqual(await v.verify(token), { ok: false, reason: 'malformed' });
      }
      assert.equal(lookups, 0);
      v.close();
    });

    test('a valid key is found once, then answered from the cache synchronously', async () => {
      const v = verifier();
      await v.start();
      const { key, record } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'cached' });
      lookups = 0;
      const first = await v.verify(key);
      assert.ok(first.ok && first.key.id === record.id);
      const second = v.verify(key);
      assert.ok(!(second instanceof Promise), 'a cache hit must not need a promise');
      assert.ok(second.ok);
      assert.equal(lookups, 1);
      v.close();
    });

    test('unknown keys are cached negatively, and concurrent misses share one lookup', async () => {
      const v = verifier();
      await v.start();
      const unknown = generateKey();
      lookups = 0;
      const results = await Promise.all(Array.from({ length: 20 }, () => v.verify(unknown)));
      for (const r of results) assert.deepEqual(r, { ok: false, reason: 'unknown' });
      assert.deepEqual(await v.verify(unknown), { ok: false, reason: 'unknown' });
      assert.equal(lookups, 1);
      v.close();
    });

    test('a revoke seen in the change feed drops the cached key at once', async () => {
      const v = verifier();
      await v.start();
      const { key, record } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'to revoke' });
      assert.ok((await v.verify(key)).ok);
      await store.revokeKey(record.id, Date.now(), CLI_ACTOR);
      assert.ok((await v.verify(key)).ok, 'still cached until the feed is read');
      await v.syncChanges();
      const refused = await v.verify(key);
      assert.equal(refused.ok, false);
      assert.ok(
        !refused.ok && refused.reason === 'revoked' && refused.key?.id === record.id,
        'named for alerts',
      );
      v.close();
    });

    test('a key created after its hash was remembered as unknown becomes usable after the feed is read', async () => {
      const v = verifier();
      await v.start();
      // Create in the store, but make the verifier see it as unknown first by asking before the insert.
      const key = generateKey();
      assert.deepEqual(await v.verify(key), { ok: false, reason: 'unknown' });
      const other = await createKey({ store, pepper, prefix: 'kg' }, { name: 'other' });
      await v.syncChanges();
      assert.ok((await v.verify(other.key)).ok);
      v.close();
    });

    test('an expired key is refused by the clock, even from the cache', async () => {
      const v = verifier();
      await v.start();
      const { key } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'short', expiresInMs: 1000 });
      const now = Date.now();
      assert.ok((await v.verify(key, now)).ok);
      const expired = await v.verify(key, now + 1001);
      assert.ok(!expired.ok && expired.reason === 'expired');
      v.close();
    });

    test('verifyKnown: only secrets the cache knows are verified (the locked-out address path)', async () => {
      // Not 0: lru-cache reads a start time of 0 as "no TTL".
      let clock = 1_000_000;
      const v = new KeyVerifier({
        store: counting(store),
        pepper,
        prefix: 'kg',
        ttlMs: 1000,
        maxEntries: 100,
        pollMs: 0,
        ttlClock: { now: () => clock },
      });
      await v.start();
      const { key, record } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'known' });
      const unknown = generateKey();
      lookups = 0;
      // Never seen, remembered as unknown, malformed: no answer, no lookup.
      assert.equal(v.verifyKnown(key), undefined);
      assert.deepEqual(await v.verify(unknown), { ok: false, reason: 'unknown' });
      assert.equal(v.verifyKnown(unknown), undefined);
      assert.equal(v.verifyKnown('kg_short'), undefined);
      assert.equal(lookups, 1);
      // Verified once: known, answered synchronously from the cache.
      assert.ok((await v.verify(key)).ok);
      lookups = 0;
      const known = v.verifyKnown(key);
      assert.ok(known !== undefined && !(known instanceof Promise) && known.ok && known.key.id === record.id);
      // Judged as verify judges: past its expiry by the clock it is refused.
      const later = v.verifyKnown(key, Date.now() + 10 * 365 * 86_400_000);
      assert.ok(later !== undefined && !(later instanceof Promise) && later.ok, 'no expiry set');
      // Past the TTL the known secret is reloaded from the store, which sees a revoke made
      // elsewhere (the change feed not read): refused as revoked.
      await store.revokeKey(record.id, Date.now(), CLI_ACTOR);
      clock += 1001;
      const reloaded = v.verifyKnown(key);
      assert.ok(reloaded instanceof Promise, 'past its TTL the store is asked');
      const verdict = await reloaded;
      assert.ok(!verdict.ok && verdict.reason === 'revoked');
      assert.equal(lookups, 1);
      // A change learnt from the feed drops it: no longer known at all.
      await v.syncChanges();
      assert.equal(v.verifyKnown(key), undefined);
      v.close();
    });

    test('a key hashed under another pepper does not verify', async () => {
      const { key } = await createKey(
        { store, pepper: Buffer.alloc(32, 9), prefix: 'kg' },
        { name: 'other pepper' },
      );
      const v = verifier();
      assert.deepEqual(await v.verify(key), { ok: false, reason: 'unknown' });
      v.close();
    });

    test('while the store is unreachable, a cached key works for the stale allowance, then not', async () => {
      let down = false;
      const flaky = new Proxy(store, {
        get(target, property, receiver) {
          const value = Reflect.get(target, property, receiver) as unknown;
          if (property === 'findKeyByHash' && typeof value === 'function') {
            return (hash: string, now: number) =>
              down
                ? Promise.reject(new Error('connection refused'))
                : (value as Store['findKeyByHash']).call(target, hash, now);
          }
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        },
      });
      const v = new KeyVerifier({
        store: flaky,
        pepper,
        prefix: 'kg',
        ttlMs: 20,
        maxEntries: 100,
        pollMs: 0,
        staleIfErrorMs: 200,
      });
      const { key, record } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'cached' });
      const revoked = await createKey({ store, pepper, prefix: 'kg' }, { name: 'revoked elsewhere' });
      assert.ok((await v.verify(key)).ok);
      assert.ok((await v.verify(revoked.key)).ok);
      down = true;
      await new Promise((r) => setTimeout(r, 40));
      // Past the TTL, the store fails: the cached answer is still used...
      assert.ok((await v.verify(key)).ok);
      assert.equal(v.staleServed, 1);
      // ...but not for a key whose change was learnt meanwhile (e.g. a broadcast revoke)...
      v.invalidate([revoked.record.id]);
      await assert.rejects(async () => v.verify(revoked.key), /connection refused/);
      // ...nor for a key never seen...
      await assert.rejects(async () => v.verify(generateKey()), /connection refused/);
      // ...nor past the allowance.
      await new Promise((r) => setTimeout(r, 220));
      await assert.rejects(async () => v.verify(key), /connection refused/);
      down = false;
      assert.equal((await v.verify(key)).ok, true);
      assert.equal(record.id.startsWith('key_'), true);
      v.close();
    });
  });
}
