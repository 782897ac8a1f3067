/**
 * Roles through the management API: a key that belongs to a user acts with that user's role in
 * its workspace. A table of every role × every route, written out here (not derived from the
 * code's role table), plus what happens when the user's role changes or they leave.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setGlobalDispatcher } from 'undici';
import { addChannel, channelRules } from '../../src/alerts/service.ts';
import { ROUTES } from '../../src/http/admin/index.ts';
import { createKey } from '../../src/keys/service.ts';
import { CLI_ACTOR, DEFAULT_WORKSPACE_ID, type Role } from '../../src/store/types.ts';
import { createUser, removeMember, setRole } from '../../src/users/service.ts';
import { newId } from '../../src/util/ids.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { usageTotalsOf } from '../support/usage-totals.ts';

let t: TestGateway;
const userIds: Partial<Record<Role, string>> = {};
const keys: Partial<Record<Role, string>> = {};

async function mintFor(userId: string, scopes: string[] = ['admin']) {
  const created = await createKey(
    { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix },
    { name: `key of ${userId}`, scopes, createdBy: userId },
  );
  return { id: created.record.id, key: created.key };
}

async function call(method: string, path: string, key: string, body?: unknown) {
  const res = await fetch(t.url + path, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

before(async () => {
  // The table's channels go to loopback (an operator's alerts.allowedDestinations), many of them.
  t = await startTestGateway({
    configure: (c) => {
      c.alerts.allowedDestinations = ['127.0.0.0/8'];
      c.alerts.maxChannelsPerWorkspace = 1000;
      c.alerts.testSendsPerMinute = 1000;
    },
  });
  setGlobalDispatcher(t.dispatcher);
  for (const role of ['owner', 'admin', 'member', 'viewer'] as const) {
    const user = await createUser(
      t.gateway.store,
      { email: `${role}@example.com`, password: 'a long enough password' },
      CLI_ACTOR,
    );
    await setRole(t.gateway.store, { workspaceId: DEFAULT_WORKSPACE_ID, user: user.id, role }, CLI_ACTOR);
    userIds[role] = user.id;
    // Every user's key asks for everything; the role decides what it gets.
    keys[role] = (await mintFor(user.id)).key;
  }
  await createUser(
    t.gateway.store,
    { email: 'someone@example.com', password: 'a long enough password' },
    CLI_ACTOR,
  );
});
after(async () => {
  await t.close();
});

type Outcome = 200 | 201 | 403 | 404;
interface Row {
  op: string;
  /** What each role gets. For key routes the target is a key that belongs to nobody in particular. */
  expect: Record<Role, Outcome>;
  /** Makes the target of one call (default: a key created by the CLI). */
  target?: () => Promise<string>;
  request(target: string): { path: string; body?: unknown };
}

/** A fresh alert of the default workspace, about no key. */
async function newAlert(): Promise<string> {
  const { alert } = await t.gateway.store.raiseAlert(
    {
      id: newId('alr'),
      workspaceId: DEFAULT_WORKSPACE_ID,
      kind: 'auth_failures',
      fingerprint: newId('alr'),
      keyId: null,
      severity: 'warning',
      title: 'role table alert',
      message: 'for the role table',
      details: {},
      at: Date.now(),
    },
    0,
  );
  return alert.id;
}

/** A fresh alert channel of the default workspace (port 9 on loopback: nothing listens). */
async function newChannel(): Promise<string> {
  const created = await addChannel(
    { store: t.gateway.store, dataKey: t.gateway.secrets.dataKey, rules: channelRules(t.config.alerts) },
    { type: 'webhook', url: 'http://127.0.0.1:9/roles', workspaceId: DEFAULT_WORKSPACE_ID },
    CLI_ACTOR,
  );
  return created.id;
}

/** A fresh open invitation to the default workspace. */
async function newInvite(): Promise<string> {
  const invite = await t.gateway.store.createInvite(
    {
      id: newId('inv'),
      tokenHash: newId('inv'),
      workspaceId: DEFAULT_WORKSPACE_ID,
      email: 'invited@example.com',
      role: 'viewer',
      createdBy: null,
      createdAt: Date.now(),
      expiresAt: Date.now() + 60_000,
      acceptedAt: null,
      revokedAt: null,
    },
    CLI_ACTOR,
  );
  return invite.id;
}

