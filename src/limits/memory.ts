/**
 * The in-memory limiter: exact within one process (admission is a synchronous check-then-commit
 * on the event loop), nothing shared between processes — with N gateway processes each allows
 * the full limits, so a shared implementation (Redis) is needed to scale out.
 *
 * Memory: key states (buckets, in-flight count, budget counters) and workspace states (budget
 * counters) live in two LRU caches of `maxKeys` idle entries each. An entry with requests in
 * flight, unsettled reservations or a pending store read is never dropped (see `PinnedCache`), so
 * eviction cannot reset a limit that is in use. The trade-off: an idle key that is evicted starts
 * over with full buckets and re-reads its budget usage from the store, which misses the usage
 * still waiting in the usage queue (at most one flush interval's worth). Eviction needs `maxKeys`
 * other keys used since, so in practice it hits keys idle long enough for their buckets to be
 * (nearly) full anyway.
 *
 * Budget counters hold settled usage plus the reservations of unsettled requests. A counter is
 * created (from `store.tokensUsed` since the period start) when a budget applies and the period
 * has none yet, and from then on counts every request of that key or workspace in the period,
 * whether a budget is configured or not, so it stays right if a budget is removed and set again.
 * A counter misses requests that were in flight (or not yet flushed to the store) when it was
 * read — in practice only when a budget is newly set, since every request is counted once a
 * period's counter exists.
 */
import type { TokenBudget } from '../store/types.ts';
import { PinnedCache } from './cache.ts';
import { type Periods, utcPeriods } from './period.ts';
import type { Admission, Limiter, LimitReason, LimitSubject, MemoryLimiterOptions, Ticket } from './types.ts';

/**
 * Bucket levels are kept in 1/60 000 of a request or token, so refilling at `limit` per minute
 * adds exactly `limit` units per millisecond: integer arithmetic, no drift.
 */
export const SCALE = 60_000;
const DEFAULT_MAX_KEYS = 100_000;
/** `retryAfterSeconds` for a limit of 0, which never lets anything through. */
export const BLOCKED_RETRY_SECONDS = 60;

const REQUEST_HEADERS = [
  'x-ratelimit-limit-requests',
  'x-ratelimit-remaining-requests',
  'x-ratelimit-reset-requests',
] as const;
const TOKEN_HEADERS = [
  'x-ratelimit-limit-tokens',
  'x-ratelimit-remaining-tokens',
  'x-ratelimit-reset-tokens',
] as const;

interface Bucket {
  /** Per minute. */
  limit: number;
  /** In 1/SCALE units; capacity is `limit * SCALE`; below zero after an overdraft. */
  level: number;
  /** When `level` was last refilled. */
  at: number;
}

interface Counter {
  start: number;
  end: number;
  /** Settled tokens plus unsettled reservations. */
  used: number;
}

interface BudgetHolder {
  readonly id: string;
  /** Open tickets plus a pending store read: while > 0 the entry is never evicted. */
  pins: number;
  day: Counter | null;
  month: Counter | null;
  /** The store read in progress; every admit waits for it. */
  seeding: Promise<void> | null;
}

interface KeyState extends BudgetHolder {
  inFlight: number;
  rpm: Bucket | null;
  tpm: Bucket | null;
}

function holder(id: string): BudgetHolder {
  return { id, pins: 0, day: null, month: null, seeding: null };
}

/** A token count from outside: a non-negative integer, 0 for anything else. */
export function tokens(value: number): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? Math.ceil(value) : 0;
}

function refill(bucket: Bucket, now: number): void {
  if (now <= bucket.at) return; // a clock going backwards refills nothing
  const capacity = bucket.limit * SCALE;
  if (bucket.level < capacity)
    bucket.level = Math.min(capacity, bucket.level + (now - bucket.at) * bucket.limit);
  bucket.at = now;
}

