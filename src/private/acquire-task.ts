import { Duration } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { ThrottleErrors } from '../errors';
import type { AcquireOptions, IRateLimiter } from '../rate-limiter';
import type { RetryPolicy } from '../retry-policy';
import { checkRange } from './validation';

/** Options of the acquire states, beyond `AcquireOptions`. */
export interface AcquireStatesOptions extends AcquireOptions {
  /** Keep the original input through the Wait even with a resultPath (the function puts the result in it). */
  readonly resultInInput?: boolean;
  /** JSONPath (or intrinsic) giving how many items share the acquire: `tokens` are taken per item. */
  readonly countPath?: string;
  /**
   * The RateLimitedTask these states belong to (its backoff state's name): in a redriven execution the acquire
   * records where that task's attempts start.
   */
  readonly owner?: string;
}

/** A retry policy as the function's backoff step reads it. */
export function retryPayload(retry: RetryPolicy): Record<string, unknown> {
  return {
    maxAttempts: retry.maxAttempts,
    intervalMs: retry.interval.toMilliseconds(),
    backoffRate: retry.backoffRate,
    maxDelayMs: retry.maxDelay.toMilliseconds(),
    jitter: retry.jitter,
  };
}

/**
 * The acquire call and its Wait. Without resultPath (or with resultInInput) the function echoes the state
 * input back and the Wait's OutputPath restores it, so the next state sees the input it would have seen.
 */
export function acquireStates(
  scope: Construct,
  id: string,
  limiter: IRateLimiter,
  options: AcquireStatesOptions,
): { acquire: AcquireTask; wait: sfn.Wait } {
  const tokens = options.tokens ?? 1;
  const maxTokens = Math.floor(limiter.burst / limiter.shards);
  checkRange('tokens', tokens, { min: 1, max: maxTokens, integer: true, why: `floor(burst ${limiter.burst} / shards ${limiter.shards})` });
  const key = options.key ?? 'default';
  const keyField = key.startsWith('$') ? { 'key.$': key } : { key };
  const resultPath = options.resultPath === sfn.JsonPath.DISCARD ? undefined : options.resultPath;
  const echo = resultPath === undefined || options.resultInInput === true;
  if (echo && resultPath !== undefined && !/^\$\.([A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*)$/.test(resultPath)) {
    throw new Error(`resultPath must be a simple path like $.acquired, or JsonPath.DISCARD, got ${resultPath}`);
  }
  const payload: Record<string, unknown> = { ...keyField, tokens, mode: options.mode ?? 'RESERVE' };
  if (options.countPath !== undefined) payload['count.$'] = options.countPath;
  if (echo) payload['input.$'] = '$';
  if (echo && resultPath !== undefined) payload.resultField = resultPath.slice(2);
  if (options.owner !== undefined) {
    payload.task = options.owner;
    payload['redriveCount.$'] = '$$.Execution.RedriveCount';
  }
  // No ResultPath means "$": the result (with the echoed input) replaces the state's data.
  const acquire = new AcquireTask(scope, `${id} Acquire`, limiter.function, payload, { resultPath: echo ? undefined : resultPath });
  const wait = sfn.Wait.jsonPath(scope, `${id} Wait`, {
    time: sfn.WaitTime.secondsPath(echo ? '$.waitSeconds' : `${resultPath}.waitSeconds`),
    outputPath: echo ? '$.input' : undefined,
  });
  acquire.next(wait);
  return { acquire, wait };
}

/**
 * Invokes the acquire function directly (`Resource` = the function ARN), so the state machine role may invoke
 * exactly that ARN — `LambdaInvoke` would also grant `<arn>:*`.
 */
export class AcquireTask extends sfn.TaskStateBase {
  protected readonly taskMetrics?: sfn.TaskMetricsConfig;
  protected readonly taskPolicies?: iam.PolicyStatement[];

  constructor(
    scope: Construct,
    id: string,
    private readonly fn: lambda.IFunction,
    private readonly payload: Record<string, unknown>,
    props: sfn.TaskStateBaseProps,
  ) {
    super(scope, id, props);
    this.taskPolicies = [new iam.PolicyStatement({ actions: ['lambda:InvokeFunction'], resources: [fn.functionArn] })];
    this.taskMetrics = {
      metricPrefixSingular: 'LambdaFunction',
      metricPrefixPlural: 'LambdaFunctions',
      metricDimensions: { LambdaFunctionArn: fn.functionArn },
    };
    // Transient Lambda errors and an unreachable table admit nothing: retry them with backoff and jitter.
    this.addRetry({
      errors: ['Lambda.ClientExecutionTimeoutException', 'Lambda.ServiceException', 'Lambda.AWSLambdaException', 'Lambda.SdkClientException', 'Lambda.TooManyRequestsException'],
      interval: Duration.seconds(1),
      maxAttempts: 6,
      backoffRate: 2,
      jitterStrategy: sfn.JitterType.FULL,
    });
    this.addRetry({
      errors: [ThrottleErrors.LIMITER_UNAVAILABLE],
      interval: Duration.seconds(1),
      maxAttempts: 5,
      backoffRate: 2,
      maxDelay: Duration.seconds(30),
      jitterStrategy: sfn.JitterType.FULL,
    });
  }

  /** @internal */
  protected _renderTask(): any {
    return { Resource: this.fn.functionArn, Parameters: sfn.FieldUtils.renderObject(this.payload) };
  }
}
