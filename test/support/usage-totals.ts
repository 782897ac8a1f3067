/**
 * A key's usage totals as the store holds them, waited for: usage is written behind the response
 * (the write-behind queue, every 50 ms in tests), so a test that reads it right after its requests
 * must wait for the records, not for a guessed time.
 */
import type { Store, UsageTotals } from '../../src/store/types.ts';
import { eventually, WAIT_MS } from './wait.ts';

/**
 * The key's totals once the store has at least `requests` records of it; the caller asserts the
 * exact figures (a record too many still fails there).
 */
export async function usageTotalsOf(
  store: Pick<Store, 'usageTotals'>,
  keyId: string,
  requests: number,
  timeoutMs = WAIT_MS,
): Promise<UsageTotals> {
  let seen = 0;
  return eventually(
    async () => {
      const [totals] = await store.usageTotals({ keyId });
      seen = totals?.requests ?? 0;
      return seen >= requests ? totals : undefined;
    },
    () => `${requests} usage record(s) of ${keyId} (${seen} so far)`,
    timeoutMs,
  );
}
