/**
 * The Redis limiter: the same limits as the memory limiter (`memory.ts`), kept in one Redis so
 * that any number of gateway instances enforce them together. It fulfils the drop-in contract at
 * the top of `types.ts`:
 *
 * - **Atomic admits**: a Lua script refills and checks the rpm/tpm buckets, counts the
 *   concurrency leases, checks the four budgets, and charges all of them only if all allow it.
 *   Redis runs a script alone, so N concurrent admits from any number of instances against a
 *   limit of L admit exactly min(N, L). The only extra round trips are the store reads that start
 *   a budget period (below).
 * - **Settles**: correct tpm and the budget counters charged at admission by actual − estimate
 *   and free the concurrency lease. Idempotent per ticket (a marker key set at admission is
 *   deleted by the first settle; without it a settle does nothing), so a settle replayed after a
 *   lost reply cannot count twice. A settle touches only the counters named in the ticket, so a
 *   period that rolled over meanwhile is never touched.
 * - **Batched, in order**: the admits, settles and forgets an instance makes in one turn of the
 *   event loop go to Redis together, as one EVALSHA of one script (`BATCH`) at `setImmediate`
 *   (at most `maxBatch` per call). The script carries them out one after the other in the order
 *   they were made, each exactly as it would be alone, and answers each; so a batch changes
 *   neither the decisions nor their exactness, only the number of round trips (one per batch
 *   instead of one per operation) and the CPU of writing and parsing them. A batch that fails or
 *   times out fails each of its operations (see `resilient.ts`). A lone request waits for
 *   nothing: the batch leaves as soon as the I/O callbacks of its turn have run. The script is
 *   loaded (SCRIPT LOAD) at construction and on every reconnection, so no request pays for
 *   sending and compiling it. Settles do not send a batch by themselves: they go with the next
 *   admit's batch, or alone after 2 ms, so under load a request costs one Redis call, not two
 *   (a concurrency slot or a tpm refund is released up to 2 ms later; nothing is counted twice
 *   or lost).
 * - **Keys with nothing to enforce**: a key with no rpm, tpm or concurrency limit and no budget
 *   (neither its own nor its workspace's) is admitted at once without Redis (nothing could refuse
 *   it). Its settle adds the actual tokens to those of its key's and workspace's counters of the
 *   current day and month that exist (left by a budget set earlier in the period), so they still
 *   count every request; a settle of 0 tokens sends nothing. That settle is counted once: it is
 *   not retried if Redis fails.
 * - **Concurrency as expiring leases**: a sorted set per key of ticket ids scored by expiry
 *   (admission time + `leaseMs`). The admit script drops the expired ones before counting, so a
 *   dead instance's requests free their slots after at most `leaseMs` (default: the upstream
 *   timeout, 120 s, plus 10 s).
 * - **Budgets**: one counter per key or workspace and period, its name holding the period start
 *   (`kd:<dayStart>:<keyId>`), expiring an hour after the period ends. When a configured budget
 *   has no counter for the current period yet, the script charges nothing and names the missing
 *   counters; the limiter reads `store.tokensUsed` since the period start, creates the counter
 *   with `SET NX` (so concurrent instances seed it once and nobody overwrites a counter in use),
 *   and runs the admit again. Reads are shared within an instance. As in memory, a counter that
 *   exists counts every request of its key or workspace, budget or not.
 *
 * **Clock**: the scripts read Redis's own clock (`TIME`), so every instance refills buckets,
 *   expires leases and cuts budget periods by one clock, whatever the skew between the gateway
 *   hosts (a host ahead by a minute would otherwise refill a whole minute early and expire the
 *   other instances' leases early). UTC days and months are computed in the script. A `now`
 *   given to `admit`/`settle`, or a `clock` option, replaces Redis's clock for that call (tests);
 *   mix the two on one prefix and the buckets see time jump. TTLs are always relative durations,
 *   so a fake clock in the past or the future does not expire anything early.
 *
 * Keys, all under `prefix` (`keygate:` by default): `kb:<keyId>` (hash: the buckets, expiring
 * when they would be full again), `kl:<keyId>` (leases), `kd:<dayStart>:<keyId>`,
 * `km:<monthStart>:<keyId>`, `wd:<dayStart>:<workspaceId>`, `wm:<monthStart>:<workspaceId>`
 * (budget counters), `t:<ticketId>` (open tickets, one day at most). The ids come last so no id
 * can make one key look like another. Scripts build these names from their arguments, so the
 * limiter needs a standalone Redis (or one behind Sentinel), not Redis Cluster.
 *
 * Failures: a Redis error or a lost connection rejects `admit` with `RedisLimiterError` (see
 * `resilient.ts` for the fallback), and so every operation of the batch it was in; a failing
 * store read rejects it with the store's error, as in memory. `settle` and `forget` report
 * failures to `onError`; `settleAsync` lets a caller retry. Redis does not roll a script back:
 * should a batch's script fail half-way (it does not on valid input), the operations before the
 * failure stay applied although every one is reported failed; like an admit whose answer was
 * lost, their leases expire after `leaseMs`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import type { Store, TokenFilter } from '../store/types.ts';
import {
  BLOCKED_RETRY_SECONDS,
  type BudgetView,
  rateLimitHeaders,
  refusalMessage,
  SCALE,
  tightestBudget,
  tokens,
} from './memory.ts';
import {
  type Admission,
  type Limiter,
  type LimitReason,
  type LimitSubject,
  SETTLE_DELAY_MS,
  type Ticket,
} from './types.ts';

export const DEFAULT_PREFIX = 'keygate:';
/** The default upstream timeout (120 s) plus a margin for the response to be written. */
export const DEFAULT_LEASE_MS = 130_000;
/** How long an open ticket can still be settled. */
const TICKET_TTL_MS = 86_400_000;
/** Budget counters live this long past the end of their period. */
const COUNTER_MARGIN_MS = 3_600_000;
/** Admit attempts (each may first seed budget counters) before giving up. */
const MAX_ATTEMPTS = 5;
/** Operations in one batch at most: bounds how long one script call keeps Redis busy. */
const DEFAULT_MAX_BATCH = 100;

