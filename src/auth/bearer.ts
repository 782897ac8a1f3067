/**
 * Authorization header parsing (RFC 6750 §2.1, RFC 9110 §11): `Bearer <b64token>`, scheme matched
 * case-insensitively, any run of spaces after it. Pure and total: every input yields a result.
 */
import { MAX_TOKEN_LENGTH } from '../keys/format.ts';

export type BearerResult =
  /** No credentials at all: no header. */
  { kind: 'missing' } | { kind: 'malformed'; reason: string } | { kind: 'token'; token: string };

const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
/** An authentication scheme's name as the client may be told it (RFC 9110 token, short). */
const SCHEME = /^[A-Za-z][A-Za-z0-9-]{0,19}$/;

export function parseAuthorization(header: string | readonly string[] | undefined): BearerResult {
  if (header === undefined) return { kind: 'missing' };
  if (typeof header !== 'string') {
    if (header.length === 0) return { kind: 'missing' };
    if (header.length > 1) return { kind: 'malformed', reason: 'more than one Authorization header' };
    return parseAuthorization(header[0]);
  }
  if (header.length === 0) return { kind: 'malformed', reason: 'empty Authorization header' };
  const space = header.indexOf(' ');
  const scheme = space === -1 ? header : header.slice(0, space);
  // Another scheme (Basic, Digest, …) is a malformed header for this API, which takes keys only as
  // bearer tokens: the client gets 400 saying so (as the README documents), rather than a 401
  // telling it that it sent no key when it sent one the wrong way (curl -u, a proxy's Basic).
  const lower = scheme.toLowerCase();
  if (lower !== 'bearer') {
    // `Bearerkg_…`: a bearer token with the space forgotten.
    if (lower.startsWith('bearer')) return { kind: 'malformed', reason: 'no space after Bearer' };
    // The scheme is named only when it is a short word: a bare key must not be echoed.
    return {
      kind: 'malformed',
      reason:
        space !== -1 && SCHEME.test(scheme)
          ? `the "${scheme}" scheme is not accepted, only Bearer`
          : 'no Bearer scheme before the credentials',
    };
  }
  if (space === -1) return { kind: 'malformed', reason: 'no token after Bearer' };
  let start = space;
  while (start < header.length && header.charCodeAt(start) === 32) start++;
  let end = header.length;
  while (end > start && header.charCodeAt(end - 1) === 32) end--;
  const token = header.slice(start, end);
  if (token.length === 0) return { kind: 'malformed', reason: 'no token after Bearer' };
  if (token.length > MAX_TOKEN_LENGTH) return { kind: 'malformed', reason: 'the token is too long' };
  if (!B64TOKEN.test(token))
    return { kind: 'malformed', reason: 'the token has characters a bearer token cannot have' };
  return { kind: 'token', token };
}
