/**
 * Child processes of the benchmark (upstream stub, gateways, Portkey's gateway, one-shot CLI
 * calls) and what the benchmark reads about them from /proc.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const KEYGATE_BIN = join(ROOT, 'bin', 'keygate.js');
const STUB_SCRIPT = join(ROOT, 'test', 'support', 'upstream-stub.ts');
/** Portkey's open-source gateway (the reference), run from its published Node build. */
export const PORTKEY_SCRIPT = join(
  ROOT,
  'node_modules',
  '@portkey-ai',
  'gateway',
  'build',
  'start-server.js',
);
const PORTKEY_STREAM_FIX = join(ROOT, 'bench', 'portkey-stream-fix.ts');
const STDERR_TAIL_LINES = 40;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat (100 on Linux for every common architecture). */
const CLOCK_TICKS_PER_SECOND = 100;

export interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  /** Base URL, e.g. http://127.0.0.1:PORT */
  url: string;
  /** Last lines written to stderr, for diagnostics. */
  stderrTail: string[];
  /** Set when the process has exited. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** True once stopChild() was called, so that the exit is expected. */
  stopping: boolean;
}

const children = new Set<Child>();

/** Variables of the caller's environment that would change what a child does: never passed on. */
const LEAKY = new Set([
  'MISTRAL_API_KEY',
  'NODE_TLS_REJECT_UNAUTHORIZED',
  'DATABASE_URL',
  'REDIS_URL',
  'PORT',
  'NODE_OPTIONS',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'http_proxy',
  'https_proxy',
]);

/** Environment for children: the caller's, without any Keygate, store or provider setting that could leak in. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (name.startsWith('KEYGATE_') || name.startsWith('TRUSTED_') || LEAKY.has(name)) continue;
    env[name] = value;
  }
  return { ...env, ...extra };
}

function collectLines(stream: NodeJS.ReadableStream | null, onLine: (line: string) => void): void {
  if (!stream) return;
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    pending += chunk;
    let newline = pending.indexOf('\n');
    while (newline >= 0) {
      onLine(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
      newline = pending.indexOf('\n');
    }
  });
}

/**
 * Spawns a long-running child and resolves once `findUrl` returns a URL from one of its stdout or
 * stderr lines.
 */
function startChild(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  stdoutMode: 'pipe' | 'ignore',
  findUrl: (line: string) => string | undefined,
): Promise<Child> {
  const proc = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', stdoutMode, 'pipe'] });
  if (proc.pid === undefined)
    return Promise.reject(new Error(`${name}: could not spawn ${process.execPath}`));
  const child: Child = {
    name,
    proc,
    pid: proc.pid,
    url: '',
    stderrTail: [],
    exit: undefined,
    stopping: false,
  };
  children.add(child);
  return new Promise<Child>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(
        new Error(`${name} did not report its URL within ${START_TIMEOUT_MS / 1000} s:\n${tail(child)}`),
      );
    }, START_TIMEOUT_MS);
    const onLine = (line: string): void => {
      if (child.url) return;
      const url = findUrl(line);
      if (url) {
        child.url = url;
        clearTimeout(timer);
        resolve(child);
      }
    };
    collectLines(proc.stderr, (line) => {
      child.stderrTail.push(line);
      if (child.stderrTail.length > STDERR_TAIL_LINES) child.stderrTail.shift();
      onLine(line);
    });
    collectLines(proc.stdout, onLine);
    proc.on('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`${name}: ${error.message}`));
    });
    proc.on('exit', (code, signal) => {
      child.exit = { code, signal };
      children.delete(child);
      clearTimeout(timer);
      if (!child.url)
        reject(new Error(`${name} exited (code ${code}, signal ${signal}) before starting:\n${tail(child)}`));
    });
  });
}

export function tail(child: Child): string {
  return child.stderrTail.map((line) => `    | ${line}`).join('\n');
}

