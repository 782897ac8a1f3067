/**
 * `keygate start --workers N`: N gateway processes on one port (node:cluster; the primary accepts
 * the connections and hands them to the workers in turn). Every worker is a whole gateway. The
 * limits, budgets and concurrency they share live in Redis when REDIS_URL is set, else in the
 * primary, which answers the workers over IPC (src/limits/ipc.ts); the keys, usage and audit live
 * in the one store.
 *
 * The primary prepares what must happen once (the secret, the certificate, the schema), forks the
 * workers, prints the banner when they all listen, replaces a worker that dies (giving up after
 * five deaths in a minute), and on SIGTERM/SIGINT asks every worker to stop gracefully.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Config } from '../config/config.ts';
import { ensureDataDir, secretsFor, secretToGenerate } from '../config/secrets.ts';
import { setupToken } from '../console/credentials.ts';
import { ensureSelfSigned } from '../http/tls.ts';
import { createMemoryLimiter } from '../limits/index.ts';
import { LimitsServer } from '../limits/ipc.ts';
import { openStore } from '../store/index.ts';
import { Background } from '../util/background.ts';
import { UserError } from './common.ts';

const CRASH_WINDOW_MS = 60_000;
const MAX_CRASHES = 5;

export async function runWorkers(config: Config, version: string): Promise<void> {
  const err = (line = '') => process.stderr.write(`${line}\n`);
  const count = config.server.workers;

  // Once, before any worker: the data directory's mode, the secret file, the self-signed
  // certificate and the migrations. A missing secret is generated only over a store that holds
  // nothing made with one (secrets.ts), so the store is read first then.
  const envSecret = process.env.KEYGATE_SECRET;
  let early: ReturnType<typeof secretsFor> | undefined;
  try {
    for (const warning of ensureDataDir(config.dataDir)) err(`warning: ${warning}`);
    early = secretToGenerate(config, envSecret) ? undefined : secretsFor(config, envSecret);
  } catch (error) {
    throw new UserError((error as Error).message);
  }
  if (!config.server.http && !config.server.tlsCert)
    await ensureSelfSigned(config.dataDir, config.server.host);
  const store = await openStore({
    dataDir: config.dataDir,
    databaseUrl: config.database.url,
    poolSize: 1,
  });
  let secrets: ReturnType<typeof secretsFor>;
  try {
    secrets = early ?? secretsFor(config, envSecret, await store.countSecretBound());
  } catch (error) {
    await store.close();
    throw new UserError((error as Error).message);
  }
  // Without Redis the primary keeps the limits, and reads budget usage from this store.
  const token = await setupToken(store, secrets.consoleKey).finally(() =>
    config.redis.url ? store.close() : undefined,
  );
  // The primary has no JSON logger: a failing limits message or sweep is said on stderr, once per
  // change of state, like the banner (util/background.ts counts and retries it).
  const background = new Background({
    logger: { error: (_details, message) => err(message), info: (_details, message) => err(message) },
  });
  const limits = config.redis.url ? undefined : new LimitsServer(createMemoryLimiter({ store }), background);
  const detachLimits = new Map<number, () => void>();

  let stopping = false;
  const crashes: number[] = [];
  const fork = (): Worker => {
    const worker = cluster.fork();
    if (limits) detachLimits.set(worker.id, limits.attach(worker));
    return worker;
  };
  let listening = 0;
  const ready = new Promise<{ address: string; port: number }>((resolve) => {
    cluster.on('listening', (_worker, address) => {
      listening++;
      if (listening === count)
        resolve({ address: address.address ?? config.server.host, port: address.port });
    });
  });

  cluster.on('exit', (worker, code, signal) => {
    // Its open tickets are settled at their reservation, freeing their concurrency slots.
    detachLimits.get(worker.id)?.();
    detachLimits.delete(worker.id);
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        err('Keygate stopped.');
        process.exit(0);
      }
      return;
    }
    const now = Date.now();
    crashes.push(now);
    while (crashes.length > 0 && now - (crashes[0] ?? now) > CRASH_WINDOW_MS) crashes.shift();
    err(`worker ${worker.process.pid} exited (${signal ?? `code ${code}`})`);
    if (crashes.length > MAX_CRASHES) {
      err(`${crashes.length} workers exited within a minute: stopping (see the log above).`);
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
      setTimeout(() => process.exit(1), 1000).unref();
      return;
    }
    fork();
  });

  for (let i = 0; i < count; i++) fork();
  const { port } = await ready;
  const host = config.server.host.includes(':') ? `[${config.server.host}]` : config.server.host;
  const url = `${config.server.http ? 'http' : 'https'}://${host}:${port}`;
  err(`Keygate ${version} is listening on ${url} with ${count} worker processes`);
  err(
    `  limits, budgets and concurrency ${config.redis.url ? 'shared through Redis' : 'kept by the primary process'}; store: ${config.database.url ? 'PostgreSQL' : `SQLite in ${config.dataDir}`}`,
  );
  err(`  console: ${url}/console`);
  if (token !== undefined) {
    err('');
    err(`First run: open ${url}/console and create the owner account with the setup token`);
    err(`    ${token}`);
    err('  (`keygate setup-token` shows it again until the owner account exists).');
  }
  err('Stop with Ctrl-C (in-flight requests are finished first).');

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      if (signal !== 'SIGINT') return; // a repeated SIGTERM does not cut the graceful stop short
      err(`${signal} again: exiting now.`);
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
      process.exit(1);
    }
    stopping = true;
    err(`${signal} received: the workers finish their in-flight requests...`);
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    // A worker that does not stop within its shutdown timeout (and a margin) is killed.
    setTimeout(() => {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
    }, config.server.shutdownTimeoutMs + 5000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
