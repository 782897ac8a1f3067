/**
 * The alert engine: watches requests as they finish (cheaply, in memory), evaluates the rules
 * every minute against each key's own history, and raises alerts — deduplicated by fingerprint,
 * with a cooldown, stored, and handed to the notifier. Nothing here runs on the request path
 * beyond a few map updates.
 */
import { LRUCache } from 'lru-cache';
import type { Logger } from '../http/log.ts';
import { utcPeriods } from '../limits/period.ts';
import {
  type Alert,
  type AlertKind,
  DEFAULT_WORKSPACE_ID,
  type ExpiryReminder,
  type KeyRecord,
  type Severity,
  type Store,
} from '../store/types.ts';
import { Background, type PeriodicTask } from '../util/background.ts';
import { newId } from '../util/ids.ts';
import {
  BUDGET_REFUSALS,
  type BudgetRefusal,
  crossedThreshold,
  detectSpike,
  expiresIn,
  mergeSettings,
  networkOf,
  type RuleSettings,
} from './rules.ts';

const MINUTE = 60_000;
const HOUR = 3_600_000;

export interface AlertEngineOptions {
  store: Store;
  logger: Logger;
  clock?: () => number;
  /** How often the rules are evaluated; 0 leaves it to the caller (`tick()`), as tests do. @default 60 s */
  evaluateIntervalMs?: number;
  /** How many (key, network) pairs are remembered as recorded. @default 100 000 */
  maxKnownNetworks?: number;
  /**
   * Supervises the evaluation and the checks made as requests finish (one of its own, which logs
   * nothing, by default): a store that cannot be read fails them, it never ends the process.
   */
  background?: Background;
}

/** The background tasks of the engine (util/background.ts). */
export const ALERT_RULES_TASK = 'alert_rules';
export const ALERT_CHECKS_TASK = 'alert_checks';

interface KeyActivity {
  key: KeyRecord;
  /** Requests and tokens per minute (epoch minute → counts), kept for the longest spike window. */
  minutes: Map<number, { requests: number; tokens: number }>;
  lastSeen: number;
  /** Requests refused for a budget since the last evaluation, by the budget that refused them. */
  refusals: Map<BudgetRefusal, number>;
}

export interface FinishedRequest {
  key: KeyRecord;
  ip: string;
  totalTokens: number;
  /** Why the gateway refused or failed it (`limit_key_budget_day`, …), if it did. */
  failure?: string | undefined;
}

type Notify = (alert: Alert) => void;

export class AlertEngine {
  readonly #store: Store;
  readonly #logger: Logger;
  readonly #clock: () => number;
  readonly #activity = new Map<string, KeyActivity>();
  /**
   * (key, network) pairs known to be recorded already, so the store is asked once per pair. Past
   * `maxKnownNetworks` the oldest pair is forgotten (the store is asked again if it comes back).
   * A Set rather than an LRUCache: lru-cache allocates its arrays for `max` entries up front
   * (~2.7 MB for 100 000), a Set only for the pairs seen; and `has` did not refresh an entry of
   * the LRUCache either, so it evicted in insertion order as this does.
   */
  readonly #networks = new Set<string>();
  readonly #maxNetworks: number;
  /** Failed authentications per address in the current minute. */
  #failures = new Map<string, number>();
  #failureMinute = 0;
  /** Each workspace's rule settings, read again after a minute (or at once after `forgetSettings`). */
  readonly #settings = new LRUCache<string, RuleSettings>({ max: 10_000, ttl: MINUTE });
  /**
   * Budget threshold alerts raised by this process (their fingerprints name the period): a
   * threshold is crossed once per period, so it is not raised again at every evaluation (which
   * made the alert's count climb for as long as the key was remembered, idle or not).
   */
  readonly #budgetRaised = new LRUCache<string, true>({ max: 10_000 });
  /** Bumped by `forgetSettings`, so that a read begun before a change does not cache what it read. */
  #settingsGeneration = 0;
  #notify: Notify = () => {};
  readonly #background: Background;
  #evaluation: PeriodicTask | undefined;
  #pending = new Set<Promise<unknown>>();