/** Starts the upstream stub on a free port; `latencyMs` before every response head. */
export function startStub(latencyMs = 0): Promise<Child> {
  return startChild(
    'upstream stub',
    [STUB_SCRIPT, '--port', '0', '--latency', String(latencyMs)],
    cleanEnv({}),
    'pipe',
    (line) => {
      if (!line.startsWith('{')) return undefined;
      try {
        const parsed: unknown = JSON.parse(line);
        if (
          typeof parsed === 'object' &&
          parsed !== null &&
          'url' in parsed &&
          typeof parsed.url === 'string'
        )
          return parsed.url;
      } catch {
        // not the URL line
      }
      return undefined;
    },
  );
}

export interface GatewayOptions {
  name: string;
  dataDir: string;
  /** YAML (or JSON) configuration file passed as --config. */
  configFile: string;
  http: boolean;
  upstreamUrl: string;
  upstreamKey: string;
  /** More environment, e.g. DATABASE_URL, REDIS_URL and KEYGATE_SECRET. */
  env: Record<string, string>;
  /** `--workers N` (more than 1 needs REDIS_URL in env). */
  workers?: number;
  /** Another build's bin/keygate.js (a baseline to compare with); this checkout's by default. */
  bin?: string;
}

/**
 * Starts `keygate start` on a free port of 127.0.0.1. Its JSON access log (stdout, one line per
 * request) is written and discarded (/dev/null).
 */
export function startGateway(options: GatewayOptions): Promise<Child> {
  const args = [
    options.bin ?? KEYGATE_BIN,
    'start',
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--data-dir',
    options.dataDir,
    '--config',
    options.configFile,
  ];
  if (options.http) args.push('--http');
  if (options.workers !== undefined && options.workers > 1) args.push('--workers', String(options.workers));
  return startChild(
    options.name,
    args,
    cleanEnv({
      ...options.env,
      KEYGATE_UPSTREAM_URL: options.upstreamUrl,
      KEYGATE_UPSTREAM_KEY: options.upstreamKey,
    }),
    'ignore',
    (line) => /is listening on (https?:\/\/\S+)/.exec(line)?.[1],
  );
}

/** A TCP port free on 127.0.0.1 right now (for a child that cannot be told to take any free port). */
/**
 * Builds a git revision of Keygate in a temporary worktree beside this checkout (its TypeScript
 * compiled to dist/ with this checkout's node_modules), for `npm run bench -- --baseline REV`.
 */
export function buildBaseline(rev: string): { bin: string; commit: string; remove: () => void } {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
  const commit = git('rev-parse', '--verify', '--end-of-options', `${rev}^{commit}`);
  const dir = mkdtempSync(join(tmpdir(), 'keygate-baseline-'));
  const remove = () => {
    try {
      git('worktree', 'remove', '--force', dir);
    } catch {
      // not registered (the add failed): the directory alone goes
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    git('worktree', 'add', '--detach', dir, commit);
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
    execFileSync(
      process.execPath,
      [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'],
      {
        cwd: dir,
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
  } catch (error) {
    remove();
    throw error;
  }
  return { bin: join(dir, 'bin', 'keygate.js'), commit, remove };
}

export function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}

/** Why Portkey's gateway cannot be run here, or undefined when it can. */
export function portkeyUnavailable(): string | undefined {
  return existsSync(PORTKEY_SCRIPT)
    ? undefined
    : `${PORTKEY_SCRIPT} is missing (the dev dependency @portkey-ai/gateway is not installed)`;
}

/**
 * Starts Portkey's gateway (`start-server.js --port=N --headless`) on a free port. It prints
 * `http://localhost:N` once listening (on every interface). `bench/portkey-stream-fix.ts` is
 * preloaded: without it, every streamed completion fails with 500 on this install (see that file).
 */
export async function startPortkey(): Promise<Child> {
  const port = await freePort();
  return startChild(
    'portkey',
    ['--import', PORTKEY_STREAM_FIX, PORTKEY_SCRIPT, `--port=${port}`, '--headless'],
    cleanEnv({ NODE_ENV: 'production' }),
    'pipe',
    (line) =>
      /http:\/\/localhost:(\d+)/.exec(line)?.[1] === String(port) ? `http://127.0.0.1:${port}` : undefined,
  );
}

/**
 * Runs a `keygate` CLI command to completion and returns its stdout (throws on a non-zero exit);
 * `bin` is another build's bin/keygate.js (a baseline's), this checkout's by default.
 */
export function keygateCli(
  args: string[],
  env: Record<string, string> = {},
  bin = KEYGATE_BIN,
): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const proc = spawn(process.execPath, [bin, ...args], {
      cwd: ROOT,
      env: cleanEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    proc.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
    });
    proc.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      err += chunk;
    });
    proc.on('error', reject);
    proc.on('exit', (code, signal) => {
      if (code === 0) resolve(out);
      else reject(new Error(`keygate ${args.join(' ')} failed (code ${code}, signal ${signal}):\n${err}`));
    });
  });
}

