/**
 * "Within the caller's restrictions" (issue 12, items 2 and 6), as a table driven through the real
 * management API: each row is a calling key's restrictions, an operation (create, patch, rotate or
 * revoke a key) and the target's policy (the key asked for, or the key acted on), with the answer
 * expected — allowed, refused (403 `forbidden`) or refused for a management scope (403
 * `insufficient_scope`). Every dimension has rows on both sides of the line: management scopes,
 * inference scopes, models, IP ranges, rpm/tpm/concurrency, day/month budgets and expiry.
 *
 * There is no route that reveals an existing key's secret (GET shows `display` only); rotation is
 * the one that hands a secret out, so it is bounded like create and patch. Revoking hands out
 * nothing and is bounded by management scopes only. Each row mints a fresh caller and target,
 * and a refusal is checked to have changed nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createKey } from '../../src/keys/service.ts';
import {
  CLI_ACTOR,
  DEFAULT_WORKSPACE_ID,
  type KeyLimits,
  type KeyRecord,
  type Scope,
  type TokenBudget,
} from '../../src/store/types.ts';
import { bearer, startTestGateway, type TestGateway } from '../support/gateway.ts';

const WS = 'ws_within';
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const SECRETS = /kg_[0-9A-Za-z]{38}/g;
const hidden = (text: string) => text.replace(SECRETS, '[secret]');

/** A key's policy as the store takes it; `expiresInMs` absent: never expires. */
interface Policy {
  scopes?: Scope[];
  models?: string[];
  allowedIps?: string[];
  limits?: Partial<KeyLimits>;
  budget?: Partial<TokenBudget>;
  expiresInMs?: number;
  workspaceId?: string;
}

type Expect = 'allowed' | 'refused' | 'insufficient_scope';

type Row =
  | { op: 'create'; caller: Policy; request: Record<string, unknown>; expect: Expect; check?: Check }
  | { op: 'patch'; caller: Policy; target: Policy; request: Record<string, unknown>; expect: Expect }
  | { op: 'rotate' | 'revoke'; caller: Policy; target: Policy; expect: Expect };

/** An extra check of an allowed answer (the caller's record, the answer's body). */
type Check = (caller: KeyRecord, body: Record<string, unknown>) => void;

// ---- callers -------------------------------------------------------------------------------------

/** The default caller: chat and models, and keys:write. Callers' ranges include the test client. */
const BASE_SCOPES: Scope[] = ['chat', 'models', 'keys:write'];
const narrowScopes: Policy = { scopes: BASE_SCOPES };
const narrowModels: Policy = { scopes: BASE_SCOPES, models: ['mistral-small-*'] };
const narrowIps: Policy = { scopes: BASE_SCOPES, allowedIps: ['127.0.0.0/24'] };
const rpm10: Policy = { scopes: BASE_SCOPES, limits: { rpm: 10 } };
const tpm1000: Policy = { scopes: BASE_SCOPES, limits: { tpm: 1000 } };
const concurrency2: Policy = { scopes: BASE_SCOPES, limits: { concurrency: 2 } };
const budgets: Policy = { scopes: BASE_SCOPES, budget: { day: 100, month: 1000 } };
const expiresIn1h: Policy = { scopes: BASE_SCOPES, expiresInMs: HOUR };

// ---- the table ---------------------------------------------------------------------------------

