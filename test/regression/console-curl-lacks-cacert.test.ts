/**
 * Regression (issue 13, item 10): the console's "call the API with it" snippet, shown with a new
 * key's secret, was a bare `curl https://…`, which fails against the gateway's generated
 * self-signed certificate. The signed-in session now names the certificate clients must trust
 * (`ca_cert_path`, absolute), the dialog puts it in the snippet as `--cacert`, and the command
 * works as shown. The browser test (test/e2e/console.test.ts) runs the dialog's snippet itself;
 * this one checks the session view and the command it builds, without a browser.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { isAbsolute } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { SESSION_COOKIE } from '../../src/console/credentials.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { createUser } from '../../src/users/service.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

const execFileAsync = promisify(execFile);
const OWNER = { email: 'owner@example.com', password: 'correct horse battery staple' };

let t: TestGateway;
before(async () => {
  t = await startTestGateway();
  await createUser(t.gateway.store, OWNER, CLI_ACTOR);
});
after(() => t.close());

async function signedInSession(): Promise<Record<string, unknown>> {
  const login = await t.call('/console/api/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'sec-fetch-site': 'same-origin' },
    body: JSON.stringify(OWNER),
  });
  assert.equal(login.status, 200, login.text);
  const setCookie = login.headers['set-cookie'];
  const cookie = (Array.isArray(setCookie) ? setCookie[0] : setCookie)?.split(';', 1)[0] ?? '';
  assert.ok(cookie.startsWith(`${SESSION_COOKIE}=`));
  const session = await t.call('/console/api/session', { headers: { cookie } });
  return session.json() as Record<string, unknown>;
}

test('the session names the self-signed certificate, and curl --cacert with it reaches /v1', async () => {
  const session = await signedInSession();
  const caCert = session.ca_cert_path;
  assert.equal(typeof caCert, 'string', 'the signed-in session names the certificate to trust');
  assert.ok(isAbsolute(String(caCert)), 'as an absolute path (the console cannot know the CLI’s directory)');
  const { key } = await t.createKey('snippet');
  // The command the dialog shows, as a user pastes it.
  const { stdout } = await execFileAsync(
    'curl',
    [
      '--silent',
      '--show-error',
      '--fail-with-body',
      '--cacert',
      String(caCert),
      `${t.url}/v1/models`,
      '-H',
      `Authorization: Bearer ${key}`,
    ],
    { encoding: 'utf8', timeout: 30_000 },
  );
  assert.match(stdout, /"object":\s*"list"/);
});

test('signed out, the session names no file of the server', async () => {
  const session = (await t.call('/console/api/session')).json() as Record<string, unknown>;
  assert.equal(session.ca_cert_path, null);
});
