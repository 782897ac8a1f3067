/**
 * A running gateway's management API (`/admin/v1`) as a Backend, for `keygate … --url URL`.
 *
 * The key is read from the environment (KEYGATE_ADMIN_KEY) and only ever sent in the
 * Authorization header: never a flag (shell history, process lists), never in a message. Each
 * request has 10 s; every failure (an API error, a refused connection, an untrusted certificate,
 * a timeout) becomes a one-line UserError.
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { Agent, request } from 'undici';
import { parseChannelInput } from '../alerts/channels.ts';
import { parseOverrides, type RuleView } from '../alerts/rule-settings.ts';
import { looksLikeKey } from '../keys/scrub.ts';
import { type KeyRestrictions, validateKeyName, validateRestrictions } from '../keys/service.ts';
import { isLoopbackHost } from '../net/addresses.ts';
import { guardedLookup, isDestinationRefused, LOOPBACK_ONLY } from '../net/destinations.ts';
import type { KeyPatch, TokenBudget, WorkspacePatch } from '../store/types.ts';
import { UserInputError } from '../users/service.ts';
import type {
  AlertDetailView,
  AlertView,
  AuditEventView,
  Backend,
  ChannelView,
  CreatedChannelView,
  CreatedKeyView,
  DeliveryView,
  KeyView,
  MemberView,
  RotatedKeyView,
  UsageReportView,
  WorkspaceView,
} from './backend.ts';
import { envValue, UserError, userErrorOf } from './common.ts';

/** How long one request to the gateway may take, connection and TLS handshake included. */
export const REMOTE_TIMEOUT_MS = 10_000;
/** How long `alerts test` waits for the gateway, which waits for every channel. */
const TEST_TIMEOUT_MS = 30_000;
/** The API's largest page (keys, audit). */
const PAGE = 500;

export interface RemoteTarget {
  /** The gateway's address without a trailing slash, e.g. `https://gateway.example:8443`. */
  base: string;
  /** The flag or variable the address came from, for messages. */
  urlSource: '--url' | 'KEYGATE_URL';
  adminKey: string;
  /** Certificates to trust besides the system's (PEM), and where they came from. */
  ca: { pem: string; source: string } | undefined;
}

function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}

function shown(text: string): string {
  return looksLikeKey(text) ? '[something shaped like a key]' : JSON.stringify(oneLine(text).slice(0, 200));
}

