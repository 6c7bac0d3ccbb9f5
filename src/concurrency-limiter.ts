import { Annotations, Aspects, Duration, IAspect, Lazy, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct, IConstruct } from 'constructs';
import { ThrottleErrors } from './errors';
import { ConcurrencyFunction } from './private/concurrency-function';
import {
  ConcurrencyEnv, ConcurrencyField as F, ConcurrencyMetricNames, ConcurrencyOp, DEFAULT_KEY, ERROR_FIELD, LEASE_FIELD,
} from './private/contract';
import { handlerRole } from './private/handler-function';
import { checkedLimiterName, limiterMetric, limiterTable } from './private/limiter-parts';
import { argumentsOf, expr, isJsonataExpression, jsonataCatches, JSONATA, mergeAt, rendering, userExpression, wrapRendering } from './private/query-language';
import { LanguageParallel } from './private/states';
import { checkRange, fail } from './private/validation';

/**
 * A cross-execution concurrency limit: how many calls run at once, per key, across every execution and Map.
 */
export interface IConcurrencyLimiter extends IConstruct {
  /** Name of this limiter: the prefix of its items and the `LimiterName` metric dimension. */
  readonly limiterName: string;
  /** Slots per key. */
  readonly limit: number;
  /** How long a lease lasts: a holder that never releases (its execution vanished) loses it after this. */
  readonly leaseDuration: Duration;
  /** Longest wait for a slot. */
  readonly maxWait: Duration;
  /** The table holding leases and waiters. */
  readonly table: dynamodb.ITable;
  /** The function that acquires, releases, hands slots on and reaps. */
  readonly concurrencyFunction: lambda.IFunction;

