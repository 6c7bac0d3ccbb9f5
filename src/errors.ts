/**
 * Stable error names thrown by the cdk-sfn-throttle handlers.
 *
 * Step Functions matches `Retry` and `Catch` on these names (`ErrorEquals`), so they never change.
 */
export class ThrottleErrors {
  /**
   * The bucket had no token for the request (TRY mode), or the reservation would exceed `maxWait`
   * (RESERVE mode). The error cause carries `retryAfterMs`.
   */
  public static readonly RATE_LIMIT_EXCEEDED = 'RateLimitExceeded';

  /**
   * The acquire request was malformed (unknown mode, bad token count, bad key). Not retryable.
   */
  public static readonly INVALID_ACQUIRE_REQUEST = 'InvalidAcquireRequest';

  /**
   * The limiter could not reach its table or the table throttled it. Nothing was admitted. Retryable.
   */
  public static readonly LIMITER_UNAVAILABLE = 'LimiterUnavailable';

  /**
   * A RateLimitedTask used up its retry policy's attempts. The cause carries the task's last error and cause.
   */
  public static readonly RETRIES_EXHAUSTED = 'RetriesExhausted';

  /**
   * A message handed to a BufferedQueueConsumer with `waitForResult` could not be dispatched or its result could
   * not be reported: it reached the dead-letter queue (every receive failed, or the dispatcher crashed or timed
   * out), or the target's result is too large or not valid JSON for Step Functions (the target is not run again).
   * The cause says which, with the message id. Not retried by the library.
   */
  public static readonly DISPATCH_FAILED = 'DispatchFailed';

  /**
   * A ConcurrencyLimitedTask waited `maxWait` for a slot and got none. Its registration was removed: nothing is held.
   */
  public static readonly CONCURRENCY_WAIT_EXPIRED = 'ConcurrencyWaitExpired';

  /**
   * A CircuitBreaker is open: the protected task was not called. The cause names the breaker, the key and until
   * when it stays open.
   */
  public static readonly CIRCUIT_OPEN = 'CircuitOpen';

  /**
   * Errors a caller should retry: the limiter admitted nothing and may admit later. A new array on each call.
   */
  public static retryable(): string[] {
    return [ThrottleErrors.RATE_LIMIT_EXCEEDED, ThrottleErrors.LIMITER_UNAVAILABLE];
  }

  private constructor() {}
}
