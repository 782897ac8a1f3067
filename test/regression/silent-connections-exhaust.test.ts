/**
 * Regression (issue 12, item 4): connections that never sent a byte, or stalled in the TLS
 * handshake, stayed open for ever and without limit (20,600 of them exhausted 20,000 file
 * descriptors), since the HTTP layer's timeouts only apply to connections it has adopted. Now the
 * TLS handshake (server.handshakeTimeoutMs) and the request head (server.headersTimeoutMs) are
 * bounded, and the connections of a process (server.maxConnections) and of one client address
 * (server.maxConnectionsPerAddress, trusted proxies exempt) are capped: an excess connection is
 * closed at once, and real clients are served again once below the cap.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

/** How long any connection below may take to be closed before the test fails (not a sleep). */
const CLOSE_DEADLINE_MS = 3000;
const HANDSHAKE_TIMEOUT_MS = 300;
const HEADERS_TIMEOUT_MS = 300;

/** The first bytes of a TLS ClientHello: a record header announcing 512 bytes, and 6 of them. */
const PARTIAL_CLIENT_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);

interface Tracked<S extends Socket> {
  socket: S;
  /** Resolves with the ms from the connect call to the socket's 'close'. */
  closed: Promise<number>;
  isClosed(): boolean;
}

/** Every socket opened here: each suite destroys them all before it stops its gateway. */
const opened = new Set<Socket>();

function track<S extends Socket>(socket: S): Tracked<S> {
  opened.add(socket);
  const started = Date.now();
  let done = false;
  socket.on('error', () => {}); // resets and TLS failures are expected; 'close' is what counts
  socket.resume(); // read what the gateway sends (a 408), so that its end of the connection is seen
  // Not events.once: it rejects on 'error', which comes before the 'close' of a reset connection.
  const closed = new Promise<number>((resolve) => {
    socket.once('close', () => {
      done = true;
      resolve(Date.now() - started);
    });
  });
  return { socket, closed, isClosed: () => done };
}

/** Waits for a socket's 'close', or fails after `ms`: a connection the gateway never closes. */
async function closedWithin(conn: Tracked<Socket>, ms: number, what: string): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still open after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([conn.closed, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** A raw TCP connection, once connected, from `localAddress` if given. */
async function tcp(t: TestGateway, localAddress?: string): Promise<Tracked<Socket>> {
  const url = new URL(t.url);
  const socket = netConnect({
    host: '127.0.0.1',
    port: Number(url.port),
    ...(localAddress ? { localAddress } : {}),
  });
  const conn = track(socket);
  await Promise.race([once(socket, 'connect'), conn.closed]);
  return conn;
}

/** A TLS connection; `secure` says whether the gateway completed the handshake (it accepted it). */
async function tls(t: TestGateway, localAddress?: string): Promise<Tracked<TLSSocket> & { secure: boolean }> {
  const url = new URL(t.url);
  const socket = tlsConnect({
    host: '127.0.0.1',
    port: Number(url.port),
    servername: 'localhost',
    ca: t.ca,
    ...(localAddress ? { localAddress } : {}),
  });
  const conn = track(socket);
  const secure = await Promise.race([
    once(socket, 'secureConnect').then(
      () => true,
      () => false,
    ),
    conn.closed.then(() => false),
  ]);
  return { ...conn, secure };
}

/** A real request; retried (the gateway sees a client's close a moment after it) up to a deadline. */
async function healthzWithin(t: TestGateway, ms: number): Promise<number> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      return (await t.call('/healthz')).status;
    } catch (error) {
      last = error;
      // The refused connection is gone; the next attempt opens a new one.
    }
  }
  throw new Error(`no answer from /healthz within ${ms} ms: ${(last as Error | undefined)?.message}`);
}

