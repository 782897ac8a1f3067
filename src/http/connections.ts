/**
 * Client connections below HTTP: how many may be open (in all and per client address), what
 * happens to one that errs before or between requests, and how a stop ends every one of them.
 *
 * Node's HTTP layer knows a connection only once its parser adopts it: for HTTPS, after the TLS
 * handshake. A connection that never finishes its handshake, or never sends a byte, is invisible to
 * `server.closeAllConnections()` and, unless something closes it, holds a file descriptor for ever
 * (issue 12, item 4: 20,600 silent connections exhausted 20,000 descriptors, and a SIGTERM never
 * finished). So every accepted socket is tracked here from the `connection` event (for HTTPS the
 * TCP socket, which the TLS socket wraps: destroying it closes both), and the timeouts are:
 *
 * - the TLS handshake: tls `handshakeTimeout` (an absolute bound, measured by Node from the accept);
 * - the request head: Node's `headersTimeout`, counted from the accept on plain HTTP, from the end of
 *   the handshake on HTTPS, and from the first byte of each later request on a kept-alive
 *   connection; checked every `connectionsCheckingInterval`;
 * - the whole request: Node's `requestTimeout`; between requests: `keepAliveTimeout`.
 *
 * Both timeouts end in `clientError`, whose handler here destroys the socket (it used to `end()` it:
 * a half-close that a silent peer never completes, and on a TLS socket mid-handshake not even that).
 * Nothing here runs per request: the bookkeeping is per connection.
 */
import { readFileSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { bucketOf } from '../auth/failures.ts';
import { type Cidr, inRanges, parseAddress } from '../auth/ip.ts';

/** Why a connection was closed as soon as it was accepted. */
export const CONNECTION_REFUSAL_REASONS = ['max_connections', 'per_address'] as const;
export type ConnectionRefusalReason = (typeof CONNECTION_REFUSAL_REASONS)[number];

/** Which bound closed a connection that took too long: its TLS handshake, or its request. */
export const CONNECTION_TIMEOUT_STAGES = ['tls_handshake', 'request'] as const;
export type ConnectionTimeoutStage = (typeof CONNECTION_TIMEOUT_STAGES)[number];

/**
 * How long a connection answered with an error status (400, 408, 431) may stay to read it before
 * it is destroyed. `end()` alone would wait for the peer's FIN, which a hostile peer never sends;
 * destroying at once could reset the connection before a real client has read the answer.
 */
const CLIENT_ERROR_LINGER_MS = 1000;

/** The answers of a well-formed HTTP connection that sent a malformed or too slow request. */
const CLIENT_ERROR_RESPONSES: Readonly<Record<string, string>> = {
  HPE_HEADER_OVERFLOW: response(431, 'Request Header Fields Too Large'),
  HPE_CHUNK_EXTENSIONS_OVERFLOW: response(413, 'Payload Too Large'),
  ERR_HTTP_REQUEST_TIMEOUT: response(408, 'Request Timeout'),
};
const BAD_REQUEST = response(400, 'Bad Request');

function response(status: number, reason: string): string {
  return `HTTP/1.1 ${status} ${reason}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`;
}

/**
 * The raw answer for a `clientError`, or undefined when the socket must just be destroyed. Only the
 * HTTP parser's errors (`HPE_*`) and Node's request timeout come from a connection the HTTP layer
 * adopted, where an HTTP answer means something: a TLS error (a handshake that failed or timed
 * out), a reset or any other error gets none. Nor does a connection whose current response has
 * already begun (an error status in the middle of it would corrupt it).
 */
export function clientErrorResponse(code: string | undefined, socket: Duplex): string | undefined {
  if (code === undefined || !socket.writable) return undefined;
  if (!code.startsWith('HPE_') && code !== 'ERR_HTTP_REQUEST_TIMEOUT') return undefined;
  // Node's own default handler reads the same (internal, long-stable) field: the response in flight.
  const inFlight = (socket as Duplex & { _httpMessage?: { headersSent: boolean } | null })._httpMessage;
  if (inFlight?.headersSent) return undefined;
  return CLIENT_ERROR_RESPONSES[code] ?? BAD_REQUEST;
}

/**
 * The soft limit on open file descriptors of this process (Node raises it to the hard limit at
 * start), or undefined where it cannot be read (not Linux). Node has no getrlimit; /proc has it.
 */
export function openFileLimit(limitsText?: string): number | undefined {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/limits', 'utf8');
    } catch {
      return undefined;
    }
  }
  const line = text.split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
  if (soft === undefined || soft === 'unlimited') return undefined;
  const value = Number(soft);
  return Number.isSafeInteger(value) && value > 0 ? value : undefined;
}

/**
 * The connection cap to apply: the configured one, lowered to what the descriptor limit leaves
 * after `reserve` (the store, the provider pool, Redis, log and database files). A cap above the
 * limit protects nothing: accept() would fail with EMFILE and so would every connection to the
 * provider and the store, while the clients already connected wait.
 */
export function connectionCap(
  configured: number,
  fdLimit: number | undefined,
  reserve: number,
): { cap: number; warning: string | undefined } {
  if (fdLimit === undefined || configured + reserve <= fdLimit)
    return { cap: configured, warning: undefined };
  const cap = Math.max(1, fdLimit - reserve);
  return {
    cap,
    warning:
      `server.maxConnections (${configured}) does not fit in this process's limit of ${fdLimit} open files ` +
      `(ulimit -n) with ${reserve} kept for the store, the provider and logs: ${cap} connections are ` +
      'accepted instead. Raise the limit (LimitNOFILE= in systemd, --ulimit nofile= in Docker) or lower the setting.',
  };
}

