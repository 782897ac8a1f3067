/**
 * Key verification: checksum → HMAC → in-process cache → store. The cache holds key records by
 * hash (and remembers unknown hashes), and is invalidated from the store's change feed, which every
 * gateway polls, so a revoke made anywhere (the CLI included) is enforced here within one poll.
 */
import type { KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { isWellFormedKey } from '../keys/format.ts';
import { hashKey, pepperKey } from '../keys/hash.ts';
import type { KeyRecord, SecretMatch, Store } from '../store/types.ts';

export type VerifyFailure = 'malformed' | 'unknown' | 'revoked' | 'expired' | 'rotated';
/** A refused key that exists (revoked, expired, rotated out) is named, for alerts: never for the client. */
export type VerifyResult =
  | { ok: true; key: KeyRecord }
  | { ok: false; reason: VerifyFailure; key?: KeyRecord };

/** Cached value for a hash: the key it opens (and until when), or `null` for "no such key". */
type Entry = SecretMatch | null;

export interface VerifierOptions {
  store: Store;
  pepper: Buffer;
  prefix: string;
  ttlMs: number;
  maxEntries: number;
  /** Change-feed poll interval; 0 disables polling (tests drive `syncChanges` themselves). */
  pollMs: number;
  onError?: (error: unknown) => void;
}

export class KeyVerifier {
  readonly #store: Store;
  readonly #pepper: KeyObject;
  readonly #prefix: string;
  readonly #cache: LRUCache<string, { value: Entry }>;
  /** hashes cached per key id, so a change to a key drops every cached secret of it. */
  readonly #hashesByKey = new Map<string, Set<string>>();
  readonly #inflight = new Map<string, Promise<Entry>>();
  readonly #onError: (error: unknown) => void;
  #cursor = -1;
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  /** Bumped by every applied change, so a load that raced a change is not cached. */
  #generation = 0;
  /** Cache statistics, read by metrics. */
  hits = 0;
  misses = 0;

  constructor(options: VerifierOptions) {
    this.#store = options.store;
    this.#pepper = pepperKey(options.pepper);
    this.#prefix = options.prefix;
    this.#onError = options.onError ?? (() => {});
    this.#cache = new LRUCache({
      max: options.maxEntries,
      ttl: options.ttlMs,
      dispose: (entry, hash) => {
        if (entry.value) this.#forgetHash(entry.value.key.id, hash);
      },
    });
    if (options.pollMs > 0) {
      this.#timer = setInterval(() => void this.syncChanges(), options.pollMs);
      this.#timer.unref();
    }
  }

  /** Reads the change-feed position so that only later changes are applied. Call once at start. */
  async start(): Promise<void> {
    this.#cursor = (await this.#store.keyChanges(-1)).cursor;
  }

  #forgetHash(keyId: string, hash: string): void {
    const set = this.#hashesByKey.get(keyId);
    if (!set) return;
    set.delete(hash);
    if (set.size === 0) this.#hashesByKey.delete(keyId);
  }

  /** Applies the store's change feed to the cache. */
  async syncChanges(): Promise<void> {
    if (this.#polling || this.#cursor < 0) return;
    this.#polling = true;
    try {
      const changes = await this.#store.keyChanges(this.#cursor);
      if (changes.keyIds.length > 0) {
        this.#generation++;
        if (changes.keyIds.some((id) => id.startsWith('ws_'))) {
          // A workspace policy changed: every cached key carries a copy of it.
          this.#cache.clear();
          this.#hashesByKey.clear();
        }
        for (const keyId of changes.keyIds) {
          for (const hash of this.#hashesByKey.get(keyId) ?? []) this.#cache.delete(hash);
          this.#hashesByKey.delete(keyId);
        }
        // A created key may have been remembered as unknown: drop the negative entries.
        for (const [hash, entry] of this.#cache.entries()) if (entry.value === null) this.#cache.delete(hash);
      }
      this.#cursor = changes.cursor;
    } catch (error) {
      this.#onError(error);
    } finally {
      this.#polling = false;
    }
  }

  #judge(entry: Entry, now: number): VerifyResult {
    if (entry === null) return { ok: false, reason: 'unknown' };
    const key = entry.key;
    if (entry.validUntil !== null && entry.validUntil <= now) return { ok: false, reason: 'rotated', key };
    if (key.revokedAt !== null && key.revokedAt <= now) return { ok: false, reason: 'revoked', key };
    if (key.expiresAt !== null && key.expiresAt <= now) return { ok: false, reason: 'expired', key };
    return { ok: true, key };
  }

  /**
   * Verifies a presented token. Answers synchronously when the cache can (the common case), and
   * with a promise when the store must be asked; concurrent misses for one hash share one query.
   */
  verify(token: string, now = Date.now()): VerifyResult | Promise<VerifyResult> {
    if (!isWellFormedKey(token, this.#prefix)) return { ok: false, reason: 'malformed' };
    const hash = hashKey(this.#pepper, token);
    const cached = this.#cache.get(hash);
    if (cached !== undefined) {
      this.hits++;
      return this.#judge(cached.value, now);
    }
    this.misses++;
    let pending = this.#inflight.get(hash);
    if (!pending) {
      pending = this.#load(hash);
      this.#inflight.set(hash, pending);
    }
    return pending.then((entry) => this.#judge(entry, now));
  }

  async #load(hash: string): Promise<Entry> {
    const generation = this.#generation;
    try {
      const match = (await this.#store.findKeyByHash(hash, Date.now())) ?? null;
      if (generation !== this.#generation) return match;
      this.#cache.set(hash, { value: match });
      if (match) {
        let set = this.#hashesByKey.get(match.key.id);
        if (!set) {
          set = new Set();
          this.#hashesByKey.set(match.key.id, set);
        }
        set.add(hash);
      }
      return match;
    } finally {
      this.#inflight.delete(hash);
    }
  }

  get cacheSize(): number {
    return this.#cache.size;
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
