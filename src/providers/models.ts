/**
 * Model ids: the grammar every model a request names must match, and aliasing of legacy names.
 */
import { looksLikeKey } from '../keys/scrub.ts';

/** Longest model id accepted. */
export const MAX_MODEL_ID_LENGTH = 128;

/**
 * The model id grammar: segments of letters, digits and `. _ : -`, each starting with a letter or
 * digit, joined by single `/` (Mistral's ids, fine-tuned ids such as `ft:open-mistral-7b:…`, and
 * the `org/name` ids of self-hosted OpenAI-compatible servers). So no empty, `.` or `..` segment,
 * no leading or trailing `/`, nothing outside ASCII, no control character.
 */
const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]*(?:\/[A-Za-z0-9][A-Za-z0-9._:-]*)*$/;

/** Why a model id is refused, for the 422 message; undefined when it is a model id. */
export function modelIdProblem(text: string): string | undefined {
  if (text.length === 0 || text.length > MAX_MODEL_ID_LENGTH || !MODEL_ID.test(text))
    return `Input should be a model id: 1 to ${MAX_MODEL_ID_LENGTH} letters, digits and . _ : - in segments joined by /`;
  if (looksLikeKey(text))
    return 'Input looks like an API key, not a model id: send keys in the Authorization header only';
  return undefined;
}

/** True when the text is a model id of the grammar above (and not shaped like a key). */
export function isModelId(text: string): boolean {
  return text.length > 0 && text.length <= MAX_MODEL_ID_LENGTH && MODEL_ID.test(text) && !looksLikeKey(text);
}

/** Model-name aliasing: legacy names → current ids, from the configuration's alias table. */
export function resolveModel(aliases: Readonly<Record<string, string>>, model: string): string {
  return Object.hasOwn(aliases, model) ? (aliases[model] ?? model) : model;
}