export interface ConnectionGuardOptions {
  /** Open connections of this process beyond which new ones are closed at once. */
  maxConnections: number;
  /** Open connections per client address (an IPv6 /64), beyond which new ones are closed. */
  maxConnectionsPerAddress: number;
  /** Peers exempt from the per-address limit: the proxies all clients' traffic comes through. */
  trustedProxies: readonly Cidr[];
  /** Called once when the cap starts refusing connections, and once when it accepts them again. */
  onCapChange?(refusing: boolean, open: number): void;
  /** Called once when an address starts being refused (again only after it went below the limit). */
  onAddressLimit?(address: string, open: number): void;
}

export class ConnectionGuard {
  /** Every accepted socket (for HTTPS the TCP socket under the TLS one) until it closes. */
  readonly #sockets = new Set<Socket>();
  /** Open connections per client address bucket (only buckets with at least one). */
  readonly #perAddress = new Map<string, number>();
  /** Buckets refused since they last went below their limit (logged once per episode). */
  readonly #limitedAddresses = new Set<string>();
  readonly #max: number;
  readonly #perAddressMax: number;
  /** Open connections at or below which a refusing cap counts as accepting again (hysteresis). */
  readonly #resumeAt: number;
  readonly #trusted: readonly Cidr[];
  readonly #options: ConnectionGuardOptions;
  #refusing = false;
  readonly refused: Record<ConnectionRefusalReason, number> = { max_connections: 0, per_address: 0 };
  readonly timedOut: Record<ConnectionTimeoutStage, number> = { tls_handshake: 0, request: 0 };

  constructor(options: ConnectionGuardOptions) {
    this.#options = options;
    this.#max = options.maxConnections;
    this.#perAddressMax = options.maxConnectionsPerAddress;
    // A cap that flaps at its edge under a flood would log every accept and close: "accepting
    // again" waits until a tenth of the slots (at least one) are free.
    this.#resumeAt = Math.max(0, Math.min(this.#max - 1, Math.floor(this.#max * 0.9)));
    this.#trusted = options.trustedProxies;
  }

  /** Open client connections of this process. */
  get open(): number {
    return this.#sockets.size;
  }

  /** Whether new connections are being refused by the cap (for tests and /readyz-like probes). */
  get refusing(): boolean {
    return this.#refusing;
  }

  /**
   * Installs the cap, the per-address limit, the tracking and the `clientError` handler on a
   * server. The cap is Node's own `maxConnections`: an excess connection is closed in `net`
   * before any JavaScript object is made for it (no TLS, no parser), which keeps refusing cheap
   * under a flood and leaves the event loop to the requests of the connections already open.
   */
  attach(server: Server): void {
    server.maxConnections = this.#max;
    server.on('drop', () => this.#dropped());
    server.on('connection', (socket: Socket) => this.#accepted(socket));
    server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) =>
      this.#clientError(error, socket),
    );
  }

  /** Destroys every connection still open, whatever state it is in (the end of a stop). */
  destroyAll(): void {
    for (const socket of this.#sockets) socket.destroy();
  }

  #dropped(): void {
    this.refused.max_connections++;
    if (!this.#refusing) {
      this.#refusing = true;
      this.#options.onCapChange?.(true, this.#sockets.size);
    }
  }

  #accepted(socket: Socket): void {
    const sockets = this.#sockets;
    sockets.add(socket);
    const bucket = this.#bucketOf(socket.remoteAddress);
    let counted = false;
    if (bucket !== undefined) {
      const open = (this.#perAddress.get(bucket) ?? 0) + 1;
      if (open > this.#perAddressMax) {
        this.refused.per_address++;
        if (!this.#limitedAddresses.has(bucket)) {
          this.#limitedAddresses.add(bucket);
          this.#options.onAddressLimit?.(bucket, open - 1);
        }
        socket.destroy();
      } else {
        this.#perAddress.set(bucket, open);
        counted = true;
      }
    }
    socket.once('close', () => {
      sockets.delete(socket);
      if (counted && bucket !== undefined) this.#released(bucket);
      if (this.#refusing && sockets.size <= this.#resumeAt) {
        this.#refusing = false;
        this.#options.onCapChange?.(false, sockets.size);
      }
    });
  }

  #released(bucket: string): void {
    const open = (this.#perAddress.get(bucket) ?? 1) - 1;
    if (open <= 0) this.#perAddress.delete(bucket);
    else this.#perAddress.set(bucket, open);
    if (open < this.#perAddressMax) this.#limitedAddresses.delete(bucket);
  }

  /**
   * The per-address bucket of a peer: the address (IPv4-mapped IPv6 as IPv4), an IPv6 /64 (one
   * host routinely has a whole /64), or undefined when the limit does not apply: a trusted proxy
   * (every client comes through it; X-Forwarded-For is not read before the request head, and the
   * proxy is where per-client connection limits belong), or a peer already gone.
   */
  #bucketOf(peer: string | undefined): string | undefined {
    if (peer === undefined) return undefined;
    const address = parseAddress(peer);
    if (address === undefined) return peer;
    if (this.#trusted.length > 0 && inRanges(address, this.#trusted)) return undefined;
    return bucketOf(address.toString());
  }

  #clientError(error: NodeJS.ErrnoException, socket: Duplex): void {
    if (error.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') this.timedOut.tls_handshake++;
    else if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') this.timedOut.request++;
    const answer = clientErrorResponse(error.code, socket);
    if (answer === undefined) {
      socket.destroy();
      return;
    }
    socket.end(answer);
    const linger = setTimeout(() => socket.destroy(), CLIENT_ERROR_LINGER_MS);
    linger.unref();
    socket.once('close', () => clearTimeout(linger));
  }
}
