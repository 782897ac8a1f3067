/**
 * Exact limits for `keygate start --workers N` without Redis: the cluster's primary process keeps
 * the one in-memory limiter (exact: its admits run one at a time on its event loop) and the
 * workers ask it over the cluster's IPC channel.
 *
 * - A worker's admits, settles and forgets of one event-loop turn travel as one message (flushed
 *   with setImmediate, so a lone request waits for nothing but the round trip). Settles do not
 *   send a message by themselves: they go with the next admit's, or alone after 2 ms (a slot is
 *   freed up to 2 ms later; nothing is counted twice or lost).
 * - The primary keeps the tickets and hands the worker a number for each; when a worker dies, the
 *   primary settles its open tickets at their reservation (the requests' outcome is unknown, and a
 *   client must not lower its bill by a crash), which frees their concurrency slots.
 * - Budget counters are seeded by the primary from its own store connection, as in one process.
 * - An admit the primary has not answered within `timeoutMs` (5 s by default: a primary stuck on
 *   its store) is refused as unavailable (503), swept once a second or so rather than timed one
 *   by one. Should the answer come later and admit it, the worker settles that ticket at 0 at
 *   once: nobody else would, and its slot and reservation would stay taken.
 *
 * The channel is the worker's `process` on one side and the cluster `Worker` on the other; any
 * pair of objects with `send` and 'message' events will do (the tests use an in-process pair).
 */

import { Background, type PeriodicTask } from '../util/background.ts';
import type { Admission, Limiter, LimitSubject, Ticket } from './types.ts';
import { LimiterUnavailableError, SETTLE_DELAY_MS } from './types.ts';

/** One end of the channel between a worker and the primary. */
export interface LimitsChannel {
  send(message: unknown, callback?: (error: Error | null) => void): boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
  off(event: 'message', listener: (message: unknown) => void): unknown;
}

type Op =
  | { op: 'admit'; id: number; subject: LimitSubject; estimate: number; now?: number | undefined }
  | { op: 'settle'; ticket: number; tokens: number; now?: number | undefined }
  | { op: 'forget'; keyId: string };

/** An admission as it travels: the ticket is the primary's number for it; a refusal as it is. */
type WireAdmission =
  | { ok: true; ticket: number; estimatedTokens: number; admittedAt: number; headers: Record<string, string> }
  | Extract<Admission, { ok: false }>;

type Answer =
  | { id: number; admission: WireAdmission }
  | { id: number; error: 'unavailable'; retryAfterSeconds: number }
  | { id: number; error: 'failed'; message: string };

/** Worker → primary. */
interface LimitsRequest {
  keygate: 'limits';
  ops: Op[];
}
/** Primary → worker. */
interface LimitsReply {
  keygate: 'limits';
  answers: Answer[];
}

function isLimitsMessage(message: unknown): message is Record<string, unknown> {
  return (
    typeof message === 'object' && message !== null && (message as { keygate?: unknown }).keygate === 'limits'
  );
}

class IpcTicket implements Ticket {
  readonly remote: number;
  readonly keyId: string;
  readonly workspaceId: string;
  readonly estimatedTokens: number;
  readonly admittedAt: number;
  settled = false;

  constructor(remote: number, subject: LimitSubject, estimatedTokens: number, admittedAt: number) {
    this.remote = remote;
    this.keyId = subject.keyId;
    this.workspaceId = subject.workspaceId;
    this.estimatedTokens = estimatedTokens;
    this.admittedAt = admittedAt;
  }
}

interface Waiting {
  subject: LimitSubject;
  resolve: (admission: Admission) => void;
  reject: (error: Error) => void;
  /** When it was asked (performance.now()). */
  at: number;
}

/** Admits refused by timeout remembered for a late answer, at most. */
const MAX_ABANDONED = 10_000;

/** How long a worker waits for the primary's answer to an admit, by default. */
export const IPC_ADMIT_TIMEOUT_MS = 5_000;

export interface IpcLimiterOptions {
  /** An admit unanswered this long is refused as unavailable (503); 5 s by default. */
  timeoutMs?: number;
  /** Supervises the sweeper and the message listener (one of its own, which logs nothing, by default). */
  background?: Background;
}

/** The background task of the limits' messages and timers (util/background.ts). */
export const LIMITS_IPC_TASK = 'limits_ipc';