/** The bucket for the current limit: created full, refilled, clamped to a lowered capacity. */
function syncBucket(bucket: Bucket | null, limit: number | null, now: number): Bucket | null {
  if (limit === null) return null;
  const perMinute = Math.max(0, limit);
  if (bucket === null) return { limit: perMinute, level: perMinute * SCALE, at: now };
  refill(bucket, now);
  if (bucket.limit !== perMinute) {
    bucket.limit = perMinute;
    bucket.level = Math.min(bucket.level, perMinute * SCALE);
  }
  return bucket;
}

/**
 * Milliseconds until the bucket can take `cost` (0: now). A cost above the capacity needs a full
 * bucket and overdraws it, so a request bigger than a whole minute's tokens is slow, not refused
 * for ever. Infinity for a limit of 0.
 */
function bucketWait(bucket: Bucket, cost: number): number {
  if (bucket.limit <= 0) return Number.POSITIVE_INFINITY;
  const need = Math.min(cost, bucket.limit) * SCALE;
  return bucket.level >= need ? 0 : (need - bucket.level) / bucket.limit;
}

/** `retryAfterSeconds` for a wait in ms (Infinity: a limit of 0). */
export function waitSeconds(ms: number): number {
  return ms === Number.POSITIVE_INFINITY ? BLOCKED_RETRY_SECONDS : Math.max(1, Math.ceil(ms / 1000));
}

function overBudget(counter: Counter | null, budget: number | null, estimate: number): boolean {
  return budget !== null && counter !== null && (counter.used >= budget || counter.used + estimate > budget);
}

/** What the rate-limit headers show of a bucket: its per-minute limit and level (1/SCALE units). */
export interface BucketView {
  limit: number;
  level: number;
}

function bucketHeaders(
  headers: Record<string, string>,
  bucket: BucketView,
  names: readonly [string, string, string],
): void {
  const untilFull = bucket.limit > 0 ? (bucket.limit * SCALE - bucket.level) / bucket.limit : 0;
  headers[names[0]] = String(bucket.limit);
  headers[names[1]] = String(Math.max(0, Math.floor(bucket.level / SCALE)));
  headers[names[2]] = `${Math.max(0, Math.ceil(untilFull / 1000))}s`;
}

/** What the token headers show of a budget: its size, what is used or reserved, its period's end (epoch ms). */
export interface BudgetView {
  limit: number;
  used: number;
  end: number;
}

/**
 * Of the budgets that apply (`[budget, used or reserved, period end]`, a null budget or counter
 * for none), the one with the fewest tokens left, or null when none applies.
 */
export function tightestBudget(
  budgets: readonly (readonly [number | null, number | null, number])[],
): BudgetView | null {
  let tightest: BudgetView | null = null;
  for (const [limit, used, end] of budgets) {
    if (limit === null || used === null) continue;
    if (tightest === null || limit - used < tightest.limit - tightest.used) tightest = { limit, used, end };
  }
  return tightest;
}

/**
 * The `x-ratelimit-*` headers of the limits a key has (see `Admission`). A key with a token budget
 * and no tpm limit gets the tokens trio of its budget with the fewest tokens left: the budget, what
 * is left of it, and the time until its period ends.
 */
export function rateLimitHeaders(
  rpm: BucketView | null,
  tpm: BucketView | null,
  budget: BudgetView | null = null,
  now = Date.now(),
): Record<string, string> {
  const headers: Record<string, string> = {};
  if (rpm !== null) bucketHeaders(headers, rpm, REQUEST_HEADERS);
  if (tpm !== null) bucketHeaders(headers, tpm, TOKEN_HEADERS);
  else if (budget !== null) {
    headers[TOKEN_HEADERS[0]] = String(budget.limit);
    headers[TOKEN_HEADERS[1]] = String(Math.max(0, Math.floor(budget.limit - budget.used)));
    headers[TOKEN_HEADERS[2]] = `${Math.max(0, Math.ceil((budget.end - now) / 1000))}s`;
  }
  return headers;
}

