import type { RetryConfig } from './request';
import { ThrottleErrors } from '../../src/errors';
import { ATTEMPT_FIELD, ERROR_FIELD } from '../../src/private/retry-fields';

/** The next attempt of a RateLimitedTask: its number, the backoff to sit out first, and the task's input. */
export interface RetryStep {
  readonly attempt: number;
  readonly delayUs: number;
  readonly input: unknown;
}

/** The task's attempts are used up; the message carries its last error and cause. */
export class RetriesExhausted extends Error {
  constructor(readonly attempts: number, readonly error: string, readonly errorCause: unknown) {
    super(JSON.stringify({ attempts, error, cause: errorCause }));
    this.name = ThrottleErrors.RETRIES_EXHAUSTED;
  }
}

/**
 * Reads the attempt state a RateLimitedTask left in the input. Coming back from a retryable error, it counts
 * the attempt, draws the backoff (exponential, capped, full jitter), strips the error and keeps the count for
 * the next round. Out of attempts, it raises `RetriesExhausted` (with the task's last error) for the fragment's Catch.
 */
export function retryStep(input: unknown, retry: RetryConfig | undefined, random: () => number): RetryStep {
  if (input === null || typeof input !== 'object' || Array.isArray(input) || !(ERROR_FIELD in input)) {
    return { attempt: 1, delayUs: 0, input };
  }
  const { [ERROR_FIELD]: error, [ATTEMPT_FIELD]: previous, ...rest } = input as Record<string, any>;
  const attempt = (typeof previous === 'number' && previous >= 1 ? previous : 1) + 1;
  if (!retry || attempt > retry.maxAttempts) {
    throw new RetriesExhausted(attempt - 1, String(error?.Error ?? 'States.TaskFailed'), error?.Cause);
  }
  const capMs = Math.min(retry.maxDelayMs, retry.intervalMs * retry.backoffRate ** (attempt - 2));
  const delayMs = retry.jitter ? random() * capMs : capMs;
  return { attempt, delayUs: Math.round(delayMs * 1000), input: { ...rest, [ATTEMPT_FIELD]: attempt } };
}
