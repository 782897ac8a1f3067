/**
 * The management API (/admin/v1) over real HTTP against a real SQLite store: every route, who may
 * call what, workspace isolation, privilege escalation, validation, the OpenAPI document, and that
 * no secret leaks into a response or a log line.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setGlobalDispatcher } from 'undici';
import type { z } from 'zod';
import type { KeyVerifier } from '../../src/auth/verifier.ts';
import { ROUTES } from '../../src/http/admin/index.ts';
import * as S from '../../src/http/admin/schemas.ts';
import { createKey, type KeyRestrictions } from '../../src/keys/service.ts';
import { CLI_ACTOR, DEFAULT_WORKSPACE_ID, type Scope, type Store } from '../../src/store/types.ts';
import { createUser, setRole } from '../../src/users/service.ts';
import { newId } from '../../src/util/ids.ts';
import { startTestGateway } from '../support/gateway.ts';

const KEY_SHAPED = /kg_[0-9A-Za-z]{38}/;
const OTHER_WS = 'ws_other';

interface Response {
  status: number;
  headers: Headers;
  text: string;
  json: unknown;
}

interface CallOptions {
  key?: string | undefined;
  body?: unknown;
  /** A raw body, sent as it is. */
  raw?: string;
  headers?: Record<string, string>;
}

interface AdminHarness {
  url: string;
  store: Store;
  verifier: KeyVerifier;
  logLines: string[];
  /** Every response received, for the secret-leak checks. */
  responses: { method: string; path: string; status: number; text: string }[];
  /** Creates a key directly in the store (not through the API). */
  mint(
    scopes?: Scope[],
    workspaceId?: string,
    name?: string,
    restrictions?: KeyRestrictions,
  ): Promise<{ id: string; key: string }>;
  call(method: string, path: string, options?: CallOptions): Promise<Response>;
  close(): Promise<void>;
}

/** The management API through the real gateway (HTTPS, SQLite) in front of the upstream stub. */
async function startAdmin(): Promise<AdminHarness> {
  // The table's alert channels go to loopback, which an operator must allow (alerts.allowedDestinations).
  const t = await startTestGateway({
    configure: (c) => {
      c.alerts.allowedDestinations = ['127.0.0.0/8', '::1/128'];
      c.alerts.maxChannelsPerWorkspace = 1000;
      c.alerts.testSendsPerMinute = 1000;
    },
  });
  // The SDK-free calls below use the global fetch: make it trust the gateway's certificate.
  setGlobalDispatcher(t.dispatcher);
  const { store, verifier } = t.gateway;
  await store.createWorkspace({ id: OTHER_WS, name: 'Other team', createdAt: Date.now() }, CLI_ACTOR);
  const responses: AdminHarness['responses'] = [];
  return {
    url: t.url,
    store,
    verifier,
    logLines: t.logLines,
    responses,
    async mint(scopes, workspaceId = DEFAULT_WORKSPACE_ID, name = 'test key', restrictions = {}) {
      const created = await createKey(
        { store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix },
        { name, scopes, workspaceId, ...restrictions },
      );
      return { id: created.record.id, key: created.key };
    },
    async call(method, path, options = {}) {
      const headers: Record<string, string> = { ...options.headers };
      if (options.key !== undefined) headers.authorization = `Bearer ${options.key}`;
      let body: string | undefined;
      if (options.raw !== undefined) body = options.raw;
      else if (options.body !== undefined) body = JSON.stringify(options.body);
      if (body !== undefined) headers['content-type'] ??= 'application/json';
      const res = await fetch(t.url + path, { method, headers, body });
      const text = await res.text();
      responses.push({ method, path, status: res.status, text });
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: res.status, headers: res.headers, text, json };
    },
    async close() {
      await new Promise<void>((resolve) => t.gateway.logger.flush(() => resolve()));
      await t.close();
    },
  };
}

/** Parses a body with the route's response schema: the schema and the handler must agree. */
function expectBody<T extends z.ZodType>(res: Response, status: number, schema: T): z.output<T> {
  assert.equal(res.status, status, res.text);
  const parsed = schema.safeParse(res.json);
  assert.ok(parsed.success, `response does not match its schema: ${res.text}\n${parsed.error?.message}`);
  return parsed.data;
}

function expectError(res: Response, status: number, code: string) {
  assert.equal(res.status, status, res.text);
  const body = (status === 422 ? S.ValidationError : S.ErrorResponse).parse(res.json);
  assert.equal(body.code, code, res.text);
  assert.equal(body.error.message, body.message);
  return body;
}

function expectValidation(res: Response, loc: (string | number)[], msg: RegExp) {
  const body = S.ValidationError.parse(expectError(res, 422, 'validation_error'));
  const issue = body.detail.find((d) => JSON.stringify(d.loc) === JSON.stringify(loc));
  assert.ok(issue, `no issue at ${JSON.stringify(loc)}: ${JSON.stringify(body.detail)}`);
  assert.match(issue.msg, msg);
  return body;
}

let h: AdminHarness;
let admin: { id: string; key: string };

before(async () => {
  h = await startAdmin();
  admin = await h.mint(['admin'], DEFAULT_WORKSPACE_ID, 'operator');
});
after(async () => {
  await h.close();
});