/** The worker's side: a Limiter whose state lives in the primary. */
export class IpcLimiter implements Limiter {
  readonly #channel: LimitsChannel;
  readonly #waiting = new Map<number, Waiting>();
  #next = 1;
  #outbox: Op[] = [];
  #flushing: NodeJS.Immediate | undefined;
  /** Sends settles that no admit took along. */
  #lazy: NodeJS.Timeout | undefined;
  #closed = false;
  readonly #timeoutMs: number;
  /** Refuses the admits the primary has not answered in time. */
  readonly #sweeper: PeriodicTask;
  /** `#onMessage`, supervised: a malformed answer is recorded, not thrown at the process. */
  readonly #listener: (message: unknown) => void;
  /** Admits refused by timeout: a late answer that admitted one is settled at once. */
  readonly #abandoned = new Set<number>();

  constructor(channel: LimitsChannel, options: IpcLimiterOptions = {}) {
    this.#channel = channel;
    this.#timeoutMs = options.timeoutMs ?? IPC_ADMIT_TIMEOUT_MS;
    const background = options.background ?? new Background();
    this.#listener = background.guard(LIMITS_IPC_TASK, this.#onMessage);
    channel.on('message', this.#listener);
    const sweep = Math.max(10, Math.min(1000, this.#timeoutMs / 4));
    this.#sweeper = background.every(LIMITS_IPC_TASK, sweep, () => this.#expire(), {
      retry: { initialMs: sweep, maxMs: sweep },
    });
  }

  admit(subject: LimitSubject, estimatedTokens: number, now?: number): Promise<Admission> {
    // Closed (or cut off from the primary): refused as unavailable, 503 with Retry-After.
    if (this.#closed) throw new LimiterUnavailableError(1);
    const id = this.#next++;
    this.#queue({ op: 'admit', id, subject, estimate: estimatedTokens, now });
    const at = performance.now();
    return new Promise<Admission>((resolve, reject) =>
      this.#waiting.set(id, { subject, resolve, reject, at }),
    );
  }

  /** Refuses, as unavailable, the admits waiting longer than the timeout (the oldest come first). */
  #expire(): void {
    const before = performance.now() - this.#timeoutMs;
    for (const [id, waiting] of this.#waiting) {
      if (waiting.at > before) break;
      this.#waiting.delete(id);
      this.#abandoned.add(id);
      // A primary that never answers again must not make this grow without end.
      if (this.#abandoned.size > MAX_ABANDONED)
        this.#abandoned.delete(this.#abandoned.values().next().value ?? 0);
      waiting.reject(new LimiterUnavailableError(1));
    }
  }

  settle(ticket: Ticket, actualTokens: number, now?: number): void {
    if (!(ticket instanceof IpcTicket) || ticket.settled) return;
    ticket.settled = true;
    this.#queue({ op: 'settle', ticket: ticket.remote, tokens: actualTokens, now }, true);
  }

  forget(keyId: string): void {
    this.#queue({ op: 'forget', keyId });
  }

  close(): void {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    this.#sweeper.stop();
    this.#channel.off('message', this.#listener);
    const error = new LimiterUnavailableError(1);
    for (const waiting of this.#waiting.values()) waiting.reject(error);
    this.#waiting.clear();
  }

  /**
   * Adds an op to the next message. A settle (`lazy`: nobody waits for its answer) does not send
   * the message by itself: it goes with the next admit's, or alone after SETTLE_DELAY_MS, so that
   * under load a request costs one message to the primary, not two.
   */
  #queue(op: Op, lazy = false): void {
    if (this.#closed) return;
    this.#outbox.push(op);
    if (this.#flushing) return;
    if (!lazy) this.#flushing = setImmediate(() => this.#flush());
    else this.#lazy ??= setTimeout(() => this.#flush(), SETTLE_DELAY_MS);
  }

  #flush(): void {
    if (this.#flushing) clearImmediate(this.#flushing);
    this.#flushing = undefined;
    if (this.#lazy) clearTimeout(this.#lazy);
    this.#lazy = undefined;
    const ops = this.#outbox;
    if (ops.length === 0) return;
    this.#outbox = [];
    const request: LimitsRequest = { keygate: 'limits', ops };
    try {
      this.#channel.send(request, (error) => {
        if (error) this.#unanswered(ops);
      });
    } catch {
      this.#unanswered(ops);
    }
  }

  /** The primary cannot be reached: the admits of these ops are refused as unavailable (503). */
  #unanswered(ops: Op[]): void {
    for (const op of ops) {
      if (op.op !== 'admit') continue;
      const waiting = this.#waiting.get(op.id);
      this.#waiting.delete(op.id);
      waiting?.reject(new LimiterUnavailableError(1));
    }
  }

  readonly #onMessage = (message: unknown): void => {
    if (!isLimitsMessage(message) || !Array.isArray(message.answers)) return;
    for (const answer of (message as unknown as LimitsReply).answers) {
      const waiting = this.#waiting.get(answer.id);
      if (!waiting) {
        if (this.#abandoned.delete(answer.id) && 'admission' in answer && answer.admission.ok)
          this.#queue({ op: 'settle', ticket: answer.admission.ticket, tokens: 0 }, true);
        continue;
      }
      this.#waiting.delete(answer.id);
      if ('error' in answer) {
        waiting.reject(
          answer.error === 'unavailable'
            ? new LimiterUnavailableError(answer.retryAfterSeconds)
            : new Error(`the primary's limiter failed: ${answer.message}`),
        );
        continue;
      }
      const a = answer.admission;
      if (a.ok) {
        const ticket = new IpcTicket(a.ticket, waiting.subject, a.estimatedTokens, a.admittedAt);
        waiting.resolve({ ok: true, ticket, headers: a.headers });
      } else {
        waiting.resolve(a);
      }
    }
  };
}

/**
 * The primary's side: answers the workers from `limiter`. `attach` a worker when it is forked and
 * call the function it returns when the worker exits.
 */
export class LimitsServer {
  readonly #limiter: Limiter;
  readonly #background: Background;
  #next = 1;

  constructor(limiter: Limiter, background: Background = new Background()) {
    this.#limiter = limiter;
    this.#background = background;
  }

  /** Serves one worker; the returned function detaches it and settles its open tickets. */
  attach(channel: LimitsChannel): () => void {
    const tickets = new Map<number, Ticket>();
    let attached = true;
    const send = (answers: Answer[]) => {
      if (answers.length === 0 || !attached) return;
      const reply: LimitsReply = { keygate: 'limits', answers };
      try {
        channel.send(reply);
      } catch {
        // The worker is gone: its exit detaches it.
      }
    };
    const answerOf = (id: number, admission: Admission): Answer => {
      if (!admission.ok) return { id, admission };
      if (!attached) {
        // Admitted for a worker that died meanwhile: nothing was sent to the provider.
        this.#limiter.settle(admission.ticket, 0);
        return { id, error: 'unavailable', retryAfterSeconds: 1 };
      }
      const number = this.#next++;
      tickets.set(number, admission.ticket);
      const { estimatedTokens, admittedAt } = admission.ticket;
      return {
        id,
        admission: { ok: true, ticket: number, estimatedTokens, admittedAt, headers: admission.headers },
      };
    };
    const failureOf = (id: number, error: unknown): Answer =>
      error instanceof LimiterUnavailableError
        ? { id, error: 'unavailable', retryAfterSeconds: error.retryAfterSeconds }
        : { id, error: 'failed', message: (error as Error).message ?? String(error) };

    // Supervised: a worker's malformed message (or a limiter that throws) must not end the primary.
    const listener = this.#background.guard(LIMITS_IPC_TASK, (message: unknown) => {
      if (!isLimitsMessage(message) || !Array.isArray(message.ops)) return;
      const answers: Answer[] = [];
      for (const op of (message as unknown as LimitsRequest).ops) {
        if (op.op === 'admit') {
          const { id } = op;
          try {
            const pending = this.#limiter.admit(op.subject, op.estimate, op.now);
            if (pending instanceof Promise) {
              pending.then(
                (admission) => send([answerOf(id, admission)]),
                (error: unknown) => send([failureOf(id, error)]),
              );
            } else {
              answers.push(answerOf(id, pending));
            }
          } catch (error) {
            answers.push(failureOf(id, error));
          }
        } else if (op.op === 'settle') {
          const ticket = tickets.get(op.ticket);
          if (!ticket) continue;
          tickets.delete(op.ticket);
          this.#limiter.settle(ticket, op.tokens, op.now);
        } else if (op.op === 'forget') {
          this.#limiter.forget(op.keyId);
        }
      }
      send(answers);
    });
    channel.on('message', listener);
    return () => {
      if (!attached) return;
      attached = false;
      channel.off('message', listener);
      for (const ticket of tickets.values()) this.#limiter.settle(ticket, ticket.estimatedTokens);
      tickets.clear();
    };
  }
}
