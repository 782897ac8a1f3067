/**
 * Regression (issue 12, item 17): the gateway-wide `/metrics` (every tenant's traffic) was
 * readable by any tenant admin, since the only check was the `metrics` management scope, which
 * `admin` implies. It is for the operator only: keys of the default workspace (`ws_default`) with
 * `metrics` or `admin`, acting as an owner or admin there when they belong to a user. Every
 * tenant's key gets 403, whatever its scopes or its user's role.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createKey } from '../../src/keys/service.ts';
import { CLI_ACTOR, DEFAULT_WORKSPACE_ID, type Role } from '../../src/store/types.ts';
import { createUser, setRole } from '../../src/users/service.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

const TENANT = 'ws_metrics_tenant';

let t: TestGateway;

async function mint(workspaceId: string, scopes: string[], createdBy?: string): Promise<string> {
  const created = await createKey(
    { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix },
    { name: `metrics ${workspaceId} ${scopes.join(',')}`, workspaceId, scopes, createdBy },
  );
  return created.key;
}

/** A key of a user with `role` in `workspaceId`, asking for everything (the role decides). */
async function keyOfUser(workspaceId: string, role: Role): Promise<string> {
  const user = await createUser(
    t.gateway.store,
    { email: `${role}-${workspaceId}@example.com`, password: 'a long enough password' },
    CLI_ACTOR,
  );
  await setRole(t.gateway.store, { workspaceId, user: user.id, role }, CLI_ACTOR);
  return mint(workspaceId, ['admin'], user.id);
}

async function scrape(key: string) {
  const res = await t.call('/metrics', { headers: { authorization: `Bearer ${key}` } });
  return { status: res.status, text: res.text };
}

before(async () => {
  t = await startTestGateway();
  await t.gateway.store.createWorkspace({ id: TENANT, name: 'Tenant', createdAt: Date.now() }, CLI_ACTOR);
  // Some traffic of the tenant's, so the exposition has something to hide.
  const chat = await mint(TENANT, ['models']);
  assert.equal((await t.call('/v1/models', { headers: { authorization: `Bearer ${chat}` } })).status, 200);
});
after(async () => {
  await t.close();
});

test("a tenant's keys get 403 on /metrics, whatever their scopes or role", async () => {
  const tenantKeys: Record<string, string> = {
    'admin key of the tenant': await mint(TENANT, ['admin']),
    'metrics key of the tenant': await mint(TENANT, ['metrics']),
    "tenant owner's key": await keyOfUser(TENANT, 'owner'),
    "tenant admin's key": await keyOfUser(TENANT, 'admin'),
  };
  for (const [who, key] of Object.entries(tenantKeys)) {
    const res = await scrape(key);
    assert.equal(res.status, 403, `${who}: ${res.text}`);
    const body = JSON.parse(res.text) as { code: string; message: string };
    assert.equal(body.code, 'forbidden', `${who}: ${res.text}`);
    assert.match(body.message, /only the operator/);
    assert.doesNotMatch(res.text, /keygate_/, `${who}: no figure in the refusal`);
  }
});

test("the operator's keys read it: admin or metrics in ws_default, owners and admins there", async () => {
  const operatorKeys: Record<string, string> = {
    'operator admin key': await mint(DEFAULT_WORKSPACE_ID, ['admin']),
    'operator scraper key': await mint(DEFAULT_WORKSPACE_ID, ['metrics']),
    "ws_default owner's key": await keyOfUser(DEFAULT_WORKSPACE_ID, 'owner'),
    "ws_default admin's key": await keyOfUser(DEFAULT_WORKSPACE_ID, 'admin'),
  };
  for (const [who, key] of Object.entries(operatorKeys)) {
    const res = await scrape(key);
    assert.equal(res.status, 200, `${who}: ${res.text}`);
    assert.match(res.text, /^# (HELP|TYPE) /m, who);
  }
  // A member or viewer of ws_default has no metrics scope through their role.
  for (const role of ['member', 'viewer'] as const) {
    assert.equal((await scrape(await keyOfUser(DEFAULT_WORKSPACE_ID, role))).status, 403, role);
  }
});
