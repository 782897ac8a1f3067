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

/** Exact powers of ten as doubles (10^22 is the largest). */
const POW10 = Array.from({ length: 23 }, (_, i) => 10 ** i);
/** Mantissas up to this are exact in a double, with a digit to spare. */
const MANTISSA_MAX = (2 ** 53 - 10) / 10;
/** Floats of the embedding being encoded (reused: one embedding at a time). */
let scratch = Buffer.allocUnsafe(16_384);

/**
 * The JSON text of an array's members (without its brackets) as a base64 string of little-endian
 * float32, or undefined when a member is not a number (a string, null, a nested array). Numbers
 * are read here rather than by `split` and `Number` (a string per member, millions for a large
 * batch, and as many for the garbage collector): a mantissa of at most 15 digits with an exponent
 * of at most 22 is divided or multiplied by an exact power of ten, one correctly rounded operation
 * that gives what `Number` would (the fast path of strtod); any other number goes to `Number`.
 */
function encodeArray(members: string): string | undefined {
  const length = members.length;
  let i = 0;
  let count = 0;
  for (;;) {
    while (i < length && isSpace(members.charCodeAt(i))) i++;
    if (i === length) return count === 0 ? '""' : undefined; // `[]`, or a trailing comma
    const start = i;
    let negative = false;
    if (members.charCodeAt(i) === 45) {
      negative = true;
      i++;
    }
    let mantissa = 0;
    let exact = true;
    let digits = 0;
    let scale = 0;
    for (let c = members.charCodeAt(i); c >= 48 && c <= 57; c = members.charCodeAt(++i)) {
      if (mantissa > MANTISSA_MAX) exact = false;
      else mantissa = mantissa * 10 + (c - 48);
      digits++;
    }
    if (members.charCodeAt(i) === 46) {
      i++;
      for (let c = members.charCodeAt(i); c >= 48 && c <= 57; c = members.charCodeAt(++i)) {
        if (mantissa > MANTISSA_MAX) exact = false;
        else {
          mantissa = mantissa * 10 + (c - 48);
          scale--;
        }
        digits++;
      }
    }
    if (digits === 0) return undefined;
    const e = members.charCodeAt(i);
    if (e === 101 || e === 69) {
      i++;
      let sign = 1;
      const c = members.charCodeAt(i);
      if (c === 43 || c === 45) {
        if (c === 45) sign = -1;
        i++;
      }
      let exponent = 0;
      let expDigits = 0;
      for (let d = members.charCodeAt(i); d >= 48 && d <= 57; d = members.charCodeAt(++i)) {
        exponent = Math.min(exponent * 10 + (d - 48), 100_000);
        expDigits++;
      }
      if (expDigits === 0) return undefined;
      scale += sign * exponent;
    }
    let value: number;
    if (exact && scale >= -22 && scale <= 22) {
      value = scale < 0 ? mantissa / POW10[-scale]! : mantissa * POW10[scale]!;
      if (negative) value = -value;
    } else value = Number(members.slice(start, i));
    if (Number.isNaN(value)) return undefined;
    if ((count + 1) * 4 > scratch.length) {
      const grown = Buffer.allocUnsafe(scratch.length * 2);
      scratch.copy(grown, 0, 0, count * 4);
      scratch = grown;
    }
    scratch.writeFloatLE(value, count * 4);
    count++;
    while (i < length && isSpace(members.charCodeAt(i))) i++;
    if (i === length) return `"${scratch.toString('base64', 0, count * 4)}"`;
    if (members.charCodeAt(i) !== 44) return undefined;
    i++;
  }
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
        const members = this.#array + text.slice(at, close);
        out += encodeArray(members) ?? `[${members}]`;
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
