/**
 * Rule settings: what each setting accepts, how a workspace's overrides are merged and shown, and
 * how a body of overrides is validated (the one check the CLI and the API share).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  apiName,
  overridesOf,
  parseOverrides,
  RULE_UPDATE_SCHEMAS,
  RuleSettingsError,
  ruleView,
  storedName,
} from '../../src/alerts/rule-settings.ts';
import {
  DEFAULT_RULES,
  mergeSettings,
  RULE_KINDS,
  SETTING_SPECS,
  settingNames,
  settingSpec,
  validSetting,
} from '../../src/alerts/rules.ts';

describe('setting specs', () => {
  test('every rule has a spec for each of its settings, and the defaults pass them', () => {
    for (const kind of RULE_KINDS) {
      assert.deepEqual(settingNames(kind), Object.keys(DEFAULT_RULES[kind]), kind);
      for (const [name, value] of Object.entries(DEFAULT_RULES[kind])) {
        const spec = settingSpec(kind, name);
        assert.ok(spec && validSetting(spec, value), `${kind}.${name} = ${JSON.stringify(value)}`);
      }
    }
    assert.equal(settingSpec('new_network', 'factor'), undefined);
    assert.equal(settingSpec('usage_spike', 'toString'), undefined);
  });

  test('ranges, whole numbers and threshold lists', () => {
    const spike = SETTING_SPECS.usage_spike;
    assert.ok(validSetting(spike.windowMinutes, 60));
    assert.ok(!validSetting(spike.windowMinutes, 61));
    assert.ok(!validSetting(spike.windowMinutes, 0));
    assert.ok(!validSetting(spike.windowMinutes, 2.5));
    assert.ok(validSetting(spike.factor, 2.5));
    assert.ok(!validSetting(spike.factor, 0.5));
    assert.ok(!validSetting(spike.factor, Number.NaN));
    assert.ok(!validSetting(spike.cooldownMinutes, 0));
    assert.ok(!validSetting(spike.enabled, 'true'));
    const thresholds = SETTING_SPECS.budget_threshold.thresholds;
    assert.ok(validSetting(thresholds, [1, 50, 1000]));
    for (const bad of [
      [],
      [80, 50],
      [50, 50],
      [0],
      [1001],
      [50.5],
      '50,80',
      Array.from({ length: 11 }, (_, i) => i + 1),
    ])
      assert.ok(!validSetting(thresholds, bad), JSON.stringify(bad));
  });

  test('mergeSettings ignores unknown settings and values out of range', () => {
    const merged = mergeSettings({
      usage_spike: { windowMinutes: 0, factor: 3, minRequests: -1, bogus: true },
      budget_threshold: { thresholds: [90, 10] },
      auth_failures: { failuresPerMinute: 5 },
    });
    assert.equal(merged.usage_spike.windowMinutes, 5);
    assert.equal(merged.usage_spike.factor, 3);
    assert.equal(merged.usage_spike.minRequests, 100);
    assert.deepEqual(merged.budget_threshold.thresholds, [50, 80, 100]);
    assert.equal(merged.auth_failures.failuresPerMinute, 5);
    assert.deepEqual(DEFAULT_RULES.usage_spike.factor, 10, 'the defaults are not changed');
  });
});

describe('views and bodies', () => {
  test('names: engine ↔ API', () => {
    assert.equal(apiName('failuresPerMinute'), 'failures_per_minute');
    assert.equal(storedName('failures_per_minute'), 'failuresPerMinute');
    for (const kind of RULE_KINDS)
      for (const name of settingNames(kind)) assert.equal(storedName(apiName(name)), name);
  });

  test('a view marks what the workspace sets; invalid stored values count as not set', () => {
    const view = ruleView('usage_spike', 'ws_x', { minRequests: 5, windowMinutes: 999, other: 1 });
    assert.equal(view.workspace_id, 'ws_x');
    assert.equal(view.settings.min_requests, 5);
    assert.equal(view.settings.window_minutes, 5);
    assert.equal(view.defaults.min_requests, 100);
    assert.deepEqual(view.overridden, ['min_requests']);
    assert.deepEqual(overridesOf(view), { min_requests: 5 });
    assert.deepEqual(ruleView('key_expiring', 'ws_x', undefined).overridden, []);
  });

  test('parseOverrides names the setting at fault', () => {
    assert.deepEqual(parseOverrides('budget_threshold', { thresholds: [10, 20], enabled: false }), {
      thresholds: [10, 20],
      enabled: false,
    });
    assert.deepEqual(parseOverrides('new_network', {}), {});
    const cases: [Parameters<typeof parseOverrides>[0], unknown, string | undefined, RegExp][] = [
      ['usage_spike', { window_minutes: 61 }, 'window_minutes', /^must be 1 to 60 minutes$/],
      ['usage_spike', { min_tokens: 1.5 }, 'min_tokens', /whole number/],
      ['budget_threshold', { thresholds: [3, 2] }, 'thresholds', /increasing order/],
      ['auth_failures', { failures_per_minute: 0 }, 'failures_per_minute', /^must be 1 to 1000000$/],
      [
        'new_network',
        { window_minutes: 5 },
        'window_minutes',
        /has no setting "window_minutes" \(its settings: enabled, cooldown_minutes\)/,
      ],
      ['key_expiring', 'nope', undefined, /./],
    ];
    for (const [kind, body, field, message] of cases) {
      assert.throws(
        () => parseOverrides(kind, body),
        (error: unknown) =>
          error instanceof RuleSettingsError && error.field === field && message.test(error.message),
        `${kind} ${JSON.stringify(body)}`,
      );
    }
  });

  test('the body schemas are strict and every setting is optional', () => {
    for (const kind of RULE_KINDS) {
      assert.ok(RULE_UPDATE_SCHEMAS[kind].safeParse({}).success);
      assert.ok(!RULE_UPDATE_SCHEMAS[kind].safeParse({ nope: 1 }).success);
    }
  });
});
