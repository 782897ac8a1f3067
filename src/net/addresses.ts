/**
 * What kind of place an IP address is: the public internet, or somewhere an outbound connection
 * made on a tenant's behalf must not go unasked (this host, a private network, a cloud metadata
 * service…). Parsing is node:net's `isIP` (strict text: no `127.1`, no `0x7f.0.0.1`) and
 * ipaddr.js's range classification, never a pattern over the text: `127.attacker.example` is a
 * host name, not a loopback address.
 */
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/**
 * `public`, or the ipaddr.js range that makes an address non-public: `loopback`, `private`,
 * `linkLocal` (169.254/16, where cloud metadata services answer; fe80::/10), `carrierGradeNat`
 * (100.64/10), `uniqueLocal` (fc00::/7), `unspecified` (0.0.0.0, ::), `multicast`, `broadcast`,
 * `reserved`, `6to4`, `teredo`… An IPv6 address outside 2000::/3 (the global unicast block) that
 * ipaddr.js calls `unicast` (`::7f00:1`, the deprecated IPv4-compatible form, say) is `reserved`.
 */
export type AddressClass = string;

/** The parsed address of strict IP text (an IPv6 zone id ignored), or undefined for anything else. */
export function parseIp(text: string): Address | undefined {
  const zone = text.indexOf('%');
  const bare = zone === -1 ? text : text.slice(0, zone);
  if (isIP(bare) === 0) return undefined;
  try {
    return ipaddr.parse(bare);
  } catch {
    return undefined;
  }
}

/** The IPv4 address an IPv6 one stands for (IPv4-mapped, or NAT64's 64:ff9b::/96), if it does. */
function embeddedIpv4(address: ipaddr.IPv6): ipaddr.IPv4 | undefined {
  if (address.isIPv4MappedAddress()) return address.toIPv4Address();
  // The well-known NAT64 prefix carries the IPv4 address in its last 32 bits (RFC 6052); what a
  // NAT64 gateway reaches through it is that IPv4 address. The local-use prefix 64:ff9b:1::/48
  // may embed it anywhere, so it stays non-public (ipaddr.js calls it rfc6052 as well).
  if (address.match(NAT64_WELL_KNOWN, 96)) {
    const [, , , , , , hi = 0, lo = 0] = address.parts;
    return new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
  }
  return undefined;
}

const NAT64_WELL_KNOWN = ipaddr.IPv6.parse('64:ff9b::');
const GLOBAL_UNICAST = ipaddr.IPv6.parse('2000::');

/** The IPv4 address of an IPv4-mapped or NAT64 IPv6 address, else the address itself. */
export function unwrapIp(address: Address): Address {
  return address.kind() === 'ipv6' ? (embeddedIpv4(address as ipaddr.IPv6) ?? address) : address;
}

/** How an address is classified: `public` or the range that makes it not (see AddressClass). */
export function classifyIp(address: Address): AddressClass {
  const plain = unwrapIp(address);
  const range = plain.range();
  if (plain.kind() === 'ipv4') return range === 'unicast' ? 'public' : range;
  if (range !== 'unicast') return range;
  return plain.match(GLOBAL_UNICAST, 3) ? 'public' : 'reserved';
}

/**
 * True for an address of this host's loopback interface: 127.0.0.0/8, ::1, and the IPv4-mapped
 * form of the former (`::ffff:127.0.0.1`). Names are not addresses: false for every one.
 */
export function isLoopbackAddress(text: string): boolean {
  const address = parseIp(text);
  return address !== undefined && unwrapIp(address).range() === 'loopback';
}

/**
 * True for a loopback address, or for the name `localhost` (RFC 6761: it names this host's
 * loopback interface; a trailing dot and any letter case are the same name). Only for rules
 * where trusting that name is safe, or where the connection is then made to a loopback address
 * only (the CLI's plain-http rule checks what `localhost` resolves to when it connects).
 */
export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  const name = bare.toLowerCase();
  return name === 'localhost' || name === 'localhost.' || isLoopbackAddress(bare);
}
