/**
 * A local HTTP server that speaks the Mistral API the way the real provider does.
 *
 * Used by integration tests and the benchmark as the upstream "model provider".
 * Response shapes follow the Mistral API reference (mistral-api.md §3-§7) closely, because
 * the official SDKs validate them.
 *
 * Deterministic behaviour (so tests can assert on it):
 * - words(s) = number of whitespace-separated words in s.
 * - chat: reply = "Echo: " + <last user message text>, truncated to 20 words (and to
 *   `max_tokens` words when that is smaller, with finish_reason "length").
 *   prompt_tokens = words over all message contents (min 1), completion_tokens = words(reply).
 * - fim: reply = "/* middle *\/", prompt_tokens = words(prompt) + words(suffix).
 * - embeddings: 8 floats derived from sha256(input), prompt_tokens = words over all inputs.
 *
 * Special model names: stub-error-500, stub-error-400, stub-slow (5 s before the head),
 * stub-slow-stream (content "tok1 ... tok10", one word per chunk, 200 ms apart; usage on the
 * last), stub-echo-headers (content is JSON.stringify of the received request headers),
 * stub-error-echo (400 whose message quotes the messages and the Authorization header received).
 * Tool definitions (`tools`) count as prompt words, as a provider counts them.
 *
 * Faults, for the fault suite (test/faults/):
 * - stub-hold: no head until `release()` (or the caller goes away); stub-hold-stream: the head
 *   and one content event, then nothing until `release()`, then the rest of the stream.
 * - stub-stall-stream / stub-reset-stream: the head and 3 content events ("w1", "w2", "w3"),
 *   no usage; then silence for ever (stall) or the connection destroyed (reset). With
 *   `stub-pretty-` in front, every event is pretty-printed (`"content": "w1"`) and spread over
 *   several `data:` lines.
 * - stub-huge-error: a 500 whose JSON body is `stub_error_bytes` (a body field) bytes long,
 *   written in 64 KiB pieces as the caller reads them.
 * - embeddings with `output_dimension` N (a body field): N floats per input, written one item at
 *   a time as the caller reads them (large batches do not block the stub); with `stub_hold_after`
 *   K, nothing after the first K items until `release()`.
 *
 * Run directly for the benchmark:
 *   node test/support/upstream-stub.ts --port 9000 --latency 0
 * prints {"url":"http://127.0.0.1:9000"} on one line and stops on SIGTERM/SIGINT.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export interface StubRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One response the stub answered with a usage report, as it reported it. */
