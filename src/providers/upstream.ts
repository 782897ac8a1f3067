/**
 * The connection to the model provider: one undici pool of kept-alive connections per gateway.
 * The provider key is added here and nowhere else; it never travels towards a client.
 */
import { readFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import type { Dispatcher } from 'undici';
import { Pool } from 'undici';

export interface UpstreamOptions {
  url: string;
  key?: string | undefined;
  timeoutMs: number;
  bodyTimeoutMs: number;
  connections: number;
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
 */
export type UpstreamHandler = Dispatcher.DispatchHandler &
  Required<Pick<Dispatcher.DispatchHandler, 'onRequestStart' | 'onResponseStart' | 'onResponseError'>>;

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

export class Upstream {
  readonly origin: string;
  readonly #basePath: string;
  readonly #pool: Pool;
  readonly #authorization: string | undefined;

  constructor(options: UpstreamOptions) {
    const url = new URL(options.url);
    this.origin = url.origin;
    this.#basePath = url.pathname.replace(/\/+$/, '');
    this.#authorization = options.key ? `Bearer ${options.key}` : undefined;
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

  /** Sends a request to the provider with its key; the answer goes to `handler`. */
  dispatch(req: UpstreamRequest, handler: UpstreamHandler): void {
    const headers = req.headers;
    if (this.#authorization) headers.authorization = this.#authorization;
    if (req.body) headers['content-length'] = String(req.body.length);
    this.#pool.dispatch(
      { method: req.method, path: this.#basePath + req.path, headers, body: req.body },
      handler,
    );
  }

  close(): Promise<void> {
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
