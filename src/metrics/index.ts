/**
 * The gateway's Prometheus metrics (served at `/metrics`, see docs/metrics.md): one registry of
 * its own, the process metrics of prom-client, and the gateway's counters, histograms and gauges.
 *
 * A request is recorded once, when it is finished (`recordRequest`), from what the gateway knows
 * about it by then. The per-request cost is a few map lookups and prom-client increments: the
 * label children are created once per label combination and kept. What other components already
 * count (the key cache, the usage queue, requests in flight) is read at scrape time.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import {
  CONNECTION_REFUSAL_REASONS,
  CONNECTION_TIMEOUT_STAGES,
  type ConnectionRefusalReason,
  type ConnectionTimeoutStage,
} from '../http/connections.ts';
import {
  AUTH_FAILURE_REASONS,
  DEFAULT_MODEL_LABEL_LIMIT,
  FAILURE_CLASSES,
  ModelLabels,
  NO_MODEL,
  REFUSAL_REASONS,
  ROUTES,
  type RouteLabel,
  routeOf,
  UPSTREAM_ERROR_KINDS,
} from './labels.ts';

export { DEFAULT_MODEL_LABEL_LIMIT, ModelLabels, routeOf } from './labels.ts';

/** What the gateway knows about a finished `/v1` request (its `Exchange` has these fields). */
export interface RequestOutcome {
  /** The request path, without the query string. */
  readonly endpoint: string;
  readonly status: number;
  /** The model asked for (after aliases), when the request got that far. */
  readonly model: string | null;
  /** Set once a valid key was presented. */
  readonly key: object | undefined;
  /** Why the gateway refused or failed the request (`key_unknown`, `limit_rpm`, …). */
  readonly failure: string | undefined;
  /** Time until the provider's response head, when the request was forwarded. */
  readonly upstreamMs: number | null;
  /** Time from the request's arrival to the first byte of the provider's body passed on. */
  readonly ttftMs: number | null;
  /** True when the provider answered with an event stream. */
  readonly stream: boolean;
  readonly usage: { readonly promptTokens: number; readonly completionTokens: number } | undefined;
}

/** Counters kept by other components, read at scrape time. */
export interface MetricSources {
  /** The key verifier (`KeyVerifier`). */
  keyCache: { readonly hits: number; readonly misses: number; readonly cacheSize: number };
  /** The usage write-behind queue (`UsageQueue`). */
  usageQueue: { readonly depth: number; readonly dropped: number; readonly written: number };
  /** Requests being served right now. */
  inflight: () => number;
  /** The provider pool (`Upstream.stats`): its connections, those in use and the requests waiting. */
  upstreamPool?: () => { readonly size: number; readonly inUse: number; readonly queued: number };
  /** Supervised background tasks (`Background`, util/background.ts): failures per task, and how many fail now. */
  background?: { readonly failures: ReadonlyMap<string, number>; readonly failingCount: number };
  /** Client connections (`ConnectionGuard`): open now, refused at accept, closed by a timeout. */
  connections?: {
    readonly open: number;
    readonly refused: Readonly<Record<ConnectionRefusalReason, number>>;
    readonly timedOut: Readonly<Record<ConnectionTimeoutStage, number>>;
  };
}

export interface MetricsOptions {
  sources: MetricSources;
  /** Distinct model label values before new models count as `other` (default 200). */
  modelLabelLimit?: number;
  /** prom-client's process and Node.js metrics (default true). */
  defaultMetrics?: boolean;
}

