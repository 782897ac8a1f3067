/**
 * The Dockerfile without a Docker engine (none runs on the development machine or in CI): its
 * stages parsed, and replayed in a temporary directory the way `docker build` runs them. Each
 * stage gets a directory that stands for its filesystem root; COPY copies from the build context
 * (filtered by .dockerignore) or from an earlier stage's directory, WORKDIR and ENV set what the
 * next RUN sees, and RUN runs its command there with `sh -c`, on this machine's Node 24 and npm.
 *
 * What this proves is the order: that every RUN finds the files it needs among those copied
 * before it, that the dependencies it installs are there, and that the runtime stage gets what it
 * starts from. It does not prove what only an engine can: the base image's contents beyond Node
 * and npm, users (RUN steps of the runtime stage are not run: see `replayStage`), layers.
 *
 * Only the Dockerfile syntax the project uses is understood; anything else (heredocs, wildcards in
 * COPY sources, ADD, flags other than --from/--chown/--chmod/--link) throws, so that a Dockerfile
 * this cannot replay faithfully fails the test instead of passing it.
 */
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { basename, delimiter, dirname, join, posix, relative } from 'node:path';

export interface Instruction {
  /** Upper case: `COPY`, `RUN`, … */
  keyword: string;
  /** The rest of the instruction, continuation lines joined. */
  args: string;
  /** 1-based line of the Dockerfile where it starts. */
  line: number;
}

export interface Stage {
  /** The base image. */
  from: string;
  /** `AS <name>`, when given. */
  name: string | undefined;
  instructions: Instruction[];
}

/** The stages of a Dockerfile, in order. */
export function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const first = lines[i] ?? '';
    if (first.trim() === '' || first.trim().startsWith('#')) continue;
    const line = i + 1;
    let joined = first;
    // A trailing backslash continues the instruction; comment lines inside it are dropped.
    while (/\\\s*$/.test(joined) && i + 1 < lines.length) {
      joined = joined.replace(/\\\s*$/, ' ');
      i++;
      const next = lines[i] ?? '';
      if (next.trim().startsWith('#')) {
        joined += '\\';
        continue;
      }
      joined += next;
    }
    const match = /^\s*([A-Za-z]+)\s+(.*)$/s.exec(joined);
    if (!match) throw new Error(`Dockerfile line ${line}: cannot read "${first}"`);
    const keyword = (match[1] ?? '').toUpperCase();
    const args = (match[2] ?? '').trim();
    if (args.includes('<<')) throw new Error(`Dockerfile line ${line}: heredocs are not replayed`);
    if (keyword === 'FROM') {
      const from = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!from) throw new Error(`Dockerfile line ${line}: cannot read FROM ${args}`);
      stages.push({ from: from[1] ?? '', name: from[2], instructions: [] });
      continue;
    }
    const stage = stages.at(-1);
    if (!stage) {
      if (keyword === 'ARG') continue;
      throw new Error(`Dockerfile line ${line}: ${keyword} before the first FROM`);
    }
    stage.instructions.push({ keyword, args, line });
  }
  return stages;
}

/** Splits `a "b c" d=e` into words, removing quotes (the shell-like form of ENV, COPY, …). */
function words(text: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  let current = '';
  let last = -1;
  for (let match = re.exec(text); match !== null; match = re.exec(text)) {
    const piece = match[1]?.replace(/\\(.)/g, '$1') ?? match[2] ?? match[3] ?? '';
    if (match.index === last) current += piece;
    else {
      if (last !== -1) out.push(current);
      current = piece;
    }
    last = re.lastIndex;
  }
  if (last !== -1) out.push(current);
  return out;
}

/** The JSON (exec) form `["a", "b"]`, or undefined for the shell form. */
function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  const parsed: unknown = JSON.parse(args);
  if (!Array.isArray(parsed) || !parsed.every((p) => typeof p === 'string'))
    throw new Error(`not a JSON array of strings: ${args}`);
  return parsed;
}