describe('happy paths', () => {
  test('POST /keys creates a key whose secret works, GET shows it, list finds it', async () => {
    const res = await h.call('POST', '/admin/v1/keys', {
      key: admin.key,
      body: {
        name: 'ci pipeline',
        scopes: ['chat', 'embeddings'],
        models: ['mistral-small-*'],
        allowed_ips: ['10.0.0.0/8', '2001:db8::1'],
        limits: { requests_per_minute: 60, tokens_per_minute: 10000 },
        budget: { tokens_per_month: 1_000_000 },
        expires_in: '90d',
      },
    });
    const created = expectBody(res, 201, S.CreatedKey);
    assert.match(created.key, KEY_SHAPED);
    assert.equal(res.headers.get('location'), `/admin/v1/keys/${created.id}`);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(created.workspace_id, DEFAULT_WORKSPACE_ID);
    assert.deepEqual(created.scopes, ['chat', 'embeddings']);
    assert.deepEqual(created.allowed_ips, ['10.0.0.0/8', '2001:db8::1/128']);
    assert.deepEqual(created.limits, {
      requests_per_minute: 60,
      tokens_per_minute: 10000,
      concurrent_requests: null,
    });
    assert.deepEqual(created.budget, { tokens_per_day: null, tokens_per_month: 1_000_000 });
    assert.equal(created.created_by, admin.id);
    const expiresIn = Date.parse(created.expires_at ?? '') - Date.now();
    assert.ok(expiresIn > 89 * 86_400_000 && expiresIn <= 90 * 86_400_000);
    assert.ok(created.display.startsWith(created.key.slice(0, 7)));

    const verdict = await h.verifier.verify(created.key);
    assert.ok(verdict.ok);
    assert.equal(verdict.key.id, created.id);

    const shown = expectBody(
      await h.call('GET', `/admin/v1/keys/${created.id}`, { key: admin.key }),
      200,
      S.Key,
    );
    const { key: _secret, ...view } = created;
    assert.deepEqual(shown, view);

    const list = expectBody(
      await h.call('GET', '/admin/v1/keys?search=ci%20pipe', { key: admin.key }),
      200,
      S.KeyList,
    );
    assert.deepEqual(
      list.data.map((k) => k.id),
      [created.id],
    );
    assert.equal(list.next_after, null);
  });

  test('GET /keys pages with limit and next_after, and filters by status', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await h.mint(['chat'], DEFAULT_WORKSPACE_ID, `page ${i}`)).id);
    const seen: string[] = [];
    let after: string | null = null;
    let pages = 0;
    do {
      const query: string = `search=page%20&limit=2${after ? `&after=${after}` : ''}`;
      const page = expectBody(
        await h.call('GET', `/admin/v1/keys?${query}`, { key: admin.key }),
        200,
        S.KeyList,
      );
      assert.ok(page.data.length <= 2);
      seen.push(...page.data.map((k) => k.id));
      after = page.next_after;
      pages++;
    } while (after !== null && pages < 10);
    // Listing order is (created_at, id): keys made in the same millisecond sort by id.
    assert.equal(new Set(seen).size, seen.length, 'no key on two pages');
    assert.deepEqual([...seen].sort(), [...ids].sort());
    assert.equal(pages, 3);

    const first = ids[0] ?? '';
    await h.call('POST', `/admin/v1/keys/${first}/revoke`, { key: admin.key });
    const revoked = expectBody(
      await h.call('GET', '/admin/v1/keys?status=revoked&search=page%20', { key: admin.key }),
      200,
      S.KeyList,
    );
    assert.deepEqual(
      revoked.data.map((k) => k.id),
      [first],
    );
  });

  test('PATCH /keys/{id} changes fields, null removes them, and the audit log has before and after', async () => {
    const target = await h.mint(['chat'], DEFAULT_WORKSPACE_ID, 'before');
    await h.call('PATCH', `/admin/v1/keys/${target.id}`, {
      key: admin.key,
      body: { limits: { requests_per_minute: 5 }, expires_in: 3600 },
    });
    const res = await h.call('PATCH', `/admin/v1/keys/${target.id}`, {
      key: admin.key,
      body: {
        name: 'after',
        scopes: ['chat', 'fim'],
        limits: { requests_per_minute: null, concurrent_requests: 2 },
        budget: { tokens_per_day: 5000 },
        expires_in: null,
      },
    });
    const updated = expectBody(res, 200, S.Key);
    assert.equal(updated.name, 'after');
    assert.deepEqual(updated.scopes, ['chat', 'fim']);
    assert.deepEqual(updated.limits, {
      requests_per_minute: null,
      tokens_per_minute: null,
      concurrent_requests: 2,
    });
    assert.deepEqual(updated.budget, { tokens_per_day: 5000, tokens_per_month: null });
    assert.equal(updated.expires_at, null);
    assert.ok(updated.updated_at !== null);

    const audit = expectBody(
      await h.call('GET', `/admin/v1/audit?target_id=${target.id}&action=key.update`, { key: admin.key }),
      200,
      S.AuditList,
    );
    assert.equal(audit.data.length, 2);
    const [event] = audit.data;
    assert.ok(event);
    assert.equal(event.action, 'key.update');
    assert.deepEqual(event.target, { type: 'key', id: target.id });
    assert.deepEqual(event.actor, { type: 'key', id: admin.id, ip: '127.0.0.1' });
    assert.equal(event.workspace_id, DEFAULT_WORKSPACE_ID);
    assert.deepEqual(event.changes.name, { before: 'before', after: 'after' });
    assert.deepEqual(event.changes.scopes, { before: ['chat'], after: ['chat', 'fim'] });
    assert.deepEqual(event.changes.rpm, { before: 5, after: null });
    assert.equal(event.changes.expires_at?.after, null);
    // Times in changes are shown as ISO 8601, like `at` (test/regression/audit-times-and-grace-end.test.ts).
    assert.match(String(event.changes.expires_at?.before), /^\d{4}-\d{2}-\d{2}T.*Z$/);
  });

  test('POST /keys/{id}/rotate: a new secret; the old one works within the grace period', async () => {
    const target = await h.mint(['chat']);
    const res = await h.call('POST', `/admin/v1/keys/${target.id}/rotate`, {
      key: admin.key,
      body: { grace: '1h' },
    });
    const rotated = expectBody(res, 200, S.RotatedKey);
    assert.match(rotated.key, KEY_SHAPED);
    assert.notEqual(rotated.key, target.key);
    assert.equal(rotated.id, target.id);
    assert.ok(rotated.rotated_at !== null);
    const graceLeft = Date.parse(rotated.previous_secret_valid_until) - Date.now();
    assert.ok(graceLeft > 3_500_000 && graceLeft <= 3_600_000, String(graceLeft));
    assert.ok((await h.verifier.verify(rotated.key)).ok, 'the new secret works');
    assert.ok((await h.verifier.verify(target.key)).ok, 'the old secret works within the grace period');

    // With no body at all the grace period is 24h.
    const again = expectBody(
      await h.call('POST', `/admin/v1/keys/${target.id}/rotate`, { key: admin.key }),
      200,
      S.RotatedKey,
    );
    const defaultGrace = Date.parse(again.previous_secret_valid_until) - Date.now();
    assert.ok(defaultGrace > 23.9 * 3_600_000 && defaultGrace <= 24 * 3_600_000);
  });

  test('rotate with grace 0 ends the old secret at once', async () => {
    const target = await h.mint(['chat']);
    assert.ok((await h.verifier.verify(target.key)).ok, 'cached before the rotation');
    const rotated = expectBody(
      await h.call('POST', `/admin/v1/keys/${target.id}/rotate`, { key: admin.key, body: { grace: 0 } }),
      200,
      S.RotatedKey,
    );
    assert.equal((await h.verifier.verify(target.key)).ok, false, 'the old secret no longer works');
    assert.ok((await h.verifier.verify(rotated.key)).ok);
  });

  test('POST /keys/{id}/revoke: the key stops working at once, also against this API', async () => {
    const target = await h.mint(['keys:read']);
    expectBody(await h.call('GET', '/admin/v1/keys', { key: target.key }), 200, S.KeyList);
    const revoked = expectBody(
      await h.call('POST', `/admin/v1/keys/${target.id}/revoke`, { key: admin.key }),
      200,
      S.Key,
    );
    assert.equal(revoked.status, 'revoked');
    assert.ok(revoked.revoked_at !== null);
    assert.equal((await h.verifier.verify(target.key)).ok, false);
    expectError(await h.call('GET', '/admin/v1/keys', { key: target.key }), 401, 'invalid_api_key');
    // Idempotent, and a revoked key cannot be rotated.
    const again = expectBody(
      await h.call('POST', `/admin/v1/keys/${target.id}/revoke`, { key: admin.key, body: {} }),
      200,
      S.Key,
    );
    assert.equal(again.revoked_at, revoked.revoked_at);
    expectError(
      await h.call('POST', `/admin/v1/keys/${target.id}/rotate`, { key: admin.key }),
      409,
      'conflict',
    );
    const audit = expectBody(
      await h.call('GET', `/admin/v1/audit?target_id=${target.id}`, { key: admin.key }),
      200,
      S.AuditList,
    );
    assert.deepEqual(
      audit.data.map((e) => e.action),
      ['key.revoke', 'key.create'],
    );
  });

  test('workspaces: list, get, and PATCH the policy (which then applies to new keys)', async () => {
    const list = expectBody(
      await h.call('GET', '/admin/v1/workspaces', { key: admin.key }),
      200,
      S.WorkspaceList,
    );
    assert.deepEqual(list.data.map((w) => w.id).sort(), [OTHER_WS, DEFAULT_WORKSPACE_ID].sort());
    const ws = expectBody(
      await h.call('GET', `/admin/v1/workspaces/${OTHER_WS}`, { key: admin.key }),
      200,
      S.Workspace,
    );
    assert.equal(ws.name, 'Other team');

    const patched = expectBody(
      await h.call('PATCH', `/admin/v1/workspaces/${OTHER_WS}`, {
        key: admin.key,
        body: {
          name: 'Other team (renamed)',
          max_key_lifetime: '30d',
          allowed_ips: ['192.168.0.0/16'],
          budget: { tokens_per_month: 9_000_000 },
        },
      }),
      200,
      S.Workspace,
    );
    assert.deepEqual(patched.policy, {
      max_key_lifetime: '30d',
      allowed_ips: ['192.168.0.0/16'],
      budget: { tokens_per_day: null, tokens_per_month: 9_000_000 },
    });
    expectValidation(
      await h.call('POST', '/admin/v1/keys', { key: admin.key, body: { name: 'x', workspace_id: OTHER_WS } }),
      ['body', 'expires_in'],
      /requires keys to expire within 30d/,
    );
    expectValidation(
      await h.call('POST', '/admin/v1/keys', {
        key: admin.key,
        body: { name: 'x', workspace_id: OTHER_WS, expires_in: '90d' },
      }),
      ['body', 'expires_in'],
      /at most 30d/,
    );
    const ok = expectBody(
      await h.call('POST', '/admin/v1/keys', {
        key: admin.key,
        body: { name: 'short-lived', workspace_id: OTHER_WS, expires_in: '7d' },
      }),
      201,
      S.CreatedKey,
    );
    assert.equal(ok.workspace_id, OTHER_WS);

    const reset = expectBody(
      await h.call('PATCH', `/admin/v1/workspaces/${OTHER_WS}`, {
        key: admin.key,
        body: { name: 'Other team', max_key_lifetime: null, allowed_ips: [], budget: null },
      }),
      200,
      S.Workspace,
    );
    assert.deepEqual(reset.policy, {
      max_key_lifetime: null,
      allowed_ips: [],
      budget: { tokens_per_day: null, tokens_per_month: null },
    });
    const audit = expectBody(
      await h.call('GET', `/admin/v1/audit?target_id=${OTHER_WS}&action=workspace.update`, {
        key: admin.key,
      }),
      200,
      S.AuditList,
    );
    assert.equal(audit.data.length, 2);
    assert.deepEqual(audit.data[1]?.changes.name, { before: 'Other team', after: 'Other team (renamed)' });
  });

  test('GET /audit pages backwards with before, and filters by since', async () => {
    const all = expectBody(
      await h.call('GET', '/admin/v1/audit?limit=3', { key: admin.key }),
      200,
      S.AuditList,
    );
    assert.equal(all.data.length, 3);
    assert.ok(all.next_before !== null);
    const seqs = all.data.map((e) => e.seq);
    assert.deepEqual(
      seqs,
      [...seqs].sort((a, b) => b - a),
    );
    const next = expectBody(
      await h.call('GET', `/admin/v1/audit?limit=3&before=${all.next_before}`, { key: admin.key }),
      200,
      S.AuditList,
    );
    assert.ok(next.data.every((e) => e.seq < (all.next_before ?? 0)));
    const future = new Date(Date.now() + 60_000).toISOString();
    const none = expectBody(
      await h.call('GET', `/admin/v1/audit?since=${encodeURIComponent(future)}`, { key: admin.key }),
      200,
      S.AuditList,
    );
    assert.deepEqual(none, { data: [], next_before: null });
  });

  test('GET /usage: per-key totals, filtered by key and time', async () => {
    const user = await h.mint(['chat'], DEFAULT_WORKSPACE_ID, 'usage key');
    const now = Date.now();
    const record = (id: string, time: number, status: number, prompt: number, completion: number) => ({
      id,
      time,
      keyId: user.id,
      workspaceId: DEFAULT_WORKSPACE_ID,
      model: 'mistral-small-latest',
      endpoint: '/v1/chat/completions',
      status,
      promptTokens: prompt,
      completionTokens: completion,
      totalTokens: prompt + completion,
      latencyMs: 12,
      ttftMs: null,
      clientIp: '127.0.0.1',
    });
    await h.store.recordUsage([
      record(`req_${user.id}_1`, now - 3_600_000, 200, 10, 5),
      record(`req_${user.id}_2`, now - 1000, 200, 20, 7),
      record(`req_${user.id}_3`, now - 500, 429, 0, 0),
    ]);
    const usage = expectBody(
      await h.call('GET', `/admin/v1/usage?key_id=${user.id}`, { key: admin.key }),
      200,
      S.UsageList,
    );
    assert.deepEqual(usage.data, [
      {
        key_id: user.id,
        name: 'usage key',
        requests: 3,
        errors: 1,
        prompt_tokens: 30,
        completion_tokens: 12,
        total_tokens: 42,
        estimated_requests: 0,
        latency_avg_ms: 12,
        latency_p50_ms: 12,
        latency_p95_ms: 12,
        cost: null,
        currency: 'EUR',
      },
    ]);
    const since = new Date(now - 60_000).toISOString();
    const recent = expectBody(
      await h.call('GET', `/admin/v1/usage?key_id=${user.id}&since=${encodeURIComponent(since)}`, {
        key: admin.key,
      }),
      200,
      S.UsageList,
    );
    assert.equal(recent.data[0]?.requests, 2);
    assert.equal(recent.data[0]?.total_tokens, 27);
    const everyone = expectBody(await h.call('GET', '/admin/v1/usage', { key: admin.key }), 200, S.UsageList);
    assert.ok(everyone.data.some((t) => t.key_id === user.id));
  });
});

