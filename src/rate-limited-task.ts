import { Duration } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { ThrottleErrors } from './errors';
import { AcquireTask, acquireStates, retryPayload } from './private/acquire-task';
import { ERROR_FIELD } from './private/retry-fields';
import { AcquireMode, IRateLimiter } from './rate-limiter';
import { RetryPolicy } from './retry-policy';

/**
 * Properties of a `RateLimitedTask`.
 */
export interface RateLimitedTaskProps {
  /** The limiter every call of the task takes a token from. */
  readonly limiter: IRateLimiter;

  /**
   * The protected task (LambdaInvoke, CallAwsService, HttpInvoke, SqsSendMessage, …). Do not give it a Retry
   * on the errors `retry` handles: those retries would skip the limiter.
   */
  readonly task: sfn.TaskStateBase;

  /**
   * The bucket: a literal, or a JSONPath into the state input (e.g. `$.tenantId`).
   *
   * @default 'default'
   */
  readonly key?: string;

  /**
   * Tokens per call. Valid range: 1 to floor(burst / shards).
   *
   * @default 1
   */
  readonly tokens?: number;

  /**
   * RESERVE waits for its slot (one acquire call, at most one Wait state); TRY takes a free token or retries
   * `RateLimitExceeded` with backoff and full jitter.
   *
   * @default AcquireMode.RESERVE
   */
  readonly mode?: AcquireMode;

  /**
   * Which task errors are retried, how often and how long apart. Every retry acquires a token again: the error
   * goes to a backoff step (the function draws the delay, exponential with full jitter), a Wait, then acquire,
   * so the backoff comes first and the token is taken for the moment the call really happens.
   *
   * @default RetryPolicy.throttling()
   */
  readonly retry?: RetryPolicy;

  /**
   * Where the acquire result (`waitSeconds`, `waitMs`, `notBefore`, `shard`) is put in the task's input.
   *
   * @default - discarded: the task sees its original input
   */
  readonly resultPath?: string;
}

/**
 * Runs a task under a `RateLimiter`: acquire → Wait (whole seconds, only what is left) → task. Every call of the
 * task, retries included, holds a token; a retryable error goes through backoff → Wait → acquire.
 *
 * On a retry the task's input carries one extra field, `cdkSfnThrottleAttempt` (the attempt number).
 */
export class RateLimitedTask extends sfn.StateMachineFragment {
  public readonly startState: sfn.State;
  public readonly endStates: sfn.INextable[];
  /** The acquire state (catches added with `addCatch` apply to it too). */
  public readonly acquireState: sfn.TaskStateBase;
  /** The protected task. */
  public readonly task: sfn.TaskStateBase;
  /** The retry policy in force. */
  public readonly retry: RetryPolicy;
  /** The limiter every call takes from. */
  public readonly limiter: IRateLimiter;
  /** Tokens per call. */
  public readonly tokens: number;
  private readonly catchers: sfn.TaskStateBase[];

  constructor(scope: Construct, id: string, props: RateLimitedTaskProps) {
    super(scope, id);
    this.retry = props.retry ?? RetryPolicy.throttling();
    this.limiter = props.limiter;
    this.tokens = props.tokens ?? 1;
    const { acquire, wait } = acquireStates(this, id, props.limiter, {
      key: props.key,
      tokens: props.tokens,
      mode: props.mode,
      resultPath: props.resultPath,
      resultInInput: true,
    });
    if (props.mode === AcquireMode.TRY) {
      // Step Functions cannot wait the retryAfterMs the error carries: retry on the emission interval instead,
      // with full jitter so refused callers spread out.
      const intervalS = Math.max(1, Math.ceil(props.limiter.shards / props.limiter.ratePerSecond));
      acquire.addRetry({
        errors: [ThrottleErrors.RATE_LIMIT_EXCEEDED],
        interval: Duration.seconds(intervalS),
        maxAttempts: 1000,
        backoffRate: 1.5,
        maxDelay: Duration.seconds(Math.max(intervalS, 30)),
        jitterStrategy: sfn.JitterType.FULL,
      });
    }
    wait.next(props.task);
    const catchers: sfn.TaskStateBase[] = [acquire, props.task];
    if (this.retry.retries) {
      // Error path only: count the attempt and sit out the backoff (drawn with full jitter by the function),
      // then acquire a token for the call that follows.
      const backoff = new AcquireTask(this, `${id} Backoff`, props.limiter.function, {
        'phase': 'backoff',
        'input.$': '$',
        'retry': retryPayload(this.retry),
      }, {});
      const backoffWait = sfn.Wait.jsonPath(this, `${id} Backoff Wait`, {
        time: sfn.WaitTime.secondsPath('$.waitSeconds'),
        outputPath: '$.input',
      });
      props.task.addCatch(backoff, { errors: this.retry.errors, resultPath: `$.${ERROR_FIELD}` });
      backoff.next(backoffWait).next(acquire);
      catchers.push(backoff);
    }
    this.catchers = catchers;
    this.acquireState = acquire;
    this.task = props.task;
    this.startState = acquire;
    this.endStates = [props.task];
  }

  /**
   * Routes errors of the acquire call and of the task (non-retryable ones, and retryable ones once `retry` is
   * exhausted) to `handler`.
   */
  public addCatch(handler: sfn.IChainable, props: sfn.CatchProps = {}): RateLimitedTask {
    for (const state of this.catchers) state.addCatch(handler, props);
    return this;
  }
}