describe('timeouts close silent and stalled connections', () => {
  let https: TestGateway;
  let http: TestGateway;
  before(async () => {
    const configure = (config: TestGateway['config']) => {
      Object.assign(config.server, {
        handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
        headersTimeoutMs: HEADERS_TIMEOUT_MS,
      });
    };
    https = await startTestGateway({ configure });
    http = await startTestGateway({ http: true, configure });
  });
  after(async () => {
    for (const socket of opened) socket.destroy();
    await https.close();
    await http.close();
  });

  test('HTTPS: a TCP connection that sends nothing is closed by the handshake timeout', async () => {
    const conn = await tcp(https);
    assert.equal(conn.isClosed(), false, 'the connection was accepted');
    const elapsed = await closedWithin(conn, CLOSE_DEADLINE_MS, 'a silent connection to the HTTPS port');
    assert.ok(elapsed >= HANDSHAKE_TIMEOUT_MS - 50, `closed by the timeout, not at once (${elapsed} ms)`);
  });

  test('HTTPS: a connection stalled in its ClientHello is closed by the handshake timeout', async () => {
    const conn = await tcp(https);
    conn.socket.write(PARTIAL_CLIENT_HELLO);
    const elapsed = await closedWithin(conn, CLOSE_DEADLINE_MS, 'a connection with half a ClientHello');
    assert.ok(elapsed >= HANDSHAKE_TIMEOUT_MS - 50, `closed by the timeout, not at once (${elapsed} ms)`);
  });

  test('HTTPS: a connection that finished its handshake but sends no request is closed', async () => {
    const conn = await tls(https);
    assert.equal(conn.secure, true, 'the handshake succeeded');
    await closedWithin(conn, CLOSE_DEADLINE_MS, 'a TLS connection that sends no request');
  });

  test('HTTP: a TCP connection that sends nothing is closed by the head timeout', async () => {
    const conn = await tcp(http);
    const elapsed = await closedWithin(conn, CLOSE_DEADLINE_MS, 'a silent connection to the HTTP port');
    assert.ok(elapsed >= HEADERS_TIMEOUT_MS - 50, `closed by the timeout, not at once (${elapsed} ms)`);
  });

  test('a real request still succeeds on both', async () => {
    assert.equal((await https.call('/healthz')).status, 200);
    assert.equal((await http.call('/healthz')).status, 200);
  });
});

describe('server.maxConnections refuses the excess at once', () => {
  const MAX = 3;
  let t: TestGateway;
  const held: Tracked<Socket>[] = [];
  before(async () => {
    t = await startTestGateway({
      configure: (config) => {
        Object.assign(config.server, { maxConnections: MAX });
      },
    });
  });
  after(async () => {
    for (const socket of opened) socket.destroy();
    await t.close();
  });

  test('connections beyond the cap are closed at once; a client is served again below it', async () => {
    // One silent TCP connection, then TLS ones: a finished handshake proves the gateway accepted it
    // (and, connections being accepted in order, the silent one before it).
    held.push(await tcp(t));
    for (let i = 1; i < MAX; i++) {
      const conn = await tls(t);
      held.push(conn);
      assert.equal(conn.secure, true, `connection ${i + 1} of ${MAX} is accepted`);
    }
    for (const kind of ['silent TCP', 'TLS'] as const) {
      const excess = kind === 'TLS' ? await tls(t) : await tcp(t);
      const elapsed = await closedWithin(excess, CLOSE_DEADLINE_MS, `a ${kind} connection beyond the cap`);
      assert.ok(elapsed < 1000, `closed at once (${elapsed} ms)`);
      if ('secure' in excess) assert.equal(excess.secure, false, 'no handshake beyond the cap');
    }
    await assert.rejects(t.call('/healthz'), 'a real client at the cap is refused too');
    assert.deepEqual(
      held.map((c) => c.isClosed()),
      held.map(() => false),
      'the connections under the cap stay open',
    );
    held.shift()?.socket.destroy();
    assert.equal(await healthzWithin(t, CLOSE_DEADLINE_MS), 200);
  });
});

describe('server.maxConnectionsPerAddress refuses an address beyond its limit', () => {
  const PER_ADDRESS = 2;
  const PROXY = '127.0.0.3';
  let t: TestGateway;
  const held: Tracked<Socket>[] = [];
  before(async () => {
    t = await startTestGateway({
      configure: (config) => {
        Object.assign(config.server, { maxConnectionsPerAddress: PER_ADDRESS, trustedProxies: [PROXY] });
      },
    });
  });
  after(async () => {
    for (const socket of opened) socket.destroy();
    await t.close();
  });

  test('the excess of one address is closed at once; other addresses and proxies are not limited', async () => {
    held.push(await tcp(t, '127.0.0.1'));
    const second = await tls(t, '127.0.0.1');
    held.push(second);
    assert.equal(second.secure, true, 'the second connection of 127.0.0.1 is accepted');

    const excess = await tcp(t, '127.0.0.1');
    const elapsed = await closedWithin(
      excess,
      CLOSE_DEADLINE_MS,
      'a connection beyond the per-address limit',
    );
    assert.ok(elapsed < 1000, `closed at once (${elapsed} ms)`);
    await assert.rejects(t.call('/healthz'), 'a real client of the same address is refused too');

    const other = await tls(t, '127.0.0.2');
    held.push(other);
    assert.equal(other.secure, true, 'another address is not limited');
    for (let i = 0; i < PER_ADDRESS + 2; i++) {
      const viaProxy = await tls(t, PROXY);
      held.push(viaProxy);
      assert.equal(viaProxy.secure, true, `connection ${i + 1} from the trusted proxy is accepted`);
    }
    assert.deepEqual(
      held.map((c) => c.isClosed()),
      held.map(() => false),
      'the connections under the limit stay open',
    );

    held.shift()?.socket.destroy();
    assert.equal(await healthzWithin(t, CLOSE_DEADLINE_MS), 200);
  });
});