const TABLE: Row[] = [
  {
    op: 'POST /admin/v1/workspaces/{id}/invites',
    expect: { owner: 201, admin: 201, member: 403, viewer: 403 },
    target: async () => `new-${newId('usr').toLowerCase()}@example.com`,
    request: (email) => ({
      path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/invites`,
      body: { email, role: 'viewer' },
    }),
  },
  {
    op: 'GET /admin/v1/workspaces/{id}/invites',
    expect: { owner: 200, admin: 200, member: 200, viewer: 200 },
    request: () => ({ path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/invites` }),
  },
  {
    op: 'DELETE /admin/v1/workspaces/{id}/invites/{invite_id}',
    expect: { owner: 200, admin: 200, member: 403, viewer: 403 },
    target: newInvite,
    request: (id) => ({ path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/invites/${id}` }),
  },
  {
    op: 'GET /admin/v1/keys',
    expect: { owner: 200, admin: 200, member: 200, viewer: 200 },
    request: () => ({ path: '/admin/v1/keys' }),
  },
  {
    op: 'POST /admin/v1/keys',
    expect: { owner: 201, admin: 201, member: 201, viewer: 403 },
    request: () => ({ path: '/admin/v1/keys', body: { name: 'made by role' } }),
  },
  {
    op: 'GET /admin/v1/keys/{id}',
    expect: { owner: 200, admin: 200, member: 404, viewer: 200 },
    request: (k) => ({ path: `/admin/v1/keys/${k}` }),
  },
  {
    op: 'PATCH /admin/v1/keys/{id}',
    expect: { owner: 200, admin: 200, member: 404, viewer: 403 },
    request: (k) => ({ path: `/admin/v1/keys/${k}`, body: { name: 'renamed' } }),
  },
  {
    op: 'POST /admin/v1/keys/{id}/revoke',
    expect: { owner: 200, admin: 200, member: 404, viewer: 403 },
    request: (k) => ({ path: `/admin/v1/keys/${k}/revoke` }),
  },
  {
    op: 'POST /admin/v1/keys/{id}/rotate',
    expect: { owner: 200, admin: 200, member: 404, viewer: 403 },
    request: (k) => ({ path: `/admin/v1/keys/${k}/rotate`, body: { grace: '1m' } }),
  },
  {
    op: 'GET /admin/v1/workspaces',
    expect: { owner: 200, admin: 200, member: 200, viewer: 200 },
    request: () => ({ path: '/admin/v1/workspaces' }),
  },
  {
    op: 'POST /admin/v1/workspaces',
    expect: { owner: 201, admin: 403, member: 403, viewer: 403 },
    request: () => ({ path: '/admin/v1/workspaces', body: { name: 'by role' } }),
  },
  {
    op: 'GET /admin/v1/workspaces/{id}',
    expect: { owner: 200, admin: 200, member: 200, viewer: 200 },
    request: () => ({ path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}` }),
  },
  {
    op: 'PATCH /admin/v1/workspaces/{id}',
    expect: { owner: 200, admin: 200, member: 403, viewer: 403 },
    request: () => ({ path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}`, body: { name: 'Default' } }),
  },
  {
    op: 'GET /admin/v1/workspaces/{id}/members',
    expect: { owner: 200, admin: 200, member: 200, viewer: 200 },
    request: () => ({ path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/members` }),
  },
  {
    op: 'PUT /admin/v1/workspaces/{id}/members/{user}',
    expect: { owner: 200, admin: 200, member: 403, viewer: 403 },
    request: () => ({
      path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/members/someone@example.com`,
      body: { role: 'viewer' },
    }),
  },
  {
    op: 'DELETE /admin/v1/workspaces/{id}/members/{user}',
    expect: { owner: 200, admin: 200, member: 403, viewer: 403 },
    request: () => ({ path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/members/someone@example.com` }),
  },
  {
    op: 'GET /admin/v1/audit',
    expect: { owner: 200, admin: 200, member: 403, viewer: 200 },
    request: () => ({ path: '/admin/v1/audit' }),
  },
  {
    op: 'GET /admin/v1/usage',
    expect: { owner: 200, admin: 200, member: 200, viewer: 200 },
    request: () => ({ path: '/admin/v1/usage' }),
  },
  {
    op: 'GET /admin/v1/alerts',
    expect: { owner: 200, admin: 200, member: 200, viewer: 200 },
    request: () => ({ path: '/admin/v1/alerts' }),
  },
  {
    op: 'GET /admin/v1/alerts/{id}',
    expect: { owner: 200, admin: 200, member: 200, viewer: 200 },
    target: newAlert,
    request: (a) => ({ path: `/admin/v1/alerts/${a}` }),
  },
  {
    op: 'POST /admin/v1/alerts/{id}/acknowledge',
    expect: { owner: 200, admin: 200, member: 403, viewer: 403 },
    target: newAlert,
    request: (a) => ({ path: `/admin/v1/alerts/${a}/acknowledge` }),
  },
  {
    op: 'GET /admin/v1/alerts/channels',
    expect: { owner: 200, admin: 200, member: 200, viewer: 200 },
    request: () => ({ path: '/admin/v1/alerts/channels' }),
  },
  {
    op: 'POST /admin/v1/alerts/channels',
    expect: { owner: 201, admin: 201, member: 403, viewer: 403 },
    request: () => ({
      path: '/admin/v1/alerts/channels',
      body: { type: 'webhook', url: 'http://127.0.0.1:9/by-role' },
    }),
  },
  {
    op: 'DELETE /admin/v1/alerts/channels/{id}',
    expect: { owner: 200, admin: 200, member: 403, viewer: 403 },
    target: newChannel,
    request: (c) => ({ path: `/admin/v1/alerts/channels/${c}` }),
  },
  {
    op: 'POST /admin/v1/alerts/test',
    expect: { owner: 200, admin: 200, member: 403, viewer: 403 },
    request: () => ({ path: '/admin/v1/alerts/test' }),
  },
  {
    op: 'GET /admin/v1/alerts/rules',
    expect: { owner: 200, admin: 200, member: 200, viewer: 200 },
    request: () => ({ path: '/admin/v1/alerts/rules' }),
  },
  // The values are the defaults: the rows change nothing that other tests see.
  {
    op: 'PUT /admin/v1/alerts/rules/usage_spike',
    expect: { owner: 200, admin: 200, member: 403, viewer: 403 },
    request: () => ({ path: '/admin/v1/alerts/rules/usage_spike', body: { min_requests: 100 } }),
  },
  {
    op: 'PUT /admin/v1/alerts/rules/budget_threshold',
    expect: { owner: 200, admin: 200, member: 403, viewer: 403 },
    request: () => ({ path: '/admin/v1/alerts/rules/budget_threshold', body: { enabled: true } }),
  },
  {
    op: 'PUT /admin/v1/alerts/rules/new_network',
    expect: { owner: 200, admin: 200, member: 403, viewer: 403 },
    request: () => ({ path: '/admin/v1/alerts/rules/new_network', body: {} }),
  },
  {
    op: 'PUT /admin/v1/alerts/rules/auth_failures',
    expect: { owner: 200, admin: 200, member: 403, viewer: 403 },
    request: () => ({ path: '/admin/v1/alerts/rules/auth_failures', body: { failures_per_minute: 20 } }),
  },
  {
    op: 'PUT /admin/v1/alerts/rules/key_expiring',
    expect: { owner: 200, admin: 200, member: 403, viewer: 403 },
    request: () => ({ path: '/admin/v1/alerts/rules/key_expiring', body: { enabled: true } }),
  },
  {
    op: 'GET /admin/v1/openapi.json',
    expect: { owner: 200, admin: 200, member: 200, viewer: 200 },
    request: () => ({ path: '/admin/v1/openapi.json' }),
  },
];