export interface RedisLimiterOptions {
  /** The client to use (not closed by `close`); `createRedisClient` makes a suitable one. */
  redis: Redis;
  store: Pick<Store, 'tokensUsed'>;
  /** Prefix of every key; `keygate:` by default. */
  prefix?: string;
  /** How long a concurrency slot is held by a request that is never settled; 130 s by default. */
  leaseMs?: number;
  /** Epoch ms used when `admit`/`settle` get no `now`; Redis's own clock (`TIME`) by default. */
  clock?: () => number;
  /** Failures of `settle` and `forget`, which answer nothing. */
  onError?: (error: unknown) => void;
  /** Budget counters remembered as seeded (saves store reads); 10 000 by default. */
  maxSeeded?: number;
  /** Admits and settles sent to Redis in one script call at most; 100 by default. */
  maxBatch?: number;
  /**
   * A Redis call slower than this fails with `RedisTimeoutError` (every operation of its batch);
   * none by default. Store reads are not Redis calls: they are not timed.
   */
  timeoutMs?: number;
  /**
   * An admit that failed by timeout but that Redis carried out and admitted later: its ticket, to
   * release (nobody else will). By default it is settled with 0 (lease and reservations freed;
   * its rpm charge stays), failures going to `onError`.
   */
  onLateAdmission?: (ticket: Ticket) => void;
}

/** A Redis call failed or the connection is down: the limiter could not decide. */
export class RedisLimiterError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'RedisLimiterError';
  }
}

/** Redis did not answer within `timeoutMs`. */
export class RedisTimeoutError extends RedisLimiterError {
  constructor(ms: number) {
    super(`Redis did not answer within ${ms} ms`);
    this.name = 'RedisTimeoutError';
  }
}

/**
 * A client suited to the limiter: commands fail at once while disconnected instead of queueing
 * (so a fallback can answer without waiting), a command the connection lost is never replayed
 * (an admit the server ran would be charged twice), and reconnection is retried at least every
 * second for ever. Listen for its `error` events (the resilient limiter does).
 */
export function createRedisClient(url: string, connectionName = 'keygate'): Redis {
  return new Redis(url, {
    connectionName,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    retryStrategy: (times) => Math.min(100 * times, 1000),
    connectTimeout: 2000,
  });
}

/** Lua shared by the scripts: the clock, number formatting and UTC periods. */
const PRELUDE = `
local SCALE = ${SCALE}
local DAY = 86400000
local P = ARGV[1]

-- Redis's clock, read once per script run (every operation of a batch sees the same time).
local serverNow = nil
local function clock(arg)
  local n = tonumber(arg)
  if n then return n end
  if serverNow == nil then
    local t = redis.call('TIME')
    serverNow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return serverNow
end

-- Integers as Redis strings, exactly (tostring would round past 14 digits).
local function fmt(n) return string.format('%.0f', n) end

-- Days since 1970-01-01 of a UTC date (Howard Hinnant's algorithm).
local function daysFromCivil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- dayStart, dayEnd, monthStart, monthEnd (epoch ms) of the UTC day and month holding now.
local function periods(now)
  local days = math.floor(now / DAY)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  local ny, nm = y, m + 1
  if nm > 12 then ny, nm = y + 1, 1 end
  return days * DAY, (days + 1) * DAY, (days - d + 1) * DAY, daysFromCivil(ny, nm, 1) * DAY
end

-- Refills a bucket {level, at, limit} up to now (a clock going backwards refills nothing).
local function refill(b, now)
  if now <= b.at then return end
  local cap = b.limit * SCALE
  if b.level < cap then b.level = math.min(cap, b.level + (now - b.at) * b.limit) end
  b.at = now
end

-- Keeps a bucket hash until its fullest bucket would be full again (then it is recreated full).
local function keep(key, b)
  if b == nil then return end
  local want = 60000
  if b.limit > 0 then want = want + math.ceil((b.limit * SCALE - b.level) / b.limit) end
  if redis.call('PTTL', key) < want then redis.call('PEXPIRE', key, want) end
end
`;

