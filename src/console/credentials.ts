/**
 * What console sign-in is made of, apart from HTTP: session tokens and their cookie, CSRF tokens,
 * the first-run setup token, login throttling, TOTP two-factor codes and recovery codes.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { Secret, TOTP } from 'otpauth';
import { bucketOf } from '../auth/failures.ts';
import type { Store } from '../store/types.ts';

/** The session cookie. `__Host-` makes the browser insist on Secure, Path=/ and no Domain. */
export const SESSION_COOKIE = '__Host-keygate_session';
const SESSION_TOKEN = /^[A-Za-z0-9_-]{43}$/;

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** Constant-time equality of two strings of any length (their SHA-256 digests are compared). */
export function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

/** A new session token (256 random bits) and its id: the SHA-256 the store keeps. */
export function newSessionToken(): { token: string; id: string } {
  const token = randomBytes(32).toString('base64url');
  return { token, id: sha256Hex(token) };
}

/** The session id of a cookie header's session token, or undefined when there is none (or it is malformed). */
export function sessionIdFromCookies(header: string | undefined): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1 || part.slice(0, eq).trim() !== SESSION_COOKIE) continue;
    const token = part.slice(eq + 1).trim();
    return SESSION_TOKEN.test(token) ? sha256Hex(token) : undefined;
  }
  return undefined;
}

export function sessionCookie(token: string, maxAgeSeconds: number): string {
  return `${SESSION_COOKIE}=${token}; Path=/; Max-Age=${maxAgeSeconds}; HttpOnly; Secure; SameSite=Strict`;
}

export function clearedSessionCookie(): string {
  return `${SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict`;
}

/** The CSRF token of a session: derived from its id, so it needs no storage and dies with it. */
export function csrfToken(consoleKey: Buffer, sessionId: string): string {
  return createHmac('sha256', consoleKey).update(`csrf:${sessionId}`).digest('base64url');
}

// ---- first-run setup token -----------------------------------------------------------------------

/** Base32 without padding (RFC 4648), as authenticator apps and humans both read it. */
function base32(bytes: Uint8Array): string {
  return new Secret({ buffer: bytes.slice().buffer }).base32;
}

function groups(text: string, size: number): string {
  return text.match(new RegExp(`.{1,${size}}`, 'g'))?.join('-') ?? text;
}

/**
 * The one-time setup token, or undefined once a user exists. It is derived from the server secret
 * and a random salt kept in the store, so `keygate start` and `keygate setup-token` (and every
 * instance sharing the secret) print the same token, and the store alone does not reveal it.
 */
export async function setupToken(
  store: Pick<Store, 'listUsers' | 'initSetting'>,
  consoleKey: Buffer,
): Promise<string | undefined> {
  if ((await store.listUsers()).length > 0) return undefined;
  const salt = await store.initSetting('setup_token_salt', randomBytes(16).toString('base64url'));
  const digest = createHmac('sha256', consoleKey).update(`setup-token:${salt}`).digest();
  return groups(base32(digest).slice(0, 20), 5);
}

/** Compares a typed setup token with the real one, forgiving case, spaces and dashes. */
export function setupTokenMatches(typed: string, actual: string): boolean {
  const norm = (t: string) => t.toUpperCase().replace(/[\s-]/g, '');
  return sameSecret(norm(typed), norm(actual));
}

// ---- login throttling ------------------------------------------------------------------------------

export const LOGIN_WINDOW_MS = 15 * 60_000;

/**
 * Failed sign-ins per account and per client address (IPv4, or IPv6 /64) over a sliding
 * 15-minute window. Past the limit, further attempts for that account or from that address are
 * refused until the oldest counted failure leaves the window, whether the password is right or not.
 * Memory is bounded (LRU) against spraying.
 */
export class LoginThrottle {
  readonly #perAccount: number;
  readonly #perIp: number;
  readonly #accounts = new LRUCache<string, number[]>({ max: 20_000 });
  readonly #ips = new LRUCache<string, number[]>({ max: 20_000 });

  constructor(perAccount: number, perIp: number) {
    this.#perAccount = perAccount;
    this.#perIp = perIp;
  }

  /** Seconds to wait before this attempt may be made, or 0. */
  retryAfter(email: string, ip: string, now = Date.now()): number {
    const wait = Math.max(
      waitFor(this.#accounts.get(email), this.#perAccount, now),
      waitFor(this.#ips.get(bucketOf(ip)), this.#perIp, now),
    );
    return wait > 0 ? Math.ceil(wait / 1000) : 0;
  }

  recordFailure(email: string, ip: string, now = Date.now()): void {
    note(this.#accounts, email, now);
    note(this.#ips, bucketOf(ip), now);
  }

  /** A successful sign-in clears the account's failures (not the address's). */
  recordSuccess(email: string): void {
    this.#accounts.delete(email);
  }
}

function recent(times: number[] | undefined, now: number): number[] {
  return (times ?? []).filter((t) => now - t < LOGIN_WINDOW_MS);
}

function waitFor(times: number[] | undefined, limit: number, now: number): number {
  const live = recent(times, now);
  if (live.length < limit) return 0;
  const oldestCounted = live[live.length - limit] ?? now;
  return oldestCounted + LOGIN_WINDOW_MS - now;
}

function note(cache: LRUCache<string, number[]>, name: string, now: number): void {
  const live = recent(cache.get(name), now);
  live.push(now);
  cache.set(name, live.slice(-100));
}

// ---- two-factor sign-in ----------------------------------------------------------------------------

const TOTP_CODE = /^\d{6}$/;

function totp(secret: string, email: string): TOTP {
  return new TOTP({
    issuer: 'Keygate',
    label: email,
    algorithm: 'SHA1',
    digits: 6,
    period: 30,
    secret: Secret.fromBase32(secret),
  });
}

/** A new TOTP secret (160 bits, base32) and the otpauth:// URL an authenticator app reads from a QR code. */
export function newTotpSecret(email: string): { secret: string; url: string } {
  const secret = new Secret({ size: 20 }).base32;
  return { secret, url: totp(secret, email).toString() };
}

/**
 * Checks a 6-digit code (one period of clock drift either way). Returns the time step it was valid
 * for, or undefined. A step at or before `usedStep` is refused: each code works once.
 */
export function checkTotp(secret: string, email: string, code: string, usedStep = -1): number | undefined {
  const trimmed = code.replace(/\s/g, '');
  if (!TOTP_CODE.test(trimmed)) return undefined;
  const generator = totp(secret, email);
  const delta = generator.validate({ token: trimmed, window: 1 });
  if (delta === null) return undefined;
  const step = generator.counter() + delta;
  return step > usedStep ? step : undefined;
}

/** Ten recovery codes (`xxxxx-xxxxx`, 50 bits each) and the hashes the store keeps. */
export function newRecoveryCodes(): { codes: string[]; hashes: string[] } {
  const codes = Array.from({ length: 10 }, () =>
    groups(base32(randomBytes(7)).slice(0, 10).toLowerCase(), 5),
  );
  return { codes, hashes: codes.map(recoveryCodeHash) };
}

export function recoveryCodeHash(code: string): string {
  return sha256Hex(code.toLowerCase().replace(/[\s-]/g, ''));
}

export function looksLikeRecoveryCode(code: string): boolean {
  return /^[a-z2-7]{10}$/.test(code.toLowerCase().replace(/[\s-]/g, ''));
}
