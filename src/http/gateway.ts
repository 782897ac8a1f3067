/**
 * The public API (`/v1`): authenticate, validate, forward to the provider, stream back, meter.
 * Written directly on node:http for the shortest possible path (see docs/architecture.md).
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { StringDecoder } from 'node:string_decoder';
import type { Dispatcher } from 'undici';
import type { AlertEngine } from '../alerts/engine.ts';
import { type AuthenticateDeps, authenticate } from '../auth/authenticate.ts';
import type { AuthFailureLimiter } from '../auth/failures.ts';
import { type Cidr, parseCidrs, resolveClientAddress } from '../auth/ip.ts';
import { filterModelList, hasScope, modelAllowed } from '../auth/policy.ts';
import type { KeyVerifier } from '../auth/verifier.ts';
import type { Config } from '../config/config.ts';
import { createScrubber, looksLikeKey, scrubText } from '../keys/scrub.ts';
import {
  type Admission,
  estimatePromptTokens,
  estimateTokens,
  type Limiter,
  LimiterUnavailableError,
  type LimitReason,
  type Ticket,
} from '../limits/index.ts';
import { type Metrics, routeOf } from '../metrics/index.ts';
import { isModelId, resolveModel } from '../providers/models.ts';
import {
  classifyUpstreamError,
  forwardableResponseHeaders,
  type Upstream,
  type UpstreamHandler,
} from '../providers/upstream.ts';
import type { InferenceScope, KeyRecord, TokenBudget } from '../store/types.ts';
import { extractUsage, SseUsageScanner, type TokenUsage } from '../usage/extract.ts';
import type { UsageQueue } from '../usage/queue.ts';
import { continueIfExpected } from './body.ts';
import { EmbeddingsBase64Encoder } from './embeddings.ts';
import { type ErrorCode, sendError, validationBody, withOpenAiErrorMember } from './errors.ts';
import { duplicateTopLevelMember } from './json-members.ts';
import { type Logger, writeAccessLine } from './log.ts';
import { duplicateMemberIssue, type Endpoint, type JsonObject, validateBody } from './validate.ts';

type DispatchController = Dispatcher.DispatchController;

export interface GatewayDeps {
  config: Config;
  verifier: KeyVerifier;
  failures: AuthFailureLimiter;
  upstream: Upstream;
  usage: UsageQueue;
  limiter: Limiter;
  logger: Logger;
  metrics: Metrics;
  /** Watches finished requests and failed authentications for the alert rules. */
  alerts?: AlertEngine | undefined;
}

type Route =
  | { kind: 'post'; endpoint: Endpoint; path: string }
  | { kind: 'models' }
  | { kind: 'model'; id: string }
  | { kind: 'not_found' }
  | { kind: 'method_not_allowed'; allow: string };

const POST_ROUTES: Record<string, Endpoint> = {
  '/v1/chat/completions': 'chat',
  '/v1/fim/completions': 'fim',
  '/v1/embeddings': 'embeddings',
};

function route(method: string, pathname: string): Route {
  const endpoint = POST_ROUTES[pathname];
  if (endpoint) return method === 'POST' ? { kind: 'post', endpoint, path: pathname } : notAllowed('POST');
  if (pathname === '/v1/models') return method === 'GET' ? { kind: 'models' } : notAllowed('GET');
  if (pathname.startsWith('/v1/models/')) {
    let id: string;
    try {
      id = decodeURIComponent(pathname.slice('/v1/models/'.length));
    } catch {
      return { kind: 'not_found' };
    }
    // Only a model id (providers/models.ts) names a model: anything else is no such endpoint.
    if (id.includes('/') || !isModelId(id)) return { kind: 'not_found' };
    return method === 'GET' ? { kind: 'model', id } : notAllowed('GET');
  }
  return { kind: 'not_found' };
}

function notAllowed(allow: string): Route {
  return { kind: 'method_not_allowed', allow };
}

/**
 * A client's own request id is echoed, sent to the provider and logged (for correlation) when it
 * looks like one: 1 to 128 letters, digits and `_ . : -`, and nothing key-shaped. Otherwise the
 * client gets the gateway's. It never keys the usage record (`x-keygate-request-id` does).
 */
const CLIENT_REQUEST_ID = /^[\w.:-]{1,128}$/;
/** The most of a client's user agent logged and passed on. */
const USER_AGENT_CHARS = 200;

/** The client's address: the socket peer, or what trusted proxies say (see resolveClientAddress). */
export function clientAddress(req: IncomingMessage, trustedProxies: readonly Cidr[] = []): string {
  return resolveClientAddress(req.socket.remoteAddress ?? '', req.headers['x-forwarded-for'], trustedProxies);
}

const KNOWN_METHODS: ReadonlySet<string> = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'PATCH',
  'DELETE',
  'OPTIONS',
]);

