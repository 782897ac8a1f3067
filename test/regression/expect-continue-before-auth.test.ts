/**
 * Regression (issue 12, item 18): `Expect: 100-continue` was answered before authentication, so
 * anyone could make the gateway ask for (and read) a body of up to the body limit without a key.
 * Now 100 Continue is sent only once the caller is authenticated and the request routed.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import { connect } from 'node:tls';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

let t: TestGateway;
let key: string;
before(async () => {
  t = await startTestGateway();
  key = (await t.createKey()).key;
});
after(async () => {
  await t.close();
});

/** Sends a request head with `Expect: 100-continue` and no body; returns the first status line. */
async function firstLine(path: string, authorization: string | undefined): Promise<string> {
  const url = new URL(t.url);
  const socket = connect({ host: url.hostname, port: Number(url.port), ca: t.ca, servername: 'localhost' });
  await once(socket, 'secureConnect');
  const head = [
    `POST ${path} HTTP/1.1`,
    `host: ${url.host}`,
    ...(authorization === undefined ? [] : [`authorization: ${authorization}`]),
    'content-type: application/json',
    'content-length: 1000000',
    'expect: 100-continue',
    '',
    '',
  ].join('\r\n');
  socket.write(head);
  let received = '';
  for await (const chunk of socket) {
    received += String(chunk);
    if (received.includes('\r\n')) break;
  }
  socket.destroy();
  return received.split('\r\n', 1)[0] ?? '';
}

test('no 100 Continue without a valid key, on /v1 and /admin/v1', async () => {
  for (const path of ['/v1/chat/completions', '/admin/v1/keys']) {
    for (const authorization of [undefined, 'Bearer kg_not-a-key', 'Basic dXNlcjpwYXNz']) {
      const line = await firstLine(path, authorization);
      assert.doesNotMatch(line, / 100 /, `${path} with ${authorization}: ${line}`);
      assert.match(line, /^HTTP\/1\.1 4\d\d /, `${path} with ${authorization}: ${line}`);
    }
  }
});

test('a valid key on a known route gets 100 Continue', async () => {
  assert.equal(await firstLine('/v1/chat/completions', `Bearer ${key}`), 'HTTP/1.1 100 Continue');
  // A valid key on a route that takes no such body is answered at once, without a 100.
  assert.match(await firstLine('/v1/nothing-here', `Bearer ${key}`), /^HTTP\/1\.1 404 /);
});
