/**
 * `keygate alerts …`: list and acknowledge alerts, manage the channels they are sent to, send a
 * test alert, show and change the rules' settings of a workspace. Local (the data directory;
 * `alerts test` then sends from this process) or, with --url / KEYGATE_URL, through a gateway's
 * management API.
 *
 * `alerts channels add --url` is the channel's URL (as the other alert tools spell it); that one
 * command reaches a gateway through KEYGATE_URL only.
 *
 * `alerts rules set` changes the settings given and keeps the workspace's other ones (it reads the
 * rule, then writes all of its settings back). On the data directory, a running gateway applies a
 * change within a minute (it reads rule settings at most a minute old); through the API, at once.
 */
import { type Command, Option } from 'commander';
import { ChannelInputError, parseChannelInput } from '../alerts/channels.ts';
import {
  apiName,
  isRuleKind,
  overridesOf,
  parseOverrides,
  RuleSettingsError,
  type RuleView,
  type SettingValue,
  storedName,
} from '../alerts/rule-settings.ts';
import {
  MAX_COOLDOWN_MINUTES,
  RULE_KINDS,
  type RuleKind,
  type SettingSpec,
  settingNames,
  settingSpec,
  validSetting,
} from '../alerts/rules.ts';
import { parseDuration } from '../config/duration.ts';
import { looksLikeKey } from '../keys/scrub.ts';
import { ALERT_KINDS, type AlertKind } from '../store/types.ts';
import { type DeliveryView, withBackend } from './backend.ts';
import {
  addStoreOptions,
  addTargetOptions,
  envValue,
  print,
  printJson,
  type StoreOptions,
  type TargetOptions,
  UserError,
} from './common.ts';
import { fieldRows, table } from './format.ts';
import { count } from './parse.ts';

function deliveryTable(results: readonly DeliveryView[]): string {
  return table(
    ['CHANNEL', 'TYPE', 'NAME', 'OUTCOME', 'STATUS', 'ERROR'],
    results.map((r) => [
      r.channel_id,
      r.type,
      r.name,
      r.outcome,
      r.status === null ? '-' : String(r.status),
      r.error ?? '',
    ]),
  );
}

// ---- rule settings -------------------------------------------------------------------------------

/** The option that sets a rule setting (stored name): `minRequests` → `--min-requests`; the cooldown takes a duration. */
function flagOf(name: string): string {
  return name === 'cooldownMinutes' ? '--cooldown' : `--${apiName(name).replaceAll('_', '-')}`;
}

/** The option that sets a setting, from its API name (`min_requests`). */
function flagOfApi(name: string): string {
  return flagOf(storedName(name));
}

/** A value given on the command line, quoted for a message (a pasted key is not echoed). */
function shownValue(text: string): string {
  return looksLikeKey(text) ? '[something shaped like a key]' : JSON.stringify(text.slice(0, 100));
}

/** Minutes as the shortest exact duration: 1440 → 1d, 90 → 90m. */
function minutesText(minutes: number): string {
  if (minutes % 1440 === 0) return `${minutes / 1440}d`;
  if (minutes % 60 === 0) return `${minutes / 60}h`;
  return `${minutes}m`;
}

function valueText(name: string, value: SettingValue | undefined): string {
  if (value === undefined) return '-';
  if (Array.isArray(value)) return value.join(',');
  if (name === 'cooldown_minutes' && typeof value === 'number') return minutesText(value);
  return String(value);
}

/** Every setting option of `alerts rules set`, with the rules that take it. */
function settingOptions(): { name: string; flag: string; spec: SettingSpec; kinds: RuleKind[] }[] {
  const out: { name: string; flag: string; spec: SettingSpec; kinds: RuleKind[] }[] = [];
  for (const kind of RULE_KINDS) {
    for (const name of settingNames(kind)) {
      const seen = out.find((o) => o.name === name);
      const spec = settingSpec(kind, name);
      if (seen) seen.kinds.push(kind);
      else if (spec) out.push({ name, flag: flagOf(name), spec, kinds: [kind] });
    }
  }
  return out;
}

