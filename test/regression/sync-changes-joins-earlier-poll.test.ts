/**
 * Regression (issue 13, item 14): `KeyVerifier.syncChanges()`, the hook tests and the CLI rely on
 * ("every change made before this call is applied when it resolves"), joined a change-feed read
 * already under way. That read may have started before the caller's change was written, so the
 * call resolved with the change unseen and a revoked key still verified. Now a call made during a
 * read waits for it and then reads again.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyVerifier } from '../../src/auth/verifier.ts';
import { createKey } from '../../src/keys/service.ts';
import type { Store } from '../../src/store/types.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { storesUnderTest } from '../support/stores.ts';

const pepper = Buffer.alloc(32, 7);
const [sqlite] = await storesUnderTest();

test('a revoke made while a change-feed read is under way is applied when syncChanges resolves', async (t) => {
  assert.ok(sqlite);
  const store = await sqlite.open();
  t.after(() => store.close());
  // Once armed, the next read is held until the test lets it answer (as a poll that left just
  // before the revoke was written, and answers after it).
  let hold: (() => void) | undefined;
  let armed = false;
  const held = new Proxy(store, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if (property === 'keyChanges' && typeof value === 'function') {
        return async (cursor: number) => {
          const answer = await (value as Store['keyChanges']).call(target, cursor);
          if (armed) {
            armed = false;
            await new Promise<void>((resolve) => (hold = resolve));
          }
          return answer;
        };
      }
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  const v = new KeyVerifier({ store: held, pepper, prefix: 'kg', ttlMs: 60_000, maxEntries: 100, pollMs: 0 });
  t.after(() => v.close());
  await v.start();
  const { key, record } = await createKey({ store, pepper, prefix: 'kg' }, { name: 'to revoke' });
  await v.syncChanges(); // the creation is seen
  assert.ok((await v.verify(key)).ok, 'cached');

  armed = true;
  const earlier = v.syncChanges(); // reads the feed before the revoke: held
  while (hold === undefined) await new Promise((resolve) => setImmediate(resolve));
  await store.revokeKey(record.id, Date.now(), CLI_ACTOR);
  const after = v.syncChanges(); // called after the revoke was written
  hold();
  await Promise.all([earlier, after]);
  const result = await v.verify(key);
  assert.equal(result.ok, false, 'the revoke made before syncChanges() was called is applied');
});
