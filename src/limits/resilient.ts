/**
 * The limiter of a scaled-out gateway: the Redis limiter while Redis answers, and a deliberate
 * fallback while it does not (`limits.onRedisFailure`):
 *
 * - `local`: a memory limiter per instance whose limits are divided by `expectedInstances`
 *   (rounded up, at least 1; a limit of 0 stays 0), so N instances together stay near the global
 *   limit. Budgets are divided the same way: each instance's counter starts from the store's
 *   usage / N (rounded up) against the budget / N, so the instances share what is left of the
 *   budget. A fresh memory limiter is made at every outage (the store's usage is read again).
 *   Refusals name the divided limits, which is what this instance enforces.
 * - `deny`: `admit` rejects with `LimiterUnavailableError`; the gateway answers 503 with
 *   `Retry-After`.
 *
 * Failure is a Redis error, a connection that is not ready, or a Redis call slower than
 * `commandTimeoutMs` (200 ms by default; timed per call by the Redis limiter, so a batch of
 * admits and settles that times out fails each of them, and the store reads that seed budget
 * counters are not counted: a slow store delays an admit as it does in memory). From the first failure on, the instance is `degraded`:
 * admits go straight to the fallback without waiting for Redis, and Redis is probed (PING) every
 * `probeIntervalMs` and at once when the client reconnects; the first answered probe makes it
 * `ok` again. Every transition is reported to `onStateChange` and shown by `status()` (/readyz).
 *
 * Tickets stay with the limiter that issued them: a locally admitted request is settled locally,
 * a Redis ticket in Redis. A Redis settle that fails is kept (up to `maxPendingSettles`) and
 * replayed on recovery; Redis applies a settle once, so a replay of one that did arrive is
 * harmless. An admit that timed out but was carried out by Redis later is settled with 0 at once
 * (its lease and reservations freed; its rpm charge stays). What this cannot give back: usage
 * admitted locally during an outage is not added to the Redis budget counters (it is in the
 * store, so counters of periods seeded after the outage include it).
 */
import type { Redis } from 'ioredis';
import type { Store } from '../store/types.ts';
import { Background, type PeriodicTask } from '../util/background.ts';
import { createMemoryLimiter } from './memory.ts';
import { RedisLimiter, RedisLimiterError, RedisTimeoutError } from './redis.ts';
import {
  type Admission,
  type Limiter,
  LimiterUnavailableError,
  type LimitSubject,
  type Ticket,
} from './types.ts';

export type LimiterState = 'ok' | 'degraded';

export interface ResilientLimiterOptions {
  /** The Redis client (`createRedisClient`); listened to, not closed by `close`. */
  redis: Redis;
  store: Pick<Store, 'tokensUsed'>;
  /** What to do while Redis cannot be used. */
  onRedisFailure: 'local' | 'deny';
  /** Instances sharing the limits, dividing them in the `local` fallback; 1 by default. */
  expectedInstances?: number;
  /** A Redis call slower than this is a failure; 200 ms by default. */
  commandTimeoutMs?: number;
  /** How often a degraded limiter checks whether Redis is back; 1000 ms by default. */
  probeIntervalMs?: number;
  /** Key prefix in Redis; `keygate:` by default. */
  prefix?: string;
  /** Concurrency lease of the Redis limiter; 130 s by default. */
  leaseMs?: number;
  /** For tests: epoch ms given to both limiters (see `RedisLimiterOptions.clock`). */
  clock?: () => number;
  /** Called on every transition, with the failure that caused a degradation. */
  onStateChange?: (state: LimiterState, error?: unknown) => void;
  /** Failures that change no state (a failed settle or forget). */
  onError?: (error: unknown) => void;
  /** Failed Redis settles kept for replay; 10 000 by default. */
  maxPendingSettles?: number;
  /** Supervises the probe and the client's listeners (one of its own, which logs nothing, by default). */
  background?: Background;
}

/** The background task that checks whether Redis is back (util/background.ts). */
export const REDIS_PROBE_TASK = 'redis_probe';

/** Rejects after `ms` unless `promise` settles first. */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new RedisTimeoutError(ms)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

function divide(value: number | null, by: number): number | null {
  if (value === null || value <= 0 || by <= 1) return value;
  return Math.max(1, Math.ceil(value / by));
}

