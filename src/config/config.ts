/**
 * Configuration: defaults < YAML file (--config / KEYGATE_CONFIG) < environment < flags.
 * Parsed and validated once at start; every bad value is reported with where it came from.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { parseCidrs } from '../auth/ip.ts';
import { assertValidPrefix, DEFAULT_KEY_PREFIX } from '../keys/format.ts';
import { modelIdProblem } from '../providers/models.ts';
import { assertValidPricing, DEFAULT_CURRENCY } from '../usage/pricing.ts';

export const DEFAULT_MODEL_ALIASES: Readonly<Record<string, string>> = {
  'mistral-tiny': 'ministral-8b-latest',
  'mistral-small': 'mistral-small-latest',
  'mistral-medium': 'mistral-medium-latest',
};

const port = z.coerce
  .number({ error: 'must be a number' })
  .int('must be a whole number')
  .min(0, 'must be between 1 and 65535 (or 0 for any free port)')
  .max(65_535, 'must be between 1 and 65535 (or 0 for any free port)');
const positiveInt = z.coerce.number().int().positive();
const price = z
  .number({ error: 'must be a price (a number) per million tokens' })
  .min(0, 'cannot be negative')
  .max(1_000_000, 'at most 1000000 per million tokens');

export const configSchema = z
  .object({
    server: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: port.default(8443),
        http: z.boolean().default(false),
        tlsCert: z.string().optional(),
        tlsKey: z.string().optional(),
        /** Largest request body accepted, in bytes. @default 10 MiB */
        bodyLimitBytes: positiveInt.default(10 * 1024 * 1024),
        /** How long a graceful stop waits for in-flight requests (streams included). @default 30 s */
        shutdownTimeoutMs: positiveInt.default(30_000),
        /**
         * Connections, per process (each worker of `--workers` has its own; docs/deploy.md). A
         * TLS handshake not finished in this time closes the connection. @default 10 s
         */
        handshakeTimeoutMs: positiveInt.default(10_000),
        /**
         * Time for a complete request head: from the accept (plain HTTP) or the end of the TLS
         * handshake for a connection's first request, from its first byte for later ones. A
         * connection that sends nothing is closed after it. @default 30 s
         */
        headersTimeoutMs: positiveInt.default(30_000),
        /** Time for a whole request, head and body, to arrive; 0: no bound. @default 300 s */
        requestTimeoutMs: z.coerce.number().int().min(0).default(300_000),
        /**
         * How long a kept-alive connection may wait for its next request. Longer than the 60 s of
         * most load balancers, so that they close first (else they may send on a closing one). @default 65 s
         */
        keepAliveTimeoutMs: positiveInt.default(65_000),
        /**
         * Open client connections per process beyond which new ones are closed at once. Lowered,
         * with a warning, to what the process's open-file limit (ulimit -n) leaves. @default 4096
         */
        maxConnections: positiveInt.default(4096),
        /**
         * Open connections per client address (the TCP peer; an IPv6 /64) per process beyond which
         * its new ones are closed at once. Peers in trustedProxies are exempt. @default 256
         */
        maxConnectionsPerAddress: positiveInt.default(256),
        /**
         * Proxies (CIDR ranges) whose X-Forwarded-For is believed, read right to left up to the first
         * address that is not one of them. Empty: the client is the socket peer, whatever headers say.
         */
        trustedProxies: z.array(z.string()).default([]),
        /**
         * Processes serving the port (node:cluster). Their limits, budgets and concurrency stay
         * exact: kept by the primary process (over IPC), or in Redis when REDIS_URL is set. @default 1
         */
        workers: z.coerce
          .number({ error: 'must be a number of processes' })
          .int('must be a whole number')
          .min(1, 'must be at least 1')
          .max(64, 'at most 64')
          .default(1),
      })
      .strict()
      .prefault({}),
    dataDir: z.string().min(1).default('.keygate'),
    /** PostgreSQL instead of the embedded SQLite file: for several instances sharing one truth. */
    database: z
      .object({
        url: z
          .string()
          .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// (or postgresql://) URL')
          .optional(),
        /** Connections per instance. @default 10 */
        poolSize: positiveInt.max(1000).default(10),
      })
      .strict()
      .prefault({}),
    /** Redis for state shared by instances: limits, budgets, concurrency leases, key-change broadcast. */
    redis: z
      .object({
        url: z
          .string()
          .regex(/^rediss?:\/\//, 'must be a redis:// (or rediss://) URL')
          .optional(),
        /** Prefix of every Redis key Keygate writes (several deployments can share one Redis). */
        prefix: z
          .string()
          .regex(/^[A-Za-z0-9:_.-]{1,64}$/, 'letters, digits and : _ . - (1 to 64)')
          .default('keygate:'),
        /** A Redis command slower than this counts as a failure. @default 200 ms */
        commandTimeoutMs: positiveInt.default(200),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        /**
         * When Redis cannot be reached: `local` keeps serving with per-instance limits (each
         * instance allows 1/expectedInstances of every limit), `deny` refuses limited requests (503).
         */
        onRedisFailure: z.enum(['local', 'deny']).default('local'),
        /** How many instances share the limits, for the `local` fallback. @default 1 */
        expectedInstances: positiveInt.max(1000).default(1),
      })
      .strict()
      .prefault({}),
    keys: z
      .object({
        prefix: z.string().default(DEFAULT_KEY_PREFIX),
        /** Days before a key's expiry at which a reminder is logged and recorded in the audit log. */
        expiryReminderDays: z.array(z.number().int().positive().max(3650)).default([14, 3]),
      })
      .strict()
      .prefault({}),
    upstream: z
      .object({
        url: z
          .url({ protocol: /^https?$/, error: 'must be an http(s) URL' })
          .default('https://api.mistral.ai'),
        key: z.string().min(1).optional(),
        /** Time allowed for the upstream to send response headers. @default 120 s */
        timeoutMs: positiveInt.default(120_000),
        /** Longest silence allowed inside a response body (streams included). @default 120 s */
        bodyTimeoutMs: positiveInt.default(120_000),
        /**
         * Connections to the provider, per process: requests in flight to it at once. A stream
         * holds one for its whole length (minutes), so this is sized for concurrent streams, not
         * for throughput. @default 1024
         */
        connections: positiveInt.max(65_536).default(1024),
        /**
         * How long a request waits for a free provider connection when all are busy; then 503
         * with Retry-After. @default 5 s
         */
        queueTimeoutMs: positiveInt.default(5000),
        /**
         * The most of `connections` one key may hold or wait for at once, in percent (a key's
         * own concurrency limit replaces it); beyond it, 429. @default 50
         */
        keySharePercent: positiveInt.max(100, 'at most 100 (percent of upstream.connections)').default(50),
        /** Extra CA certificate (PEM file) for an upstream with a private CA. */
        caFile: z.string().optional(),
      })
      .strict()
      .prefault({}),
    /**
     * Model aliases applied to incoming requests: legacy name → current id. Both sides are model
     * ids of the request path's grammar (src/providers/models.ts).
     */
    modelAliases: z
      .record(z.string(), z.string())
      .superRefine((aliases, ctx) => {
        for (const [from, to] of Object.entries(aliases)) {
          for (const id of [from, to]) {
            const problem = modelIdProblem(id);
            if (problem !== undefined)
              ctx.addIssue({
                code: 'custom',
                path: [from],
                message: `${JSON.stringify(id.slice(0, 60))}: ${problem}`,
              });
          }
        }
      })
      .default({ ...DEFAULT_MODEL_ALIASES }),
    auth: z
      .object({
        /** Failed authentications per client IP per minute before that IP gets 429. @default 30 */
        failuresPerMinute: positiveInt.default(30),
        /** How long a verified key stays cached (changes invalidate it sooner). @default 60 s */
        cacheTtlMs: positiveInt.default(60_000),
        cacheMaxEntries: positiveInt.default(100_000),
        /** How often the store's change feed is read, bounding revoke latency. @default 250 ms */
        changePollMs: positiveInt.default(250),
        /**
         * While the store cannot be read, how long past its cache TTL a verified key keeps working
         * (0: not at all). Revocations broadcast over Redis still apply at once. @default 5 min
         */
        staleIfErrorMs: z.coerce.number().int().min(0).default(300_000),
        /** How often expired keys are recorded in the audit log (they are refused at once regardless). @default 60 s */
        expirySweepMs: positiveInt.default(60_000),
        /** How long a console session lasts after sign-in. @default 12 h */
        sessionTtlMs: positiveInt.default(12 * 3_600_000),
        /** Failed console sign-ins per account in 15 minutes before the account is locked for 15 minutes. @default 5 */
        loginFailuresPerAccount: positiveInt.default(5),
        /** Failed console sign-ins per client address in 15 minutes before the address is locked. @default 20 */
        loginFailuresPerIp: positiveInt.default(20),
      })
      .strict()
      .prefault({}),
    usage: z
      .object({
        flushIntervalMs: positiveInt.default(500),
        batchSize: positiveInt.default(500),
        /** Records kept in memory while the store cannot be written; beyond this they are dropped and counted. */
        maxQueued: positiveInt.default(100_000),
        /** Days raw usage records are kept (the hourly rollups are kept regardless); 0: forever. @default 90 */
        retentionDays: z.coerce
          .number({ error: 'must be a number of days' })
          .int('must be a whole number of days')
          .min(0, 'must be 0 (keep forever) or a number of days')
          .max(36_500, 'at most 36500 (100 years); 0 keeps raw records forever')
          .default(90),
      })
      .strict()
      .prefault({}),
    /** Prices for the cost of usage reports: per million tokens, by model id or pattern (first match wins). */
    pricing: z
      .object({
        currency: z
          .string()
          .regex(/^[A-Z]{3}$/, 'must be a three-letter currency code in capitals, such as EUR or USD')
          .default(DEFAULT_CURRENCY),
        models: z
          .record(
            z.string(),
            z
              .object({
                prompt: price.describe('per million prompt tokens'),
                completion: price.describe('per million completion tokens'),
              })
              .strict(),
          )
          .default({}),
      })
      .strict()
      .prefault({}),
    /** Alert channels (webhook, Slack, email): where the gateway may send, and how much. */
    alerts: z
      .object({
        /**
         * CIDR ranges alert channels may reach besides the public internet: loopback, private,
         * link-local… addresses are refused unless listed, and plain http:// goes only to these.
         * Every tenant admin can then send to whatever listens there: list the narrowest ranges.
         */
        allowedDestinations: z.array(z.string()).default([]),
        /** Alert channels per workspace. @default 20 */
        maxChannelsPerWorkspace: positiveInt.max(1000).default(20),
        /** Test sends (`POST /admin/v1/alerts/test`) per workspace per minute, per gateway process. @default 5 */
        testSendsPerMinute: positiveInt.max(1000).default(5),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;
type ConfigInput = z.input<typeof configSchema>;

/** Values from command-line flags; undefined means "not given". */
export interface ConfigFlags {
  config?: string | undefined;
  dataDir?: string | undefined;
  host?: string | undefined;
  port?: string | undefined;
  http?: boolean | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  workers?: string | undefined;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${path} (${(error as NodeJS.ErrnoException).code})`);
  }
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (error) {
    throw new ConfigError(
      `config file ${path} is not valid YAML: ${(error as Error).message.split('\n')[0]}`,
    );
  }
  if (data === null || data === undefined) return {};
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(`config file ${path} must contain a mapping at the top level`);
  }
  return data as Record<string, unknown>;
}

function section(input: Record<string, unknown>, name: string): Record<string, unknown> {
  const current = input[name];
  const value = typeof current === 'object' && current !== null && !Array.isArray(current) ? current : {};
  const copy = { ...(value as Record<string, unknown>) };
  input[name] = copy;
  return copy;
}

/** Where a setting can come from besides the file, for error messages. */
const SOURCES: Record<string, string> = {
  'server.port': '--port / KEYGATE_PORT',
  'server.host': '--host / KEYGATE_HOST',
  'server.workers': '--workers / KEYGATE_WORKERS',
  dataDir: '--data-dir / KEYGATE_DATA_DIR',
  'upstream.url': 'KEYGATE_UPSTREAM_URL',
  'upstream.key': 'KEYGATE_UPSTREAM_KEY / MISTRAL_API_KEY',
  'database.url': 'DATABASE_URL',
  'redis.url': 'REDIS_URL',
};

function readPath(input: unknown, path: readonly PropertyKey[]): unknown {
  let value = input;
  for (const part of path) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<PropertyKey, unknown>)[part];
  }
  return value;
}

function set(target: Record<string, unknown>, key: string, value: unknown): void {
  if (value !== undefined && value !== '') target[key] = value;
}

/** Builds the configuration from flags, environment and the optional YAML file. Throws ConfigError. */
export function loadConfig(
  flags: ConfigFlags,
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): Config {
  const configPath = flags.config ?? env.KEYGATE_CONFIG;
  const input: Record<string, unknown> = configPath ? readConfigFile(resolve(cwd, configPath)) : {};
  const server = section(input, 'server');
  const upstream = section(input, 'upstream');
  const database = section(input, 'database');
  const redis = section(input, 'redis');

  set(server, 'host', env.KEYGATE_HOST);
  set(server, 'port', env.KEYGATE_PORT);
  set(server, 'workers', env.KEYGATE_WORKERS);
  set(input, 'dataDir', env.KEYGATE_DATA_DIR);
  set(upstream, 'url', env.KEYGATE_UPSTREAM_URL);
  set(upstream, 'key', env.KEYGATE_UPSTREAM_KEY || env.MISTRAL_API_KEY);
  set(database, 'url', env.DATABASE_URL);
  set(redis, 'url', env.REDIS_URL);

  set(server, 'host', flags.host);
  set(server, 'port', flags.port);
  set(server, 'http', flags.http);
  set(server, 'tlsCert', flags.tlsCert);
  set(server, 'tlsKey', flags.tlsKey);
  set(server, 'workers', flags.workers);
  set(input, 'dataDir', flags.dataDir);

  const parsed = configSchema.safeParse(input as ConfigInput);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const path = issue.path.join('.');
      const source = SOURCES[path] ? ` (${SOURCES[path]})` : '';
      const given = readPath(input, issue.path);
      const got = given === undefined || typeof given === 'object' ? '' : ` — got ${JSON.stringify(given)}`;
      return `  ${path || '(top level)'}${source}: ${issue.message}${got}`;
    });
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const config = parsed.data;
  try {
    assertValidPrefix(config.keys.prefix);
  } catch (error) {
    throw new ConfigError(`invalid configuration:\n  keys.prefix: ${(error as Error).message}`);
  }
  try {
    assertValidPricing(config.pricing);
  } catch (error) {
    throw new ConfigError(`invalid configuration:\n  pricing.models: ${(error as Error).message}`);
  }
  try {
    config.server.trustedProxies = parseCidrs(config.server.trustedProxies).map((c) => c.text);
  } catch (error) {
    throw new ConfigError(`invalid configuration:\n  server.trustedProxies: ${(error as Error).message}`);
  }
  try {
    config.alerts.allowedDestinations = parseCidrs(config.alerts.allowedDestinations).map((c) => c.text);
  } catch (error) {
    throw new ConfigError(
      `invalid configuration:\n  alerts.allowedDestinations: ${(error as Error).message}`,
    );
  }
  if (Boolean(config.server.tlsCert) !== Boolean(config.server.tlsKey)) {
    throw new ConfigError(
      '--tls-cert and --tls-key go together: give both, or neither for a self-signed certificate',
    );
  }
  // The local fallback divides the limits among the processes sharing them: with --workers and no
  // explicit expectedInstances, those are this machine's workers.
  const limitsGiven = input.limits as Record<string, unknown> | undefined;
  if (config.server.workers > 1 && limitsGiven?.expectedInstances === undefined) {
    config.limits.expectedInstances = config.server.workers;
  }
  // Without Redis, the workers of --workers share their limits through the primary process
  // (src/limits/ipc.ts); with it, through Redis like separate instances.
  if (config.server.http && config.server.tlsCert) {
    throw new ConfigError('--http serves plain HTTP; it cannot be combined with --tls-cert/--tls-key');
  }
  // Node refuses a head allowed longer than the whole request (the head is part of it).
  const { headersTimeoutMs, requestTimeoutMs } = config.server;
  if (requestTimeoutMs > 0 && headersTimeoutMs > requestTimeoutMs) {
    throw new ConfigError(
      `invalid configuration:\n  server.headersTimeoutMs: must be at most server.requestTimeoutMs (${requestTimeoutMs}) — got ${headersTimeoutMs}`,
    );
  }
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(cwd, p));
  config.dataDir = abs(config.dataDir);
  if (config.server.tlsCert) config.server.tlsCert = abs(config.server.tlsCert);
  if (config.server.tlsKey) config.server.tlsKey = abs(config.server.tlsKey);
  if (config.upstream.caFile) config.upstream.caFile = abs(config.upstream.caFile);
  config.upstream.url = config.upstream.url.replace(/\/+$/, '');
  return config;
}
