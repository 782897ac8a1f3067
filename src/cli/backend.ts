/**
 * What the management commands act on: the local data directory (the store, as the gateway itself
 * uses it) or a running gateway's management API (`--url`, see remote.ts). Each command is written
 * once against `Backend` and prints the same JSON and tables either way, because both sides
 * produce the shared views of src/views.ts.
 */
import type { ChannelInput, ChannelView, CreatedChannelView } from '../alerts/channels.ts';
import { channelView } from '../alerts/channels.ts';
import type { AlertView } from '../alerts/messages.ts';
import { createNotifier } from '../alerts/notifier.ts';
import { type RuleView, ruleViews, setRuleOverrides } from '../alerts/rule-settings.ts';
import type { RuleKind } from '../alerts/rules.ts';
import {
  type AlertDetailView,
  addChannel,
  alertDetail,
  alertViews,
  channelRules,
  type DeliveryView,
  deliveryView,
} from '../alerts/service.ts';
import {
  createKey,
  type KeyRestrictions,
  rotateKey,
  type UpdateKeyInput,
  updateKey,
} from '../keys/service.ts';
import {
  type AlertKind,
  CLI_ACTOR,
  DEFAULT_WORKSPACE_ID,
  type KeyStatus,
  type Role,
  type UsageGroup,
  type WorkspacePatch,
} from '../store/types.ts';
import { createWorkspace, removeMember, setRole } from '../users/service.ts';
import {
  auditView,
  type KeyView,
  keyView,
  memberView,
  type UsageReportView,
  usageReportView,
  workspaceView,
} from '../views.ts';
import { type CommandContext, envValue, type TargetOptions, UserError, withStore } from './common.ts';
import { openRemote, remoteTarget } from './remote.ts';

export type { KeyView } from '../views.ts';
export type CreatedKeyView = KeyView & { key: string };
export type RotatedKeyView = CreatedKeyView & { previous_secret_valid_until: string };
export type WorkspaceView = ReturnType<typeof workspaceView>;
export type AuditEventView = ReturnType<typeof auditView>;
export type { UsageReportView, UsageRowView } from '../views.ts';
export type MemberView = ReturnType<typeof memberView>;
export type { ChannelView, CreatedChannelView } from '../alerts/channels.ts';
export type { AlertView } from '../alerts/messages.ts';
export type { RuleView } from '../alerts/rule-settings.ts';
export type { AlertDetailView, DeliveryView } from '../alerts/service.ts';

export interface KeyListQuery {
  workspaceId?: string | undefined;
  status?: KeyStatus | undefined;
  search?: string | undefined;
  after?: string | undefined;
  /** At most this many; undefined: all. */
  limit?: number | undefined;
}

export interface NewKeyInput extends KeyRestrictions {
  name: string;
  workspaceId?: string | undefined;
  expiresInMs?: number | undefined;
  /** The user (id or email) the key belongs to: it then acts with their role in the workspace. */
  owner?: string | undefined;
}

export interface AuditQuery {
  targetId?: string | undefined;
  workspaceId?: string | undefined;
  action?: string | undefined;
  /** Epoch milliseconds. */
  since?: number | undefined;
  limit: number;
}

export interface UsageQuery {
  /** Default: key. */
  by?: UsageGroup | undefined;
  keyId?: string | undefined;
  workspaceId?: string | undefined;
  /** A model id or pattern. */
  model?: string | undefined;
  endpoint?: string | undefined;
  /** Epoch milliseconds, inclusive. */
  from?: number | undefined;
  /** Epoch milliseconds, exclusive. */
  to?: number | undefined;
}

export interface AlertQuery {
  workspaceId?: string | undefined;
  kind?: AlertKind | undefined;
  keyId?: string | undefined;
  unacknowledged?: boolean | undefined;
  limit?: number | undefined;
}

export interface NewChannelInput extends ChannelInput {
  /** Default: ws_default locally, the admin key's workspace through the API. */
  workspaceId?: string | undefined;
}

export interface RevokedKey {
  key: KeyView;
  /** When the key had already been revoked before this call (nothing changed then); null otherwise. */
  alreadyRevokedAt: string | null;
}

