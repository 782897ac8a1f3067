/**
 * Regression (issue 12, item 5, the request path): a key's own IP allowlist replaced the
 * workspace's, so a tenant admin's key with `0.0.0.0/0` worked from anywhere whatever the
 * operator had set. The workspace list is a ceiling: both lists apply to every request.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CLI_ACTOR, DEFAULT_WORKSPACE_ID } from '../../src/store/types.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';

let t: TestGateway;

before(async () => {
  t = await startTestGateway();
});
after(async () => {
  await t.close();
});

async function chat(key: string) {
  return t.call('/v1/chat/completions', { method: 'POST', headers: bearer(key), body: chatBody() });
}

async function workspaceAllows(ranges: string[]) {
  await t.gateway.store.updateWorkspace(DEFAULT_WORKSPACE_ID, { allowedIps: ranges }, CLI_ACTOR, Date.now());
  await t.gateway.verifier.syncChanges();
}

test('a key whose own list allows the caller is refused when the workspace list does not', async () => {
  // The test client is 127.0.0.1. The operator allows only 10.0.0.0/8 for the workspace.
  await workspaceAllows(['10.0.0.0/8']);
  const wide = await t.createKey('wide', undefined, { allowedIps: ['0.0.0.0/0', '::/0'] });
  const own = await t.createKey('loopback', undefined, { allowedIps: ['127.0.0.1/32'] });
  const none = await t.createKey('no list');
  for (const key of [wide, own, none]) {
    const res = await chat(key.key);
    assert.equal(res.status, 403, res.text);
    assert.equal((res.json() as { code: string }).code, 'ip_not_allowed');
  }
});

test('inside both lists the key works; a key list narrower than the workspace still narrows', async () => {
  await workspaceAllows(['127.0.0.0/8']);
  const inside = await t.createKey('inside', undefined, { allowedIps: ['127.0.0.1/32'] });
  assert.equal((await chat(inside.key)).status, 200);
  const elsewhere = await t.createKey('elsewhere', undefined, { allowedIps: ['127.0.0.2/32'] });
  assert.equal((await chat(elsewhere.key)).status, 403);
  await workspaceAllows([]);
  assert.equal((await chat(inside.key)).status, 200);
  assert.equal((await chat(elsewhere.key)).status, 403);
});
