/**
 * What a test gateway (SQLite) recorded of its requests: usage records, read straight from its
 * database file, and access-log lines; both waited for, since they are written behind the response.
 */
import { DatabaseSync } from 'node:sqlite';
import type { TestGateway } from './gateway.ts';
import { eventually } from './wait.ts';

export interface UsageRow {
  id: string;
  status: number;
  model: string | null;
  prompt_tokens: number;
  completion_tokens: number;
  tokens_estimated: number;
}

function read(t: TestGateway, keyId: string): UsageRow[] {
  const db = new DatabaseSync(`${t.dataDir}/keygate.db`, { readOnly: true });
  try {
    return db
      .prepare(
        'SELECT id, status, model, prompt_tokens, completion_tokens, tokens_estimated FROM usage_records WHERE key_id = ? ORDER BY time, id',
      )
      .all(keyId)
      .map((row) => ({ ...row }) as unknown as UsageRow);
  } finally {
    db.close();
  }
}

/** The key's usage records once there are at least `count` of them. */
export function usageRows(t: TestGateway, keyId: string, count = 1): Promise<UsageRow[]> {
  return eventually(() => {
    const rows = read(t, keyId);
    return rows.length >= count ? rows : undefined;
  }, `${count} usage record(s) of ${keyId}`);
}

/** The first access-log line (`msg: "request"`) whose fields include `fields`, once it is written. */
export async function accessLine(
  t: TestGateway,
  fields: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  await new Promise<void>((resolve) => t.gateway.logger.flush(() => resolve()));
  return eventually(
    () =>
      t.logLines
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .find((line) => line.msg === 'request' && Object.entries(fields).every(([k, v]) => line[k] === v)),
    `the access-log line with ${JSON.stringify(fields)}`,
  );
}