/** Every management action a command can take, on the data directory or through the API. */
export interface Backend {
  listKeys(query: KeyListQuery): Promise<KeyView[]>;
  getKey(id: string): Promise<KeyView>;
  createKey(input: NewKeyInput): Promise<CreatedKeyView>;
  updateKey(id: string, input: UpdateKeyInput): Promise<KeyView>;
  rotateKey(id: string, graceMs: number): Promise<RotatedKeyView>;
  revokeKey(id: string): Promise<RevokedKey>;
  listWorkspaces(): Promise<WorkspaceView[]>;
  getWorkspace(id: string): Promise<WorkspaceView>;
  updateWorkspace(id: string, patch: WorkspacePatch): Promise<WorkspaceView>;
  createWorkspace(name: string): Promise<WorkspaceView>;
  listMembers(workspaceId: string): Promise<MemberView[]>;
  /** Adds `user` (an id or an email address) to the workspace, or changes their role. */
  setRole(workspaceId: string, user: string, role: Role): Promise<MemberView>;
  removeMember(workspaceId: string, user: string): Promise<void>;
  listAudit(query: AuditQuery): Promise<AuditEventView[]>;
  usage(query: UsageQuery): Promise<UsageReportView>;
  listAlerts(query: AlertQuery): Promise<AlertView[]>;
  acknowledgeAlert(id: string): Promise<AlertView>;
  /** An alert with its delivery log. */
  showAlert(id: string): Promise<AlertDetailView>;
  listChannels(workspaceId: string | undefined): Promise<ChannelView[]>;
  addChannel(input: NewChannelInput): Promise<CreatedChannelView>;
  removeChannel(id: string): Promise<void>;
  /** Sends a test alert once to every channel of the workspace; how each went. */
  testAlert(workspaceId: string | undefined): Promise<DeliveryView[]>;
  /** Every alert rule of a workspace with its effective settings. */
  listRules(workspaceId: string | undefined): Promise<RuleView[]>;
  /**
   * Replaces a workspace's settings of a rule (API names; `{}`: the defaults). On the data
   * directory a running gateway applies it within a minute; through the API, at once.
   */
  setRule(
    kind: RuleKind,
    overrides: Record<string, unknown>,
    workspaceId: string | undefined,
  ): Promise<RuleView>;
}

function noKey(id: string): UserError {
  return new UserError(`no key with id ${id} (see \`keygate keys list\`)`);
}

function noWorkspace(id: string): UserError {
  return new UserError(`no workspace with id ${id} (see \`keygate workspaces list\`)`);
}

/** The data key of the data directory's server secret (KEYGATE_SECRET, or <data-dir>/secret). */
function dataKeyOf(ctx: CommandContext): Buffer {
  return ctx.secrets().dataKey;
}

/** The CLI prints each delivery's result itself. */
const SILENT = { info() {}, warn() {}, error() {} };

