/**
 * `npm run bench`: the same load sent straight to the local upstream stub and through Keygate
 * (plain HTTP and HTTPS), with throughput, latency percentiles and their ratios.
 *
 *   npm run bench                      3 rounds × 8 s per scenario and target (about 5 minutes)
 *   npm run bench -- --quick           1 round × 3 s (under a minute)
 *   options: --duration S  --connections N  --rounds N  --warmup S  --rate R (fixed offered load, req/s)
 *
 * The stub and the two gateways run as child processes; the load generator (autocannon) runs
 * here. Everything listens on 127.0.0.1 and is stopped at the end or on Ctrl-C. Targets alternate
 * within each round and the median over rounds is reported, which cancels slow drift.
 * Results go to bench/results/<date>.json and .md (<date>-quick.* for --quick).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, platform, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { createHistogram } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { Agent, request } from 'undici';
import {
  type Child,
  cpuSecondsOf,
  crashed,
  keygateCli,
  type MemoryStatus,
  machineTicks,
  memoryOf,
  ROOT,
  startGateway,
  startStub,
  stopAll,
  stopChild,
  tail,
} from './processes.ts';

const UPSTREAM_KEY = 'upstream-secret-key';
const REQUEST_TIMEOUT_S = 10;
const PAUSE_BETWEEN_RUNS_MS = 250;
/** Cores used by other work during a run above which the summary says the machine was not quiet. */
const NOISY_OTHER_CORES = 0.3;

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  quick: boolean;
  duration: number;
  connections: number;
  rounds: number;
  warmup: number;
  /** Fixed offered load in req/s over all connections; 0 = closed loop, as fast as possible. */
  rate: number;
}

function positiveInt(name: string, value: string | undefined, fallback: number, allowZero = false): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < (allowZero ? 0 : 1)) {
    process.stderr.write(
      `bench: --${name} takes a ${allowZero ? 'non-negative' : 'positive'} integer, not "${value}"\n`,
    );
    process.exit(2);
  }
  return n;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      duration: { type: 'string' },
      connections: { type: 'string' },
      rounds: { type: 'string' },
      warmup: { type: 'string' },
      rate: { type: 'string' },
    },
    strict: true,
  });
  const quick = values.quick === true;
  return {
    quick,
    duration: positiveInt('duration', values.duration, quick ? 3 : 8),
    connections: positiveInt('connections', values.connections, 50),
    rounds: positiveInt('rounds', values.rounds, quick ? 1 : 3),
    warmup: positiveInt('warmup', values.warmup, 1, true),
    rate: positiveInt('rate', values.rate, 0, true),
  };
}

// ---------------------------------------------------------------------------------------------
// Scenarios and targets

interface Scenario {
  name: string;
  path: string;
  body: string;
  accept: string;
  /** True when a response body looks like a correct answer (checked once before the load). */
  check(body: string): boolean;
}

const SCENARIOS: Scenario[] = [
  {
    name: 'chat',
    path: '/v1/chat/completions',
    body: JSON.stringify({
      model: 'mistral-small-latest',
      messages: [{ role: 'user', content: 'Say hello to the benchmark in a few words.' }],
    }),
    accept: 'application/json',
    check: (body) => body.includes('"chat.completion"') && body.includes('Echo: Say hello'),
  },
  {
    name: 'chat-stream',
    path: '/v1/chat/completions',
    body: JSON.stringify({
      model: 'mistral-small-latest',
      messages: [{ role: 'user', content: 'Say hello to the benchmark in a few words.' }],
      stream: true,
    }),
    accept: 'text/event-stream',
    check: (body) => body.includes('"chat.completion.chunk"') && body.trimEnd().endsWith('data: [DONE]'),
  },
  {
    name: 'embeddings',
    path: '/v1/embeddings',
    body: JSON.stringify({ model: 'mistral-embed', input: ['The quick brown fox jumps over the lazy dog.'] }),
    accept: 'application/json',
    check: (body) => body.includes('"embedding"') && body.includes('"usage"'),
  },
];

type TargetName = 'direct' | 'keygate-http' | 'keygate-https';

interface Target {
  name: TargetName;
  url: string;
  key: string;
  /** PEM of the self-signed certificate, for HTTPS. */
  ca: string | undefined;
  /** The process whose memory and CPU are reported as the gateway's (none for direct). */
  gateway: Child | undefined;
  /** Requests the load generator sent and saw answered (for the metering check). */
  sent: number;
  completed: number;
}

function headersFor(target: Target, scenario: Scenario): Record<string, string> {
  return {
    authorization: `Bearer ${target.key}`,
    'content-type': 'application/json',
    accept: scenario.accept,
  };
}