/**
 * The limiter's one script for admits and settles, run on a batch of them in the order they were
 * made (see `RedisLimiter`): each is decided alone and atomically, exactly as if it had been sent
 * by itself, and has its own answer.
 *
 * ARGV: prefix, lease ms, ticket ttl ms, then one group per operation:
 *
 * - `a`, keyId, workspaceId, now ('' = TIME), estimate, rpm, tpm, concurrency, key day budget,
 *   key month budget, workspace day budget, workspace month budget ('' = none), ticket id: an
 *   admit. Answers [0, now, rpmLimit, rpmLevel, tpmLimit, tpmLevel, kd, km, wd, wm] (admitted;
 *   the counters charged, '' for none; limits -1 when not set), [1, now, rpmLimit, rpmLevel,
 *   tpmLimit, tpmLevel, reason, retrySeconds, used, periodEnd] (refused; used and periodEnd of a
 *   refusing budget, else 0), or [2, now, dayStart, dayEnd, monthStart, monthEnd, kd, km, wd, wm]
 *   (budget counters to seed first, '' for the others; nothing charged).
 * - `s`, keyId, ticketId, now ('' = TIME), delta (actual − estimate), the tpm limit at admission
 *   ('' = none), the number n of budget counters charged, then those n counters: a settle.
 *   Answers 1, or 0 when the ticket was already settled (or is older than a day).
 * - `c`, keyId, workspaceId, now ('' = TIME), tokens: the settle of a request admitted without
 *   Redis (a key with no limit and no budget). Adds the tokens to those of the key's and the
 *   workspace's counters of the current day and month that exist. Answers 1.
 * - `f`, keyId, now ('' = TIME): a forget. Drops the key's buckets and its counters of the
 *   current day and month unless it has live leases. Answers 1 when dropped, else 0.
 *
 * Replies one answer per operation, in order.
 */