const LIMIT_CODE: Record<LimitReason, ErrorCode> = {
  rpm: 'rate_limited',
  tpm: 'rate_limited',
  concurrency: 'rate_limited',
  key_budget_day: 'budget_exceeded',
  key_budget_month: 'budget_exceeded',
  workspace_budget_day: 'budget_exceeded',
  workspace_budget_month: 'budget_exceeded',
};

const NO_BUDGET: TokenBudget = { day: null, month: null };

const SCOPE_OF: Record<Endpoint | 'models', InferenceScope> = {
  chat: 'chat',
  fim: 'fim',
  embeddings: 'embeddings',
  models: 'models',
};

/** The part of a streamed body kept for the usage report, which the provider puts last. */
const TAIL_BYTES = 65_536;

/**
 * Keeps the last TAIL_BYTES or so of a streamed body, whatever its size, as the chunks it came in:
 * nothing is copied or decoded until the end (decoding every chunk of a 40 MB body to keep its end
 * cost a third of a second of copies and garbage).
 */
function keepTail(exchange: { tailChunks: Buffer[]; tailSize: number }, chunk: Buffer): void {
  const chunks = exchange.tailChunks;
  chunks.push(chunk);
  exchange.tailSize += chunk.length;
  while (chunks.length > 1 && exchange.tailSize - chunks[0]!.length >= TAIL_BYTES) {
    exchange.tailSize -= chunks.shift()!.length;
  }
}

/** The provider's usage report, from the stream scanner or the body's tail. */
function usageOf(exchange: Exchange): TokenUsage | undefined {
  if (exchange.scanner) return exchange.scanner.usage;
  if (exchange.tail.length === 0 && exchange.tailSize > 0) {
    // Cut at a chunk's edge, the first character may be broken: the usage object is not there.
    exchange.tail = Buffer.concat(exchange.tailChunks, exchange.tailSize).toString('utf8');
  }
  return exchange.tail.length > 0 ? extractUsage(exchange.tail) : undefined;
}

/** Everything known about one request by the time it is logged and metered. */
class Exchange {
  readonly startedAt = Date.now();
  readonly t0 = performance.now();
  key: KeyRecord | undefined;
  model: string | null = null;
  endpoint: string;
  status = 0;
  usage: TokenUsage | undefined;
  ttftMs: number | null = null;
  upstreamMs: number | null = null;
  stream = false;
  failure: string | undefined;
  clientRequestId: string | undefined;
  /** The client's user agent, capped and scrubbed (for the log and the provider). */
  userAgent: string | undefined;
  method: string;
  ticket: Ticket | undefined;
  /** Status the provider answered with (0 until it answers). */
  upstreamStatus = 0;
  /** The provider's answer on its way (cancelled if the client goes away first). */
  relay: Relay | undefined;
  /** Reads usage from a stream as it passes; read again when the response closes. */
  scanner: SseUsageScanner | undefined;
  /** The last part of a body held whole, where the provider puts `usage`. */
  tail = '';
  /** The last chunks of a streamed body that is not an event stream (see keepTail). */
  tailChunks: Buffer[] = [];
  tailSize = 0;
  /** Estimated prompt tokens of the request, for a stream cut off before its usage report. */
  promptEstimate = 0;
  tokensEstimated = false;
  done = false;

  readonly id: string;
  readonly ip: string;

  constructor(id: string, ip: string, endpoint: string, method: string) {
    this.id = id;
    this.ip = ip;
    this.endpoint = endpoint;
    this.method = method;
  }
}

interface RelayMode {
  /** The client asked for a stream (sets the Accept header sent upstream). */
  stream: boolean;
  /** Embeddings asked for as base64: the provider's floats are encoded here. */
  base64: boolean;
  /** The key's model allowlist, applied to a model list. */
  models?: readonly string[] | undefined;
}

/**
 * A non-streamed answer up to this size is held whole and sent in one write with its length; a
 * larger one streams through (with its last 64 KiB kept for the usage report).
 */
const HOLD_LIMIT = 1 << 20;
/**
 * An error body is held to be scrubbed (it may quote the request, or the provider's key) up to
 * this size; a larger one is not passed on: the client gets a note with its first part instead,
 * and the provider's answer is cut off (8 providers sending 50 MB each cost 1.6 GB held whole).
 */
export const ERROR_BODY_LIMIT = 64 << 10;
/** Characters of a refused error body quoted in the note. */
const ERROR_EXCERPT_CHARS = 1024;
/**
 * A model list filtered by a key's allowlist is held and parsed whole up to this size (parsing
 * 1 MiB of JSON takes the event loop for a few ms); larger is a 502. Providers' lists are ~100 KiB.
 */
const REWRITE_LIMIT = HOLD_LIMIT;

/**
 * What the relay takes out of provider bodies before a client sees them: from error bodies,
 * anything key-shaped, bearer credentials and the provider's key (`text`); from a successful
 * body held whole, the provider's key (`secret`, looked for in the bytes, so the body is not
 * decoded for it). Streams of generated content are not rewritten.
 */
