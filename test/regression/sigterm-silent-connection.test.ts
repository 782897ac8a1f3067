/**
 * Regression (issue 12, item 4): a graceful stop (SIGTERM) never finished while a connection that
 * sent nothing, or one stalled in its TLS handshake, was open: `server.closeAllConnections()` knows
 * only the connections the HTTP layer adopted, and `server.close()` waits for every one. Now a stop
 * destroys every accepted socket once the in-flight requests are done (at the latest after
 * server.shutdownTimeoutMs), and ends within that time.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { createCliHarness, within } from '../support/cli.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { eventually } from '../support/wait.ts';

const SHUTDOWN_TIMEOUT_MS = 300;
/** Bound on every wait below: a stop that hangs fails the test instead of hanging it. */
const DEADLINE_MS = 3000;
/** The first bytes of a TLS ClientHello: a record header announcing 512 bytes, and 6 of them. */
const PARTIAL_CLIENT_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);

/** Every socket opened here, destroyed at the end whatever happened. */
const opened = new Set<Socket>();

interface Held {
  what: string;
  socket: Socket;
  closed: Promise<void>;
}

function hold(what: string, socket: Socket): Held {
  opened.add(socket);
  socket.on('error', () => {});
  socket.resume();
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { what, socket, closed };
}

/**
 * Three connections the gateway never hears a request on: one silent, one with half a ClientHello,
 * one whose TLS handshake is done (it is accepted, and so are the two before it: in order).
 */
async function openIdle(port: number, ca: string | undefined): Promise<Held[]> {
  const silent = hold('a silent TCP connection', netConnect({ host: '127.0.0.1', port }));
  await once(silent.socket, 'connect');
  const stalled = hold('a connection mid-handshake', netConnect({ host: '127.0.0.1', port }));
  await once(stalled.socket, 'connect');
  stalled.socket.write(PARTIAL_CLIENT_HELLO);
  const idle = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost' });
  const secure = hold('a TLS connection without a request', idle);
  await within(once(idle, 'secureConnect'), DEADLINE_MS, 'the TLS handshake');
  return [silent, stalled, secure];
}

async function assertAllClosed(held: readonly Held[]): Promise<void> {
  for (const h of held) await within(h.closed, DEADLINE_MS, `${h.what} to be closed`);
}

after(() => {
  for (const socket of opened) socket.destroy();
});

describe('gateway.close() (what SIGTERM runs)', () => {
  const gateways: TestGateway[] = [];
  async function start(): Promise<TestGateway> {
    const t = await startTestGateway({
      configure: (config) => {
        config.server.shutdownTimeoutMs = SHUTDOWN_TIMEOUT_MS;
      },
    });
    gateways.push(t);
    return t;
  }
  after(async () => {
    for (const socket of opened) socket.destroy();
    for (const t of gateways) await t.close();
  });

  test('ends at once with silent and mid-handshake connections open', async () => {
    const t = await start();
    assert.equal((await t.call('/healthz')).status, 200);
    const held = await openIdle(t.gateway.port, t.ca);
    const started = Date.now();
    await within(t.gateway.close(), DEADLINE_MS, 'gateway.close()');
    const elapsed = Date.now() - started;
    // The stop itself (usage flush, store close) takes a few ms on top of the connections' part.
    assert.ok(elapsed < SHUTDOWN_TIMEOUT_MS + 500, `stopped in ${elapsed} ms`);
    await assertAllClosed(held);
  });

  test('with a request in flight too, ends after shutdownTimeoutMs', async () => {
    const t = await start();
    const { key } = await t.createKey();
    const held = await openIdle(t.gateway.port, t.ca);
    // stub-slow: the provider answers after 5 s, far beyond the shutdown timeout.
    const inflight = t.call('/v1/chat/completions', {
      method: 'POST',
      headers: bearer(key),
      body: chatBody({ model: 'stub-slow' }),
    });
    inflight.catch(() => {});
    const before = t.stub.requests.length;
    await eventually(
      () => t.stub.requests.length > before,
      'the request to reach the provider',
      DEADLINE_MS,
      5,
    );
    const started = Date.now();
    await within(t.gateway.close(), DEADLINE_MS, 'gateway.close()');
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= SHUTDOWN_TIMEOUT_MS - 20, `the request was given its time (${elapsed} ms)`);
    assert.ok(elapsed < SHUTDOWN_TIMEOUT_MS + 500, `stopped in ${elapsed} ms`);
    await assertAllClosed(held);
  });
});

describe('keygate start, then SIGTERM', () => {
  const harness = createCliHarness({ tempPrefix: 'keygate-sigterm-silent-' });
  before(() => harness.start());
  after(async () => {
    for (const socket of opened) socket.destroy();
    await harness.cleanup();
  });

  test('the process exits within shutdownTimeoutMs with silent and mid-handshake connections open', async () => {
    const configDir = harness.newDataDir();
    const configFile = join(configDir, 'keygate.yaml');
    writeFileSync(configFile, `server:\n  shutdownTimeoutMs: ${SHUTDOWN_TIMEOUT_MS}\n`);
    const gw = await harness.startGateway(harness.newDataDir(), harness.upstreamEnv(), [
      '--config',
      configFile,
    ]);
    const held = await openIdle(gw.port, gw.ca);
    const started = Date.now();
    gw.proc.child.kill('SIGTERM');
    const exit = await within(gw.proc.exited, DEADLINE_MS, 'keygate to exit after SIGTERM').catch(
      (error: Error) => {
        throw new Error(`${error.message}\nstderr: ${gw.proc.stderr}`);
      },
    );
    const elapsed = Date.now() - started;
    assert.deepEqual(exit, { code: 0, signal: null }, gw.proc.stderr);
    assert.match(gw.proc.stderr, /Keygate stopped\./);
    // A process exit has more to do than the in-process stop (flushing logs, exiting Node).
    assert.ok(elapsed < SHUTDOWN_TIMEOUT_MS + 1500, `exited ${elapsed} ms after SIGTERM`);
    await assertAllClosed(held);
  });
});