/** Where to send requests and with which key: --url / KEYGATE_URL, KEYGATE_ADMIN_KEY, --ca-file / KEYGATE_CA_FILE. */
export function remoteTarget(
  urlText: string,
  caFileFlag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  urlSource: RemoteTarget['urlSource'] = '--url',
): RemoteTarget {
  let url: URL;
  try {
    url = new URL(urlText.trim());
  } catch {
    throw new UserError(
      `${urlSource} takes the gateway's address, e.g. https://gateway.example:8443, not ${shown(urlText)}`,
      2,
    );
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new UserError(`${urlSource} must be an https:// (or http://) address, not ${shown(urlText)}`, 2);
  if (url.username !== '' || url.password !== '')
    throw new UserError(
      `${urlSource} must not hold credentials: the key is read from the environment variable KEYGATE_ADMIN_KEY`,
      2,
    );
  if (url.search !== '' || url.hash !== '')
    throw new UserError(`${urlSource} is the gateway's address only, without a query or fragment`, 2);
  // Plain http only to this host: a loopback address (parsed, so `127.attacker.example` is a name
  // like any other), or `localhost`, whose addresses openRemote's lookup then requires to be
  // loopback ones before the key is sent.
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    throw new UserError(
      `refusing to send KEYGATE_ADMIN_KEY unencrypted to ${url.host}: use the gateway's https:// address ` +
        '(plain http:// is accepted for loopback addresses only)',
      2,
    );
  }
  const path = url.pathname.replace(/\/+$/, '').replace(/\/admin\/v1$/, '');
  const base = `${url.origin}${path}`;

  const adminKey = envValue('KEYGATE_ADMIN_KEY', env)?.trim();
  if (adminKey === undefined) {
    throw new UserError(
      `${urlSource} needs a key with a management scope (e.g. "admin") in the environment variable ` +
        'KEYGATE_ADMIN_KEY; it is never taken as a flag, so that it stays out of shell history and process lists',
      2,
    );
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: a header value cannot hold them
  if (adminKey.length > 256 || /[\s\u0000-\u001f\u007f-\uffff]/.test(adminKey))
    throw new UserError('KEYGATE_ADMIN_KEY is not a key: it holds spaces or other characters no key has', 2);

  const caFile = caFileFlag ?? envValue('KEYGATE_CA_FILE', env);
  let ca: RemoteTarget['ca'];
  if (caFile !== undefined) {
    const source = caFileFlag !== undefined ? '--ca-file' : 'KEYGATE_CA_FILE';
    let pem: string;
    try {
      pem = readFileSync(caFile, 'utf8');
    } catch (error) {
      const { code, message } = error as NodeJS.ErrnoException;
      throw new UserError(`${source}: cannot read ${caFile}: ${code ?? oneLine(message)}`, 2);
    }
    if (!pem.includes('-----BEGIN CERTIFICATE-----'))
      throw new UserError(`${source}: ${caFile} holds no PEM certificate ("-----BEGIN CERTIFICATE-----")`, 2);
    ca = { pem, source };
  }
  return { base, urlSource, adminKey, ca };
}

// ---- errors ------------------------------------------------------------------------------------

/** The option that sets each field of a request, for the API's validation errors. */
const OPTION_OF_LOC: Record<string, string> = {
  'body.name': '--name',
  'body.workspace_id': '--workspace',
  'body.scopes': '--scopes',
  'body.models': '--models',
  'body.allowed_ips': '--allow-ip',
  'body.limits.requests_per_minute': '--rpm',
  'body.limits.tokens_per_minute': '--tpm',
  'body.limits.concurrent_requests': '--concurrency',
  'body.budget': '--budget',
  'body.expires_in': '--expires',
  'body.grace': '--grace',
  'body.max_key_lifetime': '--max-key-lifetime',
  'query.status': '--status',
  'query.search': '--search',
  'query.workspace_id': '--workspace',
  'query.key_id': '--key',
  'query.target_id': '--key',
  'query.action': '--action',
  'query.since': '--since',
  'query.from': '--from',
  'query.to': '--to',
  'query.by': '--by',
  'query.model': '--model',
  'query.endpoint': '--endpoint',
  'query.after': '--after',
  'query.kind': '--kind',
  'query.limit': '--limit',
  'body.type': '--type',
  'body.url': '--url',
  'body.secret': '--secret',
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The option named by a validation issue's `loc` (the longest known prefix), if any. */
function optionOf(loc: unknown): string | undefined {
  if (!Array.isArray(loc)) return undefined;
  const parts = loc.filter((p): p is string => typeof p === 'string');
  for (let n = parts.length; n > 1; n--) {
    const option = OPTION_OF_LOC[parts.slice(0, n).join('.')];
    if (option !== undefined) return option;
  }
  return undefined;
}

/** An error answer of the API as a one-line user error: its message and the HTTP status. */
function apiError(status: number, body: unknown): UserError {
  const error = isRecord(body) && isRecord(body.error) ? body.error : undefined;
  const message = isRecord(body) && typeof body.message === 'string' ? body.message : error?.message;
  if (typeof message !== 'string') {
    return new UserError(
      `the gateway answered HTTP ${status} without a Keygate error message (is --url the gateway's address?)`,
    );
  }
  if (status === 422 && isRecord(body) && Array.isArray(body.detail) && isRecord(body.detail[0])) {
    const issue = body.detail[0];
    const option = optionOf(issue.loc);
    if (option !== undefined && typeof issue.msg === 'string')
      return new UserError(`${option}: ${oneLine(issue.msg)} (HTTP 422)`, 2);
  }
  const hint = status === 401 ? '; the key in KEYGATE_ADMIN_KEY was refused' : '';
  return new UserError(`${oneLine(message)} (HTTP ${status}${hint})`, status === 422 ? 2 : 1);
}

/** The `code`s of an error and its causes (undici wraps the socket's error). */
function codesOf(error: unknown): string[] {
  const codes: string[] = [];
  let at: unknown = error;
  for (let depth = 0; depth < 5 && at instanceof Error; depth++) {
    const { code } = at as NodeJS.ErrnoException;
    if (typeof code === 'string') codes.push(code);
    codes.push(at.name);
    at = at.cause;
  }
  return codes;
}

function innermostMessage(error: unknown): string {
  let at: unknown = error;
  let message = error instanceof Error ? error.message : String(error);
  for (let depth = 0; depth < 5 && at instanceof Error; depth++) {
    if (at.message) message = at.message;
    at = at.cause;
  }
  return oneLine(message);
}

const TIMEOUTS = new Set([
  'TimeoutError',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT',
]);
const UNTRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
]);

