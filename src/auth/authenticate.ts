/**
 * The authentication step every authenticated surface shares (/v1, /admin/v1, /metrics): no key
 * in the URL, the failed-authentication limiter, RFC 6750 bearer parsing, verification, and the
 * key's IP allowlist. It decides; the caller answers, with `sendError(res, code, message, options)`.
 */
import type { IncomingMessage } from 'node:http';
import { type ErrorCode, INVALID_KEY_BODY, INVALID_KEY_MESSAGE } from '../http/errors.ts';
import type { KeyRecord } from '../store/types.ts';
import { parseAuthorization } from './bearer.ts';
import type { AuthFailureLimiter } from './failures.ts';
import { addressAllowed } from './policy.ts';
import type { KeyVerifier, VerifyResult } from './verifier.ts';

/** Query parameters through which clients sometimes (wrongly) send keys. */
const KEY_IN_QUERY = /[?&](?:key|api_key|apikey|api-key|access_token|token)=/i;

export type AuthOutcome =
  | { ok: true; key: KeyRecord }
  | {
      ok: false;
      code: ErrorCode;
      message: string;
      /** For the access log: why, more precisely than the code (`key_revoked`, …). */
      failure: string;
      retryAfter?: number;
      /** A fixed body to send (the one 401 body for every unknown key). */
      body?: string;
      /** The key, when it was recognised (refused by its IP allowlist, or revoked/expired). */
      key?: KeyRecord;
    };

export interface AuthenticateDeps {
  verifier: KeyVerifier;
  failures?: AuthFailureLimiter | undefined;
  /** Told of every failed authentication (for the alert rules). */
  onFailure?: ((ip: string, key: KeyRecord | undefined, reason: string) => void) | undefined;
  /** What to ask for when no key was sent, e.g. 'a key with the "metrics" scope'. @default 'a key' */
  wanted?: string;
}

/** Counts Authorization headers: Node keeps only the first, but two of them is a malformed request. */
function authorizationCount(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 13 && name.toLowerCase() === 'authorization') n++;
  }
  return n;
}

function failed(deps: AuthenticateDeps, ip: string, key: KeyRecord | undefined, reason: string): void {
  deps.failures?.recordFailure(ip);
  deps.onFailure?.(ip, key, reason);
}

function judged(deps: AuthenticateDeps, ip: string, verdict: VerifyResult): AuthOutcome {
  if (!verdict.ok) {
    failed(deps, ip, verdict.key, verdict.reason);
    return {
      ok: false,
      code: 'invalid_api_key',
      message: INVALID_KEY_MESSAGE,
      failure: `key_${verdict.reason}`,
      body: INVALID_KEY_BODY,
    };
  }
  if (!addressAllowed(verdict.key, ip)) {
    return {
      ok: false,
      code: 'ip_not_allowed',
      message: `This key may not be used from ${ip}.`,
      failure: 'ip_not_allowed',
      key: verdict.key,
    };
  }
  return { ok: true, key: verdict.key };
}

/**
 * Authenticates a request from `ip` whose query string (with its `?`, or empty) is `query`.
 * Synchronous when the key cache answers, which is the common case.
 */
export function authenticate(
  req: IncomingMessage,
  ip: string,
  query: string,
  deps: AuthenticateDeps,
): AuthOutcome | Promise<AuthOutcome> {
  if (query.length > 0 && KEY_IN_QUERY.test(query)) {
    failed(deps, ip, undefined, 'key_in_url');
    return {
      ok: false,
      code: 'key_in_url',
      message:
        'API keys are not accepted in the URL: send the key in the Authorization header as "Bearer <key>".',
      failure: 'key_in_url',
    };
  }
  const auth =
    authorizationCount(req.rawHeaders) > 1
      ? ({ kind: 'malformed', reason: 'more than one Authorization header' } as const)
      : parseAuthorization(req.headers.authorization);
  const retryAfter = deps.failures?.retryAfter(ip) ?? 0;
  if (retryAfter > 0) {
    // The address is over its limit of failures: guessing from it stops here, before any HMAC or
    // store lookup. A secret this gateway's key cache knows (a key verified here recently) is
    // still verified, and works while its key is valid (not revoked, expired or rotated out), so
    // that bad keys sent from a shared address (a NAT, an office, a proxy) cannot lock out every
    // client behind it, the operator's admin key included. Guessing cannot produce such a secret.
    const known = auth.kind === 'token' ? deps.verifier.verifyKnown(auth.token) : undefined;
    if (known !== undefined) return settle(deps, ip, known);
    return {
      ok: false,
      code: 'too_many_auth_failures',
      message: 'Too many failed authentication attempts from this address; try again later.',
      failure: 'too_many_auth_failures',
      retryAfter,
    };
  }
  if (auth.kind === 'missing') {
    return {
      ok: false,
      code: 'missing_api_key',
      message: `No API key provided. Send ${deps.wanted ?? 'a key'} in the Authorization header: "Authorization: Bearer <key>".`,
      failure: 'missing_api_key',
    };
  }
  if (auth.kind === 'malformed') {
    failed(deps, ip, undefined, 'malformed');
    return {
      ok: false,
      code: 'invalid_authorization',
      message: `Malformed Authorization header: ${auth.reason}. Expected "Authorization: Bearer <key>".`,
      failure: 'invalid_authorization',
    };
  }
  return settle(deps, ip, deps.verifier.verify(auth.token));
}

/** The outcome of a verification, synchronous when the verifier answered from its cache. */
function settle(
  deps: AuthenticateDeps,
  ip: string,
  pending: VerifyResult | Promise<VerifyResult>,
): AuthOutcome | Promise<AuthOutcome> {
  return pending instanceof Promise
    ? pending.then(
        (v) => judged(deps, ip, v),
        // The store could not be read and the cache could not answer: not the client's fault.
        () => ({
          ok: false,
          code: 'store_unavailable',
          message: 'Keygate cannot reach its database to verify this key right now. Retry shortly.',
          failure: 'store_unavailable',
          retryAfter: 1,
        }),
      )
    : judged(deps, ip, pending);
}