/** Seconds, from half a millisecond (the gateway's own refusals) to the provider's slowest answers. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

type TokenChildren = { prompt: Counter.Internal; completion: Counter.Internal };

export class Metrics {
  readonly registry = new Registry();
  /** Requests that could not be recorded (see recordRequest); 0 unless there is a bug. */
  recordErrors = 0;
  readonly #models: ModelLabels;
  readonly #requests: Counter<'route' | 'status' | 'model'>;
  readonly #tokens: Counter<'type' | 'model'>;
  /** route → status → model → child. */
  readonly #requestChildren = new Map<RouteLabel, Map<number, Map<string, Counter.Internal>>>();
  readonly #tokenChildren = new Map<string, TokenChildren>();
  readonly #duration = new Map<RouteLabel, Histogram.Internal<'route'>>();
  readonly #upstreamDuration = new Map<RouteLabel, Histogram.Internal<'route'>>();
  readonly #ttfb = new Map<RouteLabel, Histogram.Internal<'route'>>();
  /** `exchange.failure` → the counter child it increments. */
  readonly #failureChildren = new Map<string, Counter.Internal>();

  constructor(options: MetricsOptions) {
    const register = this.registry;
    const registers = [register];
    const { keyCache, usageQueue, inflight, connections, background } = options.sources;
    this.#models = new ModelLabels(options.modelLabelLimit ?? DEFAULT_MODEL_LABEL_LIMIT);
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register });

    this.#requests = new Counter({
      name: 'keygate_requests_total',
      help: 'Requests to /v1, by route template, HTTP status (499: the client went away) and model.',
      labelNames: ['route', 'status', 'model'],
      registers,
    });
    const histogram = (name: string, help: string) =>
      new Histogram({ name, help, labelNames: ['route'], buckets: [...LATENCY_BUCKETS], registers });
    const duration = histogram(
      'keygate_request_duration_seconds',
      'Time from the arrival of a /v1 request to the end of its response, by route template.',
    );
    const upstreamDuration = histogram(
      'keygate_upstream_duration_seconds',
      "Time from forwarding a request to the provider until the provider's response head, by route template.",
    );
    const ttfb = histogram(
      'keygate_time_to_first_byte_seconds',
      'Streamed responses: time from the arrival of the request to the first byte of the stream passed on.',
    );
    for (const route of ROUTES) {
      this.#duration.set(route, duration.labels(route));
      this.#upstreamDuration.set(route, upstreamDuration.labels(route));
      this.#ttfb.set(route, ttfb.labels(route));
    }
    this.#tokens = new Counter({
      name: 'keygate_tokens_total',
      help: "Tokens reported by the provider's usage, by type (prompt, completion) and model.",
      labelNames: ['type', 'model'],
      registers,
    });

    const authFailures = new Counter({
      name: 'keygate_auth_failures_total',
      help: 'Requests to /v1 refused for want of a valid key, by reason.',
      labelNames: ['reason'],
      registers,
    });
    const refusals = new Counter({
      name: 'keygate_refusals_total',
      help: "Requests with a valid key refused by the key's policy, rate limits or budgets, by reason.",
      labelNames: ['reason'],
      registers,
    });
    const upstreamErrors = new Counter({
      name: 'keygate_upstream_errors_total',
      help: 'Requests the provider failed: timeout, unreachable, a response broken off midway, or no connection free in time (busy).',
      labelNames: ['kind'],
      registers,
    });
    // Every reason starts at 0, so that rate() sees the first refusal.
    for (const reason of AUTH_FAILURE_REASONS) authFailures.labels(reason).inc(0);
    for (const reason of REFUSAL_REASONS) refusals.labels(reason).inc(0);
    for (const kind of UPSTREAM_ERROR_KINDS) upstreamErrors.labels(kind).inc(0);
    for (const [failure, cls] of FAILURE_CLASSES) {
      const child =
        cls.counter === 'auth'
          ? authFailures.labels(cls.reason)
          : cls.counter === 'refusal'
            ? refusals.labels(cls.reason)
            : upstreamErrors.labels(cls.kind);
      this.#failureChildren.set(failure, child);
    }

    // Mirrors of counters kept elsewhere: set from them at scrape time.
    const mirror = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    mirror(
      'keygate_key_cache_hits_total',
      'Key verifications answered by the in-process cache.',
      () => keyCache.hits,
    );
    mirror(
      'keygate_key_cache_misses_total',
      'Key verifications that had to ask the store (well-formed keys only).',
      () => keyCache.misses,
    );
    gauge(
      'keygate_key_cache_entries',
      'Entries in the key cache (known keys and remembered unknown hashes).',
      () => keyCache.cacheSize,
    );
    gauge(
      'keygate_usage_queue_depth',
      'Usage records waiting to be written to the store.',
      () => usageQueue.depth,
    );
    mirror(
      'keygate_usage_records_dropped_total',
      'Usage records dropped because the usage queue was full.',
      () => usageQueue.dropped,
    );
    mirror(
      'keygate_usage_records_written_total',
      'Usage records written to the store.',
      () => usageQueue.written,
    );
    gauge('keygate_inflight_requests', 'Requests to /v1 being served right now.', inflight);
    const upstreamPool = options.sources.upstreamPool;
    if (upstreamPool) {
      gauge(
        'keygate_upstream_pool_connections',
        'Connections to the provider (upstream.connections): requests in flight to it at most.',
        () => upstreamPool().size,
      );
      gauge(
        'keygate_upstream_pool_in_use',
        'Requests in flight to the provider, each holding a connection (a stream for its whole length).',
        () => upstreamPool().inUse,
      );
      gauge(
        'keygate_upstream_pool_queued',
        'Requests waiting for a free provider connection (up to upstream.queueTimeoutMs, then 503).',
        () => upstreamPool().queued,
      );
    }
    if (background) {
      new Counter({
        name: 'keygate_background_task_failures_total',
        help: 'Failed runs of background tasks (timers and listeners: usage writes, alert checks, the key change poll...), by task.',
        labelNames: ['task'],
        registers,
        collect() {
          this.reset();
          for (const [task, failures] of background.failures) this.labels(task).inc(failures);
        },
      });
      gauge(
        'keygate_background_tasks_failing',
        'Background tasks whose last run failed (they are retried with a backoff).',
        () => background.failingCount,
      );
    }
    if (connections) {
      gauge(
        'keygate_connections_open',
        'Client connections open (TLS handshakes and idle kept-alive connections included).',
        () => connections.open,
      );
      // Labelled mirrors: every label value from the start, at 0, so that rate() sees the first one.
      const labelledMirror = <L extends string>(
        name: string,
        help: string,
        label: string,
        values: readonly L[],
        read: () => Readonly<Record<L, number>>,
      ) =>
        new Counter({
          name,
          help,
          labelNames: [label],
          registers,
          collect() {
            const counts = read();
            this.reset();
            for (const value of values) this.labels(value).inc(counts[value]);
          },
        });
      labelledMirror(
        'keygate_connections_refused_total',
        'Client connections closed as soon as accepted: server.maxConnections reached, or their address at server.maxConnectionsPerAddress.',
        'reason',
        CONNECTION_REFUSAL_REASONS,
        () => connections.refused,
      );
      labelledMirror(
        'keygate_connections_timed_out_total',
        'Client connections closed for taking too long: their TLS handshake, or their request (head or body).',
        'stage',
        CONNECTION_TIMEOUT_STAGES,
        () => connections.timedOut,
      );
    }
  }

  /**
   * Records one finished request. Called once per request; does no I/O, and never throws: it runs
   * in a response's close handler, where an exception would take the process down.
   */
  recordRequest(outcome: RequestOutcome, latencyMs: number): void {
    try {
      this.#record(outcome, latencyMs);
    } catch {
      // prom-client refuses only non-finite values and negative increments, which the gateway
      // does not produce; should one slip through, that request goes (partly) unrecorded.
      this.recordErrors++;
    }
  }

  #record(outcome: RequestOutcome, latencyMs: number): void {
    const route = routeOf(outcome.endpoint);
    const status = outcome.status;
    const upstreamMs = outcome.upstreamMs;
    const model =
      outcome.key === undefined
        ? NO_MODEL
        : this.#models.label(outcome.model, upstreamMs !== null && status >= 200 && status < 300);
    this.#requestChild(route, status, model).inc();
    this.#duration.get(route)!.observe(latencyMs / 1000);
    if (upstreamMs !== null) this.#upstreamDuration.get(route)!.observe(upstreamMs / 1000);
    if (outcome.stream && outcome.ttftMs !== null) this.#ttfb.get(route)!.observe(outcome.ttftMs / 1000);
    const usage = outcome.usage;
    if (usage) {
      const tokens = this.#tokensFor(model);
      tokens.prompt.inc(usage.promptTokens);
      tokens.completion.inc(usage.completionTokens);
    }
    if (outcome.failure !== undefined) this.#failureChildren.get(outcome.failure)?.inc();
  }

  /** The exposition text and its content type (`text/plain; version=0.0.4; charset=utf-8`). */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  #requestChild(route: RouteLabel, status: number, model: string): Counter.Internal {
    let byStatus = this.#requestChildren.get(route);
    if (!byStatus) {
      byStatus = new Map();
      this.#requestChildren.set(route, byStatus);
    }
    let byModel = byStatus.get(status);
    if (!byModel) {
      byModel = new Map();
      byStatus.set(status, byModel);
    }
    let child = byModel.get(model);
    if (!child) {
      child = this.#requests.labels(route, String(status), model);
      byModel.set(model, child);
    }
    return child;
  }

  #tokensFor(model: string): TokenChildren {
    let children = this.#tokenChildren.get(model);
    if (!children) {
      children = {
        prompt: this.#tokens.labels('prompt', model),
        completion: this.#tokens.labels('completion', model),
      };
      this.#tokenChildren.set(model, children);
    }
    return children;
  }
}
