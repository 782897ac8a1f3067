/**
 * Errors of the management API, in the same shape as the gateway's (src/http/errors.ts): Mistral's
 * fields plus an `error` member, and the FastAPI `detail` list for validation errors. Handlers
 * throw an AdminError; the dispatcher sends it.
 */
import type { ServerResponse } from 'node:http';
import type { z } from 'zod';
import { looksLikeKey, scrubText } from '../../keys/scrub.ts';
import { type ErrorCode, sendError, type ValidationIssue, validationBody } from '../errors.ts';

/** Codes the gateway's error module does not have. */
type AdminOnlyCode = 'conflict' | 'validation_error';

export class AdminError extends Error {
  override name = 'AdminError';
  readonly code: ErrorCode | AdminOnlyCode;
  /** For insufficient_scope: the scope(s) needed, for the WWW-Authenticate challenge. */
  readonly scope: string | undefined;
  readonly issues: ValidationIssue[] | undefined;
  /** For a 429: whole seconds until trying again is worth it (the Retry-After header). */
  readonly retryAfter: number | undefined;

  constructor(
    code: ErrorCode | AdminOnlyCode,
    message: string,
    options: { scope?: string; issues?: ValidationIssue[]; retryAfter?: number } = {},
  ) {
    super(message);
    this.code = code;
    this.scope = options.scope;
    this.issues = options.issues;
    this.retryAfter = options.retryAfter;
  }
}

export function notFound(what: 'key' | 'workspace', id: string): AdminError {
  return new AdminError('not_found', `No ${what} with id ${safeId(id)}.`);
}

export function invalid(loc: (string | number)[], msg: string, type = 'value_error'): AdminError {
  const safe = scrub(msg, 1000);
  return new AdminError('validation_error', `${loc.join('.')}: ${safe}`, {
    issues: [{ loc, msg: safe, type }],
  });
}

/** Zod issues as FastAPI-style validation issues (`loc` starts with `body` or `query`). */
export function zodIssues(where: 'body' | 'query', error: z.ZodError): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  for (const issue of error.issues) {
    const loc = [
      where,
      ...issue.path.map((p) => (typeof p === 'string' ? scrub(p) : typeof p === 'number' ? p : String(p))),
    ];
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys.map((k) => scrub(k))) {
        issues.push({
          loc: [...loc, key],
          msg: `unknown field "${key}"${where === 'query' ? ' (unknown query parameter)' : ''}`,
          type: 'extra_forbidden',
        });
      }
    } else {
      issues.push({ loc, msg: scrub(issue.message, 1000), type: issue.code });
    }
  }
  return issues;
}

/** An id for an error message; anything that looks like a secret is not echoed back. */
export function safeId(id: string): string {
  const shown = id.length > 128 ? `${id.slice(0, 128)}…` : id;
  return looksLikeKey(shown) ? '[a secret, not an id]' : JSON.stringify(shown).slice(1, -1);
}

/**
 * Text from the request fit for a message or a log line: shortened, and anything key-shaped
 * replaced, so that a secret pasted into the wrong place is not echoed back or logged.
 */
export function scrub(text: string, max = 200): string {
  return scrubText(text, max);
}

const CONFLICT_TYPE = 'invalid_request_error';

export function sendAdminError(res: ServerResponse, error: AdminError): void {
  if (error.code === 'validation_error') {
    sendBody(res, 422, validationBody(error.issues ?? []));
    return;
  }
  if (error.code === 'conflict') {
    const body = JSON.stringify({
      object: 'error',
      message: error.message,
      type: CONFLICT_TYPE,
      param: null,
      code: 'conflict',
      error: { message: error.message, type: CONFLICT_TYPE, param: null, code: 'conflict' },
    });
    sendBody(res, 409, body);
    return;
  }
  sendError(res, error.code, error.message, {
    ...(error.scope === undefined ? {} : { scope: error.scope }),
    ...(error.retryAfter === undefined ? {} : { retryAfter: error.retryAfter }),
  });
}

function sendBody(
  res: ServerResponse,
  status: number,
  body: string,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

/** Sends a successful JSON response. */
export function sendJson(
  res: ServerResponse,
  status: number,
  value: unknown,
  headers: Record<string, string> = {},
): void {
  sendBody(res, status, JSON.stringify(value), headers);
}
