/** What every CLI command shares: errors for the user, printing, and opening the data directory. */
import { type Command, Option } from 'commander';
import { type Config, ConfigError, type ConfigFlags, loadConfig } from '../config/config.ts';
import { ensureDataDir, type ServerSecrets, secretsFor, secretToGenerate } from '../config/secrets.ts';
import { type KeyDeps, KeyExpiredError, KeyInputError, KeyNotFoundError } from '../keys/service.ts';
import { openStore } from '../store/index.ts';
import type { SecretBoundCounts, Store } from '../store/types.ts';
import { UserInputError } from '../users/service.ts';

/** An error whose message is meant for the user as it is (no stack trace). */
export class UserError extends Error {
  override name = 'UserError';
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

export interface StoreOptions {
  dataDir?: string;
  config?: string;
}

export function addStoreOptions(command: Command): Command {
  return command
    .option('--data-dir <dir>', 'data directory (env KEYGATE_DATA_DIR)')
    .option('--config <file>', 'YAML configuration file (env KEYGATE_CONFIG)');
}

export function configFrom(options: ConfigFlags): Config {
  try {
    return loadConfig(options);
  } catch (error) {
    if (error instanceof ConfigError) throw new UserError(error.message, 2);
    throw error;
  }
}

/** The command-line option that sets each key field, for error messages. */
const OPTION_OF_FIELD: Record<string, string> = {
  name: '--name',
  scopes: '--scopes',
  models: '--models',
  allowedIps: '--allow-ip',
  'limits.rpm': '--rpm',
  'limits.tpm': '--tpm',
  'limits.concurrency': '--concurrency',
  'budget.day': '--budget',
  'budget.month': '--budget',
  expires: '--expires',
  grace: '--grace',
};

export interface CommandContext {
  store: Store;
  config: Config;
  /** What key operations need (store, pepper, prefix). */
  keys(): KeyDeps;
  /** The server secrets (read, or generated on a fresh data directory, at the first call). */
  secrets(): ServerSecrets;
}

/** Runs `work` against the data directory's store, turning input errors into user errors. */
export async function withStore<T>(
  options: StoreOptions,
  work: (ctx: CommandContext) => Promise<T>,
): Promise<T> {
  const config = configFrom(options);
  try {
    for (const warning of ensureDataDir(config.dataDir))
      process.stderr.write(`keygate: warning: ${warning}\n`);
  } catch (error) {
    throw new UserError((error as Error).message);
  }
  let store: Store;
  try {
    store = await openStore({
      dataDir: config.dataDir,
      databaseUrl: config.database.url,
      poolSize: Math.min(config.database.poolSize, 2),
    });
  } catch (error) {
    throw new UserError(`cannot open the store: ${(error as Error).message}`);
  }
  // The rule of `keygate start`: a missing secret is generated only over a store that holds
  // nothing made with one. Read only when there is no secret (a fresh or damaged data directory).
  let storeHolds: SecretBoundCounts | undefined;
  let secrets: ServerSecrets | undefined;
  try {
    if (secretToGenerate(config, process.env.KEYGATE_SECRET)) storeHolds = await store.countSecretBound();
  } catch (error) {
    await store.close();
    throw error;
  }
  const ctx: CommandContext = {
    store,
    config,
    secrets: () => {
      secrets ??= secretsOf(config, storeHolds);
      return secrets;
    },
    keys: () => ({
      store,
      pepper: ctx.secrets().pepper,
      prefix: config.keys.prefix,
    }),
  };
  try {
    return await work(ctx);
  } catch (error) {
    throw userErrorOf(error);
  } finally {
    await store.close();
  }
}

/** Input errors of the services as user errors (naming the option at fault); anything else as it is. */
export function userErrorOf(error: unknown): unknown {
  // Not a usage error: the key's state is in the way.
  if (error instanceof KeyExpiredError) return new UserError(error.message);
  if (error instanceof KeyInputError) {
    const option = error.field === undefined ? undefined : OPTION_OF_FIELD[error.field];
    return new UserError(option ? `${option}: ${error.message}` : error.message, 2);
  }
  if (error instanceof UserInputError) return new UserError(error.message, 2);
  if (error instanceof KeyNotFoundError) return new UserError(`${error.message} (see \`keygate keys list\`)`);
  return error;
}

/** The options of a command that works on the local data directory or, with --url, on a gateway. */
export interface TargetOptions extends StoreOptions {
  url?: string;
  caFile?: string;
}

export function addTargetOptions(command: Command): Command {
  return addStoreOptions(command)
    .option(
      '--url <url>',
      'work on the gateway at this URL through its management API, not on a data directory ' +
        '(env KEYGATE_URL; the key is read from env KEYGATE_ADMIN_KEY)',
    )
    .option(
      '--ca-file <file>',
      "PEM certificate to trust for --url, e.g. a gateway's <data-dir>/tls/cert.pem (env KEYGATE_CA_FILE)",
    );
}

/**
 * Options of a command that the management API does not offer: --url (and --ca-file) are accepted,
 * unlisted, only to refuse them with a message that says why (see `refuseRemote`).
 */
export function addLocalOnlyOptions(command: Command): Command {
  return addStoreOptions(command)
    .addOption(new Option('--url <url>').hideHelp())
    .addOption(new Option('--ca-file <file>').hideHelp());
}

/** The value of an environment variable, or undefined when it is unset or empty. */
export function envValue(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === '' ? undefined : value;
}

/** What --url can do, for the refusals of the commands that work on the data directory only. */
const REMOTE_COMMANDS = 'keys, usage, audit, workspaces and alerts';

/**
 * Refuses --url (or KEYGATE_URL, unless `flagOnly`) for `command`, which works on the local data
 * directory only: the management API does not offer it.
 */
export function refuseRemote(command: string, options: TargetOptions, { flagOnly = false } = {}): void {
  if (command === 'start') {
    if (options.url !== undefined)
      throw new UserError(
        `\`start\` runs a gateway on this machine and takes no --url (--url is for ${REMOTE_COMMANDS})`,
        2,
      );
    return;
  }
  const local = `\`${command}\` works on the local data directory only: the management API does not offer it (--url works for ${REMOTE_COMMANDS})`;
  if (options.url !== undefined)
    throw new UserError(`${local}; run it on the gateway's host without --url`, 2);
  if (!flagOnly && envValue('KEYGATE_URL') !== undefined)
    throw new UserError(`${local}; KEYGATE_URL is set: unset it to work on the local data directory`, 2);
}

export function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

export function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

/**
 * The server secrets for a CLI command (KEYGATE_SECRET is required with DATABASE_URL). A missing
 * secret file is generated only with `storeHolds` showing an empty store (see withStore).
 */
export function secretsOf(config: Config, storeHolds?: SecretBoundCounts): ServerSecrets {
  try {
    return secretsFor(config, process.env.KEYGATE_SECRET, storeHolds);
  } catch (error) {
    throw new UserError((error as Error).message, 2);
  }
}
