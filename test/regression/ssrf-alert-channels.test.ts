/**
 * Regression (issue 12, item 1): a tenant admin (`workspaces:write`) could make the gateway connect
 * anywhere through an alert channel — http:// to any loopback port, https:// to 169.254.169.254, a
 * private range or the gateway itself, smtp:// to any host and port — and "send test" answered with
 * what the target said (status, connection errors, body text, SMTP greetings): a port scanner and a
 * banner reader. Channels were uncapped and test sends unlimited.
 *
 * Now every destination is checked on the address connected to, at connect time (the names here
 * resolve to loopback): loopback, link-local, private, multicast and unspecified addresses are
 * refused unless the operator lists them in `alerts.allowedDestinations`, plain http:// goes only
 * there, test results are fixed reasons, a workspace has at most `alerts.maxChannelsPerWorkspace`
 * channels and `alerts.testSendsPerMinute` test sends a minute.
 */
import assert from 'node:assert/strict';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Config } from '../../src/config/config.ts';
import { createKey } from '../../src/keys/service.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

const TENANT = 'ws_tenant';
const BODY_SECRET = 'internal-body-7f3a91';
const BANNER_SECRET = 'banner-secret-c41d07';

/** A TCP listener that counts connections; `greet` is written to each (an SMTP server's banner). */
async function tcpListener(greet?: string) {
  const state = { connections: 0, server: undefined as Server | undefined, port: 0 };
  const server = createServer((socket: Socket) => {
    state.connections++;
    socket.on('error', () => {});
    if (greet === undefined) {
      socket.destroy();
      return;
    }
    socket.write(greet);
    socket.on('data', () => socket.end(`554 ${BANNER_SECRET} go away\r\n`));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.server = server;
  state.port = (server.address() as { port: number }).port;
  return state;
}

async function tenantGateway(alerts?: Record<string, unknown>): Promise<{ t: TestGateway; key: string }> {
  const t = await startTestGateway({
    configure: (config: Config) => {
      // Object.assign: the same test runs on a version whose configuration has no `alerts` section.
      if (alerts) Object.assign(config, { alerts: { ...(config as { alerts?: object }).alerts, ...alerts } });
    },
  });
  await t.gateway.store.createWorkspace({ id: TENANT, name: 'Tenant', createdAt: Date.now() }, CLI_ACTOR);
  const { key } = await createKey(
    { store: t.gateway.store, pepper: t.gateway.secrets.pepper, prefix: t.config.keys.prefix },
    { name: 'tenant admin', scopes: ['workspaces:write', 'usage:read'], workspaceId: TENANT },
  );
  return { t, key };
}

function api(t: TestGateway, key: string) {
  return async (method: 'GET' | 'POST', path: string, body?: unknown) => {
    const res = await t.call(path, {
      method,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { ...res, body: res.text ? (res.json() as Record<string, unknown>) : {} };
  };
}

const smtp = (host: string, port: number) => `smtp://${host}:${port}?from=a@example.com&to=b@example.com`;

describe('without the operator allowing anything (the default)', () => {
  let t: TestGateway;
  let call: ReturnType<typeof api>;
  let web: Awaited<ReturnType<typeof tcpListener>>;
  let mail: Awaited<ReturnType<typeof tcpListener>>;

  before(async () => {
    const started = await tenantGateway();
    t = started.t;
    call = api(t, started.key);
    web = await tcpListener();
    mail = await tcpListener(`220 ${BANNER_SECRET} ESMTP\r\n`);
  });
  after(async () => {
    await t.close();
    web.server?.close();
    mail.server?.close();
  });

  test('loopback, link-local, private and unspecified addresses, and the gateway itself, are refused (422)', async () => {
    const gatewayPort = new URL(t.url).port;
    const refused: [string, string][] = [
      ['webhook', `http://127.0.0.1:${web.port}/hook`],
      ['webhook', `https://127.0.0.1:${web.port}/hook`],
      ['webhook', `https://127.0.0.1:${gatewayPort}/admin/v1/keys`],
      ['webhook', 'https://169.254.169.254/latest/meta-data/'],
      ['webhook', 'https://10.0.0.5/hook'],
      ['webhook', 'https://192.168.1.1/hook'],
      ['webhook', `https://[::1]:${web.port}/hook`],
      ['webhook', `https://[::ffff:127.0.0.1]:${web.port}/hook`],
      ['webhook', 'https://0.0.0.0/hook'],
      ['slack', `https://127.0.0.1:${web.port}/services/T/B/x`],
      ['email', smtp('127.0.0.1', mail.port)],
      ['webhook', 'http://hooks.example.com/plain'],
    ];
    for (const [type, url] of refused) {
      const res = await call('POST', '/admin/v1/alerts/channels', { type, url });
      assert.equal(res.status, 422, `${url}: ${res.text}`);
      assert.match(res.text, /alerts\.allowedDestinations/, url);
    }
    assert.equal(web.connections + mail.connections, 0);
  });

  test('a name resolving to loopback is refused when connecting: a fixed reason, no connection, no banner', async () => {
    const hook = await call('POST', '/admin/v1/alerts/channels', {
      type: 'webhook',
      url: `https://localhost:${web.port}/hook`,
    });
    assert.equal(hook.status, 201, hook.text);
    const email = await call('POST', '/admin/v1/alerts/channels', {
      type: 'email',
      url: smtp('localhost', mail.port),
    });
    assert.equal(email.status, 201, email.text);
    const tested = await call('POST', '/admin/v1/alerts/test', {});
    assert.equal(tested.status, 200, tested.text);
    const results = tested.body.data as {
      outcome: string;
      reason?: string;
      status: unknown;
      error: string;
    }[];
    assert.equal(results.length, 2);
    for (const r of results) {
      assert.equal(r.outcome, 'failed');
      assert.equal(r.reason, 'refused_by_policy');
      assert.equal(r.status, null);
    }
    assert.equal(web.connections + mail.connections, 0, 'the gateway connected to nothing');
    assert.doesNotMatch(tested.text, new RegExp(BANNER_SECRET));
  });
});

describe('with the operator allowing loopback', () => {
  let t: TestGateway;
  let call: ReturnType<typeof api>;
  let receiver: HttpServer;
  let receiverPort: number;
  let mail: Awaited<ReturnType<typeof tcpListener>>;
  let closedPort: number;

  before(async () => {
    const started = await tenantGateway({ allowedDestinations: ['127.0.0.0/8'] });
    t = started.t;
    call = api(t, started.key);
    receiver = createHttpServer((_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`${BODY_SECRET}: stack trace here`);
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverPort = (receiver.address() as { port: number }).port;
    mail = await tcpListener(`220 ${BANNER_SECRET} ESMTP\r\n`);
    const closed = await tcpListener();
    closedPort = closed.port;
    await new Promise<void>((resolve) => closed.server?.close(() => resolve()));
  });
  after(async () => {
    await t.close();
    receiver.close();
    mail.server?.close();
  });

  test('test results are fixed reasons: never a body, a banner or a socket error', async () => {
    for (const [type, url] of [
      ['webhook', `http://127.0.0.1:${receiverPort}/hook`],
      ['webhook', `http://127.0.0.1:${closedPort}/hook`],
      ['email', smtp('127.0.0.1', mail.port)],
    ] as const) {
      const res = await call('POST', '/admin/v1/alerts/channels', { type, url });
      assert.equal(res.status, 201, `${url}: ${res.text}`);
    }
    // A range the operator did not list is still refused.
    const privateRange = await call('POST', '/admin/v1/alerts/channels', {
      type: 'webhook',
      url: 'https://10.0.0.5/hook',
    });
    assert.equal(privateRange.status, 422, privateRange.text);

    const tested = await call('POST', '/admin/v1/alerts/test', {});
    assert.equal(tested.status, 200, tested.text);
    const results = tested.body.data as { reason?: string; error: string | null }[];
    const reasons = results.map((r) => r.reason).sort();
    assert.equal(reasons.length, 3);
    assert.ok(reasons.includes('http_500'), tested.text);
    assert.ok(reasons.includes('unreachable'), tested.text);
    for (const reason of reasons)
      assert.match(
        reason ?? '',
        /^(?:delivered|refused_by_policy|unreachable|failed|http_\d{3}|smtp_\d{3})$/,
      );
    for (const leak of [BODY_SECRET, BANNER_SECRET, 'ECONNREFUSED', 'stack trace'])
      assert.ok(!tested.text.includes(leak), `the test result quotes ${leak}: ${tested.text}`);
  });

  test('test sends are limited per workspace per minute (429 with Retry-After)', async () => {
    const statuses: number[] = [];
    let last: Awaited<ReturnType<typeof call>> | undefined;
    for (let i = 0; i < 6; i++) {
      last = await call('POST', '/admin/v1/alerts/test', {});
      statuses.push(last.status);
    }
    // One was sent by the test before; the default allows 5 a minute.
    assert.deepEqual(statuses, [200, 200, 200, 200, 429, 429]);
    assert.equal(last?.body.code, 'rate_limited');
    assert.match(String(last?.headers['retry-after']), /^\d+$/);
  });

  test('a workspace has at most 20 channels', async () => {
    const listed = await call('GET', '/admin/v1/alerts/channels');
    assert.equal(listed.status, 200, listed.text);
    const have = (listed.body.data as unknown[]).length;
    for (let i = have; i < 20; i++) {
      const res = await call('POST', '/admin/v1/alerts/channels', {
        type: 'webhook',
        url: `https://hooks.example.com/${i}`,
      });
      assert.equal(res.status, 201, res.text);
    }
    const over = await call('POST', '/admin/v1/alerts/channels', {
      type: 'webhook',
      url: 'https://hooks.example.com/one-too-many',
    });
    assert.equal(over.status, 409, over.text);
    assert.match(String(over.body.message), /at most 20 alert channels/);
  });
});
