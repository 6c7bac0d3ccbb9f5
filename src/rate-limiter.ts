import { Annotations, Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventsTargets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as schedulerTargets from 'aws-cdk-lib/aws-scheduler-targets';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct, IConstruct } from 'constructs';
import { AcquireStateOptions } from './acquire';
import { AdaptiveOptions, ClearLimitOptions, IRateLimiter, SetLimitOptions } from './i-rate-limiter';
import { Limit } from './limit';
import { AcquireFunction } from './private/acquire-function';
import { acquireStates } from './private/acquire-task';
import { AcquireField, DECREASE_PHASE, DEFAULT_KEY, DEFAULT_PRIORITY_RESERVE, LimiterMetricNames, OverrideAttr } from './private/contract';
import { DEFAULT_MAX_RESERVATION_S, grantBucketAccess, handlerRole, limiterEnvironment } from './private/handler-function';
import { checkedLimiterName, limiterMetric, limiterTable } from './private/limiter-parts';
import { OverrideWrite } from './private/override-states';
import { languageValidation } from './private/query-language';
import { checkRange, fail } from './private/validation';

/**
 * A limiter defined elsewhere (another stack or app): what `RateLimiter.fromRateLimiterAttributes` needs to let
 * more state machines take from the same limit.
 */
export interface RateLimiterAttributes {
  /** The limiter's name (`RateLimiter.limiterName`): its items' prefix and its metrics' `LimiterName`. */
  readonly limiterName: string;
  /** ARN of the limiter's acquire function (`RateLimiter.acquireFunction.functionArn`). */
  readonly acquireFunctionArn: string;
  /** ARN of the limiter's table (`RateLimiter.table.tableArn`). */
  readonly tableArn: string;
  /**
   * The limiter's rate (used at synth for checks and the throttle plan; the deployed function enforces its own).
   * Give this (with `burst`) or `limits`, as on the limiter.
   *
   * @default - from `limits`
   */
  readonly ratePerSecond?: number;
  /**
   * The limiter's burst: must match the deployed limiter (an acquire's `consume` is checked against it at synth).
   *
   * @default - max(1, ceil(ratePerSecond)), as RateLimiter's default
   */
  readonly burst?: number;
  /**
   * The limiter's limits, when it was given `limits`.
   *
   * @default - from `ratePerSecond` and `burst`
   */
  readonly limits?: Limit[];
  /**
   * The limiter's per-key limits, when it was given `keyLimits`.
   *
   * @default - none: each key is held to `limits` alone
   */
  readonly keyLimits?: Limit[];
  /**
   * The limiter's shards: must match the deployed limiter.
   *
   * @default - RateLimiter's default for this rate: ceil(ratePerSecond / 500), at most `burst`
   */
  readonly shards?: number;
  /**
   * The limiter's maxWait.
   *
   * @default Duration.minutes(5)
   */
  readonly maxWait?: Duration;
  /**
   * The limiter's adaptive options, when it has them: RateLimitedTasks then report throttling errors to it.
   *
   * @default - a fixed limit
   */
  readonly adaptive?: AdaptiveOptions;
  /**
   * The limiter's priorityReserve.
   *
   * @default 0.2
   */
  readonly priorityReserve?: number;
}

/**
 * Properties of a `RateLimiter`.
 */
export interface RateLimiterProps {
  /**
   * Sustained rate, in tokens per second, shared by every caller of one key across all executions: the short form
   * of `limits: [Limit.perSecond(ratePerSecond, { burst })]`. Give this or `limits`, not both.
   *
   * Valid range: 0.001 (one token per 1,000 s) to 1,000,000.
   *
   * @default - from `limits`
   */
  readonly ratePerSecond?: number;

  /**
   * Tokens that may be taken at once after idleness (the bucket size).
   *
   * In any window of length w the limiter admits at most `burst + ratePerSecond × w` tokens.
   * Valid range: an integer from `shards` to 1,000,000. Only with `ratePerSecond` (a `Limit` has its own).
   *
   * @default - max(1, ceil(ratePerSecond))
   */
  readonly burst?: number;

  /**
   * The limits, as `Limit`s: `[Limit.perSecond(100, { burst: 20 })]`, or one per dimension
   * (`[Limit.perMinute(500), Limit.perMinute(400_000, { dimension: 'tokens', burst: 100_000 })]`). Give this or
   * `ratePerSecond`, not both. Without `keyLimits` they hold each key; with `keyLimits`, all keys together.
   *
   * @default - from `ratePerSecond` and `burst`
   */
  readonly limits?: Limit[];