function optionHelp(o: { name: string; spec: SettingSpec; kinds: RuleKind[] }): string {
  const who = o.kinds.length === RULE_KINDS.length ? 'every rule' : o.kinds.join(', ');
  if (o.name === 'cooldownMinutes')
    return `${who}: how long a repeat of the same alert is folded into it, 1m to 365d`;
  switch (o.spec.type) {
    case 'boolean':
      return `${who}: true or false, whether the rule raises alerts`;
    case 'percentages':
      return `${who}: percentages ${o.spec.min}-${o.spec.max}, increasing, e.g. 50,80,100`;
    default:
      return `${who}: ${o.spec.min}-${o.spec.max}${o.spec.unit ? ` ${o.spec.unit}` : ''}. ${o.spec.description}`;
  }
}

/** One option's value as the setting it sets, or a one-line UserError naming the option. */
function parseSettingFlag(name: string, spec: SettingSpec, text: string): SettingValue {
  const flag = flagOf(name);
  const shown = shownValue(text);
  const value = text.trim();
  if (name === 'cooldownMinutes') {
    const ms = parseDuration(value);
    const minutes = ms === undefined ? Number.NaN : ms / 60_000;
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > MAX_COOLDOWN_MINUTES)
      throw new UserError(
        `${flag} takes a duration of whole minutes from 1m to 365d, such as 30m, 6h or 1d, not ${shown}`,
        2,
      );
    return minutes;
  }
  switch (spec.type) {
    case 'boolean':
      if (value === 'true') return true;
      if (value === 'false') return false;
      throw new UserError(`${flag} takes true or false, not ${shown}`, 2);
    case 'integer': {
      const n = /^\d{1,16}$/.test(value) ? Number(value) : Number.NaN;
      if (!validSetting(spec, n))
        throw new UserError(
          `${flag} takes a whole number from ${spec.min} to ${spec.max}${spec.unit ? ` (${spec.unit})` : ''}, not ${shown}`,
          2,
        );
      return n;
    }
    case 'number': {
      const n = /^\d{1,16}(?:\.\d{1,16})?$/.test(value) ? Number(value) : Number.NaN;
      if (!validSetting(spec, n))
        throw new UserError(`${flag} takes a number from ${spec.min} to ${spec.max}, not ${shown}`, 2);
      return n;
    }
    case 'percentages': {
      const parts = value.split(',').map((p) => p.trim());
      const list = parts.every((p) => /^\d{1,16}$/.test(p)) ? parts.map(Number) : [];
      if (!validSetting(spec, list))
        throw new UserError(
          `${flag} takes up to ${spec.maxItems} whole percentages from ${spec.min} to ${spec.max}, in increasing order without repeats (e.g. 50,80,100), not ${shown}`,
          2,
        );
      return list;
    }
  }
}

function ruleKind(text: string): RuleKind {
  if (isRuleKind(text)) return text;
  throw new UserError(
    `unknown rule ${shownValue(text.slice(0, 64))}; the rules are ${RULE_KINDS.join(', ')}`,
    2,
  );
}

/** The settings given on the command line for a rule (API names), each checked. */
function settingsFromFlags(kind: RuleKind, options: Record<string, unknown>): Record<string, SettingValue> {
  const given: Record<string, SettingValue> = {};
  for (const o of settingOptions()) {
    const text = options[o.name === 'cooldownMinutes' ? 'cooldown' : o.name];
    if (typeof text !== 'string') continue;
    if (!o.kinds.includes(kind)) {
      throw new UserError(
        `${o.flag} does not apply to the ${kind} rule (it takes ${settingNames(kind).map(flagOf).join(', ')})`,
        2,
      );
    }
    given[apiName(o.name)] = parseSettingFlag(o.name, o.spec, text);
  }
  if (Object.keys(given).length === 0)
    throw new UserError(
      `nothing to set: give at least one of ${settingNames(kind).map(flagOf).join(', ')} ` +
        `(or go back to the defaults with \`keygate alerts rules reset ${kind}\`)`,
      2,
    );
  return given;
}

function ruleRows(view: RuleView): string[][] {
  return Object.keys(view.settings).map((name, i) => {
    const overridden = view.overridden.includes(name);
    return [
      i === 0 ? view.kind : '',
      flagOfApi(name).slice(2),
      `${valueText(name, view.settings[name])}${overridden ? ' *' : ''}`,
      valueText(name, view.defaults[name]),
    ];
  });
}

function rulesTable(views: readonly RuleView[]): string {
  return table(['RULE', 'SETTING', 'VALUE', 'DEFAULT'], views.flatMap(ruleRows));
}

/** Whether a command goes through a gateway's API (the same choice as `withBackend`). */
function remote(options: TargetOptions): boolean {
  return (options.url ?? envValue('KEYGATE_URL')) !== undefined;
}