// ---------------------------------------------------------------------------------------------
// One load run

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
  /** autocannon's own histogram (whole milliseconds), for reference. */
  autocannonLatencyMs: Pick<Latency, 'p50' | 'p90' | 'p99' | 'mean' | 'max'>;
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
  if (options.rate > 0) opts.overallRate = options.rate;
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
  const us = (p: number): number => round2(histogram.percentile(p) / 1000) || 0;
  return {
    round,
    scenario: scenario.name,
    target: target.name,
    durationS: result.duration,
    completed: result.requests.total,
    sent: result.requests.sent,
    rps: Math.round(result.requests.total / result.duration),
    latencyMs: {
      p50: us(50),
      p90: us(90),
      p99: us(99),
      mean: round2(histogram.mean / 1000) || 0,
      max: round2(histogram.max / 1000) || 0,
    },
    autocannonLatencyMs: {
      p50: result.latency.p50,
      p90: result.latency.p90,
      p99: result.latency.p99,
      mean: result.latency.mean,
      max: result.latency.max,
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
// Sanity check: one request per scenario and target, validating the HTTPS certificate.

async function sanityCheck(targets: Target[]): Promise<string[]> {
  const problems: string[] = [];
  for (const target of targets) {
    const dispatcher = new Agent({ connect: target.ca ? { ca: target.ca } : {} });
    try {
      for (const scenario of SCENARIOS) {
        try {
          const res = await request(target.url + scenario.path, {
            method: 'POST',
            headers: headersFor(target, scenario),
            body: scenario.body,
            dispatcher,
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
    } finally {
      await dispatcher.close();
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Summary

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
  /** keygate req/s ÷ direct req/s (null for direct). */
  throughputRatio: number | null;
  addedP50: number | null;
  addedP99: number | null;
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
        addedP50: null,
        addedP99: null,
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
      else if (direct) {
        row.throughputRatio = direct.rps > 0 ? Math.round((row.rps / direct.rps) * 1000) / 1000 : null;
        row.addedP50 = round2(row.p50 - direct.p50);
        row.addedP99 = round2(row.p99 - direct.p99);
      }
      rows.push(row);
    }
  }
  return rows;
}

function fixed(n: number | null, digits = 2, sign = false): string {
  if (n === null) return '—';
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

function summaryTable(rows: SummaryRow[]): string {
  const header = [
    'scenario',
    'target',
    'req/s',
    'p50 ms',
    'p90 ms',
    'p99 ms',
    'err / non-2xx',
    'vs direct',
    '+p50 ms',
    '+p99 ms',
    'CPU lg/stub/gw/other',
    'gw CPU µs/req',
    'gw RSS MB',
  ];
  const body = rows.map((r) => [
    r.scenario,
    r.target,
    String(r.rps),
    fixed(r.p50),
    fixed(r.p90),
    fixed(r.p99),
    `${r.errors} / ${r.non2xx}`,
    r.throughputRatio === null ? '—' : `${(r.throughputRatio * 100).toFixed(1)} %`,
    fixed(r.addedP50, 2, true),
    fixed(r.addedP99, 2, true),
    [r.cpuCores.loadgen, r.cpuCores.stub, r.cpuCores.gateway, r.cpuCores.other]
      .map((c) => fixed(c, 1))
      .join('/'),
    r.gatewayCpuUsPerRequest === null ? '—' : String(Math.round(r.gatewayCpuUsPerRequest)),
    r.gatewayRssBytes === null ? '—' : (r.gatewayRssBytes / 2 ** 20).toFixed(0),
  ]);
  return markdownTable(
    header,
    body,
    header.map((_, i) => i >= 2),
  );
}

// ---------------------------------------------------------------------------------------------
// Metering check: what the gateways recorded against what the load generator sent.

interface Metering {
  target: TargetName;
  recordedRequests: number | null;
  recordedErrors: number | null;
  answered: number;
  sent: number;
  ok: boolean;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

async function readMetering(target: Target, dataDir: string): Promise<Metering> {
  const base = { target: target.name, answered: target.completed, sent: target.sent };
  try {
    const parsed: unknown = JSON.parse(await keygateCli(['usage', '--json', '--data-dir', dataDir]));
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

async function createBenchKey(dataDir: string): Promise<string> {
  const parsed: unknown = JSON.parse(
    await keygateCli(['keys', 'create', '--name', 'bench', '--json', '--data-dir', dataDir]),
  );
  if (!isRecord(parsed) || typeof parsed.key !== 'string')
    throw new Error('keys create --json printed no key');
  return parsed.key;
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

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const options = parseOptions(argv);
  const command = `npm run bench${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`;
  const started = new Date();
  const date = started.toISOString().slice(0, 10);
  const dirs: string[] = [];
  const problems: string[] = [];

  const cleanup = async (): Promise<void> => {
    currentInstance?.stop();
    await stopAll();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => {
    interrupted = true;
    log('\nbench: interrupted, stopping the children...');
    cleanup().finally(() => process.exit(130));
  });

  try {
    const perTarget = SCENARIOS.length * options.rounds * (options.warmup + options.duration + 0.5);
    log(
      `Keygate benchmark: ${options.connections} connections, ${options.rounds} round(s) × ${options.duration} s` +
        ` (+${options.warmup} s warm-up)${options.rate > 0 ? `, offered load ${options.rate} req/s` : ', closed loop'};` +
        ` about ${Math.ceil((3 * perTarget) / 60)} min.`,
    );
    const stub = await startStub();
    log(`  upstream stub: ${stub.url} (pid ${stub.pid})`);

    const httpDir = mkdtempSync(join(tmpdir(), 'keygate-bench-http-'));
    const httpsDir = mkdtempSync(join(tmpdir(), 'keygate-bench-https-'));
    dirs.push(httpDir, httpsDir);
    const [httpKey, httpsKey] = await Promise.all([createBenchKey(httpDir), createBenchKey(httpsDir)]);
    const gatewayOptions = { upstreamUrl: stub.url, upstreamKey: UPSTREAM_KEY };
    const gwHttp = await startGateway({
      name: 'keygate-http',
      dataDir: httpDir,
      http: true,
      ...gatewayOptions,
    });
    const gwHttps = await startGateway({
      name: 'keygate-https',
      dataDir: httpsDir,
      http: false,
      ...gatewayOptions,
    });
    log(`  keygate-http:  ${gwHttp.url} (pid ${gwHttp.pid})`);
    log(`  keygate-https: ${gwHttps.url} (pid ${gwHttps.pid})`);
    const children = [stub, gwHttp, gwHttps];

    const fresh = { sent: 0, completed: 0 };
    const targets: Target[] = [
      { name: 'direct', url: stub.url, key: UPSTREAM_KEY, ca: undefined, gateway: undefined, ...fresh },
      { name: 'keygate-http', url: gwHttp.url, key: httpKey, ca: undefined, gateway: gwHttp, ...fresh },
      {
        name: 'keygate-https',
        url: gwHttps.url,
        key: httpsKey,
        ca: readFileSync(join(httpsDir, 'tls', 'cert.pem'), 'utf8'),
        gateway: gwHttps,
        ...fresh,
      },
    ];

    const sanity = await sanityCheck(targets);
    if (sanity.length > 0) {
      for (const p of sanity) log(`!!! sanity check failed: ${p}`);
      problems.push(...sanity.map((p) => `sanity check: ${p}`));
      throw new Error('the targets do not answer correctly; not running the load');
    }
    log('  sanity check: every target answers every scenario correctly\n');

    const runs: RunResult[] = [];
    for (let round = 1; round <= options.rounds && !interrupted; round++) {
      for (const scenario of SCENARIOS) {
        for (const target of targets) {
          if (interrupted) break;
          const run = await measure(round, target, scenario, stub, options);
          // Ctrl-C in a terminal also reaches the children: their exit is then expected.
          if (interrupted) break;
          runs.push(run);
          const bad = run.errors + run.timeouts + run.non2xx;
          log(
            `  round ${round}/${options.rounds}  ${scenario.name.padEnd(11)} ${target.name.padEnd(13)}` +
              ` ${String(run.rps).padStart(6)} req/s  p50 ${fixed(run.latencyMs.p50).padStart(6)} ms` +
              `  p99 ${fixed(run.latencyMs.p99).padStart(7)} ms  gw ${run.gatewayCpuUsPerRequest ?? '—'} µs/req  other CPU ${fixed(run.cpuCores.other, 1)}${bad > 0 ? `  !!! ${bad} errors/non-2xx` : ''}`,
          );
          if (bad > 0) {
            const detail =
              `${scenario.name} ${target.name} round ${round}: ${run.errors} errors, ${run.timeouts} timeouts, ` +
              `${run.non2xx} non-2xx; status codes ${JSON.stringify(run.statusCodes)}; ` +
              `error messages ${JSON.stringify(run.errorMessages)}`;
            problems.push(detail);
          }
          const dead = crashed(children);
          if (dead.length > 0) {
            for (const child of dead)
              problems.push(
                `${child.name} exited during the load (${JSON.stringify(child.exit)}):\n${tail(child)}`,
              );
            throw new Error(`${dead.map((c) => c.name).join(', ')} exited during the load`);
          }
          await new Promise((resolve) => setTimeout(resolve, PAUSE_BETWEEN_RUNS_MS));
        }
      }
    }
    if (interrupted) return 130;

    const memory = {
      'keygate-http': memoryOf(gwHttp.pid) ?? null,
      'keygate-https': memoryOf(gwHttps.pid) ?? null,
    };
    // Stop the gateways gracefully (this flushes their usage) and compare what they metered.
    await Promise.all([stopChild(gwHttp), stopChild(gwHttps)]);
    const [targetHttp, targetHttps] = [targets[1], targets[2]];
    const metering =
      targetHttp && targetHttps
        ? [await readMetering(targetHttp, httpDir), await readMetering(targetHttps, httpsDir)]
        : [];
    for (const m of metering) {
      if (!m.ok)
        problems.push(
          `metering of ${m.target}: recorded ${m.recordedRequests} requests, but the load generator had ` +
            `${m.answered} answered out of ${m.sent} sent`,
        );
    }

    const summary = summarize(
      runs,
      targets.map((t) => t.name),
    );
    const table = summaryTable(summary);
    const busiest = Math.max(0, ...runs.map((r) => r.cpuCores.other ?? 0));
    const noise =
      busiest > NOISY_OTHER_CORES
        ? `Note: other work on the machine took up to ${busiest.toFixed(1)} cores during some runs ` +
          '(see the runs in the JSON file); those figures are pessimistic.'
        : 'The machine was otherwise quiet during the runs.';
    const mach = machine();
    const mb = (bytes: number | undefined): string =>
      bytes === undefined ? '?' : `${(bytes / 2 ** 20).toFixed(0)} MB`;
    const memoryLines = (['keygate-http', 'keygate-https'] as const).map(
      (name) =>
        `- ${name}: RSS ${mb(memory[name]?.rss)} at the end of the load, peak ${mb(memory[name]?.peakRss)}`,
    );
    const meteringLines = metering.map(
      (m) =>
        `- ${m.target}: metered ${m.recordedRequests ?? '?'} requests (${m.recordedErrors ?? '?'} errors); the load ` +
        `generator sent ${m.sent} and got ${m.answered} answers${m.ok ? '' : '  !!! MISMATCH'}`,
    );
    const machineLine =
      `${mach.cpuCount} × ${mach.cpuModel}, ${(mach.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB RAM, ` +
      `${mach.platform} ${mach.release} ${mach.arch}, Node ${mach.node}`;
    const markdown = [
      `# Keygate benchmark, ${date}${options.quick ? ' (quick)' : ''}`,
      '',
      `- Machine: ${machineLine}. Load generator, stub and gateway share it.`,
      `- Command: \`${command}\``,
      `- Load: autocannon, ${options.connections} connections, ` +
        (options.rate > 0 ? `offered load ${options.rate} req/s` : 'closed loop (as fast as possible)') +
        `, ${options.duration} s per run after ${options.warmup} s of warm-up; ` +
        `${options.rounds} round(s) alternating the targets; medians over rounds.`,
      '- Targets: `direct` = the upstream stub itself; `keygate-http` / `keygate-https` = the gateway ' +
        '(auth, metering and JSON access log on; log to /dev/null) in front of the same stub.',
      '- Latency is per whole response (streams: until the last byte). `vs direct` = keygate req/s ÷ direct req/s; ' +
        '`+p50`/`+p99` = keygate − direct. CPU in cores used by load generator / stub / gateway / anything else on the machine; ' +
        '`gw CPU µs/req` = gateway CPU time per request (its own cost, whatever else runs).',
      '',
      table,
      '',
      'Gateway memory:',
      ...memoryLines,
      '',
      'Metering check:',
      ...meteringLines,
      '',
      noise,
      '',
      problems.length === 0
        ? 'No transport errors, timeouts or non-2xx responses.'
        : `PROBLEMS:\n${problems.map((p) => `- ${p}`).join('\n')}`,
      '',
    ].join('\n');

    const resultsDir = join(ROOT, 'bench', 'results');
    mkdirSync(resultsDir, { recursive: true });
    const base = join(resultsDir, `${date}${options.quick ? '-quick' : ''}`);
    writeFileSync(
      `${base}.json`,
      `${JSON.stringify(
        {
          date,
          startedAt: started.toISOString(),
          finishedAt: new Date().toISOString(),
          command,
          options,
          machine: mach,
          scenarios: SCENARIOS.map((s) => ({ name: s.name, path: s.path, body: s.body })),
          summary,
          runs,
          gatewayMemoryAtEnd: memory,
          metering,
          problems,
          ok: problems.length === 0,
        },
        null,
        2,
      )}\n`,
    );
    writeFileSync(`${base}.md`, markdown);

    process.stdout.write(`\n${markdown}`);
    log(`\nResults written to ${base}.json and ${base}.md`);
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
