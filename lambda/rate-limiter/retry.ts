import type { RetryConfig } from './request';
import { ThrottleErrors } from '../../src/errors';
import { ATTEMPT_FIELD, ERROR_FIELD } from '../../src/private/contract';

/** The next attempt of a RateLimitedTask: its number, the backoff to sit out first, and the task's input. */
export interface RetryStep {
  readonly attempt: number;
  readonly delayUs: number;
  readonly input: unknown;
}

/**
 * What a RateLimitedTask keeps in the state data between attempts. `task` names the RateLimitedTask (its backoff
 * state), so a second RateLimitedTask downstream starts its own count; `redrive` is the execution's redrive count
 * when the count started, so a redriven execution gets a fresh budget.
 */
export interface AttemptRecord {
  readonly task: string;
  readonly attempt: number;
  readonly redrive: number;
}

/** Where the backoff step runs: which RateLimitedTask, and the execution's `$$.Execution.RedriveCount`. */
export interface RetryScope {
  readonly task?: string;
  readonly redriveCount?: number;
}

/** The task's attempts are used up; the message carries its last error and cause. */
export class RetriesExhausted extends Error {
  constructor(readonly attempts: number, readonly error: string, readonly errorCause: unknown) {
    super(JSON.stringify({ attempts, error, cause: errorCause }));
    this.name = ThrottleErrors.RETRIES_EXHAUSTED;
  }
}

/** The task's own error, raised again under its own name (not retryable by the policy). */
export class TaskError extends Error {
  constructor(name: string, cause: unknown) {
    super(typeof cause === 'string' ? cause : JSON.stringify(cause ?? null));
    this.name = name;
  }
}

/**
 * Whether `errorName` matches one of `errors` as Step Functions matches `ErrorEquals`: exact names, `States.ALL`
 * for any error, `States.TaskFailed` for any error but `States.Timeout`.
 */
export function errorMatches(errorName: string, errors: readonly string[]): boolean {
  return errors.some((e) => e === errorName || e === 'States.ALL' || (e === 'States.TaskFailed' && errorName !== 'States.Timeout'));
}

/**
 * Reads the attempt state a RateLimitedTask left in the input. Every error of the task comes here (the task's
 * only Catch is `States.ALL`, so the task itself never fails an execution and a redrive never restarts at it).
 * - A redriven execution (RedriveCount above the record's) starts a fresh budget and goes back to acquire.
 * - An error the policy does not retry is raised again under its own name, for the fragment's Catch.
 * - A retryable error counts the attempt and draws the backoff (exponential, capped, full jitter); out of
 *   attempts it raises `RetriesExhausted` (with the task's last error).
 */
export function retryStep(input: unknown, retry: RetryConfig | undefined, random: () => number, scope: RetryScope = {}): RetryStep {
  if (input === null || typeof input !== 'object' || Array.isArray(input) || !(ERROR_FIELD in input)) {
    return { attempt: 1, delayUs: 0, input };
  }
  const { [ERROR_FIELD]: error, [ATTEMPT_FIELD]: previous, ...rest } = input as Record<string, any>;
  const task = scope.task ?? '';
  const redriveCount = scope.redriveCount ?? 0;
  const record = ownRecord(previous, task);
  const errorName = String(error?.Error ?? 'States.TaskFailed');
  if (redriveCount > record.redrive) {
    // The execution was redriven from this step: the operator asked for another try. Start a fresh budget and
    // acquire a token for it (no backoff: the redrive itself came after one).
    return { attempt: 1, delayUs: 0, input: { ...rest, [ATTEMPT_FIELD]: { task, attempt: 1, redrive: redriveCount } } };
  }
  if (!retry || !errorMatches(errorName, retry.errors ?? [])) {
    throw new TaskError(errorName, error?.Cause);
  }
  const attempt = record.attempt + 1;
  if (attempt > retry.maxAttempts) {
    throw new RetriesExhausted(attempt - 1, errorName, error?.Cause);
  }
  const capMs = Math.min(retry.maxDelayMs, retry.intervalMs * retry.backoffRate ** (attempt - 2));
  const delayMs = retry.jitter ? random() * capMs : capMs;
  const next: AttemptRecord = { task, attempt, redrive: record.redrive };
  return { attempt, delayUs: Math.round(delayMs * 1000), input: { ...rest, [ATTEMPT_FIELD]: next } };
}

/**
 * In a redriven execution, the acquire of a RateLimitedTask records the redrive count its attempts start at, so
 * an error of this run is not mistaken for the one the redrive restarted from (which gets a fresh budget).
 */
export function stampRedrive(input: unknown, scope: RetryScope): unknown {
  if (!scope.task || !scope.redriveCount || input === null || typeof input !== 'object' || Array.isArray(input)) return input;
  const record = input as Record<string, unknown>;
  if ((record[ATTEMPT_FIELD] as Partial<AttemptRecord> | undefined)?.task === scope.task) return input;
  const fresh: AttemptRecord = { task: scope.task, attempt: 1, redrive: scope.redriveCount };
  return { ...record, [ATTEMPT_FIELD]: fresh };
}

/** The record of this RateLimitedTask; another task's record (or none) means a first attempt. */
function ownRecord(previous: unknown, task: string): AttemptRecord {
  const p = previous as Partial<AttemptRecord> | undefined;
  if (p !== null && typeof p === 'object' && p.task === task && typeof p.attempt === 'number' && p.attempt >= 1) {
    return { task, attempt: p.attempt, redrive: typeof p.redrive === 'number' ? p.redrive : 0 };
  }
  return { task, attempt: 1, redrive: 0 };
}