function appliesNote(options: TargetOptions): string {
  return remote(options)
    ? 'The gateway applies it at once (other gateway processes on its database within a minute).'
    : 'A running gateway on this data directory applies it within a minute.';
}

function registerRuleCommands(alerts: Command): void {
  const rules = alerts
    .command('rules')
    .description('the alert rules of a workspace and their settings (defaults, or set per workspace)');

  addTargetOptions(
    rules
      .command('list', { isDefault: true })
      .description('show every rule with its settings (* = set for the workspace; the rest are defaults)')
      .option('--workspace <id>', 'the workspace (default: ws_default, or the admin key’s with --url)')
      .option('--json', 'print JSON'),
  ).action(async (options: TargetOptions & { workspace?: string; json?: boolean }) => {
    await withBackend(options, async (backend) => {
      const views = await backend.listRules(options.workspace);
      if (options.json) {
        printJson(views);
        return;
      }
      print(`Alert rules of workspace ${views[0]?.workspace_id ?? options.workspace ?? '-'}:`);
      print('');
      print(rulesTable(views));
      print('');
      print('* set for this workspace; the other values are the defaults.');
      print('Change a setting with `keygate alerts rules set RULE --SETTING VALUE`,');
      print('go back to the defaults with `keygate alerts rules reset RULE`.');
    });
  });

  const set = rules
    .command('set')
    .description(
      'change settings of a rule for a workspace (the settings not given stay as they are); ' +
        'on the data directory, a running gateway applies the change within a minute',
    )
    .argument('<rule>', RULE_KINDS.join(', '))
    .option('--workspace <id>', 'the workspace (default: ws_default, or the admin key’s with --url)');
  for (const o of settingOptions()) {
    const placeholder =
      o.name === 'cooldownMinutes'
        ? '<duration>'
        : o.spec.type === 'boolean'
          ? '<true|false>'
          : o.spec.type === 'percentages'
            ? '<list>'
            : '<n>';
    set.option(`${o.flag} ${placeholder}`, optionHelp(o));
  }
  addTargetOptions(set.option('--json', 'print JSON')).action(
    async (kindText: string, options: TargetOptions & Record<string, unknown>) => {
      const kind = ruleKind(kindText);
      const given = settingsFromFlags(kind, options);
      const workspace = typeof options.workspace === 'string' ? options.workspace : undefined;
      await withBackend(options, async (backend) => {
        const current = (await backend.listRules(workspace)).find((v) => v.kind === kind);
        if (!current) throw new UserError(`the gateway does not have the ${kind} rule`);
        let body: Record<string, SettingValue>;
        try {
          body = parseOverrides(kind, { ...overridesOf(current), ...given });
        } catch (error) {
          if (error instanceof RuleSettingsError && error.field !== undefined)
            throw new UserError(`${flagOfApi(error.field)}: ${error.message}`, 2);
          throw error;
        }
        const view = await backend.setRule(kind, body, workspace);
        if (options.json) {
          printJson(view);
          return;
        }
        const changed = Object.entries(given)
          .map(([name, value]) => `${flagOfApi(name).slice(2)} ${valueText(name, value)}`)
          .join(', ');
        print(`Set the ${kind} rule of workspace ${view.workspace_id}: ${changed}.`);
        print('');
        print(rulesTable([view]));
        print('');
        print(appliesNote(options));
      });
    },
  );

  addTargetOptions(
    rules
      .command('reset')
      .description('put a rule of a workspace back to the default settings')
      .argument('<rule>', RULE_KINDS.join(', '))
      .option('--workspace <id>', 'the workspace (default: ws_default, or the admin key’s with --url)')
      .option('--json', 'print JSON'),
  ).action(async (kindText: string, options: TargetOptions & { workspace?: string; json?: boolean }) => {
    const kind = ruleKind(kindText);
    await withBackend(options, async (backend) => {
      const current = (await backend.listRules(options.workspace)).find((v) => v.kind === kind);
      if (!current) throw new UserError(`the gateway does not have the ${kind} rule`);
      if (current.overridden.length === 0) {
        if (options.json) printJson(current);
        else
          print(
            `The ${kind} rule of workspace ${current.workspace_id} already has the default settings: nothing to reset.`,
          );
        return;
      }
      const view = await backend.setRule(kind, {}, options.workspace);
      if (options.json) {
        printJson(view);
        return;
      }
      print(`The ${kind} rule of workspace ${view.workspace_id} is back to the default settings.`);
      print('');
      print(rulesTable([view]));
      print('');
      print(appliesNote(options));
    });
  });
}

