/**
 * Console sign-in and sessions over real HTTPS, without a browser: setup token, cookie flags,
 * CSRF, login throttling (per account and per address), the same answer for unknown users and
 * wrong passwords, TOTP with replay refusal and recovery codes, session revocation at sign-out
 * and password change, invitations, the page's security headers, and the ugly inputs.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Secret, TOTP } from 'otpauth';
import { SESSION_COOKIE } from '../../src/console/credentials.ts';
import { CONTENT_SECURITY_POLICY } from '../../src/console/static.ts';
import { CLI_ACTOR } from '../../src/store/types.ts';
import { createUser } from '../../src/users/service.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

const OWNER = { email: 'owner@example.com', password: 'correct horse battery staple' };

type Headers = Record<string, string | string[] | undefined>;

/** A browser-ish client: keeps the session cookie, sends the CSRF token and Sec-Fetch-Site. */
class Browser {
  cookie: string | undefined;
  csrf: string | undefined;
  readonly #t: TestGateway;
  /** The client address the gateway sees (through its trusted proxy, 127.0.0.1). */
  readonly #ip: string | undefined;
  constructor(t: TestGateway, ip?: string) {
    this.#t = t;
    this.#ip = ip;
  }

  async call(
    method: 'GET' | 'POST' | 'PUT' | 'DELETE',
    path: string,
    body?: unknown,
    extra: Record<string, string> = {},
  ): Promise<{ status: number; headers: Headers; json: Record<string, unknown>; text: string }> {
    const headers: Record<string, string> = { 'sec-fetch-site': 'same-origin', ...extra };
    if (this.#ip) headers['x-forwarded-for'] = this.#ip;
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.cookie) headers.cookie = `${SESSION_COOKIE}=${this.cookie}`;
    if (this.csrf && method !== 'GET' && !('x-csrf-token' in extra)) headers['x-csrf-token'] = this.csrf;
    for (const [name, value] of Object.entries(headers)) if (value === '') delete headers[name];
    const res = await this.#t.call(path, {
      method,
      headers,
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const setCookie = res.headers['set-cookie'];
    const cookieLine = Array.isArray(setCookie) ? setCookie[0] : setCookie;
    if (cookieLine?.startsWith(`${SESSION_COOKIE}=`)) {
      const value = cookieLine.slice(SESSION_COOKIE.length + 1).split(';', 1)[0] ?? '';
      this.cookie = value === '' ? undefined : value;
    }
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(res.text) as Record<string, unknown>;
    } catch {}
    if (typeof json.csrf_token === 'string') this.csrf = json.csrf_token;
    return { status: res.status, headers: res.headers, json, text: res.text };
  }

  login(email: string, password: string, totp_code?: string) {
    return this.call('POST', '/console/api/login', { email, password, ...(totp_code ? { totp_code } : {}) });
  }
}

let t: TestGateway;
let owner: Browser;

before(async () => {
  t = await startTestGateway({
    configure: (config) => {
      config.auth.loginFailuresPerAccount = 3;
      config.auth.loginFailuresPerIp = 8;
      // Tests that fail sign-ins on purpose come from addresses of their own, so they do not
      // lock out the others.
      config.server.trustedProxies = ['127.0.0.1/32', '::1/128'];
    },
  });
});
after(async () => {
  await t.close();
});

