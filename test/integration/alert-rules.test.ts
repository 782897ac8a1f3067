/**
 * Alert rule settings per workspace: `GET /admin/v1/alerts/rules` and `PUT
 * /admin/v1/alerts/rules/{kind}` (validated, audited, other workspaces 404), a change through the
 * API applying on the running gateway at once, and `keygate alerts rules [set|reset]` on the data
 * directory and through KEYGATE_URL.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setGlobalDispatcher } from 'undici';
import * as S from '../../src/http/admin/schemas.ts';
import { createKey } from '../../src/keys/service.ts';
import { CLI_ACTOR, DEFAULT_WORKSPACE_ID } from '../../src/store/types.ts';
import { ANY_KEY_RE, baseEnv, type CliResult, createCliHarness, limited } from '../support/cli.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';

const harness = createCliHarness({ tempPrefix: 'keygate-rules-' });
let t: TestGateway;
let admin: string;

interface RuleView {
  kind: string;
  workspace_id: string;
  settings: Record<string, unknown>;
  defaults: Record<string, unknown>;
  overridden: string[];
}

before(async () => {
  await harness.start();
  t = await startTestGateway();
  setGlobalDispatcher(t.dispatcher);
  admin = (await t.createKey('operator', undefined, { scopes: ['admin'] })).key;
  await t.gateway.store.createWorkspace({ id: 'ws_other', name: 'Other', createdAt: Date.now() }, CLI_ACTOR);
});
after(async () => {
  await t.close();
  await harness.cleanup();
});

async function call(method: string, path: string, key: string, body?: unknown) {
  const res = await fetch(t.url + path, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, text, json: JSON.parse(text) as unknown };
}

function json<T>(result: CliResult): T {
  assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

test('API: every rule with its defaults; PUT replaces a rule’s settings; validation names the field', async () => {
  const listed = await call('GET', '/admin/v1/alerts/rules', admin);
  assert.equal(listed.status, 200, listed.text);
  const rules = S.AlertRuleList.parse(listed.json).data;
  assert.deepEqual(
    rules.map((r) => r.kind),
    ['usage_spike', 'budget_threshold', 'new_network', 'auth_failures', 'key_expiring'],
  );
  for (const rule of rules) {
    assert.equal(rule.workspace_id, DEFAULT_WORKSPACE_ID);
    assert.deepEqual(rule.settings, rule.defaults);
    assert.deepEqual(rule.overridden, []);
  }
  assert.deepEqual(rules[0]?.settings, {
    enabled: true,
    window_minutes: 5,
    factor: 10,
    min_requests: 100,
    min_tokens: 200_000,
    baseline_days: 7,
    cooldown_minutes: 60,
  });

  const set = await call('PUT', '/admin/v1/alerts/rules/budget_threshold', admin, {
    thresholds: [25, 90],
    cooldown_minutes: 120,
  });
  assert.equal(set.status, 200, set.text);
  const budget = S.AlertRule.parse(set.json);
  assert.deepEqual(budget.settings, { enabled: true, thresholds: [25, 90], cooldown_minutes: 120 });
  assert.deepEqual(budget.overridden, ['thresholds', 'cooldown_minutes']);
  // PUT replaces: what is left out goes back to its default.
  const replaced = S.AlertRule.parse(
    (await call('PUT', '/admin/v1/alerts/rules/budget_threshold', admin, { enabled: false })).json,
  );
  assert.deepEqual(replaced.settings, {
    enabled: false,
    thresholds: [50, 80, 100],
    cooldown_minutes: 44_640,
  });
  assert.deepEqual(replaced.overridden, ['enabled']);
  assert.deepEqual(await t.gateway.store.ruleSettings(DEFAULT_WORKSPACE_ID), {
    budget_threshold: { enabled: false },
  });
  const reset = S.AlertRule.parse(
    (await call('PUT', '/admin/v1/alerts/rules/budget_threshold', admin, {})).json,
  );
  assert.deepEqual(reset.overridden, []);

  for (const [kind, body, loc, msg] of [
    ['usage_spike', { window_minutes: 90 }, 'window_minutes', /1 to 60 minutes/],
    ['usage_spike', { factor: 0 }, 'factor', /1 to 1000/],
    ['usage_spike', { min_requests: 2.5 }, 'min_requests', /whole number/],
    ['usage_spike', { enabled: 'yes' }, 'enabled', /true or false/],
    ['budget_threshold', { thresholds: [80, 50] }, 'thresholds', /increasing order/],
    ['budget_threshold', { thresholds: [50, 50] }, 'thresholds', /increasing order/],
    ['budget_threshold', { thresholds: [1001] }, 'thresholds', /1 to 1000/],
    ['budget_threshold', { thresholds: [] }, 'thresholds', /at least one/],
    ['auth_failures', { cooldown_minutes: 0 }, 'cooldown_minutes', /1 to 525600 minutes/],
    ['new_network', { factor: 3 }, 'factor', /unknown field/],
  ] as const) {
    const res = await call('PUT', `/admin/v1/alerts/rules/${kind}`, admin, body);
    assert.equal(res.status, 422, `${kind} ${JSON.stringify(body)}: ${res.text}`);
    const issue = S.ValidationError.parse(res.json).detail[0];
    assert.equal(issue?.loc[1], loc, res.text);
    assert.match(issue?.msg ?? '', msg);
  }
  assert.equal((await call('PUT', '/admin/v1/alerts/rules/bogus', admin, {})).status, 404);
  assert.equal((await call('GET', '/admin/v1/alerts/rules/usage_spike', admin)).status, 405);

  // Every change is in the audit log, before and after.
  const audit = await call(
    'GET',
    `/admin/v1/audit?action=alert_rule.update&target_id=${DEFAULT_WORKSPACE_ID}`,
    admin,
  );
  const events = S.AuditList.parse(audit.json).data;
  assert.equal(events.length, 3);
  assert.ok(events.every((e) => e.actor.type === 'key'));

  // The OpenAPI document has each rule's schema.
  const doc = (await call('GET', '/admin/v1/openapi.json', admin)).json as {
    paths: Record<string, Record<string, { requestBody?: unknown }>>;
    components: { schemas: Record<string, unknown> };
  };
  assert.ok(doc.paths['/admin/v1/alerts/rules']?.get);
  assert.deepEqual(doc.paths['/admin/v1/alerts/rules/usage_spike']?.put?.requestBody, {
    required: false,
    content: { 'application/json': { schema: { $ref: '#/components/schemas/UsageSpikeRuleUpdate' } } },
  });
  for (const name of ['AlertRule', 'AlertRuleList', 'BudgetThresholdRuleSettings', 'KeyExpiringRuleUpdate'])
    assert.ok(name in doc.components.schemas, name);
});

test('API: other workspaces answer 404; the operator key reaches them with ?workspace_id=', async () => {
  const outsider = (
    await createKey(
      { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix },
      { name: 'other admin', scopes: ['admin'], workspaceId: 'ws_other' },
    )
  ).key;
  const q = `?workspace_id=${DEFAULT_WORKSPACE_ID}`;
  assert.equal((await call('GET', `/admin/v1/alerts/rules${q}`, outsider)).status, 404);
  assert.equal((await call('PUT', `/admin/v1/alerts/rules/new_network${q}`, outsider, {})).status, 404);
  const own = S.AlertRule.parse(
    (await call('PUT', '/admin/v1/alerts/rules/new_network', outsider, { enabled: false })).json,
  );
  assert.equal(own.workspace_id, 'ws_other');
  const seen = S.AlertRuleList.parse(
    (await call('GET', '/admin/v1/alerts/rules?workspace_id=ws_other', admin)).json,
  );
  assert.equal(seen.data.find((r) => r.kind === 'new_network')?.settings.enabled, false);
  assert.equal((await call('GET', '/admin/v1/alerts/rules?workspace_id=ws_nope', admin)).status, 404);
  // ws_default is untouched.
  const mine = S.AlertRuleList.parse((await call('GET', '/admin/v1/alerts/rules', admin)).json);
  assert.equal(mine.data.find((r) => r.kind === 'new_network')?.settings.enabled, true);
  await call('PUT', '/admin/v1/alerts/rules/new_network', outsider, {});
});

test('a change through the API applies on the running gateway at once, not a minute later', async () => {
  const { id, key } = await t.createKey('busy key');
  for (let i = 0; i < 3; i++) {
    const res = await t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody(),
    });
    assert.equal(res.status, 200);
  }
  const spikes = async () => (await t.gateway.store.listAlerts({ kind: 'usage_spike', keyId: id })).length;
  await t.gateway.alerts.tick(); // the engine reads (and caches) the workspace's settings: floor 100
  assert.equal(await spikes(), 0);
  // Written behind the engine's back, the change waits for its cache to expire (up to a minute)...
  await t.gateway.store.setRuleSettings(
    DEFAULT_WORKSPACE_ID,
    'usage_spike',
    { minRequests: 3 },
    CLI_ACTOR,
    Date.now(),
  );
  await t.gateway.alerts.tick();
  assert.equal(await spikes(), 0, 'the cached settings still apply');
  // ...made through the API, it applies from the next evaluation.
  const res = await call('PUT', '/admin/v1/alerts/rules/usage_spike', admin, { min_requests: 3 });
  assert.equal(res.status, 200, res.text);
  await t.gateway.alerts.tick();
  assert.equal(await spikes(), 1);
  await call('PUT', '/admin/v1/alerts/rules/usage_spike', admin, {});
});

test('CLI on the data directory: list, set (keeping the other settings), reset, one-line errors', async () => {
  const d = ['--data-dir', harness.newDataDir()];
  const run = (...args: string[]) => harness.runCli(['alerts', 'rules', ...args, ...d]);

  const listed = await run();
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /^Alert rules of workspace ws_default:/);
  assert.match(listed.stdout, /RULE\s+SETTING\s+VALUE\s+DEFAULT/);
  assert.match(listed.stdout, /usage_spike\s+enabled\s+true\s+true/);
  assert.match(listed.stdout, /min-requests\s+100\s+100/);
  assert.match(listed.stdout, /budget_threshold\s+enabled/);
  assert.match(listed.stdout, /thresholds\s+50,80,100\s+50,80,100/);
  assert.match(listed.stdout, /cooldown\s+31d\s+31d/);
  assert.deepEqual(json<RuleView[]>(await run('list', '--json')), json<RuleView[]>(await run('--json')));

  const first = await run('set', 'usage_spike', '--min-requests', '5', '--factor', '2.5', '--cooldown', '2h');
  assert.equal(first.code, 0, first.stderr);
  assert.match(
    first.stdout,
    /^Set the usage_spike rule of workspace ws_default: factor 2\.5, min-requests 5, cooldown 2h\./,
  );
  assert.match(first.stdout, /min-requests\s+5 \*\s+100/);
  assert.match(first.stdout, /A running gateway on this data directory applies it within a minute\./);
  const second = json<RuleView>(await run('set', 'usage_spike', '--window-minutes', '10', '--json'));
  assert.deepEqual(second.overridden, ['window_minutes', 'factor', 'min_requests', 'cooldown_minutes']);
  assert.equal(second.settings.min_requests, 5, 'the settings not given stay');
  assert.equal(second.settings.cooldown_minutes, 120);
  const thresholds = json<RuleView>(
    await run('set', 'budget_threshold', '--thresholds', '75,100', '--enabled', 'false', '--json'),
  );
  assert.deepEqual(thresholds.settings, { enabled: false, thresholds: [75, 100], cooldown_minutes: 44_640 });

  const refusals = [
    [
      ['set', 'usage_spike', '--window-minutes', '90'],
      /^keygate: --window-minutes takes a whole number from 1 to 60 \(minutes\), not "90"\n$/,
    ],
    [
      ['set', 'usage_spike', '--factor', 'lots'],
      /^keygate: --factor takes a number from 1 to 1000, not "lots"\n$/,
    ],
    [
      ['set', 'usage_spike', '--min-requests', '0'],
      /^keygate: --min-requests takes a whole number from 1 to/,
    ],
    [
      ['set', 'budget_threshold', '--thresholds', '80,50'],
      /^keygate: --thresholds takes .* in increasing order without repeats \(e\.g\. 50,80,100\), not "80,50"\n$/,
    ],
    [
      ['set', 'budget_threshold', '--thresholds', '50,2000'],
      /^keygate: --thresholds takes up to 10 whole percentages from 1 to 1000/,
    ],
    [
      ['set', 'auth_failures', '--failures-per-minute', '-3'],
      /^keygate: --failures-per-minute takes a whole number/,
    ],
    [
      ['set', 'key_expiring', '--cooldown', '30s'],
      /^keygate: --cooldown takes a duration of whole minutes from 1m to 365d/,
    ],
    [['set', 'key_expiring', '--cooldown', '0'], /^keygate: --cooldown takes a duration/],
    [['set', 'new_network', '--enabled', 'yes'], /^keygate: --enabled takes true or false, not "yes"\n$/],
    [
      ['set', 'new_network', '--factor', '3'],
      /^keygate: --factor does not apply to the new_network rule \(it takes --enabled, --cooldown\)\n$/,
    ],
    [['set', 'new_network'], /^keygate: nothing to set: give at least one of --enabled, --cooldown/],
    [
      ['set', 'spikes', '--enabled', 'false'],
      /^keygate: unknown rule "spikes"; the rules are usage_spike, budget_threshold, new_network, auth_failures, key_expiring\n$/,
    ],
    [['reset', 'spikes'], /^keygate: unknown rule "spikes"/],
  ] as const;
  // Refused before anything is written: run side by side, a few at a time.
  const slot = limited(4);
  const refused = await Promise.all(refusals.map(([args]) => slot(() => run(...args))));
  refusals.forEach(([args, message], i) => {
    const res = refused[i];
    assert.equal(res?.code, 2, `${args.join(' ')}: ${res?.stdout}${res?.stderr}`);
    assert.match(res?.stderr ?? '', message, args.join(' '));
  });
  const missing = await run('--workspace', 'ws_nope');
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^keygate: no workspace with id ws_nope/);

  const reset = await run('reset', 'usage_spike');
  assert.equal(reset.code, 0, reset.stderr);
  assert.match(
    reset.stdout,
    /^The usage_spike rule of workspace ws_default is back to the default settings\./,
  );
  const again = await run('reset', 'usage_spike');
  assert.match(again.stdout, /already has the default settings: nothing to reset/);
  const after = json<RuleView[]>(await run('--json'));
  assert.deepEqual(after.find((r) => r.kind === 'usage_spike')?.overridden, []);
  assert.deepEqual(after.find((r) => r.kind === 'budget_threshold')?.overridden, ['enabled', 'thresholds']);

  const audit = json<{ action: string; actor: string }[]>(
    await harness.runCli(['audit', '--action', 'alert_rule.update', '--json', ...d]),
  );
  assert.equal(audit.length, 4, 'set, set, set, reset (the no-op reset writes nothing)');
});

test('CLI through KEYGATE_URL: the same views as the API, and a change applies at once', async () => {
  const caFile = join(t.dataDir, 'ca-for-rules.pem');
  writeFileSync(caFile, t.ca ?? '');
  const env = { ...baseEnv(), KEYGATE_URL: t.url, KEYGATE_ADMIN_KEY: admin, KEYGATE_CA_FILE: caFile };
  const viaCli = json<RuleView[]>(await harness.runCli(['alerts', 'rules', '--json'], env));
  const viaApi = S.AlertRuleList.parse((await call('GET', '/admin/v1/alerts/rules', admin)).json).data;
  assert.deepEqual(viaCli, viaApi);

  const set = await harness.runCli(
    ['alerts', 'rules', 'set', 'auth_failures', '--failures-per-minute', '7', '--workspace', 'ws_other'],
    env,
  );
  assert.equal(set.code, 0, set.stderr);
  assert.match(set.stdout, /^Set the auth_failures rule of workspace ws_other: failures-per-minute 7\./);
  assert.match(set.stdout, /The gateway applies it at once/);
  const other = S.AlertRuleList.parse(
    (await call('GET', '/admin/v1/alerts/rules?workspace_id=ws_other', admin)).json,
  );
  assert.equal(other.data.find((r) => r.kind === 'auth_failures')?.settings.failures_per_minute, 7);

  const bad = await harness.runCli(['alerts', 'rules', 'set', 'usage_spike', '--baseline-days', '400'], env);
  assert.equal(bad.code, 2);
  assert.match(
    bad.stderr,
    /^keygate: --baseline-days takes a whole number from 1 to 90 \(days\), not "400"\n$/,
  );
  const reset = await harness.runCli(
    ['alerts', 'rules', 'reset', 'auth_failures', '--workspace', 'ws_other', '--json'],
    env,
  );
  assert.deepEqual(json<RuleView>(reset).overridden, []);
  for (const r of [set, reset, bad]) assert.doesNotMatch(r.stdout + r.stderr, ANY_KEY_RE);
});