const BATCH = `${PRELUDE}
local BLOCKED = ${BLOCKED_RETRY_SECONDS}
local leaseMs, ticketTtl = tonumber(ARGV[2]), tonumber(ARGV[3])
local NAMES = { 'key_budget_day', 'key_budget_month', 'workspace_budget_day', 'workspace_budget_month' }

-- The bucket for the current limit: created full, refilled, clamped to a lowered capacity.
local function sync(level, at, limit, want, now)
  if want == nil then return nil end
  local perMinute = math.max(0, want)
  level, at, limit = tonumber(level), tonumber(at), tonumber(limit)
  if level == nil or at == nil or limit == nil then return { level = perMinute * SCALE, at = now, limit = perMinute } end
  local b = { level = level, at = at, limit = limit }
  refill(b, now)
  if b.limit ~= perMinute then
    b.limit = perMinute
    b.level = math.min(b.level, perMinute * SCALE)
  end
  return b
end

local function wait(b, cost)
  if b.limit <= 0 then return math.huge end
  local need = math.min(cost, b.limit) * SCALE
  if b.level >= need then return 0 end
  return (need - b.level) / b.limit
end

local function seconds(ms)
  if ms == math.huge then return BLOCKED end
  return math.max(1, math.ceil(ms / 1000))
end

local function view(b)
  if b == nil then return -1, 0 end
  return b.limit, b.level
end

local function admit(keyId, wsId, now, estimate, rpmLimit, tpmLimit, concurrency, budgets, ticketId)
  local dayStart, dayEnd, monthStart, monthEnd = periods(now)
  local counters = {
    P .. 'kd:' .. fmt(dayStart) .. ':' .. keyId,
    P .. 'km:' .. fmt(monthStart) .. ':' .. keyId,
    P .. 'wd:' .. fmt(dayStart) .. ':' .. wsId,
    P .. 'wm:' .. fmt(monthStart) .. ':' .. wsId,
  }
  local ends = { dayEnd, monthEnd, dayEnd, monthEnd }

  -- Budget counters first: a configured budget without a counter for this period is seeded first.
  local used = {}
  local missing = { '', '', '', '' }
  local seed = false
  for i = 1, 4 do
    local v = redis.call('GET', counters[i])
    used[i] = v and tonumber(v) or nil
    if used[i] == nil and budgets[i] ~= nil then
      missing[i] = counters[i]
      seed = true
    end
  end
  if seed then
    return { 2, now, dayStart, dayEnd, monthStart, monthEnd, missing[1], missing[2], missing[3], missing[4] }
  end

  local bucketKey = P .. 'kb:' .. keyId
  local f = redis.call('HMGET', bucketKey, 'rl', 'ra', 'rn', 'tl', 'ta', 'tn')
  local rpm = sync(f[1], f[2], f[3], rpmLimit, now)
  local tpm = sync(f[4], f[5], f[6], tpmLimit, now)

  -- Check everything; report the refusal that lasts longest.
  local reason, retry, refusedUsed, refusedEnd = nil, 0, 0, 0
  for _, i in ipairs({ 2, 4, 1, 3 }) do
    local u, budget = used[i], budgets[i]
    if u ~= nil and budget ~= nil and (u >= budget or u + estimate > budget) then
      local s = seconds(ends[i] - now)
      if s > retry then reason, retry, refusedUsed, refusedEnd = NAMES[i], s, u, ends[i] end
    end
  end
  if tpm ~= nil then
    local w = wait(tpm, estimate)
    if w > 0 and seconds(w) > retry then reason, retry = 'tpm', seconds(w) end
  end
  if rpm ~= nil then
    local w = wait(rpm, 1)
    if w > 0 and seconds(w) > retry then reason, retry = 'rpm', seconds(w) end
  end
  local leaseKey = P .. 'kl:' .. keyId
  redis.call('ZREMRANGEBYSCORE', leaseKey, '-inf', fmt(now))
  if concurrency ~= nil and retry < 1 and redis.call('ZCARD', leaseKey) >= concurrency then
    reason, retry = 'concurrency', 1
  end

  if reason ~= nil then
    local rl, rv = view(rpm)
    local tl, tv = view(tpm)
    return { 1, now, rl, rv, tl, tv, reason, retry, refusedUsed, refusedEnd, used[1] or -1, used[2] or -1, used[3] or -1, used[4] or -1, dayEnd, monthEnd }
  end

  -- Commit everything.
  if rpm ~= nil then
    rpm.level = rpm.level - SCALE
    redis.call('HSET', bucketKey, 'rl', fmt(rpm.level), 'ra', fmt(rpm.at), 'rn', fmt(rpm.limit))
  else
    redis.call('HDEL', bucketKey, 'rl', 'ra', 'rn')
  end
  if tpm ~= nil then
    tpm.level = tpm.level - estimate * SCALE
    redis.call('HSET', bucketKey, 'tl', fmt(tpm.level), 'ta', fmt(tpm.at), 'tn', fmt(tpm.limit))
  else
    redis.call('HDEL', bucketKey, 'tl', 'ta', 'tn')
  end
  keep(bucketKey, rpm)
  keep(bucketKey, tpm)
  redis.call('ZADD', leaseKey, fmt(now + leaseMs), ticketId)
  redis.call('PEXPIRE', leaseKey, leaseMs + 60000)
  redis.call('SET', P .. 't:' .. ticketId, '1', 'PX', ticketTtl)
  local charged = { '', '', '', '' }
  for i = 1, 4 do
    if used[i] ~= nil then
      redis.call('INCRBY', counters[i], fmt(estimate))
      charged[i] = counters[i]
      used[i] = used[i] + estimate
    end
  end
  local rl, rv = view(rpm)
  local tl, tv = view(tpm)
  return { 0, now, rl, rv, tl, tv, charged[1], charged[2], charged[3], charged[4], used[1] or -1, used[2] or -1, used[3] or -1, used[4] or -1, dayEnd, monthEnd }
end

-- The counters charged are ARGV[first .. first + n - 1].
local function settle(keyId, ticketId, nowArg, delta, tpmLimit, first, n)
  if redis.call('DEL', P .. 't:' .. ticketId) == 0 then return 0 end
  redis.call('ZREM', P .. 'kl:' .. keyId, ticketId)
  if delta == 0 then return 1 end
  local now = clock(nowArg)
  if tpmLimit ~= nil then
    local bucketKey = P .. 'kb:' .. keyId
    local f = redis.call('HMGET', bucketKey, 'tl', 'ta', 'tn')
    local b = nil
    if f[3] then
      b = { level = tonumber(f[1]), at = tonumber(f[2]), limit = tonumber(f[3]) }
    elseif delta > 0 then
      -- The bucket expired, so it was full: charge the extra to a full bucket.
      b = { level = tpmLimit * SCALE, at = now, limit = tpmLimit }
    end
    if b ~= nil then
      refill(b, now)
      b.level = math.min(b.limit * SCALE, b.level - delta * SCALE)
      redis.call('HSET', bucketKey, 'tl', fmt(b.level), 'ta', fmt(b.at), 'tn', fmt(b.limit))
      keep(bucketKey, b)
    end
  end
  for i = first, first + n - 1 do
    local v = redis.call('GET', ARGV[i])
    if v then redis.call('SET', ARGV[i], fmt(math.max(0, tonumber(v) + delta)), 'KEEPTTL') end
  end
  return 1
end

-- Drops the key's buckets and its counters of the current day and month unless it has live leases.
local function forget(keyId, now)
  local leaseKey = P .. 'kl:' .. keyId
  redis.call('ZREMRANGEBYSCORE', leaseKey, '-inf', fmt(now))
  if redis.call('ZCARD', leaseKey) > 0 then return 0 end
  local dayStart, _, monthStart = periods(now)
  redis.call('DEL', P .. 'kb:' .. keyId, leaseKey, P .. 'kd:' .. fmt(dayStart) .. ':' .. keyId,
    P .. 'km:' .. fmt(monthStart) .. ':' .. keyId)
  return 1
end

-- Adds the tokens of a request admitted without Redis (no limit, no budget) to those of its
-- counters of the current day and month that exist (they count every request).
local function addUsage(keyId, wsId, now, used)
  local dayStart, _, monthStart = periods(now)
  for _, counter in ipairs({
    P .. 'kd:' .. fmt(dayStart) .. ':' .. keyId,
    P .. 'km:' .. fmt(monthStart) .. ':' .. keyId,
    P .. 'wd:' .. fmt(dayStart) .. ':' .. wsId,
    P .. 'wm:' .. fmt(monthStart) .. ':' .. wsId,
  }) do
    if redis.call('EXISTS', counter) == 1 then redis.call('INCRBY', counter, fmt(used)) end
  end
  return 1
end

local out = {}
local i = 4
local count = #ARGV
while i <= count do
  local op = ARGV[i]
  if op == 'a' then
    out[#out + 1] = admit(ARGV[i + 1], ARGV[i + 2], clock(ARGV[i + 3]), tonumber(ARGV[i + 4]),
      tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7]),
      { tonumber(ARGV[i + 8]), tonumber(ARGV[i + 9]), tonumber(ARGV[i + 10]), tonumber(ARGV[i + 11]) },
      ARGV[i + 12])
    i = i + 13
  elseif op == 's' then
    local n = tonumber(ARGV[i + 6])
    out[#out + 1] = settle(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]), i + 7, n)
    i = i + 7 + n
  elseif op == 'c' then
    out[#out + 1] = addUsage(ARGV[i + 1], ARGV[i + 2], clock(ARGV[i + 3]), tonumber(ARGV[i + 4]))
    i = i + 5
  elseif op == 'f' then
    out[#out + 1] = forget(ARGV[i + 1], clock(ARGV[i + 2]))
    i = i + 3
  else
    return redis.error_reply('keygate limiter: unknown operation ' .. tostring(op))
  end
end
return out
`;

