/**
 * Issue 12, item 10: the TOTP "last step used" was kept in each process's memory, so with
 * `--workers N` or several instances one code signed in once per process (4 times with 4 workers).
 * Two gateways over one store (one SQLite data directory; one PostgreSQL database) stand for two
 * processes: a code, and a recovery code, sign in once across both of them.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { Secret, TOTP } from 'otpauth';
import { loadConfig } from '../../src/config/config.ts';
import { SESSION_COOKIE } from '../../src/console/credentials.ts';
import { type RunningGateway, startGateway } from '../../src/http/server.ts';
import { tempDir } from '../support/gateway.ts';
import { createTestDatabase, databaseUrl, dropTestDatabase, postgresUnavailable } from '../support/stores.ts';

const OWNER = { email: 'owner@example.com', password: 'correct horse battery staple' };

interface Reply {
  status: number;
  json: Record<string, unknown>;
  cookie: string | undefined;
}

/** A same-origin console call over plain HTTP (the gateways run with --http). */
async function post(
  gw: RunningGateway,
  path: string,
  body: unknown,
  session?: { cookie: string; csrf: string },
): Promise<Reply> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'sec-fetch-site': 'same-origin',
  };
  if (session) {
    headers.cookie = `${SESSION_COOKIE}=${session.cookie}`;
    headers['x-csrf-token'] = session.csrf;
  }
  const res = await fetch(`${gw.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  const setCookie = res.headers.get('set-cookie') ?? '';
  const cookie = setCookie.startsWith(`${SESSION_COOKIE}=`)
    ? setCookie.slice(SESSION_COOKIE.length + 1).split(';', 1)[0]
    : undefined;
  return { status: res.status, json: JSON.parse(text) as Record<string, unknown>, cookie };
}

/** Two gateways (two ConsoleAuth instances, as two processes have) over one store. */
async function twoGateways(store: {
  dataDir: string;
  env: Record<string, string>;
}): Promise<RunningGateway[]> {
  const gateways: RunningGateway[] = [];
  for (let i = 0; i < 2; i++) {
    const config = loadConfig(
      { dataDir: store.dataDir, port: '0', http: true },
      { KEYGATE_UPSTREAM_URL: 'http://127.0.0.1:9', ...store.env },
    );
    config.log.level = 'silent';
    gateways.push(await startGateway(config, { env: store.env }));
  }
  return gateways;
}

/** Sets the owner up on the first gateway and switches two-factor sign-in on; returns the TOTP. */
async function ownerWithTotp(gw: RunningGateway): Promise<{ totp: TOTP; recovery: string[] }> {
  const token = await gw.console.setupToken();
  const setup = await post(gw, '/console/api/setup', { setup_token: token, ...OWNER });
  assert.equal(setup.status, 201, JSON.stringify(setup.json));
  const session = { cookie: setup.cookie ?? '', csrf: String(setup.json.csrf_token) };
  const pending = await post(gw, '/console/api/totp/setup', {}, session);
  assert.equal(pending.status, 200, JSON.stringify(pending.json));
  const totp = new TOTP({
    algorithm: 'SHA1',
    digits: 6,
    period: 30,
    secret: Secret.fromBase32(String(pending.json.secret)),
  });
  // The code of the previous step enables (it is within the window), leaving the current one unused.
  const enabled = await post(
    gw,
    '/console/api/totp/enable',
    { code: totp.generate({ timestamp: Date.now() - 30_000 }) },
    session,
  );
  assert.equal(enabled.status, 200, JSON.stringify(enabled.json));
  return { totp, recovery: enabled.json.recovery_codes as string[] };
}

function suite(
  name: string,
  open: () => Promise<{ dataDir: string; env: Record<string, string>; done(): Promise<void> }>,
) {
  describe(name, () => {
    let gateways: RunningGateway[] = [];
    let done: () => Promise<void> = async () => {};
    before(async () => {
      const store = await open();
      done = store.done;
      gateways = await twoGateways(store);
    });
    after(async () => {
      for (const gw of gateways) await gw.close();
      await done();
    });

    test('one TOTP code signs in once across two processes, however it is raced', async () => {
      const [a, b] = gateways as [RunningGateway, RunningGateway];
      const { totp } = await ownerWithTotp(a);
      const code = totp.generate();
      const login = (gw: RunningGateway) => post(gw, '/console/api/login', { ...OWNER, totp_code: code });
      // One after the other: the second process must know the first used the code.
      const first = await login(b);
      const second = await login(a);
      // And raced, on both at once.
      const raced = await Promise.all([login(a), login(b), login(a), login(b)]);
      const statuses = [first, second, ...raced].map((r) => r.status);
      assert.deepEqual(
        statuses.filter((s) => s === 200).length,
        1,
        `one sign-in with the code, not ${JSON.stringify(statuses)}`,
      );
      assert.equal(first.status, 200, JSON.stringify(first.json));
      assert.equal(second.json.code, 'invalid_totp');
    });

    test('a recovery code signs in once across two processes', async () => {
      const [a, b] = gateways as [RunningGateway, RunningGateway];
      const codes = await freshRecoveryCodes(a);
      const code = codes[0] ?? '';
      const results = await Promise.all(
        [a, b, a, b].map((gw) => post(gw, '/console/api/login', { ...OWNER, totp_code: code })),
      );
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((s) => s === 200).length, 1, JSON.stringify(statuses));
      // Two other codes spent at once on two processes: both are gone (no lost update brings one back).
      const [x, y] = await Promise.all([
        post(a, '/console/api/login', { ...OWNER, totp_code: codes[1] }),
        post(b, '/console/api/login', { ...OWNER, totp_code: codes[2] }),
      ]);
      assert.deepEqual([x.status, y.status], [200, 200]);
      for (const used of codes.slice(0, 3)) {
        const again = await post(b, '/console/api/login', { ...OWNER, totp_code: used });
        assert.equal(again.json.code, 'invalid_totp', `recovery code ${codes.indexOf(used)} worked twice`);
      }
      assert.equal((await b.store.getUser(OWNER.email))?.recoveryCodes.length, 7);
    });

    /** Switches two-factor off and on again (password + a fresh TOTP) for ten new recovery codes. */
    async function freshRecoveryCodes(gw: RunningGateway): Promise<string[]> {
      const user = await gw.store.getUser(OWNER.email);
      assert.ok(user);
      await gw.store.updateCredentials(
        user.id,
        { totpSecret: null, totpEnabledAt: null, recoveryCodes: [] },
        'test.reset',
        { type: 'cli', id: null, ip: null },
        Date.now(),
      );
      const signed = await post(gw, '/console/api/login', OWNER);
      assert.equal(signed.status, 200, JSON.stringify(signed.json));
      const session = { cookie: signed.cookie ?? '', csrf: String(signed.json.csrf_token) };
      const pending = await post(gw, '/console/api/totp/setup', {}, session);
      const totp = new TOTP({
        algorithm: 'SHA1',
        digits: 6,
        period: 30,
        secret: Secret.fromBase32(String(pending.json.secret)),
      });
      const enabled = await post(
        gw,
        '/console/api/totp/enable',
        { code: totp.generate({ timestamp: Date.now() + 30_000 }) },
        session,
      );
      assert.equal(enabled.status, 200, JSON.stringify(enabled.json));
      return enabled.json.recovery_codes as string[];
    }
  });
}

suite('one SQLite data directory', async () => {
  const dataDir = tempDir('keygate-totp-');
  return { dataDir, env: {}, done: async () => rmSync(dataDir, { recursive: true, force: true }) };
});

const pgDown = await postgresUnavailable();
if (pgDown !== undefined && !process.env.CI) {
  test('one PostgreSQL database', { skip: pgDown }, () => {});
} else {
  suite('one PostgreSQL database', async () => {
    const database = await createTestDatabase();
    const dataDir = tempDir('keygate-totp-pg-');
    return {
      dataDir,
      env: { DATABASE_URL: databaseUrl(database), KEYGATE_SECRET: randomBytes(32).toString('base64url') },
      done: async () => {
        await dropTestDatabase(database);
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  });
}