export interface StubServed {
  path: string;
  /** The caller's `x-request-id` header (the gateway sends its request id), if any. */
  requestId: string | undefined;
  stream: boolean;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export interface UpstreamStub {
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:PORT */
  url: string;
  /** Every request received, in order (only the last 10 000 are kept). */
  requests: StubRequest[];
  /**
   * Every response sent with a usage report, in order (only the last 10 000 are kept): a JSON
   * body when it is written, a stream when its usage chunk is.
   */
  served: StubServed[];
  /** Delay before the response head, in milliseconds (default 0). */
  setLatency(ms: number): void;
  /** Requests still being answered; one whose client hung up leaves at once. */
  readonly inFlight: number;
  /** Requests of the stub-hold models waiting for `release()`. */
  readonly held: number;
  /** Lets every held request go on. */
  release(): void;
  /** Closes the server and all sockets; cancels pending timers. */
  close(): Promise<void>;
}

export interface StubOptions {
  port?: number;
  host?: string;
  /** Required bearer key; default 'upstream-secret-key'. */
  apiKey?: string;
  latencyMs?: number;
  /** Content chunks per stream, default 3. */
  streamChunks?: number;
  /** Default true; the benchmark turns it off. */
  recordRequests?: boolean;
  /** Headers added to every answer (as a provider or the proxy in front of it might). */
  responseHeaders?: Record<string, string>;
}

export const DEFAULT_STUB_API_KEY = 'upstream-secret-key';
export const STUB_MODEL_IDS: readonly string[] = [
  'mistral-small-latest',
  'mistral-large-latest',
  'mistral-embed',
  'codestral-latest',
  'ministral-8b-latest',
  'mistral-medium-latest',
];

const MAX_RECORDED = 10_000;
const MAX_REPLY_WORDS = 20;
const SLOW_DELAY_MS = 5000;
const SLOW_STREAM_CHUNKS = 10;
const SLOW_STREAM_INTERVAL_MS = 200;
const FIM_MIDDLE = '/* middle */';
const EMBEDDING_DIMENSIONS = 8;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

type Usage = {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
};

interface Completion {
  model: string;
  /** Reply split into word tokens, each with its leading whitespace; concatenated they form the content. */
  tokens: string[];
  finishReason: 'stop' | 'length';
  promptTokens: number;
}

/** Per-request cancellation: aborted when the client goes away or the stub closes. */
interface RequestContext {
  aborted: boolean;
  cancel: Array<() => void>;
  req: IncomingMessage;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function words(text: string): string[] {
  return text.split(/\s+/).filter((w) => w.length > 0);
}

/** Word tokens that keep their leading whitespace, so that tokens.join('') reproduces the text. */
function tokensOf(text: string): string[] {
  return text.match(/\s*\S+/g) ?? [];
}

function hex32(): string {
  return randomBytes(16).toString('hex');
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** Text of a message `content`: a string, or the text chunks of a ContentChunk array. */
function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    const parts: string[] = [];
    for (const chunk of content) {
      if (isRecord(chunk) && chunk.type === 'text' && typeof chunk.text === 'string') parts.push(chunk.text);
    }
    return parts.join(' ');
  }
  return '';
}

function errorBody(message: string, type: string, code: string | null): JsonObject {
  return { object: 'error', message, type, param: null, code };
}

function validationError(loc: string, input: Json, type = 'missing', msg = 'Field required'): JsonObject {
  return { detail: [{ type, loc: ['body', loc], msg, input }] };
}

function usageOf(promptTokens: number, completionTokens: number): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  };
}

function applyMaxTokens(tokens: string[], maxTokens: unknown): Pick<Completion, 'tokens' | 'finishReason'> {
  if (typeof maxTokens === 'number' && Number.isInteger(maxTokens) && maxTokens >= 1) {
    if (tokens.length > maxTokens) return { tokens: tokens.slice(0, maxTokens), finishReason: 'length' };
  }
  return { tokens, finishReason: 'stop' };
}

/** Splits `items` into exactly `parts` contiguous groups (some may be empty). */
function splitEvenly<T>(items: T[], parts: number): T[][] {
  const groups: T[][] = [];
  const base = Math.floor(items.length / parts);
  const extra = items.length % parts;
  let offset = 0;
  for (let i = 0; i < parts; i++) {
    const size = base + (i < extra ? 1 : 0);
    groups.push(items.slice(offset, offset + size));
    offset += size;
  }
  return groups;
}

/** Content strings for each stream chunk; their concatenation equals the full reply. */
function chunkContents(tokens: string[], parts: number): string[] {
  return splitEvenly(tokens, parts).map((group) => group.join(''));
}

/** Deterministic, unit-length 8-dimensional vector derived from the text. */
function embeddingOf(text: string): number[] {
  const digest = createHash('sha256').update(text).digest();
  const raw: number[] = [];
  for (let i = 0; i < EMBEDDING_DIMENSIONS; i++) raw.push(digest.readUInt32BE(i * 4) / 2 ** 31 - 1);
  const norm = Math.sqrt(raw.reduce((sum, v) => sum + v * v, 0)) || 1;
  return raw.map((v) => Math.round((v / norm) * 1e6) / 1e6);
}

/**
 * Deterministic `dimensions` floats of the text (a xorshift generator seeded from its sha256),
 * with 6 decimals like `embeddingOf`; `largeEmbeddingValue(text, i)` gives the i-th.
 */