export class ResilientLimiter implements Limiter {
  readonly #client: Redis;
  readonly #redis: RedisLimiter;
  readonly #store: ResilientLimiterOptions['store'];
  readonly #mode: 'local' | 'deny';
  readonly #instances: number;
  readonly #timeoutMs: number;
  readonly #probeMs: number;
  readonly #clock: (() => number) | undefined;
  readonly #onStateChange: (state: LimiterState, error?: unknown) => void;
  readonly #onError: (error: unknown) => void;
  readonly #maxPending: number;
  /** The memory limiter of each ticket admitted locally. */
  readonly #localOwner = new WeakMap<Ticket, Limiter>();
  readonly #pending: { ticket: Ticket; tokens: number }[] = [];
  readonly #background: Background;
  readonly #onReady: () => void;
  readonly #onClientError = (): void => {};
  readonly #onClose: () => void;
  #state: LimiterState = 'ok';
  #local: Limiter | null = null;
  #prober: PeriodicTask | undefined;
  #probing = false;
  #closed = false;

  constructor(options: ResilientLimiterOptions) {
    this.#client = options.redis;
    this.#store = options.store;
    this.#mode = options.onRedisFailure;
    this.#instances = Math.max(1, Math.floor(options.expectedInstances ?? 1));
    this.#timeoutMs = Math.max(1, options.commandTimeoutMs ?? 200);
    this.#probeMs = Math.max(10, options.probeIntervalMs ?? 1000);
    this.#clock = options.clock;
    this.#onStateChange = options.onStateChange ?? (() => {});
    this.#onError = options.onError ?? (() => {});
    this.#maxPending = Math.max(0, options.maxPendingSettles ?? 10_000);
    this.#background = options.background ?? new Background();
    this.#onReady = this.#background.guard(REDIS_PROBE_TASK, () => this.#probe());
    this.#onClose = this.#background.guard(REDIS_PROBE_TASK, () =>
      this.#degrade(new RedisLimiterError('the connection to Redis was lost')),
    );
    this.#redis = new RedisLimiter({
      redis: options.redis,
      store: options.store,
      ...(options.prefix !== undefined ? { prefix: options.prefix } : {}),
      ...(options.leaseMs !== undefined ? { leaseMs: options.leaseMs } : {}),
      ...(options.clock !== undefined ? { clock: options.clock } : {}),
      timeoutMs: this.#timeoutMs,
      // An admit that timed out but was carried out by Redis later: released at once.
      onLateAdmission: (ticket) => this.#settleRedis(ticket, 0),
      onError: this.#onError,
    });
    this.#client.on('ready', this.#onReady);
    this.#client.on('close', this.#onClose);
    this.#client.on('error', this.#onClientError);
    if (this.#client.status !== 'ready') {
      this.#degrade(new RedisLimiterError(`Redis is not connected (${this.#client.status})`));
    }
  }

  /** `ok` while Redis keeps the limits, `degraded` while the fallback does (for /readyz). */
  status(): LimiterState {
    return this.#state;
  }

  admit(subject: LimitSubject, estimatedTokens: number, now?: number): Admission | Promise<Admission> {
    if (this.#closed) throw new Error('the limiter is closed');
    if (this.#state === 'ok' && this.#client.status !== 'ready') {
      this.#degrade(new RedisLimiterError(`Redis is not connected (${this.#client.status})`));
    }
    if (this.#state === 'degraded') return this.#fallback(subject, estimatedTokens, now);
    const admission = this.#redis.admit(subject, estimatedTokens, now);
    if (!(admission instanceof Promise)) return admission; // a key Redis need not be asked about
    return admission.catch((error: unknown) => {
      if (!(error instanceof RedisLimiterError)) throw error; // the store failed, not Redis
      this.#degrade(error);
      return this.#fallback(subject, estimatedTokens, now);
    });
  }

  settle(ticket: Ticket, actualTokens: number, now?: number): void {
    if (this.#redis.owns(ticket)) {
      this.#settleRedis(ticket, actualTokens, now);
      return;
    }
    const local = this.#localOwner.get(ticket);
    if (local === undefined) throw new TypeError('settle() was given a ticket this limiter did not issue');
    local.settle(ticket, actualTokens, now);
  }

  forget(keyId: string): void {
    this.#local?.forget(keyId);
    if (this.#state === 'ok') this.#redis.forget(keyId);
  }

  close(): void {
    this.#closed = true;
    this.#prober?.stop();
    this.#prober = undefined;
    this.#client.off('ready', this.#onReady);
    this.#client.off('close', this.#onClose);
    this.#client.off('error', this.#onClientError);
    this.#redis.close();
    this.#local?.close();
    this.#local = null;
  }

  #fallback(subject: LimitSubject, estimatedTokens: number, now?: number): Admission | Promise<Admission> {
    if (this.#mode === 'deny') {
      return Promise.reject(new LimiterUnavailableError(Math.ceil(this.#probeMs / 1000)));
    }
    const local = this.#localLimiter();
    const n = this.#instances;
    const scaled: LimitSubject = {
      keyId: subject.keyId,
      workspaceId: subject.workspaceId,
      limits: {
        rpm: divide(subject.limits.rpm, n),
        tpm: divide(subject.limits.tpm, n),
        concurrency: divide(subject.limits.concurrency, n),
      },
      keyBudget: { day: divide(subject.keyBudget.day, n), month: divide(subject.keyBudget.month, n) },
      workspaceBudget: {
        day: divide(subject.workspaceBudget.day, n),
        month: divide(subject.workspaceBudget.month, n),
      },
    };
    const remember = (admission: Admission): Admission => {
      if (admission.ok) this.#localOwner.set(admission.ticket, local);
      return admission;
    };
    const admission = local.admit(scaled, estimatedTokens, now);
    return admission instanceof Promise ? admission.then(remember) : remember(admission);
  }

  #localLimiter(): Limiter {
    if (this.#local === null) {
      const n = this.#instances;
      const store = this.#store;
      this.#local = createMemoryLimiter({
        // Each instance gets 1/n of what is left: usage and budget are both divided by n.
        store: {
          tokensUsed: async (filter) => Math.ceil((await store.tokensUsed(filter)) / n),
        },
        ...(this.#clock !== undefined ? { clock: this.#clock } : {}),
      });
    }
    return this.#local;
  }

  #settleRedis(ticket: Ticket, tokens: number, now?: number): void {
    this.#redis.settleAsync(ticket, tokens, now).catch((error: unknown) => {
      // Kept for the replay on recovery (Redis applies a settle once, so a replay is safe).
      if (this.#pending.length < this.#maxPending) this.#pending.push({ ticket, tokens });
      else this.#onError(error);
      this.#degrade(error);
    });
  }

  #degrade(error: unknown): void {
    if (this.#closed || this.#state === 'degraded') return;
    this.#state = 'degraded';
    // A new outage starts from the store's usage again, not from a previous outage's counters.
    // The previous memory limiter lives on in its tickets until they are settled.
    this.#local = null;
    // Still down is not a failure of the probe (the state says so); a probe that throws is.
    this.#prober = this.#background.every(REDIS_PROBE_TASK, this.#probeMs, () => this.#probe(), {
      retry: { initialMs: this.#probeMs, maxMs: Math.max(this.#probeMs, 10_000) },
    });
    this.#onStateChange('degraded', error);
  }

  async #probe(): Promise<void> {
    if (this.#closed || this.#state === 'ok' || this.#probing) return;
    if (this.#client.status !== 'ready') return;
    this.#probing = true;
    let answered = false;
    try {
      await within(this.#client.ping(), this.#timeoutMs);
      answered = true;
    } catch {
      // Still down: the next probe tries again.
    } finally {
      this.#probing = false;
    }
    if (answered) this.#recover();
  }

  #recover(): void {
    if (this.#closed || this.#state === 'ok') return;
    this.#state = 'ok';
    this.#prober?.stop();
    this.#prober = undefined;
    this.#onStateChange('ok');
    for (const { ticket, tokens } of this.#pending.splice(0)) this.#settleRedis(ticket, tokens);
  }
}

/** The limiter to use when Redis is configured (see the top of this file). */
export function createResilientLimiter(options: ResilientLimiterOptions): ResilientLimiter {
  return new ResilientLimiter(options);
}