  /**
   * Each key's own limits under the shared `limits` (tenants within an account quota): an acquire with
   * `key: '$.tenantId'` is admitted only when it fits both its key's limits and the shared ones, in one conditional
   * write (the shared buckets and every active key's are one item). A key over its own limit is refused with
   * `RateLimitExceeded` and retried (it never holds the shared limit ahead of other keys); while the shared limit
   * binds, each key is held to its fair share (the shared rate ÷ the keys active now), so a key asking less gets
   * what it asks and the busy ones share the rest. A key's override item (`ratePerSecond`, `burst`) replaces its
   * limit. One Limit, of the dimension of the one shared Limit; `shards` must be 1; not with `settle`.
   *
   * @default - none: each key is held to `limits` alone, independently of the others
   */
  readonly keyLimits?: Limit[];

  /**
   * DynamoDB items one key's limit is spread over (each gets rate / shards and floor(burst / shards)).
   *
   * One DynamoDB item takes about 1,000 writes/s; shards spread a hot key. A caller picks a random shard and
   * tries one other on denial.
   * Valid range: an integer from 1 to 1,000, and at most `burst`.
   *
   * @see https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html
   * @default - enough shards that no item sees more than 500 writes/s: ceil(ratePerSecond / 500), at most `burst` and 1,000
   */
  readonly shards?: number;

  /**
   * Longest reservation handed out in RESERVE mode. A caller that would have to wait longer gets
   * `RateLimitExceeded` instead.
   *
   * Valid range: 0 seconds to 24 hours.
   *
   * @default Duration.minutes(5)
   */
  readonly maxWait?: Duration;

  /**
   * A limit that follows the downstream's capacity (AIMD): RateLimitedTasks' throttling errors (and `alarm`) lower
   * the rate in force, which then rises again while no signal comes, between `minRatePerSecond` and the limit (or a
   * key's override). A limiter of one limit (`ratePerSecond`, or one Limit without `keyLimits`).
   *
   * @default - a fixed limit
   */
  readonly adaptive?: AdaptiveOptions;

  /**
   * Share of the burst each priority class below HIGH leaves free for the classes above it: a NORMAL acquire admits
   * only while `priorityReserve` of the burst stays free, a LOW one only while twice that does (`AcquireOptions.priority`).
   *
   * Valid range: 0 to 0.45.
   *
   * @default 0.2
   */
  readonly priorityReserve?: number;

  /**
   * A table to keep bucket state in, instead of a new one. It must have a string partition key named `pk`;
   * enable TTL on the `exp` attribute so idle buckets expire.
   *
   * @default - a new on-demand table with TTL on `exp`, point-in-time recovery, encrypted with the AWS managed key,
   * retained on removal (`removalPolicy`)
   */
  readonly table?: dynamodb.ITable;

  /**
   * Removal policy of the table this construct creates. The table holds bucket state (seconds of history) and
   * the limits operators set at run time (per-key overrides), which no deployment can recreate: like aws-cdk-lib's
   * own tables it is kept when the limiter leaves the stack. `RemovalPolicy.DESTROY` suits test stacks. Not with
   * `table` (a synth error: that table's policy is its owner's).
   *
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;

  /**
   * Name of this limiter: prefixes its items (so limiters can share a table) and is the `LimiterName`
   * dimension of its metrics. Changing it resets every bucket and orphans overrides.
   *
   * Valid characters: letters, digits, `.`, `_` and `-`; 1 to 64 characters.
   *
   * @default - a name unique in the app, derived from the construct path
   */
  readonly limiterName?: string;

  /**
   * Reserved concurrency of the acquire function. Opt-in only: reserving concurrency fails deployments in
   * accounts whose unreserved concurrency would drop below 100.
   *
   * @default - no reserved concurrency
   */
  readonly reservedConcurrency?: number;

  /**
   * Memory of the acquire function, MB.
   *
   * Valid range: 128 to 10,240.
   *
   * @default 128
   */
  readonly memorySize?: number;

  /**
   * Architecture of the acquire function.
   *
   * @default lambda.Architecture.ARM_64
   */
  readonly architecture?: lambda.Architecture;

