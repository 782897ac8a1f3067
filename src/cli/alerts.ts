/**
 * `keygate alerts …`: list and acknowledge alerts, manage the channels they are sent to, send a
 * test alert. Local (the data directory; `alerts test` then sends from this process) or, with
 * --url / KEYGATE_URL, through a gateway's management API.
 *
 * `alerts channels add --url` is the channel's URL (as the other alert tools spell it); that one
 * command reaches a gateway through KEYGATE_URL only.
 */
import { type Command, Option } from 'commander';
import { ChannelInputError, parseChannelInput } from '../alerts/channels.ts';
import { ALERT_KINDS, type AlertKind } from '../store/types.ts';
import { type DeliveryView, withBackend } from './backend.ts';
import {
  addStoreOptions,
  addTargetOptions,
  print,
  printJson,
  type StoreOptions,
  type TargetOptions,
  UserError,
} from './common.ts';
import { table } from './format.ts';
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

export function registerAlertCommands(program: Command): void {
  const alerts = program
    .command('alerts')
    .description(
      'alerts (usage spikes, budgets, new networks, failed logins, expiring keys) and their channels',
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
        const created = await backend.addChannel({ ...input, workspaceId: options.workspace });
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
}
