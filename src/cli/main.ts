/**
 * The `keygate` command: a thin layer of argument parsing and printing over src/.
 */
import cluster from 'node:cluster';
import { Command, CommanderError, Option } from 'commander';
import type { Config, ConfigFlags } from '../config/config.ts';
import { setupToken } from '../console/credentials.ts';
import { StartError, startGateway } from '../http/server.ts';
import { isLoopbackHost } from '../net/addresses.ts';
import { registerAdminCommands } from './admin.ts';
import { registerAlertCommands } from './alerts.ts';
import { registerBackupCommand } from './backup.ts';
import { addStoreOptions, configFrom, refuseRemote, UserError, withStore } from './common.ts';
import { registerKeyCommands } from './keys.ts';
import { registerPeopleCommands } from './people.ts';
import { registerUsageCommand } from './usage.ts';
import { runWorkers } from './workers.ts';

export const VERSION = '0.1.0';

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
    .option(
      '--workers <n>',
      'processes serving the port; their limits stay exact, kept by the primary process (no Redis needed) or in Redis with REDIS_URL (env KEYGATE_WORKERS)',
    )
    .addOption(new Option('--url <url>').hideHelp())
    .action(async (options: ConfigFlags & { url?: string }) => {
      refuseRemote('start', options, { flagOnly: true });
      const config = configFrom(options);
      if (config.server.workers > 1 && cluster.isPrimary) await runWorkers(config, VERSION);
      else await runStart(config, cluster.isWorker);
    });

  addStoreOptions(
    program
      .command('setup-token')
      .description("print the console's one-time setup token (until the owner account exists)"),
  ).action(async (options: ConfigFlags) => {
    await withStore(options, async ({ store, secrets }) => {
      const token = await setupToken(store, secrets().consoleKey);
      if (token === undefined) {
        throw new UserError(
          'setup is done: an account exists already. Sign in to the console, or add users with `keygate users create`.',
        );
      }
      process.stdout.write(`${token}\n`);
    });
  });

  registerKeyCommands(program);

  registerUsageCommand(program);

  registerPeopleCommands(program, registerAdminCommands(program));
  registerAlertCommands(program);
  registerBackupCommand(program);
  return program;
}

async function runStart(config: Config, worker = false): Promise<void> {
  // A worker of `--workers N` is quiet: the primary prints the banner and relays the signals.
  const err = worker ? () => {} : (line = '') => process.stderr.write(`${line}\n`);
  if (config.server.http && !isLoopbackHost(config.server.host)) {
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
  err(
    config.database.url
      ? `  store: PostgreSQL (${redactUrl(config.database.url)}); data directory ${config.dataDir} (TLS files)`
      : `  data directory: ${config.dataDir} (SQLite)`,
  );
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
  err(`  console: ${running.url}/console`);
  const setupToken = await running.console.setupToken();
  if (setupToken !== undefined) {
    err('');
    err(`First run: open ${running.url}/console and create the owner account with the setup token`);
    err(`    ${setupToken}`);
    err('  (`keygate setup-token` shows it again until the owner account exists).');
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
      // Ctrl-C twice means "now"; a repeated SIGTERM (a service manager signalling the whole
      // process group, then the primary of --workers relaying it) does not cut the stop short.
      if (signal !== 'SIGINT' || worker) return;
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
  // A worker leaves Ctrl-C (sent to the whole process group) to the primary, which sends SIGTERM.
  process.on('SIGINT', worker ? () => {} : stop);
}

export async function main(argv: readonly string[]): Promise<void> {
  // `keygate keys list | head` closes the pipe early: that is not an error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
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

/** A connection URL without its password, for the banner. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'an unparsable URL';
  }
}
