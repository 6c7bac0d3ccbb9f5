import { Duration, Token } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { IConstruct } from 'constructs';
import { API_GATEWAY, HTTP, LAMBDA, throttlingErrorsOf } from './private/task-kind';
import { checkRange, fail } from './private/validation';

/**
 * Options of `RetryPolicy.throttling()`.
 */
export interface ThrottlingRetryOptions {
  /**
   * Error names that are retried: exact names (Step Functions' `ErrorEquals` has no patterns; `States.ALL` and
   * `States.TaskFailed` are its only wildcards).
   *
   * @default - the throttling and transient errors of the task the policy is applied to:
   * `RetryPolicy.lambdaThrottlingErrors()` for Lambda invokes, `RetryPolicy.httpThrottlingErrors()` for HttpInvoke,
   * `RetryPolicy.apiGatewayThrottlingErrors()` for API Gateway calls,
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
   * `States.Timeout` is not among them: a timed-out call may have happened. A new array on each call.
   */
  public static lambdaThrottlingErrors(): string[] {
    return [...LAMBDA];
  }

  /** Errors of an HttpInvoke task whose endpoint throttles (429) or is overloaded (503). A new array on each call. */
  public static httpThrottlingErrors(): string[] {
    return [...HTTP];
  }

  /**
   * Errors of an API Gateway call (`CallApiGatewayRestApiEndpoint`, `ThrottledApiProxy.callTask`) throttled (429) or
   * overloaded (503): `ApiGateway.429`, `ApiGateway.503`. A new array on each call.
   */
  public static apiGatewayThrottlingErrors(): string[] {
    return [...API_GATEWAY];
  }

  /**
   * The throttling errors `RetryPolicy.throttling()` retries on `state` when no `errors` are given: see
   * `ThrottlingRetryOptions.errors`. Throws for a task kind that has no known throttling errors.
   */
  public static throttlingErrorsFor(state: sfn.State): string[] {
    return throttlingErrorsOf(state);
  }

  /**
   * Exponential backoff with full jitter on throttling errors. Checked where it is used (the message names that
   * construct).
   */
  public static throttling(options: ThrottlingRetryOptions = {}): RetryPolicy {
    return new RetryPolicy(
      // A copy, frozen: neither the caller's array nor a later push changes a policy in use.
      options.errors && (Object.freeze([...options.errors]) as string[]),
      options.maxAttempts ?? 6,
      options.interval ?? Duration.seconds(1),
      options.backoffRate ?? 2,
      options.maxDelay ?? Duration.seconds(60),
      options.jitter ?? true,
      'RetryPolicy.throttling',
    );
  }

  /**
   * No retries: the first error is final.
   */
  public static none(): RetryPolicy {
    return new RetryPolicy(Object.freeze([]) as unknown as string[], 1, Duration.seconds(1), 1, Duration.seconds(1), false, 'RetryPolicy.none');
  }

  /**
   * Any errors, any numbers (checked as for `throttling`); `errors` is required.
   */
  public static custom(options: ThrottlingRetryOptions): RetryPolicy {
    const p = RetryPolicy.throttling(options);
    return new RetryPolicy(options.errors ? p.errors : undefined, p.maxAttempts, p.interval, p.backoffRate, p.maxDelay, p.jitter, 'RetryPolicy.custom');
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
    private readonly factory: string,
  ) {}

  /** Whether this policy retries anything. */
  public get retries(): boolean {
    return (this.errors === undefined || this.errors.length > 0) && this.maxAttempts > 1;
  }

  /**
   * The error names this policy retries on `state`: `errors` when given, else the throttling errors of the
   * task kind; for a Parallel or Map, those of every task reachable in `states`. A new array on each call.
   */
  public errorsFor(state: sfn.State, states?: sfn.State[]): string[] {
    this._check(state);
    if (this.errors !== undefined) return [...this.errors];
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
    this._check(state);
    if (!this.retries) return;
    const errors = this.errorsFor(state, states);
    if (errors.length === 0) {
      fail(state, `RetryPolicy.throttling() has no errors to retry on ${state.stateId}: it holds no task, give errors`);
    }
    const target = state as unknown as { addRetry?: (props: sfn.RetryProps) => unknown };
    if (typeof target.addRetry !== 'function') {
      fail(state, `state ${state.stateId} cannot retry: only Task, Parallel and Map states have a Retry field`);
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

  /**
   * Checks the policy where it is used: errors name the construct `scope`.
   *
   * @internal
   */
  public _check(scope: IConstruct): void {
    const where = `retry (${this.factory})`;
    if (this.factory === 'RetryPolicy.custom' && (this.errors === undefined || this.errors.length === 0)) {
      fail(scope, `${where}: errors must name at least one error for RetryPolicy.custom, got none`);
    }
    if (this.factory === 'RetryPolicy.throttling' && this.errors !== undefined && this.errors.length === 0) {
      fail(scope, `${where}: errors must name at least one error, got an empty list (use RetryPolicy.none() for no retries)`);
    }
    for (const e of this.errors ?? []) {
      if (e.includes('*')) fail(scope, `${where}: errors must be exact error names (ErrorEquals has no patterns), got ${e}`);
    }
    checkRange(scope, `${where} maxAttempts`, this.maxAttempts, { min: 1, max: 100, integer: true });
    checkRange(scope, `${where} interval (s)`, this.interval.toSeconds(), { min: 1, max: 3600, integer: true });
    checkRange(scope, `${where} backoffRate`, this.backoffRate, { min: 1, max: 10 });
    if (!Token.isUnresolved(this.maxDelay.toSeconds())) {
      checkRange(scope, `${where} maxDelay (s)`, this.maxDelay.toSeconds(), { min: this.interval.toSeconds(), max: 3600, integer: true, why: 'at least interval' });
    }
  }
}