const TABLE: Record<string, Row[]> = {
  'management scopes': [
    { op: 'create', caller: narrowScopes, request: { scopes: ['chat', 'keys:write'] }, expect: 'allowed' },
    {
      op: 'create',
      caller: narrowScopes,
      request: { scopes: ['chat', 'admin'] },
      expect: 'insufficient_scope',
    },
    {
      op: 'create',
      caller: narrowScopes,
      request: { scopes: ['chat', 'workspaces:write'] },
      expect: 'insufficient_scope',
    },
    {
      op: 'create',
      caller: narrowScopes,
      request: { scopes: ['chat', 'keys:read'] },
      expect: 'insufficient_scope',
    },
    {
      op: 'patch',
      caller: narrowScopes,
      target: { scopes: ['chat'] },
      request: { scopes: ['chat', 'metrics'] },
      expect: 'insufficient_scope',
    },
    {
      op: 'rotate',
      caller: narrowScopes,
      target: { scopes: ['chat', 'admin'] },
      expect: 'insufficient_scope',
    },
    { op: 'rotate', caller: narrowScopes, target: { scopes: ['chat', 'keys:write'] }, expect: 'allowed' },
    {
      op: 'revoke',
      caller: narrowScopes,
      target: { scopes: ['chat', 'admin'] },
      expect: 'insufficient_scope',
    },
  ],
  'inference scopes': [
    { op: 'create', caller: narrowScopes, request: { scopes: ['chat'] }, expect: 'allowed' },
    { op: 'create', caller: narrowScopes, request: { scopes: ['chat', 'models'] }, expect: 'allowed' },
    { op: 'create', caller: narrowScopes, request: { scopes: ['embeddings'] }, expect: 'refused' },
    // No scopes asked: the default, all four inference scopes.
    { op: 'create', caller: narrowScopes, request: {}, expect: 'refused' },
    // A provisioning key (keys:write, no inference scope) can make keys of every inference scope.
    { op: 'create', caller: narrowScopes, request: { scopes: ['keys:write'] }, expect: 'refused' },
    { op: 'create', caller: { scopes: ['keys:write'] }, request: {}, expect: 'allowed' },
    {
      op: 'create',
      caller: { scopes: ['keys:write'] },
      request: { scopes: ['keys:write'] },
      expect: 'allowed',
    },
    { op: 'create', caller: { scopes: ['admin'] }, request: {}, expect: 'allowed' },
    {
      op: 'patch',
      caller: narrowScopes,
      target: { scopes: ['chat'] },
      request: { scopes: ['chat', 'fim'] },
      expect: 'refused',
    },
    {
      op: 'patch',
      caller: narrowScopes,
      target: { scopes: ['chat', 'models'] },
      request: { scopes: ['models'] },
      expect: 'allowed',
    },
    { op: 'rotate', caller: narrowScopes, target: { scopes: ['chat', 'embeddings'] }, expect: 'refused' },
    { op: 'rotate', caller: narrowScopes, target: { scopes: ['chat'] }, expect: 'allowed' },
    // Revoking takes power away and reveals nothing: a wider inference key may be revoked.
    { op: 'revoke', caller: narrowScopes, target: {}, expect: 'allowed' },
  ],
  models: [
    {
      op: 'create',
      caller: narrowModels,
      request: { scopes: ['chat'], models: ['mistral-small-latest'] },
      expect: 'allowed',
    },
    {
      op: 'create',
      caller: narrowModels,
      request: { scopes: ['chat'], models: ['mistral-small-*'] },
      expect: 'allowed',
    },
    {
      op: 'create',
      caller: narrowModels,
      request: { scopes: ['chat'], models: ['mistral-small-2501', 'mistral-small-latest'] },
      expect: 'allowed',
    },
    { op: 'create', caller: narrowModels, request: { scopes: ['chat'] }, expect: 'refused' },
    {
      op: 'create',
      caller: narrowModels,
      request: { scopes: ['chat'], models: ['mistral-large-latest'] },
      expect: 'refused',
    },
    {
      op: 'create',
      caller: narrowModels,
      request: { scopes: ['chat'], models: ['mistral-small-latest', 'codestral-latest'] },
      expect: 'refused',
    },
    {
      op: 'create',
      caller: narrowModels,
      request: { scopes: ['chat'], models: ['mistral-*'] },
      expect: 'refused',
    },
    { op: 'create', caller: narrowModels, request: { scopes: ['chat'], models: ['*'] }, expect: 'refused' },
    {
      op: 'patch',
      caller: narrowModels,
      target: { scopes: ['chat'], models: ['mistral-small-latest'] },
      request: { models: [] },
      expect: 'refused',
    },
    {
      op: 'patch',
      caller: narrowModels,
      target: { scopes: ['chat'], models: ['mistral-small-latest'] },
      request: { models: ['mistral-small-2501'] },
      expect: 'allowed',
    },
    // The key as it is must lie within the caller: a wider key is left alone, even to narrow it.
    {
      op: 'patch',
      caller: narrowModels,
      target: { scopes: ['chat'] },
      request: { models: ['mistral-small-latest'] },
      expect: 'refused',
    },
    {
      op: 'patch',
      caller: narrowModels,
      target: { scopes: ['chat'] },
      request: { name: 'renamed' },
      expect: 'refused',
    },
    { op: 'rotate', caller: narrowModels, target: { scopes: ['chat'] }, expect: 'refused' },
    {
      op: 'rotate',
      caller: narrowModels,
      target: { scopes: ['chat'], models: ['mistral-small-2501'] },
      expect: 'allowed',
    },
    { op: 'revoke', caller: narrowModels, target: { scopes: ['chat'] }, expect: 'allowed' },
  ],
  'IP ranges': [
    {
      op: 'create',
      caller: narrowIps,
      request: { scopes: ['chat'], allowed_ips: ['127.0.0.1/32'] },
      expect: 'allowed',
    },
    {
      op: 'create',
      caller: narrowIps,
      request: { scopes: ['chat'], allowed_ips: ['127.0.0.0/25', '127.0.0.200/32'] },
      expect: 'allowed',
    },
    { op: 'create', caller: narrowIps, request: { scopes: ['chat'] }, expect: 'refused' },
    {
      op: 'create',
      caller: narrowIps,
      request: { scopes: ['chat'], allowed_ips: ['127.0.0.0/16'] },
      expect: 'refused',
    },
    {
      op: 'create',
      caller: narrowIps,
      request: { scopes: ['chat'], allowed_ips: ['10.0.0.1/32'] },
      expect: 'refused',
    },
    {
      op: 'create',
      caller: narrowIps,
      request: { scopes: ['chat'], allowed_ips: ['::1/128'] },
      expect: 'refused',
    },
    {
      op: 'create',
      caller: narrowIps,
      request: { scopes: ['chat'], allowed_ips: ['0.0.0.0/0'] },
      expect: 'refused',
    },
    {
      op: 'patch',
      caller: narrowIps,
      target: { scopes: ['chat'], allowedIps: ['127.0.0.1/32'] },
      request: { allowed_ips: [] },
      expect: 'refused',
    },
    {
      op: 'patch',
      caller: narrowIps,
      target: { scopes: ['chat'], allowedIps: ['127.0.0.1/32'] },
      request: { allowed_ips: ['127.0.0.2/32'] },
      expect: 'allowed',
    },
    { op: 'rotate', caller: narrowIps, target: { scopes: ['chat'] }, expect: 'refused' },
    {
      op: 'rotate',
      caller: narrowIps,
      target: { scopes: ['chat'], allowedIps: ['127.0.0.5/32'] },
      expect: 'allowed',
    },
  ],
  'rpm, tpm and concurrency limits': [
    {
      op: 'create',
      caller: rpm10,
      request: { scopes: ['chat'], limits: { requests_per_minute: 10 } },
      expect: 'allowed',
    },
    {
      op: 'create',
      caller: rpm10,
      request: { scopes: ['chat'], limits: { requests_per_minute: 5 } },
      expect: 'allowed',
    },
    {
      op: 'create',
      caller: rpm10,
      request: { scopes: ['chat'], limits: { requests_per_minute: 11 } },
      expect: 'refused',
    },
    { op: 'create', caller: rpm10, request: { scopes: ['chat'] }, expect: 'refused' },
    { op: 'create', caller: rpm10, request: { scopes: ['chat'], limits: null }, expect: 'refused' },
    {
      op: 'patch',
      caller: rpm10,
      target: { scopes: ['chat'], limits: { rpm: 5 } },
      request: { limits: { requests_per_minute: null } },
      expect: 'refused',
    },
    {
      op: 'patch',
      caller: rpm10,
      target: { scopes: ['chat'], limits: { rpm: 5 } },
      request: { limits: { requests_per_minute: 8 } },
      expect: 'allowed',
    },
    { op: 'rotate', caller: rpm10, target: { scopes: ['chat'] }, expect: 'refused' },
    { op: 'rotate', caller: rpm10, target: { scopes: ['chat'], limits: { rpm: 20 } }, expect: 'refused' },
    { op: 'rotate', caller: rpm10, target: { scopes: ['chat'], limits: { rpm: 10 } }, expect: 'allowed' },
    {
      op: 'create',
      caller: tpm1000,
      request: { scopes: ['chat'], limits: { tokens_per_minute: 1000 } },
      expect: 'allowed',
    },
    {
      op: 'create',
      caller: tpm1000,
      request: { scopes: ['chat'], limits: { tokens_per_minute: 1001 } },
      expect: 'refused',
    },
    { op: 'create', caller: tpm1000, request: { scopes: ['chat'] }, expect: 'refused' },
    { op: 'rotate', caller: tpm1000, target: { scopes: ['chat'] }, expect: 'refused' },
    {
      op: 'create',
      caller: concurrency2,
      request: { scopes: ['chat'], limits: { concurrent_requests: 1 } },
      expect: 'allowed',
    },
    {
      op: 'create',
      caller: concurrency2,
      request: { scopes: ['chat'], limits: { concurrent_requests: 3 } },
      expect: 'refused',
    },
    { op: 'create', caller: concurrency2, request: { scopes: ['chat'] }, expect: 'refused' },
    {
      op: 'patch',
      caller: concurrency2,
      target: { scopes: ['chat'], limits: { concurrency: 2 } },
      request: { limits: null },
      expect: 'refused',
    },
  ],
  budgets: [
    {
      op: 'create',
      caller: budgets,
      request: { scopes: ['chat'], budget: { tokens_per_day: 100, tokens_per_month: 1000 } },
      expect: 'allowed',
    },
    {
      op: 'create',
      caller: budgets,
      request: { scopes: ['chat'], budget: { tokens_per_day: 10, tokens_per_month: 500 } },
      expect: 'allowed',
    },
    {
      op: 'create',
      caller: budgets,
      request: { scopes: ['chat'], budget: { tokens_per_day: 101, tokens_per_month: 1000 } },
      expect: 'refused',
    },
    {
      op: 'create',
      caller: budgets,
      request: { scopes: ['chat'], budget: { tokens_per_day: 100 } },
      expect: 'refused',
    },
    { op: 'create', caller: budgets, request: { scopes: ['chat'] }, expect: 'refused' },
    {
      op: 'patch',
      caller: budgets,
      target: { scopes: ['chat'], budget: { day: 50, month: 500 } },
      request: { budget: null },
      expect: 'refused',
    },
    {
      op: 'patch',
      caller: budgets,
      target: { scopes: ['chat'], budget: { day: 50, month: 500 } },
      request: { budget: { tokens_per_month: 2000 } },
      expect: 'refused',
    },
    {
      op: 'patch',
      caller: budgets,
      target: { scopes: ['chat'], budget: { day: 50, month: 500 } },
      request: { budget: { tokens_per_day: 90 } },
      expect: 'allowed',
    },
    { op: 'rotate', caller: budgets, target: { scopes: ['chat'], budget: { day: 100 } }, expect: 'refused' },
    {
      op: 'rotate',
      caller: budgets,
      target: { scopes: ['chat'], budget: { day: 100, month: 1000 } },
      expect: 'allowed',
    },
  ],
  expiry: [
    {
      op: 'create',
      caller: expiresIn1h,
      request: { scopes: ['chat'], expires_in: '30m' },
      expect: 'allowed',
    },
    { op: 'create', caller: expiresIn1h, request: { scopes: ['chat'], expires_in: '2h' }, expect: 'refused' },
    { op: 'create', caller: expiresIn1h, request: { scopes: ['chat'], expires_in: 7200 }, expect: 'refused' },
    // Without an expiry (absent or null) the new key gets its creator's: it cannot outlive it.
    {
      op: 'create',
      caller: expiresIn1h,
      request: { scopes: ['chat'] },
      expect: 'allowed',
      check: inheritsExpiry,
    },
    {
      op: 'create',
      caller: expiresIn1h,
      request: { scopes: ['chat'], expires_in: null },
      expect: 'allowed',
      check: inheritsExpiry,
    },
    // A caller that never expires makes keys that never expire.
    {
      op: 'create',
      caller: narrowScopes,
      request: { scopes: ['chat'] },
      expect: 'allowed',
      check: neverExpires,
    },
    {
      op: 'patch',
      caller: expiresIn1h,
      target: { scopes: ['chat'], expiresInMs: 30 * MINUTE },
      request: { expires_in: null },
      expect: 'refused',
    },
    {
      op: 'patch',
      caller: expiresIn1h,
      target: { scopes: ['chat'], expiresInMs: 30 * MINUTE },
      request: { expires_in: '2h' },
      expect: 'refused',
    },
    {
      op: 'patch',
      caller: expiresIn1h,
      target: { scopes: ['chat'], expiresInMs: 30 * MINUTE },
      request: { expires_in: '10m' },
      expect: 'allowed',
    },
    { op: 'rotate', caller: expiresIn1h, target: { scopes: ['chat'] }, expect: 'refused' },
    {
      op: 'rotate',
      caller: expiresIn1h,
      target: { scopes: ['chat'], expiresInMs: 2 * HOUR },
      expect: 'refused',
    },
    {
      op: 'rotate',
      caller: expiresIn1h,
      target: { scopes: ['chat'], expiresInMs: 30 * MINUTE },
      expect: 'allowed',
    },
    { op: 'revoke', caller: expiresIn1h, target: { scopes: ['chat'] }, expect: 'allowed' },
  ],
  'the operator (unbounded: the root of trust)': [
    {
      op: 'create',
      caller: {
        scopes: ['admin'],
        workspaceId: DEFAULT_WORKSPACE_ID,
        models: ['mistral-small-*'],
        expiresInMs: HOUR,
      },
      request: { workspace_id: WS },
      expect: 'allowed',
      check: neverExpires,
    },
    {
      op: 'rotate',
      caller: { scopes: ['admin'], workspaceId: DEFAULT_WORKSPACE_ID, limits: { rpm: 1 } },
      target: {},
      expect: 'allowed',
    },
  ],
};

