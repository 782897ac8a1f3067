/**
 * Assembles a running gateway: data directory, secrets, store, TLS, the /v1 gateway, health
 * endpoints, and the graceful stop.
 */
import cluster from 'node:cluster';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { join, resolve as resolvePath } from 'node:path';
import type { Redis } from 'ioredis';
import { AlertEngine } from '../alerts/engine.ts';
import { createNotifier, type Notifier } from '../alerts/notifier.ts';
import { channelRules } from '../alerts/service.ts';
import { AuthFailureLimiter } from '../auth/failures.ts';
import { parseCidrs } from '../auth/ip.ts';
import type { KeyEvents } from '../auth/key-events.ts';
import { KeyVerifier } from '../auth/verifier.ts';
import type { Config } from '../config/config.ts';
import {
  assertPrivateFile,
  ensureDataDir,
  type ServerSecrets,
  secretsFor,
  secretToGenerate,
} from '../config/secrets.ts';
import { ConsoleAuth } from '../console/api.ts';
import { CONSOLE_HEADERS, createConsoleStatic } from '../console/static.ts';
import { scrubText } from '../keys/scrub.ts';
import { createMemoryLimiter, type Limiter } from '../limits/index.ts';
import { createMetricsEndpoint } from '../metrics/endpoint.ts';
import { Metrics } from '../metrics/index.ts';
import { Upstream } from '../providers/upstream.ts';
import { storeReachable } from '../store/health.ts';
import { openStore } from '../store/index.ts';
import type { Store, UsageRecord } from '../store/types.ts';
import { USAGE_FLUSH_TASK, UsageQueue } from '../usage/queue.ts';
import { replaySpilledUsage, reserveSpillSpace, spillUsage } from '../usage/spill.ts';
import { Background, describeFailure, guardUnhandledRejections } from '../util/background.ts';
import { newRequestId } from '../util/ids.ts';
import { createAdminApi } from './admin/index.ts';
import { ConnectionGuard, connectionCap, openFileLimit } from './connections.ts';
import { sendError } from './errors.ts';
import { clientAddress, Gateway } from './gateway.ts';
import { createLogger, type Logger } from './log.ts';
import { ensureSelfSigned, loadTls, TLS_SERVER_OPTIONS, type TlsMaterial } from './tls.ts';

/** How often raw usage records past retention are deleted (retention is counted in whole hours). */
const RETENTION_SWEEP_MS = 3_600_000;

export interface RunningGateway {
  url: string;
  port: number;
  tls: TlsMaterial | undefined;
  secrets: ServerSecrets;
  store: Store;
  verifier: KeyVerifier;
  upstream: Upstream;
  logger: Logger;
  /** Sends alerts to the channels of their workspace (in the background; `notify` never throws). */
  notifier: Notifier;
  alerts: AlertEngine;
  /** Supervises every timer and listener: each task's state and failures (util/background.ts). */
  background: Background;
  /** Console sessions; `setupToken()` is the first-run token until an owner exists. */
  console: ConsoleAuth;
  /** Graceful stop: refuse new connections, finish in-flight requests, flush usage, close the store. */
  close(): Promise<void>;
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  logDestination?: NodeJS.WritableStream;
  /** How often the alert rules are evaluated (tests shorten it). @default 60 s */
  alertEvaluateIntervalMs?: number;
}

export class StartError extends Error {
  override name = 'StartError';
}

