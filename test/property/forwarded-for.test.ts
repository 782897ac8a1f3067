/**
 * The X-Forwarded-For part of the request path's property suite (issue 12): for arbitrary chains
 * (garbage, ports, spaces, many hops, mapped and lenient address forms, very long headers) the
 * client address the gateway resolves is always a real address, the peer's or one of the hops',
 * in normal form: never attacker-chosen text, never an `address:port` string (a limiter bucket per
 * port); the hops left of the one the trusted proxy wrote never matter; and a peer outside the
 * trusted proxies is never overridden by the header.
 */
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import { bucketOf } from '../../src/auth/failures.ts';
import { parseAddress, parseCidrs, resolveClientAddress } from '../../src/auth/ip.ts';

const TRUSTED = parseCidrs(['10.0.0.0/8', 'fd00::/8']);
const RUNS = { numRuns: 2000 };

/** The normal form of an address, as the gateway reports it. */
function normal(text: string): string {
  const parsed = parseAddress(text);
  assert.ok(parsed, `${text} is an address`);
  return parsed.toString();
}

const port = fc.integer({ min: 0, max: 65_535 });
/** Public-ish IPv4 addresses (outside the trusted 10/8). */
const clientV4 = fc.ipV4().filter((a) => !a.startsWith('10.'));
const clientV6 = fc.ipV6().filter((a) => !normal(a).startsWith('fd'));
const trustedV4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255)).map(([a, b, c]) => `10.${a}.${b}.${c}`);
const trustedV6 = fc
  .tuple(fc.nat(0xff), fc.nat(0xffff))
  .map(([a, b]) => `fd${a.toString(16).padStart(2, '0')}::${b.toString(16)}`);
const pad = fc.constantFrom('', ' ', '  ', '\t');

/** An address as a proxy may write it: bare, with a port, bracketed IPv6 with or without a port, mapped. */
function written(address: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc.tuple(address, port, fc.nat(3), pad, pad).map(([a, p, form, l, r]) => {
    const v6 = a.includes(':');
    const text =
      form === 0
        ? a
        : form === 1
          ? v6
            ? `[${a}]:${p}`
            : `${a}:${p}`
          : form === 2
            ? v6
              ? `[${a}]`
              : `::ffff:${a}`
            : v6
              ? a
              : `[::ffff:${a}]:${p}`;
    return `${l}${text}${r}`;
  });
}

/** Anything an attacker may put in a header: text, lenient address forms, broken ports, long runs. */
const garbage = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: fc.constantFrom('1', '.', ':', '[', ']', 'f', ' ', '%'), maxLength: 60 }),
  fc.ipV4Extended(),
  fc.tuple(clientV4, fc.integer({ min: 65_536, max: 10_000_000 })).map(([a, p]) => `${a}:${p}`),
  fc.tuple(clientV6, port).map(([a, p]) => `${a}]:${p}`),
  fc.constantFrom('unknown', '_hidden', '', ' ', 'localhost', '[]', '[1.2.3.4]:80', '1.2.3.4:', ':80'),
  fc.string({ minLength: 65, maxLength: 300 }),
);

const anyHop = fc.oneof(
  written(clientV4),
  written(clientV6),
  written(trustedV4),
  written(trustedV6),
  garbage,
);
const chain = fc.array(anyHop, { maxLength: 40 }).map((hops) => hops.join(','));

test('the resolved client is always an address in normal form: the peer or one of the hops', () => {
  fc.assert(
    fc.property(fc.oneof(trustedV4, trustedV6), chain, (peer, header) => {
      const client = resolveClientAddress(peer, header, TRUSTED);
      assert.notEqual(
        isIP(client),
        0,
        `not an address: ${JSON.stringify(client)} from ${JSON.stringify(header)}`,
      );
      assert.equal(client, normal(client), 'normal form (no port, no brackets, no spaces)');
      const candidates = new Set([normal(peer)]);
      for (const hop of header.split(',')) {
        const h = hop.trim();
        const bare = h.startsWith('[')
          ? h.slice(1, h.indexOf(']'))
          : h.split(':').length === 2
            ? h.split(':')[0]
            : h;
        const parsed = isIP(bare ?? '') ? parseAddress(bare ?? '') : undefined;
        if (parsed) candidates.add(parsed.toString());
      }
      assert.ok(
        candidates.has(client),
        `${client} is neither the peer nor a hop of ${JSON.stringify(header)}`,
      );
    }),
    RUNS,
  );
});

test('what the client sent left of the hop the trusted proxy wrote never matters', () => {
  fc.assert(
    fc.property(
      chain,
      written(fc.oneof(clientV4, clientV6)),
      fc.array(written(fc.oneof(trustedV4, trustedV6)), { maxLength: 5 }),
      fc.oneof(trustedV4, trustedV6),
      (spoofed, real, proxies, peer) => {
        const header = [spoofed, real, ...proxies].join(',');
        const expected = normal(
          real.trim().startsWith('[')
            ? real.trim().slice(1, real.trim().indexOf(']'))
            : real.trim().split(':').length === 2
              ? (real.trim().split(':')[0] ?? '')
              : real.trim(),
        );
        assert.equal(resolveClientAddress(peer, header, TRUSTED), expected);
      },
    ),
    RUNS,
  );
});

test('one client on many ports is one client (one failure-limiter bucket)', () => {
  fc.assert(
    fc.property(
      fc.oneof(clientV4, clientV6),
      fc.array(port, { minLength: 2, maxLength: 10 }),
      (address, ports) => {
        const hop = (p: number) => (address.includes(':') ? `[${address}]:${p}` : `${address}:${p}`);
        const buckets = new Set(
          ports.map((p) => bucketOf(resolveClientAddress('10.0.0.1', hop(p), TRUSTED))),
        );
        assert.deepEqual([...buckets], [bucketOf(normal(address))]);
      },
    ),
    RUNS,
  );
});

test('a peer outside the trusted proxies is never overridden by the header', () => {
  // Peers as Node reports them: normal form, or IPv4-mapped on a dual-stack socket.
  const peers = fc.oneof(
    clientV4,
    clientV6.map(normal),
    clientV4.map((a) => `::ffff:${a}`),
  );
  fc.assert(
    fc.property(peers, chain, (peer, header) => {
      assert.equal(resolveClientAddress(peer, header, TRUSTED), normal(peer));
      // Without trusted proxies at all, neither.
      assert.equal(resolveClientAddress(peer, header, []), normal(peer));
    }),
    RUNS,
  );
});

test('a huge header costs what a short one does: it is read from the right, a few hops at most', () => {
  // 200 KB: a chain of trusted hops behind garbage, and one of garbage only.
  const long = `${'x,'.repeat(50_000)}${'10.0.0.9,'.repeat(10_000)}10.0.0.8`;
  const junk = ','.repeat(200_000);
  assert.equal(resolveClientAddress('10.0.0.1', long, TRUSTED), '10.0.0.9');
  assert.equal(resolveClientAddress('10.0.0.1', junk, TRUSTED), '10.0.0.1');
  const started = performance.now();
  for (let i = 0; i < 2000; i++) {
    resolveClientAddress('10.0.0.1', long, TRUSTED);
    resolveClientAddress('10.0.0.1', junk, TRUSTED);
  }
  // Splitting the header on every request would take seconds here; reading a few hops, microseconds.
  const ms = performance.now() - started;
  assert.ok(ms < 500, `4000 resolutions of 200 KB headers took ${Math.round(ms)} ms`);
});