function headersOf(
  key: KeyState,
  subject: LimitSubject,
  workspace: BudgetHolder | null,
  now: number,
): Record<string, string> {
  const budget =
    key.tpm === null
      ? tightestBudget([
          [subject.keyBudget.day, key.day?.used ?? null, key.day?.end ?? 0],
          [subject.keyBudget.month, key.month?.used ?? null, key.month?.end ?? 0],
          [subject.workspaceBudget.day, workspace?.day?.used ?? null, workspace?.day?.end ?? 0],
          [subject.workspaceBudget.month, workspace?.month?.used ?? null, workspace?.month?.end ?? 0],
        ])
      : null;
  return rateLimitHeaders(key.rpm, key.tpm, budget, now);
}

const BUDGETS: Record<
  'key_budget_day' | 'key_budget_month' | 'workspace_budget_day' | 'workspace_budget_month',
  { whose: string; period: 'day' | 'month'; adjective: string }
> = {
  key_budget_day: { whose: "this key's", period: 'day', adjective: 'daily' },
  key_budget_month: { whose: "this key's", period: 'month', adjective: 'monthly' },
  workspace_budget_day: { whose: "the workspace's", period: 'day', adjective: 'daily' },
  workspace_budget_month: { whose: "the workspace's", period: 'month', adjective: 'monthly' },
};

/**
 * The refusal message of `reason` (see `Admission.message`). `counter` is the refused budget's
 * counter (used or reserved before this request, and the end of its period); null for rpm, tpm
 * and concurrency.
 */
export function refusalMessage(
  reason: LimitReason,
  subject: LimitSubject,
  estimate: number,
  retry: number,
  counter: { used: number; end: number } | null,
): string {
  switch (reason) {
    case 'rpm': {
      const rpm = subject.limits.rpm;
      return `Rate limit exceeded: this key allows ${rpm} request${rpm === 1 ? '' : 's'} per minute. Retry in ${retry}s.`;
    }
    case 'tpm':
      return `Rate limit exceeded: this key allows ${subject.limits.tpm} tokens per minute and this request needs about ${estimate}. Retry in ${retry}s.`;
    case 'concurrency':
      return `Too many concurrent requests: this key allows ${subject.limits.concurrency} at a time.`;
    default: {
      const { whose, period, adjective } = BUDGETS[reason];
      const isKey = reason === 'key_budget_day' || reason === 'key_budget_month';
      const budget = isKey ? subject.keyBudget : subject.workspaceBudget;
      const used = counter?.used ?? 0;
      const resets = new Date(counter?.end ?? 0).toISOString();
      return `Token budget exceeded: ${whose} ${adjective} budget is ${budget[period]} tokens, ${used} are used or reserved and this request needs about ${estimate}. It resets at ${resets}.`;
    }
  }
}

/** The budget counter a refusal names (null for rpm, tpm and concurrency). */
function refusedCounter(reason: LimitReason, key: KeyState, workspace: BudgetHolder | null): Counter | null {
  if (reason === 'rpm' || reason === 'tpm' || reason === 'concurrency') return null;
  const { period } = BUDGETS[reason];
  const isKey = reason === 'key_budget_day' || reason === 'key_budget_month';
  return (isKey ? key : workspace)?.[period] ?? null;
}

class MemoryTicket implements Ticket {
  readonly keyId: string;
  readonly workspaceId: string;
  readonly estimatedTokens: number;
  readonly admittedAt: number;
  readonly owner: MemoryLimiter;
  readonly key: KeyState;
  readonly workspace: BudgetHolder | null;
  /** The tpm bucket charged (null: no tpm limit). */
  readonly tpm: Bucket | null;
  /** The budget counters charged. */
  readonly counters: Counter[];
  settled = false;

  constructor(
    owner: MemoryLimiter,
    subject: LimitSubject,
    estimate: number,
    now: number,
    key: KeyState,
    workspace: BudgetHolder | null,
    counters: Counter[],
  ) {
    this.keyId = subject.keyId;
    this.workspaceId = subject.workspaceId;
    this.estimatedTokens = estimate;
    this.admittedAt = now;
    this.owner = owner;
    this.key = key;
    this.workspace = workspace;
    this.tpm = key.tpm;
    this.counters = counters;
  }
}

