export {
  DEFAULT_COMPLETION_RESERVE,
  type EstimateEndpoint,
  estimatePromptTokens,
  estimateTokens,
} from './estimate.ts';
export { createMemoryLimiter } from './memory.ts';
export {
  createRedisClient,
  createRedisLimiter,
  DEFAULT_LEASE_MS,
  RedisLimiter,
  RedisLimiterError,
  type RedisLimiterOptions,
} from './redis.ts';
export {
  createResilientLimiter,
  type LimiterState,
  ResilientLimiter,
  type ResilientLimiterOptions,
} from './resilient.ts';
export {
  type Admission,
  type Limiter,
  LimiterUnavailableError,
  type LimitReason,
  type LimitSubject,
  type MemoryLimiterOptions,
  type Ticket,
} from './types.ts';
