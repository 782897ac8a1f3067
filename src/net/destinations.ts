/**
 * Where the gateway may connect on a tenant's behalf: the one check behind every outbound
 * connection of the alert subsystem (webhook and Slack over undici, email over nodemailer).
 *
 * A tenant admin names the destination (a URL), so without this check the gateway would be their
 * way into this host and its networks: loopback services, the cloud metadata service
 * (169.254.169.254), private ranges, the gateway itself. The rule:
 *
 * - An address in the operator's `alerts.allowedDestinations` (CIDR ranges) may be reached.
 * - Otherwise only public unicast addresses (src/net/addresses.ts), and never one of this host's
 *   own interface addresses.
 * - Plain text (`http://`) only to the operator's ranges: what a tenant sends in the clear, and
 *   what answers, stays on networks the operator chose.
 *
 * The check is made on the address actually connected to, when connecting: host names are
 * resolved through a `lookup` hook that refuses a forbidden answer (so a name that resolves to
 * 127.0.0.1, or starts to after being checked — DNS rebinding — is refused), IP literals (which
 * net.connect never passes to `lookup`) are checked before connecting, and the connected socket's
 * peer address is checked once more. A refusal is a DestinationRefusedError.
 */
import * as dns from 'node:dns';
import { isIP, connect as netConnect, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { Agent, buildConnector } from 'undici';
import { type Cidr, inRanges, parseCidrs } from '../auth/ip.ts';
import { classifyIp, parseIp, unwrapIp } from './addresses.ts';

/** `tls`: the connection is encrypted (https, smtps, SMTP with STARTTLS); `plain`: it is not (http). */
export type Transport = 'tls' | 'plain';

export interface DestinationPolicy {
  /** The operator's ranges: reachable whatever they are, and the only ones plain http may reach. */
  readonly allowed: readonly Cidr[];
  /** This host's addresses (the gateway itself); read at each check, interfaces come and go. */
  readonly localAddresses: () => readonly string[];
}

function interfaceAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces()))
    for (const entry of list ?? []) out.push(entry.address);
  return out;
}

/**
 * A policy from the operator's CIDR ranges (`alerts.allowedDestinations`); throws on a bad range.
 * `localAddresses` is for tests.
 */
export function destinationPolicy(
  allowed: readonly string[] = [],
  localAddresses: () => readonly string[] = interfaceAddresses,
): DestinationPolicy {
  return { allowed: parseCidrs(allowed), localAddresses };
}

/** Nothing allowed beyond the public internet (over TLS): the default. */
export const DEFAULT_DESTINATIONS: DestinationPolicy = destinationPolicy();

/** This host's loopback interface only, e.g. for credentials sent over plain http (src/cli/remote.ts). */
export const LOOPBACK_ONLY: DestinationPolicy = destinationPolicy(['127.0.0.0/8', '::1/128'], () => []);

/** Why a connection to an address is refused, in a few words (for the operator's log), or undefined. */
export function refusalOf(
  address: string,
  policy: DestinationPolicy,
  transport: Transport,
): string | undefined {
  const parsed = parseIp(address);
  if (parsed === undefined) return 'not an IP address';
  const plain = unwrapIp(parsed);
  if (inRanges(plain, policy.allowed)) return undefined;
  if (transport === 'plain') return 'plain text goes only to the allowed ranges';
  const kind = classifyIp(plain);
  if (kind !== 'public') return `${kind} address`;
  const text = plain.toString();
  for (const local of policy.localAddresses()) {
    const own = parseIp(local);
    if (own !== undefined && unwrapIp(own).toString() === text) return 'an address of this host';
  }
  return undefined;
}

export class DestinationRefusedError extends Error {
  override name = 'DestinationRefusedError';
  readonly code = 'EDESTINATIONREFUSED';
  /** The address refused (for the operator's log; never shown to the tenant). */
  readonly address: string;
  constructor(host: string, address: string, why: string) {
    super(`refused to connect to ${host === address ? address : `${host} (${address})`}: ${why}`);
    this.address = address;
  }
}

/** True when the error, or one of its causes (undici wraps socket errors), is a refusal. */
export function isDestinationRefused(error: unknown): boolean {
  let at: unknown = error;
  for (let depth = 0; depth < 5 && at instanceof Error; depth++) {
    if (at instanceof DestinationRefusedError) return true;
    at = at.cause;
  }
  return false;
}

function refuse(host: string, address: string, policy: DestinationPolicy, transport: Transport) {
  const why = refusalOf(address, policy, transport);
  return why === undefined ? undefined : new DestinationRefusedError(host, address, why);
}

