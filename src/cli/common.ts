/** What every CLI command shares: errors for the user, printing, and opening the data directory. */
import type { Command } from 'commander';
import { type Config, ConfigError, type ConfigFlags, loadConfig } from '../config/config.ts';
import { ensureDataDir, loadSecrets } from '../config/secrets.ts';
import { type KeyDeps, KeyInputError, KeyNotFoundError } from '../keys/service.ts';
import { openStore } from '../store/index.ts';
import type { Store } from '../store/types.ts';
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
}

/** Runs `work` against the data directory's store, turning input errors into user errors. */
export async function withStore<T>(
  options: StoreOptions,
  work: (ctx: CommandContext) => Promise<T>,
): Promise<T> {
  const config = configFrom(options);
  ensureDataDir(config.dataDir);
  const store = await openStore(config.dataDir);
  const ctx: CommandContext = {
    store,
    config,
    keys: () => ({
      store,
      pepper: loadSecrets(config.dataDir, process.env.KEYGATE_SECRET).pepper,
      prefix: config.keys.prefix,
    }),
  };
  try {
    return await work(ctx);
  } catch (error) {
    if (error instanceof KeyInputError) {
      const option = error.field === undefined ? undefined : OPTION_OF_FIELD[error.field];
      throw new UserError(option ? `${option}: ${error.message}` : error.message, 2);
    }
    if (error instanceof UserInputError) throw new UserError(error.message, 2);
    if (error instanceof KeyNotFoundError)
      throw new UserError(`${error.message} (see \`keygate keys list\`)`);
    throw error;
  } finally {
    await store.close();
  }
}

export function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

export function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}
