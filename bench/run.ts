/**
 * `npm run bench`: the same load sent straight to the local upstream stub, through Keygate (on its
 * embedded SQLite store, and on PostgreSQL + Redis) and through Portkey's open-source gateway,
 * measured two ways:
 *
 * - at saturation (autocannon, closed loop, N connections): throughput, latency, CPU per request;
 * - at a fixed offered rate (open loop, bench/paced.ts): the latency each gateway adds over direct,
 *   and for streams the time to the first byte of the body.
 *
 *   npm run bench                 3 rounds; saturation 6 s, fixed rate 4 s per scenario and target (≈ 8 min)
 *   npm run bench -- --quick      1 round; saturation 2 s, fixed rate 3 s, chat and streaming only
 *                                 at the fixed rate (≈ 1.5 min)
 *   npm run bench -- --baseline main~3   adds keygate-baseline: that revision built in a temporary
 *                                 worktree and run beside this one, with its CPU per request compared
 *   options: --targets direct,keygate,keygate-workers,keygate-pg,portkey (the default set; also
 *            keygate-bare: no limit, budget, allowlist or access log, to price the protections)
 *            --https (adds keygate-https)
 *            --rate R (fixed offered load, req/s, default 1000)   --duration S   --fixed-duration S
 *            --connections N   --rounds N   --warmup S   --stub-latency MS
 *            --label L (results in <date>-L.*, beside the day's full run)
 *
 * The stub and the gateways run as child processes; the load generators run here. Everything
 * listens on 127.0.0.1 and is stopped at the end, on an error or on Ctrl-C; the PostgreSQL
 * database and the Redis keys made for the run are deleted. Targets alternate within each round
 * (their order rotated from round to round) and medians over rounds are reported.
 * Results: bench/results/<date>.{json,md,svg} (<date>-quick.* for --quick, <date>-<label>.* with --label).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, platform, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { Agent, request } from 'undici';
import { renderChart } from './chart.ts';
import { newHistogram, type PacedResult, pct, runPaced } from './paced.ts';
import {
  buildBaseline,
  type Child,
  cpuSecondsOf,
  crashed,
  keygateCli,
  type MemoryStatus,
  machineTicks,
  memoryOf,
  portkeyUnavailable,
  ROOT,
  startGateway,
  startPortkey,
  startStub,
  stopAll,
  stopChild,
  tail,
} from './processes.ts';
import {
  cliArgs,
  createBenchKey,
  isRecord,
  type KeygateSetup,
  SCENARIOS,
  type Scenario,
} from './scenarios.ts';
import {
  benchPrefix,
  createBenchDatabase,
  deleteRedisPrefix,
  dropBenchDatabase,
  postgresUnavailable,
  REDIS_URL,
  redisUnavailable,
} from './stores.ts';

const UPSTREAM_KEY = 'upstream-secret-key';
const REQUEST_TIMEOUT_S = 10;
const PAUSE_BETWEEN_RUNS_MS = 250;
/** Cores used by other work during a run above which the summary says the machine was not quiet. */
const NOISY_OTHER_CORES = 0.3;
const RSS_SAMPLE_MS = 200;
/** A fixed-rate run whose correct answers came slower than this share of the offered rate did not hold it. */
const RATE_HELD = 0.95;
const MB = 2 ** 20;
/** Fixed-rate sends later than this (p99) mean the load generator was held up: the run's tail is suspect. */
const SEND_LAG_WARN_MS = 5;

/** The issue's targets (#7). */
const GOALS = {
  throughputVsDirect: 0.4,
  throughputVsPortkey: 10,
  addedP50Ms: 1,
  addedP99Ms: 5,
  ttfbAddedP50Ms: 1,
  rssBytes: 150 * MB,
  pgVsEmbedded: 0.7,
};

// ---------------------------------------------------------------------------------------------
// Options

const ALL_TARGETS = [
  'direct',
  'keygate',
  'keygate-https',
  'keygate-workers',
  'keygate-pg',
  'keygate-baseline',
  'keygate-bare',
  'portkey',
] as const;
type TargetName = (typeof ALL_TARGETS)[number];
const DEFAULT_TARGETS: TargetName[] = ['direct', 'keygate', 'keygate-workers', 'keygate-pg', 'portkey'];

interface Options {
  quick: boolean;
  targets: TargetName[];
  /** Saturation run length, seconds. */
  duration: number;
  /** Fixed-rate run length, seconds. */
  fixedDuration: number;
  connections: number;
  rounds: number;
  /** Warm-up before each run, seconds (not measured). */
  warmup: number;
  /** Fixed offered load in req/s. */
  rate: number;
  /** Scenarios measured at the fixed rate. */
  fixedScenarios: string[];
  /** Delay the stub adds before every response head, ms. */
  stubLatency: number;
  /** A git revision built beside this checkout and run as `keygate-baseline` (--baseline). */
  baseline: string | undefined;
  /** Appended to the results' file names (--label), so that a run does not replace the day's. */
  label: string | undefined;
}

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

function numberOption(
  name: string,
  value: string | undefined,
  fallback: number,
  min: number,
  int: boolean,
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || (int && !Number.isInteger(n)))
    fail(`--${name} takes ${int ? 'an integer' : 'a number'} ≥ ${min}, not "${value}"`);
  return n;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      https: { type: 'boolean', default: false },
      targets: { type: 'string' },
      duration: { type: 'string' },
      'fixed-duration': { type: 'string' },
      connections: { type: 'string' },
      rounds: { type: 'string' },
      warmup: { type: 'string' },
      rate: { type: 'string' },
      'stub-latency': { type: 'string' },
      label: { type: 'string' },
      baseline: { type: 'string' },
    },
    strict: true,
  });
  const quick = values.quick === true;
  let targets: TargetName[] = [...DEFAULT_TARGETS];
  if (values.targets !== undefined) {
    const names = values.targets
      .split(',')
      .map((t) => t.trim())
      .filter(Boolean);
    for (const name of names)
      if (!(ALL_TARGETS as readonly string[]).includes(name))
        fail(`unknown target "${name}" (known: ${ALL_TARGETS.join(', ')})`);
    targets = names as TargetName[];
  }
  if (values.https === true && !targets.includes('keygate-https')) targets.push('keygate-https');
  if (values.baseline !== undefined && !targets.includes('keygate-baseline'))
    targets.push('keygate-baseline');
  if (values.label !== undefined && !/^[\w.-]{1,40}$/.test(values.label))
    fail('--label takes letters, digits, dots and dashes (at most 40)');
  if (targets.includes('keygate-baseline') && values.baseline === undefined)
    fail('the target keygate-baseline needs --baseline REV (a git revision to compare with)');
  // direct first: the others are compared with it.
  targets = ['direct', ...targets.filter((t) => t !== 'direct')];
  targets = ALL_TARGETS.filter((t) => targets.includes(t));
  return {
    quick,
    targets,
    duration: numberOption('duration', values.duration, quick ? 2 : 6, 0.5, false),
    fixedDuration: numberOption('fixed-duration', values['fixed-duration'], quick ? 3 : 4, 0.5, false),
    connections: numberOption('connections', values.connections, 50, 1, true),
    rounds: numberOption('rounds', values.rounds, quick ? 1 : 3, 1, true),
    warmup: numberOption('warmup', values.warmup, quick ? 0.5 : 1, 0, false),
    rate: numberOption('rate', values.rate, 1000, 1, true),
    fixedScenarios: quick ? ['chat', 'chat-stream'] : ['chat', 'chat-stream', 'embeddings'],
    stubLatency: numberOption('stub-latency', values['stub-latency'], 0, 0, true),
    baseline: values.baseline,
    label: values.label,
  };
}

