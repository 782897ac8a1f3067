/**
 * The one scrubber. Text that came from a request (a path, a model id, a header) or from the
 * provider (an error body) is passed through here before it reaches a client, a log line or the
 * store, so that a secret pasted into the wrong place — a Keygate key of any deployment prefix,
 * a bearer credential, the provider's own key — is never echoed back or written down.
 *
 * Three uses, one set of patterns:
 * - `scrubKeys` / `scrubText`: messages built from request input (short, one line, key-shaped
 *   runs replaced);
 * - `createScrubber(secrets)`: provider bodies passed to a client, which may also echo the
 *   provider key (or a bearer token) back;
 * - `redactor(prefix, secrets)`: the logger's last line of defence, on every line written, with a
 *   fast path for the lines that cannot hold a match.
 */
import { CHECKSUM_LENGTH, keyPattern, RANDOM_LENGTH } from './format.ts';

/**
 * A Keygate key of any deployment prefix (`[a-z][a-z0-9]{0,9}_` and 38 base62 characters), not
 * part of a longer alphanumeric run. The look-behind (rather than `\b`) also finds a key glued to
 * a word by `_` or `-` (`my_kg_…`).
 */
const ANY_KEY_SOURCE = `(?<![A-Za-z0-9])[a-z][a-z0-9]{0,9}_[0-9A-Za-z]{${RANDOM_LENGTH + CHECKSUM_LENGTH}}(?![A-Za-z0-9])`;
/** A bearer credential as it appears in a header someone quoted. */
const BEARER_SOURCE = '(?<=[Bb][Ee][Aa][Rr][Ee][Rr] +)[A-Za-z0-9\\-._~+/]{8,}=*';

const ANY_KEY_GLOBAL = new RegExp(ANY_KEY_SOURCE, 'g');
const ANY_KEY = new RegExp(ANY_KEY_SOURCE);
/** The shortest run the key pattern can match: a one-letter prefix, `_` and 38 characters. */
const MIN_KEY_LENGTH = 2 + RANDOM_LENGTH + CHECKSUM_LENGTH;

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** True when the text holds something shaped like a key of any deployment prefix. */
export function looksLikeKey(text: string): boolean {
  return text.length >= MIN_KEY_LENGTH && ANY_KEY.test(text);
}

/** The text with every key-shaped run replaced. */
export function scrubKeys(text: string, replacement = '[secret]'): string {
  return text.length >= MIN_KEY_LENGTH ? text.replace(ANY_KEY_GLOBAL, replacement) : text;
}

/**
 * Text from a request fit for a message or a log line: at most `max` characters (plus `…`), line
 * breaks and other control characters shown as spaces, anything key-shaped replaced.
 */
export function scrubText(text: string, max = 200): string {
  const short = text.length > max ? `${text.slice(0, max)}…` : text;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed
  return scrubKeys(short).replace(/[\u0000-\u001f\u007f]/g, ' ');
}

/**
 * A scrubber for provider bodies: key-shaped runs, bearer credentials and each of `secrets` (the
 * provider keys, of 8 characters or more) replaced with `[secret]`. Bodies without any of them
 * (nearly all) are returned as they are, after a few `includes` checks.
 */
export function createScrubber(secrets: readonly string[]): (text: string) => string {
  const long = secrets.filter((s) => s.length >= 8);
  const re = new RegExp([ANY_KEY_SOURCE, BEARER_SOURCE, ...long.map(escapeRegExp)].join('|'), 'g');
  return (text) => {
    if (!text.includes('_') && !/bearer/i.test(text) && !long.some((secret) => text.includes(secret)))
      return text;
    return text.replace(re, '[secret]');
  };
}

/**
 * The logger's redaction: this deployment's keys, bearer credentials and the given secrets,
 * replaced with `[REDACTED]`. Every match needs one of a few needles, so most lines are let
 * through without running the expression.
 */
export function redactor(keyPrefix: string, secrets: readonly string[] = []): (line: string) => string {
  const long = secrets.filter((secret) => secret.length >= 8);
  const re = new RegExp(
    [keyPattern(keyPrefix).source, BEARER_SOURCE, ...long.map(escapeRegExp)].join('|'),
    'g',
  );
  const needles = [`${keyPrefix}_`, ...long];
  const bearer = /bearer/i;
  return (line) =>
    bearer.test(line) || needles.some((needle) => line.includes(needle))
      ? line.replace(re, '[REDACTED]')
      : line;
}
