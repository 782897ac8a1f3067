/**
 * Client addresses and IP allowlists: IPv4 and IPv6 CIDR ranges, with IPv4-mapped IPv6 addresses
 * (`::ffff:10.0.0.1`) treated as the IPv4 address they carry.
 */
import { isIP, isIPv4 } from 'node:net';
import ipaddr from 'ipaddr.js';

type Address = ipaddr.IPv4 | ipaddr.IPv6;

export interface Cidr {
  /** Normalised text, e.g. `10.0.0.0/8`, `2001:db8::/32`. */
  text: string;
  address: Address;
  bits: number;
}

/**
 * Recently parsed addresses: a gateway sees the same few client addresses over and over, and
 * parsing one costs more than the rest of the allowlist check. Bounded; emptied when full.
 */
const recentAddresses = new Map<string, Address | null>();
const RECENT_ADDRESSES_MAX = 4096;

/** Parses an address, turning IPv4-mapped IPv6 into IPv4; undefined when it is not an address. */
export function parseAddress(text: string): Address | undefined {
  const known = recentAddresses.get(text);
  if (known !== undefined) return known ?? undefined;
  const parsed = parseAddressOnce(text);
  if (recentAddresses.size >= RECENT_ADDRESSES_MAX) recentAddresses.clear();
  recentAddresses.set(text, parsed ?? null);
  return parsed;
}

function parseAddressOnce(text: string): Address | undefined {
  const trimmed = text.trim();
  const zoneless = trimmed.includes('%') ? trimmed.slice(0, trimmed.indexOf('%')) : trimmed;
  if (!ipaddr.isValid(zoneless)) return undefined;
  try {
    return ipaddr.process(zoneless);
  } catch {
    return undefined;
  }
}

/** Normalised text of an address (`::ffff:1.2.3.4` → `1.2.3.4`), or the input when it is not one. */
export function normaliseAddress(text: string): string {
  return parseAddress(text)?.toString() ?? text;
}

/**
 * Parses `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128). Throws with a clear
 * message. A range written with host bits (`10.0.0.1/8`) is refused, not narrowed or widened in
 * silence: whoever wrote it meant either the network (`10.0.0.0/8`) or the one address
 * (`10.0.0.1/32`), and only they know which. Every allowlist (keys, workspaces, trusted proxies,
 * alert destinations) is read through here, so the CLI, the management API, the console and the
 * configuration file agree.
 */
export function parseCidr(text: string): Cidr {
  const trimmed = text.trim();
  const slash = trimmed.indexOf('/');
  const addressText = slash === -1 ? trimmed : trimmed.slice(0, slash);
  const address = parseAddress(addressText);
  if (!address) throw new Error(`"${text}" is not an IP address or CIDR range`);
  const writtenAsIpv6 = addressText.includes(':');
  const max = writtenAsIpv6 ? 128 : 32;
  let bits = address.kind() === 'ipv4' ? 32 : 128;
  if (slash !== -1) {
    const bitsText = trimmed.slice(slash + 1);
    bits = Number(bitsText);
    if (!/^\d{1,3}$/.test(bitsText) || bits > max) throw new Error(`"${text}" has an invalid prefix length`);
    // A mapped IPv6 range such as ::ffff:10.0.0.0/104 becomes 10.0.0.0/8.
    if (writtenAsIpv6 && address.kind() === 'ipv4') {
      if (bits < 96) throw new Error(`"${text}" is wider than the IPv4-mapped range`);
      bits -= 96;
    }
  }
  const network = ipaddr.parse(`${address.toString()}`);
  const base =
    network.kind() === 'ipv4'
      ? ipaddr.IPv4.networkAddressFromCIDR(`${network.toString()}/${bits}`)
      : ipaddr.IPv6.networkAddressFromCIDR(`${network.toString()}/${bits}`);
  if (base.toString() !== network.toString()) {
    const single = network.kind() === 'ipv4' ? 32 : 128;
    throw new Error(
      `"${text}" has host bits set: write the network ${base.toString()}/${bits}, ` +
        `or ${network.toString()}/${single} for that one address`,
    );
  }
  return { text: `${base.toString()}/${bits}`, address: base, bits };
}

export function parseCidrs(texts: readonly string[]): Cidr[] {
  return texts.map(parseCidr);
}

export function inRanges(address: Address, ranges: readonly Cidr[]): boolean {
  for (const range of ranges) {
    if (range.address.kind() === address.kind() && address.match(range.address, range.bits)) return true;
  }
  return false;
}

/**
 * Longest X-Forwarded-For hop worth parsing: `[`, an IPv6 address with an IPv4 tail (45), a zone
 * id, `]:65535`. Anything longer is not an address, and is never parsed (nor cached).
 */