// ---------------------------------------------------------------------------------------------
// Scenarios and targets

interface Target {
  name: TargetName;
  url: string;
  key: string;
  /** More request headers (Portkey's routing headers). */
  extraHeaders: Record<string, string>;
  /** PEM of the self-signed certificate, for HTTPS. */
  ca: string | undefined;
  /** The process whose memory and CPU are reported as the gateway's (none for direct). */
  gateway: Child | undefined;
  /** For Keygate targets: what the CLI needs to read its usage. */
  keygate: KeygateSetup | undefined;
  /** undici dispatcher of the fixed-rate runs (connections kept across them). */
  dispatcher: Agent;
  /** Requests the load generators sent and saw answered (for the metering check). */
  sent: number;
  completed: number;
  /** Highest RSS sampled while this target was under load, bytes. */
  rssMax: number;
}

function headersFor(target: Target, scenario: Scenario): Record<string, string> {
  return {
    authorization: `Bearer ${target.key}`,
    'content-type': 'application/json',
    accept: scenario.accept,
    ...target.extraHeaders,
  };
}

// ---------------------------------------------------------------------------------------------
// Gateway memory, sampled during every run

function sampleRss(target: Target): () => void {
  const gateway = target.gateway;
  if (!gateway) return () => {};
  const sample = (): void => {
    const memory = memoryOf(gateway.pid);
    if (memory && memory.rss > target.rssMax) target.rssMax = memory.rss;
  };
  sample();
  const timer = setInterval(sample, RSS_SAMPLE_MS);
  return () => {
    clearInterval(timer);
    sample();
  };
}

// ---------------------------------------------------------------------------------------------
// Saturation: one autocannon run

interface Latency {
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  max: number;
}

interface CpuCores {
  loadgen: number;
  stub: number | null;
  gateway: number | null;
  other: number | null;
}

interface RunResult {
  round: number;
  scenario: string;
  target: TargetName;
  durationS: number;
  /** Responses received (any status). */
  completed: number;
  sent: number;
  rps: number;
  /** Milliseconds, from the per-response times at microsecond resolution. */
  latencyMs: Latency;
  errors: number;
  timeouts: number;
  non2xx: number;
  resets: number;
  statusCodes: Record<string, number>;
  errorMessages: Record<string, number>;
  /**
   * CPU used during the run, in cores (1 = one core fully busy). `other` is the rest of the machine's
   * busy time (other processes, interrupts, steal): well above 0 means the machine was not quiet.
   */
  cpuCores: CpuCores;
  /** Gateway CPU time per answered request, in microseconds (little affected by other work on the machine). */
  gatewayCpuUsPerRequest: number | null;
  /** Gateway memory at the end of the load. */
  gatewayMemory: MemoryStatus | null;
}

let currentInstance: autocannon.Instance | undefined;
let interrupted = false;

function autocannonOptions(target: Target, scenario: Scenario, duration: number, options: Options) {
  const opts: autocannon.Options = {
    url: target.url + scenario.path,
    method: 'POST',
    headers: headersFor(target, scenario),
    body: scenario.body,
    connections: options.connections,
    duration,
    timeout: REQUEST_TIMEOUT_S,
  };
  if (target.ca) opts.tlsOptions = { ca: target.ca };
  return opts;
}

async function runLoad(
  opts: autocannon.Options,
  onResponse?: (statusCode: number, ms: number) => void,
  onError?: (error: Error) => void,
): Promise<autocannon.Result> {
  const instance = autocannon(opts);
  currentInstance = instance;
  if (onResponse) instance.on('response', (_client, statusCode, _bytes, ms) => onResponse(statusCode, ms));
  if (onError) instance.on('reqError', onError);
  try {
    return await instance;
  } finally {
    currentInstance = undefined;
  }
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}

async function measure(
  round: number,
  target: Target,
  scenario: Scenario,
  stub: Child,
  options: Options,
): Promise<RunResult> {
  if (options.warmup > 0) {
    const warm = await runLoad(autocannonOptions(target, scenario, options.warmup, options));
    target.sent += warm.requests.sent;
    target.completed += warm.requests.total;
  }

  const histogram = createHistogram({ lowest: 1, highest: 600_000_000, figures: 3 });
  const errorMessages: Record<string, number> = {};
  const stopSampling = sampleRss(target);
  const cpu0 = process.cpuUsage();
  const stub0 = cpuSecondsOf(stub.pid);
  const gw0 = target.gateway ? cpuSecondsOf(target.gateway.pid) : undefined;
  const machine0 = machineTicks();
  const t0 = process.hrtime.bigint();
  const result = await runLoad(
    autocannonOptions(target, scenario, options.duration, options),
    (_status, ms) => histogram.record(Math.max(1, Math.round(ms * 1000))),
    (error) => {
      const message = error.message || error.name;
      errorMessages[message] = (errorMessages[message] ?? 0) + 1;
    },
  );
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const stub1 = cpuSecondsOf(stub.pid);
  const gw1 = target.gateway ? cpuSecondsOf(target.gateway.pid) : undefined;
  const machine1 = machineTicks();
  stopSampling();
  const gatewayMemory = target.gateway ? (memoryOf(target.gateway.pid) ?? null) : null;
  target.sent += result.requests.sent;
  target.completed += result.requests.total;

  const cores = (a: number | undefined, b: number | undefined): number | null =>
    a === undefined || b === undefined ? null : round2((b - a) / wall);
  const loadgen = round2((cpu.user + cpu.system) / 1e6 / wall);
  const stubCores = cores(stub0, stub1);
  const gatewayCores = cores(gw0, gw1);
  let other: number | null = null;
  if (machine0 && machine1 && machine1.total > machine0.total) {
    const busy = ((machine1.busy - machine0.busy) / (machine1.total - machine0.total)) * cpus().length;
    other = round2(Math.max(0, busy - loadgen - (stubCores ?? 0) - (gatewayCores ?? 0)));
  }
  const statusCodes: Record<string, number> = {};
  for (const [code, stat] of Object.entries(result.statusCodeStats)) statusCodes[code] = stat.count;
  const ms = (p: number): number => round2(histogram.percentile(p) / 1000) || 0;
  return {
    round,
    scenario: scenario.name,
    target: target.name,
    durationS: result.duration,
    completed: result.requests.total,
    sent: result.requests.sent,
    rps: Math.round(result.requests.total / result.duration),
    latencyMs: {
      p50: ms(50),
      p90: ms(90),
      p99: ms(99),
      mean: round2(histogram.mean / 1000) || 0,
      max: round2(histogram.max / 1000) || 0,
    },
    errors: result.errors,
    timeouts: result.timeouts,
    non2xx: result.non2xx,
    resets: result.resets,
    statusCodes,
    errorMessages,
    cpuCores: { loadgen, stub: stubCores, gateway: gatewayCores, other },
    gatewayCpuUsPerRequest:
      gw0 === undefined || gw1 === undefined || result.requests.total === 0
        ? null
        : Math.round(((gw1 - gw0) / result.requests.total) * 1e6),
    gatewayMemory,
  };
}

// ---------------------------------------------------------------------------------------------
// Fixed rate: one paced run

interface FixedRun {
  round: number;
  scenario: string;
  target: TargetName;
  offeredRate: number;
  sendRate: number;
  achievedRate: number;
  planned: number;
  sent: number;
  ok: number;
  non200: number;
  badBodies: number;
  errors: number;
  statusCodes: Record<string, number>;
  errorMessages: Record<string, number>;
  sendLagMs: PacedResult['sendLagMs'];
  /** Milliseconds, over the correct responses of this run. */
  totalMs: { p50: number; p99: number };
  firstByteMs: { p50: number; p99: number };
  headMs: { p50: number; p99: number };
  gatewayCpuUsPerRequest: number | null;
  /** Cores used by anything but the load generator, stub and gateway during the run (other work on the machine, PostgreSQL, Redis). */
  otherCores: number | null;
}

