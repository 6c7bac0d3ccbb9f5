import { ThrottleErrors } from '../../src/errors';

/** The bucket had no room within the caller's patience. Retryable after `retryAfterMs`. */
export class RateLimitExceeded extends Error {
  constructor(readonly retryAfterMs: number) {
    super(`bucket empty, retry after ${retryAfterMs} ms`);
    this.name = ThrottleErrors.RATE_LIMIT_EXCEEDED;
  }
}

/** The acquire request is malformed. Never retried, never admitted. */
export class InvalidAcquireRequest extends Error {
  constructor(message: string) {
    super(message);
    this.name = ThrottleErrors.INVALID_ACQUIRE_REQUEST;
  }
}

/** DynamoDB could not be reached, throttled us, or contention did not settle: nothing was admitted. */
export class LimiterUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = ThrottleErrors.LIMITER_UNAVAILABLE;
  }
}
