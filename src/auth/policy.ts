/**
 * What a verified key may do: pure checks over the key's policy, run on every request after
 * verification. Each refusal names what was missing, so the user knows what to ask for.
 */
import { isModelId } from '../providers/models.ts';
import type { InferenceScope, KeyRecord } from '../store/types.ts';
import { type Cidr, inRanges, parseAddress, parseCidrs } from './ip.ts';

const PATTERN_CHARS = /^[A-Za-z0-9._:\-*/]+$/;
const compiled = new Map<string, RegExp>();

/**
 * `mistral-small-*` → /^mistral-small-[A-Za-z0-9._:/-]*$/: `*` stands for any run of model id
 * characters, never for anything else (and `modelAllowed` refuses ids outside the grammar before
 * any pattern is tried). Throws on characters a model id cannot have.
 */
export function compileModelPattern(pattern: string): RegExp {
  let re = compiled.get(pattern);
  if (re) return re;
  if (pattern.length === 0 || pattern.length > 200 || !PATTERN_CHARS.test(pattern)) {
    throw new Error(`"${pattern}" is not a model id or pattern (letters, digits, . _ : - / and * only)`);
  }
  re = new RegExp(`^${pattern.replace(/[.]/g, '\\.').replace(/\*/g, '[A-Za-z0-9._:/-]*')}$`);
  if (compiled.size > 10_000) compiled.clear();
  compiled.set(pattern, re);
  return re;
}

/**
 * True when the key may use the model: an empty allowlist allows every model, a list only the ids
 * (of the model id grammar, see providers/models.ts) that one of its patterns matches.
 */
export function modelAllowed(patterns: readonly string[], model: string): boolean {
  if (patterns.length === 0) return true;
  if (!isModelId(model)) return false;
  for (const pattern of patterns) {
    if (pattern === model || compileModelPattern(pattern).test(model)) return true;
  }
  return false;
}

export function hasScope(key: KeyRecord, scope: InferenceScope): boolean {
  return key.policy.scopes.includes(scope);
}

const parsedRanges = new WeakMap<readonly string[], Cidr[]>();

function ranges(list: readonly string[]): Cidr[] {
  let parsed = parsedRanges.get(list);
  if (!parsed) {
    parsed = parseCidrs(list);
    parsedRanges.set(list, parsed);
  }
  return parsed;
}

/**
 * True when the client address may use the key: it must be within the key's own allowlist (when
 * it has one) and within the workspace's (when it has one). The workspace list is a ceiling set by
 * the operator, which a key's own list narrows but never widens. Parsed ranges are remembered per
 * (cached) key record.
 */
export function addressAllowed(key: KeyRecord, clientAddress: string): boolean {
  const own = key.policy.allowedIps;
  const workspace = key.workspacePolicy.allowedIps;
  if (own.length === 0 && workspace.length === 0) return true;
  const address = parseAddress(clientAddress);
  if (address === undefined) return false;
  return (
    (own.length === 0 || inRanges(address, ranges(own))) &&
    (workspace.length === 0 || inRanges(address, ranges(workspace)))
  );
}

/** Keeps only the cards of a `/v1/models` list that the key may use; other bodies pass unchanged. */
export function filterModelList(text: string, patterns: readonly string[]): string {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return text;
  }
  const data = (body as { data?: unknown }).data;
  if (!Array.isArray(data)) return text;
  (body as { data: unknown[] }).data = data.filter((card) => {
    const id = (card as { id?: unknown } | null)?.id;
    return typeof id === 'string' && modelAllowed(patterns, id);
  });
  return JSON.stringify(body);
}