/** The data directory's store, changed as the CLI always has: with the key service, as actor `cli`. */
export function localBackend(ctx: CommandContext): Backend {
  const { store } = ctx;
  return {
    async listKeys(query) {
      const now = Date.now();
      const found = await store.listKeys(query);
      return found.map((k) => keyView(k, now));
    },
    async getKey(id) {
      const key = await store.getKey(id);
      if (!key) throw noKey(id);
      return keyView(key);
    },
    async createKey(input) {
      let createdBy = 'cli';
      if (input.owner !== undefined) {
        const user = await store.getUser(
          input.owner.includes('@') ? input.owner.trim().toLowerCase() : input.owner,
        );
        if (!user) throw new UserError(`--owner: no user ${input.owner} (see \`keygate users list\`)`, 2);
        const workspaceId = input.workspaceId ?? DEFAULT_WORKSPACE_ID;
        if (!(await store.getMembership(workspaceId, user.id))) {
          throw new UserError(`--owner: ${user.email} is not a member of ${workspaceId}`, 2);
        }
        createdBy = user.id;
      }
      const created = await createKey(ctx.keys(), { ...input, createdBy, actor: CLI_ACTOR });
      return { ...keyView(created.record), key: created.key };
    },
    async updateKey(id, input) {
      return keyView(await updateKey(ctx.keys(), id, input, CLI_ACTOR));
    },
    async rotateKey(id, graceMs) {
      const rotated = await rotateKey(ctx.keys(), id, graceMs, CLI_ACTOR);
      const graceUntil = (rotated.record.rotatedAt ?? Date.now()) + graceMs;
      return {
        ...keyView(rotated.record),
        key: rotated.key,
        previous_secret_valid_until: new Date(graceUntil).toISOString(),
      };
    },
    async revokeKey(id) {
      const before = await store.getKey(id);
      if (!before) throw noKey(id);
      const after = await store.revokeKey(id, Date.now(), CLI_ACTOR);
      if (!after) throw new UserError(`no key with id ${id}`);
      const alreadyRevokedAt = before.revokedAt === null ? null : new Date(before.revokedAt).toISOString();
      return { key: keyView(after), alreadyRevokedAt };
    },
    async listWorkspaces() {
      return (await store.listWorkspaces()).map(workspaceView);
    },
    async getWorkspace(id) {
      const ws = await store.getWorkspace(id);
      if (!ws) throw noWorkspace(id);
      return workspaceView(ws);
    },
    async updateWorkspace(id, patch) {
      const updated = await store.updateWorkspace(id, patch, CLI_ACTOR, Date.now());
      if (!updated) throw noWorkspace(id);
      return workspaceView(updated);
    },
    async createWorkspace(name) {
      return workspaceView(await createWorkspace(store, name, CLI_ACTOR));
    },
    async listMembers(workspaceId) {
      if (!(await store.getWorkspace(workspaceId)))
        throw new UserError(`no workspace with id ${workspaceId}`);
      return (await store.listMembers(workspaceId)).map(memberView);
    },
    async setRole(workspaceId, user, role) {
      return memberView(await setRole(store, { workspaceId, user, role }, CLI_ACTOR));
    },
    async removeMember(workspaceId, user) {
      await removeMember(store, { workspaceId, user }, CLI_ACTOR);
    },
    async listAudit(query) {
      return (await store.listAudit(query)).map(auditView);
    },
    async usage(query) {
      const report = await store.usageReport({
        ...query,
        by: query.by ?? 'key',
        pricing: ctx.config.pricing,
      });
      return usageReportView(report);
    },
    async listAlerts(query) {
      return alertViews(store, await store.listAlerts(query));
    },
    async showAlert(id) {
      const alert = await store.getAlert(id);
      if (!alert) throw new UserError(`no alert with id ${id} (see \`keygate alerts list\`)`);
      return alertDetail(store, alert);
    },
    async acknowledgeAlert(id) {
      const acknowledged = await store.acknowledgeAlert(id, CLI_ACTOR, Date.now());
      if (!acknowledged) throw new UserError(`no alert with id ${id} (see \`keygate alerts list\`)`);
      const [view] = await alertViews(store, [acknowledged]);
      if (!view) throw new UserError(`no alert with id ${id}`);
      return view;
    },
    async listChannels(workspaceId) {
      const dataKey = dataKeyOf(ctx);
      return (await store.listChannels(workspaceId)).map((c) => channelView(c, dataKey));
    },
    async addChannel(input) {
      return addChannel(
        { store, dataKey: dataKeyOf(ctx), rules: channelRules(ctx.config.alerts) },
        { ...input, workspaceId: input.workspaceId ?? DEFAULT_WORKSPACE_ID },
        CLI_ACTOR,
      );
    },
    async removeChannel(id) {
      if (!(await store.deleteChannel(id, CLI_ACTOR, Date.now())))
        throw new UserError(`no alert channel with id ${id} (see \`keygate alerts channels list\`)`);
    },
    async testAlert(workspaceId) {
      const id = workspaceId ?? DEFAULT_WORKSPACE_ID;
      if (!(await store.getWorkspace(id))) throw noWorkspace(id);
      // Sent from this process, with the data directory's secret: no gateway needs to run.
      const notifier = createNotifier({
        store,
        dataKey: dataKeyOf(ctx),
        logger: SILENT,
        destinations: channelRules(ctx.config.alerts).destinations,
        testSendsPerMinute: ctx.config.alerts.testSendsPerMinute,
      });
      try {
        return (await notifier.sendTest(id)).map(deliveryView);
      } finally {
        await notifier.close();
      }
    },
    async listRules(workspaceId) {
      const id = workspaceId ?? DEFAULT_WORKSPACE_ID;
      if (!(await store.getWorkspace(id))) throw noWorkspace(id);
      return ruleViews(store, id);
    },
    async setRule(kind, overrides, workspaceId) {
      const id = workspaceId ?? DEFAULT_WORKSPACE_ID;
      if (!(await store.getWorkspace(id))) throw noWorkspace(id);
      return setRuleOverrides({ store }, { workspaceId: id, kind, overrides }, CLI_ACTOR);
    },
  };
}

/**
 * Runs `work` against the gateway of --url / KEYGATE_URL when one is given (nothing local is read
 * or written then), or else against the data directory.
 */
export async function withBackend<T>(
  options: TargetOptions,
  work: (backend: Backend) => Promise<T>,
): Promise<T> {
  const url = options.url ?? envValue('KEYGATE_URL');
  if (url === undefined) {
    if (options.caFile !== undefined)
      throw new UserError('--ca-file is for a gateway given with --url (or KEYGATE_URL)', 2);
    return withStore(options, (ctx) => work(localBackend(ctx)));
  }
  const source = options.url === undefined ? 'KEYGATE_URL' : '--url';
  const remote = openRemote(remoteTarget(url, options.caFile, process.env, source));
  try {
    return await work(remote);
  } catch (error) {
    throw remote.userErrorOf(error);
  } finally {
    await remote.close();
  }
}
