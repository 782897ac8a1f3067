/**
 * Duplicate members of a JSON request's top-level object.
 *
 * `JSON.parse` keeps the last of two members with one name, and says nothing. The gateway
 * authorises what it parsed (the last `model`) but forwards the raw bytes, and a provider that
 * keeps the first would serve a model the key may not use. A body whose top-level object names a
 * member twice (after unescaping: `"mod\u0065l"` is `"model"`) is therefore refused.
 *
 * The scan walks the top level of a text that `JSON.parse` has already accepted, so it need not
 * validate anything. It jumps over strings with `indexOf`, so its cost grows with the number of
 * strings in the body, not with the length of their contents.
 */

const QUOTE = 34; // "
const BACKSLASH = 92; // \
const OPEN_BRACE = 123; // {
const CLOSE_BRACE = 125; // }
const OPEN_BRACKET = 91; // [
const CLOSE_BRACKET = 93; // ]
const COMMA = 44; // ,

/** The index just past the closing quote of the string whose opening quote is at `start`. */
function stringEnd(text: string, start: number): number {
  let at = start + 1;
  for (;;) {
    const quote = text.indexOf('"', at);
    if (quote === -1) return text.length; // not valid JSON; cannot happen after JSON.parse
    let backslashes = 0;
    for (let i = quote - 1; i > start && text.charCodeAt(i) === BACKSLASH; i--) backslashes++;
    if (backslashes % 2 === 0) return quote + 1;
    at = quote + 1;
  }
}

/**
 * The first member name that the top-level object of `text` (valid JSON) has more than once, or
 * undefined. Not an object at the top level: undefined.
 */
export function duplicateTopLevelMember(text: string): string | undefined {
  let depth = 0;
  /** At depth 1, the next string is a member name (just after `{` or `,`). */
  let expectName = false;
  let names: Set<string> | undefined;
  let first: string | undefined;
  const length = text.length;
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const end = stringEnd(text, i);
      if (depth === 1 && expectName) {
        expectName = false;
        const raw = text.slice(i + 1, end - 1);
        const name = raw.includes('\\') ? (JSON.parse(`"${raw}"`) as string) : raw;
        if (first === undefined) first = name;
        else {
          if (names === undefined) names = new Set([first]);
          if (names.has(name)) return name;
          names.add(name);
        }
      }
      i = end - 1;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      depth++;
      if (depth === 1) {
        if (c !== OPEN_BRACE) return undefined;
        expectName = true;
      }
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--;
      if (depth === 0) return undefined;
    } else if (c === COMMA && depth === 1) {
      expectName = true;
    }
  }
  return undefined;
}
