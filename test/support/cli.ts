/**
 * Test harness for the `keygate` command as a user runs it: real child processes (`bin/keygate.js`
 * on this Node) in a clean environment, temporary data directories, and gateways started with
 * `keygate start` and reached through an undici Agent that trusts their certificate.
 *
 * Helpers that keep no state are exported as they are; the ones that keep track of what a test file
 * started (the upstream stub, processes, data directories, agents) come from `createCliHarness()`,
 * one per file: `before(() => harness.start())` and `after(() => harness.cleanup())`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from 'undici';
import { DEFAULT_STUB_API_KEY, startUpstreamStub, type UpstreamStub } from './upstream-stub.ts';
import { eventually, within } from './wait.ts';

export { within };

const ROOT = join(import.meta.dirname, '..', '..');
export const KEY_RE = /^kg_[0-9A-Za-z]{38}$/;
export const ANY_KEY_RE = /kg_[0-9A-Za-z]{38}/;
export const STACK_LINE = /^\s+at\s/m;
export const CLI_TIMEOUT_MS = 20_000;
const START_TIMEOUT_MS = 20_000;
export const STOP_TIMEOUT_MS = 10_000;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Proc {
  readonly args: readonly string[];
  readonly child: ChildProcess;
  stdout: string;
  stderr: string;
  exit: Exit | undefined;
  readonly exited: Promise<Exit>;
}

/** A finished CLI run. */
export interface CliResult extends Exit {
  args: readonly string[];
  stdout: string;
  stderr: string;
}

export interface Gateway {
  proc: Proc;
  url: string;
  port: number;
  dataDir: string;
  ca: string | undefined;
  /** Trusts the gateway's generated certificate. */
  agent: Agent;
}

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** The caller's environment without anything Keygate reads, so that each test says what it sets. */
export function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (name.startsWith('KEYGATE_') || name === 'MISTRAL_API_KEY' || name === 'DATABASE_URL') continue;
    if (name === 'REDIS_URL' || name === 'NODE_TEST_CONTEXT') continue;
    env[name] = value;
  }
  return env;
}

/**
 * Runs the wrapped calls at most `n` at a time. Each CLI run is a Node process that needs about a
 * second of CPU to start: a busy 2-core machine (CI) cannot start a dozen at once within their
 * timeouts, which made tests that spawned them all together fail now and then.
 */