  /**
   * Retention of the acquire function's log group (ignored when `logGroup` is given).
   *
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;

  /**
   * Log group of the acquire function.
   *
   * @default - a new log group with `logRetention`
   */
  readonly logGroup?: logs.ILogGroup;

  /**
   * X-Ray tracing of the acquire function.
   *
   * @default lambda.Tracing.ACTIVE
   */
  readonly tracing?: lambda.Tracing;
}

/** Options of `RateLimiter.addSchedule()`. */
export interface LimitScheduleOptions {
  /** When (`ScheduleExpression.cron({ hour: '9', minute: '0', timeZone })`, `.rate()`, `.at()`). */
  readonly schedule: scheduler.ScheduleExpression;
  /**
   * The limit the key gets at those times.
   *
   * @default - none: the schedule clears the key's override (the deployed limit again)
   */
  readonly limit?: Limit;
  /**
   * The key (a literal).
   *
   * @default 'default'
   */
  readonly key?: string;
  /**
   * The schedule's description.
   *
   * @default - what it sets, for which key
   */
  readonly description?: string;
}

/**
 * What every limiter, created here or imported, does: grants, the acquire states and metrics.
 */
export abstract class RateLimiterBase extends Construct implements IRateLimiter {
  public abstract readonly limiterName: string;
  public abstract readonly limits: Limit[];
  public abstract readonly keyLimits?: Limit[];
  public abstract readonly ratePerSecond: number;
  public abstract readonly burst: number;
  public abstract readonly shards: number;
  public abstract readonly maxWait: Duration;
  public abstract readonly table: dynamodb.ITable;
  public abstract readonly acquireFunction: lambda.IFunction;
  public abstract readonly adaptive?: AdaptiveOptions;
  public abstract readonly priorityReserve: number;

