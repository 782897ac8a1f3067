/**
 * Authorization header parsing (RFC 6750 §2.1, RFC 9110 §11): `Bearer <b64token>`, scheme matched
 * case-insensitively, any run of spaces after it. Pure and total: every input yields a result.
 */
import { MAX_TOKEN_LENGTH } from '../keys/format.ts';

export type BearerResult =
  /** No bearer credentials at all: no header, or another authentication scheme. */
  { kind: 'missing' } | { kind: 'malformed'; reason: string } | { kind: 'token'; token: string };

const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

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
  // Another scheme (Basic, Digest, …) carries no bearer credentials: to RFC 6750 §3.1 that is a
  // request without authentication, answered 401 with a plain challenge and no error code.
  const lower = scheme.toLowerCase();
  if (lower !== 'bearer') {
    // `Bearerkg_…`: a bearer token with the space forgotten is malformed, not absent.
    return lower.startsWith('bearer')
      ? { kind: 'malformed', reason: 'no space after Bearer' }
      : { kind: 'missing' };
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