/** Histograms of the fixed-rate runs, merged over rounds, by scenario then target. */
const fixedHistograms = new Map<
  string,
  { total: RecordableHistogram; firstByte: RecordableHistogram; head: RecordableHistogram }
>();

function histogramsOf(scenario: string, target: TargetName) {
  const id = `${scenario}\u0000${target}`;
  let entry = fixedHistograms.get(id);
  if (!entry) {
    entry = { total: newHistogram(), firstByte: newHistogram(), head: newHistogram() };
    fixedHistograms.set(id, entry);
  }
  return entry;
}

async function measureFixed(
  round: number,
  target: Target,
  scenario: Scenario,
  stub: Child,
  options: Options,
): Promise<FixedRun> {
  const base = {
    url: target.url + scenario.path,
    headers: headersFor(target, scenario),
    body: scenario.body,
    rate: options.rate,
    dispatcher: target.dispatcher,
    check: scenario.check,
    timeoutMs: REQUEST_TIMEOUT_S * 1000,
    stopped: () => interrupted,
  };
  if (options.warmup > 0) {
    const warm = await runPaced({ ...base, durationS: options.warmup });
    target.sent += warm.sent;
    target.completed += warm.completed;
  }
  const stopSampling = sampleRss(target);
  const gw0 = target.gateway ? cpuSecondsOf(target.gateway.pid) : undefined;
  const stub0 = cpuSecondsOf(stub.pid);
  const cpu0 = process.cpuUsage();
  const machine0 = machineTicks();
  const t0 = process.hrtime.bigint();
  const result = await runPaced({ ...base, durationS: options.fixedDuration });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const machine1 = machineTicks();
  const cpu = process.cpuUsage(cpu0);
  const stub1 = cpuSecondsOf(stub.pid);
  const gw1 = target.gateway ? cpuSecondsOf(target.gateway.pid) : undefined;
  stopSampling();
  let otherCores: number | null = null;
  if (machine0 && machine1 && machine1.total > machine0.total && stub0 !== undefined && stub1 !== undefined) {
    const busy = ((machine1.busy - machine0.busy) / (machine1.total - machine0.total)) * cpus().length;
    const ours =
      (cpu.user + cpu.system) / 1e6 / wall +
      (stub1 - stub0) / wall +
      (gw0 !== undefined && gw1 !== undefined ? (gw1 - gw0) / wall : 0);
    otherCores = round2(Math.max(0, busy - ours));
  }
  target.sent += result.sent;
  target.completed += result.completed;
  const merged = histogramsOf(scenario.name, target.name);
  merged.total.add(result.total);
  merged.firstByte.add(result.firstByte);
  merged.head.add(result.head);
  return {
    round,
    scenario: scenario.name,
    target: target.name,
    offeredRate: result.offeredRate,
    sendRate: result.sendRate,
    achievedRate: result.achievedRate,
    planned: result.planned,
    sent: result.sent,
    ok: result.ok,
    non200: result.non200,
    badBodies: result.badBodies,
    errors: result.errors,
    statusCodes: result.statusCodes,
    errorMessages: result.errorMessages,
    sendLagMs: result.sendLagMs,
    totalMs: { p50: pct(result.total, 50), p99: pct(result.total, 99) },
    firstByteMs: { p50: pct(result.firstByte, 50), p99: pct(result.firstByte, 99) },
    headMs: { p50: pct(result.head, 50), p99: pct(result.head, 99) },
    gatewayCpuUsPerRequest:
      gw0 === undefined || gw1 === undefined || result.completed === 0
        ? null
        : Math.round(((gw1 - gw0) / result.completed) * 1e6),
    otherCores,
  };
}

// ---------------------------------------------------------------------------------------------
// Sanity check: one request per scenario and target, validating the HTTPS certificate.

