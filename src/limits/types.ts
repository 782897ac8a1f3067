/**
 * Rate limits and token budgets of API keys: the seam between the request path and whatever
 * keeps the counters (in memory now, Redis later).
 *
 * The request path calls `admit` before forwarding a request and `settle` exactly once when it is
 * over (with the real token count, or 0 if it never reached the provider):
 *
 * ```ts
 * const admission = await limiter.admit(subject, estimateTokens(body, 'chat')); // or without await when not a Promise
 * setHeaders(admission.headers);                                                 // on every response
 * if (!admission.ok) return tooManyRequests(admission.message, admission.retryAfterSeconds);
 * try { ... } finally { limiter.settle(admission.ticket, usage?.totalTokens ?? 0); }
 * ```
 *
 * What another implementation (Redis, ...) must guarantee to be a drop-in:
 * - **Atomic check-then-commit**: every limit and budget of a request is checked first and all of
 *   them are charged only if all allow it (one Lua script / transaction), so a refusal consumes
 *   nothing and N concurrent admits against a limit of L admit exactly min(N, L).
 * - **Token buckets** for rpm/tpm: capacity = the per-minute limit, refilled continuously at
 *   limit/60 per second; tpm is charged the estimate up front and corrected by `settle`
 *   (refund capped at capacity, extra charge may push the bucket below zero).
 * - **Concurrency** is a counter of admitted, unsettled tickets. A shared implementation also
 *   needs leases (slots expiring after some maximum request duration), because a process that
 *   dies never settles.
 * - **Budgets** are per UTC day and per UTC calendar month, counted per period (e.g. a counter
 *   key containing the period start), holding settled usage plus unsettled reservations, started
 *   from `store.tokensUsed` since the period start the first time a period is seen.
 * - **Tickets** carry whatever `settle` needs (ids, amounts, the periods charged); `settle` is
 *   idempotent per ticket and a settle that arrives after a period rolled over must not touch the
 *   new period (usage records are timed by the request start, so they belong to the old one).
 * - The **headers and messages** follow the formats documented on `Admission`.
 * - Limits and budgets are read from the subject on **every** admit (they may have changed).
 *
 * A shared limiter whose backend cannot be reached and that is configured to refuse rather than
 * fall back (`limits.onRedisFailure: deny`) rejects `admit` with a `LimiterUnavailableError`:
 * answer it **503** with `Retry-After: retryAfterSeconds` (the key's limits are unknown, not
 * exceeded, so 429 would be wrong). It is an error rather than a new `Admission` variant so that
 * code written against the limits above keeps compiling; unhandled, it reaches the generic error
 * path (500) like a failing store.
 */
import type { KeyLimits, Store, TokenBudget } from '../store/types.ts';

/** Whose limits apply to a request: the key's own and its workspace's budget. */
export interface LimitSubject {
  keyId: string;
  workspaceId: string;
  limits: KeyLimits;
  keyBudget: TokenBudget;
  workspaceBudget: TokenBudget;
}

export type LimitReason =
  | 'rpm'
  | 'tpm'
  | 'concurrency'
  | 'key_budget_day'
  | 'key_budget_month'
  | 'workspace_budget_day'
  | 'workspace_budget_month';

/** Proof of admission, handed back to `settle`. Opaque apart from these fields. */
export interface Ticket {
  readonly keyId: string;
  readonly workspaceId: string;
  /** The tokens reserved at admission (the `estimatedTokens` given to `admit`, as an integer ≥ 0). */
  readonly estimatedTokens: number;
  /** When it was admitted (epoch ms). */
  readonly admittedAt: number;
}

/**
 * The outcome of `admit`.
 *
 * `headers` (lower-case names) belong on the response in both cases, refused or not:
 * `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests`
 * when the key has an rpm limit, and the same three with `-tokens` when it has a tpm limit (none
 * for limits it does not have); a key with a token budget (its own or its workspace's) and no tpm
 * limit gets the `-tokens` three of the budget with the fewest tokens left instead: the budget,
 * what is left of it, and the time until its period ends (see `rateLimitHeaders`). `limit` is the per-minute limit, `remaining` what the bucket
 * holds now (after charging this request when admitted; integer, never negative), and `reset` the
 * time until the bucket is full again as whole seconds, rounded up, with an `s` suffix (`0s`,
 * `6s`, `90s`). A refusal adds `retry-after` (the same value as `retryAfterSeconds`).
 *
 * When several limits refuse, the one with the longest `retryAfterSeconds` is reported.
 */
export type Admission =
  | { ok: true; ticket: Ticket; headers: Record<string, string> }
  | {
      ok: false;
      reason: LimitReason;
      /** Human-readable, safe to show the client: names the limit or budget, its size and when it resets. */
      message: string;
      /** Integer ≥ 1: rpm/tpm until enough has refilled, concurrency 1, budgets until the period resets. */
      retryAfterSeconds: number;
      headers: Record<string, string>;
    };

export interface Limiter {
  /**
   * Checks every limit and budget of the subject and, only if all allow it, charges them all:
   * one request against rpm, `estimatedTokens` against tpm and every budget, one concurrency slot.
   * Returns a plain object when everything it needs is cached (the steady state) and a Promise
   * when budget counters must first be read from the store (first sight of a key or workspace in
   * a period); the Promise rejects if the store fails.
   */
  admit(subject: LimitSubject, estimatedTokens: number, now?: number): Admission | Promise<Admission>;
  /**
   * Ends a request: frees its concurrency slot and replaces its token estimate with the real
   * count (0 if it never reached the provider) in tpm and the budgets. The request still counts
   * against rpm. Idempotent: settling a ticket again does nothing.
   */
  settle(ticket: Ticket, actualTokens: number, now?: number): void;
  /**
   * Drops what is remembered about a key (call it when a key is revoked or deleted). Changed
   * limits or budgets need no call: `admit` reads them from the subject every time. Forgetting a
   * live key refills its buckets and re-reads its budget usage from the store; a key with
   * requests in flight is kept.
   */
  forget(keyId: string): void;
  /** Releases memory; `admit` throws afterwards. */
  close(): void;
}

export interface MemoryLimiterOptions {
  store: Pick<Store, 'tokensUsed'>;
  /** Epoch ms; `Date.now` by default. */
  clock?: () => number;
  /** Idle keys (and, separately, workspaces) remembered at most; 100 000 by default. */
  maxKeys?: number;
}

/**
 * How long a shared limiter (Redis, or the primary of `--workers`) holds a settle back, waiting for
 * an admit to go along with, before it sends it alone: under load a request then costs one call,
 * not two, and a concurrency slot or a tpm refund is released at most this much later.
 */
export const SETTLE_DELAY_MS = 2;

/**
 * Why `admit` was refused without looking at the key's limits: the shared limiter is unreachable
 * and configured to deny (`limits.onRedisFailure: deny`). Send `status` (503) with `Retry-After`.
 */
export class LimiterUnavailableError extends Error {
  readonly reason = 'limiter_unavailable';
  /** The HTTP status to answer with. */
  readonly status = 503;
  /** Integer ≥ 1. */
  readonly retryAfterSeconds: number;

  constructor(retryAfterSeconds = 1, options?: ErrorOptions) {
    super(
      'The rate limiter is temporarily unavailable, so this request cannot be admitted. Retry shortly.',
      options,
    );
    this.name = 'LimiterUnavailableError';
    this.retryAfterSeconds = Math.max(1, Math.ceil(retryAfterSeconds));
  }
}