const BATCH_SHA = createHash('sha1').update(BATCH).digest('hex');

/**
 * Runs the batch script: EVALSHA, and EVAL only when Redis does not know the script (NOSCRIPT:
 * nothing ran, so sending it again in full is safe). Not ioredis's `defineCommand`, which sends
 * the whole script as EVAL on the first call of every connection.
 */
function runBatch(redis: Redis, args: (string | number)[]): Promise<unknown> {
  return redis.evalsha(BATCH_SHA, 0, ...args).catch((error: unknown) => {
    if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
    return redis.eval(BATCH, 0, ...args);
  });
}

class RedisTicket implements Ticket {
  readonly keyId: string;
  readonly workspaceId: string;
  readonly estimatedTokens: number;
  readonly admittedAt: number;
  readonly owner: RedisLimiter;
  readonly id: string;
  /** The tpm limit when admitted (null: none). */
  readonly tpmLimit: number | null;
  /** The budget counters charged. */
  readonly counters: readonly string[];
  /** Set once a settle has been applied (or found already applied) by Redis. */
  settled = false;
  /** Admitted without Redis (no limit, no budget): no lease, no marker, nothing reserved. */
  free = false;
  /** For a free ticket, the admission time given by the caller or clock (undefined: Redis's). */
  at: number | undefined;

  constructor(
    owner: RedisLimiter,
    subject: LimitSubject,
    id: string,
    estimate: number,
    admittedAt: number,
    tpmLimit: number | null,
    counters: string[],
  ) {
    this.keyId = subject.keyId;
    this.workspaceId = subject.workspaceId;
    this.estimatedTokens = estimate;
    this.admittedAt = admittedAt;
    this.owner = owner;
    this.id = id;
    this.tpmLimit = tpmLimit;
    this.counters = counters;
  }
}

function arg(value: number | null | undefined): string {
  return value === null || value === undefined ? '' : String(value);
}

function num(reply: unknown[], index: number): number {
  const value = Number(reply[index]);
  if (!Number.isFinite(value)) throw new RedisLimiterError(`unexpected reply from the limiter script`);
  return value;
}

function str(reply: unknown[], index: number): string {
  const value = reply[index];
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString();
  throw new RedisLimiterError('unexpected reply from the limiter script');
}

/**
 * The budget the tokens headers show (see `rateLimitHeaders`), from an admit reply: the four
 * counters at 10-13 (-1: none; after this request's charge when admitted) and the day's and the
 * month's ends at 14-15.
 */
