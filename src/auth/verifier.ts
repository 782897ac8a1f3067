/**
 * Key verification: checksum → in-process cache → HMAC → store. The cache holds key records by a
 * SHA-256 of the token (and remembers unknown tokens), and is invalidated from the store's change
 * feed, which every gateway polls, so a revoke made anywhere (the CLI included) is enforced here
 * within one poll.
 */
import { hash, type KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { isWellFormedKey } from '../keys/format.ts';
import { hashKey, pepperKey } from '../keys/hash.ts';
import type { KeyRecord, SecretMatch, Store } from '../store/types.ts';
import { Background, type PeriodicTask } from '../util/background.ts';

/** The background task that polls the change feed (util/background.ts). */
export const KEY_CHANGE_POLL_TASK = 'key_change_poll';

export type VerifyFailure = 'malformed' | 'unknown' | 'revoked' | 'expired' | 'rotated';
/** A refused key that exists (revoked, expired, rotated out) is named, for alerts: never for the client. */
export type VerifyResult =
  | { ok: true; key: KeyRecord }
  | { ok: false; reason: VerifyFailure; key?: KeyRecord };

/** Cached value for a token: the key it opens (and until when), or `null` for "no such key". */
type Entry = SecretMatch | null;

export interface VerifierOptions {
  store: Store;
  pepper: Buffer;
  prefix: string;
  ttlMs: number;
  maxEntries: number;
  /** Change-feed poll interval; 0 disables polling (tests drive `syncChanges` themselves). */
  pollMs: number;
  /**
   * While the store cannot be read, a cached answer this long past its TTL is still used (0:
   * never). Changes learnt meanwhile (`invalidate`, e.g. from a broadcast) still drop entries.
   */
  staleIfErrorMs?: number;
  /** Every failed read of the store (the background task logs the changes of state). */
  onError?: (error: unknown) => void;
  /** Supervises the poll (one of its own, which logs nothing, by default). */
  background?: Background;
  /** The clock of the cache's TTL, in ms (tests inject one); default `performance`. */
  ttlClock?: { now(): number };
}

export class KeyVerifier {
  readonly #store: Store;
  readonly #pepper: KeyObject;
  readonly #prefix: string;
  readonly #cache: LRUCache<string, { value: Entry }>;
  /** Cache ids per key id, so a change to a key drops every cached secret of it. */
  readonly #idsByKey = new Map<string, Set<string>>();
  readonly #inflight = new Map<string, Promise<Entry>>();
  readonly #onError: (error: unknown) => void;
  readonly #staleIfErrorMs: number;
  readonly #background: Background;
  #cursor = -1;
  #poll: PeriodicTask | undefined;
  /** The read of the change feed in progress (rejects if it fails). */
  #reading: Promise<void> | undefined;
  /** Bumped by every applied change, so a load that raced a change is not cached. */
  #generation = 0;
  /** Cache statistics, read by metrics. */
  hits = 0;
  misses = 0;
  /** Answers given from an expired entry because the store could not be read. */
  staleServed = 0;

  constructor(options: VerifierOptions) {
    this.#store = options.store;
    this.#pepper = pepperKey(options.pepper);
    this.#prefix = options.prefix;
    this.#onError = options.onError ?? (() => {});
    this.#staleIfErrorMs = options.staleIfErrorMs ?? 0;
    this.#background = options.background ?? new Background();
    this.#cache = new LRUCache({
      max: options.maxEntries,
      ttl: options.ttlMs,
      // An expired entry stays (until replaced or evicted) as the fallback for a store outage.
      noDeleteOnStaleGet: true,
      // An injected clock is read on every check (lru-cache otherwise caches "now" for 1 ms).
      ...(options.ttlClock ? { perf: options.ttlClock, ttlResolution: 0 } : {}),
      dispose: (entry, id) => {
        if (entry.value) this.#forget(entry.value.key.id, id);
      },
    });
    // While the store cannot be read, the poll backs off to at most 5 s: a change made once it is
    // back (a revoke) is still seen within seconds.
    if (options.pollMs > 0)
      this.#poll = this.#background.every(KEY_CHANGE_POLL_TASK, options.pollMs, () => this.#read(), {
        retry: { initialMs: options.pollMs, maxMs: Math.max(options.pollMs, 5000) },
      });
  }

  /** Reads the change-feed position so that only later changes are applied. Call once at start. */
  async start(): Promise<void> {
    this.#cursor = (await this.#store.keyChanges(-1)).cursor;
  }

  #forget(keyId: string, id: string): void {
    const set = this.#idsByKey.get(keyId);
    if (!set) return;
    set.delete(id);
    if (set.size === 0) this.#idsByKey.delete(keyId);
  }

  /** Drops what is cached about these keys (a change learnt from elsewhere, e.g. a broadcast). */
  invalidate(keyIds: readonly string[]): void {
    if (keyIds.length === 0) return;
    this.#generation++;
    if (keyIds.some((id) => id.startsWith('ws_'))) {
      this.#cache.clear();
      this.#idsByKey.clear();
      return;
    }
    for (const keyId of keyIds) {
      for (const id of this.#idsByKey.get(keyId) ?? []) this.#cache.delete(id);
      this.#idsByKey.delete(keyId);
    }
    for (const [id, entry] of this.#cache.entries()) if (entry.value === null) this.#cache.delete(id);
  }

  /**
   * Applies the store's change feed to the cache: every change made before the call is applied
   * when it resolves. Never rejects (a failure is reported).
   */
  async syncChanges(): Promise<void> {
    try {
      // A read under way may have left before the caller's change was written: let it finish,
      // then read again (a read started after this call, by the poll or another caller, will do).
      if (this.#reading) await this.#reading.catch(() => {});
      await this.#read();
      this.#background.succeeded(KEY_CHANGE_POLL_TASK);
    } catch (error) {
      this.#background.failed(KEY_CHANGE_POLL_TASK, error);
    }
  }

  /** One read of the change feed at a time; a caller during one waits for it. Rejects on failure. */
  #read(): Promise<void> {
    if (this.#cursor < 0) return Promise.resolve();
    this.#reading ??= (async () => {
      try {
        const changes = await this.#store.keyChanges(this.#cursor);
        // A workspace change clears everything (every cached key carries a copy of its policy); a
        // created key may have been remembered as unknown, so negative entries go too.
        this.invalidate(changes.keyIds);
        this.#cursor = changes.cursor;
      } catch (error) {
        this.#onError(error);
        throw error;
      } finally {
        this.#reading = undefined;
      }
    })();
    return this.#reading;
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
   * with a promise when the store must be asked; concurrent misses for one token share one query.
   */
  verify(token: string, now = Date.now()): VerifyResult | Promise<VerifyResult> {
    if (!isWellFormedKey(token, this.#prefix)) return { ok: false, reason: 'malformed' };
    // The cache is keyed by a plain SHA-256 of the token (7× cheaper than the HMAC); the store's
    // peppered HMAC is computed only on a miss. Keys are random, so neither reveals one.
    const id = hash('sha256', token, 'base64url');
    const cached = this.#cache.get(id);
    if (cached !== undefined) {
      this.hits++;
      return this.#judge(cached.value, now);
    }
    this.misses++;
    let pending = this.#inflight.get(id);
    if (!pending) {
      pending = this.#load(id, token);
      this.#inflight.set(id, pending);
    }
    return pending.then((entry) => this.#judge(entry, now));
  }

  /**
   * Verifies a token only when the cache knows it as the secret of an existing key (an entry
   * within its TTL, or past it and not yet evicted); undefined for anything else, without an HMAC
   * or a store lookup. A known secret is verified as `verify` does: from the cache within the TTL,
   * reloaded from the store past it (so a revoke or an expiry is seen). What authenticate() lets
   * through for an address the failure limiter has locked out: guessing cannot produce a known
   * secret, so the guesser still gets nothing but 429.
   */
  verifyKnown(token: string, now = Date.now()): VerifyResult | Promise<VerifyResult> | undefined {
    if (!isWellFormedKey(token, this.#prefix)) return undefined;
    const entry = this.#cache.peek(hash('sha256', token, 'base64url'), { allowStale: true });
    return entry?.value ? this.verify(token, now) : undefined;
  }

  /** Looks a token up in the store and caches the answer under `id`, the token's cache id. */
  async #load(id: string, token: string): Promise<Entry> {
    const generation = this.#generation;
    try {
      let match: Entry;
      try {
        match = (await this.#store.findKeyByHash(hashKey(this.#pepper, token), Date.now())) ?? null;
      } catch (error) {
        const stale = this.#staleEntry(id);
        if (stale === undefined) {
          this.#onError(error);
          throw error;
        }
        this.staleServed++;
        return stale.value;
      }
      if (generation !== this.#generation) return match;
      this.#cache.set(id, { value: match });
      if (match) {
        let set = this.#idsByKey.get(match.key.id);
        if (!set) {
          set = new Set();
          this.#idsByKey.set(match.key.id, set);
        }
        set.add(id);
      }
      return match;
    } finally {
      this.#inflight.delete(id);
    }
  }

  /** An expired entry still within the stale-if-error allowance, if any. */
  #staleEntry(id: string): { value: Entry } | undefined {
    if (this.#staleIfErrorMs <= 0) return undefined;
    const remaining = this.#cache.getRemainingTTL(id);
    if (remaining === 0 || remaining < -this.#staleIfErrorMs) return undefined;
    const entry = this.#cache.get(id, { allowStale: true });
    // Only keys known to exist: a remembered "unknown" may be a key created since.
    return entry?.value ? entry : undefined;
  }

  get cacheSize(): number {
    return this.#cache.size;
  }

  close(): void {
    this.#poll?.stop();
    this.#poll = undefined;
  }
}