describe('who may call what', () => {
  type Caller = 'admin' | 'keys:read' | 'keys:write' | 'audit:read' | 'inference' | 'none';
  const CALLER_SCOPES: Record<Exclude<Caller, 'none'>, Scope[] | undefined> = {
    admin: ['admin'],
    'keys:read': ['keys:read'],
    'keys:write': ['keys:write'],
    'audit:read': ['audit:read'],
    inference: undefined,
  };

  interface Row {
    op: string;
    /** The scope this test expects the route to need (written here, not read from the route table). */
    scope: string | null;
    success: number;
    request(target: string): { path: string; body?: unknown };
  }
  const TABLE: Row[] = [
    {
      op: 'GET /admin/v1/keys',
      scope: 'keys:read',
      success: 200,
      request: () => ({ path: '/admin/v1/keys' }),
    },
    {
      op: 'POST /admin/v1/keys',
      scope: 'keys:write',
      success: 201,
      request: () => ({ path: '/admin/v1/keys', body: { name: 'table' } }),
    },
    {
      op: 'GET /admin/v1/keys/{id}',
      scope: 'keys:read',
      success: 200,
      request: (t) => ({ path: `/admin/v1/keys/${t}` }),
    },
    {
      op: 'PATCH /admin/v1/keys/{id}',
      scope: 'keys:write',
      success: 200,
      request: (t) => ({ path: `/admin/v1/keys/${t}`, body: { name: 'renamed' } }),
    },
    {
      op: 'POST /admin/v1/keys/{id}/revoke',
      scope: 'keys:write',
      success: 200,
      request: (t) => ({ path: `/admin/v1/keys/${t}/revoke` }),
    },
    {
      op: 'POST /admin/v1/keys/{id}/rotate',
      scope: 'keys:write',
      success: 200,
      request: (t) => ({ path: `/admin/v1/keys/${t}/rotate`, body: { grace: '1m' } }),
    },
    {
      op: 'GET /admin/v1/workspaces',
      scope: 'workspaces:read',
      success: 200,
      request: () => ({ path: '/admin/v1/workspaces' }),
    },
    {
      op: 'GET /admin/v1/workspaces/{id}',
      scope: 'workspaces:read',
      success: 200,
      request: () => ({ path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}` }),
    },
    {
      op: 'PATCH /admin/v1/workspaces/{id}',
      scope: 'workspaces:write',
      success: 200,
      request: () => ({ path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}`, body: { name: 'Default' } }),
    },
    {
      op: 'POST /admin/v1/workspaces',
      scope: 'workspaces:write',
      success: 201,
      request: () => ({ path: '/admin/v1/workspaces', body: { name: 'table workspace' } }),
    },
    {
      op: 'GET /admin/v1/workspaces/{id}/members',
      scope: 'workspaces:read',
      success: 200,
      request: () => ({ path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/members` }),
    },
    {
      op: 'PUT /admin/v1/workspaces/{id}/members/{user}',
      scope: 'workspaces:write',
      success: 200,
      request: () => ({
        path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/members/table-put@example.com`,
        body: { role: 'viewer' },
      }),
    },
    {
      op: 'DELETE /admin/v1/workspaces/{id}/members/{user}',
      scope: 'workspaces:write',
      success: 200,
      request: () => ({
        path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/members/table-delete@example.com`,
      }),
    },
    {
      op: 'POST /admin/v1/workspaces/{id}/invites',
      scope: 'workspaces:write',
      success: 201,
      request: () => ({
        path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/invites`,
        body: { email: 'table-invited@example.com', role: 'member' },
      }),
    },
    {
      op: 'GET /admin/v1/workspaces/{id}/invites',
      scope: 'workspaces:read',
      success: 200,
      request: () => ({ path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/invites` }),
    },
    {
      op: 'DELETE /admin/v1/workspaces/{id}/invites/{invite_id}',
      scope: 'workspaces:write',
      success: 200,
      request: () => ({ path: `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/invites/${tableInvite}` }),
    },
    {
      op: 'GET /admin/v1/audit',
      scope: 'audit:read',
      success: 200,
      request: () => ({ path: '/admin/v1/audit' }),
    },
    {
      op: 'GET /admin/v1/usage',
      scope: 'usage:read',
      success: 200,
      request: () => ({ path: '/admin/v1/usage' }),
    },
    {
      op: 'GET /admin/v1/alerts',
      scope: 'usage:read',
      success: 200,
      request: () => ({ path: '/admin/v1/alerts' }),
    },
    {
      op: 'GET /admin/v1/alerts/{id}',
      scope: 'usage:read',
      success: 200,
      request: () => ({ path: `/admin/v1/alerts/${tableAlert}` }),
    },
    {
      op: 'POST /admin/v1/alerts/{id}/acknowledge',
      scope: 'workspaces:write',
      success: 200,
      request: () => ({ path: `/admin/v1/alerts/${tableAlert}/acknowledge` }),
    },
    {
      op: 'GET /admin/v1/alerts/channels',
      scope: 'usage:read',
      success: 200,
      request: () => ({ path: '/admin/v1/alerts/channels' }),
    },
    {
      op: 'POST /admin/v1/alerts/channels',
      scope: 'workspaces:write',
      success: 201,
      // Port 9 (discard) on loopback: nothing listens, so test sends fail at once.
      request: () => ({
        path: '/admin/v1/alerts/channels',
        body: { type: 'webhook', url: 'http://127.0.0.1:9/table' },
      }),
    },
    {
      op: 'DELETE /admin/v1/alerts/channels/{id}',
      scope: 'workspaces:write',
      success: 200,
      request: () => ({ path: `/admin/v1/alerts/channels/${tableChannel}` }),
    },
    {
      op: 'POST /admin/v1/alerts/test',
      scope: 'workspaces:write',
      success: 200,
      request: () => ({ path: '/admin/v1/alerts/test' }),
    },
    {
      op: 'GET /admin/v1/alerts/rules',
      scope: 'usage:read',
      success: 200,
      request: () => ({ path: '/admin/v1/alerts/rules' }),
    },
    // The values are the defaults: the rows change nothing that other tests see.
    {
      op: 'PUT /admin/v1/alerts/rules/usage_spike',
      scope: 'workspaces:write',
      success: 200,
      request: () => ({ path: '/admin/v1/alerts/rules/usage_spike', body: { window_minutes: 5 } }),
    },
    {
      op: 'PUT /admin/v1/alerts/rules/budget_threshold',
      scope: 'workspaces:write',
      success: 200,
      request: () => ({
        path: '/admin/v1/alerts/rules/budget_threshold',
        body: { thresholds: [50, 80, 100] },
      }),
    },
    {
      op: 'PUT /admin/v1/alerts/rules/new_network',
      scope: 'workspaces:write',
      success: 200,
      request: () => ({ path: '/admin/v1/alerts/rules/new_network', body: { enabled: true } }),
    },
    {
      op: 'PUT /admin/v1/alerts/rules/auth_failures',
      scope: 'workspaces:write',
      success: 200,
      request: () => ({ path: '/admin/v1/alerts/rules/auth_failures', body: {} }),
    },
    {
      op: 'PUT /admin/v1/alerts/rules/key_expiring',
      scope: 'workspaces:write',
      success: 200,
      request: () => ({ path: '/admin/v1/alerts/rules/key_expiring', body: { cooldown_minutes: 1440 } }),
    },
    {
      op: 'GET /admin/v1/openapi.json',
      scope: null,
      success: 200,
      request: () => ({ path: '/admin/v1/openapi.json' }),
    },
  ];

  /** An alert and a channel for the rows that act on one (only the admin caller succeeds, once). */
  let tableAlert = '';
  let tableChannel = '';
  let tableInvite = '';

  before(async () => {
    const { alert } = await h.store.raiseAlert(
      {
        id: newId('alr'),
        workspaceId: DEFAULT_WORKSPACE_ID,
        kind: 'new_network',
        fingerprint: 'table',
        keyId: null,
        severity: 'warning',
        title: 'table alert',
        message: 'for the table',
        details: {},
        at: Date.now(),
      },
      0,
    );
    tableAlert = alert.id;
    const channel = await h.call('POST', '/admin/v1/alerts/channels', {
      key: admin.key,
      body: { type: 'slack', url: 'http://127.0.0.1:9/services/table' },
    });
    assert.equal(channel.status, 201, channel.text);
    tableChannel = (channel.json as { id: string }).id;
    const invite = await h.call('POST', `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/invites`, {
      key: admin.key,
      body: { email: 'table-invite@example.com', role: 'viewer' },
    });
    assert.equal(invite.status, 201, invite.text);
    tableInvite = (invite.json as { id: string }).id;
    for (const email of ['table-put@example.com', 'table-delete@example.com']) {
      await createUser(h.store, { email, password: 'a long enough password' }, CLI_ACTOR);
    }
    await setRole(
      h.store,
      { workspaceId: DEFAULT_WORKSPACE_ID, user: 'table-delete@example.com', role: 'viewer' },
      CLI_ACTOR,
    );
  });

  test('the table covers every served route', () => {
    assert.deepEqual(TABLE.map((r) => r.op).sort(), ROUTES.map((r) => `${r.method} ${r.path}`).sort());
    for (const route of ROUTES) {
      const row = TABLE.find((r) => r.op === `${route.method} ${route.path}`);
      assert.equal(route.scope, row?.scope, `${route.method} ${route.path}`);
    }
  });

  for (const row of TABLE) {
    test(`${row.op}: status per caller`, async () => {
      for (const caller of ['admin', 'keys:read', 'keys:write', 'audit:read', 'inference', 'none'] as const) {
        const callerKey = caller === 'none' ? undefined : (await h.mint(CALLER_SCOPES[caller])).key;
        const target = (await h.mint(['chat'])).id;
        const { path, body } = row.request(target);
        const method = row.op.split(' ')[0] ?? 'GET';
        const res = await h.call(method, path, { key: callerKey, body });
        const granted = caller === 'admin' || caller === row.scope;
        const expected =
          row.scope === null ? row.success : caller === 'none' ? 401 : granted ? row.success : 403;
        assert.equal(res.status, expected, `${row.op} as ${caller}: ${res.text}`);
        if (expected === 401) {
          assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="keygate"');
        }
        if (expected === 403) {
          assert.equal(
            res.headers.get('www-authenticate'),
            `Bearer realm="keygate", error="insufficient_scope", scope="${row.scope}"`,
          );
          const error = expectError(res, 403, 'insufficient_scope');
          assert.match(error.message, new RegExp(`"${row.scope}"`));
        }
      }
    });
  }
});

describe('workspaces and members', () => {
  test('create a workspace, add members, change roles, keep the last owner', async () => {
    const created = expectBody(
      await h.call('POST', '/admin/v1/workspaces', { key: admin.key, body: { name: 'Research' } }),
      201,
      S.Workspace,
    );
    assert.match(created.id, /^ws_/);
    const base = `/admin/v1/workspaces/${created.id}/members`;
    await createUser(h.store, { email: 'lead@example.com', password: 'lead password 123' }, CLI_ACTOR);
    await createUser(h.store, { email: 'dev@example.com', password: 'dev password 1234' }, CLI_ACTOR);
    const lead = expectBody(
      await h.call('PUT', `${base}/lead@example.com`, { key: admin.key, body: { role: 'owner' } }),
      200,
      S.Member,
    );
    assert.equal(lead.role, 'owner');
    expectBody(
      await h.call('PUT', `${base}/DEV@example.com`, { key: admin.key, body: { role: 'member' } }),
      200,
      S.Member,
    );
    expectBody(
      await h.call('PUT', `${base}/dev@example.com`, { key: admin.key, body: { role: 'viewer' } }),
      200,
      S.Member,
    );
    const list = expectBody(await h.call('GET', base, { key: admin.key }), 200, S.MemberList);
    assert.deepEqual(
      list.data.map((m) => [m.email, m.role]),
      [
        ['lead@example.com', 'owner'],
        ['dev@example.com', 'viewer'],
      ],
    );
    expectError(
      await h.call('PUT', `${base}/lead@example.com`, { key: admin.key, body: { role: 'admin' } }),
      409,
      'conflict',
    );
    expectError(await h.call('DELETE', `${base}/lead@example.com`, { key: admin.key }), 409, 'conflict');
    expectError(
      await h.call('PUT', `${base}/nobody@example.com`, { key: admin.key, body: { role: 'viewer' } }),
      404,
      'not_found',
    );
    expectValidation(
      await h.call('PUT', `${base}/dev@example.com`, { key: admin.key, body: { role: 'god' } }),
      ['body', 'role'],
      /./,
    );
    expectBody(await h.call('DELETE', `${base}/dev@example.com`, { key: admin.key }), 200, S.Removed);
    expectError(await h.call('DELETE', `${base}/dev@example.com`, { key: admin.key }), 404, 'not_found');
    const actions = expectBody(
      await h.call('GET', `/admin/v1/audit?workspace_id=${created.id}`, { key: admin.key }),
      200,
      S.AuditList,
    ).data.map((e) => e.action);
    assert.deepEqual(actions.reverse(), [
      'workspace.create',
      'member.add',
      'member.add',
      'member.role',
      'member.remove',
    ]);
  });

  test("a workspace key cannot create workspaces or touch another workspace's members", async () => {
    const local = await h.mint(['admin'], OTHER_WS);
    const refused = await h.call('POST', '/admin/v1/workspaces', { key: local.key, body: { name: 'nope' } });
    assert.equal(refused.status, 403);
    expectError(
      await h.call('GET', `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}/members`, { key: local.key }),
      404,
      'not_found',
    );
  });
});

describe('authentication', () => {
  test('missing, malformed, unknown and misplaced credentials', async () => {
    const missing = await h.call('GET', '/admin/v1/keys');
    expectError(missing, 401, 'missing_api_key');
    assert.equal(missing.headers.get('www-authenticate'), 'Bearer realm="keygate"');

    const basic = await h.call('GET', '/admin/v1/keys', { headers: { authorization: 'Basic dXNlcjpwYXNz' } });
    expectError(basic, 400, 'invalid_authorization');
    assert.match(basic.headers.get('www-authenticate') ?? '', /error="invalid_request"/);
    const malformed = await h.call('GET', '/admin/v1/keys', { headers: { authorization: 'Bearer a b' } });
    expectError(malformed, 400, 'invalid_authorization');
    assert.match(malformed.headers.get('www-authenticate') ?? '', /error="invalid_request"/);

    const unknown = await h.call('GET', '/admin/v1/keys', {
      key: 'kg_00000000000000000000000000000000000000',
    });
    expectError(unknown, 401, 'invalid_api_key');
    assert.match(unknown.headers.get('www-authenticate') ?? '', /error="invalid_token"/);

    expectError(
      await h.call('GET', `/admin/v1/keys?api_key=${admin.key.slice(0, 10)}`, { key: admin.key }),
      400,
      'key_in_url',
    );
  });

  test('a secret pasted into a path, a query or a field is not echoed back', async () => {
    const secret = (await h.mint(['chat'])).key;
    const asKey = { key: admin.key };
    const noSecret = (res: Response) => assert.doesNotMatch(res.text, KEY_SHAPED);
    const byId = await h.call('GET', `/admin/v1/keys/${secret}`, asKey);
    expectError(byId, 404, 'not_found');
    noSecret(byId);
    const route = await h.call('GET', `/admin/v1/${secret}`, asKey);
    expectError(route, 404, 'not_found');
    noSecret(route);
    const method = await h.call('DELETE', `/admin/v1/keys/${secret}`, asKey);
    expectError(method, 405, 'method_not_allowed');
    noSecret(method);
    const search = expectBody(await h.call('GET', `/admin/v1/keys?search=${secret}`, asKey), 200, S.KeyList);
    assert.deepEqual(search.data, []);
    const scope = await h.call('POST', '/admin/v1/keys', { ...asKey, body: { name: 'x', scopes: [secret] } });
    expectValidation(scope, ['body', 'scopes', 0], /unknown scope "\[secret\]"/);
    noSecret(scope);
    const field = await h.call('POST', '/admin/v1/keys', { ...asKey, body: { name: 'x', [secret]: 1 } });
    expectValidation(field, ['body', '[secret]'], /unknown field/);
    noSecret(field);
    const models = await h.call('POST', '/admin/v1/keys', {
      ...asKey,
      body: { name: 'x', models: [` ${secret} x`] },
    });
    expectError(models, 422, 'validation_error');
    noSecret(models);
  });

  test('a key used from outside its IP allowlist gets 403', async () => {
    const created = expectBody(
      await h.call('POST', '/admin/v1/keys', {
        key: admin.key,
        body: { name: 'fenced admin', scopes: ['keys:read'], allowed_ips: ['10.0.0.0/8'] },
      }),
      201,
      S.CreatedKey,
    );
    expectError(await h.call('GET', '/admin/v1/keys', { key: created.key }), 403, 'ip_not_allowed');
  });

  test('unknown routes get 404 and wrong methods 405 with Allow (after authentication)', async () => {
    expectError(await h.call('GET', '/admin/v1/nothing', { key: admin.key }), 404, 'not_found');
    expectError(await h.call('GET', '/admin/v1/keys/a/b/c', { key: admin.key }), 404, 'not_found');
    const wrong = await h.call('DELETE', '/admin/v1/keys/key_x', { key: admin.key });
    expectError(wrong, 405, 'method_not_allowed');
    assert.equal(wrong.headers.get('allow'), 'GET, PATCH');
    const put = await h.call('PUT', '/admin/v1/keys', { key: admin.key });
    assert.equal(put.headers.get('allow'), 'GET, POST');
    expectError(await h.call('GET', '/admin/v1/nothing'), 401, 'missing_api_key');
  });
});

describe('validation', () => {
  const create = (body: unknown) => h.call('POST', '/admin/v1/keys', { key: admin.key, body });

  test('unknown fields are refused, nested ones too', async () => {
    const res = await create({ name: 'x', colour: 'blue' });
    const body = expectValidation(res, ['body', 'colour'], /unknown field "colour"/);
    assert.equal(body.detail[0]?.type, 'extra_forbidden');
    assert.equal(body.message, 'body.colour: unknown field "colour"');
    expectValidation(
      await create({ name: 'x', limits: { rpm: 5 } }),
      ['body', 'limits', 'rpm'],
      /unknown field "rpm"/,
    );
    expectValidation(
      await h.call('PATCH', `/admin/v1/keys/${admin.id}`, {
        key: admin.key,
        body: { workspace_id: OTHER_WS },
      }),
      ['body', 'workspace_id'],
      /unknown field/,
    );
  });

  test('wrong types, missing name, bad CIDR, unknown scope, negative or fractional limits, bad durations', async () => {
    expectValidation(await create({ name: 42 }), ['body', 'name'], /expected string/);
    expectValidation(await create({}), ['body', 'name'], /expected string/);
    expectValidation(await create({ name: '  ' }), ['body', 'name'], /cannot be empty/);
    expectValidation(await create({ name: 'a\nb' }), ['body', 'name'], /control characters/);
    expectValidation(
      await create({ name: 'x', allowed_ips: ['10.0.0.0/33'] }),
      ['body', 'allowed_ips', 0],
      /"10.0.0.0\/33" has an invalid prefix length/,
    );
    expectValidation(
      await create({ name: 'x', allowed_ips: ['not-an-ip'] }),
      ['body', 'allowed_ips', 0],
      /not an IP address/,
    );
    expectValidation(
      await create({ name: 'x', scopes: ['chat', 'superuser'] }),
      ['body', 'scopes', 1],
      /unknown scope "superuser"/,
    );
    expectValidation(await create({ name: 'x', scopes: [] }), ['body', 'scopes'], /too small|>=1/i);
    expectValidation(
      await create({ name: 'x', limits: { requests_per_minute: -5 } }),
      ['body', 'limits', 'requests_per_minute'],
      /positive whole number/,
    );
    expectValidation(
      await create({ name: 'x', budget: { tokens_per_day: 1.5 } }),
      ['body', 'budget', 'tokens_per_day'],
      /expected int/,
    );
    expectValidation(await create({ name: 'x', expires_in: '90 days' }), ['body', 'expires_in'], /duration/);
    expectValidation(
      await create({ name: 'x', expires_in: '0d' }),
      ['body', 'expires_in'],
      /greater than zero/,
    );
    expectValidation(
      await create({ name: 'x', expires_in: -1 }),
      ['body', 'expires_in'],
      /greater than zero/,
    );
    expectValidation(
      await create({ name: 'x', expires_in: '999999999d' }),
      ['body', 'expires_in'],
      /100 years/,
    );
    expectValidation(await create(['name']), ['body'], /expected object/);
    expectValidation(
      await h.call('POST', `/admin/v1/keys/${admin.id}/rotate`, { key: admin.key, body: { grace: -1 } }),
      ['body', 'grace'],
      /negative/,
    );
    const pattern = expectError(
      await create({ name: 'x', models: ['mistral small'] }),
      422,
      'validation_error',
    );
    assert.match(pattern.message, /^body(\.models)?: "mistral small" is not a model id or pattern/);
  });

  test('query parameters are validated too', async () => {
    expectValidation(
      await h.call('GET', '/admin/v1/keys?limit=0', { key: admin.key }),
      ['query', 'limit'],
      /\d/,
    );
    expectValidation(
      await h.call('GET', '/admin/v1/keys?limit=501', { key: admin.key }),
      ['query', 'limit'],
      /500/,
    );
    expectValidation(
      await h.call('GET', '/admin/v1/keys?status=sleeping', { key: admin.key }),
      ['query', 'status'],
      /active/,
    );
    expectValidation(
      await h.call('GET', '/admin/v1/keys?colour=blue', { key: admin.key }),
      ['query', 'colour'],
      /unknown query parameter/,
    );
    expectValidation(
      await h.call('GET', '/admin/v1/audit?since=yesterday', { key: admin.key }),
      ['query', 'since'],
      /datetime/i,
    );
  });

  test('invalid JSON is 400, an oversized body 413', async () => {
    expectError(
      await h.call('POST', '/admin/v1/keys', { key: admin.key, raw: '{"name": "x",' }),
      400,
      'invalid_json',
    );
    const big = JSON.stringify({ name: 'x', models: ['a'.repeat(1_100_000)] });
    expectError(
      await h.call('POST', '/admin/v1/keys', { key: admin.key, raw: big }),
      413,
      'payload_too_large',
    );
  });
});

describe('a key cannot grant more than it has', () => {
  test('a keys:write key cannot create an admin key, nor grant keys:read', async () => {
    const writer = await h.mint(['keys:write']);
    const res = await h.call('POST', '/admin/v1/keys', {
      key: writer.key,
      body: { name: 'escalate', scopes: ['admin'] },
    });
    const error = expectError(res, 403, 'insufficient_scope');
    assert.match(
      error.message,
      /cannot create a key like that: that involves the scope "admin", which this key lacks/,
    );
    assert.equal(
      res.headers.get('www-authenticate'),
      'Bearer realm="keygate", error="insufficient_scope", scope="admin"',
    );
    expectError(
      await h.call('POST', '/admin/v1/keys', {
        key: writer.key,
        body: { name: 'escalate', scopes: ['chat', 'keys:read', 'keys:write'] },
      }),
      403,
      'insufficient_scope',
    );
    // Inference scopes and its own scope it may grant.
    expectBody(
      await h.call('POST', '/admin/v1/keys', {
        key: writer.key,
        body: { name: 'fine', scopes: ['chat', 'keys:write'] },
      }),
      201,
      S.CreatedKey,
    );
  });

  test('a keys:write key cannot raise a key to admin, nor change, rotate or revoke an admin key', async () => {
    const writer = await h.mint(['keys:write']);
    const plain = await h.mint(['chat']);
    expectError(
      await h.call('PATCH', `/admin/v1/keys/${plain.id}`, { key: writer.key, body: { scopes: ['admin'] } }),
      403,
      'insufficient_scope',
    );
    const self = expectError(
      await h.call('PATCH', `/admin/v1/keys/${writer.id}`, { key: writer.key, body: { scopes: ['admin'] } }),
      403,
      'forbidden',
    );
    assert.match(self.message, /cannot change its own restrictions/);
    const other = await h.mint(['admin']);
    for (const [method, path, body] of [
      ['PATCH', `/admin/v1/keys/${other.id}`, { name: 'x' }],
      ['POST', `/admin/v1/keys/${other.id}/rotate`, {}],
      ['POST', `/admin/v1/keys/${other.id}/revoke`, {}],
    ] as const) {
      const res = await h.call(method, path, { key: writer.key, body });
      const error = expectError(res, 403, 'insufficient_scope');
      // Revoking says the target has the scope; changing and rotating, that the change involves it.
      assert.match(error.message, /the scope "admin", which this key lacks/);
    }
    assert.ok((await h.verifier.verify(other.key)).ok, 'the admin key is untouched');
  });
});

describe('restricted keys cannot hand out more than they have', () => {
  test('a restricted keys:write key cannot lift its own restrictions or make a wider key', async () => {
    const narrow = await h.mint(['chat', 'keys:write'], DEFAULT_WORKSPACE_ID, 'narrow writer', {
      models: ['mistral-small-*'],
      allowedIps: ['127.0.0.0/8'],
      limits: { rpm: 100 },
      budget: { day: 100_000 },
    });
    const lift = await h.call('PATCH', `/admin/v1/keys/${narrow.id}`, {
      key: narrow.key,
      body: { models: [], limits: null, budget: null, allowed_ips: [] },
    });
    expectError(lift, 403, 'forbidden');
    for (const body of [
      { name: 'wide', scopes: ['chat'] },
      {
        name: 'other models',
        scopes: ['chat'],
        models: ['mistral-large-*'],
        allowed_ips: ['127.0.0.0/16'],
        limits: { requests_per_minute: 5 },
        budget: { tokens_per_day: 100 },
      },
      {
        name: 'wider net',
        scopes: ['chat'],
        models: ['mistral-small-latest'],
        allowed_ips: ['0.0.0.0/0'],
        limits: { requests_per_minute: 5 },
        budget: { tokens_per_day: 100 },
      },
      {
        name: 'faster',
        scopes: ['chat'],
        models: ['mistral-small-latest'],
        allowed_ips: ['127.0.0.0/16'],
        limits: { requests_per_minute: 500 },
        budget: { tokens_per_day: 100 },
      },
    ]) {
      const res = await h.call('POST', '/admin/v1/keys', { key: narrow.key, body });
      const error = expectError(res, 403, 'forbidden');
      assert.match(error.message, /a key can give no more than it has itself, and this one is restricted/);
    }
    const within = await h.call('POST', '/admin/v1/keys', {
      key: narrow.key,
      body: {
        name: 'within',
        scopes: ['chat'],
        models: ['mistral-small-latest'],
        allowed_ips: ['127.0.0.0/16'],
        limits: { requests_per_minute: 5 },
        budget: { tokens_per_day: 100 },
      },
    });
    assert.equal(within.status, 201, within.text);
  });

  test('only the operator changes a workspace policy', async () => {
    const local = await h.mint(['admin'], OTHER_WS);
    expectError(
      await h.call('PATCH', `/admin/v1/workspaces/${OTHER_WS}`, { key: local.key, body: { budget: null } }),
      403,
      'forbidden',
    );
    const renamed = await h.call('PATCH', `/admin/v1/workspaces/${OTHER_WS}`, {
      key: local.key,
      body: { name: 'Renamed' },
    });
    assert.equal(renamed.status, 200, renamed.text);
  });
});

describe('workspace isolation', () => {
  test('an admin key of another workspace sees only its own workspace; the rest is 404', async () => {
    const outsider = await h.mint(['admin'], OTHER_WS, 'other admin');
    const mine = await h.mint(['chat'], OTHER_WS, 'other inference');
    const theirs = await h.mint(['chat'], DEFAULT_WORKSPACE_ID, 'default inference');

    const list = expectBody(await h.call('GET', '/admin/v1/keys', { key: outsider.key }), 200, S.KeyList);
    assert.ok(list.data.length >= 2);
    assert.ok(list.data.every((k) => k.workspace_id === OTHER_WS));
    expectBody(await h.call('GET', `/admin/v1/keys/${mine.id}`, { key: outsider.key }), 200, S.Key);

    const nonexistent = await h.call('GET', '/admin/v1/keys/key_doesnotexist', { key: outsider.key });
    const hidden = await h.call('GET', `/admin/v1/keys/${theirs.id}`, { key: outsider.key });
    expectError(hidden, 404, 'not_found');
    expectError(nonexistent, 404, 'not_found');
    for (const [method, path, body] of [
      ['PATCH', `/admin/v1/keys/${theirs.id}`, { name: 'x' }],
      ['POST', `/admin/v1/keys/${theirs.id}/revoke`, {}],
      ['POST', `/admin/v1/keys/${theirs.id}/rotate`, {}],
      ['GET', `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}`, undefined],
      ['PATCH', `/admin/v1/workspaces/${DEFAULT_WORKSPACE_ID}`, { name: 'mine now' }],
      ['GET', `/admin/v1/keys?workspace_id=${DEFAULT_WORKSPACE_ID}`, undefined],
      ['GET', `/admin/v1/audit?workspace_id=${DEFAULT_WORKSPACE_ID}`, undefined],
      ['GET', `/admin/v1/usage?key_id=${theirs.id}`, undefined],
      ['POST', '/admin/v1/keys', { name: 'planted', workspace_id: DEFAULT_WORKSPACE_ID }],
      ['GET', `/admin/v1/alerts?workspace_id=${DEFAULT_WORKSPACE_ID}`, undefined],
      ['GET', `/admin/v1/alerts/channels?workspace_id=${DEFAULT_WORKSPACE_ID}`, undefined],
      ['POST', '/admin/v1/alerts/test', { workspace_id: DEFAULT_WORKSPACE_ID }],
    ] as const) {
      expectError(await h.call(method, path, { key: outsider.key, body }), 404, 'not_found');
    }
    assert.ok((await h.verifier.verify(theirs.key)).ok, 'the other workspace’s key is untouched');

    const workspaces = expectBody(
      await h.call('GET', '/admin/v1/workspaces', { key: outsider.key }),
      200,
      S.WorkspaceList,
    );
    assert.deepEqual(
      workspaces.data.map((w) => w.id),
      [OTHER_WS],
    );
    const audit = expectBody(await h.call('GET', '/admin/v1/audit', { key: outsider.key }), 200, S.AuditList);
    assert.ok(audit.data.length > 0);
    assert.ok(audit.data.every((e) => e.workspace_id === OTHER_WS));

    // New keys land in the caller's own workspace by default.
    const created = expectBody(
      await h.call('POST', '/admin/v1/keys', { key: outsider.key, body: { name: 'local' } }),
      201,
      S.CreatedKey,
    );
    assert.equal(created.workspace_id, OTHER_WS);
  });

  test('the admin key of the default workspace acts on every workspace', async () => {
    const remote = await h.mint(['chat'], OTHER_WS, 'remote');
    expectBody(await h.call('GET', `/admin/v1/keys/${remote.id}`, { key: admin.key }), 200, S.Key);
    const filtered = expectBody(
      await h.call('GET', `/admin/v1/keys?workspace_id=${OTHER_WS}`, { key: admin.key }),
      200,
      S.KeyList,
    );
    assert.ok(filtered.data.length > 0 && filtered.data.every((k) => k.workspace_id === OTHER_WS));
  });

  test('a keys:read key of the default workspace (not admin) stays in the default workspace', async () => {
    const reader = await h.mint(['keys:read']);
    const remote = await h.mint(['chat'], OTHER_WS);
    expectError(await h.call('GET', `/admin/v1/keys/${remote.id}`, { key: reader.key }), 404, 'not_found');
  });
});

describe('OpenAPI document', () => {
  test('is OpenAPI 3.1, needs no key, and lists every served route with its methods', async () => {
    const res = await h.call('GET', '/admin/v1/openapi.json');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    const doc = res.json as {
      openapi: string;
      paths: Record<string, Record<string, { operationId: string; 'x-required-scope'?: string }>>;
      components: { schemas: Record<string, unknown>; securitySchemes: Record<string, unknown> };
    };
    assert.equal(doc.openapi, '3.1.0');
    for (const route of ROUTES) {
      const op = doc.paths[route.path]?.[route.method.toLowerCase()];
      assert.ok(op, `${route.method} ${route.path} is missing from the document`);
      assert.equal(op.operationId, route.operationId);
      assert.equal(op['x-required-scope'], route.scope ?? undefined);
    }
    const served = new Set(ROUTES.map((r) => `${r.method.toLowerCase()} ${r.path}`));
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of Object.keys(item)) assert.ok(served.has(`${method} ${path}`), `${method} ${path}`);
    }
    // Every $ref resolves.
    const refs = [...res.text.matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)].map((m) => m[1] ?? '');
    assert.ok(refs.length > 10);
    for (const ref of refs) assert.ok(ref in doc.components.schemas, `unresolved $ref ${ref}`);
    assert.ok(doc.components.securitySchemes.bearerAuth);
    assert.doesNotMatch(res.text, /"\$schema"/);
  });
});

describe('secrets', () => {
  test('only create and rotate responses carry a secret; no log line does', async () => {
    assert.ok(h.responses.length > 100, 'the tests above made the calls checked here');
    let withSecret = 0;
    for (const r of h.responses) {
      const isIssuer =
        r.method === 'POST' &&
        (r.path === '/admin/v1/keys' || /^\/admin\/v1\/keys\/[^/]+\/rotate$/.test(r.path));
      const mayCarry = isIssuer && (r.status === 201 || r.status === 200);
      if (mayCarry) {
        if (KEY_SHAPED.test(r.text)) withSecret++;
        continue;
      }
      assert.doesNotMatch(r.text, KEY_SHAPED, `${r.method} ${r.path} (${r.status}) returned a secret`);
    }
    assert.ok(withSecret > 10);
    assert.ok(h.logLines.length > 100, 'requests are logged');
    for (const line of h.logLines) {
      assert.doesNotMatch(line, KEY_SHAPED);
      assert.doesNotMatch(line, /REDACTED/, `something key-shaped reached the logger: ${line}`);
    }
  });
});
