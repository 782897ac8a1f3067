/**
 * The web console end to end, in Debian's Chromium driven by playwright-core, against a real
 * gateway (HTTPS, SQLite) in front of the local upstream stub: first-run setup, sign-out and
 * sign-in (a wrong password refused), a restricted key created in the dialog and its shown-once
 * secret used on /v1, rotation with a grace period, revocation and the next call refused, the
 * usage page showing the calls, an alert raised and acknowledged, the audit log filtered, and a
 * viewer invited, signed up in a second browser context, and refused key creation.
 *
 * No page may log an error, throw, or request anything from another origin. Every page is
 * screenshotted into test-output/console/ (with KEYGATE_UPDATE_DOCS_IMAGES=1, the
 * keys and usage pages also into docs/images/ for the README), and no page may log an error or
 * throw.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Secret, TOTP } from 'otpauth';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import type { UsageRecord } from '../../src/store/types.ts';
import { bearer, chatBody, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { eventually } from '../support/wait.ts';

// The few browser globals the functions run in the page use (the server's tsconfig has no DOM types).
declare const document: { activeElement: unknown };
declare const window: { scrollTo(x: number, y: number): void };
declare const navigator: { clipboard: { readText(): Promise<string> } };

const CHROMIUM = '/usr/bin/chromium';
const execFileAsync = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const OUT = `${ROOT}test-output/console`;
const OWNER = { email: 'owner@example.com', password: 'correct horse battery staple' };
const VIEWER = { email: 'viewer@example.com', password: 'viewer password 1234' };
const KEY_PATTERN = /^kg_[0-9A-Za-z]{38}$/;

/** Fails a wait that takes longer than this (a step, not the whole test). */
const WAIT = 10_000;

interface Watched {
  page: Page;
  /** Console errors and uncaught exceptions, except the API refusals the test provokes on purpose. */
  errors: string[];
  /** `METHOD /path status` of refusals the test provokes (Chromium logs them as console errors). */
  expected: RegExp[];
}

/** A page whose console errors and uncaught exceptions are recorded. */
async function watchedPage(context: BrowserContext, origin: string): Promise<Watched> {
  const page = await context.newPage();
  const watched: Watched = { page, errors: [], expected: [] };
  const refusals = new Map<string, string>();
  page.on('response', (response) => {
    if (response.status() >= 400) {
      const path = new URL(response.url()).pathname;
      refusals.set(response.url(), `${response.request().method()} ${path} ${response.status()}`);
    }
  });
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    const refusal = refusals.get(message.location().url);
    if (
      text.startsWith('Failed to load resource') &&
      refusal &&
      watched.expected.some((e) => e.test(refusal))
    )
      return;
    watched.errors.push(`${text} (${message.location().url})`);
  });
  page.on('pageerror', (error) => watched.errors.push(`uncaught: ${error.message}`));
  page.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith('data:') && new URL(url).origin !== origin)
      watched.errors.push(`third-party request: ${url}`);
  });
  return watched;
}

