/**
 * Regression (issue 12, item 1, the CLI): the CLI sent KEYGATE_ADMIN_KEY over plain http:// to any
 * host whose name matched `/^127\./`, so `http://127.attacker.example` passed as "loopback" and the
 * admin key would have gone to whoever answers for that name, in clear. Now an address is parsed
 * (node:net / ipaddr.js, never a pattern over the text): plain http:// goes only to a loopback
 * address, or to `localhost` when what it resolves to, at connect time, is loopback; everything
 * else is refused before any connection, with exit code 2.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, before, test } from 'node:test';
import { ANY_KEY_RE, baseEnv, createCliHarness } from '../support/cli.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

const harness = createCliHarness({ tempPrefix: 'keygate-plain-http-' });
let t: TestGateway;
let adminKey: string;
/** A plain TCP listener on loopback: it records whether anything ever connected to it. */
let listener: Server;
let connections = 0;
let port: number;

before(async () => {
  t = await startTestGateway({ http: true });
  adminKey = (await t.createKey('operator', undefined, { scopes: ['admin'] })).key;
  listener = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  port = (listener.address() as { port: number }).port;
});
after(async () => {
  await harness.cleanup();
  await t.close();
  await new Promise<void>((resolve) => listener.close(() => resolve()));
});

function keysList(url: string) {
  return harness.runCli(['keys', 'list', '--json'], {
    ...baseEnv(),
    KEYGATE_URL: url,
    KEYGATE_ADMIN_KEY: adminKey,
  });
}

test('a name that merely starts with "127." is not loopback: refused before any connection', async () => {
  for (const host of ['127.attacker.example', '127.0.0.1.attacker.example', '127.0.0.1.nip.example']) {
    const url = `http://${host}:${port}`;
    const res = await keysList(url);
    assert.equal(res.code, 2, `${url}: ${res.stdout}${res.stderr}`);
    assert.match(
      res.stderr,
      /^keygate: refusing to send KEYGATE_ADMIN_KEY unencrypted to \S+: use the gateway's https:\/\/ address \(plain http:\/\/ is accepted for loopback addresses only\)\n$/,
      url,
    );
    assert.doesNotMatch(res.stdout + res.stderr, ANY_KEY_RE, 'the key is never printed');
  }
  for (const host of ['10.0.0.1', '169.254.169.254', '[fd00::1]', 'gateway.example']) {
    const res = await keysList(`http://${host}:${port}`);
    assert.equal(res.code, 2, `${host}: ${res.stderr}`);
    assert.match(res.stderr, /refusing to send KEYGATE_ADMIN_KEY unencrypted/);
  }
  assert.equal(connections, 0, 'nothing connected anywhere');
});

test('a loopback address, parsed, is accepted over plain http', async () => {
  const { port: gatewayPort } = new URL(t.url);
  for (const host of ['127.0.0.1', '127.1', 'localhost']) {
    const res = await keysList(`http://${host}:${gatewayPort}`);
    assert.equal(res.code, 0, `${host}: ${res.stderr}`);
    assert.ok(Array.isArray(JSON.parse(res.stdout)), host);
  }
});
