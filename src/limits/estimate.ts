/**
 * A fast, tokenizer-free estimate of what a request will cost, reserved against tpm and budgets
 * at admission and corrected with the real usage afterwards.
 *
 * The prompt is estimated from the size of the whole request body, not from the members the
 * gateway happens to know: a provider counts tool definitions, response formats, documents and
 * whatever a new API version adds, and a prompt moved into `tools` must not be free to reserve.
 * One token per 4 bytes of JSON is above the real count for text in any language the common
 * tokenizers handle (the JSON around the text — quotes, member names, escapes — only adds bytes),
 * and costs nothing to compute. To it is added the completion the request may produce:
 * `max_tokens` (times `n`), or DEFAULT_COMPLETION_RESERVE when the request sets no bound.
 */

export type EstimateEndpoint = 'chat' | 'fim' | 'embeddings';

/** Completion tokens reserved for chat and FIM requests that do not set `max_tokens`. */
export const DEFAULT_COMPLETION_RESERVE = 1024;

/** Bytes of request body per estimated prompt token. */
export const BYTES_PER_TOKEN = 4;
/** How deep lists of token ids are followed in an embeddings `input`. */
const MAX_DEPTH = 4;

/** Token ids in an embeddings input (`[[1, 2, 3], [4]]`): each counts as one token. */
function tokenIds(value: unknown, depth: number): number {
  if (typeof value === 'number') return 1;
  if (!Array.isArray(value) || depth >= MAX_DEPTH) return 0;
  let total = 0;
  for (const item of value) total += tokenIds(item, depth + 1);
  return total;
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
 * Estimated tokens of a request: the prompt (see `estimatePromptTokens`) plus `max_tokens` (times
 * `n` when several choices are asked for), or DEFAULT_COMPLETION_RESERVE when chat or FIM sets
 * none; embeddings have no completion. Never throws, whatever the body holds.
 *
 * @param bodyBytes the size in bytes of the raw request body that `body` was parsed from
 */
export function estimateTokens(
  body: Record<string, unknown>,
  endpoint: EstimateEndpoint,
  bodyBytes: number,
): number {
  const prompt = estimatePromptTokens(body, endpoint, bodyBytes);
  return endpoint === 'embeddings' ? prompt : prompt + maxTokens(body);
}

/**
 * The prompt part of the estimate: the body's bytes / 4, rounded up (for embeddings given as
 * token ids, at least one per id, since `[1,2,3]` is fewer bytes than tokens).
 */
export function estimatePromptTokens(
  body: Record<string, unknown>,
  endpoint: EstimateEndpoint,
  bodyBytes: number,
): number {
  const bySize = Math.ceil(Math.max(0, bodyBytes) / BYTES_PER_TOKEN);
  return endpoint === 'embeddings' ? Math.max(bySize, tokenIds(body.input, 0)) : bySize;
}
