/**
 * OpenAI clients ask for `encoding_format: "base64"` by default and decode whatever comes back as
 * base64 little-endian float32; a provider that answers with float arrays would leave them with
 * empty vectors. The gateway does the encoding for them, as the body streams through: one
 * embedding is held at a time (a few KiB), never the whole body, which for a large batch runs to
 * tens of megabytes and would take the event loop for a second to parse and serialise whole.
 */

const NAME = '"embedding"';
/** An embedding array longer than this (in characters) is passed on as it is, unencoded. */
const MAX_ARRAY_CHARS = 4 << 20;

function isSpace(c: number): boolean {
  return c === 32 || c === 10 || c === 13 || c === 9;
}

function skipSpace(text: string, at: number): number {
  let i = at;
  while (i < text.length && isSpace(text.charCodeAt(i))) i++;
  return i;
}

/** The JSON text of an array's members (without its brackets) as a base64 string, or as it was. */
function encodeArray(members: string): string {
  const parts = members.trim().length === 0 ? [] : members.split(',');
  const buffer = Buffer.allocUnsafe(parts.length * 4);
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!.trim();
    const value = part.length === 0 ? Number.NaN : Number(part);
    // Anything but a number (a string, null, a nested array) leaves the array untouched.
    if (Number.isNaN(value)) return `[${members}]`;
    buffer.writeFloatLE(value, i * 4);
  }
  return `"${buffer.toString('base64')}"`;
}

/**
 * Rewrites every `"embedding": [numbers]` member of an embeddings response as a base64 string, as
 * the text arrives in chunks. Everything else passes unchanged. In valid JSON a quote outside a
 * string opens one and a quote inside is escaped, so the literal `"embedding"` followed by a colon
 * is always that member's name, never part of a value: no general parser is needed.
 */
export class EmbeddingsBase64Encoder {
  /** Text held back: the start of what may be a member name, or a name whose value is not here yet. */
  #carry = '';
  /** The members of the array being read (after its `[`), or undefined outside one. */
  #array: string | undefined;

  /** The rewritten text of everything that can be decided so far. */
  push(chunk: string): string {
    const text = this.#carry.length > 0 ? this.#carry + chunk : chunk;
    this.#carry = '';
    let out = '';
    let at = 0;
    for (;;) {
      if (this.#array !== undefined) {
        const close = text.indexOf(']', at);
        if (close === -1) {
          this.#array += text.slice(at);
          if (this.#array.length > MAX_ARRAY_CHARS) {
            out += `[${this.#array}`;
            this.#array = undefined;
          }
          return out;
        }
        out += encodeArray(this.#array + text.slice(at, close));
        this.#array = undefined;
        at = close + 1;
        continue;
      }
      const found = text.indexOf(NAME, at);
      if (found === -1) {
        // The last few characters may be the start of the name, cut by the chunk's end.
        const keep = Math.max(at, text.length - (NAME.length - 1));
        this.#carry = text.slice(keep);
        return out + text.slice(at, keep);
      }
      const colon = skipSpace(text, found + NAME.length);
      const open = colon < text.length && text.charCodeAt(colon) === 58 ? skipSpace(text, colon + 1) : colon;
      if (open === text.length) {
        // The chunk ended before the member's value began: decide with the next one.
        this.#carry = text.slice(found);
        return out + text.slice(at, found);
      }
      if (open === colon || text.charCodeAt(open) !== 91) {
        // A value `"embedding"` (as in `"object": "embedding"`), or a member that is no array.
        out += text.slice(at, open);
        at = open;
        continue;
      }
      out += text.slice(at, open);
      this.#array = '';
      at = open + 1;
    }
  }

  /** The rest, at the end of the body (a body cut short passes on as it came). */
  end(): string {
    const out = this.#array === undefined ? this.#carry : `[${this.#array}${this.#carry}`;
    this.#array = undefined;
    this.#carry = '';
    return out;
  }
}

/** Rewrites a whole body at once (see `EmbeddingsBase64Encoder`). */
export function encodeEmbeddingsBase64(text: string): string {
  const encoder = new EmbeddingsBase64Encoder();
  return encoder.push(text) + encoder.end();
}
