import { Duration, Token } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { throttlingErrorsOf } from './private/task-kind';
import { checkRange } from './private/validation';

/**
 * Options of `RetryPolicy.throttling()`.
 */
export interface ThrottlingRetryOptions {
  /**
   * Error names that are retried: exact names (Step Functions' `ErrorEquals` has no patterns; `States.ALL` and
   * `States.TaskFailed` are its only wildcards).
   *
   * @default - the throttling and transient errors of the task the policy is applied to:
   * `RetryPolicy.LAMBDA_THROTTLING_ERRORS` for Lambda invokes, `RetryPolicy.HTTP_THROTTLING_ERRORS` for HttpInvoke,
   * and `<Service>.ThrottlingException`, `<Service>.TooManyRequestsException`,
   * `<Service>.ServiceUnavailableException` (plus the service's own, e.g.
   * `DynamoDb.ProvisionedThroughputExceededException`) for CallAwsService. Other task kinds need `errors`.
   */
  readonly errors?: string[];

  /**
   * Attempts in all, the first included. Valid range: 1 to 100.
   *
   * @default 6
   */
  readonly maxAttempts?: number;

  /**
   * Delay before the first retry (the cap of its jitter). Valid range: 1 second to 1 hour.
   *
   * @default Duration.seconds(1)
   */
  readonly interval?: Duration;

  /**
   * Multiplier of the delay per retry. Valid range: 1 to 10.
   *
   * @default 2
   */
  readonly backoffRate?: number;

  /**
   * Largest delay between two attempts. Valid range: `interval` to 1 hour.
   *
   * @default Duration.seconds(60)
   */
  readonly maxDelay?: Duration;

  /**
   * Full jitter: each delay is drawn uniformly between 0 and its exponential value.
   *
   * @see https://aws.amazon.com/builders-library/timeouts-retries-and-backoff-with-jitter/
   * @default true
   */
  readonly jitter?: boolean;
}

/**
 * Which errors are retried, how often and how long apart.
 *
 * Used by `RateLimitedTask` (where every retry acquires a token again) and on any CDK state with `applyTo()`.
 */
export class RetryPolicy {
  /**
   * Errors a throttled Lambda invoke raises through Step Functions: throttling and transient service errors.
   * `States.Timeout` is not among them: a timed-out call may have happened.
   */
  public static readonly LAMBDA_THROTTLING_ERRORS: string[] = Object.freeze([
    'Lambda.TooManyRequestsException',
    'Lambda.ServiceException',
    'Lambda.AWSLambdaException',
    'Lambda.SdkClientException',
    'Lambda.ClientExecutionTimeoutException',
  ]) as string[];

  /** Errors of an HttpInvoke task whose endpoint throttles (429) or is overloaded (503). */
  public static readonly HTTP_THROTTLING_ERRORS: string[] = Object.freeze([
    'States.Http.StatusCode.429',
    'States.Http.StatusCode.503',
  ]) as string[];

  /**
   * The Lambda errors (kept for compatibility).
   *
   * @deprecated use `LAMBDA_THROTTLING_ERRORS`, or leave `errors` unset to get the errors of the task kind
   */
  public static readonly DEFAULT_THROTTLING_ERRORS: string[] = RetryPolicy.LAMBDA_THROTTLING_ERRORS;

  /**
   * The throttling errors `RetryPolicy.throttling()` retries on `state` when no `errors` are given: see
   * `ThrottlingRetryOptions.errors`. Throws for a task kind that has no known throttling errors.
   */
  public static throttlingErrorsFor(state: sfn.State): string[] {
    return throttlingErrorsOf(state);
  }

