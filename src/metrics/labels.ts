/**
 * Label values for the gateway's metrics, kept to small, fixed sets: a route is a path template
 * (never the raw URL), a refusal or authentication failure one of a few reasons, and a model one
 * of at most `limit` names the provider has actually served. Nothing a client sends reaches a
 * label unchecked, so a series can neither explode in number nor carry a secret.
 */
import { isModelId } from '../providers/models.ts';

/** The route label of anything that is not one of the API's endpoints (404s, probes). */
export const OTHER_ROUTE = 'other';
/** The model label past the cap, and of models the provider has not served. */
export const OTHER_MODEL = 'other';
/** The model label of a request with no (known) model: no valid key, or an endpoint without one. */
export const NO_MODEL = '';

export const ROUTES = [
  '/v1/chat/completions',
  '/v1/fim/completions',
  '/v1/embeddings',
  '/v1/models',
  '/v1/models/{id}',
  OTHER_ROUTE,
] as const;
export type RouteLabel = (typeof ROUTES)[number];

const EXACT_ROUTES = new Map<string, RouteLabel>([
  ['/v1/chat/completions', '/v1/chat/completions'],
  ['/v1/fim/completions', '/v1/fim/completions'],
  ['/v1/embeddings', '/v1/embeddings'],
  ['/v1/models', '/v1/models'],
]);

/** The route template of a request path (without its query string). */
export function routeOf(pathname: string): RouteLabel {
  const exact = EXACT_ROUTES.get(pathname);
  if (exact) return exact;
  if (pathname.length > 11 && pathname.startsWith('/v1/models/')) return '/v1/models/{id}';
  return OTHER_ROUTE;
}

export const AUTH_FAILURE_REASONS = [
  'missing',
  'malformed',
  'unknown',
  'revoked',
  'expired',
  'rotated',
  'key_in_url',
  'flood',
] as const;
export type AuthFailureReason = (typeof AUTH_FAILURE_REASONS)[number];

export const REFUSAL_REASONS = [
  'insufficient_scope',
  'model_not_allowed',
  'ip_not_allowed',
  'rpm',
  'tpm',
  'concurrency',
  'key_budget_day',
  'key_budget_month',
  'workspace_budget_day',
  'workspace_budget_month',
  'upstream_share',
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export const UPSTREAM_ERROR_KINDS = ['timeout', 'unreachable', 'broken', 'busy'] as const;
export type UpstreamErrorKind = (typeof UPSTREAM_ERROR_KINDS)[number];

/** What a request's failure (the gateway's `exchange.failure`) counts as; failures not listed count as none. */
export type FailureClass =
  | { counter: 'auth'; reason: AuthFailureReason }
  | { counter: 'refusal'; reason: RefusalReason }
  | { counter: 'upstream'; kind: UpstreamErrorKind };

export const FAILURE_CLASSES: ReadonlyMap<string, FailureClass> = new Map<string, FailureClass>([
  ['missing_api_key', { counter: 'auth', reason: 'missing' }],
  ['invalid_authorization', { counter: 'auth', reason: 'malformed' }],
  ['key_malformed', { counter: 'auth', reason: 'malformed' }],
  ['key_unknown', { counter: 'auth', reason: 'unknown' }],
  ['key_revoked', { counter: 'auth', reason: 'revoked' }],
  ['key_expired', { counter: 'auth', reason: 'expired' }],
  ['key_rotated', { counter: 'auth', reason: 'rotated' }],
  ['key_in_url', { counter: 'auth', reason: 'key_in_url' }],
  ['too_many_auth_failures', { counter: 'auth', reason: 'flood' }],
  ['insufficient_scope', { counter: 'refusal', reason: 'insufficient_scope' }],
  ['model_not_allowed', { counter: 'refusal', reason: 'model_not_allowed' }],
  ['ip_not_allowed', { counter: 'refusal', reason: 'ip_not_allowed' }],
  ['limit_rpm', { counter: 'refusal', reason: 'rpm' }],
  ['limit_tpm', { counter: 'refusal', reason: 'tpm' }],
  ['limit_concurrency', { counter: 'refusal', reason: 'concurrency' }],
  ['limit_key_budget_day', { counter: 'refusal', reason: 'key_budget_day' }],
  ['limit_key_budget_month', { counter: 'refusal', reason: 'key_budget_month' }],
  ['limit_workspace_budget_day', { counter: 'refusal', reason: 'workspace_budget_day' }],
  ['limit_workspace_budget_month', { counter: 'refusal', reason: 'workspace_budget_month' }],
  ['upstream_timeout', { counter: 'upstream', kind: 'timeout' }],
  ['upstream_timeout_midstream', { counter: 'upstream', kind: 'timeout' }],
  ['upstream_unreachable', { counter: 'upstream', kind: 'unreachable' }],
  ['upstream_broke_midstream', { counter: 'upstream', kind: 'broken' }],
  ['limit_upstream_share', { counter: 'refusal', reason: 'upstream_share' }],
  ['upstream_busy', { counter: 'upstream', kind: 'busy' }],
]);

/** Default number of distinct model labels before new models are counted as `other`. */
export const DEFAULT_MODEL_LABEL_LIMIT = 200;

/**
 * The bounded set of model label values. A model becomes a label value the first time a request
 * made with a valid key for it is served by the provider (2xx) and it looks like a model id (not
 * like a key); at most `limit` of them, first come first served. Every other model is `other`.
 */
export class ModelLabels {
  readonly limit: number;
  readonly #known = new Set<string>();

  constructor(limit = DEFAULT_MODEL_LABEL_LIMIT) {
    this.limit = limit;
  }

  get size(): number {
    return this.#known.size;
  }

  /**
   * The label for `model`. `served` says whether the provider answered the request with 2xx;
   * only then may a model not seen before become a label value.
   */
  label(model: string | null, served: boolean): string {
    if (model === null) return NO_MODEL;
    if (this.#known.has(model)) return model;
    if (!served || this.#known.size >= this.limit || !isModelLike(model)) return OTHER_MODEL;
    this.#known.add(model);
    return model;
  }
}

function isModelLike(model: string): boolean {
  return model !== OTHER_MODEL && isModelId(model);
}