  constructor(options: AlertEngineOptions) {
    this.#store = options.store;
    this.#logger = options.logger;
    this.#clock = options.clock ?? Date.now;
    this.#maxNetworks = Math.max(1, options.maxKnownNetworks ?? 100_000);
    this.#background = options.background ?? new Background();
    const interval = options.evaluateIntervalMs ?? MINUTE;
    // A failed evaluation (the store unreachable, its disk full) is retried sooner than the next
    // interval, backing off up to it.
    if (interval > 0)
      this.#evaluation = this.#background.every(ALERT_RULES_TASK, interval, () => this.tick(), {
        retry: { initialMs: Math.min(5000, interval), maxMs: interval },
      });
  }

  /** Where fresh alerts go (the notifier's `notify`). */
  onAlert(notify: Notify): void {
    this.#notify = notify;
  }

  #track<T>(work: Promise<T>): void {
    const tracked = work.then(
      () => this.#background.succeeded(ALERT_CHECKS_TASK),
      (error: unknown) => this.#background.failed(ALERT_CHECKS_TASK, error),
    );
    this.#pending.add(tracked);
    void tracked.finally(() => this.#pending.delete(tracked));
  }

  async #rules(workspaceId: string): Promise<RuleSettings> {
    let settings = this.#settings.get(workspaceId);
    if (!settings) {
      const generation = this.#settingsGeneration;
      settings = mergeSettings(await this.#store.ruleSettings(workspaceId));
      if (generation === this.#settingsGeneration) this.#settings.set(workspaceId, settings);
    }
    return settings;
  }

  /**
   * Drops the cached rule settings of a workspace (of every workspace when none is given), so that
   * a change made through this process applies from the next evaluation rather than within a
   * minute. Other processes on the same store pick changes up when their cache expires.
   */
  forgetSettings(workspaceId?: string): void {
    this.#settingsGeneration++;
    if (workspaceId === undefined) this.#settings.clear();
    else this.#settings.delete(workspaceId);
  }

  /** A request made with a valid key has finished. Synchronous and cheap. */
  observe(request: FinishedRequest): void {
    const now = this.#clock();
    const minute = Math.floor(now / MINUTE);
    let activity = this.#activity.get(request.key.id);
    if (!activity) {
      activity = { key: request.key, minutes: new Map(), lastSeen: now, refusals: new Map() };
      this.#activity.set(request.key.id, activity);
    }
    activity.key = request.key;
    activity.lastSeen = now;
    const refusal = request.failure?.startsWith('limit_') ? request.failure.slice(6) : undefined;
    if (refusal !== undefined && (BUDGET_REFUSALS as readonly string[]).includes(refusal)) {
      const which = refusal as BudgetRefusal;
      activity.refusals.set(which, (activity.refusals.get(which) ?? 0) + 1);
    }
    const bucket = activity.minutes.get(minute);
    if (bucket) {
      bucket.requests++;
      bucket.tokens += request.totalTokens;
    } else {
      activity.minutes.set(minute, { requests: 1, tokens: request.totalTokens });
    }
    const network = networkOf(request.ip);
    const pair = `${request.key.id} ${network}`;
    if (!this.#networks.has(pair)) {
      this.#networks.add(pair);
      if (this.#networks.size > this.#maxNetworks) {
        for (const oldest of this.#networks) {
          this.#networks.delete(oldest);
          break;
        }
      }
      this.#track(this.#checkNetwork(request.key, network, request.ip, now));
    }
  }

  /** A request failed authentication. A key that exists but is revoked or expired is named. */
  observeAuthFailure(ip: string, key: KeyRecord | undefined, reason: string): void {
    const now = this.#clock();
    const minute = Math.floor(now / MINUTE);
    if (minute !== this.#failureMinute) {
      this.#failures = new Map();
      this.#failureMinute = minute;
    }
    if (this.#failures.size < 100_000 || this.#failures.has(ip)) {
      this.#failures.set(ip, (this.#failures.get(ip) ?? 0) + 1);
    }
    if (key && (reason === 'revoked' || reason === 'expired' || reason === 'rotated')) {
      this.#track(this.#deadKeyUsed(key, ip, reason, now));
    }
  }

  async #checkNetwork(key: KeyRecord, network: string, ip: string, now: number): Promise<void> {
    const seen = await this.#store.noteNetwork(key.id, network, now);
    if (seen !== 'new') return;
    const rules = await this.#rules(key.workspaceId);
    if (!rules.new_network.enabled) return;
    await this.#raise(
      {
        kind: 'new_network',
        workspaceId: key.workspaceId,
        key,
        fingerprint: `new_network:${key.id}:${network}`,
        severity: 'warning',
        title: `Key "${key.name}" used from a new network`,
        message:
          `Key "${key.name}" (${key.id}) was used from ${ip} (network ${network}), where it had never been used before. ` +
          `If that is not one of your systems, the key may have leaked: revoke it with \`keygate keys revoke ${key.id}\` ` +
          `or restrict it with \`keygate keys update ${key.id} --allow-ip <your networks>\`.`,
        details: { ip, network },
      },
      rules.new_network.cooldownMinutes,
    );
  }

  async #deadKeyUsed(key: KeyRecord, ip: string, reason: string, now: number): Promise<void> {
    const rules = await this.#rules(key.workspaceId);
    if (!rules.auth_failures.enabled) return;
    const state = reason === 'rotated' ? 'rotated out (its old secret)' : reason;
    await this.#raise(
      {
        kind: 'auth_failures',
        workspaceId: key.workspaceId,
        key,
        fingerprint: `auth_failures:key:${key.id}:${reason}`,
        severity: 'critical',
        title: `${reason === 'revoked' ? 'Revoked' : reason === 'expired' ? 'Expired' : 'Rotated'} key "${key.name}" is still being used`,
        message:
          `Key "${key.name}" (${key.id}) is ${state}, yet a client at ${ip} still sends it. Either a system was not ` +
          'updated, or the secret leaked and someone is trying it: find which system uses that address, and if it is ' +
          'not yours, treat the key as compromised (it is refused; check the audit log for what it did before).',
        details: { ip, reason, at: now },
      },
      rules.auth_failures.cooldownMinutes,
    );
  }

  /** A key's expiry is near (from the store's reminder sweep). */
  async onExpiryReminder(reminder: ExpiryReminder): Promise<void> {
    const rules = await this.#rules(reminder.workspaceId);
    if (!rules.key_expiring.enabled) return;
    const key = await this.#store.getKey(reminder.keyId);
    if (!key) return;
    const left = reminder.expiresAt - this.#clock();
    const days = left / (24 * HOUR);
    await this.#raise(
      {
        kind: 'key_expiring',
        workspaceId: reminder.workspaceId,
        key,
        fingerprint: `key_expiring:${key.id}:${reminder.expiresAt}:${reminder.thresholdMs}`,
        severity: days <= 3 ? 'warning' : 'info',
        title: `Key "${key.name}" expires in ${expiresIn(left)}`,
        message:
          `Key "${key.name}" (${key.id}) expires at ${new Date(reminder.expiresAt).toISOString()}. Rotate it before then ` +
          `with \`keygate keys rotate ${key.id} --grace 24h\` and deploy the new secret, or extend it with ` +
          `\`keygate keys update ${key.id} --expires 90d\`.`,
        details: {
          expires_at: new Date(reminder.expiresAt).toISOString(),
          days: Math.max(0, Math.round(days * 10) / 10),
          threshold_days: reminder.thresholdMs / (24 * HOUR),
        },
      },
      rules.key_expiring.cooldownMinutes,
    );
  }

  /** Evaluates the windowed rules: usage spikes, budget thresholds, bursts of failed authentication. */
  async tick(): Promise<void> {
    const now = this.#clock();
    await Promise.all([
      this.#checkFailureBursts(now),
      ...[...this.#activity.values()].map((a) => this.#checkKey(a, now)),
    ]);
    // Forget keys idle for longer than any window.
    for (const [id, activity] of this.#activity) {
      for (const minute of activity.minutes.keys())
        if (minute < Math.floor((now - HOUR) / MINUTE)) activity.minutes.delete(minute);
      if (now - activity.lastSeen > HOUR) this.#activity.delete(id);
    }
  }

  async #checkFailureBursts(now: number): Promise<void> {
    const minute = Math.floor(now / MINUTE);
    // Only a complete or current minute's counts are meaningful.
    if (minute - this.#failureMinute > 1) return;
    const rules = await this.#rules(DEFAULT_WORKSPACE_ID);
    if (!rules.auth_failures.enabled) return;
    for (const [ip, count] of this.#failures) {
      if (count < rules.auth_failures.failuresPerMinute) continue;
      await this.#raise(
        {
          kind: 'auth_failures',
          workspaceId: DEFAULT_WORKSPACE_ID,
          key: undefined,
          fingerprint: `auth_failures:ip:${ip}`,
          severity: 'warning',
          title: `Burst of failed authentications from ${ip}`,
          message:
            `${count} requests with missing, malformed, unknown or refused keys came from ${ip} within a minute. ` +
            'Someone may be guessing keys or using an old one; the gateway slows that address down. If the address ' +
            'is yours, find the misconfigured client; if not, block it at your firewall.',
          details: { ip, failures: count, minute: new Date(this.#failureMinute * MINUTE).toISOString() },
        },
        rules.auth_failures.cooldownMinutes,
      );
    }
  }

  async #checkKey(activity: KeyActivity, now: number): Promise<void> {
    const { key } = activity;
    // Taken now: what arrives during the checks counts for the next evaluation.
    const refusals = activity.refusals;
    activity.refusals = new Map();
    const rules = await this.#rules(key.workspaceId);
    if (rules.usage_spike.enabled) await this.#checkSpike(activity, rules, now);
    if (rules.budget_threshold.enabled) await this.#checkBudgets(key, rules, now, refusals);
  }

  async #checkSpike(activity: KeyActivity, rules: RuleSettings, now: number): Promise<void> {
    const spike = rules.usage_spike;
    const from = Math.floor((now - spike.windowMinutes * MINUTE) / MINUTE);
    let requests = 0;
    let tokens = 0;
    for (const [minute, counts] of activity.minutes) {
      if (minute > from) {
        requests += counts.requests;
        tokens += counts.tokens;
      }
    }
    if (requests < spike.minRequests && tokens < spike.minTokens) return; // under the floors: nothing to ask
    const key = activity.key;
    // The baseline ends where the window starts, so the spike does not raise its own bar.
    const windowStart = from * MINUTE;
    const history = await this.#store.hourlyCounts(key.id, windowStart - spike.baselineDays * 24 * HOUR);
    const firstHour = Math.floor((windowStart - spike.baselineDays * 24 * HOUR) / HOUR) * HOUR;
    const byHour = new Map(history.map((h) => [h.hour, h]));
    const hourlyRequests: number[] = [];
    const hourlyTokens: number[] = [];
    for (let hour = firstHour; hour + HOUR <= windowStart; hour += HOUR) {
      hourlyRequests.push(byHour.get(hour)?.requests ?? 0);
      hourlyTokens.push(byHour.get(hour)?.tokens ?? 0);
    }
    const byRequests = detectSpike(
      requests,
      hourlyRequests,
      spike.windowMinutes,
      spike.factor,
      spike.minRequests,
    );
    const byTokens = detectSpike(tokens, hourlyTokens, spike.windowMinutes, spike.factor, spike.minTokens);
    if (!byRequests.spike && !byTokens.spike) return;
    const what = byRequests.spike
      ? `${requests} requests in the last ${spike.windowMinutes} minutes; it usually makes about ${Math.round(byRequests.usual)}`
      : `${tokens} tokens in the last ${spike.windowMinutes} minutes; it usually uses about ${Math.round(byTokens.usual)}`;
    await this.#raise(
      {
        kind: 'usage_spike',
        workspaceId: key.workspaceId,
        key,
        fingerprint: `usage_spike:${key.id}`,
        severity: 'warning',
        title: `Usage spike on key "${key.name}"`,
        message:
          `Key "${key.name}" (${key.id}) made ${what}. If this is not expected, the key may have leaked or a client ` +
          `may be looping: revoke it with \`keygate keys revoke ${key.id}\`, or cap it with ` +
          `\`keygate keys update ${key.id} --rpm <n>\`.`,
        details: {
          window_minutes: spike.windowMinutes,
          requests,
          tokens,
          usual_requests: byRequests.usual,
          usual_tokens: byTokens.usual,
          threshold_requests: byRequests.threshold,
          threshold_tokens: byTokens.threshold,
        },
      },
      spike.cooldownMinutes,
    );
  }

  async #checkBudgets(
    key: KeyRecord,
    rules: RuleSettings,
    now: number,
    refusals: ReadonlyMap<BudgetRefusal, number>,
  ): Promise<void> {
    const { dayStart, monthStart } = utcPeriods(now);
    const periods = [
      {
        name: 'daily',
        period: 'day',
        start: dayStart,
        key: key.policy.budget.day,
        ws: key.workspacePolicy.budget.day,
      },
      {
        name: 'monthly',
        period: 'month',
        start: monthStart,
        key: key.policy.budget.month,
        ws: key.workspacePolicy.budget.month,
      },
    ] as const;
    for (const p of periods) {
      if (p.key !== null) {
        const used = await this.#store.tokensUsed({ keyId: key.id, since: p.start });
        const refused = refusals.get(`key_budget_${p.period}`) ?? 0;
        await this.#budgetAlert(key, undefined, p.name, p.period, p.start, used, p.key, rules, refused);
      }
      if (p.ws !== null) {
        const used = await this.#store.tokensUsed({ workspaceId: key.workspaceId, since: p.start });
        const refused = refusals.get(`workspace_budget_${p.period}`) ?? 0;
        await this.#budgetAlert(key, key.workspaceId, p.name, p.period, p.start, used, p.ws, rules, refused);
      }
    }
  }

  async #budgetAlert(
    key: KeyRecord,
    workspaceId: string | undefined,
    name: string,
    period: string,
    start: number,
    used: number,
    budget: number,
    rules: RuleSettings,
    refused: number,
  ): Promise<void> {
    const crossed = crossedThreshold(used, budget, rules.budget_threshold.thresholds);
    const whose = workspaceId ? `Workspace ${workspaceId}` : `Key "${key.name}" (${key.id})`;
    // Requests refused for this budget before it is spent (each needs more than is left: a budget
    // too small for the requests made) are not covered by a threshold alert: they raise their own.
    if (refused > 0 && used < budget) {
      await this.#raise(
        {
          kind: 'budget_threshold',
          workspaceId: key.workspaceId,
          key: workspaceId ? undefined : key,
          fingerprint: `budget_threshold:${workspaceId ?? key.id}:${period}:${start}:refused`,
          severity: 'critical',
          title: `${workspaceId ? `Workspace ${workspaceId}` : `Key "${key.name}"`} has requests refused by its ${name} token budget`,
          message:
            `${refused} request${refused === 1 ? ' was' : 's were'} refused with 429 because ${whose} has ${budget - used} ` +
            `of its ${name} budget of ${budget} tokens left (${used} used), less than each needed. Requests like ` +
            'these are refused until the budget resets. ' +
            (workspaceId
              ? `Raise it with \`keygate workspaces update ${workspaceId} --budget <tokens>/${period}\`.`
              : `Raise it with \`keygate keys update ${key.id} --budget <tokens>/${period}\`.`),
          details: { period, used, budget, refused, period_start: new Date(start).toISOString() },
        },
        rules.budget_threshold.cooldownMinutes,
      );
    }
    if (crossed === undefined) return;
    const fingerprint = `budget_threshold:${workspaceId ?? key.id}:${period}:${start}:${crossed}`;
    if (this.#budgetRaised.has(fingerprint)) return;
    const full = crossed >= 100;
    await this.#raise(
      {
        kind: 'budget_threshold',
        workspaceId: key.workspaceId,
        key: workspaceId ? undefined : key,
        fingerprint,
        severity: full ? 'critical' : crossed >= 80 ? 'warning' : 'info',
        title: `${workspaceId ? `Workspace ${workspaceId}` : `Key "${key.name}"`} has used ${crossed}% of its ${name} token budget`,
        message:
          `${whose} has used ${used} of its ${name} budget of ${budget} tokens (${Math.floor((used / budget) * 100)}%). ` +
          (full
            ? 'Requests are refused with 429 until the budget resets. '
            : 'At 100% requests are refused with 429 until the budget resets. ') +
          (workspaceId
            ? `Raise it with \`keygate workspaces update ${workspaceId} --budget <tokens>/${period}\` if this is expected.`
            : `Raise it with \`keygate keys update ${key.id} --budget <tokens>/${period}\` if this is expected.`),
        details: { period, used, budget, threshold: crossed, period_start: new Date(start).toISOString() },
      },
      rules.budget_threshold.cooldownMinutes,
    );
    this.#budgetRaised.set(fingerprint, true);
  }

  async #raise(
    input: {
      kind: AlertKind;
      workspaceId: string;
      key: KeyRecord | undefined;
      fingerprint: string;
      severity: Severity;
      title: string;
      message: string;
      details: Record<string, unknown>;
    },
    cooldownMinutes: number,
  ): Promise<void> {
    const { alert, fresh } = await this.#store.raiseAlert(
      {
        id: newId('alr'),
        workspaceId: input.workspaceId,
        kind: input.kind,
        fingerprint: input.fingerprint,
        keyId: input.key?.id ?? null,
        severity: input.severity,
        title: input.title,
        message: input.message,
        details: input.details,
        at: this.#clock(),
      },
      cooldownMinutes * MINUTE,
    );
    if (!fresh) return;
    this.#logger.warn({ alertId: alert.id, kind: alert.kind, keyId: alert.keyId }, alert.title);
    this.#notify(alert);
  }

  /** Waits for rule checks in flight (tests, shutdown). */
  /** How many (key, network) pairs are remembered (at most `maxKnownNetworks`). */
  get knownNetworks(): number {
    return this.#networks.size;
  }

  async settle(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
  }

  async close(): Promise<void> {
    this.#evaluation?.stop();
    await this.#evaluation?.running;
    this.#evaluation = undefined;
    await this.settle();
  }
}
