/**
 * Write-behind usage metering: records are queued in memory behind the response and written to
 * the store in batches: whenever a whole batch (`batchSize`) is queued, and every flush interval
 * for what is queued then. Records that arrive while a batch is being written wait for a whole
 * batch or the next interval; they do not follow it at once in a small batch of their own (with a
 * store that takes milliseconds per write, PostgreSQL, that would turn a steady load into a
 * stream of tiny batches, each paying a statement's fixed cost). A failed write keeps the batch
 * for the next attempt; past `maxQueued` the oldest records are dropped and counted. `close()`
 * drains.
 */
import type { Store, UsageRecord } from '../store/types.ts';

export interface UsageQueueOptions {
  store: Store;
  flushIntervalMs: number;
  batchSize: number;
  maxQueued: number;
  onError?: (error: unknown) => void;
  onDrop?: (count: number) => void;
}

export class UsageQueue {
  readonly #options: UsageQueueOptions;
  #pending: UsageRecord[] = [];
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  /** How many records at the front of `#pending` are being written right now. */
  #writing = 0;
  /** Records dropped because the queue was full. */
  dropped = 0;
  written = 0;

  constructor(options: UsageQueueOptions) {
    this.#options = options;
    this.#timer = setInterval(() => void this.flush(), options.flushIntervalMs);
    this.#timer.unref();
  }

  get depth(): number {
    return this.#pending.length;
  }

  push(record: UsageRecord): void {
    this.#pending.push(record);
    const overflow = this.#pending.length - this.#options.maxQueued;
    if (overflow > 0) {
      this.#pending.splice(this.#writing, overflow);
      this.dropped += overflow;
      this.#options.onDrop?.(overflow);
    }
    if (this.#pending.length >= this.#options.batchSize && !this.#flushing) void this.#start(false);
  }

  /**
   * Writes everything queued so far (one batch at a time), after the write in progress if there
   * is one; resolves when done or failed.
   */
  flush(): Promise<void> {
    return this.#start(true);
  }

  #start(all: boolean): Promise<void> {
    if (this.#flushing) return all ? this.#flushing.then(() => this.#start(true)) : this.#flushing;
    this.#flushing = this.#drain(all).finally(() => {
      this.#flushing = undefined;
    });
    return this.#flushing;
  }

  /** Whole batches, and with `all` also what was queued when it began (in batches). */
  async #drain(all: boolean): Promise<void> {
    let owed = all ? this.#pending.length : 0;
    const { batchSize } = this.#options;
    while (this.#pending.length > 0 && (owed > 0 || this.#pending.length >= batchSize)) {
      owed -= batchSize;
      const batch = this.#pending.slice(0, batchSize);
      this.#writing = batch.length;
      try {
        await this.#options.store.recordUsage(batch);
      } catch (error) {
        this.#options.onError?.(error);
        return; // keep the batch; the next flush retries it
      } finally {
        this.#writing = 0;
      }
      // Remove exactly what was written (new records may have been pushed meanwhile).
      this.#pending.splice(0, batch.length);
      this.written += batch.length;
    }
  }

  /** Stops the timer and writes what is left. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.flush();
    if (this.#pending.length > 0) await this.flush();
  }
}
