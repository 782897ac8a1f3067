import { encodeBase62, randomBase62 } from '../keys/format.ts';

/** Prefixed, roughly time-sortable identifiers: `key_0kXb3f9ZQ2mWc8rT`. */
export function newId(prefix: 'key' | 'req' | 'ws' | 'evt'): string {
  return `${prefix}_${encodeBase62(Math.floor(Date.now() / 1000), 6)}${randomBase62(12)}`;
}

/** 32 hex characters, used as the request id when the client did not send a usable one. */
export function newRequestId(): string {
  return randomBase62(24);
}
