/**
 * Reading the provider's `usage` object out of a response without parsing the whole body: the
 * object is small and flat, so we find the last `"usage"` member and parse just its braces.
 */
export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? Math.floor(value) : 0;
}

/** Usage from the last `"usage": {...}` in `text`, or undefined when there is none (or it is null). */
export function extractUsage(text: string): TokenUsage | undefined {
  const at = text.lastIndexOf('"usage"');
  if (at === -1) return undefined;
  const open = text.indexOf('{', at + 7);
  if (open === -1) return undefined;
  // Only whitespace and a colon may stand between the member name and its object.
  for (let i = at + 7; i < open; i++) {
    const c = text.charCodeAt(i);
    if (c !== 58 && c !== 32 && c !== 9 && c !== 10 && c !== 13) return undefined;
  }
  let depth = 0;
  let inString = false;
  for (let i = open; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++;
      else if (c === 34) inString = false;
      continue;
    }
    if (c === 34) inString = true;
    else if (c === 123) depth++;
    else if (c === 125 && --depth === 0) {
      try {
        const usage = JSON.parse(text.slice(open, i + 1)) as Record<string, unknown>;
        const promptTokens = count(usage.prompt_tokens);
        const completionTokens = count(usage.completion_tokens);
        const total = count(usage.total_tokens);
        return { promptTokens, completionTokens, totalTokens: total || promptTokens + completionTokens };
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

const CONTENT = '"content":"';

/**
 * Watches an SSE stream as it passes and keeps the usage of the last event that carried one.
 * Only complete events (ended by a blank line) are examined; partial ones wait for their end.
 */
export class SseUsageScanner {
  #carry = '';
  usage: TokenUsage | undefined;
  /**
   * Complete events that carried text to the client. Providers stream about one token per event,
   * so this is what a cut stream delivered when no usage report arrived.
   */
  contentEvents = 0;

  push(text: string): void {
    const data = this.#carry.length > 0 ? this.#carry + text : text;
    const end = Math.max(data.lastIndexOf('\n\n'), data.lastIndexOf('\r\n\r\n'));
    if (end === -1) {
      this.#carry = data.length > 1_048_576 ? '' : data;
      return;
    }
    const complete = data.slice(0, end);
    this.#carry = data.slice(end);
    for (let at = complete.indexOf(CONTENT); at !== -1; at = complete.indexOf(CONTENT, at + CONTENT.length)) {
      if (complete.charCodeAt(at + CONTENT.length) !== 34 /* an empty string */) this.contentEvents++;
    }
    if (complete.includes('"usage"')) this.usage = extractUsage(complete) ?? this.usage;
  }
}
