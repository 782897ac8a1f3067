/**
 * The connection to the model provider: one undici pool of kept-alive connections per gateway.
 * The provider key is added here and nowhere else; it never travels towards a client.
 */
import { readFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import type { Dispatcher } from 'undici';
import { Pool } from 'undici';

const noop = (): void => {};

export interface UpstreamOptions {
  url: string;
  key?: string | undefined;
  timeoutMs: number;
  bodyTimeoutMs: number;
  /** Connections to the provider: requests in flight at once (one each: no pipelining). */
  connections: number;
  /** How long a request may wait for a free connection before it is answered 503. */
  queueTimeoutMs: number;
  /** The part of `connections` one key may hold or wait for, in percent (see `shareOf`). */
  keySharePercent: number;
  caFile?: string | undefined;
}

export interface UpstreamRequest {
  method: 'GET' | 'POST';
  /** Path under /v1, starting with `/v1/`. */
  path: string;
  /** The request's headers; the provider's key and the length are added to this object. */
  headers: Record<string, string>;
  body?: Buffer | undefined;
}

/**
 * Receives one exchange with the provider, as undici's dispatcher delivers it: no stream object
 * and no promise per request. `onResponseStart` may come more than once for 1xx answers (ignore
 * those); every other method comes at most once, except `onResponseData`. It must not throw.
 * `onPoolTimeout` comes instead of all of them when no connection came free in time.
 */
export type UpstreamHandler = Dispatcher.DispatchHandler &
  Required<Pick<Dispatcher.DispatchHandler, 'onRequestStart' | 'onResponseStart' | 'onResponseError'>> & {
    onPoolTimeout(): void;
  };

/** Whose request it is, for the per-key share of the pool. */
export interface UpstreamOwner {
  keyId: string;
  /** The key's concurrency limit, which replaces the share when set (null: none). */
  concurrency: number | null;
}

/**
 * What `dispatch` did: sent the request (or queued it for the next free connection; `abandon`
 * takes it out of the queue when its client leaves), or refused it because its key already holds
 * its share of the pool.
 */
export type DispatchOutcome =
  | { dispatched: true; abandon: () => void }
  | { dispatched: false; held: number; share: number };

export interface PoolStats {
  /** Connections (requests in flight at once). */
  readonly size: number;
  /** Requests in flight now. */
  readonly inUse: number;
  /** Requests waiting for a connection now. */
  readonly queued: number;
}

export type UpstreamFailure = 'timeout' | 'unreachable';

/** Classifies an undici error for the client: no message of it is ever shown. */
export function classifyUpstreamError(error: unknown): UpstreamFailure {
  const code = (error as { code?: string }).code;
  if (
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT' ||
    code === 'UND_ERR_CONNECT_TIMEOUT'
  ) {
    return 'timeout';
  }
  return 'unreachable';
}

interface Waiter {
  req: UpstreamRequest;
  handler: UpstreamHandler;
  keyId: string;
  timer: NodeJS.Timeout | undefined;
  /** Dispatched, timed out or abandoned: no longer waiting. */
  gone: boolean;
}

/**
 * Counts a request in flight until undici reports its end or its failure (exactly once), then
 * hands its connection to the next request waiting. Every other call passes straight through.
 */
class Tracked implements Dispatcher.DispatchHandler {
  readonly #inner: UpstreamHandler;
  readonly #release: () => void;
  #released = false;

  constructor(inner: UpstreamHandler, release: () => void) {
    this.#inner = inner;
    this.#release = release;
  }

  #end(): void {
    if (this.#released) return;
    this.#released = true;
    this.#release();
  }

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    this.#inner.onRequestStart(controller, context);
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    status: number,
    headers: IncomingHttpHeaders,
    message: string,
  ): void {
    this.#inner.onResponseStart(controller, status, headers, message);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#inner.onResponseData?.(controller, chunk);
  }

  onResponseEnd(controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    this.#end();
    this.#inner.onResponseEnd?.(controller, trailers);
  }

  onResponseError(controller: Dispatcher.DispatchController, error: Error): void {
    this.#end();
    this.#inner.onResponseError(controller, error);
  }
}

/**
 * The provider pool, shared fairly: at most `connections` requests in flight (one per connection,
 * so undici never queues behind a busy one), one key holding or waiting for at most its share of
 * them, and a bounded wait for a connection when all are busy. Streams hold their connection for
 * their whole length, which is why the pool is sized for concurrent streams, not for throughput.
 */
export class Upstream {
  readonly origin: string;
  readonly #basePath: string;
  readonly #pool: Pool;
  readonly #authorization: string | undefined;
  readonly #size: number;
  readonly #queueTimeoutMs: number;
  readonly #sharePercent: number;
  #inUse = 0;
  /** Requests in flight or waiting, per key (keys with none are deleted). */
  readonly #byKey = new Map<string, number>();
  /** Requests waiting for a connection, oldest first (some may be gone: skipped when reached). */
  #waiting: Waiter[] = [];
  #queued = 0;
  #closed = false;