export function largeEmbeddingOf(text: string, dimensions: number): number[] {
  let state = createHash('sha256').update(text).digest().readUInt32BE(0) || 1;
  const values: number[] = [];
  for (let i = 0; i < dimensions; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    values.push(Math.round((state / 2 ** 31 - 1) * 1e6) / 1e6);
  }
  return values;
}

function modelCard(id: string, created: number): JsonObject {
  const isEmbed = id === 'mistral-embed';
  const isCode = id.startsWith('codestral');
  const descriptions: Record<string, string> = {
    'mistral-small-latest': 'Our efficient small model for everyday tasks.',
    'mistral-medium-latest': 'Our frontier-class multimodal model.',
    'mistral-large-latest': 'Our top-tier large model for complex tasks.',
    'mistral-embed': 'Our state-of-the-art semantic text embedding model.',
    'codestral-latest': 'Our cutting-edge language model for coding.',
    'ministral-8b-latest': 'Powerful edge model with extremely high performance/price ratio.',
  };
  const contextLengths: Record<string, number> = {
    'mistral-embed': 8192,
    'codestral-latest': 256000,
    'ministral-8b-latest': 131072,
  };
  return {
    id,
    object: 'model',
    created,
    owned_by: 'mistralai',
    capabilities: {
      completion_chat: !isEmbed,
      function_calling: !isEmbed,
      completion_fim: isCode,
      fine_tuning: !isEmbed,
      vision:
        id === 'mistral-small-latest' || id === 'mistral-medium-latest' || id === 'mistral-large-latest',
      ocr: false,
      classification: false,
      moderation: false,
      audio: false,
      audio_transcription: false,
    },
    name: id,
    description: descriptions[id] ?? id,
    max_context_length: contextLengths[id] ?? 131072,
    aliases: [],
    deprecation: null,
    deprecation_replacement_model: null,
    default_model_temperature: isEmbed ? null : isCode ? 0.2 : 0.3,
    type: 'base',
  };
}

