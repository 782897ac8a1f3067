/**
 * Regression (issue 12, item 18): over TLS 1.2 the gateway accepted Node's default cipher list,
 * CBC suites with HMAC-SHA1 and HMAC-SHA256/384 included (the Lucky13 family of padding oracles):
 * a client offering only those got one. Now TLS 1.2 offers only ECDHE with AES-GCM or
 * ChaCha20-Poly1305: a client offering only CBC suites fails the handshake, one offering an AEAD
 * suite gets it (also when it lists CBC first: the server's order wins), and TLS 1.3 is unchanged.
 * With the generated EC certificate, and with an operator's RSA one.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, type TLSSocket } from 'node:tls';
import { generate } from 'selfsigned';
import { startTestGateway, type TestGateway, tempDir } from '../support/gateway.ts';

const HANDSHAKE_DEADLINE_MS = 3000;

interface Outcome {
  ok: boolean;
  protocol: string | null;
  cipher: string | undefined;
  error: string | undefined;
}

/** Connects with the given client options; the handshake's outcome, bounded in time. */
function handshake(
  t: TestGateway,
  options: { ciphers?: string; maxVersion?: 'TLSv1.2' | 'TLSv1.3' },
): Promise<Outcome> {
  const url = new URL(t.url);
  return new Promise((resolve) => {
    let socket: TLSSocket | undefined;
    const settle = (outcome: Outcome) => {
      clearTimeout(timer);
      socket?.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(
      () => settle({ ok: false, protocol: null, cipher: undefined, error: 'no handshake outcome in time' }),
      HANDSHAKE_DEADLINE_MS,
    );
    socket = connect({
      host: '127.0.0.1',
      port: Number(url.port),
      servername: 'localhost',
      ca: t.ca,
      ...options,
    });
    socket.once('secureConnect', () => {
      const s = socket as TLSSocket;
      settle({ ok: true, protocol: s.getProtocol(), cipher: s.getCipher().name, error: undefined });
    });
    socket.once('error', (error: NodeJS.ErrnoException) =>
      settle({ ok: false, protocol: null, cipher: undefined, error: `${error.code}: ${error.message}` }),
    );
  });
}

/** A handshake failure the server decided: it found no suite it accepts among the client's. */
const NO_SHARED_SUITE = /HANDSHAKE_FAILURE|NO_SHARED_CIPHER|handshake failure/i;

interface Case {
  name: string;
  start: () => Promise<TestGateway>;
  /** TLS 1.2 suites that must be refused, one at a time. */
  cbc: string[];
  /** TLS 1.2 AEAD suites that must be accepted. */
  aead: string[];
  /** What a client preferring CBC but also offering GCM must get. */
  preferred: string;
}

const cases: Case[] = [
  {
    name: 'generated EC P-256 certificate',
    start: () => startTestGateway(),
    cbc: [
      'ECDHE-ECDSA-AES128-SHA',
      'ECDHE-ECDSA-AES256-SHA',
      'ECDHE-ECDSA-AES128-SHA256',
      'ECDHE-ECDSA-AES256-SHA384',
    ],
    aead: ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305'],
    preferred: 'ECDHE-ECDSA-AES128-GCM-SHA256',
  },
  {
    name: "an operator's RSA certificate",
    start: async () => {
      const dir = tempDir('keygate-tls-rsa-');
      const pems = await generate([{ name: 'commonName', value: 'localhost' }], {
        keyType: 'rsa',
        keySize: 2048,
        algorithm: 'sha256',
        extensions: [
          { name: 'basicConstraints', cA: false },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
          { name: 'extKeyUsage', serverAuth: true },
          {
            name: 'subjectAltName',
            altNames: [
              { type: 2, value: 'localhost' },
              { type: 7, ip: '127.0.0.1' },
            ],
          },
        ],
      });
      const cert = join(dir, 'cert.pem');
      const key = join(dir, 'key.pem');
      writeFileSync(cert, pems.cert);
      writeFileSync(key, pems.private, { mode: 0o600 });
      return startTestGateway({
        configure: (config) => {
          config.server.tlsCert = cert;
          config.server.tlsKey = key;
        },
      });
    },
    cbc: [
      'AES128-SHA',
      'AES256-SHA',
      'AES128-SHA256',
      'ECDHE-RSA-AES128-SHA',
      'ECDHE-RSA-AES256-SHA',
      'ECDHE-RSA-AES128-SHA256',
      'ECDHE-RSA-AES256-SHA384',
    ],
    aead: ['ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-RSA-CHACHA20-POLY1305'],
    preferred: 'ECDHE-RSA-AES128-GCM-SHA256',
  },
];

for (const c of cases) {
  describe(c.name, () => {
    let t: TestGateway;
    before(async () => {
      t = await c.start();
    });
    after(async () => {
      await t.close();
    });

    test('a TLS 1.2 client offering only a CBC suite fails the handshake', async () => {
      for (const suite of c.cbc) {
        const outcome = await handshake(t, { ciphers: suite, maxVersion: 'TLSv1.2' });
        assert.equal(outcome.ok, false, `${suite} was negotiated (${outcome.protocol} ${outcome.cipher})`);
        assert.match(outcome.error ?? '', NO_SHARED_SUITE, `${suite}: ${outcome.error}`);
      }
      // All of them at once: still no suite in common.
      const all = await handshake(t, { ciphers: c.cbc.join(':'), maxVersion: 'TLSv1.2' });
      assert.equal(all.ok, false, `${all.cipher} was negotiated`);
    });

    test('a TLS 1.2 client offering an ECDHE AEAD suite gets it', async () => {
      for (const suite of c.aead) {
        const outcome = await handshake(t, { ciphers: suite, maxVersion: 'TLSv1.2' });
        assert.equal(outcome.ok, true, `${suite}: ${outcome.error}`);
        assert.equal(outcome.protocol, 'TLSv1.2');
        assert.equal(outcome.cipher, suite);
      }
    });

    test("the server's order wins over a client that lists CBC first", async () => {
      const outcome = await handshake(t, {
        ciphers: [...c.cbc, ...c.aead.slice().reverse()].join(':'),
        maxVersion: 'TLSv1.2',
      });
      assert.equal(outcome.ok, true, outcome.error);
      assert.equal(outcome.cipher, c.preferred);
    });

    test("TLS 1.2 with Node's default client list, and TLS 1.3, still work", async () => {
      const tls12 = await handshake(t, { maxVersion: 'TLSv1.2' });
      assert.equal(tls12.ok, true, tls12.error);
      assert.equal(tls12.protocol, 'TLSv1.2');
      assert.match(tls12.cipher ?? '', /-GCM-|CHACHA20/);
      const tls13 = await handshake(t, {});
      assert.equal(tls13.ok, true, tls13.error);
      assert.equal(tls13.protocol, 'TLSv1.3');
      assert.match(
        tls13.cipher ?? '',
        /^TLS_(AES_128_GCM_SHA256|AES_256_GCM_SHA384|CHACHA20_POLY1305_SHA256)$/,
      );
      assert.equal((await t.call('/healthz')).status, 200);
    });
  });
}
