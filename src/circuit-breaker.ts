import { Annotations, Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct, IConstruct } from 'constructs';
import { ThrottleErrors } from './errors';
import { BreakerFunction } from './private/breaker-function';
import {
  breakerGate, BreakerWiring, checkedBreakerKey, checkedResultPath, checkTaskKeepsBreakerData,
  circuitOpenFail, failureRecorder, rethrow, successRecorder, warnBreakerUse,
} from './private/breaker-states';
import { BreakerEnv, BreakerMetricNames } from './private/contract';
import { handlerRole } from './private/handler-function';
import { checkedLimiterName, limiterTable } from './private/limiter-parts';
import { catchesInTaskLanguage, languageValidation } from './private/query-language';
import { API_GATEWAY, HTTP } from './private/task-kind';
import { checkRange, fail } from './private/validation';

/**
 * Properties of a `CircuitBreaker`.
 */
export interface CircuitBreakerProps {
  /**
   * The breaker's name: its items' prefix in the table and its metrics' `BreakerName`.
   *
   * @default - a name unique in the app, from the construct path
   */
  readonly breakerName?: string;
  /**
   * Failures (the task failing with one of `failureErrors`) within `window` that open the breaker.
   *
   * Valid range: an integer from 1 to 1,000.
   *
   * @default 5
   */
  readonly failureThreshold?: number;
  /**
   * The rate rule instead of `failureThreshold`: the breaker opens when, within a window, at least `minimumCalls`
   * calls were counted and at least this percentage of them failed. A window starts at a failure (a healthy
   * downstream costs no write); within it each success is recorded (one write, so the rule costs a write per call
   * while failures are in the window). Valid range: 1 to 100 (percent). Not with `failureThreshold`.
   *
   * @default - the count rule (`failureThreshold`)
   */
  readonly failureRateThreshold?: number;
  /**
   * Calls a window must count before `failureRateThreshold` can open the breaker. Valid range: an integer from 1 to
   * 10,000. Only with `failureRateThreshold`.
   *
   * @default 10
   */
  readonly minimumCalls?: number;
  /**
   * The window failures are counted in: a fixed window from the first failure after the last one ended (not a
   * sliding one: failures just before and after its end fall in different windows).
   *
   * Valid range: 1 second to 1 hour.
   *
   * @default Duration.minutes(1)
   */
  readonly window?: Duration;
  /**
   * How long the breaker stays open before probes are let through; also how long the elected probes have to report
   * before others are elected (their executions may have stopped).
   *
   * Valid range: 1 second to 1 hour.
   *
   * @default Duration.seconds(30)
   */
  readonly cooldown?: Duration;
  /**
   * Executions let through per half-open period; the first to succeed closes the breaker, one failing re-opens it.
   *
   * Valid range: an integer from 1 to 10.
   *
   * @default 1
   */
  readonly halfOpenProbes?: number;
  /**
   * The task errors that count as failures of the downstream (exact names; `States.ALL` and `States.TaskFailed` are
   * refused: they would count the caller's own validation errors and throttling). Throttling errors belong to the
   * rate limiter, not here.
   *
   * @default - timeouts, Lambda's service errors and HttpInvoke's server errors: `States.Timeout`,
   * `States.HeartbeatTimeout`, `Lambda.ServiceException`, `Lambda.AWSLambdaException`, `Lambda.SdkClientException`,
   * `States.Http.StatusCode.500`, `States.Http.StatusCode.502`, `States.Http.StatusCode.504`, and the same statuses of
   * the API Gateway integration (`ApiGateway.500`, `ApiGateway.502`, `ApiGateway.504`)
   */
  readonly failureErrors?: string[];
  /**
   * A table for the breaker's items instead of a new one (a string partition key `pk`; TTL on `exp`). A RateLimiter's
   * table fits.
   *
   * @default - a new on-demand table, encrypted, point-in-time recovery, retained on removal
   */
  readonly table?: dynamodb.ITable;
  /**
   * Removal policy of the table this construct creates (not with `table`).
   *
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * Options of `CircuitBreaker.protect()`.
 */
export interface ProtectOptions {
  /**
   * The task the breaker protects, or a Parallel (e.g. one branch holding a RateLimitedTask: the breaker is checked
   * before the token is acquired, so no token is spent while it is open). It must keep its input (a `resultPath` such
   * as `$.result`, or `JsonPath.DISCARD`; in a JSONata machine, `outputs` that merge its result into `$states.input`):
   * after it, the state machine reads whether the call was a probe.
   */
  readonly task: sfn.TaskStateBase | sfn.Parallel;
  /**
   * The breaker key (one breaker state per key): a literal, or a JSONPath (`$.partner`).
   *
   * @default 'default'
   */
  readonly key?: string;
  /**
   * Where to go instead of failing: when the breaker is open (the task is not called), and after a counted failure.
   * The breaker's data (`resultPath`) holds why (`error` after a failure).
   *
   * @default - fail: `CircuitOpen` while open, the task's own error after a failure
   */
  readonly fallback?: sfn.IChainable;
  /**
   * Where the breaker keeps its data (the item it read, the time, the election, the error).
   *
   * @default '$.circuit'
   */
  readonly resultPath?: string;

