import type { ServerResponse } from 'node:http';
import { sendError } from '../http/errors.ts';
import type { Logger } from '../http/log.ts';
import type { Store } from './types.ts';

/** Whether the store answers a ping within a second. */
export async function storeReachable(store: Pick<Store, 'ping'>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      store.ping().then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), 1000);
      }),
    ]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Answers an error no handler expected. A store that does not answer a ping is an outage, not a
 * bug: 503 `store_unavailable` with Retry-After, so clients retry; anything else is a 500. Logs
 * the error either way (as `what` when the store is fine) and resolves to the code sent.
 */
export async function sendUnexpectedError(
  res: ServerResponse,
  store: Pick<Store, 'ping'>,
  logger: Logger,
  context: { reqId: string; err: unknown; what: string },
): Promise<'internal_error' | 'store_unavailable'> {
  const reachable = await storeReachable(store);
  logger.error(
    { reqId: context.reqId, err: context.err },
    reachable ? context.what : 'the store is unreachable',
  );
  if (reachable) {
    sendError(res, 'internal_error', 'Internal error. The request id identifies it in the gateway log.');
    return 'internal_error';
  }
  sendError(
    res,
    'store_unavailable',
    'Keygate cannot reach its database, so nothing can be read or changed right now. Retry shortly.',
    { retryAfter: 5 },
  );
  return 'store_unavailable';
}
