/**
 * Redis for the tests: the shared server at KEYGATE_TEST_REDIS_URL (redis://127.0.0.1:6379 by
 * default), used under a random key prefix per test file that `cleanup` deletes; and private
 * `redis-server` processes on free ports for the tests that stop and restart Redis.
 *
 * When the shared server cannot be reached, `redisOrSkip` skips the test with the reason, except
 * under CI (the CI environment variable set), where it fails.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect } from 'node:net';
import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { freePort } from './ports.ts';

import { eventually } from './wait.ts';

// The one polling helper (test/support/wait.ts), here too for the Redis tests.
export { eventually };

export const REDIS_URL = process.env.KEYGATE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A prefix no other test run uses: `kgtest:<random>:`. */
export function testPrefix(): string {
  return `kgtest:${randomBytes(6).toString('hex')}:`;
}

/** A client of `url` that fails fast instead of retrying, for the test's own checks. */
export function testClient(url = REDIS_URL): Redis {
  const client = new Redis(url, {
    maxRetriesPerRequest: 1,
    connectTimeout: 1000,
    retryStrategy: (times) => (times > 3 ? null : 100),
  });
  client.on('error', () => {});
  return client;
}

let reachable: Promise<string | undefined> | undefined;

/** Why the shared Redis cannot be used (undefined when it can); asked once per process. */
export function redisUnavailable(): Promise<string | undefined> {
  reachable ??= (async () => {
    const client = new Redis(REDIS_URL, {
      lazyConnect: true,
      retryStrategy: () => null,
      connectTimeout: 1000,
    });
    let cause: unknown;
    client.on('error', (error) => {
      cause ??= error;
    });
    try {
      await client.connect();
      await client.ping();
      return undefined;
    } catch (error) {
      const reason = cause ?? error;
      return `Redis not reachable at ${REDIS_URL} (${reason instanceof Error ? reason.message : String(reason)})`;
    } finally {
      client.disconnect();
    }
  })();
  return reachable;
}

/** True when the test may use the shared Redis; otherwise skips it (fails it under CI). */
export async function redisOrSkip(t: TestContext): Promise<boolean> {
  const reason = await redisUnavailable();
  if (reason === undefined) return true;
  if (process.env.CI) throw new Error(`${reason}; CI is set, so the Redis tests must run`);
  t.skip(reason);
  return false;
}

/** Why a private `redis-server` cannot be run here (undefined: it can). */
export function redisServerMissing(): string | undefined {
  const probe = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  return probe.error === undefined && probe.status === 0
    ? undefined
    : 'redis-server is not installed, so Redis cannot be stopped and restarted here';
}

/** True when `redis-server` can be started here; otherwise skips the test (fails it under CI). */
export function redisServerOrSkip(t: TestContext): boolean {
  const reason = redisServerMissing();
  if (reason === undefined) return true;
  if (process.env.CI) throw new Error(`${reason}; CI is set, so the Redis tests must run`);
  t.skip(reason);
  return false;
}

/** Deletes every key under `prefix`. */
export async function cleanup(client: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await client.del(...keys);
  } while (cursor !== '0');
}

/** Whether a Redis answers PING on the port (a bare socket: no client left to close). */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let reply = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString();
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

/** A private `redis-server` (no persistence) on a free port, to stop and restart. */
export class RedisProcess {
  readonly port: number;
  readonly url: string;
  #child: ChildProcess | null = null;

  constructor(port: number) {
    this.port = port;
    this.url = `redis://127.0.0.1:${port}`;
  }

  static async start(): Promise<RedisProcess> {
    const server = new RedisProcess(await freePort());
    await server.start();
    return server;
  }

  /** Starts the server (again) and waits until it answers. */
  async start(): Promise<void> {
    if (this.#child !== null) return;
    const child = spawn('redis-server', ['--port', String(this.port), '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    this.#child = child;
    child.once('exit', () => {
      if (this.#child === child) this.#child = null;
    });
    await eventually(
      () => {
        if (this.#child !== child) throw new Error('redis-server exited at start');
        return answers(this.port);
      },
      `redis-server to answer on port ${this.port}`,
      10_000,
      50,
    );
  }

  /** Freezes the server (SIGSTOP): connections stay open and commands go unanswered. */
  pause(): void {
    this.#child?.kill('SIGSTOP');
  }

  /** Lets a frozen server go on (SIGCONT). */
  resume(): void {
    this.#child?.kill('SIGCONT');
  }

  /** Kills the server (SIGKILL: no goodbye to the clients) and waits for it to be gone. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (child === null) return;
    this.#child = null;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    }
  }
}
