import { hkdfSync, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SecretBoundCounts } from '../store/types.ts';

export interface ServerSecrets {
  /** HMAC key for hashing API keys. Derived, never stored. */
  pepper: Buffer;
  /** Key for encrypting secrets at rest (provider keys, webhook secrets). Derived, never stored. */
  dataKey: Buffer;
  /** Key for the console: CSRF tokens and the first-run setup token. Derived, never stored. */
  consoleKey: Buffer;
  /** Where the root secret came from, for the start-up banner. */
  source: 'env' | 'file' | 'generated';
}

export const SECRET_FILE = 'secret';
const MIN_SECRET_LENGTH = 32;

/** File modes mean nothing on Windows (access is by ACL there): the checks below skip it. */
const POSIX_MODES = process.platform !== 'win32';

function octal(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
}

/**
 * Creates the data directory (mode 0700) if needed. An existing one that other users may enter
 * (any group or other bit, e.g. 0755 from a plain `mkdir`) is changed to 0700, and a warning for
 * the log is returned: nothing Keygate keeps there (the secret, the database, the TLS key) is for
 * anyone else, and the database file is created with the process's umask. A directory Keygate
 * cannot change (another user's) is refused, with the chmod to run.
 */
export function ensureDataDir(dir: string): string[] {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!POSIX_MODES) return [];
  const mode = statSync(dir).mode & 0o777;
  if ((mode & 0o077) === 0) return [];
  try {
    chmodSync(dir, 0o700);
  } catch {
    throw new Error(
      `the data directory ${dir} is open to other users (mode ${octal(mode)}) and Keygate cannot change that: ` +
        `run \`chmod 700 ${dir}\` as its owner, then start again`,
    );
  }
  return [
    `the data directory ${dir} was open to other users (mode ${octal(mode)}): changed to 0700. ` +
      'If another account needed it (a backup job), give it access another way.',
  ];
}

/**
 * Refuses a file that must stay private (the server secret, a TLS private key) when other users
 * may read or change it, with the chmod to run. Not changed silently: whoever could read it may
 * have, and the operator must know. `allowGroup`: group read is accepted (an operator's TLS key is
 * often `0640 root:ssl-cert`); other bits are not. A missing file is not this check's business.
 */
export function assertPrivateFile(path: string, what: string, allowGroup = false): void {
  if (!POSIX_MODES) return;
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if ((mode & (allowGroup ? 0o037 : 0o077)) === 0) return;
  const who = mode & 0o007 ? 'every user of this machine' : 'the users of its group';
  throw new Error(
    `${what} ${path} is open to ${who} (mode ${octal(mode)}): run \`chmod ${allowGroup ? '640' : '600'} ${path}\` ` +
      'and start again. If someone else may have read it, treat it as exposed (see docs/security.md).',
  );
}

/** Writes a file readable by its owner only, creating it exclusively (fails with EEXIST if present). */
export function writePrivateFile(path: string, content: string, exclusive = true): void {
  writeFileSync(path, content, { mode: 0o600, flag: exclusive ? 'wx' : 'w' });
  chmodSync(path, 0o600);
}

function derive(root: Buffer, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', root, 'keygate', info, 32));
}

function deriveAll(root: Buffer): Omit<ServerSecrets, 'source'> {
  return {
    pepper: derive(root, 'key-hash-pepper/v1'),
    dataKey: derive(root, 'data-key/v1'),
    consoleKey: derive(root, 'console/v1'),
  };
}

/** True when no root secret exists yet: no KEYGATE_SECRET and no `<data-dir>/secret` file. */
export function secretMissing(dataDir: string, envSecret: string | undefined): boolean {
  if (envSecret !== undefined && envSecret !== '') return false;
  try {
    statSync(join(dataDir, SECRET_FILE));
    return false;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw error;
  }
}