export function limited(n: number): <R>(work: () => Promise<R>) => Promise<R> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (work) => {
    while (running >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await work();
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
}

/** SIGTERM, then SIGKILL if it does not exit in time. Never throws. */
export async function stopProc(proc: Proc, ms = STOP_TIMEOUT_MS): Promise<Exit | undefined> {
  if (proc.exit) return proc.exit;
  proc.child.kill('SIGTERM');
  try {
    return await within(proc.exited, ms, `${proc.args.join(' ')} to stop`);
  } catch {
    proc.child.kill('SIGKILL');
    return within(proc.exited, 5000, 'SIGKILL').catch(() => undefined);
  }
}

export async function waitForOutput(proc: Proc, pattern: RegExp, ms: number): Promise<RegExpExecArray> {
  return eventually(
    () => {
      const match = pattern.exec(proc.stderr);
      if (match) return match;
      if (proc.exit)
        throw new Error(
          `keygate ${proc.args.join(' ')} exited (${proc.exit.code}) before printing ${pattern}\nstderr: ${proc.stderr}`,
        );
      return undefined;
    },
    () => `${pattern} on stderr\nstderr: ${proc.stderr}`,
    ms,
  );
}

/**
 * `keygate start`'s whole banner, from the line that says where it listens (its URL is `[1]`) to
 * the last one ("Stop with Ctrl-C"). The lines are written one by one, some after an await, so a
 * test that waited for the first line and read one after it raced the process (it failed once on
 * `--workers 2`, whose "limits … kept by the primary process" line follows the listening line).
 */
export const BANNER = /Keygate \S+ is listening on (https?:\/\/\S+)[\s\S]*?^Stop with Ctrl-C/m;

/** Waits for `keygate start`'s whole banner (see `BANNER`); returns the URL it listens on. */
export async function waitForBanner(proc: Proc, ms = START_TIMEOUT_MS): Promise<string> {
  const match = await waitForOutput(proc, BANNER, ms);
  return match[1] ?? '';
}

export async function stopGateway(gw: Gateway): Promise<void> {
  await stopProc(gw.proc);
  await gw.agent.destroy().catch(() => {});
}

/** Polls `probe` every 50 ms until it returns `want`; returns the ms elapsed since `since`, or undefined. */
export async function pollStatus(
  probe: () => Promise<number>,
  want: number,
  since: number,
  limitMs: number,
): Promise<{ elapsed: number | undefined; seen: number[] }> {
  const seen: number[] = [];
  while (Date.now() - since < limitMs) {
    const started = Date.now();
    let status: number;
    try {
      status = await probe();
    } catch {
      status = -1;
    }
    seen.push(status);
    if (status === want) return { elapsed: Date.now() - since, seen };
    await sleep(Math.max(0, 50 - (Date.now() - started)));
  }
  return { elapsed: undefined, seen };
}

export interface CliHarness {
  /** Starts the local upstream stub that stands for the model provider; returns it. */
  start(): Promise<UpstreamStub>;
  /** `baseEnv()` with the stub as the model provider. */
  upstreamEnv(): NodeJS.ProcessEnv;
  /** Every process started through this harness, in order, whether it still runs or not. */
  readonly procs: readonly Proc[];
  /** Every data directory made by `newDataDir()`, in order. */
  readonly dataDirs: readonly string[];
  /** A new empty temporary directory, removed by `cleanup()`. */
  newDataDir(): string;
  spawnKeygate(args: readonly string[], env: NodeJS.ProcessEnv): Proc;
  /**
   * Runs `keygate ARGS` (in `baseEnv()` unless told) to completion, bounded by `ms`; on timeout stops
   * it and throws with its output.
   */
  runCli(args: readonly string[], env?: NodeJS.ProcessEnv, ms?: number): Promise<CliResult>;
  /** `keygate start --port 0 --data-dir DIR ARGS`, once its banner says where it listens. */
  startGateway(dataDir: string, env: NodeJS.ProcessEnv, args?: readonly string[]): Promise<Gateway>;
  /** Stops every process still running, closes every agent and the stub, removes every data directory. */
  cleanup(): Promise<void>;
}

export function createCliHarness(options: { tempPrefix: string }): CliHarness {
  /** Every process started by this harness that is still running. */
  const live = new Set<Proc>();
  const procs: Proc[] = [];
  const dataDirs: string[] = [];
  const agents: Agent[] = [];
  let stub: UpstreamStub | undefined;

  async function start(): Promise<UpstreamStub> {
    stub = await startUpstreamStub();
    return stub;
  }

  function upstreamEnv(): NodeJS.ProcessEnv {
    if (!stub) throw new Error('the upstream stub is not started: call start() in before()');
    return { ...baseEnv(), KEYGATE_UPSTREAM_URL: stub.url, KEYGATE_UPSTREAM_KEY: DEFAULT_STUB_API_KEY };
  }

  function newDataDir(): string {
    const dir = mkdtempSync(join(tmpdir(), options.tempPrefix));
    dataDirs.push(dir);
    return dir;
  }

  function spawnKeygate(args: readonly string[], env: NodeJS.ProcessEnv): Proc {
    const child = spawn(process.execPath, ['bin/keygate.js', ...args], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let settle: (exit: Exit) => void = () => {};
    const exited = new Promise<Exit>((resolve) => {
      settle = resolve;
    });
    const proc: Proc = { args, child, stdout: '', stderr: '', exit: undefined, exited };
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (text: string) => {
      proc.stdout += text;
    });
    child.stderr?.on('data', (text: string) => {
      proc.stderr += text;
    });
    const done = (exit: Exit) => {
      if (proc.exit) return;
      proc.exit = exit;
      live.delete(proc);
      settle(exit);
    };
    child.once('error', (error) => {
      proc.stderr += `\n[spawn error: ${error.message}]`;
      done({ code: null, signal: null });
    });
    child.once('close', (code, signal) => done({ code, signal }));
    live.add(proc);
    procs.push(proc);
    return proc;
  }

  async function runCli(
    args: readonly string[],
    env: NodeJS.ProcessEnv = baseEnv(),
    ms = CLI_TIMEOUT_MS,
  ): Promise<CliResult> {
    const proc = spawnKeygate(args, env);
    try {
      const exit = await within(proc.exited, ms, `keygate ${args.join(' ')}`);
      return { ...exit, args, stdout: proc.stdout, stderr: proc.stderr };
    } catch (error) {
      await stopProc(proc, 1000);
      throw new Error(`${(error as Error).message}\nstdout: ${proc.stdout}\nstderr: ${proc.stderr}`);
    }
  }

  async function startGateway(
    dataDir: string,
    env: NodeJS.ProcessEnv,
    args: readonly string[] = [],
  ): Promise<Gateway> {
    const proc = spawnKeygate(['start', '--port', '0', '--data-dir', dataDir, ...args], env);
    const url = await waitForBanner(proc);
    const port = Number(new URL(url).port);
    const ca = url.startsWith('https:') ? readFileSync(join(dataDir, 'tls', 'cert.pem'), 'utf8') : undefined;
    const agent = new Agent({
      connect: ca ? { ca } : {},
      keepAliveTimeout: 1000,
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    agents.push(agent);
    return { proc, url, port, dataDir, ca, agent };
  }

  async function cleanup(): Promise<void> {
    await Promise.all([...live].map((proc) => stopProc(proc)));
    await Promise.all(agents.map((agent) => agent.destroy().catch(() => {})));
    await stub?.close();
    for (const dir of dataDirs) rmSync(dir, { recursive: true, force: true });
  }

  return {
    start,
    upstreamEnv,
    procs,
    dataDirs,
    newDataDir,
    spawnKeygate,
    runCli,
    startGateway,
    cleanup,
  };
}

/** The JSON contract of a key as `keygate … --json` prints it (written out here, not imported from src). */
export interface KeyView {
  id: string;
  name: string;
  workspace_id: string;
  display: string;
  status: string;
  scopes: string[];
  models: string[];
  allowed_ips: string[];
  limits: {
    requests_per_minute: number | null;
    tokens_per_minute: number | null;
    concurrent_requests: number | null;
  };
  budget: { tokens_per_day: number | null; tokens_per_month: number | null };
  created_at: string | null;
  created_by: string | null;
  updated_at: string | null;
  rotated_at: string | null;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
  last_used_ip: string | null;
}

export interface CreatedKey extends KeyView {
  key: string;
}

export interface RotatedKey extends CreatedKey {
  previous_secret_valid_until: string;
}