describe('first run', () => {
  test('the console asks for setup; a wrong token is refused, the right one creates the owner', async () => {
    const b = new Browser(t);
    const state = await b.call('GET', '/console/api/session');
    assert.equal(state.status, 200);
    assert.deepEqual(state.json, {
      setup_required: true,
      user: null,
      csrf_token: null,
      workspaces: [],
      ca_cert_path: null,
    });

    const token = await t.gateway.console.setupToken();
    assert.match(token ?? '', /^[A-Z2-7]{5}(-[A-Z2-7]{5}){3}$/);
    const wrong = await b.call('POST', '/console/api/setup', {
      setup_token: 'AAAAA-AAAAA-AAAAA-AAAAA',
      ...OWNER,
    });
    assert.equal(wrong.status, 403);
    assert.equal(wrong.json.code, 'invalid_setup_token');
    assert.equal(b.cookie, undefined);

    const weak = await b.call('POST', '/console/api/setup', {
      setup_token: token,
      email: OWNER.email,
      password: 'short',
    });
    assert.equal(weak.status, 422);
    assert.match(String(weak.json.message), /12 characters/);

    // Lower case and spaces are forgiven.
    const typed = (token ?? '').toLowerCase().replaceAll('-', ' ');
    const ok = await b.call('POST', '/console/api/setup', { setup_token: typed, ...OWNER });
    assert.equal(ok.status, 201, ok.text);
    const cookie = String(ok.headers['set-cookie']);
    assert.match(cookie, /^__Host-keygate_session=[A-Za-z0-9_-]{43}; /);
    for (const flag of ['HttpOnly', 'Secure', 'SameSite=Strict', 'Path=/'])
      assert.ok(cookie.includes(flag), flag);
    assert.doesNotMatch(cookie, /Domain=/i);
    assert.deepEqual(ok.json.workspaces, [{ id: 'ws_default', name: 'Default', role: 'owner' }]);
    assert.equal((ok.json.user as { email: string }).email, OWNER.email);
    owner = b;

    assert.equal(await t.gateway.console.setupToken(), undefined);
    const again = await new Browser(t).call('POST', '/console/api/setup', { setup_token: typed, ...OWNER });
    assert.equal(again.status, 409);
    assert.equal(again.json.code, 'setup_done');
  });

  test('the store keeps a hash of the session token, never the token', async () => {
    const id = createHash('sha256')
      .update(owner.cookie ?? '')
      .digest('hex');
    const session = await t.gateway.store.getSession(id);
    assert.ok(session);
    assert.equal(await t.gateway.store.getSession(owner.cookie ?? ''), undefined);
  });
});

describe('CSRF', () => {
  test('a state-changing call needs the CSRF header and the same origin; reads do not', async () => {
    assert.equal((await owner.call('GET', '/admin/v1/keys', undefined, { 'x-csrf-token': '' })).status, 200);
    const none = await owner.call('POST', '/admin/v1/keys', { name: 'no token' }, { 'x-csrf-token': '' });
    assert.equal(none.status, 403);
    assert.equal(none.json.code, 'csrf_failed');
    const wrong = await owner.call('POST', '/admin/v1/keys', { name: 'x' }, { 'x-csrf-token': 'forged' });
    assert.equal(wrong.status, 403);
    const crossSite = await owner.call(
      'POST',
      '/admin/v1/keys',
      { name: 'x' },
      { 'sec-fetch-site': 'cross-site' },
    );
    assert.equal(crossSite.status, 403);
    const otherOrigin = await owner.call(
      'POST',
      '/admin/v1/keys',
      { name: 'x' },
      { 'sec-fetch-site': '', origin: 'https://evil.example' },
    );
    assert.equal(otherOrigin.status, 403);
    assert.equal((await t.gateway.store.listKeys()).length, 0, 'no refused call created a key');

    const ok = await owner.call('POST', '/admin/v1/keys', { name: 'from the console' });
    assert.equal(ok.status, 201, ok.text);
    const created = ok.json as { created_by: string; key: string };
    assert.equal(created.created_by, (await t.gateway.store.getUser(OWNER.email))?.id);
    // The audit log names the user, not a key.
    const audit = await t.gateway.store.listAudit({ action: 'key.create' });
    assert.equal(audit[0]?.actor.type, 'user');
  });

  test('sign-in from another site is refused (login CSRF)', async () => {
    const res = await new Browser(t).call(
      'POST',
      '/console/api/login',
      { email: OWNER.email, password: OWNER.password },
      { 'sec-fetch-site': 'cross-site' },
    );
    assert.equal(res.status, 403);
    assert.equal(res.json.code, 'csrf_failed');
  });

  test('an Authorization header wins over a cookie: a bad key is a 401, not the session', async () => {
    const res = await owner.call('GET', '/admin/v1/keys', undefined, { authorization: 'Bearer kg_nope' });
    assert.equal(res.status, 401);
  });
});

