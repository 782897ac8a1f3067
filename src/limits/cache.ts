/**
 * An LRU cache that never loses an entry in use. Entries count their users in `pins` (open
 * tickets, a pending store read); an entry the LRU evicts while pinned is parked aside and comes
 * back into the LRU when it is looked up again or when its last pin is dropped (`unpinned`).
 * So the LRU bounds the idle entries and the parked ones are bounded by the work in progress.
 */
import { LRUCache } from 'lru-cache';

export interface Pinnable {
  pins: number;
}

export class PinnedCache<V extends Pinnable> {
  readonly #lru: LRUCache<string, V>;
  /** Pinned entries the LRU evicted. */
  readonly #parked = new Map<string, V>();

  constructor(max: number) {
    this.#lru = new LRUCache<string, V>({
      max,
      dispose: (value, key, reason) => {
        if (reason === 'evict' && value.pins > 0) this.#parked.set(key, value);
      },
    });
  }

  get(key: string): V | undefined {
    const value = this.#lru.get(key);
    if (value !== undefined) return value;
    const parked = this.#parked.get(key);
    if (parked !== undefined) {
      this.#parked.delete(key);
      this.#lru.set(key, parked);
    }
    return parked;
  }

  set(key: string, value: V): void {
    this.#lru.set(key, value);
  }

  /** Call when `value.pins` dropped to 0: a parked entry returns to the LRU as most recent. */
  unpinned(key: string, value: V): void {
    if (this.#parked.get(key) === value) {
      this.#parked.delete(key);
      if (!this.#lru.has(key)) this.#lru.set(key, value);
    }
  }

  /** Removes an idle entry; a pinned one stays. Returns whether it was removed. */
  deleteIdle(key: string): boolean {
    const value = this.#lru.peek(key) ?? this.#parked.get(key);
    if (value === undefined || value.pins > 0) return false;
    this.#lru.delete(key);
    this.#parked.delete(key);
    return true;
  }

  get size(): number {
    return this.#lru.size + this.#parked.size;
  }

  clear(): void {
    this.#parked.clear();
    this.#lru.clear();
  }
}