export interface ProviderBodyScrubber {
  text(body: string): string;
  secret: Buffer | undefined;
}
const CLIENT_GONE = new Error('the client closed the connection');
/** The relay stopped reading an answer it will not pass on (an error body over its limit). */
const NOT_PASSED_ON = new Error('the provider answer is not passed on');
const USAGE_MEMBER = Buffer.from('"usage"');

/**
 * The status recorded for a response the provider cut off after its head (a reset, or silence
 * past upstream.bodyTimeoutMs): what the provider did, not the 499 of a client that hung up.
 */
const CUT_STATUS: Readonly<Record<string, number>> = {
  upstream_broke_midstream: 502,
  upstream_timeout_midstream: 504,
};

/** An error body the relay made for a provider answer it did not pass on, in the error shape. */
function providerErrorNote(message: string): string {
  const type = 'upstream_error';
  return JSON.stringify({
    object: 'error',
    message,
    type,
    param: null,
    code: null,
    error: { message, type, param: null, code: null },
  });
}

/**
 * Relays one provider answer to the client, as an undici dispatch handler: the head (with the
 * provider's headers filtered), then the body, streamed for SSE and held whole (up to HOLD_LIMIT)
 * otherwise, with the usage read on the way. Its methods never throw into undici.
 */
class Relay implements UpstreamHandler {
  readonly #res: ServerResponse;
  readonly #exchange: Exchange;
  readonly #mode: RelayMode;
  readonly #logger: Logger;
  readonly #scrubber: ProviderBodyScrubber;
  readonly #sentAt = performance.now();
  #resolve: (() => void) | undefined;
  #controller: DispatchController | undefined;
  #cancelled = false;
  /** Takes the request out of the pool's queue, while it waits for a connection. */
  abandon: (() => void) | undefined;
  /** The provider's status (0 until its answer's head arrives). */
  #status = 0;
  #headers: Record<string, string | string[]> = {};
  #rewrite: ((text: string) => string) | undefined;
  /** The most of the body held for `#rewrite` (an error body: ERROR_BODY_LIMIT). */
  #rewriteLimit = REWRITE_LIMIT;
  /** The body held so far (held mode only). */
  #held: Buffer[] | undefined;
  #heldSize = 0;
  /** Streaming mode only. */
  #decoder: StringDecoder | undefined;
  /** Embeddings asked for as base64, encoded as the body streams through. */
  #base64: EmbeddingsBase64Encoder | undefined;
  #drainListening = false;
  /** The relay answered the client itself and stopped reading the provider's answer. */
  #stopped = false;

  constructor(
    res: ServerResponse,
    exchange: Exchange,
    mode: RelayMode,
    logger: Logger,
    scrubber: ProviderBodyScrubber,
    resolve: () => void,
  ) {
    this.#scrubber = scrubber;
    this.#res = res;
    this.#exchange = exchange;
    this.#mode = mode;
    this.#logger = logger;
    this.#resolve = resolve;
  }

  /** The client went away: stop the provider's request (or keep it from starting). */
  cancel(): void {
    this.#cancelled = true;
    if (this.#controller) this.#controller.abort(CLIENT_GONE);
    else if (this.abandon) {
      // Still waiting for a connection: it leaves the queue and nothing will be sent.
      this.abandon();
      this.#done();
    }
  }

  #done(): void {
    const resolve = this.#resolve;
    this.#resolve = undefined;
    resolve?.();
  }

  onPoolTimeout(): void {
    this.#exchange.failure = 'upstream_busy';
    sendError(
      this.#res,
      'upstream_busy',
      'Every connection of the gateway to the model provider is busy. Retry shortly.',
      { retryAfter: 1 },
    );
    this.#done();
  }

  onRequestStart(controller: DispatchController): void {
    this.#controller = controller;
    if (this.#cancelled) controller.abort(CLIENT_GONE);
  }

  onResponseStart(_controller: DispatchController, status: number, headers: IncomingHttpHeaders): void {
    if (status < 200) return; // 1xx: informational
    const exchange = this.#exchange;
    exchange.upstreamMs = performance.now() - this.#sentAt;
    exchange.upstreamStatus = status;
    this.#status = status;
    this.#headers = forwardableResponseHeaders(headers);
    const contentType = String(headers['content-type'] ?? '');
    const isSse = contentType.startsWith('text/event-stream');
    exchange.stream = isSse;
    const allowedModels = this.#mode.models;
    const scrub = this.#scrubber.text;
    // An error body is held whole and scrubbed (it may quote the request, or the provider's key).
    if (status >= 400) {
      this.#rewrite = contentType.includes('json')
        ? (text: string) => scrub(withOpenAiErrorMember(text))
        : scrub;
      this.#rewriteLimit = ERROR_BODY_LIMIT;
    } else if (allowedModels && status === 200) {
      this.#rewrite = (text: string) => filterModelList(text, allowedModels);
    }
    if (this.#rewrite) {
      this.#held = [];
      return;
    }
    if (isSse) {
      exchange.scanner = new SseUsageScanner();
      this.#startStreaming(undefined);
      return;
    }
    if (this.#mode.base64 && status === 200) {
      // The body changes length as it is encoded: it goes out chunked.
      this.#base64 = new EmbeddingsBase64Encoder();
      this.#startStreaming(undefined);
      return;
    }
    const declared = headers['content-length'];
    if (typeof declared === 'string' && Number(declared) > HOLD_LIMIT) this.#startStreaming(declared);
    else this.#held = [];
  }

  #startStreaming(declaredLength: string | undefined): void {
    if (declaredLength !== undefined) this.#headers['content-length'] = declaredLength;
    this.#decoder = new StringDecoder('utf8');
    this.#res.writeHead(this.#status, this.#headers);
  }