describe('sign-in', () => {
  test('unknown user and wrong password get the same answer', async () => {
    const unknown = await new Browser(t, '198.51.100.1').login('nobody@example.com', 'whatever it may be');
    const wrong = await new Browser(t, '198.51.100.1').login(OWNER.email, 'not the password at all');
    assert.equal(unknown.status, 401);
    assert.equal(wrong.status, 401);
    assert.deepEqual(unknown.json, wrong.json);
    assert.equal(unknown.json.message, 'Wrong email or password.');
  });

  test('per account: after 3 failures even the right password waits, with Retry-After', async () => {
    await createUser(
      t.gateway.store,
      { email: 'throttled@example.com', password: 'the right password!' },
      CLI_ACTOR,
    );
    for (let i = 0; i < 3; i++) {
      const from = `198.51.100.${10 + i}`;
      assert.equal(
        (await new Browser(t, from).login('throttled@example.com', `wrong password ${i}`)).status,
        401,
      );
    }
    // From yet another address: the account itself is locked.
    const locked = await new Browser(t, '198.51.100.20').login(
      'throttled@example.com',
      'the right password!',
    );
    assert.equal(locked.status, 429);
    assert.equal(locked.json.code, 'too_many_attempts');
    assert.ok(Number(locked.headers['retry-after']) > 0);
    // Another account is not affected.
    assert.equal((await new Browser(t).login(OWNER.email, OWNER.password)).status, 200);
  });

  test('per address: failures across many accounts lock the address', async () => {
    const before = await t.gateway.store.listAudit({ action: 'user.login_failed' });
    let status = 0;
    for (let i = 0; i < 12 && status !== 429; i++) {
      status = (await new Browser(t, '203.0.113.7').login(`spray${i}@example.com`, 'a guess of a password'))
        .status;
    }
    assert.equal(status, 429);
    // The owner, from another address, is not locked out.
    assert.equal((await new Browser(t).login(OWNER.email, OWNER.password)).status, 200);
    const failed = await t.gateway.store.listAudit({ action: 'user.login_failed' });
    assert.ok(failed.length > before.length);
    assert.equal((await t.gateway.store.listAudit({ action: 'user.login_throttled' })).length > 0, true);
  });
});

describe('sessions end', () => {
  test('sign-out revokes the session on the server', async () => {
    const b = new Browser(t);
    const cookieOwner = new Browser(t);
    // Fresh address bucket is not needed: a success does not count as a failure.
    assert.equal((await b.login(OWNER.email, OWNER.password)).status, 200);
    cookieOwner.cookie = b.cookie;
    cookieOwner.csrf = b.csrf;
    const out = await b.call('POST', '/console/api/logout', {});
    assert.equal(out.status, 200);
    assert.match(String(out.headers['set-cookie']), /Max-Age=0/);
    // The old cookie, replayed, no longer works.
    const replay = await cookieOwner.call('GET', '/admin/v1/keys');
    assert.equal(replay.status, 401);
    assert.equal(replay.json.code, 'not_signed_in');
    assert.equal((await cookieOwner.call('GET', '/console/api/session')).json.user, null);
  });

  test('a password change ends every other session; this browser gets a new one', async () => {
    const a = new Browser(t);
    const b = new Browser(t);
    assert.equal((await a.login(OWNER.email, OWNER.password)).status, 200);
    assert.equal((await b.login(OWNER.email, OWNER.password)).status, 200);
    const oldA = a.cookie;
    const wrong = await a.call('POST', '/console/api/password', {
      current_password: 'not it at all!',
      new_password: 'a brand new password',
    });
    assert.equal(wrong.status, 422);
    const changed = await a.call('POST', '/console/api/password', {
      current_password: OWNER.password,
      new_password: 'a brand new password ✓',
    });
    assert.equal(changed.status, 200, changed.text);
    assert.notEqual(a.cookie, oldA);
    assert.equal((await a.call('GET', '/admin/v1/keys')).status, 200);
    assert.equal((await b.call('GET', '/admin/v1/keys')).status, 401);
    assert.equal((await new Browser(t).login(OWNER.email, OWNER.password)).status, 401);
    assert.equal((await new Browser(t).login(OWNER.email, 'a brand new password ✓')).status, 200);
    OWNER.password = 'a brand new password ✓';
    owner = a;
    const audit = await t.gateway.store.listAudit({ action: 'user.password_change' });
    assert.equal(audit.length, 1);
    assert.doesNotMatch(JSON.stringify(audit), /scrypt|brand new/);
  });
});

