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

/** Response headers never copied from the provider to the client. */
export const RESPONSE_HEADER_DENYLIST = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'set-cookie',
  'server',
  'date',
  'alt-svc',
  'strict-transport-security',
  'content-length',
]);

/** Copies the provider's response headers that are meaningful to a client. */
export function forwardableResponseHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const connectionListed =
    typeof headers.connection === 'string' ? headers.connection.toLowerCase().split(/\s*,\s*/) : [];
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    if (RESPONSE_HEADER_DENYLIST.has(name) || connectionListed.includes(name)) continue;
    if (name.startsWith('x-ratelimit') || name.startsWith('ratelimit') || name.startsWith('x-kong-'))
      continue;
    if (name.startsWith('access-control-') || name.startsWith('x-envoy-') || name === 'x-request-id')
      continue;
    out[name] = value;
  }
  return out;
}