/** A matcher for .dockerignore: Docker's rules (patterns from the context root, `!` exceptions, last match wins). */
export function dockerignore(context: string): (relativePath: string) => boolean {
  const file = join(context, '.dockerignore');
  const rules = existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== '' && !l.startsWith('#'))
        .map((l) => {
          const negate = l.startsWith('!');
          const pattern = posix.normalize((negate ? l.slice(1) : l).trim()).replace(/^\/+|\/+$/g, '');
          return { negate, pattern };
        })
    : [];
  return (relativePath: string) => {
    const parts = relativePath.split('/');
    let ignored = false;
    for (const rule of rules) {
      // A pattern that matches a directory excludes everything below it.
      for (let n = 1; n <= parts.length; n++) {
        if (posix.matchesGlob(parts.slice(0, n).join('/'), rule.pattern)) {
          ignored = !rule.negate;
          break;
        }
      }
    }
    return ignored;
  };
}

export interface StepResult {
  instruction: Instruction;
  /** For RUN: its exit code and output. */
  code?: number | null;
  output?: string;
  durationMs?: number;
}

export interface StageResult {
  /** The directory standing for the stage's `/`. */
  root: string;
  /** The stage's WORKDIR, inside `root`. */
  workdir: string;
  env: Record<string, string>;
  user: string | undefined;
  entrypoint: string[] | undefined;
  cmd: string[] | undefined;
  expose: string[];
  /** RUN steps of a stage replayed with `run: false`, not run. */
  skipped: Instruction[];
  steps: StepResult[];
}

export interface ReplayOptions {
  /** The build context (the repository). */
  context: string;
  /** The directory that stands for the stage's root (empty, created if needed). */
  root: string;
  /** Earlier stages' results, by name, for COPY --from. */
  stages?: ReadonlyMap<string, StageResult>;
  /** Run the RUN steps (default). With false they are recorded in `skipped`. */
  run?: boolean;
  /** Environment added to every RUN (after the stage's ENV). */
  runEnv?: Record<string, string>;
  /** Bound on each RUN. */
  runTimeoutMs?: number;
}

/** A failed RUN, with its output, so that the test says which step needed what. */
export class ReplayError extends Error {
  override name = 'ReplayError';
  readonly step: StepResult;
  constructor(message: string, step: StepResult) {
    super(message);
    this.step = step;
  }
}

/** The environment a RUN sees: the stage's ENV over a base with this Node 24 first on PATH. */
export function runEnvironment(stageEnv: Record<string, string>): Record<string, string> {
  // Nothing of the caller's npm run or of the repository's node_modules/.bin may leak in: a tool
  // the stage did not install must not be found.
  const systemPath = (process.env.PATH ?? '')
    .split(delimiter)
    .filter((dir) => dir !== '' && !dir.includes('node_modules'));
  const env: Record<string, string> = {
    PATH: [dirname(process.execPath), ...systemPath].join(delimiter),
    HOME: process.env.HOME ?? '/root',
    LANG: 'C.UTF-8',
  };
  return { ...env, ...stageEnv };
}

function mapPath(root: string, workdir: string, path: string): string {
  return path.startsWith('/') ? join(root, path) : join(workdir, path);
}

function copy(from: string, to: string, filter?: (source: string) => boolean): void {
  cpSync(from, to, {
    recursive: true,
    force: true,
    verbatimSymlinks: true,
    ...(filter ? { filter } : {}),
  });
}

function runStep(
  instruction: Instruction,
  cwd: string,
  env: Record<string, string>,
  timeoutMs: number,
): Promise<StepResult> {
  const argv = execForm(instruction.args) ?? ['/bin/sh', '-c', instruction.args];
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(argv[0] ?? '', argv.slice(1), { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString('utf8')).slice(-20_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => {
      output += `\n[replay: killed after ${timeoutMs} ms]`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (error) => {
      output += `\n[replay: ${error.message}]`;
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ instruction, code, output, durationMs: Math.round(performance.now() - started) });
    });
  });
}