describe('two-factor sign-in', () => {
  test('enrol, then sign-in needs a code; a code works once; recovery codes work once', async () => {
    const setup = await owner.call('POST', '/console/api/totp/setup', {});
    assert.equal(setup.status, 200, setup.text);
    const secret = String(setup.json.secret);
    assert.match(String(setup.json.otpauth_url), /^otpauth:\/\/totp\/Keygate:owner%40example\.com\?/);
    const totp = new TOTP({ issuer: 'Keygate', label: OWNER.email, secret: Secret.fromBase32(secret) });

    const bad = await owner.call('POST', '/console/api/totp/enable', {
      code: '000000' === totp.generate() ? '111111' : '000000',
    });
    assert.equal(bad.status, 422);
    const enabled = await owner.call('POST', '/console/api/totp/enable', { code: totp.generate() });
    assert.equal(enabled.status, 200, enabled.text);
    const codes = enabled.json.recovery_codes as string[];
    assert.equal(codes.length, 10);
    assert.equal(new Set(codes).size, 10);
    // The store has the secret sealed, not in clear.
    const stored = await t.gateway.store.getUser(OWNER.email);
    assert.ok(stored?.totpSecret?.startsWith('v1.'));
    assert.ok(!stored?.totpSecret?.includes(secret));

    const noCode = await new Browser(t).login(OWNER.email, OWNER.password);
    assert.equal(noCode.status, 401);
    assert.equal(noCode.json.code, 'totp_required');
    assert.equal(noCode.headers['set-cookie'], undefined);
    const wrongCode = await new Browser(t).login(
      OWNER.email,
      OWNER.password,
      '123456' === totp.generate() ? '654321' : '123456',
    );
    assert.equal(wrongCode.json.code, 'invalid_totp');

    // The code used to enable is spent: wait for the next period's code rather than replaying it.
    const next = totp.generate({ timestamp: Date.now() + 30_000 });
    const signedIn = await new Browser(t).login(OWNER.email, OWNER.password, next);
    assert.equal(signedIn.status, 200, signedIn.text);
    const replay = await new Browser(t).login(OWNER.email, OWNER.password, next);
    assert.equal(replay.status, 401);
    assert.equal(replay.json.code, 'invalid_totp');

    const recovery = codes[0] ?? '';
    assert.equal(
      (await new Browser(t).login(OWNER.email, OWNER.password, recovery.toUpperCase())).status,
      200,
    );
    assert.equal((await new Browser(t).login(OWNER.email, OWNER.password, recovery)).status, 401);

    const off = await owner.call('POST', '/console/api/totp/disable', { password: OWNER.password });
    assert.equal(off.status, 200, off.text);
    assert.equal((off.json.user as { totp_enabled: boolean }).totp_enabled, false);
    assert.equal((await new Browser(t).login(OWNER.email, OWNER.password)).status, 200);
  });
});

