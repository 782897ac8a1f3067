import type { LimitSubject } from '../../src/limits/index.ts';
import type { KeyLimits, TokenBudget } from '../../src/store/types.ts';

/** A limiter subject: key_a of ws_a with no limit or budget but those given. */
export function subject(
  over: {
    keyId?: string;
    workspaceId?: string;
    limits?: Partial<KeyLimits>;
    keyBudget?: Partial<TokenBudget>;
    workspaceBudget?: Partial<TokenBudget>;
  } = {},
): LimitSubject {
  return {
    keyId: over.keyId ?? 'key_a',
    workspaceId: over.workspaceId ?? 'ws_a',
    limits: { rpm: null, tpm: null, concurrency: null, ...over.limits },
    keyBudget: { day: null, month: null, ...over.keyBudget },
    workspaceBudget: { day: null, month: null, ...over.workspaceBudget },
  };
}
