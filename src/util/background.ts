/**
 * Background work under supervision: every timer and event listener of the gateway runs through
 * one `Background`, so that nothing done off the request path can end the process. A periodic
 * task, a listener or a one-off piece of background work that throws (synchronously) or rejects
 * is caught here, and:
 *
 * - counted (`failures`, exported as `keygate_background_task_failures_total{task}`), and the
 *   task marked failing (`failing`, exported as `keygate_background_tasks_failing`);
 * - logged once per change of state: when a healthy task starts failing (with the cause's message,
 *   no stack trace: a database outage makes the same error every second), and when it succeeds
 *   again (how long it failed and how many attempts failed). Nothing is logged per attempt;
 * - retried, for a periodic task, after an exponential backoff with jitter (from `retry.initialMs`
 *   doubling up to `retry.maxMs`, each delay drawn between half and all of that), instead of its
 *   interval: a store that is down is not asked again at the interval's rate, and instances that
 *   failed together do not retry together.
 *
 * The clock and the timers are injectable (`timers`), so that tests drive the retries without
 * waiting. Periodic tasks never overlap themselves (the next run is scheduled when one ends).
 */

/** The timers a `Background` uses; `REAL_TIMERS` by default (unref'd: they keep no process alive). */
export interface Timers {
  /** Milliseconds, monotonic. */
  now(): number;
  setTimeout(run: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const REAL_TIMERS: Timers = {
  now: () => performance.now(),
  setTimeout: (run, ms) => setTimeout(run, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** What is logged: pino's `(object, message)` calls, which the gateway's logger has. */
export interface BackgroundLogger {
  error(details: object, message: string): void;
  info(details: object, message: string): void;
}

const SILENT: BackgroundLogger = { error: () => {}, info: () => {} };

export interface BackgroundOptions {
  logger?: BackgroundLogger;
  timers?: Timers;
  /** In [0, 1): the jitter of the retry delays. @default Math.random */
  random?: () => number;
}

export interface RetryPolicy {
  /** The first retry's delay (before jitter). */
  initialMs: number;
  /** The longest delay between two attempts. */
  maxMs: number;
}

export interface PeriodicOptions {
  /** Retries after a failure; default from 1 s (or the interval, if shorter) up to 30 s (or the interval, if longer). */
  retry?: Partial<RetryPolicy>;
}

/** The health of one named task. */
export interface TaskState {
  readonly failing: boolean;
  /** Failed attempts since it last succeeded. */
  readonly attempts: number;
  /** When it started failing (`Timers.now()`), or undefined while it is healthy. */
  readonly since: number | undefined;
  /** The message of the first failure of the current run of failures. */
  readonly cause: string | undefined;
}

/** What a failure is logged as: its message (and code), not its stack. */
export function describeFailure(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    const message = error.message || error.name;
    return typeof code === 'string' && !message.includes(code) ? `${message} (${code})` : message;
  }
  return String(error);
}

function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 120_000) return `${Math.round(ms / 100) / 10} s`;
  return `${Math.round(ms / 6000) / 10} min`;
}

/** Calls `work`, turning a synchronous throw into a rejection. */
function attempt(work: () => unknown): Promise<unknown> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error);
  }
}

class Health implements TaskState {
  failing = false;
  attempts = 0;
  since: number | undefined;
  cause: string | undefined;
  /** Every failure since the start (the Prometheus counter). */
  total = 0;
}

/** A supervised task run every `intervalMs` (or after a backoff while failing); see `Background.every`. */
export class PeriodicTask {
  readonly name: string;
  readonly #background: Background;
  readonly #intervalMs: number;
  readonly #retry: RetryPolicy;
  readonly #run: () => unknown;
  readonly #onStop: (task: PeriodicTask) => void;
  #timer: unknown;
  #running: Promise<void> | undefined;
  #stopped = false;

  constructor(
    background: Background,
    name: string,
    intervalMs: number,
    run: () => unknown,
    options: PeriodicOptions,
    onStop: (task: PeriodicTask) => void,
  ) {
    this.name = name;
    this.#onStop = onStop;
    this.#background = background;
    this.#intervalMs = intervalMs;
    this.#run = run;
    const initialMs = options.retry?.initialMs ?? Math.min(1000, intervalMs);
    this.#retry = {
      initialMs,
      maxMs: Math.max(initialMs, options.retry?.maxMs ?? Math.max(30_000, intervalMs)),
    };
    this.#schedule(intervalMs);
  }

  /** Whether its last attempt failed (it is then retried after a backoff, not on `trigger`). */
  get failing(): boolean {
    return this.#background.state(this.name).failing;
  }

  /**
   * Runs it now, unless it is running already or failing (a failing task waits for its backoff:
   * a caller that triggers it often, such as every request, must not make it retry that often).
   */
  trigger(): void {
    if (this.#stopped || this.#running || this.failing) return;
    this.#background.timers.clearTimeout(this.#timer);
    this.#timer = undefined;
    void this.#go();
  }

  /** The run in progress, if any (resolves when it ends; never rejects). */
  get running(): Promise<void> | undefined {
    return this.#running;
  }

  /** No more runs. A run in progress finishes (await `running`). */
  stop(): void {
    this.#stopped = true;
    this.#background.timers.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#onStop(this);
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = this.#background.timers.setTimeout(() => {
      this.#timer = undefined;
      void this.#go();
    }, ms);
  }

  #go(): Promise<void> {
    const run = this.#background.supervise(this.name, this.#run).then((ok) => {
      this.#running = undefined;
      this.#schedule(
        ok
          ? this.#intervalMs
          : this.#background.backoff(this.#retry, this.#background.state(this.name).attempts),
      );
    });
    this.#running = run;
    return run;
  }
}