/** Replays one stage; throws a ReplayError at the first RUN that fails, or an Error for a COPY that cannot be done. */
export async function replayStage(stage: Stage, options: ReplayOptions): Promise<StageResult> {
  const { context, root } = options;
  mkdirSync(root, { recursive: true });
  const ignored = dockerignore(context);
  const result: StageResult = {
    root,
    workdir: root,
    env: {},
    user: undefined,
    entrypoint: undefined,
    cmd: undefined,
    expose: [],
    skipped: [],
    steps: [],
  };
  for (const instruction of stage.instructions) {
    const where = `Dockerfile line ${instruction.line} (${instruction.keyword} ${instruction.args})`;
    switch (instruction.keyword) {
      case 'WORKDIR':
        result.workdir = mapPath(root, result.workdir, instruction.args);
        mkdirSync(result.workdir, { recursive: true });
        break;
      case 'ENV': {
        const parts = words(instruction.args);
        if (parts.length === 2 && !parts[0]?.includes('=')) result.env[parts[0] ?? ''] = parts[1] ?? '';
        else
          for (const part of parts) {
            const eq = part.indexOf('=');
            if (eq <= 0) throw new Error(`${where}: cannot read ${part}`);
            result.env[part.slice(0, eq)] = part.slice(eq + 1);
          }
        break;
      }
      case 'COPY': {
        const parts = execForm(instruction.args) ?? words(instruction.args);
        let from: StageResult | undefined;
        while (parts[0]?.startsWith('--')) {
          const flag = parts.shift() ?? '';
          const [name, value] = flag.slice(2).split('=', 2);
          if (name === 'from') {
            from = options.stages?.get(value ?? '');
            if (!from) throw new Error(`${where}: no earlier stage named ${value}`);
          } else if (name !== 'chown' && name !== 'chmod' && name !== 'link') {
            throw new Error(`${where}: the flag ${flag} is not replayed`);
          }
        }
        const dest = parts.pop();
        if (dest === undefined || parts.length === 0)
          throw new Error(`${where}: COPY needs a source and a destination`);
        const target = mapPath(root, result.workdir, dest);
        const intoDir = dest.endsWith('/') || parts.length > 1 || dest === '.';
        for (const source of parts) {
          if (/[*?[]/.test(source)) throw new Error(`${where}: wildcards in COPY sources are not replayed`);
          const base = from ? from.root : context;
          const path = join(base, source);
          const rel = relative(base, path);
          if (rel.startsWith('..')) throw new Error(`${where}: ${source} is outside the build context`);
          if (!existsSync(path) || (!from && rel !== '' && ignored(rel)))
            throw new Error(`${where}: ${source} is not in the ${from ? 'stage' : 'build context'}`);
          const isDir = statSync(path).isDirectory();
          // A directory's contents are copied (not the directory itself); a file goes into a
          // destination directory under its own name.
          const to = isDir || !intoDir ? target : join(target, basename(path));
          mkdirSync(isDir ? to : dirname(to), { recursive: true });
          copy(
            path,
            to,
            from
              ? undefined
              : (item) => {
                  const r = relative(context, item).split('\\').join('/');
                  return r === '' || !ignored(r);
                },
          );
        }
        break;
      }
      case 'RUN': {
        if (options.run === false) {
          result.skipped.push(instruction);
          break;
        }
        const env = { ...runEnvironment(result.env), ...options.runEnv };
        const step = await runStep(instruction, result.workdir, env, options.runTimeoutMs ?? 300_000);
        result.steps.push(step);
        if (step.code !== 0)
          throw new ReplayError(`${where} exited with ${step.code}:\n${step.output ?? ''}`, step);
        break;
      }
      case 'USER':
        result.user = instruction.args;
        break;
      case 'EXPOSE':
        result.expose.push(...words(instruction.args));
        break;
      case 'ENTRYPOINT':
        result.entrypoint = execForm(instruction.args) ?? ['/bin/sh', '-c', instruction.args];
        break;
      case 'CMD':
        result.cmd = execForm(instruction.args) ?? ['/bin/sh', '-c', instruction.args];
        break;
      case 'LABEL':
      case 'ARG':
      case 'HEALTHCHECK':
      case 'STOPSIGNAL':
        break;
      default:
        throw new Error(`${where}: ${instruction.keyword} is not replayed`);
    }
  }
  return result;
}