type LookupCallback = (
  err: NodeJS.ErrnoException | null,
  address: string | dns.LookupAddress[],
  family?: number,
) => void;
/** node:net's `lookup` option. */
export type Lookup = (hostname: string, options: dns.LookupOptions, callback: LookupCallback) => void;
type LookupAll = (
  hostname: string,
  options: dns.LookupAllOptions,
  callback: (err: NodeJS.ErrnoException | null, addresses: dns.LookupAddress[]) => void,
) => void;

/**
 * A `lookup` for net/tls connect that resolves as usual and refuses the name when any of its
 * addresses is refused: the addresses checked are the ones connected to. `resolve` is for tests.
 */
export function guardedLookup(
  policy: DestinationPolicy,
  transport: Transport,
  resolve: LookupAll = dns.lookup,
): Lookup {
  return (hostname, options, callback) => {
    resolve(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) {
        callback(err, options.all ? [] : '', 0);
        return;
      }
      const first = addresses[0];
      if (first === undefined) {
        const none: NodeJS.ErrnoException = new Error(`${hostname} has no address`);
        none.code = 'ENOTFOUND';
        callback(none, options.all ? [] : '', 0);
        return;
      }
      for (const { address } of addresses) {
        const refused = refuse(hostname, address, policy, transport);
        if (refused) {
          callback(refused, options.all ? [] : '', 0);
          return;
        }
      }
      if (options.all) callback(null, addresses);
      else callback(null, first.address, first.family);
    });
  };
}

/** Refuses a connected socket whose peer is refused (what no lookup saw still cannot pass). */
function peerRefusal(socket: Socket, host: string, policy: DestinationPolicy, transport: Transport) {
  const peer = socket.remoteAddress;
  return peer === undefined
    ? new DestinationRefusedError(host, '(unknown)', 'no peer address')
    : refuse(host, peer, policy, transport);
}

/**
 * An undici connector that enforces the policy: `https:` connections as `tls`, `http:` as
 * `plain`. The other options are undici's (timeout, ca…).
 */
export function guardedConnector(
  policy: DestinationPolicy,
  options: buildConnector.BuildOptions = {},
): buildConnector.connector {
  const connectors = {
    tls: buildConnector({ ...options, lookup: guardedLookup(policy, 'tls') }),
    plain: buildConnector({ ...options, lookup: guardedLookup(policy, 'plain') }),
  };
  return (opts, callback) => {
    const transport: Transport = opts.protocol === 'https:' ? 'tls' : 'plain';
    const host = opts.hostname;
    if (isIP(host) !== 0) {
      const refused = refuse(host, host, policy, transport);
      if (refused) {
        queueMicrotask(() => callback(refused, null));
        return;
      }
    }
    connectors[transport](opts, (err, socket) => {
      if (err !== null) {
        callback(err, null);
        return;
      }
      const refused = peerRefusal(socket, host, policy, transport);
      if (refused) {
        socket.destroy();
        callback(refused, null);
        return;
      }
      callback(null, socket);
    });
  };
}

/** An undici Agent whose every connection is checked against the policy. */
export function guardedAgent(
  policy: DestinationPolicy,
  options: Omit<Agent.Options, 'connect'> & { connect?: buildConnector.BuildOptions } = {},
): Agent {
  const { connect, ...rest } = options;
  return new Agent({ ...rest, connect: guardedConnector(policy, connect) });
}

/**
 * A TCP connection to host:port made under the policy, for clients that take a connected socket
 * (nodemailer's `getSocket`). Rejects with DestinationRefusedError, a socket error, or a timeout.
 */
export function connectGuarded(
  target: { host: string; port: number },
  policy: DestinationPolicy,
  transport: Transport,
  options: { timeoutMs: number; signal?: AbortSignal },
): Promise<Socket> {
  const { host, port } = target;
  if (isIP(host) !== 0) {
    const refused = refuse(host, host, policy, transport);
    if (refused) return Promise.reject(refused);
  }
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port, lookup: guardedLookup(policy, transport) });
    let settled = false;
    const done = (error?: Error) => {
      // A later socket error is the client's to handle (it listens once it has the socket).
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      if (error === undefined) {
        resolve(socket);
      } else {
        socket.destroy();
        reject(error);
      }
    };
    const onAbort = () => done(new Error('aborted'));
    const timer = setTimeout(() => {
      const timeout: NodeJS.ErrnoException = new Error(`no connection within ${options.timeoutMs} ms`);
      timeout.code = 'ETIMEDOUT';
      done(timeout);
    }, options.timeoutMs);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.signal?.aborted) onAbort();
    socket.once('error', done);
    socket.once('connect', () => done(peerRefusal(socket, host, policy, transport)));
  });
}
