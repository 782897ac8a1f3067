/**
 * The Dockerfile, .dockerignore, docker-compose.yml and docs/deploy.md agree with each other and
 * with the code (no Docker engine runs here: test/regression/docker-build-order.test.ts replays
 * the build itself). Fast: nothing is installed or built.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config/config.ts';
import { dockerignore, parseDockerfile } from '../support/dockerfile.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

interface ComposeService {
  build?: string;
  environment?: Record<string, string>;
  volumes?: string[];
  healthcheck?: { test: string[] };
}

test('the Dockerfile parser reads continuations, comments inside them and the exec form', () => {
  const [stage] = parseDockerfile(
    [
      '# comment',
      'FROM node:24 AS build',
      'RUN echo a \\',
      '  # dropped',
      '  && echo b',
      'ENTRYPOINT ["node", "x.js"]',
    ].join('\n'),
  );
  assert.equal(stage?.name, 'build');
  assert.deepEqual(
    stage?.instructions.map((i) => [i.keyword, i.args.replace(/\s+/g, ' ')]),
    [
      ['RUN', 'echo a && echo b'],
      ['ENTRYPOINT', '["node", "x.js"]'],
    ],
  );
  assert.throws(() => parseDockerfile('FROM x\nRUN <<EOF\nls\nEOF\n'), /heredocs/);
});

test('.dockerignore keeps secrets, build output and the repository out of the build context', () => {
  const ignored = dockerignore(ROOT);
  for (const path of ['.env', 'deploy/tls/privkey.pem', '.keygate/secret', 'node_modules/pg/package.json'])
    assert.ok(ignored(path), `${path} is not sent to docker build`);
  for (const path of ['.git/config', 'dist/cli/main.js', 'console/dist/index.html', 'deploy/prod.env'])
    assert.ok(ignored(path), `${path} is not sent to docker build`);
  for (const path of [
    'src/cli/main.ts',
    'package-lock.json',
    'tsconfig.build.json',
    'deploy/keygate.env.example',
  ])
    assert.ok(!ignored(path), `${path} is in the build context`);
});

test('docker-compose.yml, the Dockerfile and docs/deploy.md agree', () => {
  const [build, runtime] = parseDockerfile(read('Dockerfile'));
  assert.ok(build && runtime);
  const entrypoint = JSON.parse(runtime.instructions.find((i) => i.keyword === 'ENTRYPOINT')?.args ?? '[]');
  const port = entrypoint[entrypoint.indexOf('--port') + 1];
  const exposed = runtime.instructions.find((i) => i.keyword === 'EXPOSE')?.args;
  assert.equal(exposed, port, 'EXPOSE is the port the entrypoint listens on');

  const compose = parse(read('docker-compose.yml'), { merge: true }) as {
    services: Record<string, ComposeService>;
  };
  const instances = Object.entries(compose.services).filter(([, s]) => s.build === '.');
  assert.ok(instances.length >= 2, 'the compose file runs Keygate instances built from the Dockerfile');
  for (const [name, service] of instances) {
    const health = service.healthcheck?.test.join(' ') ?? '';
    assert.ok(health.includes(`127.0.0.1:${port}/readyz`), `${name}'s health check asks /readyz on ${port}`);
    for (const variable of ['KEYGATE_SECRET', 'DATABASE_URL', 'REDIS_URL'])
      assert.ok(service.environment?.[variable], `${name} sets ${variable}`);
    // The configuration it mounts exists and is one Keygate accepts.
    const mount = service.volumes?.find((v) => v.endsWith(`:${service.environment?.KEYGATE_CONFIG}:ro`));
    assert.ok(mount, `${name} mounts its KEYGATE_CONFIG`);
    const file = join(ROOT, mount.split(':')[0] ?? '');
    assert.doesNotThrow(() => loadConfig({ config: file }, {}), `${file} is a valid configuration`);
  }
  for (const service of Object.values(compose.services))
    for (const volume of service.volumes ?? []) {
      const source = volume.split(':')[0] ?? '';
      if (source.startsWith('./') && !source.includes('tls'))
        assert.ok(existsSync(join(ROOT, source)), `${source} exists`);
    }

  // The commands docs/deploy.md runs in a container use what the runtime stage copies in.
  const copied = runtime.instructions
    .filter((i) => i.keyword === 'COPY')
    .map((i) => i.args.split(/\s+/).at(-1)?.replace(/^\.\//, ''));
  for (const command of read('docs/deploy.md').matchAll(/docker compose exec \S+ node (\S+)/g)) {
    const script = command[1] ?? '';
    assert.ok(
      copied.some((dir) => dir && script.startsWith(`${dir}/`)),
      `${script} is in the image`,
    );
  }
  assert.ok(
    runtime.instructions.some((i) => i.keyword === 'ENV' && /KEYGATE_DATA_DIR=\S+/.test(i.args)),
    'the CLI in the container finds the data directory of the entrypoint',
  );
});
