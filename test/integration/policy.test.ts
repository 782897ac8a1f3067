/**
 * Key restrictions through the real server: scopes, model and IP allowlists (with trusted
 * proxies), rotation grace, expiry, workspace policy, and changes taking effect while it runs.
 */
import assert from 'node:assert/strict';
import { request as httpsRequest } from 'node:https';
import { after, before, describe, test } from 'node:test';
import { rotateKey, updateKey } from '../../src/keys/service.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { eventually, pastTime } from '../support/wait.ts';

let t: TestGateway;
before(async () => {
  t = await startTestGateway({
    configure: (c) => {
      c.auth.failuresPerMinute = 10_000;
      c.server.trustedProxies = ['127.0.0.3/32'];
    },
  });
});
after(async () => {
  await t.close();
});

interface ErrorBody {
  message: string;
  code: string;
  type: string;
}

function deps() {
  return { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix };
}

/**
 * Waits until `probe` answers `status`: a change reaches the running server through the change
 * feed, read here at once (and by the server's own poll every 250 ms).
 */
async function statusBecomes(probe: () => Promise<{ status: number }>, status: number, what: string) {
  let last = 0;
  await eventually(
    async () => {
      await t.gateway.verifier.syncChanges();
      last = (await probe()).status;
      return last === status;
    },
    () => `${what}: ${status} (last ${last})`,
  );
}

/** A request from another local address (the loopback range is all ours). */
function callFrom(
  localAddress: string,
  path: string,
  key: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      `${t.url}${path}`,
      { ca: t.ca, localAddress, headers: { authorization: `Bearer ${key}`, ...headers } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('scopes', () => {
  test('a key without a scope gets 403 naming it, with an insufficient_scope challenge', async () => {
    const { key } = await t.createKey('embeddings only', undefined, { scopes: ['embeddings'] });
    const chat = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody(),
    });
    assert.equal(chat.status, 403);
    assert.match((JSON.parse(chat.text) as ErrorBody).message, /scope "chat"/);
    assert.equal(
      chat.headers['www-authenticate'],
      'Bearer realm="keygate", error="insufficient_scope", scope="chat"',
    );
    const models = await t.call('/v1/models', { headers: bearer(key) });
    assert.equal(models.status, 403);
    assert.match((JSON.parse(models.text) as ErrorBody).message, /scope "models"/);
    const embeddings = await t.call('/v1/embeddings', {
      method: 'POST',
      headers: bearer(key),
      body: JSON.stringify({ model: 'mistral-embed', input: 'x' }),
    });
    assert.equal(embeddings.status, 200);
  });

  test('a management-only key cannot call the public API', async () => {
    const { key } = await t.createKey('admin only', undefined, { scopes: ['admin'] });
    const res = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody(),
    });
    assert.equal(res.status, 403);
  });

  test('keys get the inference scopes by default, never management ones', async () => {
    const { id } = await t.createKey('default scopes');
    const key = await t.gateway.store.getKey(id);
    assert.deepEqual(key?.policy.scopes, ['chat', 'fim', 'embeddings', 'models']);
  });
});

describe('model allowlist', () => {
  test('requests for other models get 403 naming the model; patterns work; aliases resolve first', async () => {
    const { key } = await t.createKey('small only', undefined, {
      models: ['mistral-small-*', 'codestral-latest'],
    });
    const ok = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody(),
    });
    assert.equal(ok.status, 200);
    const alias = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody({ model: 'mistral-small' }),
    });
    assert.equal(alias.status, 200, 'mistral-small maps to mistral-small-latest, which is allowed');
    const refused = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody({ model: 'mistral-large-latest' }),
    });
    assert.equal(refused.status, 403);
    const body = JSON.parse(refused.text) as ErrorBody;
    assert.match(body.message, /"mistral-large-latest"/);
    assert.equal(body.code, 'model_not_allowed');
    const card = await t.call('/v1/models/mistral-large-latest', { headers: bearer(key) });
    assert.equal(card.status, 403);
  });

  test('GET /v1/models lists only the models the key may use', async () => {
    const { key } = await t.createKey('listing', undefined, {
      models: ['mistral-small-*', 'codestral-latest'],
    });
    const res = await t.call('/v1/models', { headers: bearer(key) });
    assert.equal(res.status, 200);
    const ids = (JSON.parse(res.text) as { data: { id: string }[] }).data.map((m) => m.id).sort();
    assert.deepEqual(ids, ['codestral-latest', 'mistral-small-latest']);
    assert.equal(Number(res.headers['content-length']), Buffer.byteLength(res.text));
    const { key: all } = await t.createKey('all models');
    const full = await t.call('/v1/models', { headers: bearer(all) });
    assert.ok((JSON.parse(full.text) as { data: unknown[] }).data.length > 2);
  });
});

