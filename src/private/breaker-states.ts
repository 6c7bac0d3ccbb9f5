import { Annotations, Duration } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct, IConstruct } from 'constructs';
import { AcquireTask } from './acquire-task';
import { BreakerField, BreakerItem, BreakerOp, BreakerResultField } from './contract';
import { taskKindOf } from './task-kind';
import { fail } from './validation';
import { ThrottleErrors } from '../errors';

// The states a circuit breaker adds around a call, shared by CircuitBreaker.protect() and RateLimitedTask's
// `circuitBreaker`: a gate (check → closed? → the call; open → short-circuit; past the cooldown → elect probes) and
// the recorders after the call (a counted failure; a probe's success). Every data field lives under one result path
// (`$.circuit`), which the check overwrites whole, so nothing of an earlier attempt is read again.

/** What the states need of a breaker (an ICircuitBreaker; structural, so this module imports no construct). */
export interface BreakerRef {
  readonly breakerName: string;
  readonly table: dynamodb.ITable;
  readonly breakerFunction: lambda.IFunction;
  readonly halfOpenProbes: number;
  readonly failureErrors: string[];
  readonly cooldown: Duration;
  readonly failureRateThreshold?: number;
}

export interface BreakerWiring {
  readonly breaker: BreakerRef;
  /** A literal key or a simple JSONPath (checked by `checkedBreakerKey`). */
  readonly key: string;
  /** Where the breaker's data lives, e.g. `$.circuit`. */
  readonly resultPath: string;
}

const PATH_KEY = /^\$(\.[A-Za-z_][A-Za-z0-9_-]*)+$/;
/** A literal key's longest length: the item's key (`<breakerName>#breaker#<key>`) stays far below DynamoDB's 2,048 bytes. */
export const MAX_LITERAL_KEY = 512;

/** A key: a simple JSONPath (`$.partner`, `$.order.partnerId`), or a literal of 1 to 512 characters. */
export function checkedBreakerKey(owner: IConstruct, prop: string, key: string | undefined): string {
  const k = key ?? 'default';
  if (k.startsWith('$')) {
    if (!PATH_KEY.test(k)) fail(owner, `${prop} must be a simple JSONPath like $.partner (fields only) or a literal, got ${JSON.stringify(k)}`);
    return k;
  }
  if (k.length < 1 || k.length > MAX_LITERAL_KEY) fail(owner, `${prop} must be a JSONPath or a literal of 1 to ${MAX_LITERAL_KEY} characters, got ${JSON.stringify(k)} (${k.length})`);
  // the literal is quoted in an intrinsic function (the open cause), where a backslash has no escape validators accept
  if (k.includes('\\')) fail(owner, `${prop} must not contain a backslash, got ${JSON.stringify(k)}`);
  return k;
}

export function checkedResultPath(owner: IConstruct, rp: string | undefined): string {
  const r = rp ?? '$.circuit';
  if (!/^\$\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/.test(r)) fail(owner, `resultPath must be a simple path like $.circuit, got ${r}`);
  // the library's own fields (the caught error, the attempt count): the breaker's data would overwrite them or they it
  if (r.startsWith('$.cdkSfnThrottle')) fail(owner, `resultPath must not be one of the library's own fields ($.cdkSfnThrottle…), got ${r}`);
  return r;
}

/** A literal (no backslash) as an intrinsic function's string argument: `'`, `{` and `}` escaped. */
function intrinsicString(s: string): string {
  return `'${s.replace(/['{}]/g, (c) => `\\${c}`)}'`;
}

/** The key as an intrinsic function argument: the path, or the escaped literal. */
function keyArgument(key: string): string {
  return key.startsWith('$') ? key : intrinsicString(key);
}

/** The key in a breaker function request: always a string (a number at the path is formatted). */
function keyField(key: string): Record<string, string> {
  return key.startsWith('$') ? { [`${BreakerField.KEY}.$`]: `States.Format('{}', ${key})` } : { [BreakerField.KEY]: key };
}

/** Reads the breaker's item: one GetItem on exactly this breaker's items (LeadingKeys), with the time it was read. */
class BreakerCheck extends sfn.TaskStateBase {
  protected readonly taskMetrics?: sfn.TaskMetricsConfig;
  protected readonly taskPolicies?: iam.PolicyStatement[];

