/**
 * Test harness: a real gateway (HTTPS, real SQLite file in a temporary data directory) in front of
 * the local upstream stub, with its log lines captured for inspection.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Agent, type Dispatcher, request } from 'undici';
import { type Config, loadConfig } from '../../src/config/config.ts';
import { type RunningGateway, type StartOptions, startGateway } from '../../src/http/server.ts';
import { createKey, type KeyRestrictions } from '../../src/keys/service.ts';
import { DEFAULT_STUB_API_KEY, startUpstreamStub, type UpstreamStub } from './upstream-stub.ts';

export const UPSTREAM_KEY = DEFAULT_STUB_API_KEY;

export interface TestGateway {
  gateway: RunningGateway;
  stub: UpstreamStub;
  config: Config;
  url: string;
  dataDir: string;
  ca: string | undefined;
  /** undici dispatcher that trusts the gateway's self-signed certificate. */
  dispatcher: Dispatcher;
  logLines: string[];
  /** Creates a key directly in the store; returns its id and secret. */
  createKey(
    name?: string,
    expiresInMs?: number,
    restrictions?: KeyRestrictions,
  ): Promise<{ id: string; key: string }>;
  /** Raw HTTP call to the gateway. */
  call(
    path: string,
    init?: {
      method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
      headers?: Record<string, string | string[]>;
      body?: string | Buffer;
    },
  ): Promise<{
    status: number;
    headers: Record<string, string | string[] | undefined>;
    text: string;
    json: () => unknown;
  }>;
  close(): Promise<void>;
}

export interface TestGatewayOptions {
  http?: boolean;
  /** Extra YAML-equivalent settings merged over the defaults. */
  configure?: (config: Config) => void;
  upstreamKey?: string | undefined;
  stub?: UpstreamStub;
  /** The environment startGateway reads (KEYGATE_SECRET); default: none. */
  env?: NodeJS.ProcessEnv;
  /** Options of startGateway that are not settings (a shorter alert evaluation interval). */
  start?: Pick<StartOptions, 'alertEvaluateIntervalMs'>;
}

export function tempDir(prefix = 'keygate-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function startTestGateway(options: TestGatewayOptions = {}): Promise<TestGateway> {
  const stub = options.stub ?? (await startUpstreamStub());
  const dataDir = tempDir();
  const config = loadConfig(
    { dataDir, port: '0', http: options.http ?? false },
    {
      KEYGATE_UPSTREAM_URL: stub.url,
      ...('upstreamKey' in options
        ? options.upstreamKey
          ? { KEYGATE_UPSTREAM_KEY: options.upstreamKey }
          : {}
        : { KEYGATE_UPSTREAM_KEY: UPSTREAM_KEY }),
    },
  );
  config.usage.flushIntervalMs = 50;
  options.configure?.(config);
  const logLines: string[] = [];
  const logDestination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logLines.push(line);
      callback();
    },
  });
  const gateway = await startGateway(config, { ...options.start, env: options.env ?? {}, logDestination });
  const ca = gateway.tls ? readFileSync(gateway.tls.certPath, 'utf8') : undefined;
  const dispatcher = new Agent({ connect: ca ? { ca } : {}, keepAliveTimeout: 1000 });
  const url = gateway.url;
  return {
    gateway,
    stub,
    config,
    url,
    dataDir,
    ca,
    dispatcher,
    logLines,
    async createKey(name = 'test key', expiresInMs?: number, restrictions: KeyRestrictions = {}) {
      const created = await createKey(
        { store: gateway.store, pepper: gateway.secrets.pepper, prefix: config.keys.prefix },
        { name, expiresInMs, ...restrictions },
      );
      return { id: created.record.id, key: created.key };
    },
    async call(path, init = {}) {
      const res = await request(url + path, {
        method: init.method ?? 'GET',
        headers: init.headers,
        body: init.body,
        dispatcher,
      });
      const text = await res.body.text();
      return {
        status: res.statusCode,
        headers: res.headers as Record<string, string | string[] | undefined>,
        text,
        json: () => JSON.parse(text) as unknown,
      };
    },
    async close() {
      await gateway.close();
      await dispatcher.close();
      if (!options.stub) await stub.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export function bearer(key: string): Record<string, string> {
  return { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
}

export function chatBody(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    model: 'mistral-small-latest',
    messages: [{ role: 'user', content: 'hello there' }],
    ...extra,
  });
}