function inheritsExpiry(caller: KeyRecord, body: Record<string, unknown>) {
  assert.equal(typeof body.expires_at, 'string', 'the new key expires');
  assert.ok(caller.expiresAt !== null);
  const expiresAt = Date.parse(String(body.expires_at));
  assert.ok(expiresAt <= caller.expiresAt, 'no later than its creator');
  assert.ok(expiresAt >= caller.expiresAt - MINUTE, "at its creator's expiry");
}

function neverExpires(_caller: KeyRecord, body: Record<string, unknown>) {
  assert.equal(body.expires_at, null);
}

// ---- running a row --------------------------------------------------------------------------------

let t: TestGateway;
let serial = 0;

async function mint(name: string, policy: Policy): Promise<{ record: KeyRecord; key: string }> {
  const { expiresInMs, workspaceId, ...restrictions } = policy;
  return createKey(
    { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix },
    { name, workspaceId: workspaceId ?? WS, expiresInMs, ...restrictions },
  );
}

async function api(method: 'POST' | 'PATCH', path: string, key: string, body: unknown) {
  const res = await t.call(path, { method, headers: bearer(key), body: JSON.stringify(body) });
  return {
    status: res.status,
    raw: res.text,
    text: hidden(res.text),
    json: res.json() as Record<string, unknown>,
  };
}

