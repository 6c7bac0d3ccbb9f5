import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct, IConstruct } from 'constructs';
import { AcquireStateOptions } from './acquire';
import { Limit } from './limit';

// A leaf module: what consumers of a limiter see. The constructs and their private helpers import the interface
// from here, so none of them imports rate-limiter.ts back (no import cycle).

/**
 * A shared rate limit that workflows acquire tokens from.
 */
/** Options of `RateLimiter.setLimitTask()`. */
export interface SetLimitOptions {
  /** The limit in force for the key instead of the deployed one (its dimension must be the limiter's). */
  readonly limit: Limit;
  /**
   * The key: a literal, or a simple JSONPath (`$.tenant`).
   *
   * @default 'default'
   */
  readonly key?: string;
  /**
   * Until when the override applies (ISO 8601, a literal or a JSONPath): then the deployed limit again, without a
   * second write.
   *
   * @default - until cleared
   */
  readonly until?: string;
  /**
   * The query language of the state machine, needed only when the state is nested in a Parallel or Map of yours in a
   * JSONata machine.
   *
   * @default - the state machine's, decided when it is rendered
   */
  readonly queryLanguage?: sfn.QueryLanguage;
}

/** Options of `RateLimiter.clearLimitTask()`. */
export interface ClearLimitOptions {
  /**
   * The key: a literal, or a simple JSONPath.
   *
   * @default 'default'
   */
  readonly key?: string;
  /**
   * The query language of the state machine, when nested in a JSONata container of yours.
   *
   * @default - the state machine's, decided when it is rendered
   */
  readonly queryLanguage?: sfn.QueryLanguage;
}

export interface IRateLimiter extends IConstruct {
  /** Name of this limiter: the prefix of its items and the `LimiterName` metric dimension. */
  readonly limiterName: string;
  /** The limits every key is held to or, with `keyLimits`, all keys together. */
  readonly limits: Limit[];
  /** Each key's own limits under the shared `limits` (tenants within a quota), when it has them. */
  readonly keyLimits?: Limit[];
  /** Sustained rate of the limit, tokens per second. */
  readonly ratePerSecond: number;
  /** Tokens that may be taken at once after idleness. */
  readonly burst: number;
  /** DynamoDB items the limit is spread over. */
  readonly shards: number;
  /** Longest reservation handed out in RESERVE mode. */
  readonly maxWait: Duration;
  /** The table holding bucket state. */
  readonly table: dynamodb.ITable;
  /** The acquire function: state machines invoke it to take tokens. */
  readonly acquireFunction: lambda.IFunction;

  /** Grants permission to invoke the acquire function. */
  grantAcquire(grantee: iam.IGrantable): iam.Grant;

  /**
   * Grants what a function needs to take tokens itself, with the limiter's code bundled in (as the queue
   * dispatcher does): read and conditionally update this limiter's own items in its table, and nothing else.
   */
  grantTakeTokens(grantee: iam.IGrantable): iam.Grant;

  /** States that acquire tokens before the next state runs. */
  acquire(scope: Construct, id: string, options?: AcquireStateOptions): sfn.StateMachineFragment;

  /** A state that sets a key's limit at run time (its override item): one DynamoDB PutItem, granted that item. */
  setLimitTask(scope: Construct, id: string, options: SetLimitOptions): sfn.TaskStateBase;

  /** A state that clears a key's override (the deployed limit again): one DynamoDB DeleteItem, granted that item. */
  clearLimitTask(scope: Construct, id: string, options?: ClearLimitOptions): sfn.TaskStateBase;

  /** A metric of this limiter, published by the acquire function in the `CdkSfnThrottle` namespace. */
  metric(metricName: string, props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Tokens admitted. */
  metricAdmitted(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Tokens admitted with a wait (RESERVE). */
  metricDelayed(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Tokens refused (TRY with an empty bucket, or RESERVE beyond `maxWait`). */
  metricRejected(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Wait handed out with admissions, milliseconds. */
  metricWaitTime(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** DynamoDB calls made by acquire calls. */
  metricDynamoDbCalls(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Acquire calls that failed closed (DynamoDB unreachable or throttling, or an item it cannot read). */
  metricUnavailable(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** The rate in force (an override's or the deployed one), for one key or the highest over all keys. */
  metricLimitInForce(key?: string, props?: cloudwatch.MetricOptions): cloudwatch.Metric;
}
