/**
 * Regression (issue 12, item 9): a tenant admin of workspace B could add any existing user of any
 * tenant (A's, say) to B with `PUT /admin/v1/workspaces/B/members/{user}`, without their consent,
 * and the 200-vs-404 answer (and `account_exists` of `invite/inspect`) told whether an account
 * existed. Only the operator adds an existing account directly; a tenant's owners and admins
 * invite, and the invitee accepts while signed in. The answers are the same whether or not the
 * account exists.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { SESSION_COOKIE } from '../../src/console/credentials.ts';
import { createKey } from '../../src/keys/service.ts';
import { CLI_ACTOR, DEFAULT_WORKSPACE_ID } from '../../src/store/types.ts';
import { createUser, setRole } from '../../src/users/service.ts';
import { newId } from '../../src/util/ids.ts';
import { bearer, startTestGateway, type TestGateway } from '../support/gateway.ts';

/** Secrets are never shown in an assertion message (a failing run's output is a log). */
const SECRETS = /kg_[0-9A-Za-z]{38}/g;
const hidden = (text: string) => text.replace(SECRETS, '[secret]');

const WS_A = 'ws_tenant_a';
const WS_B = 'ws_tenant_b';
const PASSWORD = 'a long enough password';

let t: TestGateway;
const users: Record<'alice' | 'carol' | 'dora' | 'erin' | 'bob', { id: string; email: string }> = {
  alice: { id: '', email: 'alice@a.example' },
  carol: { id: '', email: 'carol@a.example' },
  dora: { id: '', email: 'dora@a.example' },
  erin: { id: '', email: 'erin@b.example' },
  bob: { id: '', email: 'bob@b.example' },
};
/** Keys of workspace B's admins: bob's own (acting with his role), and a plain admin key of B. */
const tenantKeys: Record<string, string> = {};
let operator: string;

interface Answer {
  status: number;
  text: string;
  json: Record<string, unknown>;
}

/** A console client: keeps the session cookie and sends the CSRF token, from the same origin. */
class Browser {
  cookie: string | undefined;
  csrf: string | undefined;
  async call(method: 'POST' | 'PUT', path: string, body: unknown, extra: Record<string, string> = {}) {
    const headers: Record<string, string> = {
      'sec-fetch-site': 'same-origin',
      'content-type': 'application/json',
      ...extra,
    };
    if (this.cookie) headers.cookie = `${SESSION_COOKIE}=${this.cookie}`;
    if (this.csrf) headers['x-csrf-token'] = this.csrf;
    const res = await t.call(path, { method, headers, body: JSON.stringify(body) });
    const setCookie = res.headers['set-cookie'];
    const line = Array.isArray(setCookie) ? setCookie[0] : setCookie;
    if (line?.startsWith(`${SESSION_COOKIE}=`)) {
      this.cookie = line.slice(SESSION_COOKIE.length + 1).split(';', 1)[0] || undefined;
    }
    const json = res.json() as Record<string, unknown>;
    if (typeof json.csrf_token === 'string') this.csrf = json.csrf_token;
    return { status: res.status, text: hidden(res.text), json };
  }
  async login(email: string) {
    const res = await this.call('POST', '/console/api/login', { email, password: PASSWORD });
    assert.equal(res.status, 200, res.text);
  }
}