  /**
   * Grants permission to invoke the acquire function (its exact ARN, no version wildcard).
   */
  public grantAcquire(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['lambda:InvokeFunction'],
      resourceArns: [this.acquireFunction.functionArn],
    });
  }

  /**
   * A state that sets the limit of a key at run time (the override item the limiter reads, at most 10 s later in
   * every container): one DynamoDB PutItem through the service integration (no Lambda), granted exactly that item
   * (or, with a key read at run time, this limiter's override items). Reservations already handed out keep their
   * slots; new admissions follow the new limit. With `keyLimits`, the override replaces the key's own limit (see
   * README "Changing limits at run time").
   */
  public setLimitTask(scope: Construct, id: string, options: SetLimitOptions): sfn.TaskStateBase {
    const limit = options.limit;
    limit._check(scope, 'limit.');
    if (this.limits.length > 1 && !this.keyLimits) {
      fail(scope, `setLimitTask: limiter ${this.limiterName} has several limits (${this.limits.map((l) => l.dimension).join(', ')}), whose keys read no override yet`);
    }
    const own = (this.keyLimits ?? this.limits)[0];
    if (limit.dimension !== own.dimension) {
      fail(scope, `limit.dimension must be ${own.dimension} (the limit an override replaces), got ${limit.dimension}`);
    }
    if (limit.burst < this.shards) fail(scope, `limit.burst must be at least shards (${this.shards}), got ${limit.burst}`);
    return new OverrideWrite(scope, id, this, {
      key: options.key ?? DEFAULT_KEY,
      limit: { ratePerSecond: limit.ratePerSecond, burst: limit.burst },
      until: options.until,
      hint: { queryLanguage: options.queryLanguage },
    });
  }

  /**
   * A schedule that sets a key's limit (or, without `limit`, clears its override) at the times given: EventBridge
   * Scheduler writing the override item directly (a universal target, DynamoDB PutItem/DeleteItem, no Lambda), its
   * role granted exactly that item. Two schedules make business hours and nights: one sets, one clears.
   */
  public addSchedule(id: string, options: LimitScheduleOptions): scheduler.Schedule {
    const key = options.key ?? DEFAULT_KEY;
    if (key.startsWith('$') || key.length < 1 || key.length > 512) fail(this, `addSchedule(${id}) key must be a literal of 1 to 512 characters (a schedule has no input to read it from), got ${JSON.stringify(key)}`);
    if (options.limit) {
      options.limit._check(this, `addSchedule(${id}) limit.`);
      const own = (this.keyLimits ?? this.limits)[0];
      if (options.limit.dimension !== own.dimension) fail(this, `addSchedule(${id}) limit.dimension must be ${own.dimension}, got ${options.limit.dimension}`);
      if (this.limits.length > 1 && !this.keyLimits) fail(this, `addSchedule(${id}): limiter ${this.limiterName} has several limits, whose keys read no override yet`);
      if (options.limit.burst < this.shards) fail(this, `addSchedule(${id}) limit.burst must be at least shards (${this.shards}), got ${options.limit.burst}`);
    }
    const pk = `${this.limiterName}#config#${key}`;
    const action = options.limit ? 'putItem' : 'deleteItem';
    const target = new schedulerTargets.Universal({
      service: 'dynamodb',
      action,
      input: scheduler.ScheduleTargetInput.fromObject(options.limit
        ? {
          TableName: this.table.tableName,
          Item: {
            pk: { S: pk },
            [OverrideAttr.RATE_PER_SECOND]: { N: String(options.limit.ratePerSecond) },
            [OverrideAttr.BURST]: { N: String(options.limit.burst) },
            [OverrideAttr.BY]: { S: `schedule:${id}` },
          },
        }
        : { TableName: this.table.tableName, Key: { pk: { S: pk } } }),
      policyStatements: [new iam.PolicyStatement({
        actions: [options.limit ? 'dynamodb:PutItem' : 'dynamodb:DeleteItem'],
        resources: [this.table.tableArn],
        conditions: { 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': [pk] } },
      })],
      retryAttempts: 10,
    });
    return new scheduler.Schedule(this, `Schedule${id}`, {
      schedule: options.schedule,
      target,
      description: options.description ?? `cdk-sfn-throttle ${this.limiterName}: ${options.limit ? `set key ${key} to ${options.limit.description}` : `clear key ${key}'s override`}`,
    });
  }

  /** A state that clears a key's override (the deployed limit applies again): one DynamoDB DeleteItem, granted that item. */
  public clearLimitTask(scope: Construct, id: string, options: ClearLimitOptions = {}): sfn.TaskStateBase {
    return new OverrideWrite(scope, id, this, { key: options.key ?? DEFAULT_KEY, hint: { queryLanguage: options.queryLanguage } });
  }

  /**
   * Grants `dynamodb:GetItem` and `dynamodb:UpdateItem` on the table, limited to this limiter's own items
   * (`dynamodb:LeadingKeys` `<limiterName>#*`), and use of the table's key if it has one.
   */
  public grantTakeTokens(grantee: iam.IGrantable): iam.Grant {
    return grantBucketAccess(this, grantee);
  }

  /**
   * States that acquire tokens: the acquire call (which sleeps any sub-second wait itself) and one Wait
   * state for whole seconds. Chain the protected state after it.
   */
  public acquire(scope: Construct, id: string, options: AcquireStateOptions = {}): sfn.StateMachineFragment {
    return new AcquireFragment(scope, id, this, options);
  }

  /**
   * A metric published by the acquire function (namespace `CdkSfnThrottle`, dimension `LimiterName`).
   *
   * @default - sum over 1 minute
   */
  public metric(metricName: string, props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return limiterMetric(this, this.limiterName, metricName, props);
  }

  /**
   * Tokens admitted.
   *
   * @default - sum over 1 minute
   */
  public metricAdmitted(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(LimiterMetricNames.ADMITTED, props);
  }

  /**
   * Tokens admitted with a wait (RESERVE mode).
   *
   * @default - sum over 1 minute
   */
  public metricDelayed(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(LimiterMetricNames.DELAYED, props);
  }

  /**
   * Tokens refused: TRY with an empty bucket, or RESERVE beyond `maxWait`.
   *
   * @default - sum over 1 minute
   */
  public metricRejected(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(LimiterMetricNames.REJECTED, props);
  }

  /**
   * Wait handed out with each admission, milliseconds.
   *
   * @default - p99 over 1 minute
   */
  public metricWaitTime(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(LimiterMetricNames.WAIT_TIME, { statistic: cloudwatch.Stats.p(99), ...props });
  }

  /**
   * DynamoDB calls made by acquire calls.
   *
   * @default - sum over 1 minute
   */
  public metricDynamoDbCalls(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(LimiterMetricNames.DYNAMODB_CALLS, props);
  }

  /**
   * Acquire calls that failed closed because DynamoDB was unreachable or throttling.
   *
   * @default - sum over 1 minute
   */
  public metricUnavailable(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(LimiterMetricNames.UNAVAILABLE, props);
  }

  /**
   * Adaptive limiters: throttling signals reported (RateLimitedTasks' retried errors, alarm transitions).
   *
   * @default - sum over 1 minute
   */
  public metricThrottleSignals(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(LimiterMetricNames.THROTTLE_SIGNALS, props);
  }

  /**
   * Adaptive limiters: signals that lowered the rate (the others came within a second of the last decrease).
   *
   * @default - sum over 1 minute
   */
  public metricRateDecreases(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(LimiterMetricNames.RATE_DECREASES, props);
  }

  /**
   * The rate in force (tokens per second: a key's override, or the deployed limit), as the acquire function last
   * applied it: for one key, or the highest over all keys.
   *
   * @default - maximum over 1 minute, all keys
   */
  public metricLimitInForce(key?: string, props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace: 'CdkSfnThrottle',
      metricName: LimiterMetricNames.LIMIT_IN_FORCE,
      dimensionsMap: { LimiterName: this.limiterName, ...(key !== undefined ? { Key: key } : {}) },
      statistic: cloudwatch.Stats.MAXIMUM,
      period: Duration.minutes(1),
      ...props,
    });
  }
}


