/**
 * The console's session API under `/console/api` (docs/console.md): first-run setup, sign-in
 * with optional TOTP, sign-out, password change, two-factor enrolment, invitations. It also
 * turns a session into a management API caller (`ConsoleAuth.callerFor`), so `/admin/v1` serves
 * the console with exactly the powers of the user's role.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { AdminError, invalid, sendAdminError, sendJson, zodIssues } from '../http/admin/errors.ts';
import { readLimitedBody } from '../http/body.ts';
import { type ErrorCode, sendError } from '../http/errors.ts';
import type { Logger } from '../http/log.ts';
import { scrubText } from '../keys/scrub.ts';
import { sendUnexpectedError } from '../store/health.ts';
import {
  type Actor,
  DEFAULT_WORKSPACE_ID,
  INFERENCE_SCOPES,
  type KeyRecord,
  ROLE_SCOPES,
  type Role,
  type Store,
  type UserCredentials,
} from '../store/types.ts';
import { hashPassword, passwordProblem, verifyPassword } from '../users/passwords.ts';
import { createUser, normaliseEmail, UserInputError } from '../users/service.ts';
import { newId } from '../util/ids.ts';
import { seal, unseal } from '../util/seal.ts';
import {
  checkTotp,
  clearedSessionCookie,
  csrfToken,
  LoginThrottle,
  looksLikeRecoveryCode,
  newRecoveryCodes,
  newSessionToken,
  newTotpSecret,
  recoveryCodeHash,
  sameSecret,
  sessionCookie,
  sessionIdFromCookies,
  setupToken,
  setupTokenMatches,
  sha256Hex,
} from './credentials.ts';

export interface ConsoleDeps {
  store: Store;
  /** Derived from the server secret: CSRF tokens and the setup token. */
  consoleKey: Buffer;
  /** Seals TOTP secrets at rest. */
  dataKey: Buffer;
  logger: Logger;
  clientAddress(req: IncomingMessage): string;
  sessionTtlMs: number;
  loginFailuresPerAccount: number;
  loginFailuresPerIp: number;
  /**
   * The gateway's own certificate (the self-signed one in the data directory), which clients must
   * be told to trust: shown in the console's "call the API" snippets. Undefined for plain HTTP or
   * a certificate the operator brought (presumably from a CA the clients already trust).
   */
  caCertPath?: string;
}

/** A signed-in user, from a live session. */
export interface SignedIn {
  sessionId: string;
  user: UserCredentials;
}

/** The management API caller a session stands for, in the workspace the console picked. */
export interface SessionCaller {
  caller: KeyRecord;
  owner: { userId: string; role: Role };
  actor: Actor;
  /** The owner of ws_default: may change workspace policies and create workspaces. */
  operator: boolean;
}