describe('IP allowlist', () => {
  test('a key allowed for one range works from it and gets 403 elsewhere', async () => {
    const { key } = await t.createKey('office', undefined, { allowedIps: ['127.0.0.2/32', '2001:db8::/32'] });
    const inside = await callFrom('127.0.0.2', '/v1/models', key);
    assert.equal(inside.status, 200, inside.text);
    const outside = await callFrom('127.0.0.1', '/v1/models', key);
    assert.equal(outside.status, 403);
    assert.match((JSON.parse(outside.text) as ErrorBody).message, /127\.0\.0\.1/);
  });

  test('a spoofed X-Forwarded-For from an untrusted peer changes nothing', async () => {
    const { key } = await t.createKey('spoof target', undefined, { allowedIps: ['203.0.113.0/24'] });
    const spoofed = await callFrom('127.0.0.1', '/v1/models', key, { 'x-forwarded-for': '203.0.113.7' });
    assert.equal(spoofed.status, 403);
  });

  test('behind a trusted proxy the forwarded client address is used, right to left', async () => {
    const { key } = await t.createKey('behind proxy', undefined, { allowedIps: ['203.0.113.0/24'] });
    const viaProxy = await callFrom('127.0.0.3', '/v1/models', key, {
      'x-forwarded-for': '198.51.100.1, 203.0.113.7',
    });
    assert.equal(viaProxy.status, 200, viaProxy.text);
    const spoofedLeft = await callFrom('127.0.0.3', '/v1/models', key, {
      'x-forwarded-for': '203.0.113.7, 198.51.100.1',
    });
    assert.equal(spoofedLeft.status, 403, 'only the right-most untrusted hop counts');
  });

  test('the workspace default applies to keys without their own list', async () => {
    const { key } = await t.createKey('workspace default');
    await t.gateway.store.updateWorkspace(
      'ws_default',
      { allowedIps: ['127.0.0.2/32'] },
      CLI_ACTOR,
      Date.now(),
    );
    try {
      await statusBecomes(() => callFrom('127.0.0.1', '/v1/models', key), 403, 'outside the default');
      assert.equal((await callFrom('127.0.0.2', '/v1/models', key)).status, 200);
    } finally {
      await t.gateway.store.updateWorkspace('ws_default', { allowedIps: [] }, CLI_ACTOR, Date.now());
    }
    await statusBecomes(() => callFrom('127.0.0.1', '/v1/models', key), 200, 'the default lifted');
  });
});