/**
 * A shared TPS limit enforced across all executions: a DynamoDB table and a small Node.js function that
 * implements GCRA (a token bucket kept as one number per key), with one conditional write per acquire.
 *
 * Acquire from a state machine with `acquire()`; the function never admits on malformed input or when
 * DynamoDB is unavailable.
 */
export class RateLimiter extends RateLimiterBase {
  /**
   * A limiter defined in another stack or app, so that more state machines take from the same limit (one
   * third-party API, many workflows). Grants, `acquire()` and metrics work as on the original; the limit itself
   * (rate, burst, shards, overrides) is the deployed function's.
   */
  public static fromRateLimiterAttributes(scope: Construct, id: string, attrs: RateLimiterAttributes): IRateLimiter {
    return new ImportedRateLimiter(scope, id, attrs);
  }

  public readonly limiterName: string;
  public readonly limits: Limit[];
  public readonly keyLimits?: Limit[];
  public readonly ratePerSecond: number;
  public readonly burst: number;
  public readonly shards: number;
  public readonly maxWait: Duration;
  public readonly table: dynamodb.ITable;
  public readonly acquireFunction: lambda.IFunction;
  public readonly adaptive?: AdaptiveOptions;
  public readonly priorityReserve: number;
  /** The acquire function's log group. */
  public readonly logGroup: logs.ILogGroup;

