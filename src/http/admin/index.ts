/**
 * The management API under `/admin/v1`: keys, workspaces, audit log, usage, and its OpenAPI
 * document. Served on plain node:http like `/v1`: authenticate (RFC 6750 bearer, a Keygate key),
 * route, check the key's management scope, read and validate the body, run the handler.
 *
 * Access rules (who may act on which workspace, and why a key cannot grant more than it has) are
 * in access.ts; the routes, their scopes and schemas in routes.ts.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { z } from 'zod';
import type { AlertEngine } from '../../alerts/engine.ts';
import type { Notifier } from '../../alerts/notifier.ts';
import type { ChannelRules } from '../../alerts/service.ts';
import { type AuthenticateDeps, authenticate } from '../../auth/authenticate.ts';
import type { AuthFailureLimiter } from '../../auth/failures.ts';
import type { KeyVerifier } from '../../auth/verifier.ts';
import { ConsoleAuth, ConsoleRefusal } from '../../console/api.ts';
import { KeyInputError, KeyNotFoundError } from '../../keys/service.ts';
import { sendUnexpectedError } from '../../store/health.ts';
import type { Actor, KeyRecord, Role, Store } from '../../store/types.ts';
import type { Pricing } from '../../usage/pricing.ts';
import { UserInputError } from '../../users/service.ts';
import { readLimitedBody } from '../body.ts';
import { sendError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { actingAs, hasManagementScope } from './access.ts';
import { AdminError, invalid, scrub, sendAdminError, sendJson, zodIssues } from './errors.ts';
import { type AnyRoute, matchRoute } from './router.ts';
import { ROUTES } from './routes.ts';

export interface AdminDeps {
  store: Store;
  verifier: KeyVerifier;
  pepper: Buffer;
  keyPrefix: string;
  logger: Logger;
  clientAddress(req: IncomingMessage): string;
  /** The gateway's failed-authentication limiter, shared with /v1 (optional). */
  failures?: AuthFailureLimiter;
  /** The server's data key, to seal and open alert channel settings (the alert channel routes need it). */
  dataKey?: Buffer;
  /** Sends alerts (POST /admin/v1/alerts/test needs it). */
  notifier?: Notifier;
  /** Where alert channels may send and how many a workspace may have (config `alerts`); default: the public internet, 20. */
  channelRules?: ChannelRules;
  /** The gateway's alert engine: told when a workspace's rule settings change, to apply them at once. */
  alerts?: Pick<AlertEngine, 'forgetSettings'>;
  /** Prices for the cost column of usage reports (config `pricing`); none: costs are null. */
  pricing?: Pricing;
  /** Broadcasts key and workspace changes to the other instances (Redis); absent: the poll alone. */
  keyEvents?: { publish(ids: readonly string[]): Promise<boolean> };
  /** Console sessions: a request with the session cookie and no Authorization acts as its user. */
  console?: ConsoleAuth;
}

export type { AnyRoute } from './router.ts';
export { openApiDocument, ROUTES } from './routes.ts';

/** Largest request body the management API reads. */
export const ADMIN_BODY_LIMIT = 1_048_576;

/** Query parameters as an object; a repeated parameter becomes an array (which validation refuses). */
function queryObject(search: string): Record<string, string | string[]> {
  // No prototype: `?__proto__=x` is a parameter like any other (then refused as unknown), not a
  // way to replace the object's prototype.
  const out: Record<string, string | string[]> = Object.create(null);
  for (const [name, value] of new URLSearchParams(search)) {
    const seen = out[name];
    out[name] = seen === undefined ? value : Array.isArray(seen) ? [...seen, value] : [seen, value];
  }
  return out;
}

