#!/usr/bin/env node
// The `keygate` command. The source is TypeScript; `npm run build` (run by `npm ci` and
// `npm start`) compiles it into dist/, which starts faster and uses ~40 MB less memory than
// Node's type stripping of src/. When dist/ is missing or older than src/, src/ runs directly.
// Either way Node >= 24 is needed: `npm ci` installs it into node_modules/.bin, which npm
// scripts and npx put first.
import { readdirSync, statSync } from 'node:fs';

const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(
    `keygate: Node.js 24 or newer is needed (this is ${process.version}). Run it through npm ` +
      '(`npx keygate`, `npm start`), which uses the Node 24 installed by `npm ci`.\n',
  );
  process.exit(1);
}
// Everything Keygate writes (database, secrets, certificates) is for its owner only.
process.umask(0o077);

/*
 * Memory of `keygate start`. Under load the gateway's RSS was 250-310 MB for ~35 MB of live
 * JavaScript objects (measured with process.memoryUsage(), v8.getHeapSpaceStatistics() and
 * /proc/<pid>/smaps at 3-12k requests/s; docs/performance.md). Three things made it:
 *
 * - V8's young generation. At this allocation rate (tens of kB per request) V8 grows each
 *   semi-space to its maximum, 64 MB here, so the young generation alone took 128 MB.
 *   --max-semi-space-size=4 keeps it at 2 x 4 MB. The price is CPU: 10 times as many scavenges,
 *   each with a fixed part (~0.7 ms here), so the main thread spends 9-15 µs per request in GC
 *   instead of 2-3, and in side-by-side runs the gateway's CPU per request rose from 145-163 µs
 *   to 157-197 µs (6-14 %). 8 MB costs about as much and ends at 150-160 MB; 16 MB costs no
 *   measurable CPU but ends at 170 MB (an operator who prefers that passes
 *   NODE_OPTIONS=--max-semi-space-size=16, which is kept). With 1-2 MB so much of each request
 *   in flight survives two scavenges and is promoted that the old generation fills faster than
 *   it is collected (230 MB, and less throughput).
 * - V8's old generation. What is promoted is garbage soon after (a full collection at the end of
 *   a load leaves the ~18 MB of the idle gateway), but V8 lets the old generation grow to several
 *   times its live size before the next full collection: 40-110 MB of dead objects waited there.
 *   --heap-growing-percent=50 makes the next limit 1.5 times the live size. It is a growth factor,
 *   not a cap: a gateway with larger caches (a big key cache) keeps working, its limit is simply
 *   higher (--max-old-space-size would instead crash a process whose live set passed it).
 * - glibc's malloc arenas. V8's and libuv's helper threads each got an arena of their own (five
 *   of them held ~21 MB); MALLOC_ARENA_MAX=2 lets them share two.
 *
 * None of the three can be set from inside a running process: V8 sizes the young generation when
 * the isolate is created (v8.setFlagsFromString('--max-semi-space-size=4') has no effect then),
 * glibc reads MALLOC_ARENA_MAX when it starts, and Node refuses --heap-growing-percent in
 * NODE_OPTIONS. So `keygate start` replaces itself with a Node process started with them:
 * process.execve keeps the pid and the open stdio, hence no wrapper process (an idle Node costs
 * ~43 MB of RSS of its own) and nothing changes for service managers. `npm start`, the
 * Dockerfile's entrypoint, the benchmark and the tests all start the gateway through this file;
 * the workers of `--workers N` inherit the flags (node:cluster forks with process.execArgv) and
 * the environment.
 *
 * A setting of the same name given by the operator (on node's command line, in NODE_OPTIONS or in
 * the environment) is kept. Where process.execve does not exist (Windows), the gateway runs with
 * Node's defaults. Other commands are short-lived and not re-executed.
 */
const START_NODE_FLAGS = ['--max-semi-space-size=4', '--heap-growing-percent=50'];
const START_ENV = { MALLOC_ARENA_MAX: '2' };

if (process.argv[2] === 'start' && typeof process.execve === 'function') {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].map((flag) =>
    flag.split('=')[0].replaceAll('_', '-'),
  );
  const flags = START_NODE_FLAGS.filter((flag) => !given.includes(flag.split('=')[0]));
  const env = Object.entries(START_ENV).filter(([name]) => process.env[name] === undefined);
  if (flags.length > 0 || env.length > 0) {
    process.execve(
      process.execPath,
      [process.execPath, ...flags, ...process.execArgv, ...process.argv.slice(1)],
      { ...process.env, ...Object.fromEntries(env) },
    );
  }
}

/** The newest modification time of the files below a directory (0 when there is none). */
function newest(dir) {
  let latest = 0;
  try {
    for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (entry.isFile()) latest = Math.max(latest, statSync(`${entry.parentPath}/${entry.name}`).mtimeMs);
    }
  } catch {
    return 0;
  }
  return latest;
}

const root = new URL('..', import.meta.url).pathname;
const compiled = newest(`${root}dist`) >= newest(`${root}src`) && newest(`${root}dist`) > 0;
const { main } = await import(compiled ? '../dist/cli/main.js' : '../src/cli/main.ts');
await main(process.argv);
