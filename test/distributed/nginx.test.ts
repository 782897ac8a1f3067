/**
 * deploy/nginx.conf, run: nginx (a child process) terminates TLS in front of two plain-HTTP
 * instances on loopback that trust it as a proxy, exactly as docs/deploy.md sets it up. The
 * configuration is generated from the deploy file at test time (only ports and paths replaced),
 * and the official OpenAI SDK talks to nginx.
 *
 * The client connects from 127.0.0.2 and nginx to the instances from 127.0.0.1, so the address the
 * instances record shows whether X-Forwarded-For was read through the trusted proxy.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { Agent, fetch as undiciFetch } from 'undici';
import { ensureSelfSigned } from '../../src/http/tls.ts';
import { CHAT, Cluster, describeDistributed, type Instance, within } from '../support/cluster.ts';
import { tempDir } from '../support/gateway.ts';
import { freePort } from '../support/ports.ts';
import { eventually } from '../support/wait.ts';

const NGINX = process.env.KEYGATE_TEST_NGINX ?? '/usr/sbin/nginx';
const DEPLOY_CONF = join(import.meta.dirname, '..', '..', 'deploy', 'nginx.conf');
/** The client's own address (nginx and the instances talk over 127.0.0.1). */
const CLIENT_ADDRESS = '127.0.0.2';

