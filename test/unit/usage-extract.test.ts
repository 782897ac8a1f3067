import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { extractUsage, SseUsageScanner } from '../../src/usage/extract.ts';

test('usage is read from a chat completion body', () => {
  const body = JSON.stringify({
    id: 'x',
    choices: [{ message: { content: 'the word "usage" in content {' } }],
    usage: {
      prompt_tokens: 5,
      completion_tokens: 7,
      total_tokens: 12,
      prompt_tokens_details: { cached_tokens: 1 },
    },
  });
  assert.deepEqual(extractUsage(body), { promptTokens: 5, completionTokens: 7, totalTokens: 12 });
});

test('absent, null or malformed usage yields undefined, never a throw', () => {
  assert.equal(extractUsage('{"id":"x"}'), undefined);
  assert.equal(extractUsage('{"usage":null}'), undefined);
  assert.equal(extractUsage('{"usage":{"prompt_tokens":'), undefined);
  assert.deepEqual(extractUsage('{"usage":{"prompt_tokens":-3,"completion_tokens":"x"}}'), {
    promptTokens: 0,
    completionTokens: 0,
    totalTokens: 0,
  });
  fc.assert(
    fc.property(fc.string({ maxLength: 200 }), (text) => {
      extractUsage(text);
    }),
  );
});

const STREAM = [
  'data: {"id":"1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n',
  'data: {"id":"1","choices":[{"index":0,"delta":{"content":"Hé ✓ \\"usage\\""},"finish_reason":null}]}\n\n',
  'data: {"id":"1","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n',
  'data: [DONE]\n\n',
].join('');

test('the SSE scanner finds the final usage however the stream is cut into chunks', () => {
  const bytes = Buffer.from(STREAM, 'utf8');
  fc.assert(
    fc.property(fc.uniqueArray(fc.integer({ min: 1, max: bytes.length - 1 }), { maxLength: 30 }), (cuts) => {
      const points = [0, ...cuts.sort((a, b) => a - b), bytes.length];
      const scanner = new SseUsageScanner();
      const decoder = new TextDecoder();
      for (let i = 1; i < points.length; i++) {
        scanner.push(decoder.decode(bytes.subarray(points[i - 1], points[i]), { stream: true }));
      }
      assert.deepEqual(scanner.usage, { promptTokens: 5, completionTokens: 2, totalTokens: 7 });
    }),
    { numRuns: 2000 },
  );
});

test('a stream without usage leaves it undefined', () => {
  const scanner = new SseUsageScanner();
  scanner.push('data: {"id":"1","choices":[]}\n\ndata: [DONE]\n\n');
  assert.equal(scanner.usage, undefined);
});

test('the SSE scanner counts the events that delivered text', () => {
  const scanner = new SseUsageScanner();
  scanner.push(STREAM);
  // The first event has empty content; the others carry text.
  assert.equal(scanner.contentEvents, 2);
  const partial = new SseUsageScanner();
  partial.push('data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"choices":[{"delta":{"content":"b');
  assert.equal(partial.contentEvents, 1, 'an incomplete event is not counted yet');
});

test('pretty-printed events, spread over several data: lines, are read as JSON (issue 13, item 11)', () => {
  const event = (chunk: unknown) =>
    `${JSON.stringify(chunk, null, 2)
      .split('\n')
      .map((line) => `data: ${line}`)
      .join('\r\n')}\r\n\r\n`;
  const stream = [
    event({ choices: [{ index: 0, delta: { role: 'assistant', content: '' } }] }),
    event({ choices: [{ index: 0, delta: { content: 'Hello' } }] }),
    `data: {"choices": [{"index": 0, "delta": {"content": " world"}}]}\n\n`,
    event({
      choices: [{ index: 0, delta: { content: '!' } }],
      usage: { prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 },
    }),
    'data: [DONE]\n\n',
  ].join('');
  const bytes = Buffer.from(stream, 'utf8');
  fc.assert(
    fc.property(fc.uniqueArray(fc.integer({ min: 1, max: bytes.length - 1 }), { maxLength: 20 }), (cuts) => {
      const points = [0, ...cuts.sort((a, b) => a - b), bytes.length];
      const scanner = new SseUsageScanner();
      const decoder = new TextDecoder();
      for (let i = 1; i < points.length; i++)
        scanner.push(decoder.decode(bytes.subarray(points[i - 1], points[i]), { stream: true }));
      assert.equal(scanner.contentEvents, 3);
      assert.deepEqual(scanner.usage, { promptTokens: 4, completionTokens: 3, totalTokens: 7 });
    }),
    { numRuns: 500 },
  );
  // Cut before its usage report, the stream still counts what it delivered.
  const cut = new SseUsageScanner();
  cut.push(stream.slice(0, stream.indexOf('" world"') + 20));
  cut.end();
  assert.equal(cut.contentEvents, 2);
});
