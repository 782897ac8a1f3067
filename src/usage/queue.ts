/**
 * Write-behind usage metering: records are queued in memory behind the response and written to
 * the store in batches: whenever a whole batch (`batchSize`) is queued, and every flush interval
 * for what is queued then. Records that arrive while a batch is being written wait for a whole
 * batch or the next interval; they do not follow it at once in a small batch of their own (with a
 * store that takes milliseconds per write, PostgreSQL, that would turn a steady load into a
 * stream of tiny batches, each paying a statement's fixed cost). A failed write keeps the batch
 * for the next attempt; past `maxQueued` the oldest records are dropped and counted. `close()`
 * drains, and hands back what it could not write (the caller keeps it: see `http/server.ts`).
 *
 * The interval's flush is a supervised background task (`usage_flush`, util/background.ts): while
 * writes fail it is retried after a growing backoff rather than every interval, a whole batch
 * queued no longer starts a write of its own (a store that is down is not asked once per request),
 * and the failure is logged when it starts and when it ends, not per attempt.
 */
import type { Store, UsageRecord } from '../store/types.ts';
import { Background, type PeriodicTask } from '../util/background.ts';

export const USAGE_FLUSH_TASK = 'usage_flush';
/** Failing while the queue is full and drops records; recovered at the next write. */
export const USAGE_QUEUE_FULL_TASK = 'usage_queue_full';

export interface UsageQueueOptions {
  store: Store;
  flushIntervalMs: number;
  batchSize: number;
  maxQueued: number;
  /** Supervises the flushes (one of its own, which logs nothing, by default). */
  background?: Background;
  /** The longest wait between two attempts while writes fail. @default 30 s */
  maxRetryMs?: number;
  /** Every failed write (the background task logs the changes of state). */
  onError?: (error: unknown) => void;
  onDrop?: (count: number) => void;
}

/** What a drain ended with: a failed write's error, or none. */
type Outcome = { error: unknown } | undefined;

export class UsageQueue {
  readonly #options: UsageQueueOptions;
  readonly #background: Background;
  readonly #task: PeriodicTask;
  #pending: UsageRecord[] = [];
  #flushing: Promise<Outcome> | undefined;
  /** How many records at the front of `#pending` are being written right now. */
  #writing = 0;
  /** Records dropped because the queue was full. */
  dropped = 0;
  written = 0;

  constructor(options: UsageQueueOptions) {
    this.#options = options;
    this.#background = options.background ?? new Background();
    this.#task = this.#background.every(
      USAGE_FLUSH_TASK,
      options.flushIntervalMs,
      async () => {
        const outcome = await this.#start(true);
        if (outcome) {
          this.#options.onError?.(outcome.error);
          throw outcome.error;
        }
      },
      { retry: { initialMs: options.flushIntervalMs, maxMs: options.maxRetryMs ?? 30_000 } },
    );
  }

  get depth(): number {
    return this.#pending.length;
  }

  /** Whether the last write failed (writes are then retried from the timer only). */
  get failing(): boolean {
    return this.#task.failing;
  }

  push(record: UsageRecord): void {
    this.#pending.push(record);
    const overflow = this.#pending.length - this.#options.maxQueued;
    if (overflow > 0) {
      this.#pending.splice(this.#writing, overflow);
      this.dropped += overflow;
      this.#background.failed(
        USAGE_QUEUE_FULL_TASK,
        new Error(
          `usage queue full: records dropped, the oldest first (usage.maxQueued = ${this.#options.maxQueued})`,
        ),
      );
      this.#options.onDrop?.(overflow);
    }
    if (this.#pending.length >= this.#options.batchSize && !this.#flushing && !this.#task.failing)
      void this.#start(false).then((outcome) => this.#report(outcome));
  }

  #report(outcome: Outcome): void {
    if (outcome) {
      this.#background.failed(USAGE_FLUSH_TASK, outcome.error);
      this.#options.onError?.(outcome.error);
    } else this.#background.succeeded(USAGE_FLUSH_TASK);
  }

  /**
   * Writes everything queued so far (one batch at a time), after the write in progress if there
   * is one; resolves when done or failed (a failure is reported, and the records stay queued).
   */
  async flush(): Promise<void> {
    this.#report(await this.#start(true));
  }

  #start(all: boolean): Promise<Outcome> {
    if (this.#flushing) return all ? this.#flushing.then(() => this.#start(true)) : this.#flushing;
    const flushing = this.#drain(all).finally(() => {
      this.#flushing = undefined;
    });
    this.#flushing = flushing;
    return flushing;
  }

  /** Whole batches, and with `all` also what was queued when it began (in batches). Never rejects. */
  async #drain(all: boolean): Promise<Outcome> {
    let owed = all ? this.#pending.length : 0;
    const { batchSize } = this.#options;
    while (this.#pending.length > 0 && (owed > 0 || this.#pending.length >= batchSize)) {
      owed -= batchSize;
      const batch = this.#pending.slice(0, batchSize);
      this.#writing = batch.length;
      try {
        await this.#options.store.recordUsage(batch);
      } catch (error) {
        return { error }; // keep the batch; the next flush retries it
      } finally {
        this.#writing = 0;
      }
      // Remove exactly what was written (new records may have been pushed meanwhile).
      this.#pending.splice(0, batch.length);
      this.written += batch.length;
      this.#background.succeeded(USAGE_QUEUE_FULL_TASK);
    }
    return undefined;
  }

  /**
   * Stops the timer and writes what is left (a second attempt if the first failed). Returns the
   * records that could still not be written, which leave the queue: the caller keeps them
   * elsewhere or reports them lost.
   */
  async close(): Promise<UsageRecord[]> {
    this.#task.stop();
    await this.#task.running;
    await this.flush();
    if (this.#pending.length > 0) await this.flush();
    return this.#pending.splice(0);
  }
}