  onResponseData(controller: DispatchController, chunk: Buffer): void {
    if (this.#stopped) return;
    const exchange = this.#exchange;
    if (exchange.ttftMs === null) exchange.ttftMs = performance.now() - exchange.t0;
    const held = this.#held;
    if (held) {
      held.push(chunk);
      this.#heldSize += chunk.length;
      if (this.#rewrite) {
        if (this.#heldSize > this.#rewriteLimit) this.#refuseBody(controller);
        return;
      }
      if (this.#heldSize <= HOLD_LIMIT) return;
      // Longer than announced (or announced by no length): stream what is held, then the rest.
      this.#held = undefined;
      this.#startStreaming(undefined);
      for (const part of held) this.#write(controller, part);
      return;
    }
    this.#write(controller, chunk);
  }

  /**
   * A body too large to hold for its rewrite: the client gets an answer made here (an error
   * body: the provider's status and a note quoting its start, scrubbed; a model list: 502), and
   * the rest of the provider's answer is not read.
   */
  #refuseBody(controller: DispatchController): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    this.#stopped = true;
    const exchange = this.#exchange;
    if (this.#status >= 400) {
      exchange.failure ??= 'upstream_error_body_too_large';
      const start = Buffer.concat(held)
        .subarray(0, ERROR_EXCERPT_CHARS * 4)
        .toString('utf8');
      const excerpt = this.#scrubber.text(start.slice(0, ERROR_EXCERPT_CHARS));
      const note = providerErrorNote(
        `The model provider answered ${this.#status} with an error body larger than ${ERROR_BODY_LIMIT} bytes, which the gateway does not pass on. It began: ${excerpt}`,
      );
      this.#res.writeHead(this.#status, {
        ...this.#headers,
        'content-type': 'application/json; charset=utf-8',
        'content-length': String(Buffer.byteLength(note)),
      });
      this.#res.end(note);
    } else {
      exchange.failure ??= 'upstream_broke_midstream';
      sendError(
        this.#res,
        'upstream_unreachable',
        `The model provider's answer is larger than the gateway's limit of ${REWRITE_LIMIT} bytes for it.`,
      );
    }
    this.#logger.warn(
      { reqId: exchange.id, status: this.#status, heldBytes: this.#heldSize },
      'provider answer too large to pass on: cut off',
    );
    controller.abort(NOT_PASSED_ON);
    this.#done();
  }

  #write(controller: DispatchController, chunk: Buffer): void {
    const exchange = this.#exchange;
    let written: boolean;
    if (exchange.scanner) {
      exchange.scanner.push(this.#decoder?.write(chunk) ?? '');
      written = this.#res.write(chunk);
    } else {
      keepTail(exchange, chunk);
      written = this.#base64
        ? this.#res.write(this.#base64.push(this.#decoder?.write(chunk) ?? ''))
        : this.#res.write(chunk);
    }
    if (written) return;
    controller.pause();
    if (!this.#drainListening) {
      this.#drainListening = true;
      this.#res.on('drain', () => this.#controller?.resume());
    }
  }