export class ConsoleRefusal extends Error {
  override name = 'ConsoleRefusal';
  readonly code: ErrorCode;
  readonly retryAfter: number | undefined;
  constructor(code: ErrorCode, message: string, retryAfter?: number) {
    super(message);
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** Largest body the session API reads. */
const BODY_LIMIT = 16_384;
/** Sessions note their last use at most this often. */
const TOUCH_EVERY_MS = 60_000;
const INVITE_TTL_MS = 7 * 86_400_000;

/** A password check costs the same for unknown users: this hash is verified and discarded. */
let decoyHash: Promise<string> | undefined;

/**
 * True when a state-changing browser request comes from the gateway's own pages: the browser's
 * Sec-Fetch-Site says same-origin, or (older browsers) Origin names the Host. A request with
 * neither header is not from a browser, which cannot be tricked into sending it.
 */
export function fromSameOrigin(req: IncomingMessage): boolean {
  const site = req.headers['sec-fetch-site'];
  if (typeof site === 'string') return site === 'same-origin';
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

function isSafeMethod(method: string | undefined): boolean {
  return method === 'GET' || method === 'HEAD';
}

export class ConsoleAuth {
  readonly #deps: ConsoleDeps;
  readonly #throttle: LoginThrottle;

  constructor(deps: ConsoleDeps) {
    this.#deps = deps;
    this.#throttle = new LoginThrottle(deps.loginFailuresPerAccount, deps.loginFailuresPerIp);
  }

  /** The first-run setup token, or undefined once a user exists. */
  setupToken(): Promise<string | undefined> {
    return setupToken(this.#deps.store, this.#deps.consoleKey);
  }

  /** True when the request carries a session cookie (well-formed or not) and no Authorization header. */
  static wantsSession(req: IncomingMessage): boolean {
    return req.headers.authorization === undefined && (req.headers.cookie ?? '').includes('keygate_session=');
  }

  /** The live session of a request, or undefined. */
  async signedIn(req: IncomingMessage): Promise<SignedIn | undefined> {
    const sessionId = sessionIdFromCookies(req.headers.cookie);
    if (sessionId === undefined) return undefined;
    const { store } = this.#deps;
    const session = await store.getSession(sessionId);
    const now = Date.now();
    if (!session || session.revokedAt !== null || session.expiresAt <= now) return undefined;
    const user = await store.getUser(session.userId);
    if (!user || user.disabledAt !== null) return undefined;
    if (now - session.lastSeenAt >= TOUCH_EVERY_MS) await store.touchSession(sessionId, now);
    return { sessionId, user };
  }

  /** Refuses a state-changing request without the session's CSRF token or from another origin. */
  assertCsrf(req: IncomingMessage, sessionId: string): void {
    if (isSafeMethod(req.method)) return;
    const sent = req.headers['x-csrf-token'];
    if (!fromSameOrigin(req))
      throw new ConsoleRefusal(
        'csrf_failed',
        'Cross-site request refused: it did not come from this console.',
      );
    if (typeof sent !== 'string' || !sameSecret(sent, csrfToken(this.#deps.consoleKey, sessionId))) {
      throw new ConsoleRefusal(
        'csrf_failed',
        'Missing or wrong X-CSRF-Token header: reload the console and try again.',
      );
    }
  }

  /** The workspaces a user may pick, with their role in each (the operator: owner of all). */
  async workspacesOf(userId: string): Promise<{ id: string; name: string; role: Role }[]> {
    const { store } = this.#deps;
    const all = await store.listWorkspaces();
    const operator = (await store.getMembership(DEFAULT_WORKSPACE_ID, userId))?.role === 'owner';
    const out: { id: string; name: string; role: Role }[] = [];
    for (const ws of all) {
      const role = operator ? 'owner' : (await store.getMembership(ws.id, userId))?.role;
      if (role) out.push({ id: ws.id, name: ws.name, role });
    }
    return out;
  }

  /**
   * The management API caller for a session request: CSRF checked, workspace chosen by the
   * `X-Keygate-Workspace` header (default: the user's first), role from the membership.
   */
  async callerFor(req: IncomingMessage, ip: string): Promise<SessionCaller> {
    const signed = await this.signedIn(req);
    if (!signed) {
      throw new ConsoleRefusal('not_signed_in', 'Your console session has ended: sign in again.');
    }
    this.assertCsrf(req, signed.sessionId);
    const workspaces = await this.workspacesOf(signed.user.id);
    const asked = req.headers['x-keygate-workspace'];
    const chosen =
      typeof asked === 'string' && asked !== '' ? workspaces.find((w) => w.id === asked) : workspaces[0];
    if (!chosen) {
      throw new ConsoleRefusal(
        'forbidden',
        typeof asked === 'string' && asked !== ''
          ? 'You are not a member of that workspace.'
          : 'You are not a member of any workspace: ask an owner or admin for an invitation.',
      );
    }
    const workspace = await this.#deps.store.getWorkspace(chosen.id);
    if (!workspace) throw new ConsoleRefusal('not_found', 'That workspace no longer exists.');
    // The owner of ws_default (the operator), read off the list rather than asked again.
    const operator = workspaces.some((w) => w.id === DEFAULT_WORKSPACE_ID && w.role === 'owner');
    const caller: KeyRecord = {
      // A user id, never a key id: a session caller is workspace-bound (see access.ts).
      id: signed.user.id,
      workspaceId: workspace.id,
      name: signed.user.email,
      start: '',
      last4: '',
      createdAt: signed.user.createdAt,
      createdBy: signed.user.id,
      updatedAt: null,
      rotatedAt: null,
      expiresAt: null,
      revokedAt: null,
      lastUsedAt: null,
      lastUsedIp: null,
      policy: {
        scopes: [...INFERENCE_SCOPES, ...ROLE_SCOPES[chosen.role]],
        models: [],
        allowedIps: [],
        limits: { rpm: null, tpm: null, concurrency: null },
        budget: { day: null, month: null },
      },
      workspacePolicy: workspace.policy,
    };
    return {
      caller,
      owner: { userId: signed.user.id, role: chosen.role },
      actor: { type: 'user', id: signed.user.id, ip },
      operator,
    };
  }

  // ---- the /console/api handler ------------------------------------------------------------------

  handle(req: IncomingMessage, res: ServerResponse, requestId: string): void {
    const started = performance.now();
    const ip = this.#deps.clientAddress(req);
    const pathname = (req.url ?? '/').split('?', 1)[0] ?? '/';
    let outcome: string | undefined;
    res.once('close', () => {
      this.#deps.logger.info(
        {
          reqId: requestId,
          method: req.method,
          path: scrubText(pathname),
          status: res.writableFinished ? res.statusCode : 499,
          ip,
          failure: outcome,
          ms: Math.round((performance.now() - started) * 1000) / 1000,
        },
        'console request',
      );
    });
    res.setHeader('cache-control', 'no-store');
    this.#route(req, res, pathname, ip).catch((error: unknown) => {
      if (error instanceof ConsoleRefusal) {
        outcome = error.code;
        sendError(res, error.code, error.message, { retryAfter: error.retryAfter });
        return;
      }
      if (error instanceof UserInputError) {
        outcome = error.kind;
        sendAdminError(
          res,
          error.kind === 'conflict'
            ? new AdminError('conflict', capitalise(error.message))
            : invalid(['body'], error.message),
        );
        return;
      }
      if (error instanceof AdminError) {
        outcome = error.code;
        sendAdminError(res, error);
        return;
      }
      void sendUnexpectedError(res, this.#deps.store, this.#deps.logger, {
        reqId: requestId,
        err: error,
        what: 'unhandled error in the console API',
      }).then((code) => {
        outcome = code;
      });
    });
  }

  async #route(req: IncomingMessage, res: ServerResponse, pathname: string, ip: string): Promise<void> {
    const route = `${req.method} ${pathname}`;
    if (route === 'GET /console/api/session') {
      const signed = await this.signedIn(req);
      sendJson(res, 200, signed ? await this.#sessionView(signed) : await this.#signedOutView());
      return;
    }
    const name = pathname.slice('/console/api/'.length);
    // Own properties only: `__proto__` or `constructor` is a path, not a route.
    const post = Object.hasOwn(POST_ROUTES, name) ? POST_ROUTES[name] : undefined;
    if (!post) {
      sendError(res, 'not_found', `No such endpoint: ${req.method} ${scrubText(pathname)}.`);
      return;
    }
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      sendError(res, 'method_not_allowed', `${scrubText(pathname)} accepts POST only.`);
      return;
    }
    if (!fromSameOrigin(req)) {
      throw new ConsoleRefusal(
        'csrf_failed',
        'Cross-site request refused: it did not come from this console.',
      );
    }
    const body = await readJson(req, res);
    if (body === undefined) return;
    const input = parseBody(post.schema, body);
    let signed: SignedIn | undefined;
    if (post.session !== 'none') {
      signed = await this.signedIn(req);
      if (signed) this.assertCsrf(req, signed.sessionId);
      else if (post.session === 'required')
        throw new ConsoleRefusal('not_signed_in', 'Your console session has ended: sign in again.');
    }
    const ctx: PostContext = { req, res, ip, signed, input };
    const reply = await this[post.method](ctx as never);
    sendJson(res, post.status ?? 200, reply);
  }

  async #sessionView(signed: SignedIn): Promise<Record<string, unknown>> {
    const { user } = signed;
    return {
      setup_required: false,
      user: {
        id: user.id,
        email: user.email,
        totp_enabled: user.totpEnabledAt !== null,
        created_at: new Date(user.createdAt).toISOString(),
      },
      csrf_token: csrfToken(this.#deps.consoleKey, signed.sessionId),
      workspaces: await this.workspacesOf(user.id),
      ca_cert_path: this.#deps.caCertPath ?? null,
    };
  }

  async #signedOutView(): Promise<Record<string, unknown>> {
    const users = await this.#deps.store.listUsers();
    return {
      setup_required: users.length === 0,
      user: null,
      csrf_token: null,
      workspaces: [],
      ca_cert_path: null,
    };
  }

