/**
 * Waiting in tests: on a condition with a deadline, or on a promise with a bound, never on a
 * guessed time. A fixed sleep is right on a fast machine and wrong on a busy one (CI runs on two
 * shared cores), and wastes its full length everywhere else.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/** How long `eventually` waits unless told: long enough for a loaded machine, short for a hang. */
export const WAIT_MS = 10_000;

/** What `eventually` keeps waiting on. */
type Pending = undefined | null | false;

/**
 * Calls `probe` every `intervalMs` until it returns something other than `undefined`, `null` or
 * `false`, and resolves to that; throws, naming `what`, once `timeoutMs` have passed. An error
 * thrown by `probe` ends the wait (catch inside the probe what is expected on the way).
 */
export async function eventually<T>(
  probe: () => T | Promise<T>,
  what: string | (() => string),
  timeoutMs = WAIT_MS,
  intervalMs = 20,
): Promise<Exclude<T, Pending>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== null && value !== false) return value as Exclude<T, Pending>;
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`,
      );
    await sleep(intervalMs);
  }
}

/** `promise`, or a rejection naming `what` if it has not settled within `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves once the wall clock has passed `epochMs` (a real expiry or grace end, not a guess). */
export async function pastTime(epochMs: number): Promise<void> {
  for (let left = epochMs - Date.now(); left >= 0; left = epochMs - Date.now()) await sleep(left + 1);
}
