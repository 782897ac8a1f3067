/**
 * `npm run bench:profile`: where the gateway's CPU time goes under the benchmark's load.
 *
 * Starts the upstream stub and one Keygate (every protection on, as in bench/run.ts) with
 * `--cpu-prof`, drives one scenario at saturation with autocannon from this process, stops the
 * gateway and summarises the profile: CPU per request, time by area (the gateway's own code, each
 * library, Node's internals, GC) and the functions with the most self time.
 *
 *   npm run bench:profile                          chat on SQLite, 10 s
 *   npm run bench:profile -- --scenario embeddings --duration 20 --store pg --connections 50
 *   npm run bench:profile -- --store pg --no-redis  PostgreSQL, limits in the gateway's memory
 *
 * The .cpuprofile file (open it in Chrome DevTools' Performance panel or speedscope.app for a
 * flame graph) is kept in a temporary directory whose path is printed; the summary is written to
 * bench/results/<date>-profile-<scenario>[-pg][-noredis][-workersN].md. With --workers N, the
 * profiles of the primary and of every worker are summed.
 *
 * Beside the gateway's profile it reports what every process sharing the machine spent per request
 * during the load (from /proc): the stub, this load generator, and with --store pg the PostgreSQL
 * and Redis servers (all their processes), so that a mode's cost outside the gateway shows too.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import {
  cpuSecondsOf,
  cpuSecondsOfCommand,
  memoryOf,
  ROOT,
  startGateway,
  startStub,
  stopAll,
  stopChild,
} from './processes.ts';
import { createBenchKey, type KeygateSetup, SCENARIOS } from './scenarios.ts';
import {
  benchPrefix,
  createBenchDatabase,
  deleteRedisPrefix,
  dropBenchDatabase,
  postgresUnavailable,
  REDIS_URL,
  redisUnavailable,
} from './stores.ts';

const { values } = parseArgs({
  options: {
    scenario: { type: 'string', default: 'chat' },
    store: { type: 'string', default: 'sqlite' },
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '50' },
    top: { type: 'string', default: '30' },
    workers: { type: 'string', default: '1' },
    redis: { type: 'boolean', default: true },
  },
  allowNegative: true,
});
const scenario = SCENARIOS.find((s) => s.name === values.scenario);
if (!scenario) fail(`--scenario must be one of ${SCENARIOS.map((s) => s.name).join(', ')}`);
if (values.store !== 'sqlite' && values.store !== 'pg') fail('--store must be sqlite or pg');
if (!values.redis && values.store !== 'pg') fail('--no-redis goes with --store pg');
/** PostgreSQL and Redis; with --no-redis, PostgreSQL with the limits in the gateway's memory. */
const withRedis = values.store === 'pg' && values.redis;
const duration = Number(values.duration);
const connections = Number(values.connections);
const top = Number(values.top);
const workers = Number(values.workers);
if (!(duration > 0 && connections > 0 && top > 0 && Number.isInteger(workers) && workers > 0))
  fail('--duration, --connections, --top and --workers must be positive');