class MemoryLimiter implements Limiter {
  readonly #store: MemoryLimiterOptions['store'];
  readonly #clock: () => number;
  readonly #keys: PinnedCache<KeyState>;
  readonly #workspaces: PinnedCache<BudgetHolder>;
  #periods: Periods = utcPeriods(0);
  #closed = false;

  constructor(options: MemoryLimiterOptions) {
    this.#store = options.store;
    this.#clock = options.clock ?? Date.now;
    const max = Math.max(1, options.maxKeys ?? DEFAULT_MAX_KEYS);
    this.#keys = new PinnedCache(max);
    // Workspaces are far fewer than keys.
    this.#workspaces = new PinnedCache(Math.min(max, 10_000));
  }

  admit(subject: LimitSubject, estimatedTokens: number, now?: number): Admission | Promise<Admission> {
    const attempt = this.#attempt(subject, tokens(estimatedTokens), now ?? this.#clock());
    return attempt instanceof Promise
      ? attempt.then(() => this.admit(subject, estimatedTokens, now))
      : attempt;
  }

  settle(ticket: Ticket, actualTokens: number, now?: number): void {
    if (!(ticket instanceof MemoryTicket) || ticket.owner !== this) {
      throw new TypeError('settle() was given a ticket this limiter did not issue');
    }
    if (ticket.settled) return;
    ticket.settled = true;
    const delta = tokens(actualTokens) - ticket.estimatedTokens;
    if (delta !== 0) {
      const bucket = ticket.tpm;
      if (bucket !== null) {
        refill(bucket, now ?? this.#clock());
        bucket.level = Math.min(bucket.limit * SCALE, bucket.level - delta * SCALE);
      }
      // Counters of a period that has rolled over are no longer referenced: usage records are
      // timed at the request start, so the correction belongs to the old period and is dropped.
      for (const counter of ticket.counters) counter.used = Math.max(0, counter.used + delta);
    }
    const key = ticket.key;
    key.inFlight--;
    if (--key.pins === 0) this.#keys.unpinned(key.id, key);
    const workspace = ticket.workspace;
    if (workspace !== null && --workspace.pins === 0) this.#workspaces.unpinned(workspace.id, workspace);
  }

  forget(keyId: string): void {
    this.#keys.deleteIdle(keyId);
  }

  close(): void {
    this.#closed = true;
    this.#keys.clear();
    this.#workspaces.clear();
  }

  /** An admission, or the store reads to wait for before trying again. */
  #attempt(subject: LimitSubject, estimate: number, now: number): Admission | Promise<unknown> {
    if (this.#closed) throw new Error('the limiter is closed');
    const periods = this.#periodsAt(now);
    let key = this.#keys.get(subject.keyId);
    if (key === undefined) {
      key = { ...holder(subject.keyId), inFlight: 0, rpm: null, tpm: null };
      this.#keys.set(subject.keyId, key);
    }
    const workspaceBudget = subject.workspaceBudget;
    let workspace = this.#workspaces.get(subject.workspaceId) ?? null;
    if (workspace === null && (workspaceBudget.day !== null || workspaceBudget.month !== null)) {
      workspace = holder(subject.workspaceId);
      this.#workspaces.set(subject.workspaceId, workspace);
    }

    // Budget counters first: they may have to be read from the store.
    const keyRead = this.#counters(this.#keys, key, { keyId: key.id }, subject.keyBudget, periods);
    const workspaceRead =
      workspace === null
        ? null
        : this.#counters(
            this.#workspaces,
            workspace,
            { workspaceId: workspace.id },
            workspaceBudget,
            periods,
          );
    if (keyRead !== null || workspaceRead !== null) return Promise.all([keyRead, workspaceRead]);

    const limits = subject.limits;
    key.rpm = syncBucket(key.rpm, limits.rpm, now);
    key.tpm = syncBucket(key.tpm, limits.tpm, now);

    // Check everything; report the refusal that lasts longest.
    let reason: LimitReason | null = null;
    let retry = 0;
    const budgetChecks = [
      ['key_budget_month', key.month, subject.keyBudget.month],
      ['workspace_budget_month', workspace?.month ?? null, workspaceBudget.month],
      ['key_budget_day', key.day, subject.keyBudget.day],
      ['workspace_budget_day', workspace?.day ?? null, workspaceBudget.day],
    ] as const;
    for (const [name, counter, budget] of budgetChecks) {
      if (counter !== null && overBudget(counter, budget, estimate)) {
        const seconds = waitSeconds(counter.end - now);
        if (seconds > retry) {
          reason = name;
          retry = seconds;
        }
      }
    }
    if (key.tpm !== null) {
      const wait = bucketWait(key.tpm, estimate);
      if (wait > 0 && waitSeconds(wait) > retry) {
        reason = 'tpm';
        retry = waitSeconds(wait);
      }
    }
    if (key.rpm !== null) {
      const wait = bucketWait(key.rpm, 1);
      if (wait > 0 && waitSeconds(wait) > retry) {
        reason = 'rpm';
        retry = waitSeconds(wait);
      }
    }
    if (limits.concurrency !== null && key.inFlight >= limits.concurrency && retry < 1) {
      reason = 'concurrency';
      retry = 1;
    }

    if (reason !== null) {
      const headers = headersOf(key, subject, workspace, now);
      headers['retry-after'] = String(retry);
      return {
        ok: false,
        reason,
        message: refusalMessage(reason, subject, estimate, retry, refusedCounter(reason, key, workspace)),
        retryAfterSeconds: retry,
        headers,
      };
    }

    // Commit everything.
    if (key.rpm !== null) key.rpm.level -= SCALE;
    if (key.tpm !== null) key.tpm.level -= estimate * SCALE;
    key.inFlight++;
    key.pins++;
    const counters: Counter[] = [];
    for (const counter of [key.day, key.month, workspace?.day ?? null, workspace?.month ?? null]) {
      if (counter !== null) {
        counter.used += estimate;
        counters.push(counter);
      }
    }
    if (workspace !== null) workspace.pins++;
    const ticket = new MemoryTicket(this, subject, estimate, now, key, workspace, counters);
    return { ok: true, ticket, headers: headersOf(key, subject, workspace, now) };
  }

