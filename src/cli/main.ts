/**
 * The `keygate` command: a thin layer of argument parsing and printing over src/.
 */
import { Command, CommanderError, Option } from 'commander';
import { type Config, ConfigError, type ConfigFlags, isLoopback, loadConfig } from '../config/config.ts';
import { parseDuration } from '../config/duration.ts';
import { ensureDataDir, loadSecrets } from '../config/secrets.ts';
import { StartError, startGateway } from '../http/server.ts';
import { createKey, KeyInputError } from '../keys/service.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/types.ts';
import { iso, keyView, table } from './format.ts';

export const VERSION = '0.1.0';

/** An error whose message is meant for the user as it is (no stack trace). */
class UserError extends Error {
  override name = 'UserError';
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

interface StoreOptions {
  dataDir?: string;
  config?: string;
}

function addStoreOptions(command: Command): Command {
  return command
    .option('--data-dir <dir>', 'data directory (env KEYGATE_DATA_DIR)', undefined)
    .option('--config <file>', 'YAML configuration file (env KEYGATE_CONFIG)');
}

function configFrom(options: ConfigFlags): Config {
  try {
    return loadConfig(options);
  } catch (error) {
    if (error instanceof ConfigError) throw new UserError(error.message, 2);
    throw error;
  }
}

async function withStore<T>(
  options: StoreOptions,
  work: (ctx: { store: Store; config: Config }) => Promise<T>,
): Promise<T> {
  const config = configFrom(options);
  ensureDataDir(config.dataDir);
  const store = await openStore(config.dataDir);
  try {
    return await work({ store, config });
  } finally {
    await store.close();
  }
}

function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

async function findKey(store: Store, id: string) {
  const key = await store.getKey(id);
  if (!key) throw new UserError(`no key with id ${id} (see \`keygate keys list\`)`);
  return key;
}

function buildProgram(): Command {
  const program = new Command('keygate')
    .description('Keygate: a self-hosted, Mistral-compatible LLM API gateway built around API keys')
    .version(VERSION, '-v, --version')
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ sortSubcommands: false })
    // Before any subcommand is added: commander copies this setting into each one at creation.
    .exitOverride();

  program
    .command('start')
    .description('run the gateway (HTTPS on 127.0.0.1:8443, data in ./.keygate)')
    .option('--port <port>', 'port to listen on (env KEYGATE_PORT)', undefined)
    .option('--host <host>', 'address to bind (env KEYGATE_HOST)', undefined)
    .option('--data-dir <dir>', 'data directory (env KEYGATE_DATA_DIR)', undefined)
    .option('--config <file>', 'YAML configuration file (env KEYGATE_CONFIG)')
    .option('--tls-cert <file>', 'PEM certificate to serve instead of the generated self-signed one')
    .option('--tls-key <file>', 'PEM private key for --tls-cert')
    .addOption(new Option('--http', 'serve plain HTTP (only behind a TLS-terminating proxy)'))
    .action(async (options: ConfigFlags) => {
      await runStart(configFrom(options));
    });

  const keys = program.command('keys').description('create, list, show and revoke API keys');
  addStoreOptions(
    keys
      .command('create')
      .description('create a key and print its secret (shown once)')
      .requiredOption('--name <name>', 'a name that says who or what uses the key')
      .option('--expires <duration>', 'lifetime, e.g. 90d, 12h, 30m')
      .option('--json', 'print JSON'),
  ).action(async (options: StoreOptions & { name: string; expires?: string; json?: boolean }) => {
    let expiresInMs: number | undefined;
    if (options.expires !== undefined) {
      expiresInMs = parseDuration(options.expires);
      if (expiresInMs === undefined || expiresInMs === 0) {
        throw new UserError(
          `--expires takes a duration such as 90d, 24h, 30m or 45s, not "${options.expires}"`,
          2,
        );
      }
    }
    await withStore(options, async ({ store, config }) => {
      const secrets = loadSecrets(config.dataDir, process.env.KEYGATE_SECRET);
      let created: Awaited<ReturnType<typeof createKey>>;
      try {
        created = await createKey(
          { store, pepper: secrets.pepper, prefix: config.keys.prefix },
          { name: options.name, expiresInMs, createdBy: 'cli' },
        );
      } catch (error) {
        if (error instanceof KeyInputError) throw new UserError(error.message, 2);
        throw error;
      }
      if (options.json) {
        printJson({ ...keyView(created.record), key: created.key });
        return;
      }
      print(`Created key ${created.record.id} "${created.record.name}".`);
      print('');
      print(`  ${created.key}`);
      print('');
      print('This is the only time the key is shown: store it now (e.g. in a secret manager).');
      print('Use it as "Authorization: Bearer <key>" against the gateway.');
      if (created.record.expiresAt !== null) print(`It expires at ${iso(created.record.expiresAt)}.`);
    });
  });

  addStoreOptions(
    keys.command('list').description('list keys (never their secrets)').option('--json', 'print JSON'),
  ).action(async (options: StoreOptions & { json?: boolean }) => {
    await withStore(options, async ({ store }) => {
      const now = Date.now();
      const list = (await store.listKeys()).map((k) => keyView(k, now));
      if (options.json) {
        printJson(list);
        return;
      }
      if (list.length === 0) {
        print('No keys yet. Create one with: keygate keys create --name <name>');
        return;
      }
      print(
        table(
          ['ID', 'NAME', 'KEY', 'STATUS', 'CREATED', 'LAST USED', 'EXPIRES'],
          list.map((k) => [
            k.id,
            k.name,
            k.display,
            k.status,
            k.created_at ?? '',
            k.last_used_at ?? 'never',
            k.expires_at ?? 'never',
          ]),
        ),
      );
    });
  });

  addStoreOptions(
    keys
      .command('show')
      .description('show one key')
      .argument('<id>', 'key id')
      .option('--json', 'print JSON'),
  ).action(async (id: string, options: StoreOptions & { json?: boolean }) => {
    await withStore(options, async ({ store }) => {
      const view = keyView(await findKey(store, id));
      if (options.json) printJson(view);
      else
        print(
          table(
            ['FIELD', 'VALUE'],
            Object.entries(view).map(([k, v]) => [k, v === null ? '-' : String(v)]),
          ),
        );
    });
  });

  addStoreOptions(
    keys
      .command('revoke')
      .description('revoke a key at once (a running gateway refuses it within a second)')
      .argument('<id>', 'key id')
      .option('--json', 'print JSON'),
  ).action(async (id: string, options: StoreOptions & { json?: boolean }) => {
    await withStore(options, async ({ store }) => {
      const before = await findKey(store, id);
      const after = await store.revokeKey(id, Date.now());
      if (!after) throw new UserError(`no key with id ${id}`);
      if (options.json) printJson(keyView(after));
      else if (before.revokedAt !== null) print(`Key ${id} was already revoked at ${iso(before.revokedAt)}.`);
      else print(`Revoked key ${id} "${after.name}". Requests with it are refused from now on.`);
    });
  });

  addStoreOptions(
    program
      .command('usage')
      .description('show usage totals per key: requests, prompt, completion and total tokens')
      .option('--key <id>', 'only this key')
      .option('--since <duration>', 'only the last period, e.g. 7d, 24h')
      .option('--json', 'print JSON'),
  ).action(async (options: StoreOptions & { key?: string; since?: string; json?: boolean }) => {
    let since: number | undefined;
    if (options.since !== undefined) {
      const ms = parseDuration(options.since);
      if (ms === undefined)
        throw new UserError(`--since takes a duration such as 7d or 24h, not "${options.since}"`, 2);
      since = Date.now() - ms;
    }
    await withStore(options, async ({ store }) => {
      const totals = await store.usageTotals({ keyId: options.key, since });
      const rows = totals.map((t) => ({
        key_id: t.keyId,
        name: t.name,
        requests: t.requests,
        errors: t.errors,
        prompt_tokens: t.promptTokens,
        completion_tokens: t.completionTokens,
        total_tokens: t.totalTokens,
      }));
      if (options.json) {
        printJson(rows);
        return;
      }
      if (rows.length === 0) {
        print('No usage recorded yet.');
        return;
      }
      print(
        table(
          ['KEY', 'NAME', 'REQUESTS', 'ERRORS', 'PROMPT', 'COMPLETION', 'TOTAL'],
          rows.map((r) => [
            r.key_id,
            r.name ?? '',
            String(r.requests),
            String(r.errors),
            String(r.prompt_tokens),
            String(r.completion_tokens),
            String(r.total_tokens),
          ]),
        ),
      );
    });
  });

  return program;
}

