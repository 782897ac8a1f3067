/**
 * Regression (issue 12, item 2): `POST /admin/v1/keys/{id}/rotate` checked management scopes only,
 * so a `keys:write` key restricted to models `mistral-small-*`, one IP, 5 requests a minute and a
 * 1 h expiry rotated an unrestricted sibling and was handed its new, unrestricted secret. Rotation
 * hands out a secret, so the target must lie within the caller's own restrictions: a wider
 * sibling is refused (403, no secret, the key unchanged); a key within them rotates as before.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createKey, type KeyRestrictions } from '../../src/keys/service.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { bearer, startTestGateway, type TestGateway } from '../support/gateway.ts';

/** Secrets are never shown in an assertion message (a failing run's output is a log). */
const SECRETS = /kg_[0-9A-Za-z]{38}/g;
const hidden = (text: string) => text.replace(SECRETS, '[secret]');

const WS = 'ws_rotate';
const HOUR = 3_600_000;
const KEY_SHAPED = /kg_[0-9A-Za-z]{38}/;

let t: TestGateway;
/** The restricted caller: keys:write, but only mistral-small-*, one IP, rpm 5, expiring in 1 h. */
let restricted: { id: string; key: string };

async function mint(name: string, restrictions: KeyRestrictions, expiresInMs?: number) {
  const created = await createKey(
    { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix },
    { name, workspaceId: WS, expiresInMs, ...restrictions },
  );
  return { id: created.record.id, key: created.key };
}

async function rotate(callerKey: string, id: string) {
  const res = await t.call(`/admin/v1/keys/${id}/rotate`, {
    method: 'POST',
    headers: bearer(callerKey),
    body: JSON.stringify({ grace: 0 }),
  });
  return {
    status: res.status,
    raw: res.text,
    text: hidden(res.text),
    json: res.json() as Record<string, unknown>,
  };
}

/** A /v1 call that needs nothing but the key (scope `models`). */
async function listModels(key: string) {
  return (await t.call('/v1/models', { headers: bearer(key) })).status;
}

before(async () => {
  t = await startTestGateway();
  await t.gateway.store.createWorkspace({ id: WS, name: 'Rotate', createdAt: Date.now() }, CLI_ACTOR);
  // The test client is 127.0.0.1: the caller's one IP.
  restricted = await mint(
    'restricted rotator',
    {
      scopes: ['chat', 'models', 'keys:read', 'keys:write'],
      models: ['mistral-small-*'],
      allowedIps: ['127.0.0.1/32'],
      limits: { rpm: 5 },
    },
    HOUR,
  );
});
after(async () => {
  await t.close();
});

test('a restricted keys:write key cannot rotate an unrestricted sibling: 403, and no new secret', async () => {
  const sibling = await mint('unrestricted sibling', {});
  const res = await rotate(restricted.key, sibling.id);
  assert.equal(res.status, 403, res.text);
  assert.equal(res.json.code, 'forbidden', res.text);
  assert.match(String(res.json.message), new RegExp(`cannot rotate key ${sibling.id}`));
  // Each restriction the sibling escapes is named.
  for (const part of [/models must stay within mistral-small-\*/, /allowed_ips/, /rpm/, /expire by/]) {
    assert.match(String(res.json.message), part);
  }
  assert.equal(res.json.key, undefined);
  assert.doesNotMatch(res.raw, KEY_SHAPED);
  // Nothing changed: the old secret still works, the key was not rotated, nothing was audited.
  assert.equal(await listModels(sibling.key), 200);
  assert.equal((await t.gateway.store.getKey(sibling.id))?.rotatedAt, null);
  const audit = await t.gateway.store.listAudit({ targetId: sibling.id, action: 'key.rotate' });
  assert.deepEqual(audit, []);
});

test('each restriction alone is enough to refuse rotating a sibling that lacks it', async () => {
  const within: KeyRestrictions = {
    scopes: ['chat', 'models'],
    models: ['mistral-small-latest'],
    allowedIps: ['127.0.0.1/32'],
    limits: { rpm: 5 },
  };
  const cases: [string, KeyRestrictions, number | undefined][] = [
    ['every model', { ...within, models: [] }, HOUR / 2],
    ['another model', { ...within, models: ['mistral-large-latest'] }, HOUR / 2],
    ['any address', { ...within, allowedIps: [] }, HOUR / 2],
    ['a wider range', { ...within, allowedIps: ['127.0.0.0/8'] }, HOUR / 2],
    ['no rate limit', { ...within, limits: { rpm: null } }, HOUR / 2],
    ['a higher rate limit', { ...within, limits: { rpm: 50 } }, HOUR / 2],
    ['no expiry', within, undefined],
    ['a later expiry', within, 2 * HOUR],
    ['an inference scope the caller lacks', { ...within, scopes: ['chat', 'embeddings'] }, HOUR / 2],
  ];
  for (const [what, restrictions, expiresInMs] of cases) {
    const sibling = await mint(`sibling with ${what}`, restrictions, expiresInMs);
    const res = await rotate(restricted.key, sibling.id);
    assert.equal(res.status, 403, `${what}: ${res.text}`);
    assert.equal(res.json.key, undefined, what);
    assert.equal((await t.gateway.store.getKey(sibling.id))?.rotatedAt, null, what);
  }
});

test('a key within its restrictions rotates: the new secret works, the old one stops', async () => {
  const sibling = await mint(
    'narrow sibling',
    {
      scopes: ['chat', 'models'],
      models: ['mistral-small-latest'],
      allowedIps: ['127.0.0.1/32'],
      limits: { rpm: 3 },
    },
    HOUR / 2,
  );
  const res = await rotate(restricted.key, sibling.id);
  assert.equal(res.status, 200, res.text);
  assert.match(String(res.json.key), KEY_SHAPED);
  await t.gateway.verifier.syncChanges();
  assert.equal(await listModels(String(res.json.key)), 200);
  assert.equal(await listModels(sibling.key), 401);
});
