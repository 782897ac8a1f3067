/**
 * A fast, tokenizer-free estimate of what a request will cost, reserved against tpm and budgets
 * at admission and corrected with the real usage afterwards: characters of the text / 4 (rounded
 * up) plus the completion the request may produce.
 */

export type EstimateEndpoint = 'chat' | 'fim' | 'embeddings';

/** Completion tokens reserved for chat and FIM requests that do not set `max_tokens`. */
export const DEFAULT_COMPLETION_RESERVE = 1024;

const CHARS_PER_TOKEN = 4;
/** How deep arrays are followed (content parts, lists of inputs); anything deeper is ignored. */
const MAX_DEPTH = 4;

/**
 * Text characters in a content value: strings count, arrays are summed, objects count their
 * `text` member (text parts; image and other parts cost nothing here), anything else is 0.
 * Numbers count as one token each when `numbersAreTokens` (embeddings accept token ids).
 */
function chars(value: unknown, depth: number, numbersAreTokens: boolean): number {
  if (typeof value === 'string') return value.length;
  if (typeof value === 'number') return numbersAreTokens ? CHARS_PER_TOKEN : 0;
  if (value === null || typeof value !== 'object' || depth >= MAX_DEPTH) return 0;
  if (Array.isArray(value)) {
    let total = 0;
    for (const item of value) total += chars(item, depth + 1, numbersAreTokens);
    return total;
  }
  const text = (value as Record<string, unknown>).text;
  return typeof text === 'string' ? text.length : 0;
}

function maxTokens(body: Record<string, unknown>): number {
  const value = body.max_tokens;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) return DEFAULT_COMPLETION_RESERVE;
  const n = body.n;
  const choices = typeof n === 'number' && Number.isInteger(n) && n > 1 ? n : 1;
  // A huge max_tokens times a huge n overflows to Infinity: cap it (the limits refuse it anyway).
  return Math.min(Math.ceil(value) * choices, Number.MAX_SAFE_INTEGER);
}

/**
 * Estimated tokens of a request body: prompt text / 4 plus `max_tokens` (times `n` when several
 * choices are asked for), or `DEFAULT_COMPLETION_RESERVE` when chat or FIM sets none; embeddings
 * have no completion. Never throws, whatever the body holds.
 */
export function estimateTokens(body: Record<string, unknown>, endpoint: EstimateEndpoint): number {
  const prompt = estimatePromptTokens(body, endpoint);
  return endpoint === 'embeddings' ? prompt : prompt + maxTokens(body);
}

/** The prompt part of the estimate: the text of the request / 4. */
export function estimatePromptTokens(body: Record<string, unknown>, endpoint: EstimateEndpoint): number {
  let text = 0;
  if (endpoint === 'chat') {
    const messages = body.messages;
    if (Array.isArray(messages)) {
      for (const message of messages) {
        if (message !== null && typeof message === 'object' && !Array.isArray(message)) {
          text += chars((message as Record<string, unknown>).content, 0, false);
        }
      }
    }
  } else if (endpoint === 'fim') {
    if (typeof body.prompt === 'string') text += body.prompt.length;
    if (typeof body.suffix === 'string') text += body.suffix.length;
  } else {
    text += chars(body.input, 0, true);
  }
  return Math.ceil(text / CHARS_PER_TOKEN);
}