describe('each role × each route', () => {
  test('the table covers every route', () => {
    assert.deepEqual(TABLE.map((r) => r.op).sort(), ROUTES.map((r) => `${r.method} ${r.path}`).sort());
  });

  for (const row of TABLE) {
    test(row.op, async () => {
      for (const role of ['owner', 'admin', 'member', 'viewer'] as const) {
        // A fresh target each time, owned by nobody (created by the CLI).
        const target = row.target ? await row.target() : (await t.createKey('target')).id;
        if (row.op.includes('/members/')) {
          await setRole(
            t.gateway.store,
            { workspaceId: DEFAULT_WORKSPACE_ID, user: 'someone@example.com', role: 'viewer' },
            CLI_ACTOR,
          );
        }
        const { path, body } = row.request(target);
        const res = await call(row.op.split(' ')[0] ?? 'GET', path, keys[role] ?? '', body);
        assert.equal(res.status, row.expect[role], `${row.op} as ${role}: ${res.text}`);
      }
    });
  }
});

describe('ownership', () => {
  test('a member sees and manages only their own keys, and keys they create are theirs', async () => {
    const mine = await call('POST', '/admin/v1/keys', keys.member ?? '', { name: 'member key' });
    assert.equal(mine.status, 201);
    const created = JSON.parse(mine.text) as { id: string; created_by: string };
    assert.equal(created.created_by, userIds.member);
    assert.equal(
      (await call('PATCH', `/admin/v1/keys/${created.id}`, keys.member ?? '', { name: 'still mine' })).status,
      200,
    );
    const list = JSON.parse((await call('GET', '/admin/v1/keys?limit=500', keys.member ?? '')).text) as {
      data: { created_by: string }[];
    };
    assert.ok(list.data.length > 0);
    assert.ok(list.data.every((k) => k.created_by === userIds.member));
    assert.equal((await call('POST', `/admin/v1/keys/${created.id}/revoke`, keys.member ?? '')).status, 200);
  });

  test('an admin cannot make itself owner, nor demote or remove an owner', async () => {
    const promote = await call(
      'PUT',
      `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/members/admin@example.com`,
      keys.admin ?? '',
      {
        role: 'owner',
      },
    );
    assert.equal(promote.status, 403, promote.text);
    const demote = await call(
      'PUT',
      `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/members/owner@example.com`,
      keys.admin ?? '',
      {
        role: 'viewer',
      },
    );
    assert.equal(demote.status, 403, demote.text);
    const remove = await call(
      'DELETE',
      `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/members/owner@example.com`,
      keys.admin ?? '',
    );
    assert.equal(remove.status, 403, remove.text);
    assert.equal(
      (await t.gateway.store.getMembership(DEFAULT_WORKSPACE_ID, userIds.owner ?? ''))?.role,
      'owner',
    );
    assert.equal(
      (await call('POST', '/admin/v1/workspaces', keys.admin ?? '', { name: 'still not' })).status,
      403,
    );
  });

  test('a member reads the usage of their own keys only', async () => {
    const mine = JSON.parse(
      (await call('POST', '/admin/v1/keys', keys.member ?? '', { name: 'metered' })).text,
    ) as { id: string; key: string };
    const others = await t.createKey("someone else's");
    for (const k of [mine.key, others.key]) {
      assert.equal((await t.call('/v1/models', { headers: { authorization: `Bearer ${k}` } })).status, 200);
    }
    // Both requests' usage is stored (behind the responses), so the filter below has both to sort.
    await usageTotalsOf(t.gateway.store, mine.id, 1);
    await usageTotalsOf(t.gateway.store, others.id, 1);
    const seen = JSON.parse((await call('GET', '/admin/v1/usage', keys.member ?? '')).text) as {
      data: { key_id: string }[];
    };
    const ids = seen.data.map((u) => u.key_id);
    assert.ok(ids.includes(mine.id));
    assert.ok(!ids.includes(others.id));
    const admin = JSON.parse((await call('GET', '/admin/v1/usage', keys.admin ?? '')).text) as {
      data: { key_id: string }[];
    };
    assert.ok(admin.data.some((u) => u.key_id === others.id));
  });

  test('a member cannot grant management scopes their role lacks', async () => {
    const res = await call('POST', '/admin/v1/keys', keys.member ?? '', {
      name: 'escalate',
      scopes: ['audit:read'],
    });
    assert.equal(res.status, 403);
  });

  test("a role change applies to the user's keys at once; leaving the workspace takes their power away", async () => {
    const user = await createUser(
      t.gateway.store,
      { email: 'mover@example.com', password: 'a long enough password' },
      CLI_ACTOR,
    );
    await setRole(
      t.gateway.store,
      { workspaceId: DEFAULT_WORKSPACE_ID, user: user.id, role: 'admin' },
      CLI_ACTOR,
    );
    const { key } = await mintFor(user.id, ['admin', 'chat']);
    assert.equal((await call('GET', '/admin/v1/audit', key)).status, 200);
    await setRole(
      t.gateway.store,
      { workspaceId: DEFAULT_WORKSPACE_ID, user: user.id, role: 'member' },
      CLI_ACTOR,
    );
    assert.equal((await call('GET', '/admin/v1/audit', key)).status, 403);
    await removeMember(t.gateway.store, { workspaceId: DEFAULT_WORKSPACE_ID, user: user.id }, CLI_ACTOR);
    assert.equal((await call('GET', '/admin/v1/keys', key)).status, 403);
    // Its inference scopes are untouched.
    const chat = await t.call('/v1/models', { headers: { authorization: `Bearer ${key}` } });
    assert.equal(chat.status, 403, 'the key has chat but not models');
  });
});
