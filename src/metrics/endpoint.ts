/**
 * `GET /metrics`: the Prometheus exposition text, for the operator's keys only: a key of the
 * default workspace with the `metrics` management scope (or `admin`). The figures are the whole
 * gateway's (every workspace's traffic), so a tenant's key is refused whatever its scopes.
 * Authentication is the public API's (RFC 6750 bearer, the same answers and the same
 * failed-authentication limiter); the scope check is the management API's (a key owned by a
 * user acts with that user's role, so only owners and admins of ws_default pass).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { authenticate } from '../auth/authenticate.ts';
import type { AuthFailureLimiter } from '../auth/failures.ts';
import type { KeyVerifier } from '../auth/verifier.ts';
import { actingAs, hasManagementScope, readsGatewayMetrics } from '../http/admin/access.ts';
import { type ErrorCode, sendError } from '../http/errors.ts';
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
    const pending = authenticate(req, ip, q === -1 ? '' : url.slice(q), {
      verifier,
      failures,
      wanted: 'a key with the "metrics" scope',
    });
    const outcome = pending instanceof Promise ? await pending : pending;
    if (!outcome.ok) {
      sendError(res, outcome.code, outcome.message, { retryAfter: outcome.retryAfter, body: outcome.body });
      return outcome.failure;
    }
    const { caller } = await actingAs(deps.store, outcome.key);
    if (!hasManagementScope(caller, 'metrics')) {
      return fail(
        'insufficient_scope',
        'This key lacks the scope "metrics" needed for GET /metrics (a key with "admin" has every management scope).',
        { scope: 'metrics' },
      );
    }
    if (!readsGatewayMetrics(caller)) {
      return fail(
        'forbidden',
        'GET /metrics shows the whole gateway\'s traffic, every workspace\'s: only the operator\'s keys (keys of ws_default with "metrics" or "admin") may read it.',
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
