import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/config.ts';
import { parseDuration } from '../../src/config/duration.ts';
import { tempDir } from '../support/gateway.ts';

test('defaults match the documented contract', () => {
  const config = loadConfig({}, {}, '/srv');
  assert.equal(config.server.host, '127.0.0.1');
  assert.equal(config.server.port, 8443);
  assert.equal(config.server.http, false);
  assert.equal(config.dataDir, '/srv/.keygate');
  assert.equal(config.upstream.url, 'https://api.mistral.ai');
  assert.equal(config.upstream.key, undefined);
  assert.equal(config.server.bodyLimitBytes, 10 * 1024 * 1024);
  assert.equal(config.modelAliases['mistral-small'], 'mistral-small-latest');
});

test('flags override the environment, which overrides the file', () => {
  const dir = tempDir();
  const file = join(dir, 'keygate.yaml');
  writeFileSync(
    file,
    'server:\n  port: 9000\n  host: 0.0.0.0\nupstream:\n  url: https://file.example\nmodelAliases:\n  old-model: new-model\n',
  );
  const config = loadConfig(
    { config: file, port: '9100' },
    { KEYGATE_PORT: '9050', KEYGATE_UPSTREAM_URL: 'https://env.example/' },
  );
  assert.equal(config.server.port, 9100);
  assert.equal(config.server.host, '0.0.0.0');
  assert.equal(config.upstream.url, 'https://env.example');
  assert.deepEqual(config.modelAliases, { 'old-model': 'new-model' });
});

test('MISTRAL_API_KEY is the fallback for the upstream key', () => {
  assert.equal(loadConfig({}, { MISTRAL_API_KEY: 'm' }).upstream.key, 'm');
  assert.equal(loadConfig({}, { MISTRAL_API_KEY: 'm', KEYGATE_UPSTREAM_KEY: 'k' }).upstream.key, 'k');
});

test('every bad value gets a message naming it', () => {
  const bad: [Parameters<typeof loadConfig>[0], NodeJS.ProcessEnv, RegExp][] = [
    [
      { port: '70000' },
      {},
      /server\.port \(--port \/ KEYGATE_PORT\): must be between 1 and 65535.* got "70000"/,
    ],
    [{ port: 'abc' }, {}, /server\.port/],
    [{}, { KEYGATE_PORT: '-1' }, /server\.port/],
    [
      {},
      { KEYGATE_UPSTREAM_URL: 'ftp://x' },
      /upstream\.url \(KEYGATE_UPSTREAM_URL\): must be an http\(s\) URL/,
    ],
    [{ tlsCert: 'a.pem' }, {}, /--tls-cert and --tls-key go together/],
    [{ http: true, tlsCert: 'a', tlsKey: 'b' }, {}, /--http/],
    [{ config: '/nonexistent/keygate.yaml' }, {}, /cannot read config file/],
  ];
  for (const [flags, env, message] of bad) {
    assert.throws(
      () => loadConfig(flags, env),
      (error: unknown) => error instanceof ConfigError && message.test(error.message),
    );
  }
});

test('unknown settings and invalid YAML in the file are refused', () => {
  const dir = tempDir();
  const unknown = join(dir, 'unknown.yaml');
  writeFileSync(unknown, 'server:\n  prot: 1\n');
  assert.throws(() => loadConfig({ config: unknown }, {}), /server: Unrecognized key/);
  const broken = join(dir, 'broken.yaml');
  writeFileSync(broken, 'server: [\n');
  assert.throws(() => loadConfig({ config: broken }, {}), /not valid YAML/);
  const prefix = join(dir, 'prefix.yaml');
  writeFileSync(prefix, 'keys:\n  prefix: "Bad_Prefix"\n');
  assert.throws(() => loadConfig({ config: prefix }, {}), /keys\.prefix/);
  // An alias is a model id on both sides: what it maps to is forwarded and recorded as the model.
  const alias = join(dir, 'alias.yaml');
  writeFileSync(alias, 'modelAliases:\n  old-model: "new model/../x"\n');
  assert.throws(
    () => loadConfig({ config: alias }, {}),
    /modelAliases\.old-model: "new model\/\.\.\/x": Input should be a model id/,
  );
  // Alert destinations are CIDR ranges, kept in normal form; a head cannot outlast the request.
  const ranges = join(dir, 'alerts.yaml');
  writeFileSync(ranges, 'alerts:\n  allowedDestinations: ["10.20.0.0/16", "127.0.0.1"]\n');
  assert.deepEqual(loadConfig({ config: ranges }, {}).alerts.allowedDestinations, [
    '10.20.0.0/16',
    '127.0.0.1/32',
  ]);
  writeFileSync(ranges, 'alerts:\n  allowedDestinations: ["127.attacker.example"]\n');
  assert.throws(() => loadConfig({ config: ranges }, {}), /alerts\.allowedDestinations/);
  const timeouts = join(dir, 'timeouts.yaml');
  writeFileSync(timeouts, 'server:\n  headersTimeoutMs: 60000\n  requestTimeoutMs: 30000\n');
  assert.throws(
    () => loadConfig({ config: timeouts }, {}),
    /server\.headersTimeoutMs: must be at most server\.requestTimeoutMs/,
  );
});

test('durations', () => {
  assert.equal(parseDuration('90d'), 90 * 86_400_000);
  assert.equal(parseDuration('24h'), 86_400_000);
  assert.equal(parseDuration('30m'), 1_800_000);
  assert.equal(parseDuration('45s'), 45_000);
  assert.equal(parseDuration('0'), 0);
  for (const bad of ['', '5', 'd', '1.5h', '-1d', '1w', '10 d x'])
    assert.equal(parseDuration(bad), undefined, bad);
});

test('--workers runs without Redis too, and divides the local fallback among the workers unless told otherwise', () => {
  assert.equal(loadConfig({ workers: '2' }, {}).server.workers, 2);
  const env = { REDIS_URL: 'redis://127.0.0.1:6379' };
  assert.equal(loadConfig({ workers: '3' }, env).limits.expectedInstances, 3);
  assert.equal(loadConfig({}, env).limits.expectedInstances, 1);
  const dir = tempDir();
  const file = join(dir, 'keygate.yaml');
  writeFileSync(file, 'limits:\n  expectedInstances: 8\n');
  assert.equal(loadConfig({ workers: '2', config: file }, env).limits.expectedInstances, 8);
  assert.throws(() => loadConfig({ workers: '0' }, env), ConfigError);
});
