// Fields a RateLimitedTask keeps in the state data between attempts (shared by the construct and the handler).

/** Attempt number of the next call of the task (2 and up; absent on the first attempt). */
export const ATTEMPT_FIELD = 'cdkSfnThrottleAttempt';
/** Where the task's Catch puts a retryable error before going back to acquire. */
export const ERROR_FIELD = 'cdkSfnThrottleError';
