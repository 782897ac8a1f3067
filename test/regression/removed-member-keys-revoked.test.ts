/**
 * Regression (issue 12, item 18, members): removing a member from a workspace left the inference
 * keys they owned there working. Removal now revokes, in the same transaction, every key of that
 * workspace that belongs to them (made by them or by their keys): a request with one answers 401
 * right after the removal, each revocation is audited with the reason `member.remove`, and their
 * keys in other workspaces, and other people's keys, are untouched.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createKey } from '../../src/keys/service.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { createUser, setRole } from '../../src/users/service.ts';
import { bearer, startTestGateway, type TestGateway } from '../support/gateway.ts';

/** Secrets are never shown in an assertion message (a failing run's output is a log). */
const SECRETS = /kg_[0-9A-Za-z]{38}/g;
const hidden = (text: string) => text.replace(SECRETS, '[secret]');

const WS_B = 'ws_leaving';
const WS_C = 'ws_staying';

let t: TestGateway;

async function mint(name: string, workspaceId: string, scopes: string[], createdBy?: string) {
  const created = await createKey(
    { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix },
    { name, workspaceId, scopes, createdBy },
  );
  return { id: created.record.id, key: created.key };
}

async function models(key: string): Promise<number> {
  return (await t.call('/v1/models', { headers: bearer(key) })).status;
}

before(async () => {
  t = await startTestGateway();
  for (const [id, name] of [
    [WS_B, 'Leaving'],
    [WS_C, 'Staying'],
  ] as const) {
    await t.gateway.store.createWorkspace({ id, name, createdAt: Date.now() }, CLI_ACTOR);
  }
});
after(async () => {
  await t.close();
});

test('removing a member revokes their keys in that workspace at once, audited; nothing else', async () => {
  const { store } = t.gateway;
  const dave = await createUser(
    store,
    { email: 'dave@example.com', password: 'a long enough password' },
    CLI_ACTOR,
  );
  const owner = await createUser(
    store,
    { email: 'owner@example.com', password: 'a long enough password' },
    CLI_ACTOR,
  );
  await setRole(store, { workspaceId: WS_B, user: owner.id, role: 'owner' }, CLI_ACTOR);
  await setRole(store, { workspaceId: WS_B, user: dave.id, role: 'member' }, CLI_ACTOR);
  await setRole(store, { workspaceId: WS_C, user: dave.id, role: 'member' }, CLI_ACTOR);

  const daveInB = await mint('dave inference', WS_B, ['chat', 'models'], dave.id);
  const daveManager = await mint('dave manager', WS_B, ['models', 'keys:read', 'keys:write'], dave.id);
  // A key dave's key made through the API belongs to dave too.
  const made = await t.call('/admin/v1/keys', {
    method: 'POST',
    headers: bearer(daveManager.key),
    body: JSON.stringify({ name: 'made by dave', scopes: ['models'] }),
  });
  assert.equal(made.status, 201, hidden(made.text));
  const madeByDave = made.json() as { id: string; key: string; created_by: string };
  assert.equal(madeByDave.created_by, dave.id);
  const daveInC = await mint('dave elsewhere', WS_C, ['models'], dave.id);
  const ownersKey = await mint('owner inference', WS_B, ['models'], owner.id);
  const serviceKey = await mint('service', WS_B, ['models']);
  const remover = await mint('b admin', WS_B, ['admin']);

  const revoked = [daveInB, daveManager, madeByDave];
  const untouched = [daveInC, ownersKey, serviceKey];
  // Every key answers (and sits in the verifier's cache) before the removal.
  for (const key of [...revoked, ...untouched]) assert.equal(await models(key.key), 200, key.id);

  const removal = await t.call(`/admin/v1/workspaces/${WS_B}/members/${dave.email}`, {
    method: 'DELETE',
    headers: bearer(remover.key),
  });
  assert.equal(removal.status, 200, removal.text);

  // Right after, with no wait for a change-feed poll.
  for (const key of revoked) {
    assert.equal(await models(key.key), 401, `${key.id} answers 401 at once`);
    assert.notEqual((await store.getKey(key.id))?.revokedAt, null, key.id);
    const audit = await store.listAudit({ targetId: key.id, action: 'key.revoke' });
    assert.equal(audit.length, 1, `${key.id}: one revocation audited`);
    assert.deepEqual(audit[0]?.changes.reason, { after: 'member.remove' }, key.id);
    assert.equal(audit[0]?.actor.id, remover.id, `${key.id}: the remover did it`);
    assert.equal(audit[0]?.workspaceId, WS_B);
  }
  for (const key of untouched) {
    assert.equal(await models(key.key), 200, `${key.id} still works`);
    assert.equal((await store.getKey(key.id))?.revokedAt, null, key.id);
  }
  assert.equal(await store.getMembership(WS_B, dave.id), undefined);
  assert.equal((await store.getMembership(WS_C, dave.id))?.role, 'member');

  // The audit log, as the workspace's admin reads it through the API, says why.
  const log = await t.call(`/admin/v1/audit?target_id=${daveInB.id}&action=key.revoke`, {
    headers: bearer(remover.key),
  });
  assert.equal(log.status, 200, log.text);
  const events = (log.json() as { data: { changes: Record<string, { after?: unknown }> }[] }).data;
  assert.equal(events[0]?.changes.reason?.after, 'member.remove', log.text);
});
