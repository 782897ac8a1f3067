/**
 * What the benchmark and the profiler send (bench/run.ts, bench/profile.ts): the scenarios with
 * their checks, and the Keygate set-up with a key that has every protection on.
 */
import { keygateCli } from './processes.ts';

export interface Scenario {
  name: string;
  path: string;
  body: string;
  accept: string;
  stream: boolean;
  /** True when a response body is a correct answer (from the stub, through any gateway). */
  check(body: string): boolean;
}

const PROMPT = 'Say hello to the benchmark in a few words.';

export const SCENARIOS: Scenario[] = [
  {
    name: 'chat',
    path: '/v1/chat/completions',
    body: JSON.stringify({ model: 'mistral-small-latest', messages: [{ role: 'user', content: PROMPT }] }),
    accept: 'application/json',
    stream: false,
    check: (body) => body.includes('"chat.completion"') && body.includes(`"Echo: ${PROMPT}"`),
  },
  {
    name: 'chat-stream',
    path: '/v1/chat/completions',
    body: JSON.stringify({
      model: 'mistral-small-latest',
      messages: [{ role: 'user', content: PROMPT }],
      stream: true,
    }),
    accept: 'text/event-stream',
    stream: true,
    check: (body) =>
      body.includes('"chat.completion.chunk"') &&
      body.includes('"finish_reason":"stop"') &&
      body.includes('"usage"') &&
      body.trimEnd().endsWith('data: [DONE]'),
  },
  {
    name: 'embeddings',
    path: '/v1/embeddings',
    body: JSON.stringify({ model: 'mistral-embed', input: ['The quick brown fox jumps over the lazy dog.'] }),
    accept: 'application/json',
    stream: false,
    check: (body) => body.includes('"embedding":[') && body.includes('"usage"'),
  },
];

export interface KeygateSetup {
  dataDir: string;
  configFile: string;
  env: Record<string, string>;
  /** The build whose CLI and gateway run on this set-up (a baseline's bin/keygate.js); this checkout's by default. */
  bin?: string | undefined;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function cliArgs(setup: KeygateSetup): string[] {
  return ['--data-dir', setup.dataDir, '--config', setup.configFile];
}

/** What the bench key is restricted by: limits high enough never to refuse this load. */
const PROTECTIONS = [
  '--rpm',
  '100000000',
  '--tpm',
  '10000000000',
  '--concurrency',
  '100000',
  '--budget',
  '1000000000000/month',
  '--allow-ip',
  '127.0.0.1/32,::1/128',
];

/**
 * The bench key: every protection on (rate limits, concurrency, a budget, an IP allowlist), or
 * none of them with `bare` (a key with no restriction at all, to price the protections).
 */
export async function createBenchKey(setup: KeygateSetup, bare = false): Promise<string> {
  const parsed: unknown = JSON.parse(
    await keygateCli(
      ['keys', 'create', '--name', 'bench', '--json', ...(bare ? [] : PROTECTIONS), ...cliArgs(setup)],
      setup.env,
      setup.bin,
    ),
  );
  if (!isRecord(parsed) || typeof parsed.key !== 'string')
    throw new Error('keys create --json printed no key');
  return parsed.key;
}