  /** Starts a session for a user and sets its cookie; returns the session view. */
  async #startSession(ctx: PostContext, user: UserCredentials): Promise<Record<string, unknown>> {
    const now = Date.now();
    const { token, id } = newSessionToken();
    const ua = ctx.req.headers['user-agent'];
    await this.#deps.store.createSession({
      id,
      userId: user.id,
      createdAt: now,
      expiresAt: now + this.#deps.sessionTtlMs,
      lastSeenAt: now,
      revokedAt: null,
      ip: ctx.ip,
      userAgent: typeof ua === 'string' ? ua.slice(0, 256) : null,
    });
    ctx.res.setHeader('set-cookie', sessionCookie(token, Math.floor(this.#deps.sessionTtlMs / 1000)));
    return this.#sessionView({ sessionId: id, user });
  }

  async #audit(
    action: string,
    user: { id: string } | null,
    ip: string,
    changes: Record<string, unknown> = {},
  ) {
    await this.#deps.store.appendAudit({
      id: '',
      at: Date.now(),
      workspaceId: null,
      actor: { type: 'user', id: user?.id ?? null, ip },
      action,
      targetType: 'user',
      targetId: user?.id ?? null,
      changes: Object.fromEntries(Object.entries(changes).map(([k, v]) => [k, { after: v }])),
    });
  }

  // ---- the operations ----------------------------------------------------------------------------

  async setup(ctx: PostContext<z.infer<typeof SetupBody>>): Promise<Record<string, unknown>> {
    const done = () => new ConsoleRefusal('setup_done', 'This Keygate is set up already: sign in instead.');
    const token = await this.setupToken();
    if (token === undefined) throw done();
    if (!setupTokenMatches(ctx.input.setup_token, token)) {
      throw new ConsoleRefusal(
        'invalid_setup_token',
        'Wrong setup token. `keygate start` printed it; `keygate setup-token` shows it again.',
      );
    }
    const email = normaliseEmail(ctx.input.email);
    const problem = passwordProblem(ctx.input.password);
    if (problem) throw new UserInputError(problem);
    const actor: Actor = { type: 'user', id: null, ip: ctx.ip };
    const now = Date.now();
    // The store decides who is first (a transaction that does nothing once a user exists), so
    // of concurrent setups on any number of workers or instances exactly one creates an owner.
    const created = await this.#deps.store.createFirstOwner(
      {
        id: newId('usr'),
        email,
        passwordHash: await hashPassword(ctx.input.password),
        createdAt: now,
        disabledAt: null,
      },
      actor,
      now,
    );
    if (!created) throw done();
    const user = await this.#deps.store.getUser(created.id);
    if (!user) throw new Error('the new owner vanished');
    await this.#audit('user.login', user, ctx.ip, { method: 'setup' });
    return this.#startSession(ctx, user);
  }

  async login(ctx: PostContext<z.infer<typeof LoginBody>>): Promise<Record<string, unknown>> {
    const { ip, input } = ctx;
    const email = input.email.trim().toLowerCase();
    const wait = this.#throttle.retryAfter(email, ip);
    if (wait > 0) {
      await this.#audit('user.login_throttled', null, ip, { email });
      throw new ConsoleRefusal(
        'too_many_attempts',
        `Too many failed sign-ins. Try again in ${formatWait(wait)}.`,
        wait,
      );
    }
    const user = await this.#deps.store.getUser(email);
    decoyHash ??= hashPassword('keygate decoy password');
    const passwordOk = await verifyPassword(input.password, user?.passwordHash ?? (await decoyHash));
    if (!user || !passwordOk || user.disabledAt !== null) {
      this.#throttle.recordFailure(email, ip);
      await this.#audit('user.login_failed', user ?? null, ip, { email, reason: 'credentials' });
      throw new ConsoleRefusal('invalid_credentials', 'Wrong email or password.');
    }
    if (user.totpEnabledAt !== null && user.totpSecret !== null) {
      const code = input.totp_code?.trim() ?? '';
      if (code === '') {
        throw new ConsoleRefusal('totp_required', 'Enter the 6-digit code from your authenticator app.');
      }
      if (!(await this.#secondFactor(user, code))) {
        this.#throttle.recordFailure(email, ip);
        await this.#audit('user.login_failed', user, ip, { email, reason: 'totp' });
        throw new ConsoleRefusal('invalid_totp', 'Wrong or already used two-factor code.');
      }
    }
    this.#throttle.recordSuccess(email);
    await this.#audit('user.login', user, ip, {
      method: user.totpEnabledAt !== null ? 'password+totp' : 'password',
    });
    return this.#startSession(ctx, user);
  }

  /**
   * Checks a TOTP code or spends a recovery code. Both are used up in the store (a conditional
   * update), never in this process's memory: a code signs in once across workers and instances.
   */
  async #secondFactor(user: UserCredentials, code: string): Promise<boolean> {
    if (user.totpSecret === null) return false;
    const secret = unseal(this.#deps.dataKey, user.totpSecret);
    const step = checkTotp(secret, user.email, code);
    if (step !== undefined) return this.#deps.store.claimTotpStep(user.id, step);
    if (!looksLikeRecoveryCode(code)) return false;
    const hash = recoveryCodeHash(code);
    if (!user.recoveryCodes.some((h) => sameSecret(h, hash))) return false;
    return this.#deps.store.spendRecoveryCode(
      user.id,
      hash,
      { type: 'user', id: user.id, ip: null },
      Date.now(),
    );
  }

  async logout(ctx: PostContext<Record<string, never>>): Promise<Record<string, unknown>> {
    if (ctx.signed) {
      await this.#deps.store.revokeSessions({ id: ctx.signed.sessionId }, Date.now());
      await this.#audit('user.logout', ctx.signed.user, ctx.ip);
    }
    ctx.res.setHeader('set-cookie', clearedSessionCookie());
    return { signed_out: true };
  }

  async password(ctx: PostContext<z.infer<typeof PasswordBody>>): Promise<Record<string, unknown>> {
    const signed = mustBeSignedIn(ctx);
    const { input } = ctx;
    if (!(await verifyPassword(input.current_password, signed.user.passwordHash))) {
      throw invalid(['body', 'current_password'], 'the current password is wrong');
    }
    const problem = passwordProblem(input.new_password);
    if (problem) throw invalid(['body', 'new_password'], problem);
    const now = Date.now();
    const actor: Actor = { type: 'user', id: signed.user.id, ip: ctx.ip };
    await this.#deps.store.updateCredentials(
      signed.user.id,
      { passwordHash: await hashPassword(input.new_password) },
      'user.password_change',
      actor,
      now,
    );
    // Every session of the user ends, this one too; this browser gets a fresh one.
    await this.#deps.store.revokeSessions({ userId: signed.user.id }, now);
    const user = await this.#deps.store.getUser(signed.user.id);
    if (!user) throw new ConsoleRefusal('not_signed_in', 'Your account no longer exists.');
    return this.#startSession(ctx, user);
  }

  async totpSetup(ctx: PostContext<Record<string, never>>): Promise<Record<string, unknown>> {
    const signed = mustBeSignedIn(ctx);
    if (signed.user.totpEnabledAt !== null) {
      throw invalid(['body'], 'two-factor sign-in is on already: switch it off first');
    }
    const { secret, url } = newTotpSecret(signed.user.email);
    await this.#deps.store.updateCredentials(
      signed.user.id,
      { totpSecret: seal(this.#deps.dataKey, secret) },
      'user.totp_setup',
      { type: 'user', id: signed.user.id, ip: ctx.ip },
      Date.now(),
    );
    return { secret, otpauth_url: url };
  }

  async totpEnable(ctx: PostContext<z.infer<typeof CodeBody>>): Promise<Record<string, unknown>> {
    const signed = mustBeSignedIn(ctx);
    const { user } = signed;
    if (user.totpEnabledAt !== null) throw invalid(['body'], 'two-factor sign-in is on already');
    if (user.totpSecret === null) {
      throw invalid(['body'], 'set up two-factor sign-in first (POST /console/api/totp/setup)');
    }
    const step = checkTotp(unseal(this.#deps.dataKey, user.totpSecret), user.email, ctx.input.code);
    if (step === undefined) {
      throw invalid(
        ['body', 'code'],
        'that code is not right: check the time on your phone and enter the current code',
      );
    }
    // The code that switched two-factor on cannot then sign in (nor can an older one).
    await this.#deps.store.claimTotpStep(user.id, step);
    const { codes, hashes } = newRecoveryCodes();
    await this.#deps.store.updateCredentials(
      user.id,
      { totpEnabledAt: Date.now(), recoveryCodes: hashes },
      'user.totp_enable',
      { type: 'user', id: user.id, ip: ctx.ip },
      Date.now(),
    );
    return { recovery_codes: codes };
  }

  async totpDisable(ctx: PostContext<z.infer<typeof DisableBody>>): Promise<Record<string, unknown>> {
    const signed = mustBeSignedIn(ctx);
    if (!(await verifyPassword(ctx.input.password, signed.user.passwordHash))) {
      throw invalid(['body', 'password'], 'the password is wrong');
    }
    await this.#deps.store.updateCredentials(
      signed.user.id,
      { totpSecret: null, totpEnabledAt: null, recoveryCodes: [] },
      'user.totp_disable',
      { type: 'user', id: signed.user.id, ip: ctx.ip },
      Date.now(),
    );
    const user = await this.#deps.store.getUser(signed.user.id);
    if (!user) throw new ConsoleRefusal('not_signed_in', 'Your account no longer exists.');
    return this.#sessionView({ sessionId: signed.sessionId, user });
  }

  async #openInvite(token: string) {
    const invite = await this.#deps.store.findInvite(sha256Hex(token.trim()));
    const now = Date.now();
    if (!invite || invite.acceptedAt !== null || invite.revokedAt !== null || invite.expiresAt <= now) {
      throw new ConsoleRefusal(
        'invalid_invite',
        'This invitation link is not valid: it was used, revoked or has expired. Ask for a new one.',
      );
    }
    return invite;
  }

  /**
   * What an invitation is for. Never whether its email has an account: whoever holds the token
   * (the inviter too) would learn that of any address, another tenant's people included. The page
   * offers both a sign-in and a new account; accepting tells the invitee which applies.
   */
  async inviteInspect(ctx: PostContext<z.infer<typeof InviteBody>>): Promise<Record<string, unknown>> {
    const invite = await this.#openInvite(ctx.input.token);
    const workspace = await this.#deps.store.getWorkspace(invite.workspaceId);
    return {
      workspace_id: invite.workspaceId,
      workspace_name: workspace?.name ?? invite.workspaceId,
      email: invite.email,
      role: invite.role,
      expires_at: new Date(invite.expiresAt).toISOString(),
    };
  }

  async inviteAccept(ctx: PostContext<z.infer<typeof AcceptBody>>): Promise<Record<string, unknown>> {
    const invite = await this.#openInvite(ctx.input.token);
    const { store } = this.#deps;
    let user = await store.getUser(invite.email);
    const actor: Actor = { type: 'user', id: user?.id ?? null, ip: ctx.ip };
    if (user) {
      if (ctx.signed?.user.id !== user.id) {
        throw new ConsoleRefusal(
          'not_signed_in',
          `Sign in as ${invite.email} first, then open the invitation link again.`,
        );
      }
    } else {
      if (ctx.input.password === undefined) {
        throw invalid(['body', 'password'], 'choose a password for your new account');
      }
      const created = await createUser(store, { email: invite.email, password: ctx.input.password }, actor);
      user = await store.getUser(created.id);
      if (!user) throw new Error('the new user vanished');
      actor.id = user.id;
    }
    const joined = await store.acceptInvite(invite.id, user.id, actor, Date.now());
    if (!joined) {
      throw new ConsoleRefusal('invalid_invite', 'This invitation was used or revoked a moment ago.');
    }
    if (ctx.signed) return this.#sessionView(ctx.signed);
    await this.#audit('user.login', user, ctx.ip, { method: 'invite' });
    return this.#startSession(ctx, user);
  }
}

