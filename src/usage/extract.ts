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
        return usageFrom(JSON.parse(text.slice(open, i + 1)));
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** A usage object as the provider writes it, read into counts. */
function usageFrom(value: unknown): TokenUsage | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const usage = value as Record<string, unknown>;
  const promptTokens = count(usage.prompt_tokens);
  const completionTokens = count(usage.completion_tokens);
  const total = count(usage.total_tokens);
  return { promptTokens, completionTokens, totalTokens: total || promptTokens + completionTokens };
}

/** The compact form most providers write (Mistral, JavaScript servers): found without parsing. */
const COMPACT_CONTENT = '"content":"';

/** Choices of a parsed chunk that carried text: `delta.content` (chat) or `text` (completions). */
function textChoices(chunk: unknown): number {
  const choices = (chunk as { choices?: unknown } | null)?.choices;
  if (!Array.isArray(choices)) return 0;
  let n = 0;
  for (const choice of choices) {
    if (typeof choice !== 'object' || choice === null) continue;
    const delta = (choice as { delta?: { content?: unknown } }).delta;
    const content = delta?.content ?? (choice as { text?: unknown }).text;
    if (typeof content === 'string' ? content.length > 0 : Array.isArray(content) && content.length > 0) n++;
  }
  return n;
}

/**
 * Watches an SSE stream as it passes and keeps the usage of the last event that carried one.
 * Only complete events (ended by a blank line) are examined; partial ones wait for their end.
 *
 * Each event's `data:` lines are joined as the SSE format says and read as JSON, whatever its
 * spacing or line breaks (`"content": "…"`, as Python and many OpenAI-compatible servers write).
 * It stays cheap on the hot path: an event in the compact form is counted by one `indexOf`, and
 * `JSON.parse` runs only on an event that names `usage` (the last one, usually) or whose content
 * is written some other way.
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
    this.#carry = data.slice(end);
    this.#events(data, end);
  }

  /**
   * The stream ended (or was cut): an event the provider finished but did not end with a blank
   * line is examined too, if its data is whole JSON.
   */
  end(): void {
    const rest = this.#carry;
    this.#carry = '';
    if (rest.trim().length > 0) this.#events(`${rest}\n`, rest.length + 1);
  }

  /** Examines the events of `text` up to `end`, line by line (no array of lines is made). */
  #events(text: string, end: number): void {
    let payload: string | undefined;
    let at = 0;
    while (at <= end) {
      let eol = text.indexOf('\n', at);
      if (eol === -1 || eol > end) eol = end;
      const lineEnd = eol > at && text.charCodeAt(eol - 1) === 13 ? eol - 1 : eol;
      if (lineEnd === at) {
        // A blank line ends the event.
        if (payload !== undefined) this.#event(payload);
        payload = undefined;
      } else if (text.startsWith('data:', at)) {
        const start = text.charCodeAt(at + 5) === 32 ? at + 6 : at + 5;
        const value = text.slice(start, lineEnd);
        payload = payload === undefined ? value : `${payload}\n${value}`;
      }
      at = eol + 1;
    }
    if (payload !== undefined) this.#event(payload);
  }

  #event(data: string): void {
    const hasUsage = data.includes('"usage"');
    let compact = 0;
    for (
      let at = data.indexOf(COMPACT_CONTENT);
      at !== -1;
      at = data.indexOf(COMPACT_CONTENT, at + COMPACT_CONTENT.length)
    ) {
      if (data.charCodeAt(at + COMPACT_CONTENT.length) !== 34 /* an empty string */) compact++;
    }
    // Quotes inside JSON strings are escaped, so the compact form cannot match inside a value.
    const needsParse = hasUsage || (compact === 0 && (data.includes('"content"') || data.includes('"text"')));
    if (!needsParse) {
      this.contentEvents += compact;
      return;
    }
    let chunk: unknown;
    try {
      chunk = JSON.parse(data);
    } catch {
      // Not JSON (`[DONE]`, a comment, a cut event): what the literal look found is all there is.
      this.contentEvents += compact;
      if (hasUsage) this.usage = extractUsage(data) ?? this.usage;
      return;
    }
    this.contentEvents += textChoices(chunk);
    if (hasUsage) this.usage = usageFrom((chunk as { usage?: unknown } | null)?.usage) ?? this.usage;
  }
}
