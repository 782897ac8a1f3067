/**
 * What a verified key may do: pure checks over the key's policy, run on every request after
 * verification. Each refusal names what was missing, so the user knows what to ask for.
 */
import type { InferenceScope, KeyRecord } from '../store/types.ts';
import { type Cidr, inRanges, parseAddress, parseCidrs } from './ip.ts';

const PATTERN_CHARS = /^[A-Za-z0-9._:\-*/]+$/;
const compiled = new Map<string, RegExp>();

/** `mistral-small-*` → /^mistral-small-.*$/. Throws on characters a model id cannot have. */
export function compileModelPattern(pattern: string): RegExp {
  let re = compiled.get(pattern);
  if (re) return re;
  if (pattern.length === 0 || pattern.length > 200 || !PATTERN_CHARS.test(pattern)) {
    throw new Error(`"${pattern}" is not a model id or pattern (letters, digits, . _ : - / and * only)`);
  }
  re = new RegExp(`^${pattern.replace(/[.]/g, '\\.').replace(/\*/g, '.*')}$`);
  if (compiled.size > 10_000) compiled.clear();
  compiled.set(pattern, re);
  return re;
}

/** True when the key may use the model (an empty allowlist allows every model). */
export function modelAllowed(patterns: readonly string[], model: string): boolean {
  if (patterns.length === 0) return true;
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
 * True when the client address may use the key: the key's own allowlist, else the workspace's,
 * else anywhere. Parsed ranges are remembered per (cached) key record.
 */
export function addressAllowed(key: KeyRecord, clientAddress: string): boolean {
  const list = key.policy.allowedIps.length > 0 ? key.policy.allowedIps : key.workspacePolicy.allowedIps;
  if (list.length === 0) return true;
  const address = parseAddress(clientAddress);
  return address !== undefined && inRanges(address, ranges(list));
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
