/**
 * The alert engine remembers which (key, network) pairs the store has recorded, so that the store
 * is asked once per pair; that memory is bounded (`maxKnownNetworks`) and forgets the oldest pair
 * first.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { AlertEngine } from '../../src/alerts/engine.ts';
import { createLogger } from '../../src/http/log.ts';
import type { KeyRecord, Store } from '../../src/store/types.ts';

function subject(maxKnownNetworks?: number) {
  const asked: string[] = [];
  // Only what observe() reaches for a pair the store has seen before.
  const store = {
    noteNetwork: async (keyId: string, network: string) => {
      asked.push(`${keyId} ${network}`);
      return 'seen';
    },
  } as unknown as Store;
  const logger = createLogger({
    level: 'silent',
    keyPrefix: 'kg',
    destination: new Writable({ write: (_c, _e, cb) => cb() }),
  });
  const engine = new AlertEngine({ store, logger, evaluateIntervalMs: 0, maxKnownNetworks });
  const key = { id: 'key_1', workspaceId: 'ws_default', name: 'k' } as KeyRecord;
  const observe = (ip: string) => engine.observe({ key, ip, totalTokens: 1 });
  return { engine, asked, observe };
}

test('each (key, network) pair is looked up in the store once while remembered', async () => {
  const { engine, asked, observe } = subject();
  for (let i = 0; i < 3; i++) observe('10.0.1.7');
  observe('10.0.1.8'); // the same /24
  observe('10.0.2.7');
  await engine.settle();
  assert.deepEqual(asked, ['key_1 10.0.1.0/24', 'key_1 10.0.2.0/24']);
  assert.equal(engine.knownNetworks, 2);
});

test('the remembered pairs stay within maxKnownNetworks, the oldest forgotten first', async () => {
  const { engine, asked, observe } = subject(3);
  for (let i = 1; i <= 5; i++) observe(`10.0.${i}.1`);
  await engine.settle();
  assert.equal(asked.length, 5);
  assert.equal(engine.knownNetworks, 3);
  // 10.0.5 and 10.0.3 are still remembered; 10.0.1 was forgotten and is looked up again.
  observe('10.0.5.1');
  observe('10.0.3.1');
  observe('10.0.1.1');
  await engine.settle();
  assert.deepEqual(asked.slice(5), ['key_1 10.0.1.0/24']);
  assert.equal(engine.knownNetworks, 3);
  // Many more pairs: still bounded.
  for (let i = 0; i < 1000; i++) observe(`10.${i >> 8}.${i & 255}.1`);
  await engine.settle();
  assert.equal(engine.knownNetworks, 3);
});