/** Stops a child with SIGTERM (SIGKILL after a timeout); resolves when it has exited. */
export function stopChild(child: Child): Promise<void> {
  child.stopping = true;
  if (child.exit) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      child.proc.kill('SIGKILL');
    }, STOP_TIMEOUT_MS);
    child.proc.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.proc.kill('SIGTERM');
  });
}

/** Stops every child still running. */
export async function stopAll(): Promise<void> {
  await Promise.all([...children].map((child) => stopChild(child)));
}

/** Children that exited although nobody stopped them. */
export function crashed(list: Child[]): Child[] {
  return list.filter((child) => child.exit !== undefined && !child.stopping);
}

export interface MemoryStatus {
  /** Resident set size now, in bytes. */
  rss: number;
  /** Peak resident set size so far (VmHWM), in bytes. */
  peakRss: number;
}

export function memoryOf(pid: number): MemoryStatus | undefined {
  // A process tree (keygate --workers: the primary and its workers) counts as one.
  let total: MemoryStatus | undefined;
  for (const p of processTree(pid)) {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      const kb = (field: string): number => {
        const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
        return match?.[1] ? Number(match[1]) * 1024 : 0;
      };
      total = { rss: (total?.rss ?? 0) + kb('VmRSS'), peakRss: (total?.peakRss ?? 0) + kb('VmHWM') };
    } catch {}
  }
  return total;
}

/** A process and its descendants (from /proc/<pid>/task/<pid>/children), the process first. */
function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    const p = out[i] ?? pid;
    try {
      const children = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim();
      if (children) out.push(...children.split(/\s+/).map(Number));
    } catch {}
  }
  return out;
}

/** CPU time (user + system) a process has used so far, in seconds. */
export function cpuSecondsOf(pid: number): number | undefined {
  // A process tree (keygate --workers: the primary and its workers) counts as one.
  let total: number | undefined;
  for (const p of processTree(pid)) {
    const seconds = processCpuSeconds(p);
    if (seconds !== undefined) total = (total ?? 0) + seconds;
  }
  return total;
}

/** User + system CPU seconds of one process, from /proc; undefined if it cannot be read. */
function processCpuSeconds(pid: number | string): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which is in parentheses and may contain spaces).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of the whole line, i.e. 11 and 12 after the name.
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
    return (utime + stime) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds of every process of this machine whose command name is `name` (`postgres`,
 * `redis-server`), summed: undefined if there is none this process may read. A process that
 * ends between two readings takes its time with it, so compare readings of a steady state.
 */
export function cpuSecondsOfCommand(name: string): number | undefined {
  let total: number | undefined;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let comm: string;
    try {
      comm = readFileSync(`/proc/${entry}/comm`, 'utf8').trim();
    } catch {
      continue;
    }
    if (comm !== name) continue;
    const seconds = processCpuSeconds(entry);
    if (seconds !== undefined) total = (total ?? 0) + seconds;
  }
  return total;
}

export interface MachineTicks {
  busy: number;
  total: number;
}

/** Machine-wide CPU time from the first line of /proc/stat, in clock ticks summed over all CPUs. */
export function machineTicks(): MachineTicks | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    // cpu user nice system idle iowait irq softirq steal ... (guest time is already inside user);
    // steal counts as busy: it is CPU time the machine did not give to anything of ours.
    const values = line.trim().split(/\s+/).slice(1, 9).map(Number);
    if (values.length < 8 || values.some((v) => !Number.isFinite(v))) return undefined;
    const at = (i: number): number => values[i] ?? 0;
    const busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    return { busy, total: busy + at(3) + at(4) };
  } catch {
    return undefined;
  }
}