export function registerAlertCommands(program: Command): void {
  const alerts = program
    .command('alerts')
    .description(
      'alerts (usage spikes, budgets, new networks, failed logins, expiring keys), their channels and rules',
    );

  addTargetOptions(
    alerts
      .command('list')
      .description('list alerts, most recently seen first')
      .option('--workspace <id>', 'only this workspace')
      .option('--unacknowledged', 'only alerts not yet acknowledged')
      .addOption(new Option('--kind <kind>', 'only this kind').choices(ALERT_KINDS))
      .option('--key <id>', 'only alerts about this key')
      .option('--limit <n>', 'at most this many (default 50)')
      .option('--json', 'print JSON'),
  ).action(
    async (
      options: TargetOptions & {
        workspace?: string;
        unacknowledged?: boolean;
        kind?: AlertKind;
        key?: string;
        limit?: string;
        json?: boolean;
      },
    ) => {
      const limit = options.limit === undefined ? 50 : (count('--limit', options.limit) ?? 50);
      await withBackend(options, async (backend) => {
        const views = await backend.listAlerts({
          workspaceId: options.workspace,
          kind: options.kind,
          keyId: options.key,
          unacknowledged: options.unacknowledged === true,
          limit,
        });
        if (options.json) {
          printJson(views);
          return;
        }
        if (views.length === 0) {
          print('No alerts.');
          return;
        }
        print(
          table(
            ['ID', 'LAST SEEN', 'SEVERITY', 'KIND', 'KEY', 'COUNT', 'ACKNOWLEDGED', 'TITLE'],
            views.map((a) => [
              a.id,
              a.last_at ?? '',
              a.severity,
              a.kind,
              a.key === null ? '-' : `${a.key.id}${a.key.name === null ? '' : ` "${a.key.name}"`}`,
              String(a.occurrences),
              a.acknowledged_at ?? 'no',
              a.title,
            ]),
          ),
        );
      });
    },
  );

  addTargetOptions(
    alerts
      .command('show')
      .description('show an alert and its delivery log (every attempt to every channel)')
      .argument('<id>', 'alert id')
      .option('--json', 'print JSON'),
  ).action(async (id: string, options: TargetOptions & { json?: boolean }) => {
    await withBackend(options, async (backend) => {
      const detail = await backend.showAlert(id);
      if (options.json) {
        printJson(detail);
        return;
      }
      print(table(['FIELD', 'VALUE'], fieldRows(detail.alert as unknown as Record<string, unknown>)));
      print('');
      if (detail.deliveries.length === 0) {
        print(
          'No deliveries: the workspace had no channel when this alert was raised (add one: keygate alerts channels add).',
        );
        return;
      }
      print(
        table(
          ['TIME', 'CHANNEL', 'ATTEMPT', 'OUTCOME', 'STATUS', 'ERROR'],
          detail.deliveries.map((d) => [
            d.at,
            d.channel_id,
            String(d.attempt),
            d.outcome,
            d.status === null ? '-' : String(d.status),
            d.error ?? '',
          ]),
        ),
      );
    });
  });

  addTargetOptions(
    alerts
      .command('ack')
      .description('acknowledge an alert')
      .argument('<id>', 'alert id')
      .option('--json', 'print JSON'),
  ).action(async (id: string, options: TargetOptions & { json?: boolean }) => {
    await withBackend(options, async (backend) => {
      const view = await backend.acknowledgeAlert(id);
      if (options.json) printJson(view);
      else print(`Acknowledged alert ${view.id} (${view.title}) at ${view.acknowledged_at ?? '-'}.`);
    });
  });

  addTargetOptions(
    alerts
      .command('test')
      .description('send a test alert through every channel of a workspace and show how each went')
      .option('--workspace <id>', 'the workspace (default: ws_default, or the admin key’s with --url)')
      .option('--json', 'print JSON'),
  ).action(async (options: TargetOptions & { workspace?: string; json?: boolean }) => {
    await withBackend(options, async (backend) => {
      const results = await backend.testAlert(options.workspace);
      if (options.json) printJson(results);
      if (results.length === 0) {
        throw new UserError(
          'no alert channels to test: add one with `keygate alerts channels add --type webhook --url URL`',
        );
      }
      if (!options.json) print(deliveryTable(results));
      const failed = results.filter((r) => r.outcome !== 'sent').length;
      if (failed > 0) throw new UserError(`${failed} of ${results.length} channels failed (see ERROR above)`);
      if (!options.json) print(`The test alert reached all ${results.length} channel(s).`);
    });
  });

  const channels = alerts.command('channels').description('where alerts are sent: webhook, Slack, email');

  addTargetOptions(
    channels
      .command('list')
      .description('list alert channels (never their secrets)')
      .option('--workspace <id>', 'only this workspace')
      .option('--json', 'print JSON'),
  ).action(async (options: TargetOptions & { workspace?: string; json?: boolean }) => {
    await withBackend(options, async (backend) => {
      const views = await backend.listChannels(options.workspace);
      if (options.json) {
        printJson(views);
        return;
      }
      if (views.length === 0) {
        print('No alert channels. Add one with: keygate alerts channels add --type webhook --url URL');
        return;
      }
      print(
        table(
          ['ID', 'WORKSPACE', 'TYPE', 'NAME', 'TARGET'],
          views.map((c) => [
            c.id,
            c.workspace_id,
            c.type,
            c.name,
            c.email === null ? c.target : `${c.target} → ${c.email.to.join(', ')}`,
          ]),
        ),
      );
    });
  });

  addStoreOptions(
    channels
      .command('add')
      .description('add an alert channel; its settings are stored encrypted')
      .addOption(
        new Option('--type <type>', 'the channel type')
          .choices(['webhook', 'slack', 'email'])
          .makeOptionMandatory(),
      )
      .requiredOption(
        '--url <url>',
        'webhook/slack: https://… (http:// for loopback only); ' +
          'email: smtp://[user:pass@]host[:port]?from=ADDR&to=ADDR[,ADDR] (or smtps://)',
      )
      .option('--name <name>', 'a name for it (default: the type and the host)')
      .option('--secret <secret>', 'webhook: the signing secret (default: generated and shown once)')
      .option(
        '--workspace <id>',
        'the workspace (default: ws_default, or the admin key’s through KEYGATE_URL)',
      )
      .option(
        '--ca-file <file>',
        'with KEYGATE_URL: PEM certificate to trust for the gateway (env KEYGATE_CA_FILE)',
      )
      .option('--json', 'print JSON'),
  ).action(
    async (
      options: StoreOptions & {
        type: string;
        url: string;
        name?: string;
        secret?: string;
        workspace?: string;
        caFile?: string;
        json?: boolean;
      },
    ) => {
      const input = { type: options.type, url: options.url, name: options.name, secret: options.secret };
      try {
        parseChannelInput(input);
      } catch (error) {
        if (error instanceof ChannelInputError) throw new UserError(`--${error.field}: ${error.message}`, 2);
        throw error;
      }
      // --url is the channel's: the gateway, if any, is KEYGATE_URL's.
      const target: TargetOptions = {
        dataDir: options.dataDir,
        config: options.config,
        caFile: options.caFile,
      };
      await withBackend(target, async (backend) => {
        // The destination is checked where the channel is stored (the gateway's policy, or, on a
        // data directory, the configuration's alerts.allowedDestinations).
        const created = await backend
          .addChannel({ ...input, workspaceId: options.workspace })
          .catch((error: unknown) => {
            if (error instanceof ChannelInputError)
              throw new UserError(`--${error.field}: ${error.message}`, 2);
            throw error;
          });
        if (options.json) {
          printJson(created);
          return;
        }
        print(
          `Added ${created.type} channel ${created.id} "${created.name}" → ${created.target} (workspace ${created.workspace_id}).`,
        );
        if (created.secret !== null) {
          print('');
          print(
            'Signing secret (shown once; the receiver checks x-keygate-signature with it, see docs/alerts.md):',
          );
          print('');
          print(`  ${created.secret}`);
        }
        print('');
        print('Send a test alert with: keygate alerts test');
      });
    },
  );

  addTargetOptions(
    channels.command('remove').description('remove an alert channel').argument('<id>', 'channel id'),
  ).action(async (id: string, options: TargetOptions) => {
    await withBackend(options, async (backend) => {
      await backend.removeChannel(id);
      print(`Removed alert channel ${id}.`);
    });
  });

  registerRuleCommands(alerts);
}