  /**
   * The query language of the state machine these states render into, needed only when they are nested in a
   * Parallel or Map of yours in a JSONata machine (aws-cdk-lib renders nested states without the machine's language;
   * synth fails naming the states if they rendered as JSONPath there).
   *
   * @default - the state machine's, decided when it is rendered
   */
  readonly queryLanguage?: sfn.QueryLanguage;
}

/** A circuit breaker: created here or imported. */
export interface ICircuitBreaker extends IConstruct {
  /** Its items' prefix and its metrics' `BreakerName`. */
  readonly breakerName: string;
  /** The table holding the breaker's state (one item per key). */
  readonly table: dynamodb.ITable;
  /** The function that elects probes and records failures. */
  readonly breakerFunction: lambda.IFunction;
  /** Probes per half-open period. */
  readonly halfOpenProbes: number;
  /** The task errors counted as failures. */
  readonly failureErrors: string[];
  /** How long it stays open before a probe (the dashboard's alarm period follows it). */
  readonly cooldown: Duration;
  /** The rate rule's percentage, when the breaker uses it (successes within a window are then recorded). */
  readonly failureRateThreshold?: number;
  /** The states that protect `options.task`: check (one GetItem), the task, and a write only after a failure or a probe. */
  protect(scope: Construct, id: string, options: ProtectOptions): sfn.StateMachineFragment;
  /** A metric of the breaker function (namespace `CdkSfnThrottle`, dimension `BreakerName`). */
  metric(metricName: string, props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Times the breaker opened (or re-opened after a failed probe). */
  metricOpened(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Times a probe closed the breaker. */
  metricClosed(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Probes elected. */
  metricProbes(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Executions the function turned away (not those the state machine turns away itself while open). */
  metricShortCircuited(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
}

/** What `CircuitBreaker.fromCircuitBreakerAttributes` needs. */
export interface CircuitBreakerAttributes {
  /** The breaker's name (`CircuitBreaker.breakerName`). */
  readonly breakerName: string;
  /** ARN of the breaker's table (`CircuitBreaker.table.tableArn`). */
  readonly tableArn: string;
  /** ARN of the breaker's function (`CircuitBreaker.breakerFunction.functionArn`). */
  readonly breakerFunctionArn: string;
  /**
   * Probes per half-open period, as deployed.
   *
   * @default 1
   */
  readonly halfOpenProbes?: number;
  /**
   * The failure errors, as deployed.
   *
   * @default - the CircuitBreaker default
   */
  readonly failureErrors?: string[];
  /**
   * The cooldown, as deployed.
   *
   * @default Duration.seconds(30)
   */
  readonly cooldown?: Duration;
  /**
   * The rate rule's percentage, as deployed (the protecting states then record successes within a window).
   *
   * @default - the count rule
   */
  readonly failureRateThreshold?: number;
}

const DEFAULT_FAILURE_ERRORS = [
  'States.Timeout', 'States.HeartbeatTimeout',
  'Lambda.ServiceException', 'Lambda.AWSLambdaException', 'Lambda.SdkClientException',
  // HttpInvoke's and API Gateway's server errors (503 is a throttling error: RetryPolicy.httpThrottlingErrors)
  'States.Http.StatusCode.500', 'States.Http.StatusCode.502', 'States.Http.StatusCode.504',
  'ApiGateway.500', 'ApiGateway.502', 'ApiGateway.504',
];

abstract class CircuitBreakerBase extends Construct implements ICircuitBreaker {
  public abstract readonly breakerName: string;
  public abstract readonly table: dynamodb.ITable;
  public abstract readonly breakerFunction: lambda.IFunction;
  public abstract readonly halfOpenProbes: number;
  public abstract readonly failureErrors: string[];
  public abstract readonly cooldown: Duration;
  public abstract readonly failureRateThreshold?: number;

  public protect(scope: Construct, id: string, options: ProtectOptions): sfn.StateMachineFragment {
    return new ProtectedTask(scope, id, this, options);
  }

  public metric(metricName: string, props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace: 'CdkSfnThrottle',
      metricName,
      dimensionsMap: { BreakerName: this.breakerName },
      statistic: 'Sum',
      period: Duration.minutes(1),
      ...props,
    });
  }

  /** Times the breaker opened (or re-opened after a failed probe). */
  public metricOpened(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(BreakerMetricNames.OPENED, props);
  }

  /** Times a probe closed the breaker. */
  public metricClosed(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(BreakerMetricNames.CLOSED, props);
  }

  /** Probes elected. */
  public metricProbes(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(BreakerMetricNames.PROBES, props);
  }

  /**
   * Executions the function turned away (an election lost). Those the state machine turns away itself while the
   * breaker is open are not counted (no Lambda runs for them).
   */
  public metricShortCircuited(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(BreakerMetricNames.SHORT_CIRCUITED, props);
  }
}

/**
 * A circuit breaker whose state every execution and container shares: it stops calling a downstream that is failing,
 * lets a probe through after a cooldown, and closes when the probe succeeds. On the closed path a protected task
 * costs one DynamoDB GetItem (a service integration, no Lambda); the function runs only after a counted failure,
 * after a probe, or to elect probes once the cooldown has passed.
 */
export class CircuitBreaker extends CircuitBreakerBase {
  /** A breaker defined elsewhere, to protect more tasks with the same state. */
  public static fromCircuitBreakerAttributes(scope: Construct, id: string, attrs: CircuitBreakerAttributes): ICircuitBreaker {
    return new ImportedCircuitBreaker(scope, id, attrs);
  }

  public readonly breakerName: string;
  /** The table holding the breaker's state (one item per key). */
  public readonly table: dynamodb.ITable;
  public readonly breakerFunction: lambda.IFunction;
  public readonly halfOpenProbes: number;
  public readonly failureErrors: string[];
  /** The count rule: failures within `window` that open the breaker (undefined with the rate rule). */
  public readonly failureThreshold?: number;
  public readonly failureRateThreshold?: number;
  /** The rate rule: calls within `window` before the failure rate counts (undefined with the count rule). */
  public readonly minimumCalls?: number;
  /** The window failures (and, with the rate rule, calls) are counted in. */
  public readonly window: Duration;
  public readonly cooldown: Duration;

  constructor(scope: Construct, id: string, props: CircuitBreakerProps = {}) {
    super(scope, id);
    if (props.failureRateThreshold !== undefined) {
      if (props.failureThreshold !== undefined) {
        fail(this, `failureThreshold and failureRateThreshold are exclusive (the count rule or the rate rule), got ${props.failureThreshold} and ${props.failureRateThreshold}`);
      }
      this.failureRateThreshold = props.failureRateThreshold;
      checkRange(this, 'failureRateThreshold (%)', this.failureRateThreshold, { min: 1, max: 100 });
      this.minimumCalls = props.minimumCalls ?? 10;
      checkRange(this, 'minimumCalls', this.minimumCalls, { min: 1, max: 10_000, integer: true });
    } else {
      if (props.minimumCalls !== undefined) fail(this, `minimumCalls needs failureRateThreshold (the rate rule), got minimumCalls ${props.minimumCalls} without it`);
      this.failureThreshold = props.failureThreshold ?? 5;
      checkRange(this, 'failureThreshold', this.failureThreshold, { min: 1, max: 1000, integer: true });
    }
    this.window = props.window ?? Duration.minutes(1);
    checkRange(this, 'window (s)', this.window.toSeconds(), { min: 1, max: 3600, integer: true });
    this.cooldown = props.cooldown ?? Duration.seconds(30);
    checkRange(this, 'cooldown (s)', this.cooldown.toSeconds(), { min: 1, max: 3600, integer: true });
    this.halfOpenProbes = props.halfOpenProbes ?? 1;
    checkRange(this, 'halfOpenProbes', this.halfOpenProbes, { min: 1, max: 10, integer: true });
    this.failureErrors = checkedFailureErrors(this, props.failureErrors);
    this.breakerName = checkedLimiterName(this, props.breakerName);
    this.table = limiterTable(this, props.table, props.removalPolicy);
    const logGroup = new logs.LogGroup(this, 'LogGroup', { retention: logs.RetentionDays.ONE_MONTH, removalPolicy: RemovalPolicy.DESTROY });
    const role = handlerRole(this, 'ServiceRole', logGroup, `Circuit breaker function of ${this.node.path}`);
    const fn = new BreakerFunction(this, 'Function', {
      description: `cdk-sfn-throttle circuit breaker ${this.node.path}: elect probes, record failures and probe successes`,
      role,
      memorySize: 128,
      architecture: lambda.Architecture.ARM_64,
      tracing: lambda.Tracing.ACTIVE,
      logGroup,
      timeout: Duration.seconds(10),
      environment: {
        [BreakerEnv.TABLE_NAME]: this.table.tableName,
        [BreakerEnv.BREAKER_NAME]: this.breakerName,
        [BreakerEnv.FAILURE_THRESHOLD]: String(this.failureThreshold ?? 1),
        ...(this.failureRateThreshold !== undefined ? {
          [BreakerEnv.FAILURE_RATE]: String(this.failureRateThreshold / 100),
          [BreakerEnv.MINIMUM_CALLS]: String(this.minimumCalls),
        } : {}),
        [BreakerEnv.WINDOW_MS]: String(this.window.toMilliseconds()),
        [BreakerEnv.COOLDOWN_MS]: String(this.cooldown.toMilliseconds()),
        [BreakerEnv.HALF_OPEN_PROBES]: String(this.halfOpenProbes),
      },
    });
    this.breakerFunction = fn;
    role.addToPrincipalPolicy(new iam.PolicyStatement({
      actions: ['dynamodb:GetItem', 'dynamodb:PutItem'],
      resources: [this.table.tableArn],
      conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${this.breakerName}#*`] } },
    }));
    this.table.encryptionKey?.grantEncryptDecrypt(role);
    Validations.of(fn).acknowledge({ id: 'Serverless-LambdaDLQ', reason: 'invoked synchronously by Step Functions only: a DLQ applies to asynchronous invocations' });
  }
}

class ImportedCircuitBreaker extends CircuitBreakerBase {
  public readonly breakerName: string;
  public readonly table: dynamodb.ITable;
  public readonly breakerFunction: lambda.IFunction;
  public readonly halfOpenProbes: number;
  public readonly failureErrors: string[];
  public readonly cooldown: Duration;
  public readonly failureRateThreshold?: number;

  constructor(scope: Construct, id: string, attrs: CircuitBreakerAttributes) {
    super(scope, id);
    this.breakerName = checkedLimiterName(this, attrs.breakerName);
    this.table = dynamodb.Table.fromTableArn(this, 'Table', attrs.tableArn);
    this.breakerFunction = lambda.Function.fromFunctionArn(this, 'Function', attrs.breakerFunctionArn);
    this.halfOpenProbes = attrs.halfOpenProbes ?? 1;
    checkRange(this, 'halfOpenProbes', this.halfOpenProbes, { min: 1, max: 10, integer: true });
    this.failureErrors = checkedFailureErrors(this, attrs.failureErrors);
    this.cooldown = attrs.cooldown ?? Duration.seconds(30);
    this.failureRateThreshold = attrs.failureRateThreshold;
    if (this.failureRateThreshold !== undefined) checkRange(this, 'failureRateThreshold (%)', this.failureRateThreshold, { min: 1, max: 100 });
  }
}

function checkedFailureErrors(scope: IConstruct, errors: string[] | undefined): string[] {
  const list = [...(errors ?? DEFAULT_FAILURE_ERRORS)];
  if (list.length === 0) fail(scope, 'failureErrors must name at least one error, got []');
  const wild = list.filter((e) => e === 'States.ALL' || e === 'States.TaskFailed' || e.includes('*'));
  if (wild.length > 0) {
    fail(scope, `failureErrors must be exact error names (a wildcard would count the caller's own validation errors and throttling), got ${JSON.stringify(wild)}`);
  }
  const throttlingName = /Throttl|TooManyRequests|ProvisionedThroughputExceeded|RequestLimitExceeded|SlowDown|ServiceUnavailable/;
  const throttling = list.filter((e) => throttlingName.test(e) || HTTP.includes(e) || API_GATEWAY.includes(e));
  if (throttling.length > 0) {
    fail(scope, `failureErrors must not count throttling errors (they belong to the rate limiter and its retries), got ${JSON.stringify(throttling)}`);
  }
  const library = [
    ThrottleErrors.RATE_LIMIT_EXCEEDED, ThrottleErrors.LIMITER_UNAVAILABLE, ThrottleErrors.INVALID_ACQUIRE_REQUEST, ThrottleErrors.RETRIES_EXHAUSTED,
    ThrottleErrors.CIRCUIT_OPEN, ThrottleErrors.CONCURRENCY_WAIT_EXPIRED, ThrottleErrors.DISPATCH_FAILED,
  ];
  const own = list.filter((e) => library.includes(e));
  if (own.length > 0) {
    fail(scope, 'failureErrors must not count the library\'s own errors (not failures of the downstream; instead of RetriesExhausted, use circuitBreaker on '
      + `the RateLimitedTask, which counts each failure), got ${JSON.stringify(own)}`);
  }
  return list;
}

/**
 * check (GetItem) → closed: the task; open with its cooldown ahead: short-circuit; otherwise ask the function to
 * elect probes → the task → after a counted failure, record it (→ fallback or the task's error); after a probe's
 * success, record it (closes the breaker).
 */
class ProtectedTask extends sfn.StateMachineFragment {
  public readonly startState: sfn.State;
  public readonly endStates: sfn.INextable[];

  constructor(scope: Construct, id: string, breaker: ICircuitBreaker, options: ProtectOptions) {
    super(scope, id);
    const resultPath = checkedResultPath(this, options.resultPath);
    const w: BreakerWiring = {
      breaker,
      key: checkedBreakerKey(this, 'key', options.key, [resultPath, (options.task.toStateJson() as { ResultPath?: string }).ResultPath]),
      resultPath,
      task: options.task,
      hint: { queryLanguage: options.queryLanguage },
    };
    checkTaskKeepsBreakerData(this, options.task, w.resultPath, 'the breaker reads whether the call was a probe from the data after it');
    // a Catch of the task's own that comes first takes those errors: the breaker would never count them
    const taskJson = options.task.toStateJson() as Record<string, unknown>;
    const earlier = ((taskJson.Catch ?? []) as Array<{ ErrorEquals: string[] }>).flatMap((c) => c.ErrorEquals);
    const swallowed = breaker.failureErrors.filter((e) => earlier.includes(e) || earlier.includes('States.ALL') || (e !== 'States.Timeout' && earlier.includes('States.TaskFailed')));
    if (swallowed.length > 0) {
      Annotations.of(this).addWarningV2('cdk-sfn-throttle:breakerNeverCounts',
        `the task's own Catch takes ${JSON.stringify(swallowed)} before the breaker's: those failures are never counted, so they never open it — catch them after protect() (fallback) instead`);
    }
    warnProbeOutlivesCooldown(this, breaker, taskJson);
    warnBreakerUse(this, breaker, options.task);
    const errorPath = `${w.resultPath}.error`;
    const done = new sfn.Pass(scope, `${id} Done`);
    const raise = rethrow(scope, id, w, errorPath);
    // every error passes the recorder: failure errors are counted (→ fallback, or raised again), others raised again
    // (a probe's after giving its place back)
    const recorder = failureRecorder(scope, id, w, errorPath, options.fallback ?? raise, raise);
    options.task.addCatch(recorder, { errors: [sfn.Errors.ALL], resultPath: errorPath });
    // the catch in the task's own language (JSONata: Output, not ResultPath)
    catchesInTaskLanguage(options.task);
    options.task.next(successRecorder(scope, id, w, done));
    this.startState = breakerGate(scope, id, w, options.task, options.fallback ?? circuitOpenFail(scope, id, w)).check;
    this.endStates = [done];
    // nested in a JSONata container of the user's, the states cannot learn the machine's language: fail naming them
    this.node.addValidation(languageValidation(this, () => sfn.State.findReachableStates(this.startState)));
  }
}

/**
 * A probe whose task retries its failure errors for longer than the cooldown is taken for lost (its execution
 * stopped) and another execution is elected beside it: warn with the figures.
 */
function warnProbeOutlivesCooldown(scope: IConstruct, breaker: ICircuitBreaker, taskJson: Record<string, unknown>): void {
  type Retrier = { ErrorEquals: string[]; IntervalSeconds?: number; MaxAttempts?: number; BackoffRate?: number; MaxDelaySeconds?: number };
  const retriers = (taskJson.Retry ?? []) as Retrier[];
  const counted = retriers.filter((r) => r.ErrorEquals.some((e) => e === 'States.ALL' || breaker.failureErrors.includes(e)));
  let worst = 0;
  for (const r of counted) {
    let delay = r.IntervalSeconds ?? 1;
    let total = 0;
    for (let i = 0; i < (r.MaxAttempts ?? 3); i++) {
      total += r.MaxDelaySeconds !== undefined ? Math.min(delay, r.MaxDelaySeconds) : delay;
      delay *= r.BackoffRate ?? 2;
    }
    worst = Math.max(worst, total);
  }
  const cooldown = breaker.cooldown.toSeconds();
  if (worst > cooldown) {
    Annotations.of(scope).addWarningV2('cdk-sfn-throttle:probeOutlivesCooldown',
      `the task's own Retry on failure errors can wait ${worst} s in all, longer than the breaker's cooldown (${cooldown} s): `
      + 'a probe still retrying is taken for lost and another execution is elected beside it. Shorten the Retry (LambdaInvoke: retryOnServiceExceptions: false) or lengthen the cooldown');
  }
}