  constructor(scope: Construct, id: string, private readonly w: BreakerWiring) {
    super(scope, id, {
      resultSelector: { 'read.$': '$', 'now.$': '$$.State.EnteredTime' },
      resultPath: w.resultPath,
    });
    this.taskPolicies = [new iam.PolicyStatement({
      actions: ['dynamodb:GetItem'],
      resources: [w.breaker.table.tableArn],
      conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${w.breaker.breakerName}#breaker#*`] } },
    })];
    // The optimized DynamoDB integration's names (DynamoDB.<Exception>); an unreachable table admits nothing.
    this.addRetry({
      errors: ['DynamoDB.InternalServerErrorException', 'DynamoDB.ProvisionedThroughputExceededException', 'DynamoDB.RequestLimitExceededException', 'DynamoDB.ThrottlingException'],
      interval: Duration.seconds(1),
      maxAttempts: 4,
      backoffRate: 2,
      jitterStrategy: sfn.JitterType.FULL,
    });
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    if (topLevelQueryLanguage === sfn.QueryLanguage.JSONATA) {
      fail(this, 'a CircuitBreaker renders in JSONPath state machines only for now, this one is JSONata');
    }
    return super.toStateJson(topLevelQueryLanguage);
  }

  /** @internal */
  protected _renderTask(): any {
    const name = this.w.breaker.breakerName;
    const key = this.w.key.startsWith('$')
      ? { 'S.$': `States.Format('${name}#breaker#{}', ${this.w.key})` }
      : { S: `${name}#breaker#${this.w.key}` };
    return {
      Resource: 'arn:aws:states:::dynamodb:getItem',
      Parameters: { TableName: this.w.breaker.table.tableName, Key: { pk: key }, ConsistentRead: true },
    };
  }
}

function isProbe(rp: string): sfn.Condition {
  return sfn.Condition.and(
    sfn.Condition.isPresent(`${rp}.elected.${BreakerResultField.PROBE}`),
    sfn.Condition.booleanEquals(`${rp}.elected.${BreakerResultField.PROBE}`, true));
}

/**
 * A call of the breaker function that never fails the execution: its own errors go to `then`. A probe's verdict
 * (`endsProbe`) replaces the election, answer or error alike, so the execution is no longer taken for a probe.
 */
function record(scope: Construct, name: string, w: BreakerWiring, op: string, probe: boolean, then: sfn.IChainable, endsProbe = false): sfn.State {
  const at = endsProbe ? `${w.resultPath}.elected` : undefined;
  const t = new AcquireTask(scope, name, w.breaker.breakerFunction,
    { [BreakerField.OP]: op, [BreakerField.PROBE]: probe, ...keyField(w.key) }, { resultPath: at ?? sfn.JsonPath.DISCARD }, { hint: {} });
  t.addCatch(then, { errors: [sfn.Errors.ALL], resultPath: at ?? `${w.resultPath}.recordError` });
  t.next(then);
  return t;
}

/**
 * check → closed (or no item): `proceed`; half-open with room, or open past its cooldown: elect (the function) →
 * elected: `proceed`, else short-circuited; open with its cooldown ahead: short-circuited. A short-circuited execution
 * has `<rp>.open` = { cause, openedAt, retryAfter } and goes to `onOpen`. Returns the check, the gate's first state.
 */