async function runStart(config: Config): Promise<void> {
  const err = (line = '') => process.stderr.write(`${line}\n`);
  if (config.server.http && !isLoopback(config.server.host)) {
    err('');
    err('!!! WARNING: serving plain HTTP on a non-loopback address (%s).'.replace('%s', config.server.host));
    err('!!! API keys will cross the network unencrypted. Use --http only behind a TLS-terminating proxy');
    err('!!! on the same host or a trusted network.');
    err('');
  }
  let running: Awaited<ReturnType<typeof startGateway>>;
  try {
    running = await startGateway(config);
  } catch (error) {
    if (error instanceof StartError) throw new UserError(error.message, 1);
    throw error;
  }
  err(`Keygate ${VERSION} is listening on ${running.url}`);
  err(`  data directory: ${config.dataDir} (SQLite)`);
  if (running.tls) {
    err(
      `  TLS certificate: ${running.tls.certPath}${running.tls.generated ? ' (self-signed, generated now)' : ''}`,
    );
    err(`  certificate SHA-256 fingerprint: ${running.tls.fingerprint}`);
  }
  if (running.secrets.source === 'generated')
    err(`  server secret generated: ${config.dataDir}/secret (mode 0600; back it up)`);
  if (running.upstream.configured) {
    err(`  upstream: ${config.upstream.url} (provider key configured)`);
  } else {
    err(`  upstream: ${config.upstream.url} — NO PROVIDER KEY CONFIGURED.`);
    err('    Key management works, but /v1 calls answer 503 until you set KEYGATE_UPSTREAM_KEY');
    err('    (or MISTRAL_API_KEY, or upstream.key in a --config file) and restart.');
  }
  err('');
  err('Next:');
  err('  1. create a key:  npx keygate keys create --name my-app');
  const cacert =
    running.tls?.generated || running.tls?.certPath.startsWith(config.dataDir)
      ? `--cacert ${running.tls?.certPath} `
      : '';
  err(
    `  2. call the API:  curl ${running.tls ? cacert : ''}${running.url}/v1/models -H "Authorization: Bearer $KEYGATE_KEY"`,
  );
  err('Stop with Ctrl-C (in-flight requests are finished first).');

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      err(`${signal} again: exiting now.`);
      process.exit(1);
    }
    stopping = true;
    err(
      `${signal} received: finishing in-flight requests (up to ${config.server.shutdownTimeoutMs / 1000} s)...`,
    );
    running.close().then(
      () => {
        err('Keygate stopped.');
        process.exit(0);
      },
      (error: unknown) => {
        err(`error while stopping: ${(error as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

export async function main(argv: readonly string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv]);
  } catch (error) {
    if (error instanceof CommanderError) {
      process.exitCode = error.exitCode === 0 ? 0 : 2;
      return;
    }
    if (error instanceof UserError) {
      process.stderr.write(`keygate: ${error.message}\n`);
      process.exitCode = error.exitCode;
      return;
    }
    process.stderr.write(`keygate: unexpected error: ${(error as Error).message}\n`);
    process.exitCode = 1;
  }
}