  /**
   * Brings a holder's budget counters to the current period: drops those of past periods and
   * returns the store read to wait for when a configured budget has no counter yet (or one is
   * already in progress), else null.
   */
  #counters<H extends BudgetHolder>(
    cache: PinnedCache<H>,
    holder: H,
    filter: { keyId: string } | { workspaceId: string },
    budget: TokenBudget,
    periods: Periods,
  ): Promise<void> | null {
    if (holder.seeding !== null) return holder.seeding;
    if (holder.day !== null && holder.day.start !== periods.dayStart) holder.day = null;
    if (holder.month !== null && holder.month.start !== periods.monthStart) holder.month = null;
    const readDay = budget.day !== null && holder.day === null;
    const readMonth = budget.month !== null && holder.month === null;
    if (!readDay && !readMonth) return null;
    holder.pins++;
    const seeding = Promise.all([
      readDay ? this.#store.tokensUsed({ ...filter, since: periods.dayStart }) : undefined,
      readMonth ? this.#store.tokensUsed({ ...filter, since: periods.monthStart }) : undefined,
    ])
      .then(([day, month]) => {
        if (day !== undefined && holder.day === null) {
          holder.day = { start: periods.dayStart, end: periods.dayEnd, used: tokens(day) };
        }
        if (month !== undefined && holder.month === null) {
          holder.month = { start: periods.monthStart, end: periods.monthEnd, used: tokens(month) };
        }
      })
      .finally(() => {
        holder.seeding = null;
        if (--holder.pins === 0) cache.unpinned(holder.id, holder);
      });
    holder.seeding = seeding;
    return seeding;
  }

  #periodsAt(now: number): Periods {
    const periods = this.#periods;
    if (now >= periods.dayStart && now < periods.dayEnd) return periods;
    this.#periods = utcPeriods(now);
    return this.#periods;
  }
}

/** The in-memory `Limiter` (one process; see the top of this file). */
export function createMemoryLimiter(options: MemoryLimiterOptions): Limiter {
  return new MemoryLimiter(options);
}