// ---- invitations (used by the management API's invite routes) ---------------------------------------

/** A new invitation token (shown once) and its hash (stored). */
export function newInviteToken(): { token: string; hash: string } {
  const { token } = newSessionToken();
  return { token, hash: sha256Hex(token) };
}

export { INVITE_TTL_MS };

// ---- plumbing ------------------------------------------------------------------------------------------

interface PostContext<Input = unknown> {
  req: IncomingMessage;
  res: ServerResponse;
  ip: string;
  signed: SignedIn | undefined;
  input: Input;
}

type Operation =
  | 'setup'
  | 'login'
  | 'logout'
  | 'password'
  | 'totpSetup'
  | 'totpEnable'
  | 'totpDisable'
  | 'inviteInspect'
  | 'inviteAccept';

const email = z.string().max(254);
const password = z.string().max(1024);
const SetupBody = z.strictObject({ setup_token: z.string().max(100), email, password });
const LoginBody = z.strictObject({ email, password, totp_code: z.string().max(32).optional() });
const PasswordBody = z.strictObject({ current_password: password, new_password: password });
const CodeBody = z.strictObject({ code: z.string().max(32) });
const DisableBody = z.strictObject({ password });
const InviteBody = z.strictObject({ token: z.string().max(100) });
const AcceptBody = z.strictObject({ token: z.string().max(100), password: password.optional() });
const Empty = z.strictObject({});

