/**
 * Structured JSON logs (pino). A last line of defence redacts anything key-shaped from every line
 * written: Keygate keys (by pattern), bearer credentials and the configured upstream key.
 */
import { type Logger, pino } from 'pino';
import { keyPattern } from '../keys/format.ts';

export type { Logger };

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export interface LoggerOptions {
  level: string;
  keyPrefix: string;
  /** Secrets that must never appear in a log line (the upstream key). */
  secrets?: readonly string[];
  destination?: NodeJS.WritableStream | undefined;
}

export function redactor(keyPrefix: string, secrets: readonly string[] = []): (line: string) => string {
  const parts = [keyPattern(keyPrefix).source, '(?<=[Bb][Ee][Aa][Rr][Ee][Rr] +)[A-Za-z0-9\\-._~+/]{8,}=*'];
  for (const secret of secrets) if (secret.length >= 8) parts.push(escapeRegExp(secret));
  const re = new RegExp(parts.join('|'), 'g');
  // Every match needs one of these: most lines have none, and are let through without the regex.
  const needles = [`${keyPrefix}_`, ...secrets.filter((secret) => secret.length >= 8)];
  const bearer = /bearer/i;
  return (line) =>
    bearer.test(line) || needles.some((needle) => line.includes(needle))
      ? line.replace(re, '[REDACTED]')
      : line;
}

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

export function createLogger(options: LoggerOptions): Logger {
  const redact = redactor(options.keyPrefix, options.secrets);
  return pino(
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
    options.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
