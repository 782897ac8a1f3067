import { encodeBase62, randomBase62 } from '../keys/format.ts';

/** Prefixed, roughly time-sortable identifiers: `key_0kXb3f9ZQ2mWc8rT`. */
export function newId(prefix: 'key' | 'req' | 'ws' | 'evt' | 'usr' | 'alr' | 'ch' | 'inv'): string {
  return `${prefix}_${encodeBase62(Math.floor(Date.now() / 1000), 6)}${randomBase62(12)}`;
}

/** Per-process random part of request ids: ids from different processes never collide. */
const PROCESS_PART = randomBase62(10);
let requestCounter = 0;

/**
 * Request id for a request whose client sent no usable one: `req_` + a per-process random part +
 * a counter. Unique, cheap (no CSPRNG call per request), and not a secret.
 */
export function newRequestId(): string {
  requestCounter = (requestCounter + 1) % Number.MAX_SAFE_INTEGER;
  return `req_${PROCESS_PART}${requestCounter.toString(36)}`;
}