export function startUpstreamStub(opts: StubOptions = {}): Promise<UpstreamStub> {
  const apiKey = opts.apiKey ?? DEFAULT_STUB_API_KEY;
  const host = opts.host ?? '127.0.0.1';
  const streamChunks = Math.max(1, Math.floor(opts.streamChunks ?? 3));
  const extraHeaders = opts.responseHeaders ?? {};
  const recordRequests = opts.recordRequests ?? true;
  let latencyMs = Math.max(0, opts.latencyMs ?? 0);
  const requests: StubRequest[] = [];
  const served: StubServed[] = [];
  const inFlight = new Set<RequestContext>();
  let closed = false;
  const holding = new Set<() => void>();

  /** Resolves true when `release()` is called, or false as soon as the request is aborted. */
  function hold(ctx: RequestContext): Promise<boolean> {
    if (ctx.aborted) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const release = (): void => {
        holding.delete(release);
        resolve(!ctx.aborted);
      };
      const cancel = (): void => {
        holding.delete(release);
        resolve(false);
      };
      holding.add(release);
      ctx.cancel.push(cancel);
    });
  }

  /** Writes `text` and waits for the socket to take it (false: the caller went away). */
  async function writeDrained(
    ctx: RequestContext,
    res: ServerResponse,
    text: string | Buffer,
  ): Promise<boolean> {
    if (ctx.aborted || res.destroyed) return false;
    if (res.write(text)) return true;
    return new Promise<boolean>((resolve) => {
      const done = (): void => {
        res.off('drain', done);
        res.off('close', done);
        resolve(!ctx.aborted && !res.destroyed);
      };
      res.once('drain', done);
      res.once('close', done);
    });
  }

  /** A stream of 3 content events without usage, then a stall or a reset (see the header). */
  async function sendCutStream(
    ctx: RequestContext,
    res: ServerResponse,
    model: string,
    cut: 'stall' | 'reset',
    pretty: boolean,
  ): Promise<void> {
    res.writeHead(200, { ...extraHeaders, 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    const id = `cmpl-${hex32()}`;
    for (const word of ['w1', 'w2', 'w3']) {
      const chunk = {
        id,
        object: 'chat.completion.chunk',
        model,
        choices: [{ index: 0, delta: { content: word }, finish_reason: null }],
      };
      // Spaces after the colons (`"content": "w1"`, as Python's json.dumps writes), and the event
      // spread over several data: lines, joined by the client with line breaks (JSON whitespace).
      const json = pretty ? JSON.stringify(chunk, null, 1) : JSON.stringify(chunk);
      const event = pretty
        ? `${json
            .split('\n')
            .map((line) => `data: ${line}`)
            .join('\n')}\n\n`
        : `data: ${json}\n\n`;
      if (!(await writeDrained(ctx, res, event)) || !(await tick(ctx))) return;
    }
    if (cut === 'reset') res.socket?.destroy();
    // A stall: nothing more, until the caller goes away.
  }

  /** A 500 with a JSON error body of `size` bytes, written as the caller reads it. */
  async function sendHugeError(ctx: RequestContext, res: ServerResponse, size: number): Promise<void> {
    const head = '{"object":"error","message":"';
    const tail = '","type":"server_error","param":null,"code":"5000"}';
    const fill = Math.max(0, size - head.length - tail.length);
    res.writeHead(500, {
      ...extraHeaders,
      'Content-Type': 'application/json',
      'Content-Length': String(head.length + fill + tail.length),
    });
    if (!(await writeDrained(ctx, res, head))) return;
    const piece = Buffer.alloc(65_536, 'x');
    for (let left = fill; left > 0; left -= piece.length) {
      if (!(await writeDrained(ctx, res, left >= piece.length ? piece : piece.subarray(0, left)))) return;
    }
    res.end(tail);
  }

  /** Resolves true after `ms`, or false as soon as the request is aborted. Never keeps the process alive after close. */
  function wait(ctx: RequestContext, ms: number): Promise<boolean> {
    if (ctx.aborted) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        ctx.cancel = ctx.cancel.filter((c) => c !== cancel);
        resolve(!ctx.aborted);
      }, ms);
      const cancel = (): void => {
        clearTimeout(timer);
        resolve(false);
      };
      ctx.cancel.push(cancel);
    });
  }

  /** Yields to the event loop once (gives separate writes between stream chunks). */
  function tick(ctx: RequestContext): Promise<boolean> {
    if (ctx.aborted) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const immediate = setImmediate(() => {
        ctx.cancel = ctx.cancel.filter((c) => c !== cancel);
        resolve(!ctx.aborted);
      });
      const cancel = (): void => {
        clearImmediate(immediate);
        resolve(false);
      };
      ctx.cancel.push(cancel);
    });
  }

  function abort(ctx: RequestContext): void {
    if (ctx.aborted) return;
    ctx.aborted = true;
    const cancels = ctx.cancel;
    ctx.cancel = [];
    for (const c of cancels) c();
    inFlight.delete(ctx);
  }

  /** Records the usage a response reports (when recording is on). */
  function serve(req: IncomingMessage, usage: Usage, stream: boolean): void {
    if (!recordRequests) return;
    const id = req.headers['x-request-id'];
    served.push({
      path: new URL(req.url ?? '/', 'http://stub.invalid').pathname,
      requestId: typeof id === 'string' ? id : undefined,
      stream,
      promptTokens: usage.prompt_tokens,
      completionTokens: usage.completion_tokens,
      totalTokens: usage.total_tokens,
    });
    if (served.length > MAX_RECORDED) served.shift();
  }

  function sendJson(res: ServerResponse, status: number, body: Json, req?: IncomingMessage): void {
    if (res.headersSent || res.destroyed) return;
    if (req && status === 200 && isRecord(body) && isRecord(body.usage)) {
      serve(req, body.usage as unknown as Usage, false);
    }
    const payload = JSON.stringify(body);
    res.writeHead(status, {
      ...extraHeaders,
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(payload),
    });
    res.end(payload);
  }

  function completionResponse(c: Completion, id: string, created: number): JsonObject {
    return {
      id,
      object: 'chat.completion',
      created,
      model: c.model,
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: c.tokens.join(''), tool_calls: null, prefix: false },
          finish_reason: c.finishReason,
        },
      ],
      usage: usageOf(c.promptTokens, c.tokens.length),
    };
  }

  async function sendStream(
    ctx: RequestContext,
    res: ServerResponse,
    c: Completion,
    parts: number,
    intervalMs: number,
  ): Promise<void> {
    const id = `cmpl-${hex32()}`;
    const created = nowSeconds();
    const frame = (choice: JsonObject, usage?: Usage): string => {
      const chunk: JsonObject = {
        id,
        object: 'chat.completion.chunk',
        created,
        model: c.model,
        choices: [choice],
      };
      if (usage) chunk.usage = usage;
      return `data: ${JSON.stringify(chunk)}\n\n`;
    };
    if (!res.headersSent)
      res.writeHead(200, {
        ...extraHeaders,
        'Content-Type': 'text/event-stream',
        'Cache-Control': 'no-cache',
      });
    res.write(frame({ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }));
    const contents = chunkContents(c.tokens, parts);
    for (let i = 0; i < contents.length; i++) {
      const ok = intervalMs > 0 ? await wait(ctx, intervalMs) : await tick(ctx);
      if (!ok || res.destroyed) return;
      const last = i === contents.length - 1;
      const choice: JsonObject = {
        index: 0,
        delta: { content: contents[i] ?? '' },
        finish_reason: last ? c.finishReason : null,
      };
      const usage = last ? usageOf(c.promptTokens, c.tokens.length) : undefined;
      if (usage) serve(ctx.req, usage, true);
      res.write(frame(choice, usage));
    }
    if (!(await tick(ctx)) || res.destroyed) return;
    res.end('data: [DONE]\n\n');
  }

  /** Handles the special failure/slow models shared by all inference endpoints. Returns true when handled. */
  function handleFailureModel(res: ServerResponse, model: string): boolean {
    if (model === 'stub-error-500') {
      sendJson(res, 500, errorBody('Internal server error', 'server_error', '5000'));
      return true;
    }
    if (model === 'stub-error-400') {
      sendJson(res, 400, errorBody(`Invalid model: ${model}`, 'invalid_model', '1500'));
      return true;
    }
    return false;
  }

  async function respondCompletion(
    ctx: RequestContext,
    res: ServerResponse,
    c: Completion,
    stream: boolean,
  ): Promise<void> {
    if (c.model === 'stub-slow' && !(await wait(ctx, SLOW_DELAY_MS))) return;
    if (c.model === 'stub-hold' && !(await hold(ctx))) return;
    const cut = /^stub-(pretty-)?(stall|reset)-stream$/.exec(c.model);
    if (cut) {
      await sendCutStream(ctx, res, c.model, cut[2] as 'stall' | 'reset', cut[1] !== undefined);
      return;
    }
    if (c.model === 'stub-hold-stream' && stream) {
      res.writeHead(200, {
        ...extraHeaders,
        'Content-Type': 'text/event-stream',
        'Cache-Control': 'no-cache',
      });
      res.write(
        `data: ${JSON.stringify({ id: 'held', object: 'chat.completion.chunk', model: c.model, choices: [{ index: 0, delta: { content: 'held' }, finish_reason: null }] })}\n\n`,
      );
      if (!(await hold(ctx))) return;
      await sendStream(ctx, res, c, streamChunks, 0);
      return;
    }
    if (c.model === 'stub-slow-stream') {
      if (stream) {
        await sendStream(ctx, res, c, SLOW_STREAM_CHUNKS, SLOW_STREAM_INTERVAL_MS);
        return;
      }
      if (!(await wait(ctx, SLOW_STREAM_CHUNKS * SLOW_STREAM_INTERVAL_MS))) return;
    }
    if (stream) {
      await sendStream(ctx, res, c, streamChunks, 0);
      return;
    }
    sendJson(res, 200, completionResponse(c, `cmpl-${hex32()}`, nowSeconds()), ctx.req);
  }

  async function handleChat(
    ctx: RequestContext,
    req: IncomingMessage,
    res: ServerResponse,
    body: Record<string, unknown>,
  ): Promise<void> {
    const { model, messages } = body;
    if (typeof model !== 'string') return sendJson(res, 422, validationError('model', null));
    if (!Array.isArray(messages)) return sendJson(res, 422, validationError('messages', null));
    if (handleFailureModel(res, model)) return;
    if (model === 'stub-huge-error') {
      const size = typeof body.stub_error_bytes === 'number' ? body.stub_error_bytes : 1 << 20;
      return sendHugeError(ctx, res, size);
    }
    if (model === 'stub-error-echo') {
      // A provider error that quotes the request and the credential it was sent.
      const quoted = messages.map((m) => (isRecord(m) ? contentText(m.content) : '')).join(' ');
      const said = `Invalid request "${quoted}" (authorization: ${String(req.headers.authorization)})`;
      return sendJson(res, 400, errorBody(said, 'invalid_request_error', '3000'));
    }

    // Tool definitions are part of the prompt, as the provider counts them.
    let promptWords = body.tools === undefined ? 0 : words(JSON.stringify(body.tools)).length;
    let lastUser = '';
    for (const m of messages) {
      if (!isRecord(m)) continue;
      const text = contentText(m.content);
      promptWords += words(text).length;
      if (m.role === 'user') lastUser = text;
    }
    let reply: Pick<Completion, 'tokens' | 'finishReason'>;
    if (model === 'stub-echo-headers') {
      // Exact JSON of the received headers (never truncated).
      reply = { tokens: tokensOf(JSON.stringify(req.headers)), finishReason: 'stop' };
    } else if (model === 'stub-slow-stream') {
      reply = applyMaxTokens(
        tokensOf(Array.from({ length: SLOW_STREAM_CHUNKS }, (_, i) => `tok${i + 1}`).join(' ')),
        body.max_tokens,
      );
    } else {
      reply = applyMaxTokens(
        tokensOf(words(`Echo: ${lastUser}`).slice(0, MAX_REPLY_WORDS).join(' ')),
        body.max_tokens,
      );
    }
    const completion: Completion = { model, promptTokens: Math.max(1, promptWords), ...reply };
    return respondCompletion(ctx, res, completion, body.stream === true);
  }

  async function handleFim(
    ctx: RequestContext,
    res: ServerResponse,
    body: Record<string, unknown>,
  ): Promise<void> {
    const { model, prompt, suffix } = body;
    if (typeof model !== 'string') return sendJson(res, 422, validationError('model', null));
    if (typeof prompt !== 'string') return sendJson(res, 422, validationError('prompt', null));
    if (handleFailureModel(res, model)) return;
    const promptTokens = words(prompt).length + (typeof suffix === 'string' ? words(suffix).length : 0);
    const completion: Completion = {
      model,
      promptTokens,
      ...applyMaxTokens(tokensOf(FIM_MIDDLE), body.max_tokens),
    };
    return respondCompletion(ctx, res, completion, body.stream === true);
  }

  async function handleEmbeddings(
    ctx: RequestContext,
    res: ServerResponse,
    body: Record<string, unknown>,
  ): Promise<void> {
    const { model, input } = body;
    if (typeof model !== 'string') return sendJson(res, 422, validationError('model', null));
    let inputs: string[];
    if (typeof input === 'string') inputs = [input];
    else if (Array.isArray(input) && input.every((i): i is string => typeof i === 'string')) inputs = input;
    else
      return sendJson(
        res,
        422,
        validationError('input', null, 'string_type', 'Input should be a valid string'),
      );
    if (handleFailureModel(res, model)) return;
    if (model === 'stub-slow' && !(await wait(ctx, SLOW_DELAY_MS))) return;
    const promptTokens = inputs.reduce((sum, text) => sum + words(text).length, 0);
    const dimensions = body.output_dimension;
    if (typeof dimensions === 'number' && Number.isInteger(dimensions) && dimensions > 0) {
      const holdAfter = typeof body.stub_hold_after === 'number' ? body.stub_hold_after : -1;
      await sendLargeEmbeddings(ctx, res, model, inputs, dimensions, usageOf(promptTokens, 0), holdAfter);
      return;
    }
    // Like the real Mistral API: always floats, even when encoding_format is "base64".
    sendJson(
      res,
      200,
      {
        id: hex32(),
        object: 'list',
        model,
        data: inputs.map((text, index) => ({ object: 'embedding', embedding: embeddingOf(text), index })),
        usage: usageOf(promptTokens, 0),
      },
      ctx.req,
    );
  }

  /** Embeddings of `dimensions` floats each, written one item at a time as the caller reads them. */
  async function sendLargeEmbeddings(
    ctx: RequestContext,
    res: ServerResponse,
    model: string,
    inputs: string[],
    dimensions: number,
    usage: Usage,
    holdAfter: number,
  ): Promise<void> {
    res.writeHead(200, { ...extraHeaders, 'Content-Type': 'application/json' });
    if (
      !(await writeDrained(
        ctx,
        res,
        `{"id":"${hex32()}","object":"list","model":${JSON.stringify(model)},"data":[`,
      ))
    )
      return;
    for (let index = 0; index < inputs.length; index++) {
      if (index === holdAfter && !(await hold(ctx))) return;
      const values = largeEmbeddingOf(inputs[index] ?? '', dimensions);
      const item = `${index > 0 ? ',' : ''}{"object":"embedding","embedding":[${values.join(',')}],"index":${index}}`;
      if (!(await writeDrained(ctx, res, item))) return;
      if (!(await tick(ctx))) return;
    }
    serve(ctx.req, usage, false);
    res.end(`],"usage":${JSON.stringify(usage)}}`);
  }

  function readBody(req: IncomingMessage): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });
  }

  async function handle(ctx: RequestContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = await readBody(req);
    const method = req.method ?? 'GET';
    const path = new URL(req.url ?? '/', 'http://stub.invalid').pathname;
    if (recordRequests) {
      requests.push({ method, path, headers: { ...req.headers }, body: raw });
      if (requests.length > MAX_RECORDED) requests.shift();
    }
    if (latencyMs > 0 && !(await wait(ctx, latencyMs))) return;

    const auth = req.headers.authorization;
    if (typeof auth !== 'string' || auth !== `Bearer ${apiKey}`) {
      sendJson(res, 401, { message: 'Unauthorized', request_id: hex32() });
      return;
    }

    if (path === '/v1/models' || path.startsWith('/v1/models/')) {
      if (method !== 'GET') {
        sendJson(res, 405, errorBody('Method Not Allowed', 'invalid_request_error', null));
        return;
      }
      const created = nowSeconds();
      if (path === '/v1/models') {
        sendJson(res, 200, { object: 'list', data: STUB_MODEL_IDS.map((id) => modelCard(id, created)) });
        return;
      }
      let id: string;
      try {
        id = decodeURIComponent(path.slice('/v1/models/'.length));
      } catch {
        id = '';
      }
      if (STUB_MODEL_IDS.includes(id)) sendJson(res, 200, modelCard(id, created));
      else sendJson(res, 404, errorBody('Model not found', 'invalid_request_error', '1500'));
      return;
    }

    const routes: Record<string, (body: Record<string, unknown>) => Promise<void>> = {
      '/v1/chat/completions': (body) => handleChat(ctx, req, res, body),
      '/v1/fim/completions': (body) => handleFim(ctx, res, body),
      '/v1/embeddings': (body) => handleEmbeddings(ctx, res, body),
    };
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (!route) {
      sendJson(res, 404, errorBody('Not Found', 'invalid_request_error', null));
      return;
    }
    if (method !== 'POST') {
      sendJson(res, 405, errorBody('Method Not Allowed', 'invalid_request_error', null));
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      sendJson(res, 400, errorBody('Invalid JSON body', 'invalid_request_error', null));
      return;
    }
    if (!isRecord(parsed)) {
      sendJson(res, 422, {
        detail: [
          {
            type: 'model_attributes_type',
            loc: ['body'],
            msg: 'Input should be a valid object',
            input: null,
          },
        ],
      });
      return;
    }
    await route(parsed);
  }

  const server = createServer({ keepAlive: true }, (req, res) => {
    const ctx: RequestContext = { aborted: false, cancel: [], req };
    inFlight.add(ctx);
    res.on('close', () => abort(ctx));
    if (closed) abort(ctx);
    handle(ctx, req, res)
      .catch((err: unknown) => {
        if (!res.headersSent) {
          sendJson(res, 500, errorBody(`Stub failure: ${String(err)}`, 'server_error', '5000'));
        } else {
          res.destroy();
        }
      })
      .finally(() => inFlight.delete(ctx));
  });
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;

  return new Promise<UpstreamStub>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', onError);
      const { port } = server.address() as AddressInfo;
      const urlHost = host.includes(':') ? `[${host}]` : host;
      let closing: Promise<void> | undefined;
      resolve({
        url: `http://${urlHost}:${port}`,
        requests,
        served,
        setLatency(ms: number): void {
          latencyMs = Math.max(0, ms);
        },
        get inFlight(): number {
          return inFlight.size;
        },
        get held(): number {
          return holding.size;
        },
        release(): void {
          for (const release of [...holding]) release();
        },
        close(): Promise<void> {
          closing ??= new Promise<void>((done) => {
            closed = true;
            for (const ctx of [...inFlight]) abort(ctx);
            server.close(() => done());
            server.closeAllConnections();
          });
          return closing;
        },
      });
    });
  });
}