async function shot(page: Page, name: string): Promise<string> {
  const path = `${OUT}/${name}.png`;
  // From the top: a full-page shot of a scrolled page draws the sticky bars mid-page.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Reloads until the check passes (data that arrives in the background: metering, alerts). */
async function reloadUntil(page: Page, check: () => Promise<boolean>, what: string): Promise<void> {
  await eventually(
    async () => {
      if (await check()) return true;
      await page.reload();
      return false;
    },
    what,
    WAIT,
    250,
  );
}

function ensureConsoleBuilt(): void {
  if (existsSync(`${ROOT}console/dist/index.html`)) return;
  const built = spawnSync(process.execPath, [`${ROOT}scripts/build-console.ts`], { stdio: 'inherit' });
  assert.equal(built.status, 0, 'the console must build');
}

/**
 * A week of background traffic from two other keys, written straight into the store, so the
 * charts and tables have something to show besides the test's own calls (whose figures the test
 * asserts exactly: none of this is attributed to the keys the test creates).
 */
async function seedHistory(gw: TestGateway): Promise<void> {
  const web = await gw.createKey('web-app (prod)', undefined, {
    scopes: ['chat'],
    models: ['mistral-small-*', 'mistral-medium-*'],
    limits: { rpm: 600, tpm: null, concurrency: 20 },
  });
  const batch = await gw.createKey('nightly-embeddings', 30 * 86_400_000, {
    scopes: ['embeddings'],
    models: ['mistral-embed'],
    budget: { day: null, month: 50_000_000 },
  });
  const ci = await gw.createKey('ci-code-review', undefined, {
    scopes: ['chat', 'fim'],
    models: ['codestral-*'],
    allowedIps: ['192.0.2.0/24'],
    limits: { rpm: 120, tpm: 200_000, concurrency: null },
  });
  // Expired by the time anyone looks.
  await gw.createKey('hackathon-demo', 1, { scopes: ['chat'] });
  const hour = 3_600_000;
  const now = Math.floor(Date.now() / hour) * hour;
  const records: UsageRecord[] = [];
  let n = 0;
  const add = (keyId: string, time: number, model: string, endpoint: string, prompt: number, done: number) =>
    records.push({
      id: `seed-${n++}`,
      time,
      keyId,
      workspaceId: 'ws_default',
      model,
      endpoint,
      status: n % 37 === 0 ? 429 : 200,
      promptTokens: prompt,
      completionTokens: done,
      totalTokens: prompt + done,
      latencyMs: 180 + ((n * 53) % 900),
      ttftMs: null,
      clientIp: '10.0.4.17',
    });
  for (let h = 7 * 24 - 1; h >= 1; h--) {
    const time = now - h * hour + 60_000;
    const local = (new Date(time).getUTCHours() + 24) % 24;
    const daytime = Math.max(0, Math.sin(((local - 6) / 24) * 2 * Math.PI));
    const calls = Math.round(2 + 10 * daytime + ((h * 7) % 3));
    for (let i = 0; i < calls; i++) {
      const medium = i % 4 === 0;
      add(
        web.id,
        time + i * 1000,
        medium ? 'mistral-medium-latest' : 'mistral-small-latest',
        '/v1/chat/completions',
        400 + ((h * 31 + i * 17) % 900),
        120 + ((h * 13 + i * 7) % 400),
      );
    }
    if (h % 5 === 0) add(ci.id, time + 30_000, 'codestral-latest', '/v1/fim/completions', 1500, 300);
    if (local >= 1 && local <= 3) {
      for (let i = 0; i < 6; i++) add(batch.id, time + i * 1000, 'mistral-embed', '/v1/embeddings', 6000, 0);
    }
  }
  await gw.gateway.store.recordUsage(records);
}

test('the web console in Chromium: setup, sign-in, keys, usage, alerts, audit, settings, a viewer', {
  timeout: 120_000,
}, async (t) => {
  if (!existsSync(CHROMIUM)) {
    if (process.env.CI) assert.fail(`${CHROMIUM} is missing: CI must install Debian's chromium package`);
    t.skip(`${CHROMIUM} is not installed (apt-get install chromium); the console e2e test needs it`);
    return;
  }
  ensureConsoleBuilt();
  mkdirSync(OUT, { recursive: true });

  const gw = await startTestGateway({
    configure(config) {
      config.alerts.allowedDestinations = ['127.0.0.0/8']; // the webhook receiver listens on loopback
      config.pricing.models = {
        'mistral-small-*': { prompt: 0.1, completion: 0.3 },
        'mistral-medium-*': { prompt: 0.4, completion: 2 },
        'mistral-embed': { prompt: 0.1, completion: 0 },
        'codestral-*': { prompt: 0.3, completion: 0.9 },
      };
    },
  });
  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  t.after(async () => {
    await browser.close();
    await gw.close();
  });

  const origin = gw.url;
  const ownerContext = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: { width: 1440, height: 900 },
  });
  await ownerContext.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  const owner = await watchedPage(ownerContext, origin);
  const page = owner.page;
  page.setDefaultTimeout(WAIT);
  const pages: Watched[] = [owner];
  const shots: Record<string, string> = {};

  // The steps build on each other: after a failure the rest are skipped, not left to time out.
  let broken: string | undefined;
  const step = (name: string, fn: () => Promise<void> | void) =>
    t.test(name, { skip: broken ? `skipped after "${broken}" failed` : false }, async () => {
      try {
        await fn();
      } catch (error) {
        broken = name;
        throw error;
      }
    });

  const v1 = (key: string, model = 'mistral-small-latest') =>
    gw.call('/v1/chat/completions', { method: 'POST', headers: bearer(key), body: chatBody({ model }) });

  await step('first run: the setup page creates the owner and signs them in', async () => {
    const token = await gw.gateway.console.setupToken();
    assert.ok(token, 'a new install has a setup token');
    const response = await page.goto(`${origin}/console/`);
    const csp = response?.headers()['content-security-policy'] ?? '';
    assert.match(csp, /script-src 'self';/);
    assert.match(csp, /style-src 'self';/);
    // Nothing inline for the CSP to refuse: no inline script or style in the page itself.
    const html = readFileSync(`${ROOT}console/dist/index.html`, 'utf8');
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/);
    assert.doesNotMatch(html, /\sstyle=|<style/);
    await page.getByRole('heading', { name: 'Set up Keygate' }).waitFor();
    shots.setup = await shot(page, 'setup');
    await page.getByLabel('Setup token').fill(token);
    await page.getByLabel('Email').fill(OWNER.email);
    await page.getByLabel('Password', { exact: true }).fill(OWNER.password);
    await page.getByLabel('Confirm password').fill(OWNER.password);
    await page.getByRole('button', { name: 'Create owner account' }).click();
    await page.getByRole('heading', { name: 'API keys' }).waitFor();
    await page.getByText('No keys yet — create one to call /v1').waitFor();
    assert.equal(new URL(page.url()).pathname, '/console/keys');
    assert.equal(await gw.gateway.console.setupToken(), undefined, 'the setup token is spent');
  });

  await step('sign-out, then a wrong password is refused and the right one accepted', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    shots['sign-in'] = await shot(page, 'sign-in');
    owner.expected.push(/^POST \/console\/api\/login 401$/);
    await page.getByLabel('Email').fill(OWNER.email);
    await page.getByLabel('Password').fill('not the password at all');
    await page.getByRole('button', { name: 'Sign in' }).click();
    const refusal = page.getByRole('alert');
    await refusal.waitFor();
    assert.equal((await refusal.textContent())?.trim(), 'Wrong email or password.');
    await page.getByLabel('Password').fill(OWNER.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'API keys' }).waitFor();
  });

  await seedHistory(gw);
  let secret = '';
  let rotatedSecret = '';

  await step('the create dialog is keyboard-operable: Escape closes it and focus returns', async () => {
    await page.reload();
    const create = page.getByRole('button', { name: 'Create key' }).first();
    await create.click();
    const dialog = page.getByRole('dialog', { name: 'Create a key' });
    await dialog.waitFor();
    assert.equal(
      await dialog.getByLabel('Name', { exact: true }).evaluate((el) => el === document.activeElement),
      true,
    );
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    assert.equal(
      await create.evaluate((el) => el === document.activeElement),
      true,
      'focus is back on the button',
    );
  });

  await step(
    'create a restricted key; its shown-once secret works on /v1 within its restrictions',
    async () => {
      await page.getByRole('button', { name: 'Create key' }).first().click();
      const dialog = page.getByRole('dialog', { name: 'Create a key' });
      await dialog.getByLabel('Name', { exact: true }).fill('support-bot (prod)');
      // Defaults: the four inference scopes; keep chat and models only.
      assert.equal(await dialog.getByRole('checkbox', { name: /^chat\b/ }).isChecked(), true);
      assert.equal(await dialog.getByRole('checkbox', { name: /^admin\b/ }).isChecked(), false);
      await dialog.getByRole('checkbox', { name: /^fim\b/ }).uncheck();
      await dialog.getByRole('checkbox', { name: /^embeddings\b/ }).uncheck();
      await dialog.getByLabel('Models', { exact: true }).fill('mistral-small-*');
      await dialog.getByLabel('Requests per minute').fill('60');
      await dialog.getByLabel('Tokens per month (UTC)').fill('1000000');
      await dialog.getByLabel('Expires').selectOption('90d');
      shots['key-create'] = await shot(page, 'key-create');
      await dialog.getByRole('button', { name: 'Create key' }).click();

      const shown = page.getByRole('dialog', { name: 'Key support-bot (prod) created' });
      await shown.waitFor();
      await shown.getByText('you will not see it again').waitFor();
      secret = await shown.getByLabel('Secret key').inputValue();
      assert.match(secret, KEY_PATTERN);
      await shown.getByRole('button', { name: 'Copy' }).click();
      await shown.getByText('Copied to the clipboard.').waitFor();
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
      shots['key-created'] = await shot(page, 'key-created');
      // The "call the API" snippet works as shown, pasted into a shell: with the gateway's
      // self-signed certificate it tells curl to trust it (--cacert).
      const snippet = (await shown.locator('.snippet pre').textContent()) ?? '';
      assert.match(snippet, /^curl --cacert '[^']+cert\.pem' https:/);
      // Run asynchronously: the gateway answering it lives in this process.
      const pasted = await execFileAsync(
        'bash',
        ['-c', `${snippet} --silent --show-error --fail-with-body`],
        {
          env: { ...process.env, KEYGATE_KEY: secret },
          encoding: 'utf8',
          timeout: 30_000,
        },
      );
      assert.match(pasted.stdout, /"choices"/, `the snippet ran: ${pasted.stderr}${pasted.stdout}`);
      await shown.getByRole('button', { name: 'I have copied the key' }).click();
      await shown.waitFor({ state: 'detached' });

      const row = page.getByRole('row', { name: /support-bot \(prod\)/ });
      await row.waitFor();
      const text = (await row.textContent()) ?? '';
      for (const part of ['mistral-small-*', 'active', '60 rpm', '1,000,000/month', OWNER.email])
        assert.ok(text.includes(part), `the row shows ${part}: ${text}`);
      assert.ok(text.includes(secret.slice(-4)), 'the row shows the last four characters');

      // Two chats here, and the snippet's above.
      for (let i = 0; i < 2; i++) assert.equal((await v1(secret)).status, 200, 'chat with an allowed model');
      const refused = await v1(secret, 'mistral-large-latest');
      assert.equal(refused.status, 403, 'a model outside the allowlist is refused');
      const embeddings = await gw.call('/v1/embeddings', {
        method: 'POST',
        headers: bearer(secret),
        body: JSON.stringify({ model: 'mistral-embed', input: 'hi' }),
      });
      assert.equal(embeddings.status, 403, 'the embeddings scope was unchecked');
    },
  );

  await step('rotate with a grace period: both secrets work; revoke: the next call is refused', async () => {
    await page.getByRole('button', { name: 'Rotate support-bot (prod)' }).click();
    const rotate = page.getByRole('dialog', { name: 'Rotate support-bot (prod)' });
    await rotate.getByLabel('Grace period').selectOption('1h');
    await rotate.getByRole('button', { name: 'Rotate key' }).click();
    const shown = page.getByRole('dialog', { name: 'New secret for support-bot (prod)' });
    await shown.getByText('The previous secret keeps working until').waitFor();
    rotatedSecret = await shown.getByLabel('Secret key').inputValue();
    assert.match(rotatedSecret, KEY_PATTERN);
    assert.notEqual(rotatedSecret, secret);
    await shown.getByRole('button', { name: 'I have copied the key' }).click();
    assert.equal((await v1(rotatedSecret)).status, 200, 'the new secret works');
    assert.equal((await v1(secret)).status, 200, 'the old secret works during the grace period');

    await page.getByRole('button', { name: 'Revoke support-bot (prod)' }).click();
    const confirm = page.getByRole('dialog', { name: 'Revoke support-bot (prod)?' });
    await confirm.getByText('cannot be restored').waitFor();
    // Focus starts on Cancel, so a stray Enter does not revoke.
    assert.equal(
      await confirm.getByRole('button', { name: 'Cancel' }).evaluate((el) => el === document.activeElement),
      true,
    );
    await confirm.getByRole('button', { name: 'Revoke key' }).click();
    await confirm.waitFor({ state: 'detached' });
    await page.getByRole('row', { name: /support-bot \(prod\).*revoked/ }).waitFor();
    assert.equal(
      await page.getByRole('button', { name: 'Rotate support-bot (prod)' }).count(),
      0,
      'a revoked key has no actions',
    );
    assert.equal((await v1(rotatedSecret)).status, 401, 'the revoked key is refused');
    assert.equal((await v1(secret)).status, 401, 'its old secret too');

    await page.getByLabel('Status').selectOption('active');
    await page.getByRole('row', { name: /support-bot/ }).waitFor({ state: 'detached' });
    await page.getByRole('row', { name: /web-app \(prod\)/ }).waitFor();
    await page.getByLabel('Status').selectOption('');
    await page.getByLabel('Search keys').fill('nightly');
    await page.getByRole('row', { name: /web-app/ }).waitFor({ state: 'detached' });
    await page.getByRole('row', { name: /nightly-embeddings/ }).waitFor();
    await page.getByLabel('Search keys').fill('');
    await page.getByRole('row', { name: /support-bot/ }).waitFor();
  });

  await step('edit restrictions: a wrong value is refused with the reason, a right one saved', async () => {
    owner.expected.push(/^PATCH \/admin\/v1\/keys\/\S+ 422$/);
    await page.getByRole('button', { name: 'Edit web-app (prod)' }).click();
    const dialog = page.getByRole('dialog', { name: 'Edit web-app (prod)' });
    const rpm = dialog.getByLabel('Requests per minute');
    assert.equal(await rpm.inputValue(), '600');
    await rpm.fill('1200');
    await dialog.getByLabel('Allowed IP ranges').fill('the office');
    await dialog.getByRole('button', { name: 'Save changes' }).click();
    const refusal = dialog.getByRole('alert');
    await refusal.getByText('"the office" is not an IP address or CIDR range').waitFor();
    await dialog.getByLabel('Allowed IP ranges').fill('10.0.0.0/8');
    await dialog.getByRole('button', { name: 'Save changes' }).click();
    await dialog.waitFor({ state: 'detached' });
    const row = page.getByRole('row', { name: /web-app \(prod\)/ });
    await row.getByText('1,200 rpm').waitFor();
    await row.getByText('IPs: 10.0.0.0/8').waitFor();
  });

  await step('the keys table shows the tokens of this month', async () => {
    await page.reload();
    const row = page.getByRole('row', { name: /support-bot \(prod\)/ });
    const tokens = row.getByRole('cell').nth(8);
    await reloadUntil(
      page,
      async () => /^[1-9][\d,]*$/.test((await tokens.textContent()) ?? ''),
      'the tokens',
    );
    shots.keys = await shot(page, 'keys');
  });

  await step('the usage page shows the calls of the key', async () => {
    // 3 (the snippet's and two) + 1 (model refused) + 1 (scope refused) + 2 after rotation; the
    // 401s after revocation are no key's usage.
    const expected = { requests: 7, errors: 2 };
    await page.getByRole('link', { name: 'Usage' }).click();
    await page.getByRole('heading', { name: 'Usage' }).waitFor();
    const row = page.getByRole('table', { name: 'Top keys' }).getByRole('row', { name: /support-bot/ });
    await reloadUntil(
      page,
      async () =>
        (await row.count()) === 1 &&
        (await row.getByRole('cell').nth(1).textContent()) === String(expected.requests),
      'the usage of support-bot (prod) in the top keys table',
    );
    const cells = await row.getByRole('cell').allTextContents();
    assert.equal(cells[1], String(expected.requests), 'requests');
    assert.equal(cells[2], `${Math.round((expected.errors / expected.requests) * 100)}%`, 'error rate');
    assert.notEqual(cells[3], '0', 'tokens');
    assert.match(cells[6] ?? '', /€/, 'a cost from the price table');
    assert.equal((await page.locator('.chart canvas').count()) >= 4, true, 'four charts are drawn');
    await page.getByRole('button', { name: '24h' }).click();
    await row.waitFor();
    assert.equal((await row.getByRole('cell').nth(1).textContent()) ?? '', String(expected.requests));
    await page.getByRole('button', { name: '7d' }).click();
    await page.locator('.chart canvas').first().waitFor();
    shots.usage = await shot(page, 'usage');
  });

  await step('an alert appears (the revoked key still tried) and is acknowledged', async () => {
    await page.getByRole('link', { name: 'Alerts' }).click();
    const alert = page
      .getByRole('listitem')
      .filter({ hasText: 'Revoked key "support-bot (prod)" is still being used' });
    await reloadUntil(page, async () => (await alert.count()) === 1, 'the revoked-key alert');
    await page.getByText('No channels — alerts stay in this feed only.').waitFor();
    await alert.getByRole('button', { name: 'Acknowledge' }).click();
    await alert.getByText('Acknowledged').waitFor();
  });

  await step('alert rules: a threshold changed in the dialog, shown as changed', async () => {
    await page.getByRole('button', { name: 'Edit the Failed authentication rule' }).click();
    const dialog = page.getByRole('dialog', { name: 'Failed authentication rule' });
    const field = dialog.getByLabel('Failures per minute');
    assert.equal(await field.inputValue(), '20');
    await field.fill('50');
    await dialog.getByRole('button', { name: 'Save rule' }).click();
    await dialog.waitFor({ state: 'detached' });
    const row = page.getByRole('row', { name: /Failed authentication/ });
    await row.getByText('50 (changed)').waitFor();
    const rules = (await (await ownerContext.request.get(`${origin}/admin/v1/alerts/rules`)).json()) as {
      data: { kind: string; settings: Record<string, unknown> }[];
    };
    assert.equal(rules.data.find((r) => r.kind === 'auth_failures')?.settings.failures_per_minute, 50);
  });

  await step(
    'alert channels: a webhook added (its secret shown once), a test sent to it, then deleted',
    async () => {
      const received: { headers: IncomingMessage['headers']; body: string }[] = [];
      const hook = createServer((req, res) => {
        let body = '';
        req.on('data', (chunk: Buffer) => {
          body += chunk.toString('utf8');
        });
        req.on('end', () => {
          received.push({ headers: req.headers, body });
          res.writeHead(204).end();
        });
      });
      await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
      try {
        const url = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/keygate-alerts`;
        await page.getByRole('button', { name: 'Add channel' }).click();
        const dialog = page.getByRole('dialog', { name: 'Add an alert channel' });
        await dialog.getByLabel('Name', { exact: true }).fill('ops webhook');
        await dialog.getByLabel('URL', { exact: true }).fill(url);
        await dialog.getByRole('button', { name: 'Add channel' }).click();
        const shown = page.getByRole('dialog', { name: 'Channel ops webhook added' });
        assert.ok((await shown.getByLabel('Signing secret').inputValue()).length >= 16);
        await shown.getByRole('button', { name: 'Done' }).click();
        await page.getByRole('row', { name: /ops webhook/ }).waitFor();
        await page.getByRole('button', { name: 'Send test' }).click();
        await page.getByText('Test alert raised.').waitFor();
        await page.getByRole('status').filter({ hasText: 'ops webhook: sent' }).waitFor();
        assert.equal(received.length, 1, 'the webhook received the test alert');
        shots.alerts = await shot(page, 'alerts');
        await page.getByRole('button', { name: 'Delete the channel ops webhook' }).click();
        await page
          .getByRole('dialog', { name: 'Delete the channel ops webhook?' })
          .getByRole('button', { name: 'Delete channel' })
          .click();
        await page.getByRole('row', { name: /ops webhook/ }).waitFor({ state: 'detached' });
      } finally {
        hook.close();
      }
    },
  );

  await step('the audit log lists the changes and filters them by action', async () => {
    await page.getByRole('link', { name: 'Audit' }).click();
    await page.getByRole('heading', { name: 'Audit log' }).waitFor();
    for (const action of ['key.create', 'key.rotate', 'key.revoke', 'alert.acknowledge', 'member.add'])
      await page.getByRole('cell', { name: action, exact: true }).first().waitFor();
    shots.audit = await shot(page, 'audit');
    await page.getByLabel('Action').fill('key.revoke');
    await page.getByRole('cell', { name: 'key.create', exact: true }).first().waitFor({ state: 'detached' });
    const actions = await page.locator('tbody tr td:nth-child(3)').allTextContents();
    assert.deepEqual([...new Set(actions)], ['key.revoke']);
  });

  let inviteLink = '';
  await step('settings: the workspace policy, and an invitation for a viewer shown once', async () => {
    await page.getByRole('link', { name: 'Settings' }).click();
    await page.getByRole('heading', { name: 'Workspace policy' }).waitFor();
    shots.settings = await shot(page, 'settings');
    await page.getByRole('link', { name: 'Members' }).click();
    await page.getByLabel('Email to invite').fill(VIEWER.email);
    await page.getByLabel('Role', { exact: true }).selectOption('viewer');
    await page.getByRole('button', { name: 'Invite' }).click();
    const shown = page.getByRole('dialog', { name: `Invitation for ${VIEWER.email}` });
    inviteLink = await shown.getByLabel('Invitation link').inputValue();
    assert.ok(inviteLink.startsWith(`${origin}/console/invite#`), inviteLink);
    await shown.getByRole('button', { name: 'Done' }).click();
    await page.getByRole('row', { name: new RegExp(`${VIEWER.email}.*viewer.*pending`) }).waitFor();
    shots['settings-members'] = await shot(page, 'settings-members');
  });

  await step('the operator caps key lifetimes; the create dialog then defaults to the cap', async () => {
    await page.getByRole('link', { name: 'Workspace policy' }).click();
    await page.getByLabel('Max key lifetime').fill('180d');
    await page.getByRole('button', { name: 'Save policy' }).click();
    await page.getByText('Saved.').waitFor();
    await page.getByRole('link', { name: 'Keys' }).click();
    await page.getByRole('button', { name: 'Create key' }).first().click();
    const dialog = page.getByRole('dialog', { name: 'Create a key' });
    assert.equal(await dialog.getByLabel('Expires').inputValue(), '180d');
    assert.equal(await dialog.getByRole('option', { name: 'Never' }).isDisabled(), true);
    assert.equal(await dialog.getByRole('option', { name: 'In 365 days' }).isDisabled(), true);
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
  });

  await step(
    'two-factor sign-in: QR code and secret, a code turns it on, a recovery code signs in',
    async () => {
      await page.getByRole('link', { name: 'Settings' }).click();
      await page.getByRole('link', { name: 'Profile & sign-in' }).click();
      await page.getByRole('button', { name: 'Set up two-factor sign-in' }).click();
      const qr = page.getByRole('img', { name: 'QR code to scan with your authenticator app' });
      await qr.waitFor();
      assert.match((await qr.getAttribute('src')) ?? '', /^data:image\/svg\+xml/);
      shots['settings-profile'] = await shot(page, 'settings-profile');
      const secret = ((await page.locator('.totp-secret').textContent()) ?? '').replaceAll(' ', '');
      const code = new TOTP({
        secret: Secret.fromBase32(secret),
        digits: 6,
        period: 30,
        algorithm: 'SHA1',
      }).generate();
      await page.getByLabel('Code from the app').fill(code);
      await page.getByRole('button', { name: 'Turn on' }).click();
      const codes = ((await page.getByLabel('Recovery codes').inputValue()) ?? '').split('\n');
      assert.equal(codes.length, 10);
      await page.getByText('You will not see them again.').waitFor();
      await page.getByRole('button', { name: 'I have saved them' }).click();
      await page.getByRole('button', { name: 'Turn off two-factor sign-in' }).waitFor();

      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.getByLabel('Email').fill(OWNER.email);
      await page.getByLabel('Password').fill(OWNER.password);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByLabel('Authentication code').fill(codes[0] ?? '');
      await page.getByRole('button', { name: 'Verify and sign in' }).click();
      await page.getByRole('heading', { name: 'Settings' }).waitFor();
    },
  );

  await step(
    'the invited viewer signs up in another browser, sees no create button, and is refused by the API',
    async () => {
      const viewerContext = await browser.newContext({
        ignoreHTTPSErrors: true,
        viewport: { width: 1440, height: 900 },
      });
      const viewer = await watchedPage(viewerContext, origin);
      pages.push(viewer);
      const vpage = viewer.page;
      vpage.setDefaultTimeout(WAIT);
      await vpage.goto(inviteLink);
      await vpage.getByRole('heading', { name: 'Join Default' }).waitFor();
      await vpage.getByText('as viewer').waitFor();
      shots.invite = await shot(vpage, 'invite');
      await vpage.getByLabel('Password', { exact: true }).fill(VIEWER.password);
      await vpage.getByLabel('Confirm password').fill(VIEWER.password);
      await vpage.getByRole('button', { name: 'Create account and join' }).click();
      await vpage.getByRole('heading', { name: 'API keys' }).waitFor();
      assert.equal(new URL(vpage.url()).hash, '', 'the token leaves the address bar');
      await vpage.getByRole('row', { name: /web-app \(prod\)/ }).waitFor();
      assert.equal(await vpage.getByRole('button', { name: 'Create key' }).count(), 0, 'no create button');
      assert.equal(
        await vpage.getByRole('button', { name: /^(Edit|Rotate|Revoke) / }).count(),
        0,
        'no key actions',
      );
      await vpage.getByText('Your role (viewer) can view keys but not change them.').waitFor();

      const session = (await (await viewerContext.request.get(`${origin}/console/api/session`)).json()) as {
        csrf_token: string;
        workspaces: { id: string; role: string }[];
      };
      assert.deepEqual(
        session.workspaces.map((w) => [w.id, w.role]),
        [['ws_default', 'viewer']],
      );
      const post = await viewerContext.request.post(`${origin}/admin/v1/keys`, {
        headers: { 'x-csrf-token': session.csrf_token, 'x-keygate-workspace': 'ws_default' },
        data: { name: 'sneaky' },
      });
      assert.equal(post.status(), 403, 'a viewer cannot create keys through the API either');
      const listed = await gw.gateway.store.listKeys({ search: 'sneaky' });
      assert.equal(listed.length, 0);
      await viewerContext.close();
    },
  );

  await step(
    'members: a role changed, an invitation revoked, a member removed with confirmation',
    async () => {
      await page.getByRole('link', { name: 'Settings' }).click();
      await page.getByRole('link', { name: 'Members' }).click();
      const role = page.getByLabel(`Role of ${VIEWER.email}`);
      await role.selectOption('member');
      await page.getByRole('row', { name: new RegExp(`${VIEWER.email}.*accepted`) }).waitFor();
      await reloadUntil(page, async () => (await role.inputValue()) === 'member', 'the new role');

      await page.getByLabel('Email to invite').fill('late@example.com');
      await page.getByRole('button', { name: 'Invite' }).click();
      await page
        .getByRole('dialog', { name: 'Invitation for late@example.com' })
        .getByRole('button', { name: 'Done' })
        .click();
      await page.getByRole('button', { name: 'Revoke the invitation of late@example.com' }).click();
      await page.getByRole('row', { name: /late@example\.com.*revoked/ }).waitFor();

      await page.getByRole('button', { name: `Remove ${VIEWER.email}` }).click();
      await page
        .getByRole('dialog', { name: `Remove ${VIEWER.email}?` })
        .getByRole('button', { name: 'Remove member' })
        .click();
      await role.waitFor({ state: 'detached' });
    },
  );

  await step(
    'a new workspace, the switcher between workspaces; a password change keeps this browser in',
    async () => {
      await page.getByRole('link', { name: 'Settings' }).click();
      await page.getByRole('link', { name: 'Workspace policy' }).click();
      await page.getByLabel('Workspace name').last().fill('Research');
      await page.getByRole('button', { name: 'Create workspace' }).click();
      // The console switches to the new workspace.
      await reloadUntil(
        page,
        async () => (await page.getByLabel('Workspace', { exact: true }).inputValue()) !== 'ws_default',
        'the switch to the new workspace',
      );
      await page.getByRole('link', { name: 'Keys' }).click();
      await page.getByText('No keys yet — create one to call /v1').waitFor();
      await page.getByLabel('Workspace', { exact: true }).selectOption({ label: 'Default' });
      await page.getByRole('row', { name: /web-app \(prod\)/ }).waitFor();

      await page.getByRole('link', { name: 'Settings' }).click();
      await page.getByRole('link', { name: 'Profile & sign-in' }).click();
      const next = 'an even better passphrase';
      await page.getByLabel('Current password').fill(OWNER.password);
      await page.getByLabel('New password', { exact: true }).fill(next);
      await page.getByLabel('Confirm new password').fill(next);
      await page.getByRole('button', { name: 'Change password' }).click();
      await page.getByText('Password changed. Your other sessions have ended.').waitFor();
      // The fresh session's CSRF token is in use: a change goes through.
      await page.getByRole('link', { name: 'Keys' }).click();
      await page.getByRole('button', { name: 'Revoke hackathon-demo' }).click();
      await page
        .getByRole('dialog', { name: 'Revoke hackathon-demo?' })
        .getByRole('button', { name: 'Revoke key' })
        .click();
      await page.getByRole('row', { name: /hackathon-demo.*revoked/ }).waitFor();
    },
  );

  await t.test('no page logged an error, threw, or asked another origin', () => {
    for (const watched of pages) assert.deepEqual(watched.errors, []);
  });

  await step('a screenshot of every page', () => {
    for (const name of ['setup', 'sign-in', 'keys', 'key-created', 'usage', 'alerts', 'audit', 'settings'])
      assert.ok(shots[name] && existsSync(shots[name]), `screenshot ${name}`);
    // The README's pictures are refreshed on demand only, so a test run leaves the tree clean.
    if (process.env.KEYGATE_UPDATE_DOCS_IMAGES === '1') {
      mkdirSync(`${ROOT}docs/images`, { recursive: true });
      copyFileSync(shots.keys ?? '', `${ROOT}docs/images/console-keys.png`);
      copyFileSync(shots.usage ?? '', `${ROOT}docs/images/console-usage.png`);
    }
  });
});
