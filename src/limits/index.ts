export {
  DEFAULT_COMPLETION_RESERVE,
  type EstimateEndpoint,
  estimatePromptTokens,
  estimateTokens,
} from './estimate.ts';
export { createMemoryLimiter } from './memory.ts';
export {
  type Admission,
  type Limiter,
  LimiterUnavailableError,
  type LimitReason,
  type LimitSubject,
  type MemoryLimiterOptions,
  type Ticket,
} from './types.ts';