/**
 * The stub in a process of its own, for measurements of the gateway alone (its memory, its event
 * loop): what the stub does to make large answers does not count against them. It records
 * nothing (`requests` and `served` stay empty) and holds nothing (`release` does nothing).
 */
export async function startUpstreamStubProcess(): Promise<UpstreamStub> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--port', '0'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the stub process exited (${code}) before it listened`)));
    lines.once('line', (line) => resolve((JSON.parse(line) as { url: string }).url));
  });
  lines.close();
  return {
    url,
    requests: [],
    served: [],
    held: 0,
    inFlight: 0,
    setLatency(): void {
      throw new Error('setLatency: not available on a stub process');
    },
    release(): void {},
    close(): Promise<void> {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

function isMainModule(): boolean {
  if (import.meta.main === true) return true;
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '9000' },
      host: { type: 'string', default: '127.0.0.1' },
      latency: { type: 'string', default: '0' },
      'api-key': { type: 'string', default: DEFAULT_STUB_API_KEY },
      'stream-chunks': { type: 'string', default: '3' },
    },
  });
  const stub = await startUpstreamStub({
    port: Number(values.port),
    host: values.host,
    latencyMs: Number(values.latency),
    apiKey: values['api-key'],
    streamChunks: Number(values['stream-chunks']),
    recordRequests: false,
  });
  process.stdout.write(`${JSON.stringify({ url: stub.url })}\n`);
  const stop = (): void => {
    stub.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (isMainModule()) {
  main().catch((err: unknown) => {
    process.stderr.write(`upstream-stub: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
