/**
 * `GET /metrics`: the Prometheus exposition text, for a key with the `metrics` management scope
 * (or `admin`). Authentication is the public API's (RFC 6750 bearer, the same answers and the
 * same failed-authentication limiter); the scope check is the management API's (a key owned by a
 * user acts with that user's role).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parseAuthorization } from '../auth/bearer.ts';
import type { AuthFailureLimiter } from '../auth/failures.ts';
import { addressAllowed } from '../auth/policy.ts';
import type { KeyVerifier } from '../auth/verifier.ts';
import { actingAs, hasManagementScope } from '../http/admin/access.ts';
import { type ErrorCode, INVALID_KEY_BODY, INVALID_KEY_MESSAGE, sendError } from '../http/errors.ts';
import type { Logger } from '../http/log.ts';
import type { Store } from '../store/types.ts';
import type { Metrics } from './index.ts';

export interface MetricsEndpointDeps {
  metrics: Metrics;
  verifier: KeyVerifier;
  store: Pick<Store, 'getMembership'>;
  failures: AuthFailureLimiter;
  logger: Logger;
  clientAddress(req: IncomingMessage): string;
}

/** Query parameters through which clients sometimes (wrongly) send keys. */
const KEY_IN_QUERY = /[?&](?:key|api_key|apikey|api-key|access_token|token)=/i;

function authorizationCount(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]?.toLowerCase() === 'authorization') n++;
  return n;
}

export function createMetricsEndpoint(
  deps: MetricsEndpointDeps,
): (req: IncomingMessage, res: ServerResponse, requestId: string) => void {
  const { metrics, verifier, failures, logger } = deps;

  async function serve(req: IncomingMessage, res: ServerResponse, ip: string): Promise<string | undefined> {
    const fail = (code: ErrorCode, message: string, options: Parameters<typeof sendError>[3] = {}) => {
      sendError(res, code, message, options);
      return code;
    };
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    if (q !== -1 && KEY_IN_QUERY.test(url.slice(q))) {
      failures.recordFailure(ip);
      return fail(
        'key_in_url',
        'API keys are not accepted in the URL: send the key in the Authorization header as "Bearer <key>".',
      );
    }
    const retryAfter = failures.retryAfter(ip);
    if (retryAfter > 0) {
      return fail(
        'too_many_auth_failures',
        'Too many failed authentication attempts from this address; try again later.',
        { retryAfter },
      );
    }
    const auth =
      authorizationCount(req.rawHeaders) > 1
        ? ({ kind: 'malformed', reason: 'more than one Authorization header' } as const)
        : parseAuthorization(req.headers.authorization);
    if (auth.kind === 'missing') {
      return fail(
        'missing_api_key',
        'No API key provided. Send a key with the "metrics" scope in the Authorization header: "Authorization: Bearer <key>".',
      );
    }
    if (auth.kind === 'malformed') {
      failures.recordFailure(ip);
      return fail(
        'invalid_authorization',
        `Malformed Authorization header: ${auth.reason}. Expected "Authorization: Bearer <key>".`,
      );
    }
    const pending = verifier.verify(auth.token);
    const verdict = pending instanceof Promise ? await pending : pending;
    if (!verdict.ok) {
      failures.recordFailure(ip);
      sendError(res, 'invalid_api_key', INVALID_KEY_MESSAGE, { body: INVALID_KEY_BODY });
      return `key_${verdict.reason}`;
    }
    if (!addressAllowed(verdict.key, ip)) {
      return fail('ip_not_allowed', `This key may not be used from ${ip}.`);
    }
    const { caller } = await actingAs(deps.store, verdict.key);
    if (!hasManagementScope(caller, 'metrics')) {
      return fail(
        'insufficient_scope',
        'This key lacks the scope "metrics" needed for GET /metrics (a key with "admin" has every management scope).',
        { scope: 'metrics' },
      );
    }
    if (req.method !== 'GET') {
      res.setHeader('allow', 'GET');
      return fail('method_not_allowed', '/metrics accepts GET only');
    }
    const { contentType, body } = await metrics.scrape();
    res.writeHead(200, {
      'content-type': contentType,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
    });
    res.end(body);
    return undefined;
  }

  return (req, res, requestId) => {
    const ip = deps.clientAddress(req);
    const started = performance.now();
    serve(req, res, ip).then(
      (failure) => {
        const entry = {
          reqId: requestId,
          path: '/metrics',
          ip,
          status: res.statusCode,
          failure,
          ms: Math.round((performance.now() - started) * 1000) / 1000,
        };
        // A scrape every few seconds is not worth an info line; a refusal is.
        if (failure === undefined) logger.debug(entry, 'metrics scrape');
        else logger.info(entry, 'metrics request refused');
      },
      (error: unknown) => {
        logger.error({ reqId: requestId, err: error }, 'serving /metrics failed');
        sendError(res, 'internal_error', 'Internal error. The request id identifies it in the gateway log.');
      },
    );
  };
}
