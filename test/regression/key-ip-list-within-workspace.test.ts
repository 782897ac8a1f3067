/**
 * Regression (issue 12, item 5, the management API): with an IP allowlist set on a workspace by
 * the operator, a tenant admin could still create (or patch) a key with `0.0.0.0/0`, and the key's
 * list replaced the workspace's. The workspace list is a ceiling: creating or changing a key whose
 * ranges reach outside it is refused with 422 naming `allowed_ips` and the ranges outside, for
 * every caller (the operator too); ranges inside it are accepted. (The request path, where both
 * lists apply, is workspace-ip-ceiling-runtime.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createKey } from '../../src/keys/service.ts';
import { CLI_ACTOR, DEFAULT_WORKSPACE_ID } from '../../src/store/types.ts';
import { bearer, startTestGateway, type TestGateway } from '../support/gateway.ts';

/** Secrets are never shown in an assertion message (a failing run's output is a log). */
const SECRETS = /kg_[0-9A-Za-z]{38}/g;
const hidden = (text: string) => text.replace(SECRETS, '[secret]');

const WS = 'ws_ceiling';
const CEILING = ['127.0.0.0/8', '10.20.0.0/16'];

let t: TestGateway;
let tenantAdmin: string;
let operator: string;

interface Answer {
  status: number;
  text: string;
  json: Record<string, unknown>;
}

async function mint(name: string, workspaceId: string, scopes: string[], allowedIps: string[] = []) {
  const created = await createKey(
    { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix },
    { name, workspaceId, scopes, allowedIps },
  );
  return { id: created.record.id, key: created.key };
}

async function api(method: 'POST' | 'PATCH', path: string, key: string, body: unknown): Promise<Answer> {
  const res = await t.call(path, { method, headers: bearer(key), body: JSON.stringify(body) });
  return { status: res.status, text: hidden(res.text), json: res.json() as Record<string, unknown> };
}

/** A clear refusal: 422, the field named, the offending ranges and the workspace's list quoted. */
function assertOutside(res: Answer, outside: string[]) {
  assert.equal(res.status, 422, res.text);
  assert.equal(res.json.code, 'validation_error', res.text);
  const detail = res.json.detail as { loc: unknown[]; msg: string }[];
  assert.deepEqual(detail[0]?.loc, ['body', 'allowed_ips'], res.text);
  for (const range of outside) assert.ok(detail[0]?.msg.includes(range), `${range} named: ${res.text}`);
  assert.match(String(detail[0]?.msg), /outside the IP allowlist of workspace ws_ceiling/);
  assert.ok(String(res.json.message).includes(CEILING.join(', ')), res.text);
}

before(async () => {
  t = await startTestGateway();
  const { store } = t.gateway;
  await store.createWorkspace({ id: WS, name: 'Ceiling', createdAt: Date.now() }, CLI_ACTOR);
  await store.updateWorkspace(WS, { allowedIps: CEILING }, CLI_ACTOR, Date.now());
  tenantAdmin = (await mint('tenant admin', WS, ['admin'])).key;
  operator = (await mint('operator', DEFAULT_WORKSPACE_ID, ['admin'])).key;
});
after(async () => {
  await t.close();
});

test('creating a key with ranges outside the workspace list is refused; inside is accepted', async () => {
  const refused: [string[], string[]][] = [
    [['0.0.0.0/0'], ['0.0.0.0/0']],
    [['::/0'], ['::/0']],
    [['192.168.1.0/24'], ['192.168.1.0/24']],
    // Wider than a range of the list, though it contains it.
    [['10.0.0.0/8'], ['10.0.0.0/8']],
    // One range inside, one outside: refused, naming only the one outside.
    [['127.0.0.1/32', '10.21.0.1/32'], ['10.21.0.1/32']],
  ];
  for (const [ranges, outside] of refused) {
    const name = `outside ${ranges.join(' ')}`;
    assertOutside(await api('POST', '/admin/v1/keys', tenantAdmin, { name, allowed_ips: ranges }), outside);
    const stored = (await t.gateway.store.listKeys({ workspaceId: WS })).filter((k) => k.name === name);
    assert.deepEqual(stored, [], `${name} was not created`);
  }
  for (const ranges of [['127.0.0.1/32'], ['127.0.0.0/8'], ['10.20.3.0/24', '127.0.0.2/32'], []]) {
    const res = await api('POST', '/admin/v1/keys', tenantAdmin, {
      name: `inside ${ranges.join(' ')}`,
      allowed_ips: ranges,
    });
    assert.equal(res.status, 201, res.text);
    assert.deepEqual(res.json.allowed_ips, ranges);
  }
});

test('patching a key to ranges outside the workspace list is refused and leaves it unchanged', async () => {
  const key = await mint('patch target', WS, ['chat'], ['127.0.0.1/32']);
  for (const ranges of [['0.0.0.0/0'], ['10.21.0.0/16'], ['127.0.0.1/32', '8.8.8.8/32']]) {
    const res = await api('PATCH', `/admin/v1/keys/${key.id}`, tenantAdmin, { allowed_ips: ranges });
    assertOutside(
      res,
      ranges.filter((r) => r !== '127.0.0.1/32'),
    );
  }
  assert.deepEqual((await t.gateway.store.getKey(key.id))?.policy.allowedIps, ['127.0.0.1/32']);
  const inside = await api('PATCH', `/admin/v1/keys/${key.id}`, tenantAdmin, {
    allowed_ips: ['10.20.0.0/24'],
  });
  assert.equal(inside.status, 200, inside.text);
  assert.deepEqual((await t.gateway.store.getKey(key.id))?.policy.allowedIps, ['10.20.0.0/24']);
});

test('the ceiling binds the operator too', async () => {
  assertOutside(
    await api('POST', '/admin/v1/keys', operator, {
      name: 'operator wide',
      workspace_id: WS,
      allowed_ips: ['0.0.0.0/0'],
    }),
    ['0.0.0.0/0'],
  );
  const inside = await api('POST', '/admin/v1/keys', operator, {
    name: 'operator inside',
    workspace_id: WS,
    allowed_ips: ['127.0.0.1/32'],
  });
  assert.equal(inside.status, 201, inside.text);
});