async function sanityCheck(targets: Target[]): Promise<string[]> {
  const problems: string[] = [];
  for (const target of targets) {
    for (const scenario of SCENARIOS) {
      try {
        const res = await request(target.url + scenario.path, {
          method: 'POST',
          headers: headersFor(target, scenario),
          body: scenario.body,
          dispatcher: target.dispatcher,
        });
        const text = await res.body.text();
        target.sent += 1;
        target.completed += 1;
        if (res.statusCode !== 200 || !scenario.check(text)) {
          problems.push(
            `${target.name} ${scenario.name}: status ${res.statusCode}, unexpected body: ${text.slice(0, 300)}`,
          );
        }
      } catch (error) {
        problems.push(`${target.name} ${scenario.name}: ${(error as Error).message}`);
      }
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Summaries

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return 0;
  if (sorted.length % 2 === 1) return sorted[mid] ?? 0;
  return ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

interface SummaryRow {
  scenario: string;
  target: TargetName;
  rounds: number;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  /** Transport errors + timeouts, summed over rounds. */
  errors: number;
  non2xx: number;
  /** req/s ÷ direct req/s (null for direct). */
  throughputRatio: number | null;
  cpuCores: CpuCores;
  gatewayCpuUsPerRequest: number | null;
  gatewayRssBytes: number | null;
}

function summarize(runs: RunResult[], targets: TargetName[]): SummaryRow[] {
  const rows: SummaryRow[] = [];
  for (const scenario of SCENARIOS) {
    let direct: SummaryRow | undefined;
    for (const target of targets) {
      const mine = runs.filter((r) => r.scenario === scenario.name && r.target === target);
      if (mine.length === 0) continue;
      const med = (pick: (r: RunResult) => number): number => round2(median(mine.map(pick)));
      const medOrNull = (pick: (r: RunResult) => number | null): number | null => {
        const values = mine.map(pick).filter((v): v is number => v !== null);
        return values.length === 0 ? null : round2(median(values));
      };
      const row: SummaryRow = {
        scenario: scenario.name,
        target,
        rounds: mine.length,
        rps: Math.round(median(mine.map((r) => r.rps))),
        p50: med((r) => r.latencyMs.p50),
        p90: med((r) => r.latencyMs.p90),
        p99: med((r) => r.latencyMs.p99),
        errors: mine.reduce((sum, r) => sum + r.errors + r.timeouts, 0),
        non2xx: mine.reduce((sum, r) => sum + r.non2xx, 0),
        throughputRatio: null,
        cpuCores: {
          loadgen: med((r) => r.cpuCores.loadgen),
          stub: medOrNull((r) => r.cpuCores.stub),
          gateway: medOrNull((r) => r.cpuCores.gateway),
          other: medOrNull((r) => r.cpuCores.other),
        },
        gatewayCpuUsPerRequest: medOrNull((r) => r.gatewayCpuUsPerRequest),
        gatewayRssBytes: medOrNull((r) => r.gatewayMemory?.rss ?? null),
      };
      if (target === 'direct') direct = row;
      else if (direct && direct.rps > 0)
        row.throughputRatio = Math.round((row.rps / direct.rps) * 1000) / 1000;
      rows.push(row);
    }
  }
  return rows;
}

interface FixedRow {
  scenario: string;
  target: TargetName;
  offeredRate: number;
  /** Lowest over rounds. */
  achievedRate: number;
  rateHeld: boolean;
  sent: number;
  ok: number;
  bad: number;
  /** Over all rounds' correct responses, ms. */
  p50: number;
  p99: number;
  ttfbP50: number;
  ttfbP99: number;
  headP50: number;
  addedP50: number | null;
  addedP99: number | null;
  ttfbAddedP50: number | null;
  ttfbAddedP99: number | null;
  sendLagP99Ms: number;
  gatewayCpuUsPerRequest: number | null;
  /** Highest over rounds. */
  otherCores: number | null;
}

function summarizeFixed(runs: FixedRun[], targets: TargetName[], scenarios: string[]): FixedRow[] {
  const rows: FixedRow[] = [];
  for (const scenario of scenarios) {
    let direct: FixedRow | undefined;
    for (const target of targets) {
      const mine = runs.filter((r) => r.scenario === scenario && r.target === target);
      if (mine.length === 0) continue;
      const h = histogramsOf(scenario, target);
      const achieved = Math.min(...mine.map((r) => r.achievedRate));
      const cpu = mine.map((r) => r.gatewayCpuUsPerRequest).filter((v): v is number => v !== null);
      const row: FixedRow = {
        scenario,
        target,
        offeredRate: mine[0]?.offeredRate ?? 0,
        achievedRate: achieved,
        rateHeld: mine.every((r) => r.achievedRate >= RATE_HELD * r.offeredRate),
        sent: mine.reduce((s, r) => s + r.sent, 0),
        ok: mine.reduce((s, r) => s + r.ok, 0),
        bad: mine.reduce((s, r) => s + r.non200 + r.badBodies + r.errors, 0),
        p50: pct(h.total, 50),
        p99: pct(h.total, 99),
        ttfbP50: pct(h.firstByte, 50),
        ttfbP99: pct(h.firstByte, 99),
        headP50: pct(h.head, 50),
        addedP50: null,
        addedP99: null,
        ttfbAddedP50: null,
        ttfbAddedP99: null,
        sendLagP99Ms: Math.max(...mine.map((r) => r.sendLagMs.p99)),
        gatewayCpuUsPerRequest: cpu.length > 0 ? Math.round(median(cpu)) : null,
        otherCores: mine.some((r) => r.otherCores !== null)
          ? Math.max(...mine.map((r) => r.otherCores ?? 0))
          : null,
      };
      if (target === 'direct') direct = row;
      else if (direct) {
        row.addedP50 = round2(row.p50 - direct.p50);
        row.addedP99 = round2(row.p99 - direct.p99);
        row.ttfbAddedP50 = round2(row.ttfbP50 - direct.ttfbP50);
        row.ttfbAddedP99 = round2(row.ttfbP99 - direct.ttfbP99);
      }
      rows.push(row);
    }
  }
  return rows;
}

function fixed(n: number | null | undefined, digits = 2, sign = false): string {
  if (n === null || n === undefined) return '—';
  const text = n.toFixed(digits);
  return sign && n >= 0 ? `+${text}` : text;
}

function markdownTable(header: string[], rows: string[][], rightAligned: boolean[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const pad = (cell: string, i: number): string =>
    rightAligned[i] ? cell.padStart(widths[i] ?? 0) : cell.padEnd(widths[i] ?? 0);
  const line = (cells: string[]): string => `| ${cells.map(pad).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (rightAligned[i] ? `${'-'.repeat(w + 1)}:` : `:${'-'.repeat(w + 1)}`)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

function saturationTable(rows: SummaryRow[]): string {
  const header = [
    'scenario',
    'target',
    'req/s',
    'vs direct',
    'p50 ms',
    'p90 ms',
    'p99 ms',
    'err / non-2xx',
    'CPU lg/stub/gw/other',
    'gw CPU µs/req',
    'gw RSS MB',
  ];
  const body = rows.map((r) => [
    r.scenario,
    r.target,
    String(r.rps),
    r.throughputRatio === null ? '—' : `${(r.throughputRatio * 100).toFixed(1)} %`,
    fixed(r.p50),
    fixed(r.p90),
    fixed(r.p99),
    `${r.errors} / ${r.non2xx}`,
    [r.cpuCores.loadgen, r.cpuCores.stub, r.cpuCores.gateway, r.cpuCores.other]
      .map((c) => fixed(c, 1))
      .join('/'),
    r.gatewayCpuUsPerRequest === null ? '—' : String(Math.round(r.gatewayCpuUsPerRequest)),
    r.gatewayRssBytes === null ? '—' : (r.gatewayRssBytes / MB).toFixed(0),
  ]);
  return markdownTable(
    header,
    body,
    header.map((_, i) => i >= 2),
  );
}

function fixedTable(rows: FixedRow[]): string {
  const header = [
    'scenario',
    'target',
    'offered → achieved req/s',
    'ok / bad',
    'p50 ms',
    'p99 ms',
    '+p50 ms',
    '+p99 ms',
    'TTFB p50 / p99 ms',
    '+TTFB p50 / p99 ms',
    'send lag p99 ms',
    'gw CPU µs/req',
    'other CPU',
  ];
  const body = rows.map((r) => {
    const stream = r.scenario === 'chat-stream';
    return [
      r.scenario,
      r.target,
      `${r.offeredRate} → ${r.achievedRate}${r.rateHeld ? '' : ' (not held)'}`,
      `${r.ok} / ${r.bad}`,
      fixed(r.p50),
      fixed(r.p99),
      fixed(r.addedP50, 2, true),
      fixed(r.addedP99, 2, true),
      stream ? `${fixed(r.ttfbP50)} / ${fixed(r.ttfbP99)}` : '—',
      stream && r.ttfbAddedP50 !== null
        ? `${fixed(r.ttfbAddedP50, 2, true)} / ${fixed(r.ttfbAddedP99, 2, true)}`
        : '—',
      fixed(r.sendLagP99Ms),
      r.gatewayCpuUsPerRequest === null ? '—' : String(r.gatewayCpuUsPerRequest),
      fixed(r.otherCores, 1),
    ];
  });
  return markdownTable(
    header,
    body,
    header.map((_, i) => i >= 2),
  );
}

interface GoalCheck {
  goal: string;
  scope: string;
  value: string;
  met: boolean | null;
}

function mark(met: boolean | null): string {
  return met === null ? '?' : met ? '✓' : '✗';
}

function goalChecks(
  summary: SummaryRow[],
  fixedRows: FixedRow[],
  rss: Record<string, { max: number; peak: number | null }>,
  options: Options,
): GoalCheck[] {
  const checks: GoalCheck[] = [];
  const sat = (scenario: string, target: TargetName) =>
    summary.find((r) => r.scenario === scenario && r.target === target);
  const fix = (scenario: string, target: TargetName) =>
    fixedRows.find((r) => r.scenario === scenario && r.target === target);
  const pctText = (ratio: number) => `${(ratio * 100).toFixed(1)} %`;
  for (const scenario of SCENARIOS.map((s) => s.name)) {
    const direct = sat(scenario, 'direct');
    const kg = sat(scenario, 'keygate');
    const pg = sat(scenario, 'keygate-pg');
    const pk = sat(scenario, 'portkey');
    for (const [name, row] of [
      ['keygate', kg],
      ['keygate-workers', sat(scenario, 'keygate-workers')],
    ] as const) {
      if (!row || !direct || direct.rps <= 0) continue;
      const ratio = row.rps / direct.rps;
      checks.push({
        goal: `throughput ${name} / direct ≥ ${GOALS.throughputVsDirect * 100} %`,
        scope: scenario,
        value: pctText(ratio),
        met: ratio >= GOALS.throughputVsDirect,
      });
    }
    if (kg && pk && pk.rps > 0) {
      const ratio = kg.rps / pk.rps;
      checks.push({
        goal: `throughput keygate / portkey ≥ ${GOALS.throughputVsPortkey}×`,
        scope: scenario,
        value: `${ratio.toFixed(2)}×`,
        met: ratio >= GOALS.throughputVsPortkey,
      });
    }
    if (kg && pg && kg.rps > 0) {
      const ratio = pg.rps / kg.rps;
      checks.push({
        goal: `throughput keygate-pg / keygate ≥ ${GOALS.pgVsEmbedded * 100} %`,
        scope: scenario,
        value: pctText(ratio),
        met: ratio >= GOALS.pgVsEmbedded,
      });
    }
  }
  for (const target of ['keygate', 'keygate-pg'] as const) {
    for (const scenario of options.fixedScenarios) {
      const row = fix(scenario, target);
      if (!row || row.addedP50 === null || row.addedP99 === null) continue;
      const held = row.rateHeld ? '' : ` (rate not held: ${row.achievedRate} req/s)`;
      // A load generator held up (in this run or direct's) makes the difference meaningless: '?'.
      const direct = fix(scenario, 'direct');
      const noisy = [row, direct].some((r) => r === undefined || r.sendLagP99Ms > SEND_LAG_WARN_MS);
      const noise = noisy ? ' (noisy: sends late, see the warnings)' : '';
      if (scenario === 'chat-stream') {
        checks.push({
          goal: `streaming TTFB +p50 ≤ ${GOALS.ttfbAddedP50Ms} ms at ${options.rate} req/s`,
          scope: `${target}`,
          value: `${fixed(row.ttfbAddedP50, 2, true)} ms (+p99 ${fixed(row.ttfbAddedP99, 2, true)})${held}${noise}`,
          met: noisy ? null : row.rateHeld && (row.ttfbAddedP50 ?? Infinity) <= GOALS.ttfbAddedP50Ms,
        });
      } else {
        checks.push({
          goal: `added latency +p50 ≤ ${GOALS.addedP50Ms} ms / +p99 ≤ ${GOALS.addedP99Ms} ms at ${options.rate} req/s`,
          scope: `${target} ${scenario}`,
          value: `${fixed(row.addedP50, 2, true)} / ${fixed(row.addedP99, 2, true)} ms${held}${noise}`,
          met: noisy
            ? null
            : row.rateHeld && row.addedP50 <= GOALS.addedP50Ms && row.addedP99 <= GOALS.addedP99Ms,
        });
      }
    }
    const memory = rss[target];
    if (memory && memory.max > 0)
      checks.push({
        goal: `RSS under the load ≤ ${GOALS.rssBytes / MB} MB`,
        scope: target,
        value: `${(memory.max / MB).toFixed(0)} MB (peak ${memory.peak === null ? '?' : (memory.peak / MB).toFixed(0)} MB)`,
        met: memory.max <= GOALS.rssBytes,
      });
  }
  return checks;
}

/** What the protections cost: keygate (every protection) against keygate-bare (none). */
function protectionPrice(summary: SummaryRow[]): string[][] {
  const rows: string[][] = [];
  for (const scenario of SCENARIOS.map((s) => s.name)) {
    const kg = summary.find((r) => r.scenario === scenario && r.target === 'keygate');
    const bare = summary.find((r) => r.scenario === scenario && r.target === 'keygate-bare');
    if (!kg?.gatewayCpuUsPerRequest || !bare?.gatewayCpuUsPerRequest || bare.rps === 0) continue;
    const extra = kg.gatewayCpuUsPerRequest - bare.gatewayCpuUsPerRequest;
    rows.push([
      scenario,
      String(Math.round(bare.gatewayCpuUsPerRequest)),
      String(Math.round(kg.gatewayCpuUsPerRequest)),
      `${extra >= 0 ? '+' : ''}${extra.toFixed(0)}`,
      `${((kg.rps / bare.rps) * 100).toFixed(1)} %`,
    ]);
  }
  return rows;
}

/** Gateway CPU per request above the baseline's by more than this share is marked as a regression. */
const BASELINE_TOLERANCE = 0.1;

/**
 * keygate against keygate-baseline, side by side in this run: CPU per request and throughput. Each
 * round's two runs are compared with each other (they ran minutes apart at most), and the median
 * of those ratios is judged: the machine's speed drifts from round to round, and one round can be
 * off by 20 % on its own. A regression is marked when the median is above the tolerance and no
 * round was below 1 (every round slower).
 */
function baselineChecks(runs: RunResult[], commit: string): GoalCheck[] {
  const checks: GoalCheck[] = [];
  for (const scenario of SCENARIOS.map((s) => s.name)) {
    const cpu: number[] = [];
    const rps: number[] = [];
    for (const run of runs) {
      if (run.scenario !== scenario || run.target !== 'keygate') continue;
      const base = runs.find(
        (r) => r.scenario === scenario && r.target === 'keygate-baseline' && r.round === run.round,
      );
      if (!run.gatewayCpuUsPerRequest || !base?.gatewayCpuUsPerRequest || base.rps === 0) continue;
      cpu.push(run.gatewayCpuUsPerRequest / base.gatewayCpuUsPerRequest);
      rps.push(run.rps / base.rps);
    }
    if (cpu.length === 0) continue;
    const ratio = median(cpu);
    const perRound = cpu.map((r) => `${(r * 100).toFixed(0)}`).join(' / ');
    checks.push({
      goal: `gateway CPU per request ≤ baseline ${commit.slice(0, 12)} + ${BASELINE_TOLERANCE * 100} %`,
      scope: scenario,
      value: `${(ratio * 100).toFixed(1)} % of the baseline's (rounds ${perRound} %; throughput ${(median(rps) * 100).toFixed(1)} %)`,
      met: !(ratio > 1 + BASELINE_TOLERANCE && Math.min(...cpu) > 1),
    });
  }
  return checks;
}

// ---------------------------------------------------------------------------------------------
// Metering check: what the gateways recorded against what the load generators sent.

interface Metering {
  target: TargetName;
  recordedRequests: number | null;
  recordedErrors: number | null;
  answered: number;
  sent: number;
  ok: boolean;
}

async function readMetering(target: Target, setup: KeygateSetup): Promise<Metering> {
  const base = { target: target.name, answered: target.completed, sent: target.sent };
  try {
    const parsed: unknown = JSON.parse(
      await keygateCli(['usage', '--json', ...cliArgs(setup)], setup.env, setup.bin),
    );
    if (!Array.isArray(parsed)) throw new Error('not an array');
    let requests = 0;
    let errors = 0;
    for (const row of parsed) {
      if (!isRecord(row)) continue;
      if (typeof row.requests === 'number') requests += row.requests;
      if (typeof row.errors === 'number') errors += row.errors;
    }
    return {
      ...base,
      recordedRequests: requests,
      recordedErrors: errors,
      ok: requests >= target.completed && requests <= target.sent,
    };
  } catch (error) {
    process.stderr.write(`bench: could not read usage of ${target.name}: ${(error as Error).message}\n`);
    return { ...base, recordedRequests: null, recordedErrors: null, ok: false };
  }
}

// ---------------------------------------------------------------------------------------------
// Main

function log(line = ''): void {
  process.stderr.write(`${line}\n`);
}

function machine() {
  const list = cpus();
  return {
    cpuModel: list[0]?.model ?? 'unknown',
    cpuCount: list.length,
    totalMemoryBytes: totalmem(),
    platform: platform(),
    release: release(),
    arch: process.arch,
    node: process.version,
  };
}

/** Rotates a list by `by` places, so that no target is always measured first. */
function rotate<T>(list: T[], by: number): T[] {
  if (list.length === 0) return list;
  const k = by % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const options = parseOptions(argv);
  const command = `npm run bench${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`;
  const started = new Date();
  const date = started.toISOString().slice(0, 10);
  const problems: string[] = [];
  const warnings: string[] = [];
  const skipped: Record<string, string> = {};
  /** Run in reverse order at the end, whatever happens. */
  const undo: { what: string; run: () => Promise<unknown> | unknown }[] = [];
  /** The commit run as keygate-baseline (--baseline). */
  let baselineCommit: string | undefined;
  const targets: Target[] = [];

  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> => {
    cleaning ??= (async () => {
      currentInstance?.stop();
      await stopAll();
      await Promise.all(targets.map((t) => t.dispatcher.destroy().catch(() => {})));
      for (const step of undo.reverse()) {
        try {
          await step.run();
        } catch (error) {
          log(`!!! cleanup: could not ${step.what}: ${(error as Error).message}`);
        }
      }
    })();
    return cleaning;
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    log(`\nbench: ${signal}, stopping the children and deleting what the run made...`);
    cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const satRuns = SCENARIOS.length * options.rounds * (options.warmup + options.duration + 0.3);
    const fixRuns =
      options.fixedScenarios.length * options.rounds * (options.warmup + options.fixedDuration + 0.3);
    log(
      `Keygate benchmark: targets ${options.targets.join(', ')}; saturation ${options.connections} connections × ` +
        `${options.duration} s, fixed rate ${options.rate} req/s × ${options.fixedDuration} s ` +
        `(${options.fixedScenarios.join(', ')}); ${options.rounds} round(s), ${options.warmup} s warm-up each; ` +
        `about ${Math.ceil(((satRuns + fixRuns) * options.targets.length + 20) / 60)} min.`,
    );
    const stub = await startStub(options.stubLatency);
    log(`  upstream stub: ${stub.url} (pid ${stub.pid})`);
    const children: Child[] = [stub];
    const stubUrl = stub.url;

    const newTarget = (
      name: TargetName,
      url: string,
      key: string,
      more: Partial<Pick<Target, 'ca' | 'gateway' | 'keygate' | 'extraHeaders'>> = {},
    ): Target => ({
      name,
      url,
      key,
      extraHeaders: more.extraHeaders ?? {},
      ca: more.ca,
      gateway: more.gateway,
      keygate: more.keygate,
      dispatcher: new Agent({ connections: 256, connect: more.ca ? { ca: more.ca } : {} }),
      sent: 0,
      completed: 0,
      rssMax: 0,
    });

    const startKeygate = async (
      name: TargetName,
      http: boolean,
      shared: boolean,
      workers = 1,
      bin?: string,
      bare = false,
    ): Promise<void> => {
      const dataDir = mkdtempSync(join(tmpdir(), `keygate-bench-${name}-`));
      undo.push({ what: `delete ${dataDir}`, run: () => rmSync(dataDir, { recursive: true, force: true }) });
      // JSON is YAML. The access log (info level, stdout) is on; stdout goes to /dev/null.
      // keygate-bare: no access log (warnings only) and a key without limits, budget or allowlist.
      const config: Record<string, unknown> = { log: { level: bare ? 'warn' : 'info' } };
      const env: Record<string, string> = {};
      if (shared) {
        const database = await createBenchDatabase();
        undo.push({ what: `drop database ${database.name}`, run: () => dropBenchDatabase(database.name) });
        const prefix = benchPrefix();
        undo.push({ what: `delete the Redis keys ${prefix}*`, run: () => deleteRedisPrefix(prefix) });
        // deny: a Redis failure shows as 503s instead of silently measuring the local fallback.
        config.redis = { prefix };
        config.limits = { onRedisFailure: 'deny' };
        env.DATABASE_URL = database.url;
        env.REDIS_URL = REDIS_URL;
        env.KEYGATE_SECRET = randomBytes(48).toString('base64');
        log(`  ${name}: database ${database.name}, Redis prefix ${prefix}`);
      }
      const configFile = join(dataDir, 'bench-config.yaml');
      writeFileSync(configFile, `${JSON.stringify(config, null, 2)}\n`);
      const setup: KeygateSetup = { dataDir, configFile, env, bin };
      const key = await createBenchKey(setup, bare);
      const gateway = await startGateway({
        name,
        dataDir,
        configFile,
        http,
        upstreamUrl: stubUrl,
        upstreamKey: UPSTREAM_KEY,
        env,
        workers,
        bin,
      });
      children.push(gateway);
      const ca = http ? undefined : readFileSync(join(dataDir, 'tls', 'cert.pem'), 'utf8');
      const target = newTarget(name, gateway.url, key, { gateway, keygate: setup, ca });
      targets.push(target);
      if (shared) {
        const res = await request(`${gateway.url}/readyz`, { dispatcher: target.dispatcher });
        const text = await res.body.text();
        if (res.statusCode !== 200 || !text.includes('"store":"ok"') || !text.includes('"limits":"redis"'))
          throw new Error(`${name} is not ready on PostgreSQL and Redis: ${res.statusCode} ${text}`);
      }
      log(`  ${name}: ${gateway.url} (pid ${gateway.pid})`);
    };

    for (const name of options.targets) {
      if (interrupted) break;
      if (name === 'direct') targets.push(newTarget('direct', stubUrl, UPSTREAM_KEY));
      else if (name === 'keygate') await startKeygate(name, true, false);
      else if (name === 'keygate-https') await startKeygate(name, false, false);
      else if (name === 'keygate-bare') await startKeygate(name, true, false, 1, undefined, true);
      else if (name === 'keygate-baseline') {
        const rev = options.baseline ?? 'HEAD';
        log(`  ${name}: building ${rev} in a temporary worktree`);
        const baseline = buildBaseline(rev);
        undo.push({ what: `remove the worktree of ${rev}`, run: baseline.remove });
        baselineCommit = baseline.commit;
        await startKeygate(name, true, false, 1, baseline.bin);
      } else if (name === 'keygate-workers') {
        await startKeygate(name, true, false, 2);
      } else if (name === 'keygate-pg') {
        const reason = (await postgresUnavailable()) ?? (await redisUnavailable());
        if (reason) {
          skipped[name] = reason;
          log(`  ${name}: SKIPPED (${reason})`);
          continue;
        }
        await startKeygate(name, true, true);
      } else if (name === 'portkey') {
        const reason = portkeyUnavailable();
        if (reason) {
          skipped[name] = reason;
          log(`  ${name}: SKIPPED (${reason})`);
          continue;
        }
        const portkey = await startPortkey();
        children.push(portkey);
        targets.push(
          newTarget('portkey', portkey.url, UPSTREAM_KEY, {
            gateway: portkey,
            extraHeaders: { 'x-portkey-provider': 'mistral-ai', 'x-portkey-custom-host': `${stubUrl}/v1` },
          }),
        );
        log(`  portkey: ${portkey.url} (pid ${portkey.pid}), routed to the stub as provider mistral-ai`);
      }
    }
    if (interrupted) return 130;

    const sanity = await sanityCheck(targets);
    if (sanity.length > 0) {
      for (const p of sanity) log(`!!! sanity check failed: ${p}`);
      problems.push(...sanity.map((p) => `sanity check: ${p}`));
      throw new Error('the targets do not answer correctly; not running the load');
    }
    log('  sanity check: every target answers every scenario correctly (status 200, a real body)\n');

    const checkAlive = (): void => {
      const dead = crashed(children);
      if (dead.length === 0) return;
      for (const child of dead)
        problems.push(
          `${child.name} exited during the load (${JSON.stringify(child.exit)}):\n${tail(child)}`,
        );
      throw new Error(`${dead.map((c) => c.name).join(', ')} exited during the load`);
    };
    const pause = () => new Promise((resolve) => setTimeout(resolve, PAUSE_BETWEEN_RUNS_MS));

    // Saturation.
    const runs: RunResult[] = [];
    for (let round = 1; round <= options.rounds && !interrupted; round++) {
      for (const scenario of SCENARIOS) {
        for (const target of rotate(targets, round - 1)) {
          if (interrupted) break;
          const run = await measure(round, target, scenario, stub, options);
          if (interrupted) break;
          runs.push(run);
          const bad = run.errors + run.timeouts + run.non2xx;
          log(
            `  saturation ${round}/${options.rounds}  ${scenario.name.padEnd(11)} ${target.name.padEnd(13)}` +
              ` ${String(run.rps).padStart(6)} req/s  p50 ${fixed(run.latencyMs.p50).padStart(6)} ms` +
              `  p99 ${fixed(run.latencyMs.p99).padStart(7)} ms  gw ${run.gatewayCpuUsPerRequest ?? '—'} µs/req` +
              `  other CPU ${fixed(run.cpuCores.other, 1)}${bad > 0 ? `  !!! ${bad} errors/non-2xx` : ''}`,
          );
          if (bad > 0)
            problems.push(
              `saturation ${scenario.name} ${target.name} round ${round}: ${run.errors} errors, ${run.timeouts} timeouts, ` +
                `${run.non2xx} non-2xx; status codes ${JSON.stringify(run.statusCodes)}; ` +
                `error messages ${JSON.stringify(run.errorMessages)}`,
            );
          checkAlive();
          await pause();
        }
      }
    }

    // Fixed rate.
    const fixedRuns: FixedRun[] = [];
    const fixedScenarios = SCENARIOS.filter((s) => options.fixedScenarios.includes(s.name));
    for (let round = 1; round <= options.rounds && !interrupted; round++) {
      for (const scenario of fixedScenarios) {
        for (const target of rotate(targets, round - 1)) {
          if (interrupted) break;
          const run = await measureFixed(round, target, scenario, stub, options);
          if (interrupted) break;
          fixedRuns.push(run);
          const bad = run.non200 + run.badBodies + run.errors;
          log(
            `  fixed rate ${round}/${options.rounds}  ${scenario.name.padEnd(11)} ${target.name.padEnd(13)}` +
              ` ${run.offeredRate} → ${String(run.achievedRate).padStart(4)} req/s` +
              `  p50 ${fixed(run.totalMs.p50).padStart(6)} ms  p99 ${fixed(run.totalMs.p99).padStart(7)} ms` +
              (scenario.stream
                ? `  TTFB p50 ${fixed(run.firstByteMs.p50)} p99 ${fixed(run.firstByteMs.p99)} ms`
                : '') +
              `  send lag p99 ${fixed(run.sendLagMs.p99)} ms  other CPU ${fixed(run.otherCores, 1)}` +
              `${bad > 0 ? `  !!! ${bad} bad` : ''}`,
          );
          if (bad > 0)
            problems.push(
              `fixed rate ${scenario.name} ${target.name} round ${round}: ${run.non200} non-200, ${run.badBodies} bad bodies, ` +
                `${run.errors} errors; status codes ${JSON.stringify(run.statusCodes)}; ` +
                `error messages ${JSON.stringify(run.errorMessages)}`,
            );
          if (run.sendRate < 0.98 * run.offeredRate)
            problems.push(
              `fixed rate ${scenario.name} ${target.name} round ${round}: the load generator sent only ` +
                `${run.sendRate} req/s of the ${run.offeredRate} offered (send lag p99 ${run.sendLagMs.p99} ms)`,
            );
          if (run.sendLagMs.p99 > SEND_LAG_WARN_MS)
            warnings.push(
              `fixed rate ${scenario.name} ${target.name} round ${round}: sends were ${run.sendLagMs.p99} ms late at p99 (` +
                `other work used ${fixed(run.otherCores, 1)} cores): the load generator's event loop was held up, and its ` +
                "timestamps with it; this run's tail latency is not trustworthy",
            );
          if (run.sendRate >= 0.98 * run.offeredRate && run.achievedRate < RATE_HELD * run.offeredRate)
            warnings.push(
              `fixed rate ${scenario.name} ${target.name} round ${round}: ${run.achievedRate} correct answers/s ` +
                `for ${run.offeredRate} offered: the target did not keep up, its latency is queueing`,
            );
          checkAlive();
          await pause();
        }
      }
    }
    if (interrupted) return 130;

    const rss: Record<string, { max: number; peak: number | null }> = {};
    for (const target of targets)
      if (target.gateway)
        rss[target.name] = { max: target.rssMax, peak: memoryOf(target.gateway.pid)?.peakRss ?? null };

    // Stop the gateways gracefully (this flushes Keygate's usage) and compare what they metered.
    await Promise.all(targets.map((t) => (t.gateway ? stopChild(t.gateway) : undefined)));
    const metering: Metering[] = [];
    for (const target of targets)
      if (target.keygate) metering.push(await readMetering(target, target.keygate));
    for (const m of metering)
      if (!m.ok)
        problems.push(
          `metering of ${m.target}: recorded ${m.recordedRequests} requests, but the load generators had ` +
            `${m.answered} answered out of ${m.sent} sent`,
        );

    const names = targets.map((t) => t.name);
    const summary = summarize(runs, names);
    const fixedRows = summarizeFixed(fixedRuns, names, options.fixedScenarios);
    const checks = goalChecks(summary, fixedRows, rss, options);
    if (baselineCommit) checks.push(...baselineChecks(runs, baselineCommit));
    const prices = protectionPrice(summary);
    const busiest = Math.max(0, ...runs.map((r) => r.cpuCores.other ?? 0));
    const mach = machine();
    const machineLine =
      `${mach.cpuCount} × ${mach.cpuModel}, ${(mach.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB RAM, ` +
      `${mach.platform} ${mach.release} ${mach.arch}, Node ${mach.node}`;
    const base = `${date}${options.quick ? '-quick' : ''}${options.label ? `-${options.label}` : ''}`;

    const gatewayNames = names.filter((n) => n !== 'direct');
    const svg = renderChart({
      title: `Keygate benchmark, ${date}${options.quick ? ' (quick)' : ''}`,
      subtitle: `${mach.cpuCount} × ${mach.cpuModel}, Node ${mach.node}; stub, gateways and load generator on one machine; \`${command}\``,
      throughput: {
        scenarios: SCENARIOS.map((s) => s.name),
        targets: names,
        rps: Object.fromEntries(
          SCENARIOS.map((s) => [
            s.name,
            Object.fromEntries(
              names.map((n) => [
                n,
                summary.find((r) => r.scenario === s.name && r.target === n)?.rps ?? null,
              ]),
            ),
          ]),
        ),
      },
      added: {
        title: `Latency added over direct at ${options.rate} req/s (ms, lower is better)`,
        groups: options.fixedScenarios.map((s) => (s === 'chat-stream' ? 'chat-stream (TTFB)' : s)),
        gateways: gatewayNames,
        values: Object.fromEntries(
          options.fixedScenarios.map((s) => [
            s === 'chat-stream' ? 'chat-stream (TTFB)' : s,
            Object.fromEntries(
              gatewayNames.map((n) => {
                const row = fixedRows.find((r) => r.scenario === s && r.target === n);
                const p50 = s === 'chat-stream' ? row?.ttfbAddedP50 : row?.addedP50;
                const p99 = s === 'chat-stream' ? row?.ttfbAddedP99 : row?.addedP99;
                return [
                  n,
                  p50 === null || p50 === undefined || p99 === null || p99 === undefined
                    ? null
                    : { p50, p99 },
                ];
              }),
            ),
          ]),
        ),
        lines: [
          { value: GOALS.addedP50Ms, label: `target +p50 ≤ ${GOALS.addedP50Ms} ms` },
          { value: GOALS.addedP99Ms, label: `target +p99 ≤ ${GOALS.addedP99Ms} ms` },
        ],
      },
    });

    const mb = (bytes: number | null | undefined): string =>
      bytes === undefined || bytes === null ? '?' : `${(bytes / MB).toFixed(0)} MB`;
    const elapsedS = Math.round((Date.now() - started.getTime()) / 1000);
    const markdown = [
      `# Keygate benchmark, ${date}${options.quick ? ' (quick)' : ''}`,
      '',
      `- Machine: ${machineLine}. Load generators, stub and gateways share it.`,
      `- Command: \`${command}\` (${elapsedS} s in all).`,
      `- Targets: ${names.map((n) => `\`${n}\``).join(', ')}${
        Object.keys(skipped).length > 0
          ? `; skipped: ${Object.entries(skipped)
              .map(([n, why]) => `\`${n}\` (${why})`)
              .join('; ')}`
          : ''
      }.`,
      '  `direct` = the upstream stub itself (test/support/upstream-stub.ts' +
        `${options.stubLatency > 0 ? `, ${options.stubLatency} ms before each response` : ', no added delay'}); ` +
        '`keygate` = the gateway on its embedded SQLite store over plain HTTP; `keygate-https` the same over TLS; ' +
        (baselineCommit
          ? `\`keygate-baseline\` = the same as \`keygate\`, built from commit ${baselineCommit.slice(0, 12)} (\`--baseline ${options.baseline}\`) in a temporary worktree; `
          : '') +
        (names.includes('keygate-bare')
          ? '`keygate-bare` = the same as `keygate` with a key that has no limit, budget or IP allowlist and the access log off (metering and metrics stay: they cannot be turned off), to price the protections; '
          : '') +
        '`keygate-workers` = the same gateway with `--workers 2` (SQLite; the limits kept by the primary process, which the workers ask over IPC; CPU and RSS summed over its processes); `keygate-pg` = the gateway on a fresh PostgreSQL database and Redis (own key prefix, `limits.onRedisFailure: deny`); ' +
        '`portkey` = @portkey-ai/gateway (its Node build, `--headless`, provider `mistral-ai` with the stub as custom host, ' +
        'bench/portkey-stream-fix.ts preloaded so that its streams work at all). ' +
        'Every Keygate target has every protection on: a key with rpm, tpm and concurrency limits (high enough not to refuse), ' +
        'a monthly token budget, an IP allowlist (127.0.0.1/32, ::1/128); metering and the JSON access log on (to /dev/null).',
      `- Saturation: autocannon, ${options.connections} connections, closed loop, ${options.duration} s per run after ` +
        `${options.warmup} s of warm-up; scenarios ${SCENARIOS.map((s) => s.name).join(', ')}. ` +
        `Fixed rate: ${options.rate} req/s offered in an open loop (bench/paced.ts, undici), ${options.fixedDuration} s per run after ` +
        `${options.warmup} s of warm-up; scenarios ${options.fixedScenarios.join(', ')}. ` +
        `${options.rounds} round(s), the targets alternating (order rotated each round); saturation figures are medians over rounds, ` +
        'fixed-rate percentiles are over every correct response of all rounds.',
      "- `+p50`/`+p99` = the target's percentile − direct's. TTFB = time from sending the request to the first byte of " +
        'the response body (the first SSE event), not just the headers. CPU in cores used by load generator / stub / ' +
        'gateway / anything else on the machine (for `keygate-pg` that includes PostgreSQL and Redis); `gw CPU µs/req` = gateway ' +
        'CPU time per request (at the fixed rate it includes background work: usage flushes, polls, timers). ' +
        '`send lag` = how late the fixed-rate generator sent against its schedule (latency is timed from the actual send).',
      '',
      `![benchmark chart](${base}.svg)`,
      '',
      '## Against the targets of issue #7',
      '',
      "✓ met, ✗ not met, ? not judged (the load generator was held up during the run or direct's: the difference is noise). " +
        'Throughput ratios are of saturation req/s; latency and TTFB at the fixed rate; RSS is the highest sampled under load.',
      '',
      markdownTable(
        ['', 'target', 'scope', 'measured'],
        checks.map((c) => [mark(c.met), c.goal, c.scope, c.value]),
        [false, false, false, true],
      ),
      '',
      ...(prices.length > 0
        ? [
            '## The price of the protections',
            '',
            'keygate (a key with rate limits, concurrency, a budget and an IP allowlist; the access log on) against keygate-bare (a key with none; the access log off), at saturation:',
            '',
            markdownTable(
              [
                'scenario',
                'bare µs/req',
                'protected µs/req',
                'difference µs',
                'throughput, protected / bare',
              ],
              prices,
              [false, true, true, true, true],
            ),
            '',
          ]
        : []),
      '## Saturation',
      '',
      saturationTable(summary),
      '',
      `## Fixed rate: ${options.rate} req/s`,
      '',
      fixedTable(fixedRows),
      '',
      '## Gateway memory',
      '',
      ...Object.entries(rss).map(
        ([name, m]) =>
          `- ${name}: highest RSS sampled under load ${mb(m.max)}, peak RSS of the process ${mb(m.peak)}`,
      ),
      '',
      '## Metering check',
      '',
      ...metering.map(
        (m) =>
          `- ${m.target}: metered ${m.recordedRequests ?? '?'} requests (${m.recordedErrors ?? '?'} errors: runs end with requests in flight); ` +
          `the load generators sent ${m.sent} and got ${m.answered} answers${m.ok ? '' : '  !!! MISMATCH'}`,
      ),
      '',
      busiest > NOISY_OTHER_CORES
        ? `Note: other work on the machine took up to ${busiest.toFixed(1)} cores during some saturation runs ` +
          '(see `cpuCores.other` in the JSON file); those figures are pessimistic and noisy.'
        : 'The machine was otherwise quiet during the saturation runs.',
      '',
      ...(warnings.length > 0 ? ['Warnings:', ...warnings.map((w) => `- ${w}`), ''] : []),
      problems.length === 0
        ? 'Every response was checked: no transport errors, timeouts, non-2xx responses or wrong bodies; the load generator held the offered rate.'
        : `PROBLEMS:\n${problems.map((p) => `- ${p}`).join('\n')}`,
      '',
    ].join('\n');

    const resultsDir = join(ROOT, 'bench', 'results');
    mkdirSync(resultsDir, { recursive: true });
    const path = join(resultsDir, base);
    writeFileSync(
      `${path}.json`,
      `${JSON.stringify(
        {
          date,
          startedAt: started.toISOString(),
          finishedAt: new Date().toISOString(),
          elapsedS,
          command,
          options,
          machine: mach,
          skipped,
          scenarios: SCENARIOS.map((s) => ({ name: s.name, path: s.path, body: s.body })),
          goals: GOALS,
          checks,
          saturation: { summary, runs },
          fixedRate: { summary: fixedRows, runs: fixedRuns },
          gatewayMemory: rss,
          metering,
          warnings,
          problems,
          ok: problems.length === 0,
        },
        null,
        2,
      )}\n`,
    );
    writeFileSync(`${path}.md`, markdown);
    writeFileSync(`${path}.svg`, svg);

    process.stdout.write(`\n${markdown}`);
    log(`\nResults written to ${path}.{json,md,svg} (${elapsedS} s)`);
    if (problems.length > 0) {
      log('\n!!! THE BENCHMARK SAW PROBLEMS (see above): the figures are not valid as they are.');
      return 1;
    }
    return 0;
  } catch (error) {
    log(`\n!!! bench failed: ${(error as Error).message}`);
    for (const p of problems) log(`!!! ${p}`);
    return 1;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    log(`bench: ${(error as Error).stack ?? String(error)}`);
    process.exit(1);
  },
);