/** Where in the body a key-service input error points (the service names its own fields). */
const FIELD_LOC: Record<string, string[]> = {
  name: ['name'],
  scopes: ['scopes'],
  models: ['models'],
  allowedIps: ['allowed_ips'],
  expires: ['expires_in'],
  limits: ['limits'],
  'limits.rpm': ['limits', 'requests_per_minute'],
  'limits.tpm': ['limits', 'tokens_per_minute'],
  'limits.concurrency': ['limits', 'concurrent_requests'],
  budget: ['budget'],
  'budget.day': ['budget', 'tokens_per_day'],
  'budget.month': ['budget', 'tokens_per_month'],
};

function inputErrorLoc(error: KeyInputError): string[] {
  const field = (error as { field?: unknown }).field;
  return ['body', ...((typeof field === 'string' ? FIELD_LOC[field] : undefined) ?? [])];
}

interface Exchange {
  requestId: string;
  ip: string;
  method: string;
  pathname: string;
  started: number;
  keyId?: string;
  /** The signed-in user, for a console request. */
  userId?: string;
  failure?: string;
}

export function createAdminApi(
  deps: AdminDeps,
): (req: IncomingMessage, res: ServerResponse, requestId: string) => void {
  const { logger } = deps;

  const authDeps: AuthenticateDeps = {
    verifier: deps.verifier,
    failures: deps.failures,
    wanted: 'a key with a management scope',
  };

  async function authenticateCaller(
    req: IncomingMessage,
    res: ServerResponse,
    exchange: Exchange,
    query: string,
  ): Promise<KeyRecord | undefined> {
    const pending = authenticate(req, exchange.ip, query, authDeps);
    const outcome = pending instanceof Promise ? await pending : pending;
    if (outcome.ok) {
      exchange.keyId = outcome.key.id;
      return outcome.key;
    }
    exchange.failure = outcome.failure;
    if (outcome.key) exchange.keyId = outcome.key.id;
    sendError(res, outcome.code, outcome.message, { retryAfter: outcome.retryAfter, body: outcome.body });
    return undefined;
  }

  function parse<S extends z.ZodType>(where: 'body' | 'query', schema: S, value: unknown): z.output<S> {
    const result = schema.safeParse(value);
    if (!result.success) {
      const issues = zodIssues(where, result.error);
      throw new AdminError('validation_error', issues[0]?.msg ?? 'invalid request', { issues });
    }
    return result.data;
  }

  async function run(
    route: AnyRoute,
    params: Record<string, string>,
    req: IncomingMessage,
    res: ServerResponse,
    exchange: Exchange,
    caller: KeyRecord | undefined,
    search: string,
    who: { owner?: { userId: string; role: Role }; actor?: Actor; operator?: boolean } = {},
  ): Promise<void> {
    const query = parse('query', route.query, queryObject(search));
    let body: unknown;
    if (route.body) {
      const raw = await readLimitedBody(req, res, ADMIN_BODY_LIMIT, 'the management API');
      if (raw === undefined) return;
      const text = raw.toString('utf8');
      if (text.trim().length === 0) {
        body = {};
      } else {
        try {
          body = JSON.parse(text);
        } catch {
          exchange.failure = 'invalid_json';
          sendError(res, 'invalid_json', 'The request body is not valid JSON.');
          return;
        }
      }
      body = parse('body', route.body, body);
    }
    const actor: Actor = who.actor ?? { type: 'key', id: caller?.id ?? null, ip: exchange.ip };
    const ctx: Parameters<AnyRoute['handle']>[0] = {
      deps,
      req,
      requestId: exchange.requestId,
      caller: caller as KeyRecord,
      actor,
      owner: who.owner,
      operator: who.operator === true,
      params,
      query,
      body,
    };
    const reply = await route.handle(ctx);
    sendJson(res, route.status, reply.body, reply.headers);
  }

  async function serve(req: IncomingMessage, res: ServerResponse, exchange: Exchange): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const search = q === -1 ? '' : url.slice(q);
    const match = matchRoute(ROUTES, exchange.method, exchange.pathname);
    if (match.kind === 'route' && match.route.scope === null) {
      await run(match.route, match.params, req, res, exchange, undefined, search);
      return;
    }
    let who: { caller: KeyRecord; owner?: { userId: string; role: Role }; actor?: Actor; operator?: boolean };
    if (deps.console && ConsoleAuth.wantsSession(req)) {
      // The console: a session cookie (no Authorization header) acts with its user's role.
      who = await deps.console.callerFor(req, exchange.ip);
      exchange.userId = who.caller.id;
    } else {
      const verified = await authenticateCaller(req, res, exchange, search);
      if (!verified) return;
      const acting = await actingAs(deps.store, verified);
      who = { caller: acting.caller, ...(acting.owner ? { owner: acting.owner } : {}) };
    }
    const { caller } = who;
    if (match.kind === 'not_found') {
      exchange.failure = 'not_found';
      sendError(
        res,
        'not_found',
        `No such endpoint: ${exchange.method} ${scrub(exchange.pathname)}. See /admin/v1/openapi.json.`,
      );
      return;
    }
    if (match.kind === 'method_not_allowed') {
      exchange.failure = 'method_not_allowed';
      res.setHeader('allow', match.allow.join(', '));
      sendError(
        res,
        'method_not_allowed',
        `${scrub(exchange.pathname)} accepts ${match.allow.join(', ')} only.`,
      );
      return;
    }
    const { route, params } = match;
    if (route.scope !== null && !hasManagementScope(caller, route.scope)) {
      exchange.failure = 'insufficient_scope';
      sendError(
        res,
        'insufficient_scope',
        who.actor?.type === 'user'
          ? `Your role "${who.owner?.role}" in this workspace does not allow ${route.method} ${route.path}; ask an owner or admin.`
          : `This key lacks the scope "${route.scope}" needed for ${route.method} ${route.path} (a key with "admin" has every management scope).`,
        { scope: route.scope },
      );
      return;
    }
    await run(route, params, req, res, exchange, caller, search, who);
  }

  return (req, res, requestId) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const exchange: Exchange = {
      requestId,
      ip: deps.clientAddress(req),
      method: req.method ?? 'GET',
      pathname: q === -1 ? url : url.slice(0, q),
      started: performance.now(),
    };
    res.once('close', () => {
      logger.info(
        {
          reqId: requestId,
          method: exchange.method,
          path: scrub(exchange.pathname),
          status: res.writableFinished ? res.statusCode : 499,
          keyId: exchange.keyId,
          userId: exchange.userId,
          ip: exchange.ip,
          failure: exchange.failure,
          ms: Math.round((performance.now() - exchange.started) * 1000) / 1000,
        },
        'admin request',
      );
    });
    serve(req, res, exchange).catch((error: unknown) => {
      if (error instanceof ConsoleRefusal) {
        exchange.failure = error.code;
        sendError(res, error.code, error.message);
        return;
      }
      if (error instanceof AdminError) {
        exchange.failure = error.code;
        sendAdminError(res, error);
        return;
      }
      if (error instanceof KeyInputError) {
        exchange.failure = 'validation_error';
        sendAdminError(res, invalid(inputErrorLoc(error), error.message));
        return;
      }
      if (error instanceof UserInputError) {
        exchange.failure = error.kind;
        const message = `${error.message.charAt(0).toUpperCase()}${error.message.slice(1)}.`;
        if (error.kind === 'not_found') sendError(res, 'not_found', message);
        else if (error.kind === 'conflict') sendAdminError(res, new AdminError('conflict', message));
        else sendAdminError(res, invalid(['body'], error.message));
        return;
      }
      if (error instanceof KeyNotFoundError) {
        exchange.failure = 'not_found';
        sendError(res, 'not_found', error.message);
        return;
      }
      void sendUnexpectedError(res, deps.store, logger, {
        reqId: requestId,
        err: error,
        what: 'unhandled error in the admin API',
      }).then((code) => {
        exchange.failure = code;
      });
    });
  };
}
