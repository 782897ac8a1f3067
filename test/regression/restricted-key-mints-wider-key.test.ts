/**
 * Regression (issue 12, item 6): a chat-only `keys:write` key expiring in 1 h created a
 * never-expiring key with `embeddings,fim,models`: creation checked management scopes, models,
 * IPs, limits and budgets, but neither inference scopes nor expiry. A key created, changed or
 * rotated by a key now expires no later than its maker (a key made without an expiry inherits
 * the maker's) and its inference scopes stay within the maker's; a change cannot widen either.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createKey, type KeyRestrictions } from '../../src/keys/service.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { bearer, startTestGateway, type TestGateway } from '../support/gateway.ts';

/** Secrets are never shown in an assertion message (a failing run's output is a log). */
const SECRETS = /kg_[0-9A-Za-z]{38}/g;
const hidden = (text: string) => text.replace(SECRETS, '[secret]');

const WS = 'ws_mint';
const HOUR = 3_600_000;

let t: TestGateway;
/** Chat only, with keys:write, expiring in one hour. */
let chatOnly: { id: string; key: string; expiresAt: number };

interface Answer {
  status: number;
  text: string;
  json: Record<string, unknown>;
}

async function mint(name: string, restrictions: KeyRestrictions, expiresInMs?: number) {
  const created = await createKey(
    { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix },
    { name, workspaceId: WS, expiresInMs, ...restrictions },
  );
  return { id: created.record.id, key: created.key, expiresAt: created.record.expiresAt };
}

async function api(method: 'POST' | 'PATCH', path: string, key: string, body: unknown): Promise<Answer> {
  const res = await t.call(path, { method, headers: bearer(key), body: JSON.stringify(body) });
  return { status: res.status, text: hidden(res.text), json: res.json() as Record<string, unknown> };
}

const create = (body: Record<string, unknown>) => api('POST', '/admin/v1/keys', chatOnly.key, body);

async function keysNamed(name: string) {
  return (await t.gateway.store.listKeys({ workspaceId: WS })).filter((k) => k.name === name);
}

before(async () => {
  t = await startTestGateway();
  await t.gateway.store.createWorkspace({ id: WS, name: 'Mint', createdAt: Date.now() }, CLI_ACTOR);
  const created = await mint('chat only', { scopes: ['chat', 'keys:read', 'keys:write'] }, HOUR);
  assert.ok(created.expiresAt !== null);
  chatOnly = { ...created, expiresAt: created.expiresAt };
});
after(async () => {
  await t.close();
});

test('the issue: a chat-only key expiring in 1 h cannot mint embeddings,fim,models', async () => {
  for (const scopes of [
    ['chat', 'embeddings', 'fim', 'models'],
    ['embeddings'],
    // A provisioning key (keys:write, no inference scope) makes keys of every inference scope.
    ['keys:write'],
  ]) {
    const name = `wider ${scopes.join(',')}`;
    const res = await create({ name, scopes, expires_in: '30m' });
    assert.equal(res.status, 403, `${name}: ${res.text}`);
    assert.equal(res.json.code, 'forbidden');
    assert.match(String(res.json.message), /scopes must stay within chat/);
    assert.equal(res.json.key, undefined);
    assert.deepEqual(await keysNamed(name), [], `${name} was not created`);
  }
});

test('it cannot mint a key that outlives it; without an expiry the new key gets its own', async () => {
  const later = await create({ name: 'outlives', scopes: ['chat'], expires_in: '2h' });
  assert.equal(later.status, 403, later.text);
  assert.match(String(later.json.message), /must expire by/);
  assert.deepEqual(await keysNamed('outlives'), []);

  // Neither absent nor null gives a never-expiring key: both inherit the creator's expiry.
  for (const [name, body] of [
    ['no expiry given', { name: 'no expiry given', scopes: ['chat'] }],
    ['expiry null', { name: 'expiry null', scopes: ['chat'], expires_in: null }],
  ] as const) {
    const res = await create(body);
    assert.equal(res.status, 201, `${name}: ${res.text}`);
    assert.equal(typeof res.json.expires_at, 'string', name);
    const expiresAt = Date.parse(String(res.json.expires_at));
    assert.ok(expiresAt <= chatOnly.expiresAt, `${name}: ${res.json.expires_at} is after the creator's`);
    assert.ok(expiresAt > Date.now() + HOUR / 2, `${name}: the creator's expiry, not a shorter one`);
    assert.equal((await keysNamed(name))[0]?.expiresAt, expiresAt, name);
  }

  const sooner = await create({ name: 'sooner', scopes: ['chat'], expires_in: '10m' });
  assert.equal(sooner.status, 201, sooner.text);
  assert.ok(Date.parse(String(sooner.json.expires_at)) <= Date.now() + 10 * 60_000);
});

test('a change cannot widen a key it made: no extra scope, no later or no expiry', async () => {
  const made = await create({ name: 'made to change', scopes: ['chat'], expires_in: '30m' });
  assert.equal(made.status, 201, made.text);
  const id = String(made.json.id);
  const before = await t.gateway.store.getKey(id);
  for (const body of [
    { scopes: ['chat', 'embeddings'] },
    { scopes: ['chat', 'embeddings', 'fim', 'models'] },
    { expires_in: null },
    { expires_in: '2h' },
  ]) {
    const res = await api('PATCH', `/admin/v1/keys/${id}`, chatOnly.key, body);
    assert.equal(res.status, 403, `${JSON.stringify(body)}: ${res.text}`);
    assert.equal(res.json.code, 'forbidden');
  }
  const after = await t.gateway.store.getKey(id);
  assert.deepEqual(after?.policy.scopes, before?.policy.scopes);
  assert.equal(after?.expiresAt, before?.expiresAt);

  const shorter = await api('PATCH', `/admin/v1/keys/${id}`, chatOnly.key, { expires_in: '5m' });
  assert.equal(shorter.status, 200, shorter.text);
  assert.ok(Date.parse(String(shorter.json.expires_at)) <= Date.now() + 5 * 60_000);
});

test('a never-expiring or wider-scoped key made by someone else cannot be changed or rotated by it', async () => {
  const forever = await mint('forever chat', { scopes: ['chat'] });
  const wide = await mint('wide', {}, HOUR / 2);
  for (const target of [forever, wide]) {
    const patch = await api('PATCH', `/admin/v1/keys/${target.id}`, chatOnly.key, { name: 'renamed' });
    assert.equal(patch.status, 403, patch.text);
    const rotate = await api('POST', `/admin/v1/keys/${target.id}/rotate`, chatOnly.key, {});
    assert.equal(rotate.status, 403, rotate.text);
    assert.equal(rotate.json.key, undefined);
  }
});