describe('rotation and expiry', () => {
  test('after a rotation both secrets work during the grace period, then only the new one', async () => {
    const { id, key: old } = await t.createKey('rotating', undefined, { models: ['mistral-small-*'] });
    assert.equal((await t.call('/v1/models', { headers: bearer(old) })).status, 200);
    const asked = Date.now();
    const rotated = await rotateKey(deps(), id, 1500, CLI_ACTOR);
    // The grace ends 1.5 s after the rotation was written: after `asked + 1500`, by `done + 1500`.
    const done = Date.now();
    assert.equal(rotated.record.id, id, 'the same key record');
    assert.deepEqual(rotated.record.policy.models, ['mistral-small-*'], 'restrictions carry over');
    assert.notEqual(rotated.key, old);
    await t.gateway.verifier.syncChanges(); // the cached old secret is read again, with its grace
    assert.equal(
      (await t.call('/v1/models', { headers: bearer(old) })).status,
      200,
      'old secret within grace',
    );
    assert.equal((await t.call('/v1/models', { headers: bearer(rotated.key) })).status, 200, 'new secret');
    assert.ok(Date.now() < asked + 1500, 'the checks above ran within the grace period');
    // The grace is judged by the clock on every request: once it is past, the old secret is refused.
    await pastTime(done + 1500);
    assert.equal(
      (await t.call('/v1/models', { headers: bearer(old) })).status,
      401,
      'old secret after grace',
    );
    assert.equal((await t.call('/v1/models', { headers: bearer(rotated.key) })).status, 200);
  });

  test('a rotation with no grace kills the old secret at once', async () => {
    const { id, key: old } = await t.createKey('rotate now');
    assert.equal((await t.call('/v1/models', { headers: bearer(old) })).status, 200);
    const rotated = await rotateKey(deps(), id, 0, CLI_ACTOR);
    await statusBecomes(() => t.call('/v1/models', { headers: bearer(old) }), 401, 'the old secret');
    assert.equal((await t.call('/v1/models', { headers: bearer(rotated.key) })).status, 200);
    const events = await t.gateway.store.listAudit({ targetId: id });
    assert.deepEqual(
      events.map((e) => e.action),
      ['key.rotate', 'key.create'],
    );
  });

  test('an expired key gets 401; an update that extends it makes it work again', async () => {
    const { id, key } = await t.createKey('short lived', 700);
    assert.equal((await t.call('/v1/models', { headers: bearer(key) })).status, 200);
    // A real expiry, judged by the clock on every request (the cached record carries it).
    await pastTime((await t.gateway.store.getKey(id))?.expiresAt ?? 0);
    assert.equal((await t.call('/v1/models', { headers: bearer(key) })).status, 401);
    await updateKey(deps(), id, { expiresInMs: 60_000 }, CLI_ACTOR);
    await statusBecomes(() => t.call('/v1/models', { headers: bearer(key) }), 200, 'the extended key');
  });

  test('the workspace policy caps key lifetimes', async () => {
    await t.gateway.store.updateWorkspace(
      'ws_default',
      { maxKeyLifetimeMs: 90 * 86_400_000 },
      CLI_ACTOR,
      Date.now(),
    );
    try {
      await assert.rejects(t.createKey('forever'), /requires keys to expire within 90d/);
      await assert.rejects(t.createKey('too long', 91 * 86_400_000), /at most 90d/);
      const ok = await t.createKey('fine', 30 * 86_400_000);
      assert.ok(ok.id);
    } finally {
      await t.gateway.store.updateWorkspace('ws_default', { maxKeyLifetimeMs: null }, CLI_ACTOR, Date.now());
    }
  });

  test('an update to restrictions takes effect in the running server within a second', async () => {
    const { id, key } = await t.createKey('narrowed later');
    assert.equal(
      (await t.call('/v1/chat/completions', { method: 'POST', headers: bearer(key), body: chatBody() }))
        .status,
      200,
    );
    await updateKey(deps(), id, { scopes: ['embeddings'] }, CLI_ACTOR);
    // Left to the server's own poll of the change feed (every 250 ms): within a second is the claim.
    let status = 200;
    await eventually(
      async () => {
        const res = await t.call('/v1/chat/completions', {
          method: 'POST',
          headers: bearer(key),
          body: chatBody(),
        });
        status = res.status;
        return status === 403;
      },
      () => `403 within a second (last ${status})`,
      1000,
      25,
    );
    const [event] = await t.gateway.store.listAudit({ targetId: id, action: 'key.update' });
    assert.deepEqual(event?.changes.scopes, {
      before: ['chat', 'fim', 'embeddings', 'models'],
      after: ['embeddings'],
    });
    assert.deepEqual(event?.actor, CLI_ACTOR);
  });
});
