/**
 * Keygate API key format.
 *
 *   kg_<32 base62 random chars><6 base62 chars of CRC32(prefix + random)>
 *
 * 32 base62 characters carry 32·log2(62) ≈ 190.5 bits from the CSPRNG. The trailing checksum lets
 * a scanner (or the gateway) tell a real key from a look-alike without any store lookup, in the
 * manner of GitHub's token format. The prefix is configurable per deployment.
 */
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';

export const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
export const RANDOM_LENGTH = 32;
export const CHECKSUM_LENGTH = 6;
export const DEFAULT_KEY_PREFIX = 'kg';
/** Longest credential the parser accepts at all; anything longer is malformed. */
export const MAX_TOKEN_LENGTH = 256;

const PREFIX_RE = /^[a-z][a-z0-9]{0,9}$/;

export function assertValidPrefix(prefix: string): void {
  if (!PREFIX_RE.test(prefix)) {
    throw new Error(
      `key prefix must match ${PREFIX_RE.source} (lower-case letters and digits), got "${prefix}"`,
    );
  }
}

/** Uniform base62 string from the CSPRNG (rejection sampling: bytes >= 248 are discarded). */
export function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    const bytes = randomBytes(length * 2);
    for (let i = 0; i < bytes.length && out.length < length; i++) {
      const b = bytes[i]!;
      if (b < 248) out += BASE62[b % 62];
    }
  }
  return out;
}

export function encodeBase62(value: number, width: number): string {
  let n = value;
  let out = '';
  for (let i = 0; i < width; i++) {
    out = BASE62[n % 62] + out;
    n = Math.floor(n / 62);
  }
  return out;
}

export function checksumOf(body: string): string {
  return encodeBase62(crc32(body), CHECKSUM_LENGTH);
}

export function generateKey(prefix = DEFAULT_KEY_PREFIX): string {
  const body = `${prefix}_${randomBase62(RANDOM_LENGTH)}`;
  return body + checksumOf(body);
}

/**
 * True when `token` has this deployment's key shape and a matching checksum. Pure and cheap: it
 * runs before any cache or store work, so garbage and look-alikes never reach the store.
 */
export function isWellFormedKey(token: string, prefix = DEFAULT_KEY_PREFIX): boolean {
  const expectedLength = prefix.length + 1 + RANDOM_LENGTH + CHECKSUM_LENGTH;
  if (token.length !== expectedLength) return false;
  if (!token.startsWith(prefix) || token.charCodeAt(prefix.length) !== 95 /* _ */) return false;
  for (let i = prefix.length + 1; i < token.length; i++) {
    const c = token.charCodeAt(i);
    const isDigit = c >= 48 && c <= 57;
    const isUpper = c >= 65 && c <= 90;
    const isLower = c >= 97 && c <= 122;
    if (!isDigit && !isUpper && !isLower) return false;
  }
  const split = token.length - CHECKSUM_LENGTH;
  return checksumOf(token.slice(0, split)) === token.slice(split);
}

/** A regular expression that finds keys of this deployment in text (for secret scanning and log redaction). */
export function keyPattern(prefix = DEFAULT_KEY_PREFIX): RegExp {
  return new RegExp(`\\b${prefix}_[0-9A-Za-z]{${RANDOM_LENGTH + CHECKSUM_LENGTH}}\\b`, 'g');
}

/** The non-secret hints stored beside the hash: `kg_AbCd` and the last four characters. */
export function displayParts(key: string): { start: string; last4: string } {
  const underscore = key.indexOf('_');
  return { start: key.slice(0, underscore + 5), last4: key.slice(-4) };
}