  onResponseEnd(): void {
    const res = this.#res;
    const held = this.#held;
    if (this.#stopped) return;
    if (res.destroyed) {
      // The client left as the answer ended (its close handler records the request).
      this.#done();
      return;
    }
    if (held) {
      const body = held.length === 1 ? held[0]! : Buffer.concat(held, this.#heldSize);
      if (this.#rewrite) {
        const text = body.toString('utf8');
        this.#exchange.usage = extractUsage(text);
        const out = this.#rewrite(text);
        this.#headers['content-length'] = String(Buffer.byteLength(out));
        res.writeHead(this.#status, this.#headers);
        res.end(out);
      } else {
        // Only the last `"usage"` member is decoded, not the whole body (embeddings run to 100s of KiB).
        const at = body.lastIndexOf(USAGE_MEMBER);
        this.#exchange.tail = at === -1 ? '' : body.toString('utf8', at);
        const secret = this.#scrubber.secret;
        const out =
          secret !== undefined && body.indexOf(secret) !== -1
            ? Buffer.from(this.#scrubber.text(body.toString('utf8')))
            : body;
        this.#headers['content-length'] = String(out.length);
        res.writeHead(this.#status, this.#headers);
        res.end(out);
      }
    } else {
      this.#exchange.scanner?.end();
      const base64 = this.#base64;
      res.end(base64 ? base64.push(this.#decoder?.end() ?? '') + base64.end() : undefined);
    }
    this.#done();
  }

  onResponseError(_controller: DispatchController, error: Error): void {
    const exchange = this.#exchange;
    if (this.#stopped) {
      // The relay cut the answer off itself, and answered the client already.
    } else if (this.#cancelled) {
      exchange.failure = 'client_aborted';
    } else if (this.#status === 0) {
      const failure = classifyUpstreamError(error);
      this.#logger.warn(
        { reqId: exchange.id, code: (error as { code?: string }).code },
        'upstream request failed',
      );
      exchange.failure ??= failure === 'timeout' ? 'upstream_timeout' : 'upstream_unreachable';
      if (failure === 'timeout') {
        sendError(this.#res, 'upstream_timeout', 'The model provider did not answer in time.', {
          retryAfter: 1,
        });
      } else {
        sendError(this.#res, 'upstream_unreachable', 'The model provider could not be reached.', {
          retryAfter: 1,
        });
      }
    } else {
      const timeout = classifyUpstreamError(error) === 'timeout';
      exchange.failure = timeout ? 'upstream_timeout_midstream' : 'upstream_broke_midstream';
      this.#logger.warn(
        { reqId: exchange.id, code: (error as { code?: string }).code },
        'upstream response broke off',
      );
      if (this.#res.headersSent) {
        // What the client has is all it gets; its connection is closed so it knows the answer is cut.
        exchange.scanner?.end();
        this.#res.destroy();
      } else if (timeout) {
        // A body held whole broke off before any of it was sent: the client gets a clear error.
        sendError(this.#res, 'upstream_timeout', "The model provider's answer stopped midway.", {
          retryAfter: 1,
        });
      } else {
        sendError(this.#res, 'upstream_unreachable', "The model provider's answer broke off midway.", {
          retryAfter: 1,
        });
      }
    }
    this.#done();
  }
}

export class Gateway {
  readonly #deps: GatewayDeps;
  readonly #bodyLimit: number;
  readonly #trustedProxies: readonly Cidr[];
  readonly #auth: AuthenticateDeps;
  readonly #scrubber: ProviderBodyScrubber;
  /** Requests being served right now (a graceful stop waits for them). */
  inflight = 0;
  #idleWaiters: (() => void)[] = [];
  draining = false;

