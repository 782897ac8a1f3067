/**
 * Errors the gateway itself produces, in the upstream API's shape: Mistral's fields
 * (`object`, `message`, `type`, `param`, `code`) plus an `error` member carrying the same, so the
 * OpenAI SDKs show the message too. Validation errors use the FastAPI `detail` shape that the
 * Mistral SDKs parse as HTTPValidationError.
 */
import type { ServerResponse } from 'node:http';

export type ErrorCode =
  | 'missing_api_key'
  | 'invalid_authorization'
  | 'invalid_api_key'
  | 'key_in_url'
  | 'insufficient_scope'
  | 'forbidden'
  | 'model_not_allowed'
  | 'ip_not_allowed'
  | 'rate_limited'
  | 'budget_exceeded'
  | 'too_many_auth_failures'
  | 'not_found'
  | 'method_not_allowed'
  | 'payload_too_large'
  | 'invalid_json'
  | 'upstream_not_configured'
  | 'upstream_unreachable'
  | 'upstream_timeout'
  | 'upstream_busy'
  | 'shutting_down'
  | 'internal_error'
  | 'not_signed_in'
  | 'invalid_credentials'
  | 'totp_required'
  | 'invalid_totp'
  | 'too_many_attempts'
  | 'csrf_failed'
  | 'invalid_setup_token'
  | 'setup_done'
  | 'invalid_invite'
  | 'limiter_unavailable'
  | 'store_unavailable';

type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'rate_limit_error'
  | 'server_error';

const STATUS: Record<ErrorCode, number> = {
  missing_api_key: 401,
  invalid_authorization: 400,
  invalid_api_key: 401,
  key_in_url: 400,
  insufficient_scope: 403,
  forbidden: 403,
  model_not_allowed: 403,
  ip_not_allowed: 403,
  rate_limited: 429,
  budget_exceeded: 429,
  too_many_auth_failures: 429,
  not_found: 404,
  method_not_allowed: 405,
  payload_too_large: 413,
  invalid_json: 400,
  upstream_not_configured: 503,
  upstream_unreachable: 502,
  upstream_timeout: 504,
  upstream_busy: 503,
  shutting_down: 503,
  internal_error: 500,
  not_signed_in: 401,
  invalid_credentials: 401,
  totp_required: 401,
  invalid_totp: 401,
  too_many_attempts: 429,
  csrf_failed: 403,
  invalid_setup_token: 403,
  setup_done: 409,
  invalid_invite: 404,
  limiter_unavailable: 503,
  store_unavailable: 503,
};

const TYPE: Record<ErrorCode, ErrorType> = {
  missing_api_key: 'authentication_error',
  invalid_authorization: 'invalid_request_error',
  invalid_api_key: 'authentication_error',
  key_in_url: 'invalid_request_error',
  insufficient_scope: 'permission_error',
  forbidden: 'permission_error',
  model_not_allowed: 'permission_error',
  ip_not_allowed: 'permission_error',
  rate_limited: 'rate_limit_error',
  budget_exceeded: 'rate_limit_error',
  too_many_auth_failures: 'rate_limit_error',
  not_found: 'invalid_request_error',
  method_not_allowed: 'invalid_request_error',
  payload_too_large: 'invalid_request_error',
  invalid_json: 'invalid_request_error',
  upstream_not_configured: 'server_error',
  upstream_unreachable: 'server_error',
  upstream_timeout: 'server_error',
  upstream_busy: 'server_error',
  shutting_down: 'server_error',
  internal_error: 'server_error',
  not_signed_in: 'authentication_error',
  invalid_credentials: 'authentication_error',
  totp_required: 'authentication_error',
  invalid_totp: 'authentication_error',
  too_many_attempts: 'rate_limit_error',
  csrf_failed: 'permission_error',
  invalid_setup_token: 'permission_error',
  setup_done: 'invalid_request_error',
  invalid_invite: 'invalid_request_error',
  limiter_unavailable: 'server_error',
  store_unavailable: 'server_error',
};

export function statusOf(code: ErrorCode): number {
  return STATUS[code];
}

export function errorBody(code: ErrorCode, message: string, param: string | null = null): string {
  const type = TYPE[code];
  return JSON.stringify({
    object: 'error',
    message,
    type,
    param,
    code,
    error: { message, type, param, code },
  });
}

export interface ValidationIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
  input?: unknown;
}

export function validationBody(issues: ValidationIssue[]): string {
  const first = issues[0];
  const message = first ? `${first.loc.join('.')}: ${first.msg}` : 'invalid request';
  const type = 'invalid_request_error';
  return JSON.stringify({
    object: 'error',
    message,
    type,
    param: null,
    code: 'validation_error',
    detail: issues,
    error: { message, type, param: null, code: 'validation_error' },
  });
}

const RFC6750_ERRORS: Partial<Record<ErrorCode, string>> = {
  missing_api_key: 'Bearer realm="keygate"',
  invalid_authorization: 'Bearer realm="keygate", error="invalid_request"',
  invalid_api_key: 'Bearer realm="keygate", error="invalid_token"',
};

/** Sends a gateway error. Never includes a stack trace, a key, or anything the client did not send. */
export function sendError(
  res: ServerResponse,
  code: ErrorCode,
  message: string,
  options: { retryAfter?: number; param?: string | null; body?: string; scope?: string } = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = options.body ?? errorBody(code, message, options.param ?? null);
  const challenge =
    code === 'insufficient_scope'
      ? `Bearer realm="keygate", error="insufficient_scope", scope="${options.scope ?? ''}"`
      : RFC6750_ERRORS[code];
  if (challenge) res.setHeader('www-authenticate', challenge);
  if (options.retryAfter !== undefined) res.setHeader('retry-after', String(options.retryAfter));
  res.writeHead(STATUS[code], {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

/** The one body every unknown, revoked, expired or look-alike key gets: it reveals nothing. */
export const INVALID_KEY_MESSAGE =
  'Invalid API key. Check the key, or create a new one with `keygate keys create`.';
export const INVALID_KEY_BODY = errorBody('invalid_api_key', INVALID_KEY_MESSAGE);

/**
 * Adds an OpenAI-style `error` member to a provider's error body that lacks one (Mistral's bodies
 * carry `message` at the top level, which the OpenAI SDKs do not read). Anything else is unchanged.
 */
export function withOpenAiErrorMember(text: string): string {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return text;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body) || 'error' in body) return text;
  const fields = body as Record<string, unknown>;
  const raw = fields.message ?? fields.detail;
  if (raw === undefined) return text;
  const message = typeof raw === 'string' ? raw : JSON.stringify(raw);
  const error = {
    message,
    type: fields.type ?? null,
    param: fields.param ?? null,
    code: fields.code ?? null,
  };
  return JSON.stringify({ ...fields, error });
}