function fail(message: string): never {
  process.stderr.write(`bench:profile: ${message}\n`);
  process.exit(2);
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

// ---------------------------------------------------------------------------------------------
// The profile's format (V8's .cpuprofile)

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Which part of the program a frame belongs to: the gateway's own file, a package, Node, V8. */
function areaOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (url === '') {
    if (functionName.startsWith('(')) return functionName; // (garbage collector), (program), (idle)
    return '(native)';
  }
  if (url.startsWith('node:')) return 'node: internals';
  // Node's own HTTP parser is native; the only WebAssembly here is undici's build of llhttp.
  if (url.startsWith('wasm:')) return 'npm: undici (llhttp, wasm)';
  const modules = url.lastIndexOf('/node_modules/');
  if (modules !== -1) {
    const rest = url.slice(modules + '/node_modules/'.length).split('/');
    return `npm: ${rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  const path = url.startsWith('file://') ? new URL(url).pathname : url;
  return `keygate: ${relative(ROOT, path)}`;
}

function frameName(frame: CallFrame): string {
  const area = areaOf(frame);
  const name = frame.functionName || '(anonymous)';
  if (frame.url === '') return name;
  const file = frame.url.startsWith('node:') ? frame.url : area.replace(/^\w+: /, '');
  return `${name} (${file}:${frame.lineNumber + 1})`;
}

interface Summary {
  totalMs: number;
  busyMs: number;
  byArea: Map<string, number>;
  bySelf: Map<string, number>;
  /** Time inside each of the gateway's own functions, callees included. */
  byInclusive: Map<string, number>;
}

function summarise(profile: CpuProfile): Summary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map<number, number>();
  let totalMs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const ms = (profile.timeDeltas[i] ?? 0) / 1000;
    totalMs += ms;
    const id = profile.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + ms);
  }
  const byArea = new Map<string, number>();
  const bySelf = new Map<string, number>();
  const byInclusive = new Map<string, number>();
  let idleMs = 0;
  const add = (map: Map<string, number>, name: string, ms: number) =>
    map.set(name, (map.get(name) ?? 0) + ms);
  // Inclusive time: a node's own samples plus its subtree's, counted once per function on a path.
  const walk = (id: number, open: Set<string>): number => {
    const node = byId.get(id);
    if (!node) return 0;
    const own = self.get(id) ?? 0;
    const name = frameName(node.callFrame);
    if (node.callFrame.functionName === '(idle)') idleMs += own;
    add(byArea, areaOf(node.callFrame), own);
    add(bySelf, name, own);
    const mine = areaOf(node.callFrame).startsWith('keygate:') && !open.has(name);
    if (mine) open.add(name);
    let total = own;
    for (const child of node.children ?? []) total += walk(child, open);
    if (mine) {
      open.delete(name);
      add(byInclusive, name, total);
    }
    return total;
  };
  const root = profile.nodes[0];
  if (root) walk(root.id, new Set());
  return { totalMs, busyMs: totalMs - idleMs, byArea, bySelf, byInclusive };
}

function merge(a: Summary, b: Summary): Summary {
  const sum = (x: Map<string, number>, y: Map<string, number>) => {
    const out = new Map(x);
    for (const [name, ms] of y) out.set(name, (out.get(name) ?? 0) + ms);
    return out;
  };
  return {
    totalMs: a.totalMs + b.totalMs,
    busyMs: a.busyMs + b.busyMs,
    byArea: sum(a.byArea, b.byArea),
    bySelf: sum(a.bySelf, b.bySelf),
    byInclusive: sum(a.byInclusive, b.byInclusive),
  };
}

// ---------------------------------------------------------------------------------------------
// The run

const date = new Date().toISOString().slice(0, 10);
const work = mkdtempSync(join(tmpdir(), 'keygate-profile-'));
const profileDir = join(work, 'cpuprofile');
mkdirSync(profileDir);
const cleanups: (() => Promise<void> | void)[] = [];

async function main(): Promise<void> {
  const pg = values.store === 'pg';
  const env: Record<string, string> = {
    NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profileDir} --cpu-prof-interval=200`,
  };
  const config: Record<string, unknown> = { log: { level: 'info' } };
  if (pg) {
    const unavailable = (await postgresUnavailable()) ?? (withRedis ? await redisUnavailable() : undefined);
    if (unavailable) fail(`--store pg needs PostgreSQL${withRedis ? ' and Redis' : ''}: ${unavailable}`);
    const database = await createBenchDatabase();
    cleanups.push(() => dropBenchDatabase(database.name));
    if (withRedis) {
      const prefix = benchPrefix();
      cleanups.push(async () => {
        await deleteRedisPrefix(prefix);
      });
      config.redis = { prefix };
      config.limits = { onRedisFailure: 'deny' };
      env.REDIS_URL = REDIS_URL;
    }
    env.DATABASE_URL = database.url;
    env.KEYGATE_SECRET = randomBytes(48).toString('base64');
  }
  const dataDir = join(work, 'data');
  mkdirSync(dataDir);
  const configFile = join(dataDir, 'bench-config.yaml');
  writeFileSync(configFile, `${JSON.stringify(config, null, 2)}\n`);
  const setup: KeygateSetup = { dataDir, configFile, env: pg ? { ...env, NODE_OPTIONS: '' } : {} };
  const key = await createBenchKey(setup);
  const stub = await startStub(0);
  const gateway = await startGateway({
    name: 'keygate',
    dataDir,
    configFile,
    http: true,
    upstreamUrl: stub.url,
    upstreamKey: 'upstream-secret-key',
    env,
    workers,
  });
  const w = workers > 1 ? ` --workers ${workers}` : '';
  log(`profiling ${scenario!.name} on ${values.store}${w} for ${duration} s, ${connections} connections`);
  const cpuBefore = cpuSecondsOf(gateway.pid) ?? 0;
  const othersBefore = otherCpu(stub.pid);
  let rssMax = 0;
  const sampler = setInterval(() => {
    rssMax = Math.max(rssMax, memoryOf(gateway.pid)?.rss ?? 0);
  }, 200);
  const result = await autocannon({
    url: gateway.url + scenario!.path,
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', accept: scenario!.accept },
    body: scenario!.body,
    connections,
    duration,
  });
  clearInterval(sampler);
  const cpuSeconds = (cpuSecondsOf(gateway.pid) ?? 0) - cpuBefore;
  const othersAfter = otherCpu(stub.pid);
  await stopChild(gateway);
  await stopChild(stub);
  // One profile per process (with --workers: the primary's and each worker's), summed.
  const files = readdirSync(profileDir).filter((name) => name.endsWith('.cpuprofile'));
  if (files.length === 0) fail(`the gateway wrote no profile into ${profileDir}`);
  const summary = files
    .map((file) => summarise(JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as CpuProfile))
    .reduce(merge);
  const requests = result.requests.total;
  const bad = result.errors + result.timeouts + result.non2xx;
  const usPerRequest = (ms: number) => ((ms * 1000) / requests).toFixed(1);
  const pct = (ms: number) => `${((100 * ms) / summary.busyMs).toFixed(1)} %`;
  const table = (title: string, map: Map<string, number>, limit: number) => {
    const rows = [...map].filter(([name]) => name !== '(idle)').sort((a, b) => b[1] - a[1]);
    const lines = [`| ${title} | share of busy time | µs per request |`, '| --- | ---: | ---: |'];
    for (const [name, ms] of rows.slice(0, limit))
      lines.push(`| ${name.replaceAll('|', '\\|')} | ${pct(ms)} | ${usPerRequest(ms)} |`);
    return lines.join('\n');
  };
  const others = [...othersAfter]
    .filter(([name]) => othersBefore.has(name))
    .map(([name, after]) => `${name} ${usPerRequest((after - (othersBefore.get(name) ?? 0)) * 1000)} µs`);
  const mode = pg ? (withRedis ? 'PostgreSQL + Redis' : 'PostgreSQL, limits in memory') : 'SQLite';
  const flags = `--store ${values.store}${pg && !withRedis ? ' --no-redis' : ''}`;
  const md = [
    `# CPU profile of the gateway: ${scenario!.name}, ${mode}${w}, ${date}`,
    '',
    `- Command: \`npm run bench:profile -- --scenario ${scenario!.name} ${flags} --duration ${duration} --connections ${connections}${w}\``,
    `- Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown'}, Node ${process.version}; load generator (this process), stub and gateway share it.`,
    `- Load: ${requests} requests in ${duration} s (${Math.round(requests / duration)} req/s), ${bad} errors or non-2xx.`,
    `- Gateway CPU (from /proc): ${cpuSeconds.toFixed(2)} s = ${((cpuSeconds * 1e6) / requests).toFixed(1)} µs per request (all threads, GC and libuv included); highest RSS ${Math.round(rssMax / 2 ** 20)} MB.`,
    `- The other processes on the machine, CPU per request during the load (from /proc): ${others.join(', ')}.`,
    `- Profile (main threads, sampled every 200 µs): ${(summary.busyMs / 1000).toFixed(2)} s busy of ${(summary.totalMs / 1000).toFixed(2)} s = ${usPerRequest(summary.busyMs)} µs per request; the rest is idle.`,
    '',
    '## By area (self time)',
    '',
    table('area', summary.byArea, 40),
    '',
    "## The gateway's own functions (time inside them, callees included)",
    '',
    table('function', summary.byInclusive, top),
    '',
    '## Functions with the most self time',
    '',
    table('function', summary.bySelf, top),
    '',
  ].join('\n');
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  const name = `${date}-profile-${scenario!.name}${pg ? '-pg' : ''}${pg && !withRedis ? '-noredis' : ''}${workers > 1 ? `-workers${workers}` : ''}.md`;
  const out = join(ROOT, 'bench', 'results', name);
  writeFileSync(out, md);
  process.stdout.write(`${md}\n`);
  log(`profiles: ${profileDir} (kept; open them in Chrome DevTools or speedscope.app)`);
  log(`summary: ${relative(ROOT, out)}`);
}

/** CPU seconds so far of the stub, this load generator, and the PostgreSQL and Redis servers. */
function otherCpu(stubPid: number): Map<string, number> {
  const cpu = new Map<string, number>();
  const stub = cpuSecondsOf(stubPid);
  if (stub !== undefined) cpu.set('stub', stub);
  const self = process.cpuUsage();
  cpu.set('load generator', (self.user + self.system) / 1e6);
  if (values.store === 'pg') {
    const postgres = cpuSecondsOfCommand('postgres');
    if (postgres !== undefined) cpu.set('PostgreSQL', postgres);
    const redis = withRedis ? cpuSecondsOfCommand('redis-server') : undefined;
    if (redis !== undefined) cpu.set('Redis', redis);
  }
  return cpu;
}

try {
  await main();
} finally {
  await stopAll();
  for (const cleanup of cleanups.reverse()) await cleanup();
  rmSync(join(work, 'data'), { recursive: true, force: true });
}