/** A failure to exchange a request with the gateway at all, as a one-line user error. */
function connectionError(target: RemoteTarget, error: unknown): UserError {
  const where = target.base;
  const codes = codesOf(error);
  const has = (code: string) => codes.includes(code);
  if (isDestinationRefused(error))
    return new UserError(
      `refusing to send KEYGATE_ADMIN_KEY unencrypted to ${where}: the name resolves to an address that is not loopback`,
      2,
    );
  if (codes.some((c) => TIMEOUTS.has(c)))
    return new UserError(`no answer from ${where} within ${REMOTE_TIMEOUT_MS / 1000} s`);
  if (has('ECONNREFUSED'))
    return new UserError(`cannot connect to ${where}: connection refused (is the gateway running there?)`);
  if (has('ENOTFOUND') || has('EAI_AGAIN'))
    return new UserError(`cannot connect to ${where}: the host name does not resolve`);
  if (has('EHOSTUNREACH') || has('ENETUNREACH'))
    return new UserError(`cannot connect to ${where}: no route to the host`);
  const tls = codes.find((c) => UNTRUSTED.has(c) || /^ERR_(?:SSL|TLS)_|^CERT_|_CERT$|^ERR_OSSL/.test(c));
  if (tls !== undefined) {
    let hint = '';
    if (codes.some((c) => UNTRUSTED.has(c))) {
      hint = target.ca
        ? `: the certificate is signed neither by ${target.ca.source} nor by a CA of this system`
        : ": the certificate is not trusted (a gateway's own self-signed one?); pass it with " +
          '--ca-file <data-dir>/tls/cert.pem (or set KEYGATE_CA_FILE)';
    } else if (tls === 'ERR_SSL_WRONG_VERSION_NUMBER' || tls === 'ERR_SSL_PACKET_LENGTH_TOO_LONG') {
      hint = ' (does it serve plain HTTP?)';
    }
    // Node's message can go on with advice for Node itself ("try running Node.js with ..."): cut it.
    const reason = innermostMessage(error).split(';')[0];
    return new UserError(`TLS error with ${where}: ${reason} [${tls}]${hint}`);
  }
  if (has('ECONNRESET') || has('EPIPE') || has('UND_ERR_SOCKET')) {
    const hint = where.startsWith('http:') ? ' (if the gateway serves HTTPS, use its https:// address)' : '';
    return new UserError(`the connection to ${where} was closed before an answer${hint}`);
  }
  return new UserError(`cannot reach ${where}: ${innermostMessage(error)}`);
}

// ---- the backend -------------------------------------------------------------------------------

type Query = Record<string, string | number | undefined>;

function seconds(ms: number): number {
  return Math.round(ms / 1000);
}

