import { LRUCache } from 'lru-cache';

interface Window {
  start: number;
  count: number;
}

const WINDOW_MS = 60_000;

/**
 * Counts failed authentications per client address over a one-minute window. An address past the
 * limit gets 429 before its key is even looked at, so guessing keys is slowed down, while clients
 * at other addresses are unaffected. Memory is bounded (LRU) against address-spraying.
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
    const window = this.#windows.get(ip);
    if (!window || now - window.start >= WINDOW_MS || window.count < this.#limit) return 0;
    return Math.max(1, Math.ceil((window.start + WINDOW_MS - now) / 1000));
  }

  recordFailure(ip: string, now = Date.now()): void {
    const window = this.#windows.get(ip);
    if (!window || now - window.start >= WINDOW_MS) this.#windows.set(ip, { start: now, count: 1 });
    else window.count++;
  }
}
