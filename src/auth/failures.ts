import { LRUCache } from 'lru-cache';

interface Window {
  start: number;
  count: number;
}

const WINDOW_MS = 60_000;

/**
 * What one client is: an IPv4 address, or an IPv6 /64 (one host is routinely given a whole /64,
 * so counting single IPv6 addresses would let it walk around the limit).
 */
export function bucketOf(ip: string): string {
  if (!ip.includes(':')) return ip;
  const [head = '', tail] = ip.split('::');
  const left = head.split(':').filter((g) => g.length > 0);
  const right = tail === undefined ? [] : tail.split(':').filter((g) => g.length > 0);
  const groups =
    tail === undefined
      ? left
      : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

/**
 * Counts failed authentications per client address over a one-minute window. An address past the
 * limit gets 429 before its key is even looked at, so guessing keys is slowed down, while clients
 * at other addresses are unaffected; only a secret the key cache already knows (a real key used
 * recently) is still verified from it (authenticate.ts), so that one client's bad keys do not lock
 * out the others sharing its address. Memory is bounded (LRU) against address-spraying.
 */
export class AuthFailureLimiter {
  readonly #limit: number;
  readonly #windows: LRUCache<string, Window>;

  constructor(limitPerMinute: number, maxAddresses = 100_000) {
    this.#limit = limitPerMinute;
    this.#windows = new LRUCache({ max: maxAddresses });
  }

  /** Seconds the address must wait, or 0 when it may try. */
  retryAfter(ip: string, now = Date.now()): number {
    const window = this.#windows.get(bucketOf(ip));
    if (!window || now - window.start >= WINDOW_MS || window.count < this.#limit) return 0;
    return Math.max(1, Math.ceil((window.start + WINDOW_MS - now) / 1000));
  }

  recordFailure(ip: string, now = Date.now()): void {
    const bucket = bucketOf(ip);
    const window = this.#windows.get(bucket);
    if (!window || now - window.start >= WINDOW_MS) this.#windows.set(bucket, { start: now, count: 1 });
    else window.count++;
  }
}
