/**
 * A scaled-out Keygate in one test process: N gateway instances (`startGateway`, through
 * `startTestGateway`) sharing one truth, as instances behind a load balancer do:
 *
 * - one fresh PostgreSQL database per cluster (`keygate_dist_<random>`, dropped by `close`), which
 *   the instances migrate themselves when they start;
 * - one Redis key prefix per cluster (`keygate-test:<random>:`, its keys deleted by `close`), on the
 *   shared Redis or on a private `redis-server` (`redisUrl`);
 * - one `KEYGATE_SECRET`, so every instance (and the test's own store) derives the same pepper;
 * - one upstream stub (`test/support/upstream-stub.ts`), which records what it served.
 *
 * Every instance shares this process's event loop, unlike real instances: `redis.commandTimeoutMs`
 * is raised to 1 s so that a loop stalled by 50 simultaneous TLS handshakes is not taken for a
 * slow Redis (the fallback tests kill Redis, which is detected from the connection, not the timer).
 *
 * A suite needing PostgreSQL and Redis is declared with `describeDistributed`: skipped with the
 * reason when either cannot be reached, failed instead under CI (the CI environment variable set).
 */
import { randomBytes } from 'node:crypto';
import { after, before, describe } from 'node:test';
import pg from 'pg';
import type { Config } from '../../src/config/config.ts';
import { loadSecrets } from '../../src/config/secrets.ts';
import { createKey, type KeyRestrictions } from '../../src/keys/service.ts';
import { openStore } from '../../src/store/index.ts';
import type { Store } from '../../src/store/types.ts';
import { startTestGateway, type TestGateway } from './gateway.ts';
import { cleanup as deleteRedisKeys, REDIS_URL, redisUnavailable, testClient } from './redis.ts';
import { adminQuery, databaseUrl, dropTestDatabase, postgresUnavailable } from './stores.ts';
import { startUpstreamStub, type UpstreamStub } from './upstream-stub.ts';

// The one polling helper and bounded wait (test/support/wait.ts), here too for the cluster tests.
import { eventually, within } from './wait.ts';

export { eventually, within };

export type Instance = TestGateway;

export interface InstanceOptions {
  /** Plain HTTP (`--http`) instead of HTTPS with a generated certificate. */
  http?: boolean;
  /** Settings of this instance, applied after the cluster's own. */
  configure?: (config: Config) => void;
  /** Redis of this instance (default: the cluster's). */
  redisUrl?: string;
  /** PostgreSQL URL of this instance (default: the cluster's database, directly). */
  databaseUrl?: string;
}

export interface ClusterOptions extends InstanceOptions {
  /** Instances started at once by `startCluster` (default 2); more with `add`. */
  instances?: number;
}

export interface HttpReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: () => unknown;
}

/** The error shape of every error Keygate produces (Mistral's fields plus `error`). */
export interface ErrorBody {
  object: string;
  message: string;
  type: string;
  param: string | null;
  code: string;
  error: { message: string; type: string; param: string | null; code: string };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Why PostgreSQL or Redis cannot be used here (undefined when both can). */
export async function clusterUnavailable(): Promise<string | undefined> {
  const reasons = (await Promise.all([postgresUnavailable(), redisUnavailable()])).filter(
    (r): r is string => r !== undefined,
  );
  return reasons.length > 0 ? reasons.join('; ') : undefined;
}

/**
 * A suite that needs PostgreSQL and Redis (and whatever `needs` says, e.g. nginx): skipped with the
 * reason when they are missing, failed instead under CI. Await it at the top level of the file.
 */
export async function describeDistributed(
  title: string,
  body: () => void,
  needs: () => string | undefined | Promise<string | undefined> = () => undefined,
): Promise<void> {
  const reasons = [await clusterUnavailable(), await needs()].filter((r): r is string => r !== undefined);
  const reason = reasons.length > 0 ? reasons.join('; ') : undefined;
  const skip = reason !== undefined && !process.env.CI ? reason : false;
  if (skip) process.stdout.write(`# skipping "${title}": ${reason}\n`);
  describe(title, { skip }, () => {
    if (reason !== undefined) {
      before(() => {
        throw new Error(`${reason} (CI is set: the distributed tests must run)`);
      });
    }
    body();
  });
}

export class Cluster {
  readonly database: string;
  /** The database's URL, straight to PostgreSQL. */
  readonly databaseUrl: string;
  readonly prefix: string;
  readonly secret: string;
  readonly stub: UpstreamStub;
  /** Every instance started and not stopped, in start order. */
  readonly instances: Instance[] = [];
  readonly #defaults: InstanceOptions;
  readonly #redisUrls = new Set<string>();
  readonly #pepper: Buffer;
  #pool: pg.Pool | undefined;
  #store: Promise<Store> | undefined;
  #adminKey: Promise<{ id: string; key: string }> | undefined;
  #closed = false;