function budgetOf(subject: LimitSubject, reply: unknown[]): BudgetView | null {
  if (reply.length < 16) return null;
  const used = (i: number) => {
    const value = num(reply, i);
    return value < 0 ? null : value;
  };
  const dayEnd = num(reply, 14);
  const monthEnd = num(reply, 15);
  return tightestBudget([
    [subject.keyBudget.day, used(10), dayEnd],
    [subject.keyBudget.month, used(11), monthEnd],
    [subject.workspaceBudget.day, used(12), dayEnd],
    [subject.workspaceBudget.month, used(13), monthEnd],
  ]);
}

function bucket(reply: unknown[], index: number): { limit: number; level: number } | null {
  const limit = num(reply, index);
  return limit < 0 ? null : { limit, level: num(reply, index + 1) };
}

const REASONS: ReadonlySet<string> = new Set<LimitReason>([
  'rpm',
  'tpm',
  'concurrency',
  'key_budget_day',
  'key_budget_month',
  'workspace_budget_day',
  'workspace_budget_month',
]);

/** One operation waiting for its batch's answer. */
interface Waiting {
  resolve: (answer: unknown) => void;
  reject: (error: unknown) => void;
  /** The answer that came after the batch had timed out. */
  late: ((answer: unknown) => void) | undefined;
}

function limiterError(error: unknown): RedisLimiterError {
  if (error instanceof RedisLimiterError) return error;
  return new RedisLimiterError(
    `Redis limiter call failed: ${error instanceof Error ? error.message : String(error)}`,
    { cause: error },
  );
}