  constructor(scope: Construct, id: string, props: RateLimiterProps) {
    super(scope, id);

    ({
      limits: this.limits, keyLimits: this.keyLimits, ratePerSecond: this.ratePerSecond, burst: this.burst, shards: this.shards,
    } = checkedLimit(this, props));
    const perShard = this.ratePerSecond / this.shards;
    if (perShard > 700) {
      Annotations.of(this).addWarningV2('cdk-sfn-throttle:hotShard',
        `each of the ${this.shards} shards takes ${perShard.toFixed(0)} writes/s, above ~700 (a DynamoDB item takes about 1,000 writes/s): raise shards to at least ${Math.ceil(this.ratePerSecond / 500)}`);
    }

    this.maxWait = checkedMaxWait(this, props.maxWait);
    const maxWaitMs = this.maxWait.toMilliseconds();
    this.adaptive = checkedAdaptive(this, props.adaptive, this);
    this.priorityReserve = checkedPriorityReserve(this, props.priorityReserve);

    if (props.reservedConcurrency !== undefined) {
      checkRange(this, 'reservedConcurrency', props.reservedConcurrency, { min: 1, max: 1000, integer: true });
    }
    const memorySize = props.memorySize ?? 128;
    checkRange(this, 'memorySize', memorySize, { min: 128, max: 10_240, integer: true });

    this.limiterName = checkedLimiterName(this, props.limiterName);

    this.table = limiterTable(this, props.table, props.removalPolicy);

    this.logGroup = props.logGroup ?? new logs.LogGroup(this, 'LogGroup', {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    const role = handlerRole(this, 'ServiceRole', this.logGroup, `Acquire function of rate limiter ${this.node.path}`);
    const buckets = {
      table: this.table,
      limiterName: this.limiterName,
      ratePerSecond: this.ratePerSecond,
      burst: this.burst,
      shards: this.shards,
      limits: this.limits,
      keyLimits: this.keyLimits,
      adaptive: this.adaptive,
      priorityReserve: this.priorityReserve,
    };

    this.acquireFunction = new AcquireFunction(this, 'Function', {
      description: `cdk-sfn-throttle rate limiter ${this.node.path}: acquire tokens (GCRA on DynamoDB)`,
      role,
      memorySize,
      architecture: props.architecture ?? lambda.Architecture.ARM_64,
      tracing: props.tracing ?? lambda.Tracing.ACTIVE,
      logGroup: this.logGroup,
      // DynamoDB calls (at most 3 writes and 2 reads) plus a sub-second sleep.
      timeout: Duration.seconds(10),
      reservedConcurrentExecutions: props.reservedConcurrency,
      environment: limiterEnvironment(buckets, maxWaitMs),
    });
    grantBucketAccess(buckets, role);

    Validations.of(this.acquireFunction).acknowledge({
      id: 'Serverless-LambdaDLQ',
      reason: this.adaptive?.alarm
        ? 'the acquire function is invoked synchronously (Step Functions, callers), and asynchronously only by the adaptive alarm\'s EventBridge rule, whose target has its own DLQ'
        : 'the acquire function is only invoked synchronously (Step Functions, callers): a DLQ applies to asynchronous invocations only',
    });
    if (this.adaptive?.alarm) this.decreaseOnAlarm(this.adaptive.alarm);
  }

  /** Each transition of `alarm` into ALARM lowers the default key's rate: an EventBridge rule invoking the acquire function. */
  private decreaseOnAlarm(alarm: cloudwatch.IAlarm): void {
    const dlq = new sqs.Queue(this, 'AlarmSignalDlq', { encryption: sqs.QueueEncryption.SQS_MANAGED, enforceSSL: true, retentionPeriod: Duration.days(14) });
    Validations.of(dlq).acknowledge(
      { id: 'AwsSolutions-SQS3', reason: 'this queue is the dead-letter queue of the alarm rule\'s target' },
      { id: 'Serverless-SQSRedrivePolicy', reason: 'this queue is the dead-letter queue of the alarm rule\'s target: nothing is redriven from it' },
    );
    new events.Rule(this, 'AlarmSignal', {
      description: `cdk-sfn-throttle: alarm ${alarm.node.path} lowers the adaptive rate of limiter ${this.node.path}`,
      eventPattern: {
        source: ['aws.cloudwatch'],
        detailType: ['CloudWatch Alarm State Change'],
        resources: [alarm.alarmArn],
        detail: { state: { value: ['ALARM'] } },
      },
      targets: [new eventsTargets.LambdaFunction(this.acquireFunction, {
        event: events.RuleTargetInput.fromObject({ [AcquireField.PHASE]: DECREASE_PHASE, [AcquireField.KEY]: DEFAULT_KEY }),
        deadLetterQueue: dlq,
        retryAttempts: 4,
        maxEventAge: Duration.minutes(5),
      })],
    });
  }

}

/** How a limiter's limit was given: `ratePerSecond` (+ `burst`), or `limits`. */
interface LimitForm {
  readonly ratePerSecond?: number;
  readonly burst?: number;
  readonly limits?: Limit[];
  readonly keyLimits?: Limit[];
  readonly shards?: number;
}

/**
 * A limiter's limit, burst and shards, with their defaults, checked: one place for a RateLimiter and an imported
 * one. Exactly one of the two forms. Default shards: ceil(rate / 500) (≤ 500 writes/s per item), at most burst and
 * at most 1,000.
 */
function checkedLimit(scope: IConstruct, form: LimitForm):
{ limits: Limit[]; keyLimits?: Limit[]; ratePerSecond: number; burst: number; shards: number } {
  if ((form.ratePerSecond === undefined) === (form.limits === undefined)) {
    fail(scope, `give the limit as ratePerSecond (with burst) or as limits, not ${form.limits ? 'both' : 'neither'}`);
  }
  if (form.limits && form.burst !== undefined) {
    fail(scope, `burst goes with ratePerSecond; with limits give it in the Limit (Limit.perSecond(rate, { burst })), got burst ${form.burst} and limits`);
  }
  const limits = form.limits ? [...form.limits] : [Limit.perSecond(form.ratePerSecond!, { burst: form.burst })];
  if (limits.length < 1 || limits.length > 10) {
    fail(scope, `limits must hold 1 to 10 Limits, got ${limits.length}`);
  }
  limits.forEach((l, i) => l._check(scope, form.limits ? `limits[${i}] ` : ''));
  const dimensions = limits.map((l) => l.dimension);
  const repeated = dimensions.find((d, i) => dimensions.indexOf(d) !== i);
  if (repeated !== undefined) {
    fail(scope, `limits must count different dimensions (one Limit per dimension), got ${JSON.stringify(repeated)} twice in ${JSON.stringify(dimensions)}`);
  }
  if (limits.length > 1 && form.shards !== undefined && form.shards !== 1) {
    fail(scope, `shards must be 1 with several limits (a key's limits are on one item, taken in one write), got ${form.shards}`);
  }
  const keyLimits = checkedKeyLimits(scope, form, dimensions);
  const oneItem = limits.length > 1 || keyLimits !== undefined;
  const limit = limits[0];
  const { ratePerSecond, burst } = limit;
  const s = form.shards ?? (oneItem || limits.some((l) => l.windowRule) ? 1 : Math.max(1, Math.min(Math.ceil(ratePerSecond / 500), burst, 1000)));
  checkRange(scope, 'shards', s, { min: 1, max: 1000, integer: true });
  if (limits.some((l) => l.windowRule) && (limits.length > 1 || keyLimits)) {
    // the late-slot rule (a slot answered too late is given up) runs on the one-limit path only
    fail(scope, `a Limit.perWindow needs a limiter of that one limit, got ${limits.length} limits${keyLimits ? ' and keyLimits' : ''}: `
      + 'several limits or keyLimits with a provider\'s window rule are not supported yet');
  }
  if (keyLimits?.some((l) => l.windowRule)) {
    fail(scope, 'keyLimits cannot hold a Limit.perWindow (not supported yet): state the provider\'s rule as the limiter\'s one limit');
  }
  if (s > 1 && limits.some((l) => l.windowRule)) {
    // the derivation bounds the calls of one bucket; shards would each hand out their own burst within the window
    fail(scope, `shards must be 1 with a Limit.perWindow (the provider's window is held on one item), got ${s}: `
      + `${limit.description} derives ${limit.ratePerSecond.toFixed(3)}/s; above ~500/s split the provider's quota over several limiters`);
  }
  if (burst < s) fail(scope, `burst must be at least shards (${s}) so every shard holds a token, got ${burst}`);
  return { limits, keyLimits, ratePerSecond, burst, shards: s };
}

/** Per-key limits under shared ones: 1 to 10, distinct dimensions, each a dimension of `limits`, on one item (shards 1). */
function checkedKeyLimits(scope: IConstruct, form: LimitForm, dimensions: string[]): Limit[] | undefined {
  if (form.keyLimits === undefined) return undefined;
  const keyLimits = [...form.keyLimits];
  // one shared limit and one per key: the write that takes both is additive on the shared bucket (tenant-write.ts)
  if (keyLimits.length !== 1) fail(scope, `keyLimits must hold one Limit (several dimensions per key are not supported yet), got ${keyLimits.length}`);
  if (dimensions.length !== 1) {
    fail(scope, `limits must hold one Limit with keyLimits (several dimensions with per-key limits are not supported yet), got ${dimensions.length}: ${JSON.stringify(dimensions)}`);
  }
  keyLimits.forEach((l, i) => l._check(scope, `keyLimits[${i}] `));
  const own = keyLimits.map((l) => l.dimension);
  const repeated = own.find((d, i) => own.indexOf(d) !== i);
  if (repeated !== undefined) fail(scope, `keyLimits must count different dimensions, got ${JSON.stringify(repeated)} twice in ${JSON.stringify(own)}`);
  const foreign = own.filter((d) => !dimensions.includes(d));
  if (foreign.length > 0) {
    fail(scope, `keyLimits must count dimensions the shared limits count (${dimensions.join(', ')}): a key's limit sits under a shared one, got ${JSON.stringify(foreign)}`);
  }
  if (form.shards !== undefined && form.shards !== 1) {
    fail(scope, `shards must be 1 with keyLimits (the shared buckets and every active key's are one item, taken in one write), got ${form.shards}`);
  }
  return keyLimits;
}

/**
 * Adaptive options, checked: a limiter of one limit; the floor and the increase within the rate; the factor 0.1–0.95;
 * maxReservation within maxWait.
 */
function checkedAdaptive(scope: IConstruct, a: AdaptiveOptions | undefined,
  l: { limits: Limit[]; keyLimits?: Limit[]; ratePerSecond: number; maxWait: Duration }): AdaptiveOptions | undefined {
  if (a === undefined) return undefined;
  if (l.limits.length > 1 || l.keyLimits) {
    fail(scope, `adaptive needs a limiter of one limit, got ${l.limits.length} limits${l.keyLimits ? ' and keyLimits' : ''}: adaptive limits of several dimensions or per-key limits are not supported yet`);
  }
  checkRange(scope, 'adaptive.minRatePerSecond', a.minRatePerSecond, { min: 0.001, max: l.ratePerSecond, why: 'the limiter\'s rate' });
  if (a.decreaseFactor !== undefined) checkRange(scope, 'adaptive.decreaseFactor', a.decreaseFactor, { min: 0.1, max: 0.95 });
  if (a.increasePerSecond !== undefined) checkRange(scope, 'adaptive.increasePerSecond', a.increasePerSecond, { min: 0.001, max: l.ratePerSecond, why: 'the limiter\'s rate' });
  const reservation = (a.maxReservation ?? Duration.seconds(DEFAULT_MAX_RESERVATION_S)).toMilliseconds();
  checkRange(scope, 'adaptive.maxReservation (ms)', reservation, { min: 0, max: l.maxWait.toMilliseconds(), integer: true, why: 'the limiter\'s maxWait' });
  return a;
}

function checkedPriorityReserve(scope: IConstruct, reserve: number | undefined): number {
  const r = reserve ?? DEFAULT_PRIORITY_RESERVE;
  checkRange(scope, 'priorityReserve', r, { min: 0, max: 0.45 });
  return r;
}


/** The longest reservation: 0 to 24 hours, whole milliseconds. */
function checkedMaxWait(scope: IConstruct, maxWait: Duration = Duration.minutes(5)): Duration {
  checkRange(scope, 'maxWait (ms)', maxWait.toMilliseconds(), { min: 0, max: Duration.hours(24).toMilliseconds(), integer: true });
  return maxWait;
}

/** A RateLimiter defined elsewhere, by its attributes. */
class ImportedRateLimiter extends RateLimiterBase {
  public readonly limiterName: string;
  public readonly limits: Limit[];
  public readonly keyLimits?: Limit[];
  public readonly ratePerSecond: number;
  public readonly burst: number;
  public readonly shards: number;
  public readonly maxWait: Duration;
  public readonly table: dynamodb.ITable;
  public readonly acquireFunction: lambda.IFunction;
  public readonly adaptive?: AdaptiveOptions;
  public readonly priorityReserve: number;

  constructor(scope: Construct, id: string, attrs: RateLimiterAttributes) {
    super(scope, id);
    this.limiterName = checkedLimiterName(this, attrs.limiterName);
    ({
      limits: this.limits, keyLimits: this.keyLimits, ratePerSecond: this.ratePerSecond, burst: this.burst, shards: this.shards,
    } = checkedLimit(this, attrs));
    this.maxWait = checkedMaxWait(this, attrs.maxWait);
    this.adaptive = checkedAdaptive(this, attrs.adaptive, this);
    this.priorityReserve = checkedPriorityReserve(this, attrs.priorityReserve);
    this.table = dynamodb.Table.fromTableArn(this, 'Table', attrs.tableArn);
    this.acquireFunction = lambda.Function.fromFunctionArn(this, 'Function', attrs.acquireFunctionArn);
  }
}

/** acquire → Wait(whole seconds). The sub-second part is slept by the function. */
class AcquireFragment extends sfn.StateMachineFragment {
  public readonly startState: sfn.State;
  public readonly endStates: sfn.INextable[];

  constructor(scope: Construct, id: string, limiter: IRateLimiter, options: AcquireStateOptions) {
    super(scope, id);
    const { acquire, wait } = acquireStates(this, id, limiter, { ...options, prop: '' });
    this.startState = acquire;
    this.endStates = [wait];
    this.node.addValidation(languageValidation(this, () => [acquire, wait]));
  }
}
