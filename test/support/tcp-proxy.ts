/**
 * A TCP proxy (node:net) in front of a server, that a test can cut and restore: what a network
 * partition between a gateway and its database looks like to the gateway.
 *
 * - `cut()` stops accepting (new connections are refused: nothing listens on the port) and
 *   destroys every open connection, both sides.
 * - `restore()` listens on the same port again.
 * - `stall()` keeps connections open but stops forwarding (bytes are held, not lost), so that a
 *   query is caught in flight; `cut()` or `unstall()` ends it.
 */
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';

export class TcpProxy {
  readonly host = '127.0.0.1';
  readonly targetHost: string;
  readonly targetPort: number;
  #port = 0;
  #server: Server | null = null;
  readonly #pairs = new Set<{ client: Socket; upstream: Socket }>();
  #stalled = false;
  /** Connections accepted since the start (for the test's own checks). */
  accepted = 0;

  private constructor(targetHost: string, targetPort: number) {
    this.targetHost = targetHost;
    this.targetPort = targetPort;
  }

  /** A proxy on a free loopback port forwarding to `targetHost:targetPort`. */
  static async start(targetHost: string, targetPort: number): Promise<TcpProxy> {
    const proxy = new TcpProxy(targetHost, targetPort);
    await proxy.#listen(0);
    return proxy;
  }

  get port(): number {
    return this.#port;
  }

  /** Open connections (client side). */
  get connections(): number {
    return this.#pairs.size;
  }

  get listening(): boolean {
    return this.#server !== null;
  }

  async #listen(port: number): Promise<void> {
    const server = createServer((client) => this.#accept(client));
    server.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error) => reject(error);
      server.once('error', onError);
      server.listen(port, this.host, () => {
        server.off('error', onError);
        resolve();
      });
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('the proxy has no port');
    this.#port = address.port;
    this.#server = server;
  }

  #accept(client: Socket): void {
    this.accepted++;
    const upstream = connect(this.targetPort, this.targetHost);
    const pair = { client, upstream };
    this.#pairs.add(pair);
    const drop = () => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.on('data', (chunk: Buffer) => {
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on('drain', () => {
      if (!this.#stalled) client.resume();
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!client.write(chunk)) upstream.pause();
    });
    client.on('drain', () => {
      if (!this.#stalled) upstream.resume();
    });
    if (this.#stalled) {
      client.pause();
      upstream.pause();
    }
  }

  /** Holds every byte in both directions (connections stay open); new connections are held too. */
  stall(): void {
    this.#stalled = true;
    for (const { client, upstream } of this.#pairs) {
      client.pause();
      upstream.pause();
    }
  }

  /** Lets the held bytes through again. */
  unstall(): void {
    this.#stalled = false;
    for (const { client, upstream } of this.#pairs) {
      client.resume();
      upstream.resume();
    }
  }

  /** Stops accepting and destroys every connection: the target is unreachable until `restore()`. */
  async cut(): Promise<void> {
    const server = this.#server;
    this.#server = null;
    this.#stalled = false;
    for (const { client, upstream } of [...this.#pairs]) {
      client.destroy();
      upstream.destroy();
    }
    this.#pairs.clear();
    if (server) {
      const closed = once(server, 'close');
      server.close();
      await closed;
    }
  }

  /** Listens on the same port again. */
  async restore(): Promise<void> {
    if (this.#server) return;
    await this.#listen(this.#port);
  }

  /** Cuts for good. */
  close(): Promise<void> {
    return this.cut();
  }
}