describe('invitations', () => {
  test('invite a viewer; they set a password, join, and cannot create keys', async () => {
    const invited = await owner.call('POST', '/admin/v1/workspaces/ws_default/invites', {
      email: 'Viewer@Example.com',
      role: 'viewer',
    });
    assert.equal(invited.status, 201, invited.text);
    const token = String(invited.json.token);
    assert.equal(invited.json.email, 'viewer@example.com');

    const listed = await owner.call('GET', '/admin/v1/workspaces/ws_default/invites');
    assert.doesNotMatch(listed.text, new RegExp(token));
    assert.equal((listed.json.data as { status: string }[])[0]?.status, 'open');

    const viewer = new Browser(t);
    const inspect = await viewer.call('POST', '/console/api/invite/inspect', { token });
    assert.equal(inspect.status, 200);
    // Inspecting says what the invitation is for, never whether its email has an account
    // (issue 12, item 9: that enumerated other tenants' people to whoever held a token).
    assert.equal('account_exists' in inspect.json, false, inspect.text);
    assert.equal(inspect.json.email, 'viewer@example.com');
    assert.equal(inspect.json.role, 'viewer');
    const noPassword = await viewer.call('POST', '/console/api/invite/accept', { token });
    assert.equal(noPassword.status, 422);
    const accepted = await viewer.call('POST', '/console/api/invite/accept', {
      token,
      password: 'viewer password 123',
    });
    assert.equal(accepted.status, 200, accepted.text);
    assert.deepEqual(accepted.json.workspaces, [{ id: 'ws_default', name: 'Default', role: 'viewer' }]);

    assert.equal((await viewer.call('GET', '/admin/v1/keys')).status, 200);
    const create = await viewer.call('POST', '/admin/v1/keys', { name: 'viewer key' });
    assert.equal(create.status, 403);
    assert.match(String(create.json.message), /role "viewer"/);
    // Sign-ins are server-wide events: the operator's session sees them, a viewer's does not.
    const ownerView = await owner.call('GET', '/admin/v1/audit?action=user.login');
    assert.ok((ownerView.json.data as unknown[]).length > 0, ownerView.text);
    const viewerView = await viewer.call('GET', '/admin/v1/audit?action=user.login');
    assert.equal(viewerView.status, 200);
    assert.deepEqual(viewerView.json.data, []);
    // The token was spent.
    const reuse = await new Browser(t).call('POST', '/console/api/invite/inspect', { token });
    assert.equal(reuse.status, 404);
    assert.equal(reuse.json.code, 'invalid_invite');
    // A workspace the user is not in cannot be picked.
    const other = await viewer.call('GET', '/admin/v1/keys', undefined, {
      'x-keygate-workspace': 'ws_other',
    });
    assert.equal(other.status, 403);
  });

  test('an existing user must be signed in as the invited email to accept', async () => {
    await t.gateway.store.createWorkspace({ id: 'ws_team', name: 'Team', createdAt: Date.now() }, CLI_ACTOR);
    const invited = await owner.call(
      'POST',
      '/admin/v1/workspaces/ws_team/invites',
      { email: 'viewer@example.com', role: 'member' },
      { 'x-keygate-workspace': 'ws_team' },
    );
    assert.equal(invited.status, 201, invited.text);
    const token = String(invited.json.token);
    const stranger = new Browser(t);
    const refused = await stranger.call('POST', '/console/api/invite/accept', {
      token,
      password: 'anything long enough',
    });
    assert.equal(refused.status, 401);
    const viewer = new Browser(t);
    assert.equal((await viewer.login('viewer@example.com', 'viewer password 123')).status, 200);
    const accepted = await viewer.call('POST', '/console/api/invite/accept', { token });
    assert.equal(accepted.status, 200, accepted.text);
    const roles = Object.fromEntries(
      (accepted.json.workspaces as { id: string; role: string }[]).map((w) => [w.id, w.role]),
    );
    assert.deepEqual(roles, { ws_default: 'viewer', ws_team: 'member' });
    // In ws_team the same user is a member: they may create keys there.
    const key = await viewer.call(
      'POST',
      '/admin/v1/keys',
      { name: 'team key' },
      { 'x-keygate-workspace': 'ws_team' },
    );
    assert.equal(key.status, 201, key.text);
    assert.equal(key.json.workspace_id, 'ws_team');
  });
});