const POST_ROUTES: Record<
  string,
  { method: Operation; schema: z.ZodType; session: 'none' | 'optional' | 'required'; status?: number }
> = {
  setup: { method: 'setup', schema: SetupBody, session: 'none', status: 201 },
  login: { method: 'login', schema: LoginBody, session: 'none' },
  logout: { method: 'logout', schema: Empty, session: 'optional' },
  password: { method: 'password', schema: PasswordBody, session: 'required' },
  'totp/setup': { method: 'totpSetup', schema: Empty, session: 'required' },
  'totp/enable': { method: 'totpEnable', schema: CodeBody, session: 'required' },
  'totp/disable': { method: 'totpDisable', schema: DisableBody, session: 'required' },
  'invite/inspect': { method: 'inviteInspect', schema: InviteBody, session: 'none' },
  'invite/accept': { method: 'inviteAccept', schema: AcceptBody, session: 'optional' },
};

function mustBeSignedIn(ctx: PostContext): SignedIn {
  if (!ctx.signed)
    throw new ConsoleRefusal('not_signed_in', 'Your console session has ended: sign in again.');
  return ctx.signed;
}

function parseBody(schema: z.ZodType, body: unknown): unknown {
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issues = zodIssues('body', result.error);
  throw new AdminError('validation_error', issues[0]?.msg ?? 'invalid request', { issues });
}

async function readJson(req: IncomingMessage, res: ServerResponse): Promise<unknown> {
  const raw = await readLimitedBody(req, res, BODY_LIMIT, 'the console API');
  if (raw === undefined) return undefined;
  const text = raw.toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    sendError(res, 'invalid_json', 'The request body is not valid JSON.');
    return undefined;
  }
}

function capitalise(message: string): string {
  return `${message.charAt(0).toUpperCase()}${message.slice(1)}.`;
}

function formatWait(seconds: number): string {
  return seconds < 90 ? `${seconds} seconds` : `${Math.ceil(seconds / 60)} minutes`;
}
