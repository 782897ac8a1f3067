/** Usage records for tests that write them to a store directly (a finished chat request by default). */
import type { UsageRecord } from '../../src/store/types.ts';

export function usageRecord(fields: Pick<UsageRecord, 'id'> & Partial<UsageRecord>): UsageRecord {
  return {
    time: Date.now(),
    keyId: 'key_x',
    workspaceId: 'ws_default',
    model: 'm',
    endpoint: '/v1/chat/completions',
    status: 200,
    promptTokens: 1,
    completionTokens: 1,
    totalTokens: 2,
    latencyMs: 1,
    ttftMs: null,
    clientIp: '192.0.2.1',
    ...fields,
  };
}