export function breakerGate(scope: Construct, id: string, w: BreakerWiring, proceed: sfn.IChainable, onOpen: sfn.IChainable):
{ check: sfn.TaskStateBase; elect: sfn.TaskStateBase } {
  const rp = w.resultPath;
  const name = w.breaker.breakerName;
  const item = `${rp}.read.Item`;
  const cause = (at: string, until: string) =>
    `States.Format('circuit breaker {} is open for key {} (opened {}): not called, retry after {}', ${intrinsicString(name)}, ${keyArgument(w.key)}, ${at}, ${until})`;
  const open = new sfn.Pass(scope, `${id} Open`, {
    parameters: {
      'cause.$': cause(`${item}.${BreakerItem.OPENED_AT}.S`, `${item}.${BreakerItem.RETRY_AFTER}.S`),
      'openedAt.$': `${item}.${BreakerItem.OPENED_AT}.S`,
      'retryAfter.$': `${item}.${BreakerItem.RETRY_AFTER}.S`,
    },
    resultPath: `${rp}.open`,
  });
  open.next(onOpen);
  const elected = `${rp}.elected`;
  const notElected = new sfn.Pass(scope, `${id} Not Elected`, {
    parameters: {
      'cause.$': cause(`${elected}.${BreakerResultField.OPENED_AT}`, `${elected}.${BreakerResultField.UNTIL}`),
      'openedAt.$': `${elected}.${BreakerResultField.OPENED_AT}`,
      'retryAfter.$': `${elected}.${BreakerResultField.UNTIL}`,
    },
    resultPath: `${rp}.open`,
  });
  notElected.next(onOpen);
  const elect = new AcquireTask(scope, `${id} Elect`, w.breaker.breakerFunction, { [BreakerField.OP]: BreakerOp.ELECT, ...keyField(w.key) }, {
    resultSelector: Object.fromEntries(Object.values(BreakerResultField).map((f) => [`${f}.$`, `$.${f}`])),
    resultPath: elected,
  }, { hint: {} });
  elect.next(new sfn.Choice(scope, `${id} Elected`)
    .when(sfn.Condition.booleanEquals(`${elected}.${BreakerResultField.CALL}`, true), proceed)
    .otherwise(notElected));
  const halfWithRoom = Array.from({ length: w.breaker.halfOpenProbes }, (_, n) => sfn.Condition.stringEquals(`${item}.${BreakerItem.PROBES}.N`, String(n)));
  const route = new sfn.Choice(scope, `${id} Closed`)
    .when(sfn.Condition.or(sfn.Condition.not(sfn.Condition.isPresent(item)), sfn.Condition.stringEquals(`${item}.${BreakerItem.STATUS}.S`, 'closed')), proceed)
    .when(sfn.Condition.and(sfn.Condition.stringEquals(`${item}.${BreakerItem.STATUS}.S`, 'half'), halfWithRoom.length === 1 ? halfWithRoom[0] : sfn.Condition.or(...halfWithRoom)), elect)
    .when(sfn.Condition.timestampLessThanJsonPath(`${rp}.now`, `${item}.${BreakerItem.UNTIL}.S`), open)
    .otherwise(elect);
  const check = new BreakerCheck(scope, `${id} Check`, w);
  check.next(route);
  return { check, elect };
}

/** The default short-circuit: fail with `CircuitOpen`, the cause from `<rp>.open`. */
export function circuitOpenFail(scope: Construct, id: string, w: BreakerWiring): sfn.Fail {
  return new sfn.Fail(scope, `${id} Circuit Open`, { error: ThrottleErrors.CIRCUIT_OPEN, causePath: `${w.resultPath}.open.cause` });
}

/** Waits until the breaker's retry-after, then goes to `check` (a CircuitOpen the retry policy retries). */
export function waitWhileOpen(scope: Construct, id: string, w: BreakerWiring): sfn.Wait {
  return new sfn.Wait(scope, `${id} Wait While Open`, { time: sfn.WaitTime.timestampPath(`${w.resultPath}.open.retryAfter`) });
}

/**
 * After any failure of the call, caught at `errorPath` ({ Error, Cause? }): one of the breaker's failure errors is
 * recorded (a probe's re-opens the breaker) and goes to `counted`; any other error goes to `uncounted`, a probe's
 * after giving its place back (another execution is elected without waiting out the period). The recording's own
 * errors never fail the execution. Returns the first state.
 */
export function failureRecorder(
  scope: Construct, id: string, w: BreakerWiring, errorPath: string, counted: sfn.IChainable, uncounted: sfn.IChainable,
): sfn.State {
  const probeChoice = new sfn.Choice(scope, `${id} Failed Probe`)
    .when(isProbe(w.resultPath), record(scope, `${id} Probe Failed`, w, BreakerOp.FAILURE, true, counted, true))
    .otherwise(record(scope, `${id} Record Failure`, w, BreakerOp.FAILURE, false, counted));
  const conditions = w.breaker.failureErrors.map((e) => sfn.Condition.stringEquals(`${errorPath}.Error`, e));
  return new sfn.Choice(scope, `${id} Counts`)
    .when(conditions.length === 1 ? conditions[0] : sfn.Condition.or(...conditions), probeChoice)
    .when(isProbe(w.resultPath), record(scope, `${id} Release Probe`, w, BreakerOp.RELEASE, true, uncounted, true))
    .otherwise(uncounted);
}

/** After a success: a probe's closes the breaker (one write); any other call writes nothing. Returns the first state. */
export function successRecorder(scope: Construct, id: string, w: BreakerWiring, then: sfn.IChainable): sfn.State {
  const choice = new sfn.Choice(scope, `${id} Was Probe`)
    .when(isProbe(w.resultPath), record(scope, `${id} Probe Succeeded`, w, BreakerOp.SUCCESS, true, then, true));
  if (w.breaker.failureRateThreshold !== undefined) {
    // the rate rule counts successes within a failure window (the item read before the call says until when)
    const windowEnd = `${w.resultPath}.read.Item.${BreakerItem.WINDOW_END}.S`;
    choice.when(sfn.Condition.and(sfn.Condition.isPresent(windowEnd), sfn.Condition.timestampLessThanJsonPath(`${w.resultPath}.now`, windowEnd)),
      record(scope, `${id} Record Success`, w, BreakerOp.SUCCESS, false, then));
  }
  return choice.otherwise(then);
}