export class Background {
  readonly timers: Timers;
  readonly #logger: BackgroundLogger;
  readonly #random: () => number;
  readonly #tasks = new Map<string, Health>();
  readonly #periodic = new Set<PeriodicTask>();

  constructor(options: BackgroundOptions = {}) {
    this.#logger = options.logger ?? SILENT;
    this.timers = options.timers ?? REAL_TIMERS;
    this.#random = options.random ?? Math.random;
  }

  #health(name: string): Health {
    let health = this.#tasks.get(name);
    if (!health) {
      health = new Health();
      this.#tasks.set(name, health);
    }
    return health;
  }

  /** The health of a task (a task never seen is healthy). */
  state(name: string): TaskState {
    return this.#health(name);
  }

  /** Failures per task since the start (every task seen, failed or not). */
  get failures(): ReadonlyMap<string, number> {
    return new Map([...this.#tasks].map(([name, health]) => [name, health.total]));
  }

  /** How many tasks are failing now. */
  get failingCount(): number {
    let n = 0;
    for (const health of this.#tasks.values()) if (health.failing) n++;
    return n;
  }

  /** Records a failure of `name` (logged if it was healthy). Never throws. */
  failed(name: string, error: unknown): void {
    const health = this.#health(name);
    health.total++;
    health.attempts++;
    if (health.failing) return;
    health.failing = true;
    health.since = this.timers.now();
    health.cause = describeFailure(error);
    try {
      this.#logger.error(
        { task: name, error: health.cause },
        `background task ${name} failing: ${health.cause}`,
      );
    } catch {}
  }

  /** Records a success of `name` (logged if it was failing). Never throws. */
  succeeded(name: string): void {
    const health = this.#tasks.get(name);
    if (!health?.failing) return;
    const failedForMs = this.timers.now() - (health.since ?? this.timers.now());
    const attempts = health.attempts;
    health.failing = false;
    health.attempts = 0;
    health.since = undefined;
    health.cause = undefined;
    try {
      this.#logger.info(
        { task: name, failedForMs: Math.round(failedForMs), failedAttempts: attempts },
        `background task ${name} recovered after ${duration(failedForMs)} and ${attempts} failed attempt${attempts === 1 ? '' : 's'}`,
      );
    } catch {}
  }

  /** Runs `work` once, recording its outcome; resolves with whether it succeeded (never rejects). */
  supervise(name: string, work: () => unknown): Promise<boolean> {
    return attempt(work).then(
      () => {
        this.succeeded(name);
        return true;
      },
      (error: unknown) => {
        this.failed(name, error);
        return false;
      },
    );
  }

  /** Background work started now whose outcome nobody awaits (instead of `void promise`). */
  run(name: string, work: () => unknown): void {
    void this.supervise(name, work);
  }

  /**
   * A listener (or callback) whose throw or rejection is recorded as a failure of `name` instead
   * of reaching the emitter (where an exception would end the process). A listener that returns
   * normally counts as a success only when it returned a promise (plain listeners are not tracked
   * as healthy: many of them run for every message).
   */
  guard<A extends unknown[]>(name: string, listener: (...args: A) => unknown): (...args: A) => void {
    return (...args: A) => {
      let result: unknown;
      try {
        result = listener(...args);
      } catch (error) {
        this.failed(name, error);
        return;
      }
      if (result instanceof Promise)
        result.then(
          () => this.succeeded(name),
          (error: unknown) => this.failed(name, error),
        );
    };
  }

  /** `work` every `intervalMs`, supervised (see the top of this file). */
  every(name: string, intervalMs: number, work: () => unknown, options: PeriodicOptions = {}): PeriodicTask {
    const task = new PeriodicTask(this, name, Math.max(1, intervalMs), work, options, (t) =>
      this.#periodic.delete(t),
    );
    this.#periodic.add(task);
    return task;
  }

  /** The delay before retry number `attempts` (1 = the first), jittered. */
  backoff(retry: RetryPolicy, attempts: number): number {
    const base = Math.min(retry.maxMs, retry.initialMs * 2 ** Math.min(30, Math.max(0, attempts - 1)));
    return Math.round(base / 2 + this.#random() * (base / 2));
  }

  /** Stops every periodic task made here; waits for the runs in progress. */
  async stop(): Promise<void> {
    const tasks = [...this.#periodic];
    for (const task of tasks) task.stop();
    await Promise.all(tasks.map((task) => task.running));
  }
}

const guarded = new Map<Background, BackgroundLogger>();
let processListener: ((reason: unknown) => void) | undefined;

/**
 * The last resort: a promise rejected with nobody to handle it is a bug, and Node would end the
 * process for it. While at least one gateway runs, it is instead recorded by every registered
 * `Background`: counted as a failure of the task `unhandled_rejection`, and the first one logged
 * with its stack (it is a bug to fix; a bug on the request path would otherwise fill the log).
 * Returns the function that unregisters it; once none is left, Node's default applies again.
 */
export function guardUnhandledRejections(background: Background, logger: BackgroundLogger): () => void {
  guarded.set(background, logger);
  if (!processListener) {
    processListener = (reason: unknown) => {
      for (const [b, log] of guarded) {
        const first = !b.state('unhandled_rejection').failing;
        b.failed('unhandled_rejection', reason);
        if (first)
          try {
            log.error(
              { err: reason },
              'an unhandled promise rejection (a bug): it is counted, the process goes on',
            );
          } catch {}
      }
    };
    process.on('unhandledRejection', processListener);
  }
  return () => {
    guarded.delete(background);
    if (guarded.size === 0 && processListener) {
      process.off('unhandledRejection', processListener);
      processListener = undefined;
    }
  };
}