/** A store error for the start-up message: the cause, and where, without a password. */
function describeStoreError(error: unknown, url: string | undefined): string {
  const message = (error as Error).message || String(error);
  if (url === undefined) return message;
  let where = 'PostgreSQL';
  try {
    const u = new URL(url);
    where = `PostgreSQL at ${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {}
  return `${where}: ${message.replaceAll(url, '[DATABASE_URL]')}`;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      const where = `${host}:${port}`;
      if (error.code === 'EADDRINUSE')
        reject(
          new StartError(
            `port ${port} on ${host} is already in use (another Keygate?); choose another with --port or KEYGATE_PORT`,
          ),
        );
      else if (error.code === 'EACCES')
        reject(
          new StartError(
            `not allowed to listen on ${where} (ports below 1024 need privileges); choose another with --port`,
          ),
        );
      else if (error.code === 'EADDRNOTAVAIL' || error.code === 'ENOTFOUND')
        reject(new StartError(`cannot listen on ${host}: no such local address (--host)`));
      else reject(new StartError(`cannot listen on ${where}: ${error.message}`));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    });
  });
}

export async function startGateway(config: Config, options: StartOptions = {}): Promise<RunningGateway> {
  const env = options.env ?? process.env;
  let dataDirWarnings: string[];
  let early: ServerSecrets | undefined;
  try {
    dataDirWarnings = ensureDataDir(config.dataDir);
    // The secret first (a missing KEYGATE_SECRET with DATABASE_URL fails before any connection),
    // unless it must be generated: that waits for the store, which must not hold anything made
    // with a lost one (secrets.ts).
    early = secretToGenerate(config, env.KEYGATE_SECRET) ? undefined : secretsFor(config, env.KEYGATE_SECRET);
  } catch (error) {
    throw new StartError((error as Error).message);
  }
  let tls: TlsMaterial | undefined;
  if (!config.server.http) {
    try {
      // A private key other users may read is refused (the operator's may be group-readable).
      const own = !(config.server.tlsCert && config.server.tlsKey);
      assertPrivateFile(
        own ? join(config.dataDir, 'tls', 'key.pem') : (config.server.tlsKey ?? ''),
        'the TLS private key',
        !own,
      );
      tls =
        config.server.tlsCert && config.server.tlsKey
          ? loadTls(config.server.tlsCert, config.server.tlsKey)
          : await ensureSelfSigned(config.dataDir, config.server.host);
    } catch (error) {
      throw new StartError((error as Error).message);
    }
  }
  const logger = createLogger({
    level: config.log.level,
    keyPrefix: config.keys.prefix,
    secrets: config.upstream.key ? [config.upstream.key] : [],
    destination: options.logDestination,
  });
  // Every timer and listener runs under this: a failure is caught, counted, logged once per change
  // of state and retried with a backoff; none ends the process (util/background.ts).
  const background = new Background({ logger });
  let store: Store;
  try {
    store = await openStore({
      dataDir: config.dataDir,
      databaseUrl: config.database.url,
      poolSize: config.database.poolSize,
      background,
    });
  } catch (error) {
    throw new StartError(`cannot open the store: ${describeStoreError(error, config.database.url)}`);
  }
  for (const warning of dataDirWarnings) logger.warn({ dataDir: config.dataDir }, warning);
  let secrets: ServerSecrets;
  try {
    secrets = early ?? secretsFor(config, env.KEYGATE_SECRET, await store.countSecretBound());
  } catch (error) {
    await store.close();
    throw new StartError((error as Error).message);
  }
  const verifier = new KeyVerifier({
    store,
    pepper: secrets.pepper,
    prefix: config.keys.prefix,
    ttlMs: config.auth.cacheTtlMs,
    maxEntries: config.auth.cacheMaxEntries,
    pollMs: config.auth.changePollMs,
    staleIfErrorMs: config.auth.staleIfErrorMs,
    background,
  });
  await verifier.start();
  const upstream = new Upstream(config.upstream);
  // What a previous stop could not write (usage/spill.ts), before any new usage; then the room
  // for this run's spill file, should its stop find the disk full.
  const replayed = await replaySpilledUsage(config.dataDir, store);
  if (replayed.files > 0)
    logger.info(
      { files: replayed.files, records: replayed.records },
      'usage records kept by the previous stop written to the store',
    );
  for (const { file, error } of replayed.failed)
    logger.error(
      { file, error: describeFailure(error) },
      'usage records kept by a previous stop could not be written yet: kept for the next start',
    );
  const reserveError = reserveSpillSpace(config.dataDir, config.usage.maxQueued);
  if (reserveError)
    logger.warn(
      { dataDir: config.dataDir, error: describeFailure(reserveError) },
      'no room set aside for usage a stop cannot write (the data directory is full?)',
    );
  const usage = new UsageQueue({ store, ...config.usage, background });
  // Shared state for several instances: limits, budgets and leases in Redis, key changes broadcast.
  let redis: Redis | undefined;
  let limiter: Limiter & { status?(): 'ok' | 'degraded' };
  /** Where the limits live when not in Redis: this process, or the primary of `--workers`. */
  let limitsHeldBy: 'memory' | 'primary' = 'memory';
  let keyEvents: KeyEvents | undefined;
  if (config.redis.url) {
    // Redis's client is loaded only by the deployments that use it.
    const { createRedisClient, createResilientLimiter } = await import('../limits/redis-mode.ts');
    const { KeyEvents } = await import('../auth/key-events.ts');
    redis = createRedisClient(config.redis.url, 'keygate');
    // Not waited for long: if Redis does not answer, the fallback applies and /readyz says so.
    const client = redis;
    await Promise.race([
      new Promise((resolve) => client.once('ready', resolve)),
      new Promise((resolve) => setTimeout(resolve, 2000).unref()),
    ]);
    limiter = createResilientLimiter({
      redis,
      store,
      prefix: config.redis.prefix,
      commandTimeoutMs: config.redis.commandTimeoutMs,
      onRedisFailure: config.limits.onRedisFailure,
      expectedInstances: config.limits.expectedInstances,
      leaseMs: config.upstream.timeoutMs + 10_000,
      onStateChange: (state, error) => {
        if (state === 'degraded')
          logger.warn(
            { err: error, fallback: config.limits.onRedisFailure },
            config.limits.onRedisFailure === 'local'
              ? 'Redis unreachable: limits fall back to per-instance limits'
              : 'Redis unreachable: limited requests are refused until it is back',
          );
        else logger.info('Redis reachable again: limits are shared again');
      },
      onError: (error) => logger.error({ err: error }, 'a Redis limiter call failed'),
      background,
    });
    keyEvents = new KeyEvents({
      redis,
      prefix: config.redis.prefix,
      // Named keys are dropped at once; an empty list (after a reconnect: messages may have been
      // missed) reads the change feed now rather than at the next poll.
      onChange: (keyIds) => {
        if (keyIds.length > 0) verifier.invalidate(keyIds);
        else void verifier.syncChanges();
      },
      background,
    });
  } else if (cluster.isWorker) {
    limitsHeldBy = 'primary';
    // `--workers N` without Redis: the primary keeps the one limiter, the workers ask it (exact).
    const { IpcLimiter } = await import('../limits/ipc.ts');
    const ipc = new IpcLimiter(
      {
        send: (message, callback) => process.send?.(message, undefined, undefined, callback) ?? false,
        on: (event, listener) => process.on(event, listener),
        off: (event, listener) => process.off(event, listener),
      },
      { background },
    );
    // A primary that is gone answers nothing (and node:cluster then ends the worker): what waits
    // for it gets 503 rather than waiting for ever.
    process.once('disconnect', () => ipc.close());
    limiter = ipc;
  } else {
    limiter = createMemoryLimiter({ store });
  }
  const failures = new AuthFailureLimiter(config.auth.failuresPerMinute);
  const trustedProxies = parseCidrs(config.server.trustedProxies);
  const channels = channelRules(config.alerts);
  const notifier = createNotifier({
    store,
    dataKey: secrets.dataKey,
    logger,
    destinations: channels.destinations,
    testSendsPerMinute: config.alerts.testSendsPerMinute,
  });
  const alerts = new AlertEngine({
    store,
    logger,
    background,
    ...(options.alertEvaluateIntervalMs !== undefined
      ? { evaluateIntervalMs: options.alertEvaluateIntervalMs }
      : {}),
  });
  alerts.onAlert((alert) => void notifier.notify(alert));
  const consoleAuth = new ConsoleAuth({
    store,
    consoleKey: secrets.consoleKey,
    dataKey: secrets.dataKey,
    logger,
    clientAddress: (req) => clientAddress(req, trustedProxies),
    sessionTtlMs: config.auth.sessionTtlMs,
    loginFailuresPerAccount: config.auth.loginFailuresPerAccount,
    loginFailuresPerIp: config.auth.loginFailuresPerIp,
    caCertPath:
      tls && (tls.generated || tls.certPath.startsWith(config.dataDir))
        ? resolvePath(tls.certPath)
        : undefined,
  });
  const consoleStatic = createConsoleStatic();
  const admin = createAdminApi({
    store,
    verifier,
    pepper: secrets.pepper,
    keyPrefix: config.keys.prefix,
    logger,
    failures,
    clientAddress: (req) => clientAddress(req, trustedProxies),
    dataKey: secrets.dataKey,
    notifier,
    channelRules: channels,
    alerts,
    pricing: config.pricing,
    console: consoleAuth,
    ...(keyEvents ? { keyEvents } : {}),
  });
  // Client connections, per process (with --workers, per worker: each has its own descriptors).
  // Kept for the rest: the provider pool, the store's pool (or SQLite's files), Redis, logs, stdio.
  const fdReserve = 64 + config.upstream.connections + (config.database.url ? config.database.poolSize : 8);
  const { cap: maxConnections, warning: capWarning } = connectionCap(
    config.server.maxConnections,
    openFileLimit(),
    fdReserve,
  );
  if (capWarning) logger.warn({ maxConnections }, capWarning);
  const connections = new ConnectionGuard({
    maxConnections,
    maxConnectionsPerAddress: config.server.maxConnectionsPerAddress,
    trustedProxies,
    onCapChange: (refusing, open) => {
      if (refusing)
        logger.warn(
          { open, maxConnections },
          'connection cap reached (server.maxConnections): new connections are refused',
        );
      else
        logger.info({ open, maxConnections }, 'below the connection cap again: new connections are accepted');
    },
    onAddressLimit: (address, open) =>
      logger.warn(
        { address, open, maxConnectionsPerAddress: config.server.maxConnectionsPerAddress },
        'an address reached its connection limit (server.maxConnectionsPerAddress): its new connections are refused',
      ),
  });
  const metrics = new Metrics({
    sources: {
      keyCache: verifier,
      usageQueue: usage,
      inflight: (): number => gateway.inflight,
      upstreamPool: () => upstream.stats,
      connections,
      background,
    },
  });
  const gateway = new Gateway({
    config,
    verifier,
    limiter,
    failures,
    upstream,
    usage,
    logger,
    metrics,
    alerts,
  });
  const metricsEndpoint = createMetricsEndpoint({
    metrics,
    verifier,
    store,
    failures,
    logger,
    clientAddress: (req) => clientAddress(req, trustedProxies),
  });

  // Expired keys are refused by the clock on every request; this records each expiry in the audit log.
  const reminderThresholds = config.keys.expiryReminderDays.map((days) => days * 86_400_000);
  const recordExpiries = async () => {
    const now = Date.now();
    const ids = await store.recordExpiries(now);
    if (ids.length > 0) logger.info({ keyIds: ids }, 'keys expired');
    // Each reminder becomes a `key_expiring` alert (logged, stored and sent to the channels).
    for (const r of await store.recordExpiryReminders(now, reminderThresholds))
      await alerts.onExpiryReminder(r);
  };
  await background.supervise('key_expiry_sweep', recordExpiries);
  const expiryTimer = background.every('key_expiry_sweep', config.auth.expirySweepMs, recordExpiries);

  // Retention: raw usage records older than usage.retentionDays are deleted (the hourly rollups stay).
  const retentionMs = config.usage.retentionDays * 86_400_000;
  const pruneUsage = async () => {
    const deleted = await store.pruneUsage(Date.now() - retentionMs);
    if (deleted > 0) logger.info({ deleted }, 'raw usage records past retention deleted');
  };
  const retentionTimer =
    retentionMs > 0
      ? background.every('usage_retention', RETENTION_SWEEP_MS, pruneUsage, {
          retry: { initialMs: 60_000, maxMs: RETENTION_SWEEP_MS },
        })
      : undefined;
  retentionTimer?.trigger(); // in the background: a large first sweep does not delay the start
  // The last resort, for a rejected promise nobody handles (a bug): counted and logged, not fatal.
  const unguard = guardUnhandledRejections(background, logger);

  /**
   * The usage records the queue could not write when stopping: kept in a spill file of the data
   * directory (written at the next start), or, if even that fails, reported as lost (the stop
   * then fails, and `keygate start` exits 1 saying how many).
   */
  const keepUnwritten = (unwritten: readonly UsageRecord[]) => {
    if (unwritten.length === 0) return;
    const cause = background.state(USAGE_FLUSH_TASK).cause ?? 'the store refused them';
    try {
      const file = spillUsage(config.dataDir, unwritten);
      logger.warn(
        { records: unwritten.length, file, cause },
        'usage records could not be written to the store: kept in a spill file, written at the next start',
      );
    } catch (error) {
      const message =
        `${unwritten.length} usage record${unwritten.length === 1 ? '' : 's'} could not be written to the store ` +
        `(${cause}) nor kept in the data directory ${config.dataDir} (${describeFailure(error)}): they are lost`;
      logger.error({ records: unwritten.length, cause, spillError: describeFailure(error) }, message);
      throw new Error(message);
    }
  };

  const hsts = tls ? 'max-age=31536000' : undefined;
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    // Always the gateway's own id: it keys the usage record, so a client cannot choose it. On /v1,
    // `x-request-id` becomes the client's own id when it sent a sane one (gateway.ts).
    const requestId = newRequestId();
    res.setHeader('x-request-id', requestId);
    res.setHeader('x-keygate-request-id', requestId);
    if (hsts) res.setHeader('strict-transport-security', hsts);
    const url = req.url ?? '/';
    if (url.startsWith('/v1/') || url === '/v1') {
      gateway.handle(req, res, requestId);
      return;
    }
    if (url.startsWith('/admin/v1/') || url === '/admin/v1' || url.startsWith('/admin/v1?')) {
      admin(req, res, requestId);
      return;
    }
    const pathname = url.split('?', 1)[0] ?? '/';
    if (pathname === '/console' || pathname.startsWith('/console/')) {
      if (pathname.startsWith('/console/api/')) {
        for (const [name, value] of Object.entries(CONSOLE_HEADERS)) res.setHeader(name, value);
        consoleAuth.handle(req, res, requestId);
      } else consoleStatic(req, res);
      return;
    }
    if (pathname === '/') {
      res.writeHead(302, { location: '/console/' });
      res.end();
      return;
    }
    if (pathname === '/metrics') {
      metricsEndpoint(req, res, requestId);
      return;
    }
    if (pathname === '/healthz') {
      json(res, 200, { status: 'ok' });
      return;
    }
    if (pathname === '/readyz') {
      Promise.all([
        storeReachable(store).then((ok) => (ok ? 'ok' : 'unreachable')),
        upstream.configured
          ? upstream.reachable().then((ok) => (ok ? 'reachable' : 'unreachable'))
          : Promise.resolve('not_configured'),
      ]).then(([storeCheck, upstreamCheck]) => {
        // Limits: `memory` (one instance), `primary` (the primary of `--workers` without Redis),
        // `redis`, or a fallback while Redis is unreachable. The local fallback still enforces
        // limits, so the instance stays ready; `deny` does not.
        const limitsCheck =
          limiter.status === undefined
            ? limitsHeldBy
            : limiter.status() === 'ok'
              ? 'redis'
              : `fallback_${config.limits.onRedisFailure}`;
        // An unreachable store degrades the instance but leaves it ready: keys verified before
        // keep working (auth.staleIfErrorMs), and every instance shares the store, so taking them
        // all out of a load balancer would turn a database outage into a total one.
        // Every provider connection busy: a new request would wait, then get 503. Not ready, so
        // that a load balancer sends the next ones to an instance with room.
        const pool = upstream.stats;
        const poolCheck = upstream.saturated ? 'saturated' : 'ok';
        const ready =
          upstreamCheck === 'reachable' &&
          !gateway.draining &&
          limitsCheck !== 'fallback_deny' &&
          poolCheck === 'ok';
        const degraded = storeCheck !== 'ok' || limitsCheck === 'fallback_local';
        json(res, ready ? 200 : 503, {
          status: ready ? (degraded ? 'degraded' : 'ready') : 'not_ready',
          checks: {
            store: storeCheck,
            upstream: upstreamCheck,
            limits: limitsCheck,
            upstreamPool: poolCheck,
            draining: gateway.draining,
          },
          upstreamPool: pool,
        });
      });
      return;
    }
    sendError(
      res,
      'not_found',
      `No such endpoint: ${req.method} ${scrubText(String(pathname))}. The API lives under /v1.`,
    );
  };
  // Every bound on a connection that is slow or silent (connections.ts says which applies when).
  const timeouts = {
    headersTimeout: config.server.headersTimeoutMs,
    requestTimeout: config.server.requestTimeoutMs,
    keepAliveTimeout: config.server.keepAliveTimeoutMs,
    // Node checks the head and request bounds this often (its default, 30 s, would let a silent
    // connection stay up to twice headersTimeoutMs); the check walks only connections mid-request.
    connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(config.server.headersTimeoutMs / 4))),
  };
  const server: Server = tls
    ? createHttpsServer(
        {
          ...TLS_SERVER_OPTIONS,
          cert: tls.cert,
          key: tls.key,
          handshakeTimeout: config.server.handshakeTimeoutMs,
          ...timeouts,
        },
        handler,
      )
    : createHttpServer(timeouts, handler);
  // `Expect: 100-continue` is answered by the body readers once the caller is authenticated
  // (http/body.ts continueIfExpected), not by Node before anything is checked.
  server.on('checkContinue', handler);
  // The connection cap, the per-address limit, the tracking of every socket and the clientError
  // handler (which destroys a socket mid-handshake or timed out, and answers a malformed request).
  connections.attach(server);

  let port: number;
  try {
    port = await listen(server, config.server.port, config.server.host);
  } catch (error) {
    expiryTimer.stop();
    retentionTimer?.stop();
    await retentionTimer?.running;
    unguard();
    verifier.close();
    await alerts.close();
    const unwritten = await usage.close();
    try {
      keepUnwritten(unwritten); // logged; the start's own error is the one thrown
    } catch {}
    await notifier.close();
    limiter.close();
    await keyEvents?.close().catch(() => {});
    await redis?.quit().catch(() => {});
    await store.close();
    throw error;
  }
  const hostForUrl = config.server.host.includes(':') ? `[${config.server.host}]` : config.server.host;
  const url = `${tls ? 'https' : 'http'}://${hostForUrl}:${port}`;

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      gateway.draining = true;
      verifier.close();
      expiryTimer.stop();
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // In-flight requests get up to shutdownTimeoutMs. Then, or once none is left, every
      // connection still open is destroyed: the kept-alive ones, and those the HTTP layer never
      // adopted (silent, or mid-TLS-handshake), which closeAllConnections() does not know and
      // which would keep server.close(), and so the stop, waiting for ever.
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, config.server.shutdownTimeoutMs);
      });
      await Promise.race([gateway.whenIdle(), stopped, deadline]);
      clearTimeout(timer);
      server.closeAllConnections();
      connections.destroyAll();
      await stopped;
      retentionTimer?.stop();
      await retentionTimer?.running;
      await expiryTimer.running;
      const unwritten = await usage.close();
      await alerts.close();
      limiter.close();
      await keyEvents?.close().catch(() => {});
      await redis?.quit().catch(() => {});
      await upstream.close().catch(() => {});
      await notifier.close();
      await store.close();
      unguard();
      try {
        keepUnwritten(unwritten);
      } finally {
        await new Promise<void>((resolve) => logger.flush(() => resolve()));
      }
    })();
    return closing;
  };
  return {
    url,
    port,
    tls,
    secrets,
    store,
    verifier,
    upstream,
    logger,
    notifier,
    alerts,
    background,
    console: consoleAuth,
    close,
  };
}
