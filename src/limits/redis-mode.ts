/**
 * The Redis limiters, apart from index.ts so that only the deployments with REDIS_URL load the
 * Redis client (it costs memory and start-up time the embedded mode does not need).
 */
export {
  createRedisClient,
  createRedisLimiter,
  DEFAULT_LEASE_MS,
  RedisLimiter,
  RedisLimiterError,
  type RedisLimiterOptions,
  RedisTimeoutError,
} from './redis.ts';
export {
  createResilientLimiter,
  type LimiterState,
  ResilientLimiter,
  type ResilientLimiterOptions,
} from './resilient.ts';