/** The refusal to replace a lost secret, naming what the store holds that only it opens. */
export function lostSecretMessage(dataDir: string, held: SecretBoundCounts): string {
  const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;
  const things = [
    held.keys > 0 ? plural(held.keys, 'key', 'keys') : '',
    held.channels > 0 ? plural(held.channels, 'alert channel', 'alert channels') : '',
    held.twoFactorUsers > 0
      ? plural(held.twoFactorUsers, "user's two-factor secret", "users' two-factor secrets")
      : '',
  ].filter((t) => t !== '');
  const path = join(dataDir, SECRET_FILE);
  return (
    `${path} is missing but the database holds ${things.join(' and ')}, made with it: restore the secret from ` +
    `your backup (as ${path}, mode 0600, or as KEYGATE_SECRET), or, to give all of that up and start afresh, ` +
    `move the database (${join(dataDir, 'keygate.db')}*) away. Keygate does not generate a new secret over it: ` +
    'every key would answer 401.'
  );
}

function holdsAnything(held: SecretBoundCounts): boolean {
  return held.keys > 0 || held.channels > 0 || held.twoFactorUsers > 0;
}

/**
 * Loads the server's root secret: KEYGATE_SECRET when set, otherwise the data directory's `secret`
 * file (refused when other users may read it). The pepper and data key are derived from it with
 * HKDF, so every process sharing the secret (CLI, server, other instances) agrees on them.
 *
 * A missing file is generated (256 bits, mode 0600) only when `storeHolds` shows that the store
 * holds nothing made with a secret (a fresh data directory): the caller reads it from the store
 * (`countSecretBound`) when `secretMissing` says so. Without it, or with keys, channels or sealed
 * two-factor secrets in the store, a lost secret is refused, never silently replaced.
 */
export function loadSecrets(
  dataDir: string,
  envSecret: string | undefined,
  storeHolds?: SecretBoundCounts,
): ServerSecrets {
  if (envSecret !== undefined && envSecret !== '') {
    if (envSecret.length < MIN_SECRET_LENGTH) {
      throw new Error(`KEYGATE_SECRET must be at least ${MIN_SECRET_LENGTH} characters of random data`);
    }
    const root = Buffer.from(envSecret, 'utf8');
    return { ...deriveAll(root), source: 'env' };
  }
  const path = join(dataDir, SECRET_FILE);
  let source: ServerSecrets['source'] = 'file';
  let text: string;
  try {
    assertPrivateFile(path, 'the server secret');
    text = readFileSync(path, 'utf8').trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    if (storeHolds === undefined)
      throw new Error(`${path} is missing, and the store was not checked for what needs it`);
    if (holdsAnything(storeHolds)) throw new Error(lostSecretMessage(dataDir, storeHolds));
    try {
      writePrivateFile(path, `${randomBytes(32).toString('base64url')}\n`);
      source = 'generated';
    } catch (writeError) {
      // Another process (CLI or server) created it first: use theirs.
      if ((writeError as NodeJS.ErrnoException).code !== 'EEXIST') throw writeError;
    }
    text = readFileSync(path, 'utf8').trim();
  }
  if (text.length < MIN_SECRET_LENGTH) throw new Error(`${path} is too short to be a Keygate secret`);
  const root = Buffer.from(text, 'utf8');
  return { ...deriveAll(root), source };
}

/** Why a shared database needs KEYGATE_SECRET, for the start-up error. */
export const SHARED_SECRET_REQUIRED =
  'KEYGATE_SECRET is required when DATABASE_URL is set: every instance and the CLI must derive the ' +
  'same key-hashing pepper from it (it never goes into the database). Generate one once with ' +
  '`openssl rand -base64 48` and give it to all of them.';

/**
 * The secrets for a configuration: with a shared database (PostgreSQL) the root secret must come
 * from KEYGATE_SECRET, since a data directory's generated file would differ per machine.
 */
export function secretsFor(
  config: { dataDir: string; database: { url?: string | undefined } },
  envSecret: string | undefined,
  storeHolds?: SecretBoundCounts,
): ServerSecrets {
  if (config.database.url !== undefined && (envSecret === undefined || envSecret === '')) {
    throw new Error(SHARED_SECRET_REQUIRED);
  }
  return loadSecrets(config.dataDir, envSecret, storeHolds);
}

/**
 * True when the secret must be generated from the data directory (no KEYGATE_SECRET, no file,
 * no DATABASE_URL, which requires KEYGATE_SECRET): the store must then be read first.
 */
export function secretToGenerate(
  config: { dataDir: string; database: { url?: string | undefined } },
  envSecret: string | undefined,
): boolean {
  return config.database.url === undefined && secretMissing(config.dataDir, envSecret);
}
