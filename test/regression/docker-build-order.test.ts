/**
 * Regression (issue 13, item 8): the image could not be built. The build stage ran `npm ci`,
 * whose `prepare` script is the build (`tsc -p tsconfig.build.json`), before tsconfig.build.json
 * and src/ were copied in: TS5058, and `docker compose up --build` stopped there.
 *
 * No Docker engine runs here or in CI, so the Dockerfile is replayed (test/support/dockerfile.ts):
 * the build stage's COPY and RUN steps in order in a temporary directory, with a real `npm ci`
 * (from the local npm cache when it has the packages: --prefer-offline), then the runtime stage's
 * COPY --from steps, and the result must start and serve the console it was built with, with no
 * development dependency in it. About 25 s, most of it `npm ci`.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { request } from 'undici';
import { within } from '../support/cli.ts';
import {
  parseDockerfile,
  ReplayError,
  replayStage,
  runEnvironment,
  type StageResult,
} from '../support/dockerfile.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const work = mkdtempSync(join(tmpdir(), 'keygate-docker-'));
after(() => {
  rmSync(work, { recursive: true, force: true });
});

// A real `npm ci` and build: about 25 s on a quiet machine, 90 s on a busy one; more than npm test's
// default of 120 s per test is allowed.
test('the Dockerfile builds in the order of its steps, and its runtime stage starts', {
  timeout: 400_000,
}, async (t) => {
  const stages = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
  assert.equal(stages.length, 2, 'a build stage and a runtime stage');
  const [buildStage, runtimeStage] = stages;
  assert.ok(buildStage?.name && runtimeStage);

  let build: StageResult;
  try {
    build = await replayStage(buildStage, {
      context: ROOT,
      root: join(work, 'build'),
      // The packages come from the local cache when it has them; the registry is asked otherwise.
      runEnv: { npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false' },
    });
  } catch (error) {
    if (error instanceof ReplayError) assert.fail(`the build stage fails: ${error.message}`);
    throw error;
  }
  for (const step of build.steps) t.diagnostic(`${step.instruction.args}: ${step.durationMs} ms`);
  assert.ok(existsSync(join(build.workdir, 'dist', 'cli', 'main.js')), 'the gateway is compiled');
  assert.ok(existsSync(join(build.workdir, 'console', 'dist', 'index.html')), 'the console is built');

  const runtime = await replayStage(runtimeStage, {
    context: ROOT,
    root: join(work, 'runtime'),
    stages: new Map([[buildStage.name, build]]),
    // Its RUN steps make the user; they need root and an image, and are checked below.
    run: false,
  });
  for (const skipped of runtime.skipped)
    assert.match(
      skipped.args,
      /^useradd /,
      `a RUN of the runtime stage that is not replayed: ${skipped.args}`,
    );
  assert.ok(runtime.user && runtime.user !== 'root', 'the gateway does not run as root');
  assert.equal(runtime.env.NODE_ENV, 'production');
  const app = runtime.workdir;
  for (const dev of ['typescript', 'vite', '@biomejs/biome', 'node'])
    assert.ok(
      !existsSync(join(app, 'node_modules', dev, 'package.json')),
      `no dev dependency ${dev} in the image`,
    );
  assert.ok(
    !existsSync(join(app, '.git')) && !existsSync(join(app, 'test')),
    'no repository or tests in the image',
  );

  // The entrypoint as Docker runs it, with the image's paths mapped into the replay, on a free
  // port of the loopback interface (later options win in commander).
  const entrypoint = runtime.entrypoint;
  assert.ok(entrypoint, 'an ENTRYPOINT');
  const [program, ...args] = entrypoint;
  assert.equal(program, 'node');
  const mapped = args.map((arg) => (arg.startsWith('/') ? join(runtime.root, arg) : arg));
  const dataDir = mapped[mapped.indexOf('--data-dir') + 1];
  assert.ok(dataDir, 'the entrypoint names the data directory');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });

  // The image's environment, its paths (KEYGATE_DATA_DIR) mapped into the replay as well.
  const imageEnv = Object.fromEntries(
    Object.entries(runtime.env).map(([name, value]) => [
      name,
      value.startsWith('/') ? join(runtime.root, value) : value,
    ]),
  );
  const env = { ...runEnvironment(imageEnv), KEYGATE_UPSTREAM_URL: 'http://127.0.0.1:9/v1' };
  const help = spawnSync(program, [mapped[0] ?? '', '--help'], { cwd: app, env, encoding: 'utf8' });
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /Usage: keygate/);

  const child = spawn(program, [...mapped, '--host', '127.0.0.1', '--port', '0'], {
    cwd: app,
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  const listening = new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (text: string) => {
      stderr += text;
      const match = /is listening on (http:\/\/\S+)/.exec(stderr);
      if (match?.[1]) resolve(match[1]);
    });
    child.once('exit', (code) => reject(new Error(`the image's gateway exited (${code}): ${stderr}`)));
  });
  const exited = once(child, 'exit');
  try {
    const url = await within(listening, 20_000, "the image's gateway to listen");
    const health = await request(`${url}/healthz`);
    assert.equal(health.statusCode, 200, await health.body.text());
    const consolePage = await request(`${url}/console/`);
    assert.equal(consolePage.statusCode, 200);
    assert.match(await consolePage.body.text(), /<script/);
    // docs/deploy.md's `docker compose exec keygate-1 node bin/keygate.js setup-token`: the CLI in
    // the image works on the gateway's data directory without being told (KEYGATE_DATA_DIR).
    const token = /create the owner account with the setup token\s+(\S+)/.exec(stderr)?.[1];
    assert.ok(token, `the banner shows the setup token: ${stderr}`);
    const setup = spawnSync(program, ['bin/keygate.js', 'setup-token'], { cwd: app, env, encoding: 'utf8' });
    assert.equal(setup.status, 0, setup.stderr);
    assert.equal(setup.stdout.trim(), token);
  } finally {
    child.kill('SIGTERM');
    await within(exited, 15_000, "the image's gateway to stop").catch(() => child.kill('SIGKILL'));
  }
  assert.deepEqual((await exited).slice(0, 1), [0], `a graceful stop: ${stderr}`);
});
