/**
 * Alert and channel operations shared by the CLI (on the data directory) and the management API,
 * so both validate, seal and show the same way.
 */
import type { Actor, Alert, Store } from '../store/types.ts';
import { UserInputError } from '../users/service.ts';
import { newId } from '../util/ids.ts';
import {
  type ChannelInput,
  type CreatedChannelView,
  channelView,
  parseChannelInput,
  sealSettings,
} from './channels.ts';
import { type AlertKey, type AlertView, alertView } from './messages.ts';
import type { DeliveryResult } from './notifier.ts';

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

/** Validates, seals and stores a new channel; the view carries a generated signing secret, once. */
export async function addChannel(
  deps: { store: Store; dataKey: Buffer; now?: number },
  input: ChannelInput & { workspaceId: string },
  actor: Actor,
): Promise<CreatedChannelView> {
  const parsed = parseChannelInput(input);
  if (!(await deps.store.getWorkspace(input.workspaceId)))
    throw new UserInputError(`no workspace with id ${input.workspaceId}`, 'not_found');
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
    deliveries: deliveries.map((d) => ({
      channel_id: d.channelId,
      attempt: d.attempt,
      outcome: d.outcome,
      status: d.status,
      error: d.error,
      at: new Date(d.at).toISOString(),
    })),
  };
}

export type AlertDetailView = Awaited<ReturnType<typeof alertDetail>>;