  /**
   * Exponential backoff with full jitter on throttling errors.
   */
  public static throttling(options: ThrottlingRetryOptions = {}): RetryPolicy {
    if (options.errors !== undefined) {
      if (options.errors.length === 0) throw new Error('errors must name at least one error, got an empty list (use RetryPolicy.none() for no retries)');
      for (const e of options.errors) {
        if (e.includes('*')) throw new Error(`errors must be exact error names (ErrorEquals has no patterns), got ${e}`);
      }
    }
    return new RetryPolicy(
      // A copy, frozen: neither the caller's array nor a later push changes a policy in use.
      options.errors && (Object.freeze([...options.errors]) as string[]),
      options.maxAttempts ?? 6,
      options.interval ?? Duration.seconds(1),
      options.backoffRate ?? 2,
      options.maxDelay ?? Duration.seconds(60),
      options.jitter ?? true,
    );
  }

  /**
   * No retries: the first error is final.
   */
  public static none(): RetryPolicy {
    return new RetryPolicy([], 1, Duration.seconds(1), 1, Duration.seconds(1), false);
  }

  /**
   * Any errors, any numbers (validated as for `throttling`); `errors` is required.
   */
  public static custom(options: ThrottlingRetryOptions): RetryPolicy {
    if (!options.errors || options.errors.length === 0) {
      throw new Error('errors must name at least one error for RetryPolicy.custom, got none');
    }
    return RetryPolicy.throttling(options);
  }

  private constructor(
    /** Error names retried; undefined: the throttling errors of the task it is applied to (`errorsFor`). */
    public readonly errors: string[] | undefined,
    /** Attempts in all, the first included. */
    public readonly maxAttempts: number,
    /** Delay cap before the first retry. */
    public readonly interval: Duration,
    /** Multiplier of the delay per retry. */
    public readonly backoffRate: number,
    /** Largest delay. */
    public readonly maxDelay: Duration,
    /** Whether delays are drawn with full jitter. */
    public readonly jitter: boolean,
  ) {
    checkRange('maxAttempts', maxAttempts, { min: 1, max: 100, integer: true });
    checkRange('interval (s)', interval.toSeconds(), { min: 1, max: 3600, integer: true });
    checkRange('backoffRate', backoffRate, { min: 1, max: 10 });
    if (!Token.isUnresolved(maxDelay.toSeconds())) {
      checkRange('maxDelay (s)', maxDelay.toSeconds(), { min: interval.toSeconds(), max: 3600, integer: true, why: 'at least interval' });
    }
  }

  /** Whether this policy retries anything. */
  public get retries(): boolean {
    return (this.errors === undefined || this.errors.length > 0) && this.maxAttempts > 1;
  }

  /**
   * The error names this policy retries on `state`: `errors` when given, else the throttling errors of the
   * task kind; for a Parallel or Map, those of every task reachable in `states`.
   */
  public errorsFor(state: sfn.State, states?: sfn.State[]): string[] {
    if (this.errors !== undefined) return this.errors;
    if (!this.retries) return [];
    const kinds = states ?? [state];
    return [...new Set(kinds.flatMap((s) => (s instanceof sfn.TaskStateBase ? throttlingErrorsOf(s) : [])))];
  }

  /**
   * Adds this policy as a `Retry` on a Task, Parallel or Map state.
   */
  public applyTo(state: sfn.State): void {
    this.applyToStates(state);
  }

  /**
   * Adds this policy as a `Retry` on a Parallel or Map state whose branch holds `states`: without `errors`, the
   * throttling errors of those tasks are retried.
   */
  public applyToStates(state: sfn.State, states?: sfn.State[]): void {
    if (!this.retries) return;
    const errors = this.errorsFor(state, states);
    if (errors.length === 0) {
      throw new Error(`RetryPolicy.throttling() has no errors to retry on ${state.stateId}: it holds no task, give errors`);
    }
    const target = state as unknown as { addRetry?: (props: sfn.RetryProps) => unknown };
    if (typeof target.addRetry !== 'function') {
      throw new Error(`state ${state.stateId} cannot retry: only Task, Parallel and Map states have a Retry field`);
    }
    target.addRetry({
      errors,
      maxAttempts: this.maxAttempts - 1,
      interval: this.interval,
      backoffRate: this.backoffRate,
      maxDelay: this.maxDelay,
      jitterStrategy: this.jitter ? sfn.JitterType.FULL : sfn.JitterType.NONE,
    });
  }
}