  private constructor(database: string, stub: UpstreamStub, defaults: InstanceOptions) {
    this.database = database;
    this.databaseUrl = databaseUrl(database);
    this.prefix = `keygate-test:${randomBytes(6).toString('hex')}:`;
    this.secret = randomBytes(32).toString('base64url');
    this.#pepper = loadSecrets('/nonexistent', this.secret).pepper;
    this.stub = stub;
    this.#defaults = defaults;
  }

  /** A fresh database and stub, then `options.instances` instances started at once. */
  static async start(options: ClusterOptions = {}): Promise<Cluster> {
    const database = `keygate_dist_${randomBytes(6).toString('hex')}`;
    await adminQuery(`CREATE DATABASE ${database}`);
    let stub: UpstreamStub;
    try {
      stub = await startUpstreamStub();
    } catch (error) {
      await dropTestDatabase(database);
      throw error;
    }
    const { instances = 2, ...defaults } = options;
    const cluster = new Cluster(database, stub, defaults);
    try {
      await cluster.addMany(instances);
    } catch (error) {
      await cluster.close().catch(() => {});
      throw error;
    }
    return cluster;
  }

  /** Starts another instance on the shared database, Redis prefix, secret and stub. */
  async add(options: InstanceOptions = {}): Promise<Instance> {
    if (this.#closed) throw new Error('the cluster is closed');
    const redisUrl = options.redisUrl ?? this.#defaults.redisUrl ?? REDIS_URL;
    this.#redisUrls.add(redisUrl);
    const instance = await startTestGateway({
      stub: this.stub,
      http: options.http ?? this.#defaults.http ?? false,
      env: { KEYGATE_SECRET: this.secret },
      configure: (c) => {
        c.database.url = options.databaseUrl ?? this.#defaults.databaseUrl ?? this.databaseUrl;
        c.database.poolSize = 4;
        c.redis.url = redisUrl;
        c.redis.prefix = this.prefix;
        c.redis.commandTimeoutMs = 1000;
        c.auth.failuresPerMinute = 100_000;
        c.upstream.connections = 256;
        c.server.shutdownTimeoutMs = 2000;
        this.#defaults.configure?.(c);
        options.configure?.(c);
      },
    });
    this.instances.push(instance);
    return instance;
  }

  /** Starts `count` instances at the same time. */
  async addMany(count: number, options: InstanceOptions = {}): Promise<Instance[]> {
    const started = await Promise.allSettled(Array.from({ length: count }, () => this.add(options)));
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    return started.map((s) => (s as PromiseFulfilledResult<Instance>).value);
  }

  /** Stops one instance (gracefully, bounded). */
  async stop(instance: Instance): Promise<void> {
    const at = this.instances.indexOf(instance);
    if (at >= 0) this.instances.splice(at, 1);
    await within(instance.close(), 15_000, 'an instance to stop');
  }

  /** The test's own store on the database, straight to PostgreSQL (as the CLI opens it). */
  store(): Promise<Store> {
    this.#store ??= openStore({ dataDir: '/nonexistent', databaseUrl: this.databaseUrl, poolSize: 2 });
    return this.#store;
  }

  /** Creates a key in the shared store as `keygate keys create` does. */
  async createKey(
    name: string,
    restrictions: KeyRestrictions & { workspaceId?: string } = {},
  ): Promise<{ id: string; key: string }> {
    const created = await createKey(
      { store: await this.store(), pepper: this.#pepper, prefix: 'kg' },
      { name, ...restrictions },
    );
    return { id: created.record.id, key: created.key };
  }

  /** The operator's key (`admin` in ws_default), made once through the store. */
  adminKey(): Promise<{ id: string; key: string }> {
    this.#adminKey ??= this.createKey('operator', { scopes: ['admin'] });
    return this.#adminKey;
  }

  /** One statement straight on the database. */
  async query<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> {
    if (!this.#pool) {
      this.#pool = new pg.Pool({ connectionString: this.databaseUrl, max: 2 });
      this.#pool.on('error', () => {});
    }
    return (await this.#pool.query<R>(sql, params)).rows;
  }

  /** Stops every instance and the stub, drops the database, deletes the prefix's Redis keys. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const errors: unknown[] = [];
    const attempt = async (what: string, work: () => Promise<unknown>) => {
      try {
        await within(work(), 15_000, what);
      } catch (error) {
        errors.push(error);
      }
    };
    await Promise.all(this.instances.splice(0).map((i) => attempt('an instance to stop', () => i.close())));
    await attempt('the stub to stop', () => this.stub.close());
    if (this.#store) await attempt('the test store to close', async () => (await this.#store)?.close());
    if (this.#pool) await attempt('the test pool to end', () => this.#pool?.end() ?? Promise.resolve());
    await attempt('the database to be dropped', () => dropTestDatabase(this.database));
    for (const url of this.#redisUrls) {
      // A private redis-server may be gone already: its keys went with it.
      const client = testClient(url);
      try {
        await within(deleteRedisKeys(client, this.prefix), 5000, 'the Redis keys to be deleted');
      } catch (error) {
        if (url === REDIS_URL) errors.push(error);
      } finally {
        client.disconnect();
      }
    }
    if (errors.length > 0) throw errors[0];
  }
}

/** A cluster for the current suite: started in `before`, closed in `after` (also on failure). */
export function useCluster(options: ClusterOptions = {}): () => Cluster {
  let cluster: Cluster | undefined;
  before(async () => {
    cluster = await Cluster.start(options);
  });
  after(async () => {
    await cluster?.close();
  });
  return () => {
    if (!cluster) throw new Error('the cluster did not start');
    return cluster;
  };
}

// ---- requests ----------------------------------------------------------------------------------

export function bearer(key: string): Record<string, string> {
  return { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
}

/** The stub's reply to `content`: "Echo: " + the words (so its usage is predictable). */
export const CHAT = {
  content: 'one two three four five',
  /** words of the prompt, words of "Echo: one two three four five" */
  usage: { prompt: 5, completion: 6, total: 11 },
};

/** A chat completion with `key` (the reply echoes CHAT.content unless `extra` says otherwise). */
export function chat(
  instance: Instance,
  key: string,
  extra: Record<string, unknown> = {},
): Promise<HttpReply> {
  return instance.call('/v1/chat/completions', {
    method: 'POST',
    headers: bearer(key),
    body: JSON.stringify({
      model: 'mistral-small-latest',
      messages: [{ role: 'user', content: CHAT.content }],
      max_tokens: 20,
      ...extra,
    }),
  });
}

/** A management API call with `key`. */
export function api(
  instance: Instance,
  key: string,
  method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH',
  path: string,
  body?: unknown,
): Promise<HttpReply> {
  return instance.call(`/admin/v1${path}`, {
    method,
    headers: bearer(key),
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

export interface Readiness {
  status: number;
  body: { status: string; checks: { store: string; upstream: string; limits: string; draining: boolean } };
}

export async function readyz(instance: Instance): Promise<Readiness> {
  const res = await instance.call('/readyz');
  return { status: res.status, body: res.json() as Readiness['body'] };
}

/** The parsed error body, checked to have Keygate's error shape. */
export function errorOf(reply: HttpReply): ErrorBody {
  const body = reply.json() as ErrorBody;
  if (
    body.object !== 'error' ||
    typeof body.message !== 'string' ||
    typeof body.code !== 'string' ||
    typeof body.error !== 'object' ||
    body.error.code !== body.code ||
    body.error.message !== body.message
  ) {
    throw new Error(`not Keygate's error shape (status ${reply.status}): ${reply.text.slice(0, 500)}`);
  }
  return body;
}

/** Counts of each status, e.g. { 200: 10, 429: 40 }. */
export function statuses(replies: readonly { status: number }[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const r of replies) out[r.status] = (out[r.status] ?? 0) + 1;
  return out;
}

/** Sum of what the stub served (with a usage report) since `from` (an index into `stub.served`). */
export function servedSince(
  stub: UpstreamStub,
  from = 0,
): { requests: number; promptTokens: number; completionTokens: number; totalTokens: number } {
  const out = { requests: 0, promptTokens: 0, completionTokens: 0, totalTokens: 0 };
  for (const s of stub.served.slice(from)) {
    out.requests++;
    out.promptTokens += s.promptTokens;
    out.completionTokens += s.completionTokens;
    out.totalTokens += s.totalTokens;
  }
  return out;
}
