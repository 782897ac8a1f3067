import { hkdfSync, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

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

/** Creates the data directory (mode 0700) if needed and returns its path. */
export function ensureDataDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
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

/**
 * Loads the server's root secret: KEYGATE_SECRET when set, otherwise the data directory's `secret`
 * file, generated (256 bits, mode 0600) on first start. The pepper and data key are derived from
 * it with HKDF, so every process sharing the secret (CLI, server, other instances) agrees on them.
 */
export function loadSecrets(dataDir: string, envSecret: string | undefined): ServerSecrets {
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
    text = readFileSync(path, 'utf8').trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
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
): ServerSecrets {
  if (config.database.url !== undefined && (envSecret === undefined || envSecret === '')) {
    throw new Error(SHARED_SECRET_REQUIRED);
  }
  return loadSecrets(config.dataDir, envSecret);
}
