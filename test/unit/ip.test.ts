import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  inRanges,
  normaliseAddress,
  parseAddress,
  parseCidr,
  parseCidrs,
  resolveClientAddress,
} from '../../src/auth/ip.ts';
import { compileModelPattern, modelAllowed } from '../../src/auth/policy.ts';

function allowed(address: string, ranges: string[]): boolean {
  const parsed = parseAddress(address);
  return parsed !== undefined && inRanges(parsed, parseCidrs(ranges));
}

test('IPv4 and IPv6 ranges', () => {
  assert.ok(allowed('203.0.113.7', ['203.0.113.0/24']));
  assert.ok(!allowed('198.51.100.1', ['203.0.113.0/24']));
  assert.ok(allowed('2001:db8::1', ['2001:db8::/32']));
  assert.ok(!allowed('2001:db9::1', ['2001:db8::/32']));
  assert.ok(allowed('10.1.2.3', ['10.0.0.0/8', '2001:db8::/32']));
  assert.ok(allowed('192.0.2.1', ['192.0.2.1']), 'a bare address is a /32');
  assert.ok(!allowed('192.0.2.2', ['192.0.2.1']));
  assert.ok(allowed('0.0.0.0', ['0.0.0.0/0']) && allowed('255.1.2.3', ['0.0.0.0/0']));
});

test('IPv4-mapped IPv6 addresses are the IPv4 address they carry', () => {
  assert.equal(normaliseAddress('::ffff:203.0.113.7'), '203.0.113.7');
  assert.ok(allowed('::ffff:203.0.113.7', ['203.0.113.0/24']));
  assert.ok(allowed('203.0.113.7', ['::ffff:203.0.113.0/120']), 'a mapped range is an IPv4 range');
  assert.equal(parseCidr('::ffff:10.0.0.0/104').text, '10.0.0.0/8');
  assert.ok(!allowed('::ffff:198.51.100.1', ['203.0.113.0/24']));
});

test('ranges are normalised; one written with host bits is refused, naming the network and the address', () => {
  assert.equal(parseCidr('2001:DB8:0::/32').text, '2001:db8::/32');
  assert.equal(parseCidr(' 127.0.0.1 ').text, '127.0.0.1/32');
  assert.throws(
    () => parseCidr('10.1.2.3/8'),
    /"10\.1\.2\.3\/8" has host bits set: write the network 10\.0\.0\.0\/8, or 10\.1\.2\.3\/32/,
  );
  assert.throws(() => parseCidr('2001:DB8::5/32'), /2001:db8::\/32, or 2001:db8::5\/128/);
});

test('malformed ranges are refused with a message naming them', () => {
  for (const bad of [
    '10.0.0.0/33',
    '2001:db8::/129',
    'example.com',
    '10.0.0.0/',
    '10.0.0.0/-1',
    '300.1.1.1',
    '',
    '::ffff:10.0.0.0/90',
  ]) {
    assert.throws(
      () => parseCidr(bad),
      (error: Error) => error.message.includes(`"${bad}"`),
      bad,
    );
  }
});