  /** Grants invoking the concurrency function. */
  grantAcquire(grantee: iam.IGrantable): iam.Grant;
  /** Lets the function hand slots to waiters of `stateMachine` and reap its failed executions (added automatically for machines in this app). */
  allowWaitersFrom(stateMachine: sfn.IStateMachine): void;
  /** A metric of this limiter (namespace `CdkSfnThrottle`, dimension `LimiterName`). */
  metric(metricName: string, props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Slots in use (maximum). */
  metricInUse(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Acquirers waiting (maximum). */
  metricWaiting(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** How long granted waiters waited, ms (p99). */
  metricWaitTime(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Expired leases reclaimed (a holder that never released). */
  metricReclaimed(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
  /** Waiters whose maxWait passed. */
  metricExpired(props?: cloudwatch.MetricOptions): cloudwatch.Metric;
}

/**
 * A concurrency limiter defined elsewhere (another stack or app), for `ConcurrencyLimiter.fromConcurrencyLimiterAttributes`.
 */
export interface ConcurrencyLimiterAttributes {
  /** The limiter's name (`ConcurrencyLimiter.limiterName`). */
  readonly limiterName: string;
  /** ARN of its function (`ConcurrencyLimiter.concurrencyFunction.functionArn`). */
  readonly concurrencyFunctionArn: string;
  /** ARN of its table. */
  readonly tableArn: string;
  /** Its limit (for synth checks; the deployed function enforces its own). */
  readonly limit: number;
  /**
   * Its lease duration: a ConcurrencyLimitedTask's task timeout is fitted in it.
   *
   * @default Duration.minutes(15)
   */
  readonly leaseDuration?: Duration;
  /**
   * Its maxWait: the acquire state's timeout.
   *
   * @default Duration.minutes(5)
   */
  readonly maxWait?: Duration;
}

/**
 * Properties of a `ConcurrencyLimiter`.
 */
export interface ConcurrencyLimiterProps {
  /**
   * Slots per key: how many holders run at once. Valid range: an integer from 1 to 1,000.
   */
  readonly limit: number;

  /**
   * How long a lease lasts. A ConcurrencyLimitedTask's task gets a timeout that fits in it (retries included), so a
   * lease never expires while its task runs; a lease whose holder vanished is reclaimed after it. Valid range: 10
   * seconds to 24 hours.
   *
   * @default Duration.minutes(15)
   */
  readonly leaseDuration?: Duration;

  /**
   * Longest wait for a slot; a waiter past it fails with `ConcurrencyWaitExpired` and leaves nothing behind. Valid
   * range: 1 second to 24 hours.
   *
   * @default Duration.minutes(5)
   */
  readonly maxWait?: Duration;

  /**
   * A table to keep leases in (string partition key `pk`, TTL on `exp`), e.g. a RateLimiter's.
   *
   * @default - a new on-demand table, encrypted, with point-in-time recovery, retained on removal
   */
  readonly table?: dynamodb.ITable;

  /**
   * Removal policy of the table this construct creates. Not with `table`.
   *
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;

  /**
   * Name of this limiter: prefixes its items and is the `LimiterName` dimension of its metrics.
   *
   * @default - a name unique in the app, derived from the construct path
   */
  readonly limiterName?: string;

  /**
   * Reap the leases and waiters of executions that fail, time out or are stopped as soon as Step Functions says so
   * (an EventBridge rule on "Step Functions Execution Status Change", Standard workflows). Lease expiry recovers
   * every slot without it; the reaper makes it immediate.
   *
   * @default true
   */
  readonly reaper?: boolean;

  /**
   * Memory of the function, MB. Valid range: 128 to 10,240.
   *
   * @default 128
   */
  readonly memorySize?: number;

  /**
   * Retention of the function's log group.
   *
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
}

/**
 * What every concurrency limiter, created here or imported, does: the grant to acquire and the metrics.
 */
export abstract class ConcurrencyLimiterBase extends Construct implements IConcurrencyLimiter {
  public abstract readonly limiterName: string;
  public abstract readonly limit: number;
  public abstract readonly leaseDuration: Duration;
  public abstract readonly maxWait: Duration;
  public abstract readonly table: dynamodb.ITable;
  public abstract readonly concurrencyFunction: lambda.IFunction;

  public abstract allowWaitersFrom(stateMachine: sfn.IStateMachine): void;

  /** Grants invoking the concurrency function (its exact ARN). */
  public grantAcquire(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({ grantee, actions: ['lambda:InvokeFunction'], resourceArns: [this.concurrencyFunction.functionArn] });
  }

  /** @default - sum over 1 minute */
  public metric(metricName: string, props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return limiterMetric(this, this.limiterName, metricName, props);
  }

  /** @default - maximum over 1 minute */
  public metricInUse(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(ConcurrencyMetricNames.IN_USE, { statistic: cloudwatch.Stats.MAXIMUM, ...props });
  }

  /** @default - maximum over 1 minute */
  public metricWaiting(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(ConcurrencyMetricNames.WAITING, { statistic: cloudwatch.Stats.MAXIMUM, ...props });
  }

  /** @default - p99 over 1 minute */
  public metricWaitTime(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(ConcurrencyMetricNames.WAIT_TIME, { statistic: cloudwatch.Stats.p(99), ...props });
  }

  /** @default - sum over 1 minute */
  public metricReclaimed(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(ConcurrencyMetricNames.RECLAIMED, props);
  }

  /** @default - sum over 1 minute */
  public metricExpired(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric(ConcurrencyMetricNames.EXPIRED, props);
  }
}

/**
 * A concurrency limit shared by every execution: leases in DynamoDB (conditional writes), waiters that sit in one
 * `.waitForTaskToken` state until a release hands them the slot (no polling), lease expiry and an execution-status
 * reaper so no slot leaks. Use it with `ConcurrencyLimitedTask`.
 */
export class ConcurrencyLimiter extends ConcurrencyLimiterBase {
  /**
   * A limiter defined in another stack or app, so more state machines share its slots. Its function answers the
   * waiters' task tokens: in the limiter's own stack, call `allowWaitersFrom()` with each importing state machine
   * (imported there by ARN), or waiters there are never handed a slot and wait until maxWait.
   */
  public static fromConcurrencyLimiterAttributes(scope: Construct, id: string, attrs: ConcurrencyLimiterAttributes): IConcurrencyLimiter {
    return new ImportedConcurrencyLimiter(scope, id, attrs);
  }

  public readonly limiterName: string;
  public readonly limit: number;
  public readonly leaseDuration: Duration;
  public readonly maxWait: Duration;
  public readonly table: dynamodb.ITable;
  public readonly concurrencyFunction: lambda.IFunction;
  private readonly role: iam.IRole;
  private waiterPolicy?: iam.Policy;
  private readonly machines: sfn.IStateMachine[] = [];
  private readonly machinePaths = new Set<string>();
  private readonly rule?: events.Rule;

  constructor(scope: Construct, id: string, props: ConcurrencyLimiterProps) {
    super(scope, id);
    checkRange(this, 'limit', props.limit, { min: 1, max: 1000, integer: true });
    this.limit = props.limit;
    this.leaseDuration = props.leaseDuration ?? Duration.minutes(15);
    checkRange(this, 'leaseDuration (s)', this.leaseDuration.toSeconds(), { min: 10, max: 86_400, integer: true });
    this.maxWait = props.maxWait ?? Duration.minutes(5);
    checkRange(this, 'maxWait (s)', this.maxWait.toSeconds(), { min: 1, max: 86_400, integer: true });
    const memorySize = props.memorySize ?? 128;
    checkRange(this, 'memorySize', memorySize, { min: 128, max: 10_240, integer: true });
    this.limiterName = checkedLimiterName(this, props.limiterName);
    this.table = limiterTable(this, props.table, props.removalPolicy);
    const logGroup = new logs.LogGroup(this, 'LogGroup', { retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH, removalPolicy: RemovalPolicy.DESTROY });
    const role = handlerRole(this, 'ServiceRole', logGroup, `Concurrency function of ${this.node.path}`);
    this.role = role;
    const fn = new ConcurrencyFunction(this, 'Function', {
      description: `cdk-sfn-throttle concurrency limiter ${this.node.path}: leases, waiters, release and reap`,
      role,
      memorySize,
      architecture: lambda.Architecture.ARM_64,
      tracing: lambda.Tracing.ACTIVE,
      logGroup,
      timeout: Duration.seconds(30),
      environment: {
        [ConcurrencyEnv.TABLE_NAME]: this.table.tableName,
        [ConcurrencyEnv.LIMITER_NAME]: this.limiterName,
        [ConcurrencyEnv.LIMIT]: String(this.limit),
        [ConcurrencyEnv.LEASE_MS]: String(this.leaseDuration.toMilliseconds()),
        [ConcurrencyEnv.MAX_WAIT_MS]: String(this.maxWait.toMilliseconds()),
      },
    });
    this.concurrencyFunction = fn;
    // its own items only (GetItem/PutItem/UpdateItem), and a Scan for the reaper (Scan takes no LeadingKeys condition)
    role.addToPrincipalPolicy(new iam.PolicyStatement({
      actions: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem'],
      resources: [this.table.tableArn],
      conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${this.limiterName}#*`] } },
    }));
    role.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ['dynamodb:Scan'], resources: [this.table.tableArn] }));
    this.table.encryptionKey?.grantEncryptDecrypt(role);
    Validations.of(fn).acknowledge({ id: 'Serverless-LambdaDLQ', reason: 'invoked synchronously by Step Functions, and by EventBridge for reaping (lease expiry covers a lost event)' });
    if (props.reaper ?? true) {
      this.rule = new events.Rule(this, 'Reaper', {
        description: `Reaps the leases of executions that end without releasing (${this.node.path})`,
        eventPattern: {
          source: ['aws.states'],
          detailType: ['Step Functions Execution Status Change'],
          detail: {
            status: ['FAILED', 'TIMED_OUT', 'ABORTED'],
            stateMachineArn: Lazy.list({ produce: () => this.machines.map((m) => m.stateMachineArn) }),
          },
        },
      });
      this.rule.addTarget(new targets.LambdaFunction(fn, { retryAttempts: 2 }));
    }
    // every state machine of the app that uses this limiter: its waiters may be handed slots, its failures reaped
    Aspects.of(Stack.of(this).node.root).add(new BindMachines(this));
  }

  public allowWaitersFrom(stateMachine: sfn.IStateMachine): void {
    if (this.machinePaths.has(stateMachine.node.path)) return;
    this.machinePaths.add(stateMachine.node.path);
    this.machines.push(stateMachine);
    // A policy of its own, not the role's default policy: the function depends on that one, and the machine depends
    // on the function (it invokes it), so the grant on the machine's ARN would close a dependency cycle.
    this.waiterPolicy ??= new iam.Policy(this, 'WaiterPolicy', { roles: [this.role as iam.Role] });
    this.waiterPolicy.addStatements(new iam.PolicyStatement({
      actions: ['states:SendTaskSuccess', 'states:SendTaskFailure', 'states:SendTaskHeartbeat'],
      resources: [stateMachine.stateMachineArn],
    }));
  }
}

/** A ConcurrencyLimiter defined elsewhere, by its attributes. */
class ImportedConcurrencyLimiter extends ConcurrencyLimiterBase {
  public readonly limiterName: string;
  public readonly limit: number;
  public readonly leaseDuration: Duration;
  public readonly maxWait: Duration;
  public readonly table: dynamodb.ITable;
  public readonly concurrencyFunction: lambda.IFunction;

  constructor(scope: Construct, id: string, attrs: ConcurrencyLimiterAttributes) {
    super(scope, id);
    checkRange(this, 'limit', attrs.limit, { min: 1, max: 1000, integer: true });
    this.limiterName = checkedLimiterName(this, attrs.limiterName);
    this.limit = attrs.limit;
    this.leaseDuration = attrs.leaseDuration ?? Duration.minutes(15);
    this.maxWait = attrs.maxWait ?? Duration.minutes(5);
    this.table = dynamodb.Table.fromTableArn(this, 'Table', attrs.tableArn);
    this.concurrencyFunction = lambda.Function.fromFunctionArn(this, 'Function', attrs.concurrencyFunctionArn);
  }

  public allowWaitersFrom(stateMachine: sfn.IStateMachine): void {
    Annotations.of(this).addWarningV2('cdk-sfn-throttle:importedConcurrencyLimiter',
      `the function of the imported limiter ${this.limiterName} cannot be granted here: in the limiter's own stack call allowWaitersFrom() with ${stateMachine.node.path}, or its waiters are never handed a slot`);
  }
}

/** Finds the state machines whose definitions hold a ConcurrencyLimitedTask of `limiter`, and binds them to it. */
class BindMachines implements IAspect {
  constructor(private readonly limiter: ConcurrencyLimiter) {}

  public visit(node: IConstruct): void {
    if (!(node instanceof sfn.StateMachine)) return;
    const tasks = this.limiter.node.root.node.findAll()
      .filter((c): c is ConcurrencyLimitedTask => c instanceof ConcurrencyLimitedTask && c.limiter === this.limiter);
    if (tasks.length === 0) return;
    const cfn = node.node.defaultChild as sfn.CfnStateMachine;
    const text = JSON.stringify(Stack.of(node).resolve(cfn.definitionString) ?? '');
    if (tasks.some((t) => text.includes(JSON.stringify(JSON.stringify(t.acquireState.stateId)).slice(1, -1)))) this.limiter.allowWaitersFrom(node);
  }
}

/**
 * Properties of a `ConcurrencyLimitedTask`.
 */
export interface ConcurrencyLimitedTaskProps {
  /** The concurrency limit every run of the task holds a slot of. */
  readonly limiter: IConcurrencyLimiter;

  /**
   * The task. It gets a timeout that fits its lease (retries included) when it has none; a timeout of its own that
   * does not fit is a synth error. No Catch of its own (use `addCatch`).
   */
  readonly task: sfn.TaskStateBase;

  /**
   * The limit's key: a literal (one limit per database), or a JSONPath / JSONata expression into the state input
   * (one limit per tenant).
   *
   * @default 'default'
   */
  readonly key?: string;

  /**
   * Slots one run holds. Valid range: 1 to the limiter's limit.
   *
   * @default 1
   */
  readonly slots?: number;
}

/**
 * Runs a task holding slots of a `ConcurrencyLimiter`: acquire (or wait, in one `.waitForTaskToken` state, for a
 * release to hand over the slot) → the task → release. The release runs on success and on every failure of the
 * task (then the task's own error is raised again). The lease is in the state data under `cdkSfnThrottleLease`
 * while the task runs; its output is the task's.
 */
export class ConcurrencyLimitedTask extends sfn.StateMachineFragment {
  public readonly startState: sfn.State;
  public readonly endStates: sfn.INextable[];
  /** The acquire state (waits in `.waitForTaskToken` while no slot is free). */
  public readonly acquireState: sfn.State;
  /** The state that releases on success. */
  public readonly releaseState: sfn.State;
  /** The limiter. */
  public readonly limiter: IConcurrencyLimiter;
  /** The task that runs while the slots are held. */
  public readonly task: sfn.TaskStateBase;
  /** Slots one run holds. */
  public readonly slots: number;
  private readonly catchers: { addCatch(handler: sfn.IChainable, props?: sfn.CatchProps): unknown }[];

  constructor(scope: Construct, id: string, props: ConcurrencyLimitedTaskProps) {
    super(scope, id);
    this.limiter = props.limiter;
    this.task = props.task;
    const slots = props.slots ?? 1;
    this.slots = slots;
    checkRange(this, 'slots', slots, { min: 1, max: props.limiter.limit, integer: true, why: 'the limiter\'s limit' });
    const key = props.key ?? DEFAULT_KEY;
    const fn = props.limiter.concurrencyFunction;
    const keyOf = (lang: sfn.QueryLanguage) => (key.startsWith('$') || isJsonataExpression(key) ? userExpression(this, 'key', key, lang) : key);
    // the key as a payload field: read from a path in JSONPath, an expression or a literal otherwise
    const keyField = (lang: sfn.QueryLanguage) => (lang !== JSONATA && key.startsWith('$') ? { [`${F.KEY}.$`]: keyOf(lang) } : { [F.KEY]: keyOf(lang) });

    const acquire = new FunctionTask(this, `${id} Acquire`, {
      fn,
      waitForToken: true,
      timeout: props.limiter.maxWait,
      resultPath: `$.${LEASE_FIELD}`,
      payload: (lang) => (lang === JSONATA ? {
        [F.OP]: ConcurrencyOp.ACQUIRE,
        [F.KEY]: keyOf(lang),
        [F.SLOTS]: slots,
        [F.LEASE]: expr('$states.context.Execution.Id & \'#\' & $states.context.State.EnteredTime & \'#\' & $uuid()'),
        [F.EXECUTION]: expr('$states.context.Execution.Id'),
        [F.TOKEN]: expr('$states.context.Task.Token'),
      } : {
        [F.OP]: ConcurrencyOp.ACQUIRE,
        ...keyField(lang),
        [F.SLOTS]: slots,
        [`${F.LEASE}.$`]: 'States.Format(\'{}#{}#{}\', $$.Execution.Id, $$.State.EnteredTime, States.UUID())',
        [`${F.EXECUTION}.$`]: '$$.Execution.Id',
        [`${F.TOKEN}.$`]: '$$.Task.Token',
      }),
    });
    // maxWait passed: the waiter's registration goes (a slot granted at the deadline is given back), and the
    // named error is raised from a state you can catch.
    const expired = new FunctionTask(this, `${id} Wait Expired`, {
      fn,
      payload: (lang) => ({ [F.OP]: ConcurrencyOp.EXPIRE, ...keyField(lang), [F.LEASE]: 'expired' }),
    });
    acquire.addCatch(expired, { errors: [sfn.Errors.TIMEOUT], resultPath: sfn.JsonPath.DISCARD });

    // The task in a one-branch unit: its output goes aside (the lease stays in the data for the release), and every
    // failure of it (States.ALL) reaches the release, which raises it again.
    const run = new LanguageParallel(this, `${id} Run`, { resultPath: '$.cdkSfnThrottleResult' });
    run.branch(props.task);
    const release = new FunctionTask(this, `${id} Release`, {
      fn,
      resultPath: sfn.JsonPath.DISCARD,
      outputPath: '$.cdkSfnThrottleResult[0]',
      payload: (lang) => (lang === JSONATA
        ? {
          [F.OP]: ConcurrencyOp.RELEASE,
          [F.KEY]: expr(`$states.input.${LEASE_FIELD}.key`),
          [F.LEASE]: expr(`$states.input.${LEASE_FIELD}.leaseId`),
          [F.SLOTS]: expr(`$states.input.${LEASE_FIELD}.slots`),
        }
        : {
          [F.OP]: ConcurrencyOp.RELEASE, [`${F.KEY}.$`]: `$.${LEASE_FIELD}.key`, [`${F.LEASE}.$`]: `$.${LEASE_FIELD}.leaseId`, [`${F.SLOTS}.$`]: `$.${LEASE_FIELD}.slots`,
        }),
    });
    const releaseFailed = new FunctionTask(this, `${id} Release Failed`, {
      fn,
      payload: (lang) => (lang === JSONATA
        ? {
          [F.OP]: ConcurrencyOp.RELEASE,
          [F.KEY]: expr(`$states.input.${LEASE_FIELD}.key`),
          [F.LEASE]: expr(`$states.input.${LEASE_FIELD}.leaseId`),
          [F.ERROR]: expr(`$states.input.${ERROR_FIELD}`),
        }
        : { [F.OP]: ConcurrencyOp.RELEASE, [`${F.KEY}.$`]: `$.${LEASE_FIELD}.key`, [`${F.LEASE}.$`]: `$.${LEASE_FIELD}.leaseId`, [`${F.ERROR}.$`]: `$.${ERROR_FIELD}` }),
    });
    run.addCatch(releaseFailed, { errors: [sfn.Errors.ALL], resultPath: `$.${ERROR_FIELD}` });
    acquire.next(run).next(release);
    this.acquireState = acquire;
    this.releaseState = release;
    this.catchers = [acquire, expired, releaseFailed, release];
    this.startState = acquire;
    this.endStates = [release];
    this.node.addValidation({ validate: () => this.validateTask(props.task) });
    fitTimeout(this, props.task, props.limiter.leaseDuration);
    if (!(props.limiter instanceof ConcurrencyLimiter)) {
      Annotations.of(this).addWarningV2('cdk-sfn-throttle:importedConcurrencyLimiter',
        `limiter ${props.limiter.limiterName} is imported: in its own stack, call allowWaitersFrom() with the state machine holding ${this.node.path}, or its waiters are never handed a slot`);
    }
  }

  /**
   * Routes errors to `handler`: the task's own (raised again after its release), `ConcurrencyWaitExpired`, and the
   * limiter's own failures.
   */
  public addCatch(handler: sfn.IChainable, props: sfn.CatchProps = {}): ConcurrencyLimitedTask {
    for (const c of this.catchers) c.addCatch(handler, props);
    return this;
  }

  private validateTask(task: sfn.TaskStateBase): string[] {
    const json = task.toStateJson() as { Catch?: unknown[] };
    return (json.Catch ?? []).length > 0
      ? [`task "${task.stateId}" of ConcurrencyLimitedTask ${this.node.path} has its own Catch: every failure must reach the release. Use ConcurrencyLimitedTask.addCatch()`]
      : [];
  }
}

/** The wrapped task's worst case (its timeout on every attempt, and the longest backoffs) must fit in the lease. */
function fitTimeout(scope: Construct, task: sfn.TaskStateBase, lease: Duration): void {
  const leaseS = lease.toSeconds();
  wrapRendering(task, (json) => {
    const retries = (json.Retry ?? []) as { MaxAttempts?: number; IntervalSeconds?: number; BackoffRate?: number; MaxDelaySeconds?: number }[];
    const attempts = 1 + retries.reduce((n, r) => n + (r.MaxAttempts ?? 3), 0);
    const backoff = retries.reduce((total, r) => {
      let sum = 0;
      for (let k = 0; k < (r.MaxAttempts ?? 3); k++) {
        sum += Math.min(r.MaxDelaySeconds ?? Infinity, (r.IntervalSeconds ?? 1) * (r.BackoffRate ?? 2) ** k);
      }
      return total + sum;
    }, 0);
    const room = Math.floor((leaseS * 0.9 - backoff) / attempts);
    if (json.TimeoutSeconds === undefined) {
      if (room < 1) fail(scope, `the task's retries (${attempts} attempts, up to ${Math.ceil(backoff)} s of backoff) do not fit in the lease (${leaseS} s): raise leaseDuration`);
      return { ...json, TimeoutSeconds: room };
    }
    if (typeof json.TimeoutSeconds === 'number' && json.TimeoutSeconds > room) {
      fail(scope, `the task's timeout (${json.TimeoutSeconds} s) × ${attempts} attempts + ${Math.ceil(backoff)} s of backoff does not fit in 90 % of the lease (${leaseS} s): `
          + 'a lease could expire while the task runs. '
          + (room >= 1 ? `Give the task a timeout of at most ${room} s, or raise leaseDuration` : 'Raise leaseDuration (the retries alone do not fit), or retry less'));
    }
    return json;
  });
}

/** Invokes the concurrency function (optionally `.waitForTaskToken`), rendered in its machine's language. */
class FunctionTask extends sfn.TaskStateBase {
  protected readonly taskMetrics?: sfn.TaskMetricsConfig;
  protected readonly taskPolicies?: iam.PolicyStatement[];

  constructor(scope: Construct, id: string, private readonly options: {
    fn: lambda.IFunction;
    payload: (lang: sfn.QueryLanguage) => Record<string, unknown>;
    waitForToken?: boolean;
    timeout?: Duration;
    resultPath?: string;
    outputPath?: string;
  }) {
    super(scope, id, {
      resultPath: options.resultPath,
      outputPath: options.outputPath,
      taskTimeout: options.timeout ? sfn.Timeout.duration(options.timeout) : undefined,
      integrationPattern: options.waitForToken ? sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN : sfn.IntegrationPattern.REQUEST_RESPONSE,
    });
    this.taskPolicies = [new iam.PolicyStatement({ actions: ['lambda:InvokeFunction'], resources: [options.fn.functionArn] })];
    this.addRetry({
      errors: ['Lambda.ServiceException', 'Lambda.AWSLambdaException', 'Lambda.SdkClientException', 'Lambda.TooManyRequestsException', ThrottleErrors.LIMITER_UNAVAILABLE],
      interval: Duration.seconds(1),
      maxAttempts: 5,
      backoffRate: 2,
      maxDelay: Duration.seconds(20),
      jitterStrategy: sfn.JitterType.FULL,
    });
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const r = rendering(this, topLevelQueryLanguage, undefined);
    const json = super.toStateJson(topLevelQueryLanguage) as Record<string, any>;
    if (r.lang !== JSONATA) return json;
    const { ResultPath, OutputPath, ...rest } = json;
    const base = OutputPath !== undefined ? `$states.input${OutputPath.slice(1)}` : undefined;
    const output = base !== undefined && ResultPath === null ? { Output: expr(base) }
      : ResultPath !== undefined ? { Output: expr(mergeAt(this, ResultPath, '$states.result')) } : {};
    return { ...jsonataCatches(this, rest), ...r.marker, ...output };
  }

  /** @internal */
  protected _renderTask(topLevelQueryLanguage?: sfn.QueryLanguage): any {
    const { lang } = rendering(this, topLevelQueryLanguage, undefined);
    const resource = this.options.waitForToken ? 'arn:aws:states:::lambda:invoke.waitForTaskToken' : 'arn:aws:states:::lambda:invoke';
    const args = { FunctionName: this.options.fn.functionArn, Payload: this.options.payload(lang) };
    return lang === JSONATA
      ? { Resource: resource, Arguments: argumentsOf(this, args) }
      : { Resource: resource, Parameters: sfn.FieldUtils.renderObject(args) };
  }
}