/** The parts of a key a refused operation must leave as they were. */
function snapshot(key: KeyRecord | undefined) {
  return key && { ...key, lastUsedAt: null, lastUsedIp: null };
}

function describeRow(row: Row): string {
  const target =
    row.op === 'create'
      ? row.request
      : row.op === 'patch'
        ? { ...row.target, change: row.request }
        : row.target;
  return `caller ${JSON.stringify(row.caller)} ${row.op} ${JSON.stringify(target)} → ${row.expect}`;
}

async function runRow(row: Row): Promise<void> {
  const { store } = t.gateway;
  serial += 1;
  const caller = await mint(`caller ${serial}`, row.caller);
  let res: Awaited<ReturnType<typeof api>>;
  let targetId: string | undefined;
  let before: ReturnType<typeof snapshot>;
  const name = `target ${serial}`;
  if (row.op === 'create') {
    res = await api('POST', '/admin/v1/keys', caller.key, { name, ...row.request });
  } else {
    const target = await mint(name, row.target);
    targetId = target.record.id;
    before = snapshot(await store.getKey(targetId));
    const path = `/admin/v1/keys/${targetId}${row.op === 'patch' ? '' : `/${row.op}`}`;
    res =
      row.op === 'patch'
        ? await api('PATCH', path, caller.key, row.request)
        : await api('POST', path, caller.key, row.op === 'rotate' ? { grace: 0 } : {});
  }

  if (row.expect === 'allowed') {
    assert.equal(res.status, row.op === 'create' ? 201 : 200, res.text);
    if (row.op === 'create') {
      assert.match(String(res.json.key), /^kg_/, 'the new secret is in the answer');
      row.check?.(caller.record, res.json);
    }
    if (row.op === 'rotate') assert.match(String(res.json.key), /^kg_/, 'the new secret is in the answer');
    if (row.op === 'revoke') assert.equal(res.json.status, 'revoked', res.text);
    return;
  }
  assert.equal(res.status, 403, res.text);
  assert.equal(res.json.code, row.expect === 'refused' ? 'forbidden' : 'insufficient_scope', res.text);
  assert.match(String(res.json.message), /^This key cannot |which this key lacks/, res.text);
  assert.doesNotMatch(res.raw, SECRETS, 'no secret in a refusal');
  // Nothing happened.
  if (targetId === undefined) {
    const made = (await store.listKeys({ workspaceId: WS })).filter((k) => k.name === name);
    assert.deepEqual(made, [], 'no key was created');
  } else {
    assert.deepEqual(snapshot(await store.getKey(targetId)), before, 'the target is unchanged');
  }
}

before(async () => {
  t = await startTestGateway();
  await t.gateway.store.createWorkspace({ id: WS, name: 'Within', createdAt: Date.now() }, CLI_ACTOR);
});
after(async () => {
  await t.close();
});

for (const [dimension, rows] of Object.entries(TABLE)) {
  describe(dimension, () => {
    for (const row of rows) test(describeRow(row), () => runRow(row));
  });
}

test('the table covers every dimension on both sides, and every operation', () => {
  const rows = Object.values(TABLE).flat();
  for (const [dimension, dimensionRows] of Object.entries(TABLE)) {
    const outcomes = new Set(dimensionRows.map((r) => r.expect === 'allowed'));
    if (!dimension.startsWith('the operator'))
      assert.equal(outcomes.size, 2, `${dimension}: allowed and refused rows`);
  }
  for (const op of ['create', 'patch', 'rotate', 'revoke'] as const) {
    assert.ok(
      rows.some((r) => r.op === op && r.expect === 'allowed'),
      `${op} allowed somewhere`,
    );
    assert.ok(
      rows.some((r) => r.op === op && r.expect !== 'allowed'),
      `${op} refused somewhere`,
    );
  }
});
