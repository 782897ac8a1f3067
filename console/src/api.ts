/**
 * The console's one HTTP layer: same-origin JSON calls with the session cookie, the CSRF token on
 * every state-changing call, and the workspace header on management API calls. Errors carry the
 * API's own message.
 */

export interface ValidationIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
}

interface ErrorBody {
  object?: string;
  message?: string;
  type?: string;
  param?: string | null;
  code?: string;
  detail?: ValidationIssue[];
}

export class ApiError extends Error {
  override name = 'ApiError';
  readonly status: number;
  readonly code: string;
  readonly detail: ValidationIssue[];

  constructor(status: number, code: string, message: string, detail: ValidationIssue[] = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

interface ApiState {
  csrfToken: string | null;
  workspaceId: string | null;
  onUnauthorized: () => void;
}

const state: ApiState = { csrfToken: null, workspaceId: null, onUnauthorized: () => {} };

/** Called by the session provider whenever the session or the chosen workspace changes. */
export function configureApi(patch: Partial<ApiState>): void {
  Object.assign(state, patch);
}

const ADMIN = '/admin/v1';

function isErrorBody(value: unknown): value is ErrorBody {
  return typeof value === 'object' && value !== null;
}

function fallbackMessage(status: number): string {
  if (status === 0) return 'The gateway cannot be reached. Check that it is running, then try again.';
  if (status >= 500) return `The gateway answered with an error (HTTP ${status}). Try again in a moment.`;
  return `The request failed (HTTP ${status}).`;
}

/** Makes a query string from the defined values; '' when there are none. */
export function query(params: Record<string, string | number | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(name, String(value));
  }
  const text = search.toString();
  return text === '' ? '' : `?${text}`;
}

export async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && state.csrfToken) headers['x-csrf-token'] = state.csrfToken;
  const isAdmin = path.startsWith(ADMIN);
  if (isAdmin && state.workspaceId) headers['x-keygate-workspace'] = state.workspaceId;

  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'network_error', fallbackMessage(0));
  }

  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (response.ok) return parsed as T;

  const error = isErrorBody(parsed) ? parsed : {};
  if (response.status === 401 && isAdmin) state.onUnauthorized();
  throw new ApiError(
    response.status,
    error.code ?? 'error',
    error.message ?? fallbackMessage(response.status),
    Array.isArray(error.detail) ? error.detail : [],
  );
}

export const api = {
  get: <T>(path: string) => request<T>('GET', path),
  post: <T>(path: string, body: unknown = {}) => request<T>('POST', path, body),
  put: <T>(path: string, body: unknown) => request<T>('PUT', path, body),
  patch: <T>(path: string, body: unknown) => request<T>('PATCH', path, body),
  delete: <T>(path: string) => request<T>('DELETE', path),
};

export const admin = (path: string) => `${ADMIN}${path}`;

/** A readable message for anything thrown by a request. */
export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return 'Something went wrong.';
}

/** `["body", "limits", "requests_per_minute"]` → `limits › requests_per_minute`. */
export function issueField(issue: ValidationIssue): string {
  return issue.loc.filter((part, i) => !(i === 0 && (part === 'body' || part === 'query'))).join(' › ');
}