test('X-Forwarded-For is believed only from trusted proxies, right to left', () => {
  const proxies = parseCidrs(['10.0.0.0/8']);
  // No trusted proxies: the header changes nothing.
  assert.equal(resolveClientAddress('198.51.100.9', '203.0.113.7', []), '198.51.100.9');
  assert.equal(
    resolveClientAddress('::ffff:203.0.113.7', undefined, []),
    '203.0.113.7',
    'mapped peer unwrapped',
  );
  assert.equal(resolveClientAddress('2001:db8::1', '203.0.113.7', []), '2001:db8::1');
  // An untrusted peer cannot spoof.
  assert.equal(resolveClientAddress('198.51.100.9', '203.0.113.7', proxies), '198.51.100.9');
  // Through one trusted proxy.
  assert.equal(resolveClientAddress('10.0.0.5', '203.0.113.7', proxies), '203.0.113.7');
  // A spoofed left-most entry is ignored: the first untrusted hop from the right is the client.
  assert.equal(resolveClientAddress('10.0.0.5', '1.2.3.4, 203.0.113.7, 10.0.0.6', proxies), '203.0.113.7');
  // Mapped peer address.
  assert.equal(resolveClientAddress('::ffff:10.0.0.5', '203.0.113.7', proxies), '203.0.113.7');
  // Several headers.
  assert.equal(resolveClientAddress('10.0.0.5', ['1.1.1.1', '203.0.113.8'], proxies), '203.0.113.8');
  // Garbage in the chain: the client is the last trusted hop (here the peer), never the garbage.
  assert.equal(resolveClientAddress('10.0.0.5', 'not-an-ip', proxies), '10.0.0.5');
  assert.equal(resolveClientAddress('10.0.0.5', '203.0.113.7, junk, 10.0.0.6', proxies), '10.0.0.6');
  // Lenient forms ipaddr.js would read are not addresses in a header.
  assert.equal(resolveClientAddress('10.0.0.5', '127.1', proxies), '10.0.0.5');
  // Ports are dropped: IPv4 `a.b.c.d:port` (Azure Application Gateway) and `[v6]:port`.
  assert.equal(resolveClientAddress('10.0.0.5', '203.0.113.7:51234', proxies), '203.0.113.7');
  assert.equal(resolveClientAddress('10.0.0.5', '[2001:db8::7]:443', proxies), '2001:db8::7');
  assert.equal(resolveClientAddress('10.0.0.5', '[2001:db8::7]', proxies), '2001:db8::7');
  // A bare IPv6 address has no port form: its last group is part of it.
  assert.equal(resolveClientAddress('10.0.0.5', '2001:db8::7:443', proxies), '2001:db8::7:443');
  // Not ports: too large, empty, signed.
  for (const bad of ['203.0.113.7:65536', '203.0.113.7:', '203.0.113.7:+1', '[2001:db8::7]:x'])
    assert.equal(resolveClientAddress('10.0.0.5', bad, proxies), '10.0.0.5', bad);
  // Every hop trusted: the left-most is the client.
  assert.equal(resolveClientAddress('10.0.0.5', '10.0.0.7', proxies), '10.0.0.7');
});

test('arbitrary X-Forwarded-For values never throw', () => {
  const proxies = parseCidrs(['127.0.0.0/8', '::1/128']);
  fc.assert(
    fc.property(fc.string({ maxLength: 200 }), (header) => {
      resolveClientAddress('127.0.0.1', header, proxies);
    }),
  );
});

test('model patterns', () => {
  assert.ok(modelAllowed([], 'anything'));
  assert.ok(modelAllowed(['mistral-small-*'], 'mistral-small-latest'));
  assert.ok(!modelAllowed(['mistral-small-*'], 'mistral-large-latest'));
  assert.ok(!modelAllowed(['mistral-small-*'], 'mistral-small'), 'the dash is part of the pattern');
  assert.ok(modelAllowed(['codestral-latest', 'mistral-*-latest'], 'mistral-large-latest'));
  assert.ok(!modelAllowed(['mistral.small'], 'mistralXsmall'), 'a dot is a dot, not any character');
  assert.ok(modelAllowed(['ft:*'], 'ft:open-mistral-7b:abc'));
  assert.throws(() => compileModelPattern('bad pattern!'), /not a model id or pattern/);
  assert.throws(() => compileModelPattern('(a|b)'), /not a model id or pattern/);
});

test('failed authentications are counted per IPv4 address and per IPv6 /64', async () => {
  const { AuthFailureLimiter, bucketOf } = await import('../../src/auth/failures.ts');
  assert.equal(bucketOf('203.0.113.7'), '203.0.113.7');
  assert.equal(bucketOf('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(bucketOf('2001:db8:1:2::ffff'), '2001:db8:1:2::/64');
  assert.equal(bucketOf('2001:db8::1'), '2001:db8:0:0::/64');
  const limiter = new AuthFailureLimiter(3);
  for (let i = 1; i <= 3; i++) limiter.recordFailure(`2001:db8:1:2::${i}`, 1000);
  assert.ok(limiter.retryAfter('2001:db8:1:2::99', 1000) > 0, 'walking the /64 does not help');
  assert.equal(limiter.retryAfter('2001:db8:1:3::1', 1000), 0, 'the next /64 is someone else');
  assert.equal(limiter.retryAfter('2001:db8:1:2::1', 62_000), 0, 'the minute passes');
});