function budgetBody(budget: Partial<TokenBudget>): Record<string, number | null> {
  const body: Record<string, number | null> = {};
  if (budget.day !== undefined) body.tokens_per_day = budget.day;
  if (budget.month !== undefined) body.tokens_per_month = budget.month;
  return body;
}

/** Restrictions, validated here exactly as on the data directory, as fields of a request body. */
function restrictionBody(input: KeyRestrictions): Record<string, unknown> {
  const patch: KeyPatch = validateRestrictions(input);
  const body: Record<string, unknown> = {};
  if (patch.scopes !== undefined) body.scopes = patch.scopes;
  if (patch.models !== undefined) body.models = patch.models;
  if (patch.allowedIps !== undefined) body.allowed_ips = patch.allowedIps;
  if (patch.limits !== undefined) {
    const limits: Record<string, number | null> = {};
    if (patch.limits.rpm !== undefined) limits.requests_per_minute = patch.limits.rpm;
    if (patch.limits.tpm !== undefined) limits.tokens_per_minute = patch.limits.tpm;
    if (patch.limits.concurrency !== undefined) limits.concurrent_requests = patch.limits.concurrency;
    if (Object.keys(limits).length > 0) body.limits = limits;
  }
  if (patch.budget !== undefined && Object.keys(patch.budget).length > 0)
    body.budget = budgetBody(patch.budget);
  return body;
}

export interface RemoteBackend extends Backend {
  /** An error of a command as a user error, with the key (should it appear anywhere) taken out. */
  userErrorOf(error: unknown): unknown;
  close(): Promise<void>;
}