/** Fails with the error kept at `errorPath` ({ Error, Cause? }: a timeout has no Cause). */
export function rethrow(scope: Construct, id: string, errorPath: string): sfn.State {
  return new sfn.Choice(scope, `${id} Has Cause`)
    .when(sfn.Condition.isPresent(`${errorPath}.Cause`), new sfn.Fail(scope, `${id} Failed`, { errorPath: `${errorPath}.Error`, causePath: `${errorPath}.Cause` }))
    .otherwise(new sfn.Fail(scope, `${id} Failed Without Cause`, { errorPath: `${errorPath}.Error` }));
}

/**
 * What a protected task must not do with its data: drop it (OutputPath) or write over the breaker's result path
 * (ResultPath at, above or below it). The probe flag is read from there after the task.
 */
export function checkTaskKeepsBreakerData(owner: IConstruct, task: sfn.State, rp: string, hint: string): void {
  const json = task.toStateJson() as Record<string, unknown>;
  const resultPath = json.ResultPath as string | null | undefined;
  if (resultPath === undefined || resultPath === '$') {
    fail(owner, `task must keep its input (a resultPath such as '$.result', or JsonPath.DISCARD): ${hint}, got ${task.node.path} without one`);
  }
  if (json.OutputPath !== undefined && json.OutputPath !== '$') {
    fail(owner, `task must not have an outputPath (got ${JSON.stringify(json.OutputPath)} on ${task.node.path}): ${hint}; select its result with resultSelector instead`);
  }
  if (typeof resultPath === 'string' && (resultPath === rp || resultPath.startsWith(`${rp}.`) || rp.startsWith(`${resultPath}.`))) {
    fail(owner, `task's resultPath ${resultPath} overlaps the breaker's resultPath ${rp}: ${hint}; put the result elsewhere (e.g. $.result)`);
  }
}

/**
 * Warnings a breaker's configuration earns where it protects `task`: none of its failure errors can come from this
 * task (it can never trip); a retry policy whose first backoff outlasts the cooldown (every retry finds the breaker
 * past its cooldown and probes: the downstream gets no rest from retries).
 */
export function warnBreakerUse(owner: IConstruct, breaker: BreakerRef, task: sfn.State, retry?: { retries: boolean; interval: Duration }): void {
  if (task instanceof sfn.TaskStateBase) {
    const json = task.toStateJson() as Record<string, unknown>;
    const kind = taskKindOf(task).kind;
    const possible = breaker.failureErrors.filter((e) => {
      if (e === 'States.Timeout') return json.TimeoutSeconds !== undefined || json.TimeoutSecondsPath !== undefined || json.TimeoutSecondsExpr !== undefined;
      if (e === 'States.HeartbeatTimeout') return json.HeartbeatSeconds !== undefined || json.HeartbeatSecondsPath !== undefined;
      if (e.startsWith('Lambda.')) return kind === 'lambda';
      if (e.startsWith('States.Http.')) return kind === 'http';
      return true;
    });
    if (possible.length === 0) {
      Annotations.of(owner).addWarningV2('cdk-sfn-throttle:breakerNeverTrips',
        `none of the breaker's failureErrors ${JSON.stringify(breaker.failureErrors)} can come from ${task.node.path} (a ${kind} task`
        + `${json.TimeoutSeconds === undefined && json.TimeoutSecondsPath === undefined ? ' without a timeout' : ''}): it can never trip. `
        + 'Give the breaker the errors this task raises (failureErrors), or the task a timeout');
    }
  }
  const cooldown = breaker.cooldown.toSeconds();
  if (retry?.retries && retry.interval.toSeconds() > cooldown) {
    Annotations.of(owner).addWarningV2('cdk-sfn-throttle:breakerCooldownShort',
      `the breaker's cooldown (${cooldown} s) is shorter than the retry policy's first backoff (${retry.interval.toSeconds()} s): `
      + 'a retry always finds the breaker past its cooldown and probes, so the downstream gets no rest from retries. Lengthen the cooldown');
  }
}
