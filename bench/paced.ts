/**
 * An open-loop load generator at a fixed rate (undici): request i is sent at t0 + i / rate,
 * whether or not earlier ones were answered, so a slow target gets the same offered load as a fast
 * one and its queueing shows in its latency (autocannon's `overallRate` paces each connection in
 * a closed loop instead: a slow answer delays the next request, which hides latency, and it
 * reports whole milliseconds).
 *
 * Per response it records, in microseconds from the moment the request was handed to undici
 * (including any wait for a free connection): the response head, the first body byte (time to
 * first byte of a stream: the first SSE event, not just the headers), and the last body byte.
 * Every body is checked (status 200 and `check(body)`), not only the first.
 */
import { createHistogram, performance, type RecordableHistogram } from 'node:perf_hooks';
import { type Dispatcher, request } from 'undici';

export interface PacedOptions {
  url: string;
  headers: Record<string, string>;
  body: string;
  /** Requests per second. */
  rate: number;
  durationS: number;
  dispatcher: Dispatcher;
  /** True when a response body is a correct answer. */
  check(body: string): boolean;
  timeoutMs: number;
  /** Polled between sends: true stops sending (Ctrl-C). */
  stopped(): boolean;
}

export interface PacedResult {
  offeredRate: number;
  /** Requests sent / the time over which they were sent. */
  sendRate: number;
  /**
   * Correct responses / the time over which they arrived (first to last response, plus one
   * interval): the offered rate when the target keeps up, lower when answers queue up.
   */
  achievedRate: number;
  /** Planned sends (rate × duration). */
  planned: number;
  sent: number;
  /** Responses received in full (any status). */
  completed: number;
  /** Status 200 with a correct body. */
  ok: number;
  non200: number;
  /** Status 200 but a body that is not a correct answer. */
  badBodies: number;
  /** Transport errors and timeouts. */
  errors: number;
  statusCodes: Record<string, number>;
  errorMessages: Record<string, number>;
  /** How late sends were against their schedule (timer granularity, a busy event loop), in ms. */
  sendLagMs: { p50: number; p99: number; max: number };
  durationS: number;
  /** Histograms in microseconds (only correct responses are recorded). */
  total: RecordableHistogram;
  head: RecordableHistogram;
  firstByte: RecordableHistogram;
}

export function newHistogram(): RecordableHistogram {
  return createHistogram({ lowest: 1, highest: 600_000_000, figures: 3 });
}

function us(ms: number): number {
  return Math.max(1, Math.round(ms * 1000));
}

export function runPaced(options: PacedOptions): Promise<PacedResult> {
  const interval = 1000 / options.rate;
  const planned = Math.max(1, Math.round(options.rate * options.durationS));
  const total = newHistogram();
  const head = newHistogram();
  const firstByte = newHistogram();
  const lag = newHistogram();
  const statusCodes: Record<string, number> = {};
  const errorMessages: Record<string, number> = {};
  let sent = 0;
  let completed = 0;
  let ok = 0;
  let non200 = 0;
  let badBodies = 0;
  let errors = 0;
  let inFlight = 0;
  let lastSend = 0;
  let firstEnd = 0;
  let lastEnd = 0;
  let sendingDone = false;
  const t0 = performance.now();

  return new Promise<PacedResult>((resolve) => {
    const finish = (): void => {
      const end = performance.now();
      const sendWindow = Math.max(lastSend - t0 + interval, interval) / 1000;
      const okWindow = (lastEnd - firstEnd + interval) / 1000;
      resolve({
        offeredRate: options.rate,
        sendRate: Math.round(sent / sendWindow),
        achievedRate: Math.round(ok / okWindow),
        planned,
        sent,
        completed,
        ok,
        non200,
        badBodies,
        errors,
        statusCodes,
        errorMessages,
        sendLagMs: {
          p50: Math.round(lag.percentile(50)) / 1000,
          p99: Math.round(lag.percentile(99)) / 1000,
          max: Math.round(lag.max) / 1000,
        },
        durationS: Math.round((end - t0) / 10) / 100,
        total,
        head,
        firstByte,
      });
    };
    const settle = (): void => {
      inFlight--;
      if (sendingDone && inFlight === 0) finish();
    };

    const send = (scheduled: number): void => {
      const start = performance.now();
      lag.record(us(start - scheduled));
      lastSend = start;
      sent++;
      inFlight++;
      request(options.url, {
        method: 'POST',
        headers: options.headers,
        body: options.body,
        dispatcher: options.dispatcher,
        headersTimeout: options.timeoutMs,
        bodyTimeout: options.timeoutMs,
      })
        .then(async (res) => {
          const tHead = performance.now();
          let tFirst = 0;
          const chunks: Buffer[] = [];
          for await (const chunk of res.body) {
            const buffer = chunk as Buffer;
            if (tFirst === 0 && buffer.length > 0) tFirst = performance.now();
            chunks.push(buffer);
          }
          const tEnd = performance.now();
          completed++;
          if (firstEnd === 0) firstEnd = tEnd;
          lastEnd = tEnd;
          statusCodes[res.statusCode] = (statusCodes[res.statusCode] ?? 0) + 1;
          if (res.statusCode !== 200) {
            non200++;
            return;
          }
          if (!options.check(Buffer.concat(chunks).toString('utf8'))) {
            badBodies++;
            return;
          }
          ok++;
          head.record(us(tHead - start));
          firstByte.record(us((tFirst || tEnd) - start));
          total.record(us(tEnd - start));
        })
        .catch((error: unknown) => {
          errors++;
          const message = error instanceof Error ? error.message || error.name : String(error);
          errorMessages[message] = (errorMessages[message] ?? 0) + 1;
        })
        .finally(settle);
    };

    let next = 0;
    const tick = (): void => {
      const now = performance.now();
      while (next < planned && t0 + next * interval <= now) {
        send(t0 + next * interval);
        next++;
      }
      if (next >= planned || options.stopped()) {
        sendingDone = true;
        if (inFlight === 0) finish();
        return;
      }
      setTimeout(tick, Math.max(0, t0 + next * interval - performance.now()));
    };
    tick();
  });
}

/** A histogram percentile in milliseconds (two decimals), 0 when empty. */
export function pct(histogram: RecordableHistogram, p: number): number {
  if (histogram.count === 0) return 0;
  return Math.round(histogram.percentile(p) / 10) / 100;
}