export class RedisLimiter implements Limiter {
  readonly #redis: Redis;
  readonly #store: RedisLimiterOptions['store'];
  readonly #prefix: string;
  readonly #leaseMs: number;
  readonly #clock: (() => number) | undefined;
  readonly #onError: (error: unknown) => void;
  readonly #maxBatch: number;
  readonly #timeoutMs: number | undefined;
  readonly #onLate: (ticket: Ticket) => void;
  /** Budget counters being seeded or seeded by this instance: later admits wait for the same read. */
  readonly #seeds: LRUCache<string, Promise<void>>;
  /** Ticket ids: this instance's random prefix and a counter (unique without a random draw each). */
  readonly #ticketPrefix = randomBytes(9).toString('base64url');
  #tickets = 0;
  /** The batch being gathered: its ARGV (prefix, lease, ticket ttl, operations) and its waiters. */
  #args: (string | number)[];
  #waiting: Waiting[] = [];
  #scheduled = false;
  readonly #flushNow = (): void => {
    this.#scheduled = false;
    this.#flush();
  };
  /** Sends a batch of settles that no admit took along (see `#enqueue`). */
  #lazyTimer: NodeJS.Timeout | undefined;
  readonly #flushLazy = (): void => {
    this.#lazyTimer = undefined;
    if (!this.#scheduled) this.#flush();
  };
  readonly #onReady = (): void => void this.prepare().catch(() => {});
  #closed = false;

  constructor(options: RedisLimiterOptions) {
    this.#redis = options.redis;
    this.#store = options.store;
    this.#prefix = options.prefix ?? DEFAULT_PREFIX;
    this.#leaseMs = Math.max(1000, Math.ceil(options.leaseMs ?? DEFAULT_LEASE_MS));
    this.#clock = options.clock;
    this.#onError = options.onError ?? (() => {});
    this.#maxBatch = Math.max(1, Math.floor(options.maxBatch ?? DEFAULT_MAX_BATCH));
    this.#timeoutMs = options.timeoutMs === undefined ? undefined : Math.max(1, Math.ceil(options.timeoutMs));
    this.#onLate = options.onLateAdmission ?? ((ticket) => this.settleAsync(ticket, 0).catch(this.#onError));
    this.#seeds = new LRUCache({ max: Math.max(1, options.maxSeeded ?? 10_000) });
    this.#args = this.#head();
    // The script is loaded ahead of the first request (and again after a reconnect: a restarted Redis
    // has forgotten it), so that no request pays for sending and compiling them.
    this.#redis.on('ready', this.#onReady);
    if (this.#redis.status === 'ready') this.#onReady();
  }

  /**
   * Loads the script into Redis (SCRIPT LOAD). Done at construction and on every reconnection;
   * await it to know they are there. Without it the first call sends the script in full.
   */
  async prepare(): Promise<void> {
    await this.#redis.script('LOAD', BATCH);
  }

  /** Whether `ticket` was issued by this limiter. */
  owns(ticket: Ticket): boolean {
    return ticket instanceof RedisTicket && ticket.owner === this;
  }

  /**
   * A Promise when Redis is asked; a plain admission, without asking Redis, for a key with no
   * limit and no budget (key or workspace), which nothing can refuse: its settle only adds its
   * tokens to the counters that exist (see `c` in `BATCH`).
   */
  admit(subject: LimitSubject, estimatedTokens: number, now?: number): Admission | Promise<Admission> {
    if (this.#closed) throw new Error('the limiter is closed');
    const { limits, keyBudget, workspaceBudget } = subject;
    if (
      limits.rpm === null &&
      limits.tpm === null &&
      limits.concurrency === null &&
      keyBudget.day === null &&
      keyBudget.month === null &&
      workspaceBudget.day === null &&
      workspaceBudget.month === null
    ) {
      const time = now ?? this.#clock?.();
      const ticket = new RedisTicket(
        this,
        subject,
        '',
        tokens(estimatedTokens),
        time ?? Date.now(),
        null,
        [],
      );
      ticket.free = true;
      if (time !== undefined) ticket.at = time;
      return { ok: true, ticket, headers: {} };
    }
    return this.#admit(subject, tokens(estimatedTokens), now ?? this.#clock?.());
  }

  settle(ticket: Ticket, actualTokens: number, now?: number): void {
    this.settleAsync(ticket, actualTokens, now).catch(this.#onError);
  }

  /**
   * `settle`, with its outcome. Throws a TypeError at once for a ticket of another limiter;
   * rejects with `RedisLimiterError` if Redis could not be told, and can then be called again
   * (a settle that did reach Redis is not applied twice).
   */
  settleAsync(ticket: Ticket, actualTokens: number, now?: number): Promise<void> {
    if (!(ticket instanceof RedisTicket) || ticket.owner !== this) {
      throw new TypeError('settle() was given a ticket this limiter did not issue');
    }
    if (ticket.settled) return Promise.resolve();
    if (ticket.free) {
      // Counted once at most: marked before Redis answers, so a failure is not replayed.
      ticket.settled = true;
      const used = tokens(actualTokens);
      if (used === 0) return Promise.resolve();
      this.#args.push('c', ticket.keyId, ticket.workspaceId, arg(ticket.at), used);
      return this.#enqueue(undefined, true).then(() => {});
    }
    const delta = tokens(actualTokens) - ticket.estimatedTokens;
    const time = now ?? this.#clock?.();
    const args = this.#args;
    args.push('s', ticket.keyId, ticket.id, arg(time), delta, arg(ticket.tpmLimit), ticket.counters.length);
    for (const counter of ticket.counters) args.push(counter);
    return this.#enqueue(undefined, true).then(() => {
      ticket.settled = true;
    });
  }

  forget(keyId: string): void {
    this.#args.push('f', keyId, arg(this.#clock?.()));
    this.#enqueue().catch(this.#onError);
  }

  /** Stops admitting and sends what is gathered; the Redis client stays open (it belongs to the caller). */
  close(): void {
    this.#closed = true;
    this.#redis.off('ready', this.#onReady);
    this.#flush();
    this.#seeds.clear();
  }

  /**
   * Waits for the answer to the operation just pushed onto the batch's ARGV. The batch goes to
   * Redis at `setImmediate`, after the I/O callbacks of this turn of the event loop (a lone
   * request waits for nothing), or at once when it holds `maxBatch` operations. A `lazy`
   * operation (a settle: nobody waits for its answer) does not send the batch by itself: it goes
   * with the next admit's batch, or after SETTLE_DELAY_MS, so that under load a request costs one
   * Redis call rather than two.
   */
  #enqueue(late?: (answer: unknown) => void, lazy = false): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject, late });
      if (this.#waiting.length >= this.#maxBatch) this.#flush();
      else if (this.#scheduled) return;
      else if (!lazy) {
        this.#scheduled = true;
        setImmediate(this.#flushNow);
      } else if (this.#lazyTimer === undefined) {
        this.#lazyTimer = setTimeout(this.#flushLazy, SETTLE_DELAY_MS);
      }
    });
  }

  #head(): (string | number)[] {
    return [this.#prefix, this.#leaseMs, TICKET_TTL_MS];
  }

  /** Sends the batch gathered so far as one script call; every operation gets its own answer. */
  #flush(): void {
    if (this.#lazyTimer !== undefined) {
      clearTimeout(this.#lazyTimer);
      this.#lazyTimer = undefined;
    }
    const waiting = this.#waiting;
    if (waiting.length === 0) return;
    const args = this.#args;
    this.#waiting = [];
    this.#args = this.#head();
    let call: Promise<unknown>;
    try {
      call = runBatch(this.#redis, args);
    } catch (error) {
      call = Promise.reject(error);
    }
    const ms = this.#timeoutMs;
    let timedOut = false;
    const timer =
      ms === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            const error = new RedisTimeoutError(ms);
            for (const w of waiting) w.reject(error);
          }, ms);
    call.then(
      (reply) => {
        clearTimeout(timer);
        if (!Array.isArray(reply) || reply.length !== waiting.length) {
          const error = new RedisLimiterError('unexpected reply from the limiter script');
          for (const w of waiting) w.reject(error);
          return;
        }
        if (timedOut) {
          for (let i = 0; i < waiting.length; i++) waiting[i]!.late?.(reply[i]);
          return;
        }
        for (let i = 0; i < waiting.length; i++) waiting[i]!.resolve(reply[i]);
      },
      (error: unknown) => {
        clearTimeout(timer);
        const wrapped = limiterError(error);
        for (const w of waiting) w.reject(wrapped);
      },
    );
  }

  /** A Redis call of its own (not batched), timed like a batch. */
  #timed<T>(call: Promise<T>): Promise<T> {
    const ms = this.#timeoutMs;
    if (ms === undefined) return call.catch((error: unknown) => Promise.reject(limiterError(error)));
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new RedisTimeoutError(ms)), ms);
      call.then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(limiterError(error));
        },
      );
    });
  }

  async #admit(subject: LimitSubject, estimate: number, now: number | undefined): Promise<Admission> {
    const { limits, keyBudget, workspaceBudget } = subject;
    /** Counters this admit already waited for: if one is still missing, it must be read afresh. */
    const awaited = new Set<string>();
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const ticketId = `${this.#ticketPrefix}${(this.#tickets++).toString(36)}`;
      this.#args.push(
        'a',
        subject.keyId,
        subject.workspaceId,
        arg(now),
        estimate,
        arg(limits.rpm),
        arg(limits.tpm),
        arg(limits.concurrency),
        arg(keyBudget.day),
        arg(keyBudget.month),
        arg(workspaceBudget.day),
        arg(workspaceBudget.month),
        ticketId,
      );
      const reply = await this.#enqueue((late) => {
        // Timed out, but carried out: an admitted ticket nobody will settle is released.
        if (!Array.isArray(late) || Number(late[0]) !== 0) return;
        try {
          const counters = [6, 7, 8, 9].map((i) => str(late, i)).filter((name) => name !== '');
          const tpm = bucket(late, 4);
          const time = num(late, 1);
          this.#onLate(
            new RedisTicket(this, subject, ticketId, estimate, time, tpm?.limit ?? null, counters),
          );
        } catch (error) {
          this.#onError(error);
        }
      });
      if (!Array.isArray(reply)) throw new RedisLimiterError('unexpected reply from the limiter script');
      const status = num(reply, 0);
      const time = num(reply, 1);
      if (status === 2) {
        await this.#seed(subject, reply, time, awaited);
        continue;
      }
      const rpm = bucket(reply, 2);
      const tpm = bucket(reply, 4);
      const headers = rateLimitHeaders(rpm, tpm, tpm === null ? budgetOf(subject, reply) : null, time);
      if (status === 0) {
        const counters = [6, 7, 8, 9].map((i) => str(reply, i)).filter((name) => name !== '');
        const ticket = new RedisTicket(this, subject, ticketId, estimate, time, tpm?.limit ?? null, counters);
        return { ok: true, ticket, headers };
      }
      const reason = str(reply, 6);
      if (!REASONS.has(reason)) throw new RedisLimiterError(`unexpected refusal reason ${reason}`);
      const refusal = reason as LimitReason;
      const retry = num(reply, 7);
      const counter = { used: num(reply, 8), end: num(reply, 9) };
      headers['retry-after'] = String(retry);
      return {
        ok: false,
        reason: refusal,
        message: refusalMessage(refusal, subject, estimate, retry, counter),
        retryAfterSeconds: retry,
        headers,
      };
    }
    throw new RedisLimiterError('budget counters could not be seeded in Redis');
  }

  /** Seeds the counters a `2` reply names: the store's usage since the period start, SET NX. */
  async #seed(subject: LimitSubject, reply: unknown[], now: number, awaited: Set<string>): Promise<void> {
    const [dayStart, dayEnd, monthStart, monthEnd] = [2, 3, 4, 5].map((i) => num(reply, i)) as [
      number,
      number,
      number,
      number,
    ];
    const wanted: [string, TokenFilter, number][] = [
      [str(reply, 6), { keyId: subject.keyId, since: dayStart }, dayEnd],
      [str(reply, 7), { keyId: subject.keyId, since: monthStart }, monthEnd],
      [str(reply, 8), { workspaceId: subject.workspaceId, since: dayStart }, dayEnd],
      [str(reply, 9), { workspaceId: subject.workspaceId, since: monthStart }, monthEnd],
    ];
    const reads: Promise<void>[] = [];
    for (const [counter, filter, end] of wanted) {
      if (counter === '') continue;
      let pending = awaited.has(counter) ? undefined : this.#seeds.get(counter);
      if (pending === undefined) {
        pending = this.#read(counter, filter, Math.max(1, end - now) + COUNTER_MARGIN_MS);
        this.#seeds.set(counter, pending);
        const current = pending;
        current.catch(() => {
          if (this.#seeds.get(counter) === current) this.#seeds.delete(counter);
        });
      }
      awaited.add(counter);
      reads.push(pending);
    }
    await Promise.all(reads);
  }

  async #read(counter: string, filter: TokenFilter, ttlMs: number): Promise<void> {
    const used = tokens(await this.#store.tokensUsed(filter));
    await this.#timed(this.#redis.set(counter, String(used), 'PX', ttlMs, 'NX'));
  }
}

/** The Redis `Limiter` (see the top of this file). */
export function createRedisLimiter(options: RedisLimiterOptions): RedisLimiter {
  return new RedisLimiter(options);
}
