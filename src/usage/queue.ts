/**
 * Write-behind usage metering: records are queued in memory behind the response and written to
 * the store in batches (by size or every flush interval). A failed write keeps the batch for the
 * next attempt; past `maxQueued` the oldest records are dropped and counted. `close()` drains.
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
    if (this.#pending.length >= this.#options.batchSize && !this.#flushing) void this.flush();
  }

  /** Writes everything queued so far (one batch at a time); resolves when done or failed. */
  flush(): Promise<void> {
    if (!this.#flushing) {
      this.#flushing = this.#drain().finally(() => {
        this.#flushing = undefined;
      });
    }
    return this.#flushing;
  }

  async #drain(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending.slice(0, this.#options.batchSize);
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