  constructor(deps: GatewayDeps) {
    this.#deps = deps;
    this.#bodyLimit = deps.config.server.bodyLimitBytes;
    this.#trustedProxies = parseCidrs(deps.config.server.trustedProxies);
    const providerKey = deps.config.upstream.key;
    this.#scrubber = {
      text: createScrubber(providerKey === undefined ? [] : [providerKey]),
      secret: providerKey === undefined || providerKey.length < 8 ? undefined : Buffer.from(providerKey),
    };
    this.#auth = {
      verifier: deps.verifier,
      failures: deps.failures,
      onFailure: deps.alerts
        ? (ip, key, reason) => deps.alerts?.observeAuthFailure(ip, key, reason)
        : undefined,
    };
  }

  /** Resolves when no request is in flight. */
  whenIdle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  handle(req: IncomingMessage, res: ServerResponse, requestId: string): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const pathname = q === -1 ? url : url.slice(0, q);
    // The endpoint recorded (usage, log, metrics) is the route template, never the raw path.
    const exchange = new Exchange(
      requestId,
      clientAddress(req, this.#trustedProxies),
      routeOf(pathname),
      // Node gives the method as sent (any token); only the standard ones are recorded as such.
      KNOWN_METHODS.has(req.method ?? '') ? (req.method as string) : 'other',
    );
    const clientId = req.headers['x-request-id'];
    if (typeof clientId === 'string' && CLIENT_REQUEST_ID.test(clientId) && !looksLikeKey(clientId)) {
      exchange.clientRequestId = clientId;
      res.setHeader('x-request-id', clientId);
    }
    const userAgent = req.headers['user-agent'];
    if (userAgent) exchange.userAgent = scrubText(userAgent, USER_AGENT_CHARS);
    this.inflight++;
    res.once('close', () => this.#finish(exchange, res));
    if (this.draining) res.setHeader('connection', 'close');
    this.#serve(req, res, exchange, q === -1 ? '' : url.slice(q), pathname).catch((error: unknown) => {
      this.#deps.logger.error({ reqId: exchange.id, err: error }, 'unhandled error while serving a request');
      this.#fail(
        res,
        exchange,
        'internal_error',
        'Internal error. The request id identifies it in the gateway log.',
      );
    });
  }

  #fail(
    res: ServerResponse,
    exchange: Exchange,
    code: ErrorCode,
    message: string,
    options: Parameters<typeof sendError>[3] = {},
  ): void {
    exchange.failure ??= code;
    sendError(res, code, message, options);
  }

  async #serve(
    req: IncomingMessage,
    res: ServerResponse,
    exchange: Exchange,
    query: string,
    pathname: string,
  ): Promise<void> {
    const { upstream } = this.#deps;
    const pending = authenticate(req, exchange.ip, query, this.#auth);
    const outcome = pending instanceof Promise ? await pending : pending;
    if (!outcome.ok) {
      exchange.key = outcome.key;
      exchange.failure = outcome.failure;
      sendError(res, outcome.code, outcome.message, { retryAfter: outcome.retryAfter, body: outcome.body });
      return;
    }
    const key = outcome.key;
    exchange.key = key;

    const target = route(req.method ?? 'GET', pathname);
    if (target.kind === 'not_found') {
      this.#fail(res, exchange, 'not_found', `No such endpoint: ${req.method} ${scrubText(pathname)}`);
      return;
    }
    if (target.kind === 'method_not_allowed') {
      res.setHeader('allow', target.allow);
      this.#fail(res, exchange, 'method_not_allowed', `${scrubText(pathname)} accepts ${target.allow} only`);
      return;
    }
    const scope = SCOPE_OF[target.kind === 'post' ? target.endpoint : 'models'];
    if (!hasScope(key, scope)) {
      this.#fail(
        res,
        exchange,
        'insufficient_scope',
        `This key lacks the scope "${scope}" needed for ${req.method} ${exchange.endpoint}.`,
        { scope },
      );
      return;
    }
    if (!upstream.configured) {
      this.#fail(
        res,
        exchange,
        'upstream_not_configured',
        'The gateway has no upstream API key. The operator must set KEYGATE_UPSTREAM_KEY (or MISTRAL_API_KEY, or upstream.key in the config file) and restart Keygate.',
        { retryAfter: 60 },
      );
      return;
    }

    if (target.kind === 'models') {
      const admitted = this.#admit(res, exchange, key, 0, true);
      if (!(admitted instanceof Promise ? await admitted : admitted)) return;
      await this.#forward(
        res,
        exchange,
        key,
        { method: 'GET', path: '/v1/models' },
        {
          stream: false,
          base64: false,
          models: key.policy.models.length > 0 ? key.policy.models : undefined,
        },
      );
      return;
    }
    if (target.kind === 'model') {
      const id = resolveModel(this.#deps.config.modelAliases, target.id);
      exchange.model = id;
      if (!modelAllowed(key.policy.models, id)) {
        this.#refuseModel(res, exchange, id);
        return;
      }
      const admitted = this.#admit(res, exchange, key, 0, true);
      if (!(admitted instanceof Promise ? await admitted : admitted)) return;
      await this.#forward(
        res,
        exchange,
        key,
        { method: 'GET', path: `/v1/models/${encodeURIComponent(id)}` },
        { stream: false, base64: false },
      );
      return;
    }

    const raw = await this.#readBody(req, res, exchange);
    if (raw === undefined) return;
    const text = raw.toString('utf8');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      this.#fail(res, exchange, 'invalid_json', 'The request body is not valid JSON.');
      return;
    }
    // The raw bytes are forwarded: a member named twice would be authorised as its last value
    // and might be read as its first by the provider.
    const duplicate = duplicateTopLevelMember(text);
    const issues =
      duplicate === undefined ? validateBody(target.endpoint, body) : [duplicateMemberIssue(duplicate)];
    if (issues.length > 0) {
      exchange.failure = 'validation_error';
      // The model named, for the log and the usage record, when it is one (never arbitrary text).
      const named = (body as { model?: unknown } | null)?.model;
      if (typeof named === 'string' && isModelId(named))
        exchange.model = resolveModel(this.#deps.config.modelAliases, named);
      const payload = validationBody(issues);
      res.writeHead(422, {
        'content-type': 'application/json; charset=utf-8',
        'content-length': Buffer.byteLength(payload),
      });
      res.end(payload);
      return;
    }
    const json = body as JsonObject;
    const requested = json.model as string;
    const model = resolveModel(this.#deps.config.modelAliases, requested);
    exchange.model = model;
    if (!modelAllowed(key.policy.models, model)) {
      this.#refuseModel(res, exchange, model);
      return;
    }
    exchange.promptEstimate = estimatePromptTokens(json, target.endpoint, raw.length);
    const admitted = this.#admit(res, exchange, key, estimateTokens(json, target.endpoint, raw.length));
    if (!(admitted instanceof Promise ? await admitted : admitted)) return;
    let payload = raw;
    if (model !== requested) {
      json.model = model;
      payload = Buffer.from(JSON.stringify(json));
    }
    await this.#forward(
      res,
      exchange,
      key,
      { method: 'POST', path: target.path, body: payload },
      {
        stream: json.stream === true,
        base64: target.endpoint === 'embeddings' && json.encoding_format === 'base64',
      },
    );
  }

  /**
   * Applies the key's rate limits and budgets. Sets the rate-limit headers either way; on refusal
   * answers 429 and returns false. An admitted request is settled when its response closes.
   */
  #admit(
    res: ServerResponse,
    exchange: Exchange,
    key: KeyRecord,
    estimate: number,
    free = false,
  ): boolean | Promise<boolean> {
    let pending: Admission | Promise<Admission>;
    try {
      pending = this.#deps.limiter.admit(
        {
          keyId: key.id,
          workspaceId: key.workspaceId,
          limits: key.policy.limits,
          // Listing models costs no tokens: an exhausted budget does not refuse it (rate limits
          // and concurrency still apply).
          keyBudget: free ? NO_BUDGET : key.policy.budget,
          workspaceBudget: free ? NO_BUDGET : key.workspacePolicy.budget,
        },
        estimate,
      );
    } catch (error) {
      return this.#limiterFailed(res, exchange, error);
    }
    // The memory limiter answers synchronously (the steady state): no promise, no await.
    return pending instanceof Promise
      ? pending.then(
          (admission) => this.#admitted(res, exchange, admission),
          (error: unknown) => this.#limiterFailed(res, exchange, error),
        )
      : this.#admitted(res, exchange, pending);
  }

  /** A limiter that cannot answer: 503 when it says so (LimiterUnavailableError), else the error goes on. */
  #limiterFailed(res: ServerResponse, exchange: Exchange, error: unknown): false {
    if (!(error instanceof LimiterUnavailableError)) throw error;
    exchange.failure = 'limiter_unavailable';
    if (!exchange.done)
      sendError(res, 'limiter_unavailable', error.message, { retryAfter: error.retryAfterSeconds });
    return false;
  }

  /** Applies the limiter's answer: its headers, and a 429 when it refused. */
  #admitted(res: ServerResponse, exchange: Exchange, admission: Admission): boolean {
    if (exchange.done) {
      // The client hung up while the limiter waited: nothing will settle this ticket later.
      if (admission.ok) this.#deps.limiter.settle(admission.ticket, 0);
      return false;
    }
    for (const name in admission.headers) res.setHeader(name, admission.headers[name]!);
    if (admission.ok) {
      exchange.ticket = admission.ticket;
      return true;
    }
    exchange.failure = `limit_${admission.reason}`;
    sendError(res, LIMIT_CODE[admission.reason], admission.message, {
      retryAfter: admission.retryAfterSeconds,
    });
    return false;
  }

  #refuseModel(res: ServerResponse, exchange: Exchange, model: string): void {
    this.#fail(
      res,
      exchange,
      'model_not_allowed',
      `This key may not use the model "${model.slice(0, 200)}".`,
      {
        param: 'model',
      },
    );
  }

  /** Reads the request body within the size limit; sends the error and resolves undefined when it cannot. */
  #readBody(req: IncomingMessage, res: ServerResponse, exchange: Exchange): Promise<Buffer | undefined> {
    const limit = this.#bodyLimit;
    const tooLarge = () => {
      res.setHeader('connection', 'close');
      this.#fail(
        res,
        exchange,
        'payload_too_large',
        `The request body is larger than the gateway's limit of ${limit} bytes.`,
      );
    };
    if (Number(req.headers['content-length']) > limit) {
      tooLarge();
      return Promise.resolve(undefined);
    }
    continueIfExpected(req, res);
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let settled = false;
      const settle = (body: Buffer | undefined) => {
        settled = true;
        req.off('data', onData);
        resolve(body);
      };
      const onData = (chunk: Buffer) => {
        size += chunk.length;
        if (size > limit) {
          tooLarge();
          req.destroy();
          settle(undefined);
          return;
        }
        chunks.push(chunk);
      };
      req.on('data', onData);
      req.once('end', () => {
        if (!settled) settle(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
      });
      // An aborted upload ends in 'error' (or a 'close' without 'end'): the client is gone.
      const aborted = () => {
        if (settled) return;
        exchange.failure = 'client_aborted';
        res.destroy();
        settle(undefined);
      };
      req.once('error', aborted);
      req.once('close', aborted);
    });
  }

  /** Sends the request to the provider and relays its answer; resolves when the exchange is over. */
  #forward(
    res: ServerResponse,
    exchange: Exchange,
    key: KeyRecord,
    call: { method: 'GET' | 'POST'; path: string; body?: Buffer },
    mode: RelayMode,
  ): Promise<void> {
    if (exchange.done || res.destroyed) return Promise.resolve(); // the client is gone: do not call the provider
    const headers: Record<string, string> = {
      accept: mode.stream ? 'text/event-stream' : 'application/json',
      // The client's own id when it sent one (so that the provider's logs can be searched for
      // it), and the gateway's, which keys the usage record.
      'x-request-id': exchange.clientRequestId ?? exchange.id,
      'x-keygate-request-id': exchange.id,
      // Printable ASCII only: a header value with anything else (the scrubber's `…`) is refused.
      'user-agent': exchange.userAgent
        ? `keygate/0.1 ${exchange.userAgent.replace(/[^\x20-\x7e]/g, '')}`.trimEnd()
        : 'keygate/0.1',
    };
    if (call.body) headers['content-type'] = 'application/json';
    return new Promise<void>((resolve) => {
      const relay = new Relay(res, exchange, mode, this.#deps.logger, this.#scrubber, resolve);
      exchange.relay = relay;
      const outcome = this.#deps.upstream.dispatch(
        { method: call.method, path: call.path, body: call.body, headers },
        relay,
        { keyId: key.id, concurrency: key.policy.limits.concurrency },
      );
      if (outcome.dispatched) {
        relay.abandon = outcome.abandon;
        return;
      }
      // The key holds its share of the provider connections already: others must get theirs.
      const size = this.#deps.upstream.stats.size;
      this.#fail(
        res,
        exchange,
        'rate_limited',
        `Too many concurrent requests to the model provider: this key has ${outcome.held} in flight or waiting, the most one key may have of the gateway's ${size} provider connections. Retry when one has finished.`,
        { retryAfter: 1 },
      );
      exchange.failure = 'limit_upstream_share';
      resolve();
    });
  }

  /** Runs once per request when its response is closed: access log line and usage record. */
  #finish(exchange: Exchange, res: ServerResponse): void {
    if (exchange.done) return;
    exchange.done = true;
    const completed = res.writableFinished;
    // Not finished: the provider cut the answer off (502/504), or the client went away (499).
    exchange.status = completed ? res.statusCode : (CUT_STATUS[exchange.failure ?? ''] ?? 499);
    if (!completed) {
      exchange.failure ??= 'client_aborted';
      exchange.relay?.cancel();
    }
    const latencyMs = Math.round((performance.now() - exchange.t0) * 1000) / 1000;
    // Read here, not only after the stream's end: the response may close first (plain HTTP, a
    // client hanging up after the usage event), and the tokens were spent all the same.
    exchange.scanner?.end();
    exchange.usage ??= usageOf(exchange);
    const answered = exchange.upstreamStatus >= 200 && exchange.upstreamStatus < 300;
    if (!exchange.usage && answered && exchange.scanner) {
      // A stream cut off before its usage report: record what was delivered, marked as estimated.
      const completionTokens = exchange.scanner.contentEvents;
      exchange.usage = {
        promptTokens: exchange.promptEstimate,
        completionTokens,
        totalTokens: exchange.promptEstimate + completionTokens,
      };
      exchange.tokensEstimated = true;
    }
    const usage = exchange.usage;
    if (exchange.ticket) {
      // Without a usage report from a provider that did answer (a cut stream), keep at least the
      // reservation charged: a client must not lower its bill by hanging up.
      const reserved = exchange.ticket.estimatedTokens;
      const charged =
        usage === undefined
          ? answered
            ? reserved
            : 0
          : exchange.tokensEstimated
            ? Math.max(usage.totalTokens, reserved)
            : usage.totalTokens;
      this.#deps.limiter.settle(exchange.ticket, charged);
    }
    const key = exchange.key;
    if (key) {
      this.#deps.alerts?.observe({
        key,
        ip: exchange.ip,
        totalTokens: usage?.totalTokens ?? 0,
        // A refusal for a budget raises the budget alert too (the budget may be too small for any request).
        failure: exchange.failure,
      });
      this.#deps.usage.push({
        id: exchange.id,
        time: exchange.startedAt,
        keyId: key.id,
        workspaceId: key.workspaceId,
        model: exchange.model,
        endpoint: exchange.endpoint,
        status: exchange.status,
        promptTokens: usage?.promptTokens ?? 0,
        completionTokens: usage?.completionTokens ?? 0,
        totalTokens: usage?.totalTokens ?? 0,
        latencyMs,
        ttftMs: exchange.ttftMs,
        clientIp: exchange.ip,
        tokensEstimated: exchange.tokensEstimated,
      });
    }
    this.#deps.metrics.recordRequest(exchange, latencyMs);
    writeAccessLine(this.#deps.logger, {
      reqId: exchange.id,
      clientReqId: exchange.clientRequestId,
      keyId: key?.id ?? null,
      ip: exchange.ip,
      method: exchange.method,
      userAgent: exchange.userAgent,
      path: exchange.endpoint,
      model: exchange.model,
      status: exchange.status,
      latencyMs,
      upstreamMs: exchange.upstreamMs === null ? null : Math.round(exchange.upstreamMs * 1000) / 1000,
      promptTokens: usage?.promptTokens,
      completionTokens: usage?.completionTokens,
      failure: exchange.failure,
    });
    this.inflight--;
    if (this.inflight === 0 && this.#idleWaiters.length > 0) {
      for (const resolve of this.#idleWaiters.splice(0)) resolve();
    }
  }
}
