/**
 * Client addresses and IP allowlists: IPv4 and IPv6 CIDR ranges, with IPv4-mapped IPv6 addresses
 * (`::ffff:10.0.0.1`) treated as the IPv4 address they carry.
 */
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

/** Parses `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128). Throws with a clear message. */
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
 * The client's address. Without trusted proxies it is the socket peer. With them, X-Forwarded-For
 * is read right to left, skipping addresses of trusted proxies, and the first untrusted one is the
 * client; a peer that is not itself a trusted proxy cannot make the gateway believe any header.
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
  const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor).split(',');
  let client = peerAddress;
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = parseAddress(hops[i] ?? '');
    // Garbage where an address should be: the client is unknown, which no allowlist matches.
    if (!hop) return (hops[i] ?? '').trim().slice(0, 64) || 'unknown';
    client = hop;
    if (!inRanges(hop, trustedProxies)) break;
  }
  return client.toString();
}