describe('the page', () => {
  test('every console response carries the strict CSP and friends', async () => {
    for (const path of ['/console', '/console/', '/console/keys', '/console/api/session']) {
      const res = await t.call(path);
      assert.equal(res.status, 200, path);
      assert.equal(res.headers['content-security-policy'], CONTENT_SECURITY_POLICY, path);
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
      assert.equal(res.headers['x-frame-options'], 'DENY');
      assert.equal(res.headers['referrer-policy'], 'no-referrer');
    }
    assert.match(CONTENT_SECURITY_POLICY, /script-src 'self';/);
    assert.doesNotMatch(CONTENT_SECURITY_POLICY, /unsafe-inline|unsafe-eval|https?:/);
    const page = await t.call('/console/usage');
    assert.match(String(page.headers['content-type']), /text\/html/);
    assert.doesNotMatch(page.text, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
    assert.doesNotMatch(page.text, /https?:\/\//, 'no third-party address in the page');
    const asset = /src="(\/console\/assets\/[^"]+\.js)"/.exec(page.text)?.[1];
    assert.ok(asset);
    const js = await t.call(asset);
    assert.equal(js.status, 200);
    assert.match(String(js.headers['cache-control']), /immutable/);
    assert.equal((await t.call('/console/assets/missing.js')).status, 404);
    assert.equal((await t.call('/console/keys', { method: 'POST' })).status, 405);
  });
});

describe('ugly input', () => {
  test('malformed cookies, bodies and types get clear errors, never a crash', async () => {
    const b = new Browser(t, '192.0.2.99');
    for (const cookie of [
      '',
      '__Host-keygate_session=',
      '__Host-keygate_session=%%%',
      'a=b; __Host-keygate_session=x'.repeat(50),
    ]) {
      const res = await t.call('/console/api/session', { headers: { cookie } });
      assert.equal(res.status, 200);
      assert.equal((JSON.parse(res.text) as { user: unknown }).user, null);
      const admin = await t.call('/admin/v1/keys', { headers: { cookie } });
      assert.equal(admin.status, 401);
    }
    const bad = await b.call('POST', '/console/api/login', '{"email": ');
    assert.equal(bad.status, 400);
    assert.equal(bad.json.code, 'invalid_json');
    const types = await b.call('POST', '/console/api/login', { email: 42, password: ['x'] });
    assert.equal(types.status, 422);
    const extra = await b.call('POST', '/console/api/login', { email: 'a@b.cd', password: 'x', admin: true });
    assert.equal(extra.status, 422);
    const huge = await b.call('POST', '/console/api/login', {
      email: 'a@b.cd',
      password: 'x'.repeat(100_000),
    });
    assert.equal(huge.status, 413);
    const get = await b.call('GET', '/console/api/login');
    assert.equal(get.status, 405);
    const unknown = await b.call('POST', '/console/api/nothing-here', {});
    assert.equal(unknown.status, 404);
    const unicode = await b.login('ünïcode@exämple.com', 'пароль пароль пароль');
    assert.equal(unicode.status, 401);
  });

  test('no session token, password or CSRF token reaches the log', () => {
    const log = t.logLines.join('\n');
    assert.ok(t.logLines.some((l) => l.includes('console request')));
    assert.ok(owner.cookie && !log.includes(owner.cookie));
    assert.ok(owner.csrf && !log.includes(owner.csrf));
    assert.ok(!log.includes(OWNER.password));
    assert.ok(!log.includes('correct horse'));
  });
});
