/**
 * Alert and channel operations shared by the CLI (on the data directory) and the management API,
 * so both validate, seal and show the same way.
 */
import { DEFAULT_DESTINATIONS, type DestinationPolicy, destinationPolicy } from '../net/destinations.ts';
import type { Actor, Alert, Store } from '../store/types.ts';
import { UserInputError } from '../users/service.ts';
import { newId } from '../util/ids.ts';
import {
  type ChannelInput,
  type CreatedChannelView,
  channelView,
  checkDestination,
  parseChannelInput,
  sealSettings,
} from './channels.ts';
import { type AlertKey, type AlertView, alertView } from './messages.ts';
import { type DeliveryResult, reasonText, storedReason } from './notifier.ts';

/** The operator's rules for alert channels (config `alerts`). */
export interface ChannelRules {
  destinations: DestinationPolicy;
  maxChannelsPerWorkspace: number;
}

export const DEFAULT_CHANNEL_RULES: Readonly<ChannelRules> = Object.freeze({
  destinations: DEFAULT_DESTINATIONS,
  maxChannelsPerWorkspace: 20,
});

/** The rules of the config's `alerts` section (its ranges already validated by loadConfig). */
export function channelRules(settings: {
  allowedDestinations: readonly string[];
  maxChannelsPerWorkspace: number;
}): ChannelRules {
  return {
    destinations: destinationPolicy(settings.allowedDestinations),
    maxChannelsPerWorkspace: settings.maxChannelsPerWorkspace,
  };
}

/** Alerts as views, each key named (looked up once per key). */
export async function alertViews(
  store: Pick<Store, 'getKey'>,
  alerts: readonly Alert[],
): Promise<AlertView[]> {
  const names = new Map<string, string | null>();
  for (const id of new Set(alerts.map((a) => a.keyId).filter((id): id is string => id !== null))) {
    names.set(id, (await store.getKey(id))?.name ?? null);
  }
  return alerts.map((alert) => {
    const key: AlertKey | null =
      alert.keyId === null ? null : { id: alert.keyId, name: names.get(alert.keyId) ?? null };
    return alertView(alert, key);
  });
}

/**
 * Validates, seals and stores a new channel; the view carries a generated signing secret, once.
 * Refuses what the destination policy refuses before any connection (checkDestination), and a
 * channel past the workspace's cap (`conflict`): a test send reaches every channel, and each one
 * is a connection the gateway makes. Two additions at the same moment may both pass the count.
 */
export async function addChannel(
  deps: { store: Store; dataKey: Buffer; now?: number; rules?: ChannelRules },
  input: ChannelInput & { workspaceId: string },
  actor: Actor,
): Promise<CreatedChannelView> {
  const rules = deps.rules ?? DEFAULT_CHANNEL_RULES;
  const parsed = parseChannelInput(input);
  checkDestination(parsed.settings, rules.destinations);
  if (!(await deps.store.getWorkspace(input.workspaceId)))
    throw new UserInputError(`no workspace with id ${input.workspaceId}`, 'not_found');
  const max = rules.maxChannelsPerWorkspace;
  if ((await deps.store.listChannels(input.workspaceId)).length >= max)
    throw new UserInputError(
      `a workspace has at most ${max} alert channel${max === 1 ? '' : 's'} (the operator's alerts.maxChannelsPerWorkspace): remove one first`,
      'conflict',
    );
  const channel = await deps.store.createChannel(
    {
      id: newId('ch'),
      workspaceId: input.workspaceId,
      type: parsed.type,
      name: parsed.name,
      configSealed: sealSettings(deps.dataKey, parsed.settings),
      createdAt: deps.now ?? Date.now(),
    },
    actor,
  );
  return { ...channelView(channel, deps.dataKey), secret: parsed.generatedSecret ?? null };
}

export function deliveryView(result: DeliveryResult) {
  return {
    channel_id: result.channelId,
    name: result.name,
    type: result.type,
    outcome: result.outcome,
    reason: result.reason,
    status: result.status,
    error: result.error,
  };
}

export type DeliveryView = ReturnType<typeof deliveryView>;

/** An alert with its delivery log (every attempt to every channel, newest first). */
export async function alertDetail(store: Pick<Store, 'getKey' | 'listDeliveries'>, alert: Alert) {
  const [view] = await alertViews(store, [alert]);
  const deliveries = await store.listDeliveries({ alertId: alert.id, limit: 200 });
  return {
    alert: view as AlertView,
    // The log holds a reason (DeliveryReason); a text recorded by an older version is not shown.
    deliveries: deliveries.map((d) => {
      const reason = d.outcome === 'sent' ? 'delivered' : storedReason(d.error);
      return {
        channel_id: d.channelId,
        attempt: d.attempt,
        outcome: d.outcome,
        reason,
        status: d.status,
        error: reasonText(reason),
        at: new Date(d.at).toISOString(),
      };
    }),
  };
}

export type AlertDetailView = Awaited<ReturnType<typeof alertDetail>>;
