export {
  DEFAULT_COMPLETION_RESERVE,
  type EstimateEndpoint,
  estimatePromptTokens,
  estimateTokens,
} from './estimate.ts';
export { createMemoryLimiter } from './memory.ts';
export type {
  Admission,
  Limiter,
  LimitReason,
  LimitSubject,
  MemoryLimiterOptions,
  Ticket,
} from './types.ts';