const MAX_HOP_LENGTH = 64;
/** Hops read from the right before giving up: no real chain has this many trusted proxies. */
const MAX_HOPS = 32;

/** True for `:<port>`, a port being 1 to 5 decimal digits up to 65535. */
function isPortSuffix(text: string, from: number): boolean {
  const digits = text.length - from - 1;
  if (text.charCodeAt(from) !== 0x3a || digits < 1 || digits > 5) return false;
  let port = 0;
  for (let i = from + 1; i < text.length; i++) {
    const c = text.charCodeAt(i) - 0x30;
    if (c < 0 || c > 9) return false;
    port = port * 10 + c;
  }
  return port <= 65_535;
}

/**
 * The address of one X-Forwarded-For hop, or undefined when it is not one. Proxies write an
 * address (`203.0.113.7`, `2001:db8::7`), or an address with the port it came from: Azure
 * Application Gateway writes `203.0.113.7:51234`, others `[2001:db8::7]:51234`. The port is
 * dropped: it changes with every connection, and a client is an address. A bare IPv6 address has
 * no port form (`2001:db8::7:80` is an address). Strict text only (node:net's isIP): the lenient
 * forms ipaddr.js also reads (`127.1`, `0x7f.0.0.1`, `3232235521`) are not what proxies write.
 */
export function parseForwardedHop(text: string): Address | undefined {
  // Behind a proxy the same few hops come again and again (as in parseAddress): one Map lookup.
  const known = recentHops.get(text);
  if (known !== undefined) return known ?? undefined;
  // Longer than any address even with generous spaces: not cached, not parsed.
  if (text.length > 2 * MAX_HOP_LENGTH) return undefined;
  const parsed = parseHopOnce(text);
  if (recentHops.size >= RECENT_ADDRESSES_MAX) recentHops.clear();
  recentHops.set(text, parsed ?? null);
  return parsed;
}

/** Recently read hops, as written (spaces and port included): bounded, emptied when full. */
const recentHops = new Map<string, Address | null>();

function parseHopOnce(text: string): Address | undefined {
  const hop = text.trim();
  if (hop.length === 0 || hop.length > MAX_HOP_LENGTH) return undefined;
  if (hop.charCodeAt(0) === 0x5b /* [ */) {
    const close = hop.indexOf(']');
    if (close === -1 || (close + 1 < hop.length && !isPortSuffix(hop, close + 1))) return undefined;
    const inner = hop.slice(1, close);
    return isIP(inner) === 6 ? parseAddress(inner) : undefined;
  }
  const colon = hop.indexOf(':');
  if (colon !== -1 && colon === hop.lastIndexOf(':')) {
    // One colon: an IPv4 address and its port (an IPv6 address has at least two colons).
    const host = hop.slice(0, colon);
    return isIPv4(host) && isPortSuffix(hop, colon) ? parseAddress(host) : undefined;
  }
  return isIP(hop) === 0 ? undefined : parseAddress(hop);
}

/**
 * The client's address. Without trusted proxies it is the socket peer. With them, X-Forwarded-For
 * is read right to left, skipping addresses of trusted proxies, and the first untrusted one is the
 * client; a peer that is not itself a trusted proxy cannot make the gateway believe any header.
 * A hop that is not an address (garbage, an obfuscated name, more than MAX_HOPS of them) ends the
 * reading: the client is then the last trusted hop (or the peer), an address the proxy vouches
 * for, so the failure limiter counts it there rather than in a bucket the header made up.
 */
export function resolveClientAddress(
  peer: string,
  forwardedFor: string | string[] | undefined,
  trustedProxies: readonly Cidr[],
): string {
  if (trustedProxies.length === 0) {
    // The common case, on every request: the peer as Node reports it, IPv4-mapped form unwrapped.
    return peer.startsWith('::ffff:') && peer.includes('.') ? peer.slice(7) : peer;
  }
  const peerAddress = parseAddress(peer);
  if (!peerAddress) return peer;
  if (forwardedFor === undefined || !inRanges(peerAddress, trustedProxies)) {
    return peerAddress.toString();
  }
  // Node joins repeated X-Forwarded-For headers with ", "; an array comes from callers only.
  const header = Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor;
  let client = peerAddress;
  // From the right, hop by hop, without splitting the whole (attacker-sized) header.
  let end = header.length;
  for (let n = 0; n < MAX_HOPS && end >= 0; n++) {
    const comma = header.lastIndexOf(',', end - 1);
    const hop = parseForwardedHop(header.slice(comma + 1, end));
    if (!hop) break;
    client = hop;
    if (!inRanges(hop, trustedProxies)) break;
    if (comma === -1) break;
    end = comma;
  }
  return client.toString();
}
