/** Injected timers (util/background.ts `Timers`) for tests that drive retries and backoffs by hand. */

/** Timers that run only when the test says so (the queue's flush interval and its retries). */
export class ManualTimers {
  at = 0;
  readonly pending = new Map<number, { due: number; run: () => void }>();
  #next = 1;
  now = () => this.at;
  setTimeout = (run: () => void, ms: number): number => {
    const id = this.#next++;
    this.pending.set(id, { due: this.at + ms, run });
    return id;
  };
  clearTimeout = (id: unknown) => {
    this.pending.delete(id as number);
  };
  /** Moves the clock on by `ms`, running what falls due (in order), letting each settle. */
  async advance(ms: number): Promise<void> {
    const end = this.at + ms;
    for (;;) {
      const due = [...this.pending].filter(([, t]) => t.due <= end).sort((a, b) => a[1].due - b[1].due)[0];
      if (!due) break;
      this.pending.delete(due[0]);
      this.at = due[1].due;
      due[1].run();
      for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
    }
    this.at = end;
  }
}
