import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { CLI_ACTOR, type Store } from '../../src/store/types.ts';
import { hashPassword, verifyPassword } from '../../src/users/passwords.ts';
import {
  createUser,
  createWorkspace,
  removeMember,
  setRole,
  UserInputError,
} from '../../src/users/service.ts';
import { describeStore, storesUnderTest } from '../support/stores.ts';

const STORES = await storesUnderTest();

test('passwords are hashed with scrypt and verified in constant time', async () => {
  const hash = await hashPassword('correct horse battery staple');
  assert.match(hash, /^scrypt\$32768\$8\$1\$[\w-]+\$[\w-]+$/);
  assert.ok(!hash.includes('correct horse'));
  assert.ok(await verifyPassword('correct horse battery staple', hash));
  assert.ok(!(await verifyPassword('correct horse battery stapler', hash)));
  assert.notEqual(
    await hashPassword('same password here'),
    await hashPassword('same password here'),
    'salted',
  );
  for (const broken of ['', 'scrypt$1$2', 'bcrypt$x$y$z$a$b', `${hash}x`]) {
    assert.equal(await verifyPassword('whatever', broken), false, broken);
  }
});

for (const s of STORES) {
  describeStore(s, 'users and memberships', () => {
    let store: Store;
    before(async () => {
      store = await s.open();
    });

    test('users: emails are normalised and unique, passwords must be long enough', async () => {
      const user = await createUser(
        store,
        { email: ' Bob@Example.COM ', password: 'long enough password' },
        CLI_ACTOR,
      );
      assert.equal(user.email, 'bob@example.com');
      await assert.rejects(
        createUser(store, { email: 'bob@example.com', password: 'another long one!' }, CLI_ACTOR),
        /exists already/,
      );
      await assert.rejects(
        createUser(store, { email: 'not-an-email', password: 'long enough password' }, CLI_ACTOR),
        UserInputError,
      );
      await assert.rejects(
        createUser(store, { email: 'short@example.com', password: 'short' }, CLI_ACTOR),
        /at least 12/,
      );
      const stored = await store.getUser('BOB@example.com');
      assert.ok(stored && (await verifyPassword('long enough password', stored.passwordHash)));
    });

    test('memberships: roles change, the last owner stays, every change is audited', async () => {
      const ws = await createWorkspace(store, 'Team A', CLI_ACTOR);
      const owner = await createUser(
        store,
        { email: 'owner@example.com', password: 'owner password 1' },
        CLI_ACTOR,
      );
      const dev = await createUser(
        store,
        { email: 'dev@example.com', password: 'developer password' },
        CLI_ACTOR,
      );
      await setRole(store, { workspaceId: ws.id, user: 'owner@example.com', role: 'owner' }, CLI_ACTOR);
      await setRole(store, { workspaceId: ws.id, user: dev.id, role: 'member' }, CLI_ACTOR);
      await setRole(store, { workspaceId: ws.id, user: dev.id, role: 'viewer' }, CLI_ACTOR);
      await assert.rejects(
        setRole(store, { workspaceId: ws.id, user: owner.id, role: 'admin' }, CLI_ACTOR),
        /at least one owner/,
      );
      await assert.rejects(
        removeMember(store, { workspaceId: ws.id, user: owner.id }, CLI_ACTOR),
        /at least one owner/,
      );
      await assert.rejects(
        setRole(store, { workspaceId: 'ws_nope', user: dev.id, role: 'viewer' }, CLI_ACTOR),
        /no workspace/,
      );
      await removeMember(store, { workspaceId: ws.id, user: 'dev@example.com' }, CLI_ACTOR);
      assert.deepEqual(
        (await store.listMembers(ws.id)).map((m) => [m.email, m.role]),
        [['owner@example.com', 'owner']],
      );
      const actions = (await store.listAudit({ workspaceId: ws.id })).map((e) => e.action).reverse();
      assert.deepEqual(actions, [
        'workspace.create',
        'member.add',
        'member.add',
        'member.role',
        'member.remove',
      ]);
    });

    test('the audit log is append-only in the database itself', async () => {
      await assert.rejects(s.exec(store, "UPDATE audit_events SET action = 'forged'"), /append-only/);
      await assert.rejects(s.exec(store, 'DELETE FROM audit_events'), /append-only/);
    });
  });
}