  constructor(options: UpstreamOptions) {
    const url = new URL(options.url);
    this.origin = url.origin;
    this.#basePath = url.pathname.replace(/\/+$/, '');
    this.#authorization = options.key ? `Bearer ${options.key}` : undefined;
    this.#size = options.connections;
    this.#queueTimeoutMs = options.queueTimeoutMs;
    this.#sharePercent = options.keySharePercent;
    this.#pool = new Pool(url.origin, {
      connections: options.connections,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 600_000,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.bodyTimeoutMs,
      connect: options.caFile ? { ca: readFileSync(options.caFile, 'utf8') } : undefined,
    });
  }

  /** Requests of one key that may be in flight or waiting at once. */
  shareOf(concurrency: number | null): number {
    if (concurrency !== null) return Math.max(1, Math.min(this.#size, concurrency));
    return Math.max(1, Math.floor((this.#size * this.#sharePercent) / 100));
  }

  get stats(): PoolStats {
    return { size: this.#size, inUse: this.#inUse, queued: this.#queued };
  }

  /** Every connection is busy: a new request would wait (or, past the wait, be refused). */
  get saturated(): boolean {
    return this.#inUse >= this.#size;
  }

  get configured(): boolean {
    return this.#authorization !== undefined;
  }

  #probe: { at: number; reachable: Promise<boolean> } | undefined;

  /**
   * Whether the provider's host accepts connections (a TCP connect, no request, no key sent),
   * remembered for 10 s so that readiness probes cost the provider nothing.
   */
  reachable(now = Date.now()): Promise<boolean> {
    if (this.#probe && now - this.#probe.at < 10_000) return this.#probe.reachable;
    const url = new URL(this.origin);
    const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
    const reachable = new Promise<boolean>((resolve) => {
      const socket = connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port, timeout: 2000 });
      const done = (ok: boolean) => {
        socket.destroy();
        resolve(ok);
      };
      socket.once('connect', () => done(true));
      socket.once('timeout', () => done(false));
      socket.once('error', () => done(false));
    });
    this.#probe = { at: now, reachable };
    return reachable;
  }

  /**
   * Sends a request to the provider with its key, at once or when a connection comes free; the
   * answer goes to `handler`. Refused (nothing sent, nothing called) when the key already holds
   * or waits for its share of the pool.
   */
  dispatch(req: UpstreamRequest, handler: UpstreamHandler, owner: UpstreamOwner): DispatchOutcome {
    const keyId = owner.keyId;
    const held = this.#byKey.get(keyId) ?? 0;
    const share = this.shareOf(owner.concurrency);
    if (held >= share) return { dispatched: false, held, share };
    this.#byKey.set(keyId, held + 1);
    if (this.#inUse < this.#size && this.#queued === 0) {
      this.#send(req, handler, keyId);
      return { dispatched: true, abandon: noop };
    }
    const waiter: Waiter = { req, handler, keyId, timer: undefined, gone: false };
    waiter.timer = setTimeout(() => {
      if (waiter.gone) return;
      this.#leave(waiter);
      handler.onPoolTimeout();
    }, this.#queueTimeoutMs);
    this.#waiting.push(waiter);
    this.#queued++;
    return {
      dispatched: true,
      abandon: () => {
        if (!waiter.gone) this.#leave(waiter);
      },
    };
  }

  /** A waiter leaves the queue without a connection. */
  #leave(waiter: Waiter): void {
    waiter.gone = true;
    clearTimeout(waiter.timer);
    this.#queued--;
    this.#forget(waiter.keyId);
  }

  #forget(keyId: string): void {
    const n = (this.#byKey.get(keyId) ?? 1) - 1;
    if (n > 0) this.#byKey.set(keyId, n);
    else this.#byKey.delete(keyId);
  }

  #send(req: UpstreamRequest, handler: UpstreamHandler, keyId: string): void {
    this.#inUse++;
    const headers = req.headers;
    if (this.#authorization) headers.authorization = this.#authorization;
    if (req.body) headers['content-length'] = String(req.body.length);
    const tracked = new Tracked(handler, () => this.#release(keyId));
    this.#pool.dispatch(
      { method: req.method, path: this.#basePath + req.path, headers, body: req.body },
      tracked,
    );
  }

  /** A request is over: its connection goes to the oldest request still waiting. */
  #release(keyId: string): void {
    this.#inUse--;
    this.#forget(keyId);
    if (this.#closed) return;
    while (this.#queued > 0 && this.#inUse < this.#size) {
      const next = this.#waiting.shift();
      if (next === undefined) break;
      if (next.gone) continue;
      next.gone = true;
      clearTimeout(next.timer);
      this.#queued--;
      this.#send(next.req, next.handler, next.keyId);
    }
    // Skipped waiters (gone already) are dropped from the front; the rest stay in order.
    if (this.#queued === 0) this.#waiting = [];
  }

  close(): Promise<void> {
    this.#closed = true;
    // Nothing waiting will get a connection now: each is answered as a wait that timed out.
    for (const waiter of this.#waiting.splice(0)) {
      if (waiter.gone) continue;
      this.#leave(waiter);
      waiter.handler.onPoolTimeout();
    }
    return this.#pool.close();
  }
}

/**
 * The provider's response headers a client may see; every other one stays here. An allowlist, so
 * that what a provider (or a proxy in front of it) adds — internal host names, its own
 * `www-authenticate`, a CSP, cookies, rate-limit counters of the shared provider account — never
 * reaches a client. Keygate sets its own `x-request-id`, rate-limit headers and `content-length`.
 */
export const RESPONSE_HEADER_ALLOWLIST: ReadonlySet<string> = new Set([
  'content-type',
  'content-encoding',
  'cache-control',
  // Retry hints, read by the official SDKs (OpenAI's read retry-after-ms and x-should-retry too).
  'retry-after',
  'retry-after-ms',
  'x-should-retry',
  // The provider's own request id, for its support; and the deprecation notice the SDKs log.
  'mistral-correlation-id',
  'x-model-deprecation-timestamp',
]);

/** Copies the provider's response headers that are on the allowlist. */
export function forwardableResponseHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const value = headers[name];
    if (value !== undefined && RESPONSE_HEADER_ALLOWLIST.has(name)) out[name] = value;
  }
  return out;
}
