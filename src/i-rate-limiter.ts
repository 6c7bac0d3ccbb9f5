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
 * An adaptive limit (AIMD) that follows the downstream's capacity: a throttling error seen by a RateLimitedTask (the
 * errors its RetryPolicy retries), or an alarm, lowers the rate in force multiplicatively; while no signal comes it
 * rises additively, never above the limiter's rate (or a key's override) nor below `minRatePerSecond`. The rate in
 * force is kept on the bucket item, so every container and every execution takes at the same rate, and the limiter's
 * bound holds against it.
 */
export interface AdaptiveOptions {
  /**
   * The lowest rate a decrease may set, tokens per second (all shards together).
   *
   * Valid range: 0.001 to the limiter's rate.
   */
  readonly minRatePerSecond: number;
  /**
   * What a throttling signal multiplies the rate in force by. Signals within a second of the last decrease are the
   * same congestion (a burst of throttling errors is one signal).
   *
   * Valid range: 0.1 to 0.95.
   *
   * @default 0.7
   */
  readonly decreaseFactor?: number;
  /**
   * How much the rate rises per second without a signal (in steps of at most one a second), tokens per second.
   *
   * Valid range: 0.001 to the limiter's rate.
   *
   * @default - a twentieth of the limiter's rate: from the floor back to the ceiling in at most 20 s
   */
  readonly increasePerSecond?: number;
  /**
   * The furthest ahead a caller may reserve: reservations handed out before a decrease stand, so a long one would
   * keep the old rate going for its length. A caller whose slot would come later is refused (`RateLimitExceeded`)
   * and its acquire state retries about a second later.
   *
   * Valid range: 0 to the limiter's `maxWait`.
   *
   * @default Duration.seconds(2)
   */
  readonly maxReservation?: Duration;
  /**
   * An alarm that lowers the rate too (each transition into ALARM is one signal, for the `default` key): the
   * downstream's own error or latency alarm. The acquire function is its EventBridge rule's target.
   *
   * @default - only RateLimitedTasks' throttling errors lower the rate
   */
  readonly alarm?: cloudwatch.IAlarm;
}

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

/**
 * A shared rate limit that workflows acquire tokens from: a `RateLimiter`, or one imported with
 * `RateLimiter.fromRateLimiterAttributes`.
 */
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
  /** The limiter's adaptive options, when its rate follows the downstream's capacity. */
  readonly adaptive?: AdaptiveOptions;
  /** Share of the burst each priority class below HIGH leaves free for the classes above it. */
  readonly priorityReserve: number;
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
  /** Adaptive limiters: throttling signals reported (RateLimitedTasks' retried errors, alarm transitions). */
  metricThrottleSignals(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Adaptive limiters: signals that lowered the rate (the others came within a second of a decrease). */
  metricRateDecreases(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
}