export function openRemote(target: RemoteTarget): RemoteBackend {
  const agent = new Agent({
    connect: {
      timeout: REMOTE_TIMEOUT_MS,
      ...(target.ca ? { ca: [...rootCertificates, target.ca.pem] } : {}),
      // The key crosses plain http only to a loopback address, whatever `localhost` resolves to.
      ...(target.base.startsWith('http:') ? { lookup: guardedLookup(LOOPBACK_ONLY, 'plain') } : {}),
    },
    headersTimeout: REMOTE_TIMEOUT_MS,
    bodyTimeout: REMOTE_TIMEOUT_MS,
    keepAliveTimeout: 1000,
  });

  async function call(
    method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE',
    path: string,
    options: { query?: Query; body?: Record<string, unknown>; timeoutMs?: number } = {},
  ): Promise<unknown> {
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(options.query ?? {}))
      if (value !== undefined) search.set(name, String(value));
    const url = `${target.base}/admin/v1${path}${search.size > 0 ? `?${search}` : ''}`;
    const headers: Record<string, string> = {
      authorization: `Bearer ${target.adminKey}`,
      accept: 'application/json',
      'user-agent': 'keygate-cli',
    };
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    let status: number;
    let location: string | string[] | undefined;
    let text: string;
    try {
      const res = await request(url, {
        method,
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        dispatcher: agent,
        signal: AbortSignal.timeout(options.timeoutMs ?? REMOTE_TIMEOUT_MS),
        ...(options.timeoutMs === undefined
          ? {}
          : { headersTimeout: options.timeoutMs, bodyTimeout: options.timeoutMs }),
      });
      status = res.statusCode;
      location = res.headers.location;
      text = await res.body.text();
    } catch (error) {
      throw connectionError(target, error);
    }
    if (status >= 300 && status < 400) {
      throw new UserError(
        `the gateway answered HTTP ${status}, a redirect${typeof location === 'string' ? ` to ${shown(location)}` : ''}: give the address it redirects to with ${target.urlSource}`,
      );
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new UserError(
        `the gateway answered HTTP ${status} with something other than JSON (is ${target.urlSource} the address of a Keygate gateway?)`,
      );
    }
    if (status >= 400) throw apiError(status, body);
    return body;
  }

  function unexpected(what: string): UserError {
    return new UserError(
      `unexpected answer from ${target.base} to ${what} (is ${target.urlSource} the address of a Keygate gateway of this version?)`,
    );
  }

  /** A JSON object with a string `id` (a key or a workspace). */
  function view(value: unknown, what: string): Record<string, unknown> {
    if (!isRecord(value) || typeof value.id !== 'string') throw unexpected(what);
    return value;
  }

  function page(
    value: unknown,
    what: string,
  ): { data: Record<string, unknown>[]; body: Record<string, unknown> } {
    if (!isRecord(value) || !Array.isArray(value.data) || !value.data.every(isRecord)) throw unexpected(what);
    return { data: value.data, body: value };
  }

  const keyPath = (id: string) => `/keys/${encodeURIComponent(id)}`;
  const workspacePath = (id: string) => `/workspaces/${encodeURIComponent(id)}`;
  const memberPath = (id: string, user: string) => `${workspacePath(id)}/members/${encodeURIComponent(user)}`;

  function rule(value: unknown, what: string): RuleView {
    if (
      !isRecord(value) ||
      typeof value.kind !== 'string' ||
      !isRecord(value.settings) ||
      !isRecord(value.defaults) ||
      !Array.isArray(value.overridden)
    )
      throw unexpected(what);
    return value as unknown as RuleView;
  }

  function member(value: unknown, what: string): MemberView {
    if (!isRecord(value) || typeof value.user_id !== 'string') throw unexpected(what);
    return value as MemberView;
  }

  return {
    async listKeys(query) {
      const want = query.limit ?? Number.POSITIVE_INFINITY;
      const keys: KeyView[] = [];
      let after = query.after;
      for (;;) {
        const answer = await call('GET', '/keys', {
          query: {
            workspace_id: query.workspaceId,
            status: query.status,
            search: query.search,
            after,
            limit: Math.min(PAGE, want - keys.length),
          },
        });
        const { data, body } = page(answer, 'GET /admin/v1/keys');
        keys.push(...data.map((k) => view(k, 'GET /admin/v1/keys') as KeyView));
        const next = body.next_after;
        if (typeof next !== 'string' || keys.length >= want || data.length === 0) return keys;
        after = next;
      }
    },

    async getKey(id) {
      return view(await call('GET', keyPath(id)), 'GET /admin/v1/keys/{id}') as KeyView;
    },

    async createKey(input) {
      if (input.owner !== undefined) {
        throw new UserError(
          '--owner works on the local data directory only: through the API, a key belongs to the user whose key creates it',
          2,
        );
      }
      const body: Record<string, unknown> = { name: validateKeyName(input.name), ...restrictionBody(input) };
      if (input.workspaceId !== undefined) body.workspace_id = input.workspaceId;
      if (input.expiresInMs !== undefined) body.expires_in = seconds(input.expiresInMs);
      const created = view(await call('POST', '/keys', { body }), 'POST /admin/v1/keys');
      if (typeof created.key !== 'string') throw unexpected('POST /admin/v1/keys');
      return created as CreatedKeyView;
    },

    async updateKey(id, input) {
      const body: Record<string, unknown> = restrictionBody(input);
      if (input.name !== undefined) body.name = validateKeyName(input.name);
      if (input.expiresInMs !== undefined)
        body.expires_in = input.expiresInMs === null ? null : seconds(input.expiresInMs);
      return view(await call('PATCH', keyPath(id), { body }), 'PATCH /admin/v1/keys/{id}') as KeyView;
    },

    async rotateKey(id, graceMs) {
      const rotated = view(
        await call('POST', `${keyPath(id)}/rotate`, { body: { grace: seconds(graceMs) } }),
        'POST /admin/v1/keys/{id}/rotate',
      );
      if (typeof rotated.key !== 'string' || typeof rotated.previous_secret_valid_until !== 'string')
        throw unexpected('POST /admin/v1/keys/{id}/rotate');
      return rotated as RotatedKeyView;
    },

    async revokeKey(id) {
      const before = view(await call('GET', keyPath(id)), 'GET /admin/v1/keys/{id}');
      const after = view(
        await call('POST', `${keyPath(id)}/revoke`, { body: {} }),
        'POST /admin/v1/keys/{id}/revoke',
      );
      const revokedAt = before.revoked_at;
      return { key: after as KeyView, alreadyRevokedAt: typeof revokedAt === 'string' ? revokedAt : null };
    },

    async listWorkspaces() {
      const what = 'GET /admin/v1/workspaces';
      return page(await call('GET', '/workspaces'), what).data.map((w) => view(w, what) as WorkspaceView);
    },

    async getWorkspace(id) {
      const answer = await call('GET', workspacePath(id));
      return view(answer, 'GET /admin/v1/workspaces/{id}') as WorkspaceView;
    },

    async updateWorkspace(id, patch: WorkspacePatch) {
      const body: Record<string, unknown> = {};
      if (patch.name !== undefined) body.name = patch.name;
      if (patch.maxKeyLifetimeMs !== undefined)
        body.max_key_lifetime = patch.maxKeyLifetimeMs === null ? null : seconds(patch.maxKeyLifetimeMs);
      if (patch.allowedIps !== undefined) body.allowed_ips = patch.allowedIps;
      if (patch.budget !== undefined) body.budget = budgetBody(patch.budget);
      const answer = await call('PATCH', workspacePath(id), { body });
      return view(answer, 'PATCH /admin/v1/workspaces/{id}') as WorkspaceView;
    },

    async createWorkspace(name) {
      // The same rule, and message, as on the data directory (users/service.ts).
      const trimmed = name.trim();
      if (trimmed.length === 0 || trimmed.length > 128)
        throw new UserInputError('a workspace name has 1 to 128 characters');
      const answer = await call('POST', '/workspaces', { body: { name: trimmed } });
      return view(answer, 'POST /admin/v1/workspaces') as WorkspaceView;
    },

    async listMembers(workspaceId) {
      const what = 'GET /admin/v1/workspaces/{id}/members';
      return page(await call('GET', `${workspacePath(workspaceId)}/members`), what).data.map((m) =>
        member(m, what),
      );
    },

    async setRole(workspaceId, user, role) {
      const answer = await call('PUT', memberPath(workspaceId, user), { body: { role } });
      return member(answer, 'PUT /admin/v1/workspaces/{id}/members/{user}');
    },

    async removeMember(workspaceId, user) {
      const answer = await call('DELETE', memberPath(workspaceId, user));
      if (!isRecord(answer) || answer.removed !== true)
        throw unexpected('DELETE /admin/v1/workspaces/{id}/members/{user}');
    },

    async listAudit(query) {
      const events: AuditEventView[] = [];
      let before: number | undefined;
      for (;;) {
        const answer = await call('GET', '/audit', {
          query: {
            target_id: query.targetId,
            workspace_id: query.workspaceId,
            action: query.action,
            since: query.since === undefined ? undefined : new Date(query.since).toISOString(),
            before,
            limit: Math.min(PAGE, query.limit - events.length),
          },
        });
        const { data, body } = page(answer, 'GET /admin/v1/audit');
        events.push(...data.map((e) => e as AuditEventView));
        const next = body.next_before;
        if (typeof next !== 'number' || events.length >= query.limit || data.length === 0) return events;
        before = next;
      }
    },

    async usage(query) {
      const what = 'GET /admin/v1/usage';
      const answer = await call('GET', '/usage', {
        query: {
          by: query.by,
          key_id: query.keyId,
          workspace_id: query.workspaceId,
          model: query.model,
          endpoint: query.endpoint,
          from: query.from === undefined ? undefined : new Date(query.from).toISOString(),
          to: query.to === undefined ? undefined : new Date(query.to).toISOString(),
        },
      });
      const { body } = page(answer, what);
      if (typeof body.by !== 'string' || typeof body.currency !== 'string') throw unexpected(what);
      return body as unknown as UsageReportView;
    },

    async listAlerts(query) {
      const what = 'GET /admin/v1/alerts';
      const answer = await call('GET', '/alerts', {
        query: {
          workspace_id: query.workspaceId,
          kind: query.kind,
          key_id: query.keyId,
          unacknowledged: query.unacknowledged ? 'true' : undefined,
          limit: query.limit === undefined ? undefined : Math.min(PAGE, query.limit),
        },
      });
      return page(answer, what).data.map((a) => view(a, what) as AlertView);
    },

    async showAlert(id) {
      const what = 'GET /admin/v1/alerts/{id}';
      const answer = await call('GET', `/alerts/${encodeURIComponent(id)}`);
      const detail = view(answer, what);
      if (typeof detail.alert !== 'object' || !Array.isArray(detail.deliveries)) throw unexpected(what);
      return detail as unknown as AlertDetailView;
    },

    async acknowledgeAlert(id) {
      const what = 'POST /admin/v1/alerts/{id}/acknowledge';
      const answer = await call('POST', `/alerts/${encodeURIComponent(id)}/acknowledge`, { body: {} });
      return view(answer, what) as AlertView;
    },

    async listChannels(workspaceId) {
      const what = 'GET /admin/v1/alerts/channels';
      const answer = await call('GET', '/alerts/channels', { query: { workspace_id: workspaceId } });
      return page(answer, what).data.map((c) => view(c, what) as ChannelView);
    },

    async addChannel(input) {
      // The same checks, and messages, as on the data directory, before anything is sent.
      parseChannelInput(input);
      const body: Record<string, unknown> = { type: input.type.trim().toLowerCase(), url: input.url.trim() };
      if (input.name !== undefined) body.name = input.name;
      if (input.secret !== undefined) body.secret = input.secret;
      if (input.workspaceId !== undefined) body.workspace_id = input.workspaceId;
      const what = 'POST /admin/v1/alerts/channels';
      const created = view(await call('POST', '/alerts/channels', { body }), what);
      if (!('secret' in created)) throw unexpected(what);
      return created as CreatedChannelView;
    },

    async removeChannel(id) {
      const answer = await call('DELETE', `/alerts/channels/${encodeURIComponent(id)}`);
      if (!isRecord(answer) || answer.removed !== true)
        throw unexpected('DELETE /admin/v1/alerts/channels/{id}');
    },

    async testAlert(workspaceId) {
      const what = 'POST /admin/v1/alerts/test';
      const body = workspaceId === undefined ? {} : { workspace_id: workspaceId };
      // The gateway tries every channel (up to 10 s each, in parallel) before it answers.
      const answer = await call('POST', '/alerts/test', { body, timeoutMs: TEST_TIMEOUT_MS });
      return page(answer, what).data.map((r) => r as DeliveryView);
    },

    async listRules(workspaceId) {
      const what = 'GET /admin/v1/alerts/rules';
      const answer = await call('GET', '/alerts/rules', { query: { workspace_id: workspaceId } });
      return page(answer, what).data.map((r) => rule(r, what));
    },

    async setRule(kind, overrides, workspaceId) {
      // The same checks, and messages, as on the data directory, before anything is sent.
      const body = parseOverrides(kind, overrides);
      const answer = await call('PUT', `/alerts/rules/${encodeURIComponent(kind)}`, {
        query: { workspace_id: workspaceId },
        body,
      });
      return rule(answer, 'PUT /admin/v1/alerts/rules/{kind}');
    },

    userErrorOf(error) {
      const translated = userErrorOf(error);
      if (translated instanceof Error && translated.message.includes(target.adminKey)) {
        const message = translated.message.replaceAll(target.adminKey, '[KEYGATE_ADMIN_KEY]');
        return new UserError(message, translated instanceof UserError ? translated.exitCode : 1);
      }
      return translated;
    },

    async close() {
      await agent.close().catch(() => {});
    },
  };
}