function nginxMissing(): string | undefined {
  if (!existsSync(NGINX)) return `nginx is not installed (${NGINX})`;
  const probe = spawnSync(NGINX, ['-v'], { stdio: 'ignore' });
  if (probe.error !== undefined || probe.status !== 0) return `${NGINX} -v failed`;
  if (!existsSync(DEPLOY_CONF)) return `${DEPLOY_CONF} is missing`;
  return undefined;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Replaces `pattern` in `text`, insisting that it occurs exactly `count` times. */
function replaceExactly(text: string, pattern: RegExp, count: number, by: (n: number) => string): string {
  let n = 0;
  const out = text.replace(pattern, () => by(n++));
  if (n !== count) throw new Error(`deploy/nginx.conf: expected ${count} × ${pattern}, found ${n}`);
  return out;
}

/**
 * deploy/nginx.conf as a whole configuration for this test, included in the http block as
 * docs/deploy.md says: ports and paths replaced, nothing else.
 */
function nginxConfig(dir: string, port: number, upstreams: number[], cert: string, key: string): string {
  let conf = readFileSync(DEPLOY_CONF, 'utf8');
  // Directives only (line starts), never the comments that quote them.
  conf = replaceExactly(
    conf,
    /^\s*server 127\.0\.0\.1:\d+/gm,
    2,
    (n) => `    server 127.0.0.1:${upstreams[n]}`,
  );
  conf = replaceExactly(conf, /^\s*listen 443 /gm, 1, () => `    listen 127.0.0.1:${port} `);
  conf = replaceExactly(conf, /^\s*ssl_certificate\s+\S+;/gm, 1, () => `    ssl_certificate ${cert};`);
  conf = replaceExactly(conf, /^\s*ssl_certificate_key\s+\S+;/gm, 1, () => `    ssl_certificate_key ${key};`);
  conf = replaceExactly(
    conf,
    /^\s*access_log \S+ keygate;/gm,
    1,
    () => `    access_log ${join(dir, 'access.log')} keygate;`,
  );
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((what) => `  ${what}_temp_path ${join(dir, what)};`)
    .join('\n');
  return [
    'daemon off;',
    'master_process on;',
    'worker_processes 1;',
    // Run as root (a container), workers would otherwise be `nobody` and could not use the temp dir.
    process.getuid?.() === 0 ? 'user root;' : '',
    `pid ${join(dir, 'nginx.pid')};`,
    `error_log ${join(dir, 'error.log')} notice;`,
    'events {}',
    'http {',
    temp,
    conf,
    '}',
    '',
  ].join('\n');
}

interface RequestLine {
  msg: string;
  ip: string;
  path: string;
  status: number;
  keyId: string | null;
}

/** The access-log lines of /v1 requests an instance wrote. */
function requestLines(instance: Instance): RequestLine[] {
  return instance.logLines
    .map((line) => JSON.parse(line) as RequestLine)
    .filter((line) => line.msg === 'request' && line.path.startsWith('/v1/'));
}

await describeDistributed(
  'nginx in front of two instances (deploy/nginx.conf)',
  () => {
    let cluster: Cluster | undefined;
    let dir: string | undefined;
    let nginx: ChildProcess | undefined;
    let nginxOutput = '';
    /** `nginx -t` of deploy/nginx.conf with only its ports and paths replaced. */
    let shipped: { status: number | null; stderr: string } = { status: null, stderr: '' };
    let agent: Agent | undefined;
    let baseURL = '';
    let key = '';
    let keyId = '';

    before(async () => {
      cluster = await Cluster.start({
        instances: 2,
        http: true,
        configure: (c) => {
          c.server.host = '127.0.0.1';
          c.server.trustedProxies = ['127.0.0.1/32'];
        },
      });
      dir = tempDir('keygate-nginx-');
      const tls = await ensureSelfSigned(dir, '127.0.0.1');
      const port = await freePort();
      const upstreams = cluster.instances.map((i) => i.gateway.port);
      const keyPath = join(dir, 'tls', 'key.pem');
      const conf = join(dir, 'nginx.conf');
      writeFileSync(conf, nginxConfig(dir, port, upstreams, tls.certPath, keyPath));
      const check = spawnSync(NGINX, ['-t', '-c', conf, '-p', dir, '-e', join(dir, 'error.log')], {
        encoding: 'utf8',
      });
      shipped = { status: check.status, stderr: check.stderr };
      assert.equal(check.status, 0, `deploy/nginx.conf does not load: nginx -t: ${check.stderr}`);
      // Its own process group, so that the workers go with the master whatever happens.
      nginx = spawn(NGINX, ['-c', conf, '-p', dir, '-e', join(dir, 'error.log')], {
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      // Should this process die before `after` runs, nginx goes with it.
      const child = nginx;
      process.once('exit', () => {
        try {
          if (child.pid !== undefined && child.exitCode === null && child.signalCode === null)
            process.kill(-child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      });
      nginx.stdout?.on('data', (chunk: Buffer) => (nginxOutput += chunk.toString()));
      nginx.stderr?.on('data', (chunk: Buffer) => (nginxOutput += chunk.toString()));
      const errorLog = join(dir, 'error.log');
      const failed = () => `nginx did not start: ${nginxOutput}\n${readFileSync(errorLog, 'utf8')}`;
      await eventually(
        () => {
          if (child.exitCode !== null) throw new Error(failed());
          return accepts(port);
        },
        failed,
        10_000,
      );
      agent = new Agent({ connect: { ca: tls.cert }, localAddress: CLIENT_ADDRESS, keepAliveTimeout: 1000 });
      baseURL = `https://127.0.0.1:${port}/v1`;
      const made = await cluster.createKey('behind nginx');
      key = made.key;
      keyId = made.id;
    });

    after(async () => {
      const child = nginx;
      if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGTERM'); // fast shutdown: the master stops its workers
        try {
          await within(exited, 5000, 'nginx to stop');
        } catch {
          process.kill(-child.pid, 'SIGKILL');
          await exited;
        }
      }
      await agent?.close();
      await cluster?.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const openai = () =>
      new OpenAI({
        apiKey: key,
        baseURL,
        maxRetries: 0,
        fetch: (input, init) =>
          undiciFetch(input as string, {
            ...(init as object),
            dispatcher: agent,
          }) as unknown as Promise<Response>,
      });

    test('deploy/nginx.conf loads as shipped (nginx -t)', () => {
      assert.equal(shipped.status, 0, shipped.stderr);
    });

    test('chat and streamed chat through nginx with the OpenAI SDK', async () => {
      const client = openai();
      const reply = await client.chat.completions.create({
        model: 'mistral-small-latest',
        messages: [{ role: 'user', content: CHAT.content }],
      });
      assert.equal(reply.choices[0]?.message.content, `Echo: ${CHAT.content}`);
      assert.equal(reply.usage?.total_tokens, CHAT.usage.total);

      const stream = await client.chat.completions.create({
        model: 'mistral-small-latest',
        messages: [{ role: 'user', content: CHAT.content }],
        stream: true,
      });
      let content = '';
      let chunks = 0;
      let total: number | undefined;
      for await (const chunk of stream) {
        chunks++;
        content += chunk.choices[0]?.delta.content ?? '';
        total = chunk.usage?.total_tokens ?? total;
      }
      assert.equal(content, `Echo: ${CHAT.content}`);
      assert.equal(total, CHAT.usage.total);
      assert.ok(chunks >= 4, `${chunks} chunks`);
    });

    test('a slow stream reaches the client chunk by chunk (nginx does not buffer it)', async () => {
      const stream = await openai().chat.completions.create({
        model: 'stub-slow-stream',
        messages: [{ role: 'user', content: 'x' }],
        stream: true,
      });
      const arrivals: number[] = [];
      let content = '';
      for await (const chunk of stream) {
        const text = chunk.choices[0]?.delta.content ?? '';
        if (text) arrivals.push(Date.now());
        content += text;
      }
      assert.equal(content, Array.from({ length: 10 }, (_, i) => `tok${i + 1}`).join(' '));
      // Ten pieces produced 200 ms apart arrive spread out, not all at once at the end.
      assert.equal(arrivals.length, 10);
      const spread = arrivals.at(-1)! - arrivals[0]!;
      assert.ok(spread >= 1200, `the pieces arrived within ${spread} ms of each other`);
    });

    test('requests reach both instances, which record the real client address', async () => {
      const c = cluster;
      if (!c) throw new Error('no cluster');
      const client = openai();
      const since = Date.now();
      const linesBefore = c.instances.map((i) => requestLines(i).length);
      for (let i = 0; i < 6; i++) {
        const reply = await client.chat.completions.create(
          { model: 'mistral-small-latest', messages: [{ role: 'user', content: `request ${i}` }] },
          // A forged X-Forwarded-For from the client: nginx appends the real peer, and the instances
          // read the chain right to left, stopping at the first address that is not a trusted proxy.
          i % 2 === 0 ? { headers: { 'x-forwarded-for': '203.0.113.7' } } : {},
        );
        assert.equal(reply.choices[0]?.message.content, `Echo: request ${i}`);
      }
      // Access lines and usage records are written once a response has ended on the server side,
      // which may follow the client's read: wait for all six of each.
      await eventually(async () => {
        for (const i of c.instances)
          await new Promise<void>((resolve) => i.gateway.logger.flush(() => resolve()));
        return c.instances.reduce((n, i, at) => n + requestLines(i).length - (linesBefore[at] ?? 0), 0) >= 6;
      }, 'the access lines of the six requests');
      const perInstance = c.instances.map((i) => requestLines(i));
      for (const [n, lines] of perInstance.entries()) {
        assert.ok(lines.length >= 3, `instance ${n} served ${lines.length} requests`);
        for (const line of lines) {
          assert.equal(line.ip, CLIENT_ADDRESS, `instance ${n} recorded ${line.ip}`);
          assert.equal(line.keyId, keyId);
        }
      }
      // The usage records in the shared database say the same.
      await eventually(async () => {
        const [row] = await c.query<{ n: number }>(
          'SELECT COUNT(*)::int AS n FROM usage_records WHERE key_id = $1 AND time >= $2',
          [keyId, since],
        );
        return (row?.n ?? 0) >= 6;
      }, 'the usage records of the six requests');
      const ips = await c.query<{ client_ip: string; n: number }>(
        'SELECT client_ip, COUNT(*)::int AS n FROM usage_records WHERE key_id = $1 GROUP BY client_ip',
        [keyId],
      );
      assert.deepEqual(
        ips.map((r) => r.client_ip),
        [CLIENT_ADDRESS],
      );
    });

    test("nginx's access log holds no key and no Authorization header", async () => {
      const c = cluster;
      if (!c || !dir) throw new Error('not started');
      const log = readFileSync(join(dir, 'access.log'), 'utf8');
      const lines = log.split('\n').filter(Boolean);
      assert.ok(lines.length >= 9, `${lines.length} lines in the access log`);
      assert.ok(!log.includes(key), 'the key is in the access log');
      assert.doesNotMatch(log, /kg_[0-9A-Za-z]{38}/);
      assert.doesNotMatch(log, /bearer|authorization/i);
      for (const line of lines) assert.ok(line.startsWith(`${CLIENT_ADDRESS} `), line);
      for (const instance of c.instances)
        assert.ok(log.includes(`127.0.0.1:${instance.gateway.port}`), `no request went to ${instance.url}`);
      // Nor does its error log.
      assert.ok(!readFileSync(join(dir, 'error.log'), 'utf8').includes(key), 'the key is in the error log');
    });

    test('one instance stopped: nginx sends every request to the other, none fails', async () => {
      const c = cluster;
      if (!c) throw new Error('no cluster');
      const [gone, left] = c.instances as [Instance, Instance];
      const leftBefore = requestLines(left).length;
      await c.stop(gone);
      const client = openai();
      const outcomes = await Promise.allSettled(
        Array.from({ length: 6 }, (_, i) =>
          client.chat.completions.create({
            model: 'mistral-small-latest',
            messages: [{ role: 'user', content: `after the stop ${i}` }],
          }),
        ),
      );
      const failed = outcomes
        .filter((o): o is PromiseRejectedResult => o.status === 'rejected')
        .map((o) => String(o.reason));
      assert.deepEqual(failed, [], 'requests failed while one instance was down');
      assert.equal(requestLines(left).length - leftBefore, 6, 'the remaining instance served them all');
    });
  },
  nginxMissing,
);