async function api(method: 'PUT' | 'POST' | 'DELETE', path: string, key: string, body?: unknown) {
  const res = await t.call(path, {
    method,
    headers: bearer(key),
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, text: hidden(res.text), json: res.json() as Record<string, unknown> };
}

/** The answer with the name it was about taken out: what is left must not depend on the account. */
function shape(res: Answer, user: string) {
  return { status: res.status, body: JSON.parse(res.text.replaceAll(user, '<user>')) as unknown };
}

async function membersOfB(): Promise<string[]> {
  return (await t.gateway.store.listMembers(WS_B)).map((m) => m.email).sort();
}

before(async () => {
  t = await startTestGateway();
  const { store } = t.gateway;
  for (const [id, name] of [
    [WS_A, 'Tenant A'],
    [WS_B, 'Tenant B'],
  ] as const) {
    await store.createWorkspace({ id, name, createdAt: Date.now() }, CLI_ACTOR);
  }
  for (const user of Object.values(users)) {
    user.id = (await createUser(store, { email: user.email, password: PASSWORD }, CLI_ACTOR)).id;
  }
  for (const name of ['alice', 'carol', 'dora'] as const) {
    await setRole(store, { workspaceId: WS_A, user: users[name].id, role: 'member' }, CLI_ACTOR);
  }
  await setRole(store, { workspaceId: WS_B, user: users.erin.id, role: 'owner' }, CLI_ACTOR);
  await setRole(store, { workspaceId: WS_B, user: users.bob.id, role: 'admin' }, CLI_ACTOR);
  const deps = { store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix };
  const mint = async (name: string, workspaceId: string, createdBy?: string) =>
    (await createKey(deps, { name, workspaceId, scopes: ['admin'], createdBy })).key;
  tenantKeys["bob's key"] = await mint('bob', WS_B, users.bob.id);
  tenantKeys['an admin key of B'] = await mint('b admin', WS_B);
  operator = await mint('operator', DEFAULT_WORKSPACE_ID);
});
after(async () => {
  await t.close();
});

test("a tenant admin adding another tenant's user gets the answer a non-existent one gets", async () => {
  const ghostEmail = 'nobody@nowhere.example';
  const ghostId = newId('usr');
  for (const [who, key] of Object.entries(tenantKeys)) {
    for (const [existing, missing] of [
      [users.alice.email, ghostEmail],
      [users.alice.id, ghostId],
    ] as const) {
      const path = (user: string) => `/admin/v1/workspaces/${WS_B}/members/${user}`;
      const add = await api('PUT', path(existing), key, { role: 'member' });
      const ghost = await api('PUT', path(missing), key, { role: 'member' });
      assert.equal(add.status, 404, `${who} adding ${existing}: ${add.text}`);
      assert.deepEqual(shape(add, existing), shape(ghost, missing), `${who}: ${add.text} vs ${ghost.text}`);
      // Removing a non-member answers the same too.
      const remove = await api('DELETE', path(existing), key);
      const removeGhost = await api('DELETE', path(missing), key);
      assert.equal(remove.status, 404, remove.text);
      assert.deepEqual(shape(remove, existing), shape(removeGhost, missing));
    }
  }
  assert.equal(await t.gateway.store.getMembership(WS_B, users.alice.id), undefined);
  assert.deepEqual(await membersOfB(), [users.bob.email, users.erin.email]);
});

test("B's owner, signed in to the console, cannot add A's user either", async () => {
  const erin = new Browser();
  await erin.login(users.erin.email);
  const inB = { 'x-keygate-workspace': WS_B };
  const add = await erin.call(
    'PUT',
    `/admin/v1/workspaces/${WS_B}/members/${users.alice.email}`,
    { role: 'viewer' },
    inB,
  );
  const ghost = await erin.call(
    'PUT',
    `/admin/v1/workspaces/${WS_B}/members/nobody@nowhere.example`,
    { role: 'viewer' },
    inB,
  );
  assert.equal(add.status, 404, add.text);
  assert.deepEqual(shape(add, users.alice.email), shape(ghost, 'nobody@nowhere.example'));
  assert.equal(await t.gateway.store.getMembership(WS_B, users.alice.id), undefined);
  // Changing the role of someone who is a member already still works.
  const promote = await erin.call(
    'PUT',
    `/admin/v1/workspaces/${WS_B}/members/${users.bob.email}`,
    { role: 'member' },
    inB,
  );
  assert.equal(promote.status, 200, promote.text);
  await setRole(t.gateway.store, { workspaceId: WS_B, user: users.bob.id, role: 'admin' }, CLI_ACTOR);
});

test('inviting and inspecting an invitation do not tell whether the email has an account', async () => {
  const key = tenantKeys["bob's key"] ?? '';
  const invite = (email: string) =>
    api('POST', `/admin/v1/workspaces/${WS_B}/invites`, key, { email, role: 'viewer' });
  const existing = await invite(users.dora.email);
  const fresh = await invite('newcomer@nowhere.example');
  assert.equal(existing.status, 201, existing.text);
  assert.equal(fresh.status, 201, fresh.text);
  assert.deepEqual(Object.keys(existing.json).sort(), Object.keys(fresh.json).sort());

  const inspect = (token: unknown) => new Browser().call('POST', '/console/api/invite/inspect', { token });
  const seenExisting = await inspect(existing.json.token);
  const seenFresh = await inspect(fresh.json.token);
  assert.equal(seenExisting.status, 200, seenExisting.text);
  assert.equal(seenFresh.status, 200, seenFresh.text);
  assert.equal('account_exists' in seenExisting.json, false, seenExisting.text);
  assert.deepEqual(Object.keys(seenExisting.json).sort(), Object.keys(seenFresh.json).sort());
  assert.deepEqual(
    { ...seenExisting.json, email: '', expires_at: '' },
    { ...seenFresh.json, email: '', expires_at: '' },
  );
});

test('the invitee joins by accepting while signed in; without a session they cannot', async () => {
  const invited = await api('POST', `/admin/v1/workspaces/${WS_B}/invites`, tenantKeys["bob's key"] ?? '', {
    email: users.carol.email,
    role: 'member',
  });
  assert.equal(invited.status, 201, invited.text);
  const token = invited.json.token;
  assert.equal(await t.gateway.store.getMembership(WS_B, users.carol.id), undefined, 'not before accepting');

  const stranger = await new Browser().call('POST', '/console/api/invite/accept', {
    token,
    password: PASSWORD,
  });
  assert.equal(stranger.status, 401, stranger.text);
  assert.equal(stranger.json.code, 'not_signed_in');
  assert.equal(await t.gateway.store.getMembership(WS_B, users.carol.id), undefined);

  const carol = new Browser();
  await carol.login(users.carol.email);
  const accepted = await carol.call('POST', '/console/api/invite/accept', { token });
  assert.equal(accepted.status, 200, accepted.text);
  assert.equal((await t.gateway.store.getMembership(WS_B, users.carol.id))?.role, 'member');
});

test('the operator adds an existing account directly', async () => {
  const add = await api('PUT', `/admin/v1/workspaces/${WS_B}/members/${users.alice.email}`, operator, {
    role: 'viewer',
  });
  assert.equal(add.status, 200, add.text);
  assert.equal((await t.gateway.store.getMembership(WS_B, users.alice.id))?.role, 'viewer');
  const ghost = await api('PUT', `/admin/v1/workspaces/${WS_B}/members/nobody@nowhere.example`, operator, {
    role: 'viewer',
  });
  assert.equal(ghost.status, 404, ghost.text);
});
