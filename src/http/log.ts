/**
 * Structured JSON logs (pino). A last line of defence redacts anything key-shaped from every line
 * written: Keygate keys (by pattern), bearer credentials and the configured upstream key.
 */
import { type Logger, pino } from 'pino';
import { redactor } from '../keys/scrub.ts';

export type { Logger };

export interface LoggerOptions {
  level: string;
  keyPrefix: string;
  /** Secrets that must never appear in a log line (the upstream key). */
  secrets?: readonly string[];
  destination?: NodeJS.WritableStream | undefined;
}

export { redactor };

let isoMs = 0;
let isoText = '';
/** pino's ISO timestamp, formatted once per millisecond (a busy gateway logs many lines in one). */
function isoTime(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    isoText = `,"time":"${new Date(now).toISOString()}"`;
  }
  return isoText;
}

/** One access-log line: what `Gateway` records of every /v1 request (`msg: "request"`). */
export interface AccessEntry {
  reqId: string;
  clientReqId: string | undefined;
  keyId: string | null;
  ip: string;
  /** GET, POST, … (`other` for a method outside the standard ones). */
  method: string;
  /** The client's user agent, capped and scrubbed of anything key-shaped; absent if none was sent. */
  userAgent: string | undefined;
  path: string;
  model: string | null;
  status: number;
  latencyMs: number;
  upstreamMs: number | null;
  promptTokens: number | undefined;
  completionTokens: number | undefined;
  failure: string | undefined;
}

/** How each logger made here writes a line past pino, redacted: see `writeAccessLine`. */
const rawWriters = new WeakMap<Logger, (line: string) => void>();

function text(value: string | null): string {
  return value === null ? 'null' : JSON.stringify(value);
}

/**
 * Writes the access-log line of a request. It is the busiest line by far, so it is formatted here
 * rather than by pino's generic serializer, and passed through the same redaction to the same
 * destination: the line is the one `logger.info(entry, 'request')` would write (a test compares
 * them). A logger not made by `createLogger` gets exactly that call.
 */
export function writeAccessLine(logger: Logger, e: AccessEntry): void {
  const write = rawWriters.get(logger);
  if (!write) {
    logger.info(e, 'request');
    return;
  }
  if (!logger.isLevelEnabled('info')) return;
  let line = `{"level":"info"${isoTime()},"reqId":${text(e.reqId)}`;
  if (e.clientReqId !== undefined) line += `,"clientReqId":${text(e.clientReqId)}`;
  line += `,"keyId":${text(e.keyId)},"ip":${text(e.ip)},"method":${text(e.method)}`;
  if (e.userAgent !== undefined) line += `,"userAgent":${text(e.userAgent)}`;
  line += `,"path":${text(e.path)},"model":${text(e.model)},"status":${e.status},"latencyMs":${e.latencyMs},"upstreamMs":${e.upstreamMs}`;
  if (e.promptTokens !== undefined) line += `,"promptTokens":${e.promptTokens}`;
  if (e.completionTokens !== undefined) line += `,"completionTokens":${e.completionTokens}`;
  if (e.failure !== undefined) line += `,"failure":${text(e.failure)}`;
  write(`${line},"msg":"request"}\n`);
}

interface Destination {
  write(text: string): unknown;
  flush?(callback?: (error?: Error) => void): void;
  flushSync?(): void;
}

/** Every TurnBuffer alive, to be written out at exit. */
const heldAtExit = new Set<WeakRef<TurnBuffer>>();
let exitHooked = false;

/**
 * Gathers the lines written in one event-loop turn and hands them to the destination as one
 * write. pino's asynchronous destination (sonic-boom) measures the text it already holds on every
 * write while an earlier write is in flight, which under load cost ~3 µs a line; one write per
 * turn costs that once. Order is kept (every line goes through here), and the lines still held
 * are written on `flush` and at exit.
 */
class TurnBuffer {
  readonly #target: Destination;
  #held = '';
  #scheduled = false;

  constructor(target: Destination) {
    this.#target = target;
    if (!exitHooked) {
      exitHooked = true;
      process.once('exit', () => {
        for (const ref of heldAtExit) {
          try {
            ref.deref()?.flushSync();
          } catch {
            // a destination that cannot write now (closed, or busy): nothing more can be done at exit
          }
        }
      });
    }
    for (const ref of heldAtExit) if (ref.deref() === undefined) heldAtExit.delete(ref);
    heldAtExit.add(new WeakRef(this));
  }

  /** Writes what is held, synchronously if the destination can (at exit). */
  flushSync(): void {
    this.#drain();
    this.#target.flushSync?.();
  }

  write(line: string): boolean {
    this.#held += line;
    if (this.#held.length >= 65_536) this.#drain();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#drain);
    }
    return true;
  }

  readonly #drain = (): void => {
    this.#scheduled = false;
    if (this.#held.length === 0) return;
    const text = this.#held;
    this.#held = '';
    this.#target.write(text);
  };

  flush(callback?: (error?: Error) => void): void {
    this.#drain();
    if (this.#target.flush) this.#target.flush(callback);
    else callback?.();
  }
}

export function createLogger(options: LoggerOptions): Logger {
  const redact = redactor(options.keyPrefix, options.secrets);
  const destination = new TurnBuffer(options.destination ?? pino.destination({ dest: 1, sync: false }));
  const logger = pino(
    {
      level: options.level,
      base: undefined,
      timestamp: isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: {
        paths: ['req.headers.authorization', 'headers.authorization', 'authorization', 'key', 'upstreamKey'],
      },
      hooks: { streamWrite: redact },
    },
    destination,
  );
  rawWriters.set(logger, (line) => destination.write(redact(line)));
  return logger;
}
