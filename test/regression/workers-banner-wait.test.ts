/**
 * Issue 13, item 14: test/integration/workers-embedded.test.ts waited for the first line of
 * `keygate start --workers 2`'s banner ("… with 2 worker processes") and then asserted a later one
 * ("limits, budgets and concurrency kept by the primary process"), which the primary writes after
 * it; on a clean clone the assertion ran first and failed. Here the banner's lines reach stderr
 * 300 ms apart (test/support/banner-apart.ts, preloaded into `keygate start`), which turns that
 * race into a certain failure: the harness waits for the whole banner, and the workers test file
 * passes even so.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { createCliHarness } from '../support/cli.ts';
import { within } from '../support/wait.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const PRELOAD = new URL('../support/banner-apart.ts', import.meta.url).pathname;
/** The banner's lines 300 ms apart: far more than a poll of the output takes. */
const APART = { NODE_OPTIONS: `--import ${PRELOAD}`, BANNER_APART_MS: '300' };

const harness = createCliHarness({ tempPrefix: 'keygate-banner-wait-' });
before(() => harness.start());
after(() => harness.cleanup());

test('the harness returns a started gateway once its whole banner is printed', async () => {
  // The single process's banner has a dozen lines: 100 ms apart is enough here.
  const env = { ...harness.upstreamEnv(), ...APART, BANNER_APART_MS: '100' };
  const gw = await harness.startGateway(harness.newDataDir(), env, ['--http']);
  assert.match(gw.proc.stderr, /^ {2}console: http:\/\/\S+\/console$/m);
  assert.match(gw.proc.stderr, /^Stop with Ctrl-C/m);
});

test('test/integration/workers-embedded.test.ts passes when the banner’s lines arrive apart', {
  timeout: 120_000,
}, async () => {
  const env: NodeJS.ProcessEnv = { ...process.env, ...APART };
  delete env.NODE_TEST_CONTEXT; // a test run of its own, not a subtest of this one
  const run = spawn(
    process.execPath,
    [
      '--test',
      '--test-reporter=tap',
      '--test-timeout=60000',
      '--test-name-pattern=banner',
      'test/integration/workers-embedded.test.ts',
    ],
    { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  run.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  run.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const code = await within(
    new Promise<number | null>((resolve) => run.once('close', (c) => resolve(c))),
    90_000,
    'the workers-embedded test run',
  ).finally(() => run.kill('SIGKILL'));
  assert.equal(code, 0, output);
  assert.match(output, /^# pass 1$/m, output);
});
