import { Annotations, Duration } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct, IConstruct } from 'constructs';
import { AcquireTask } from './acquire-task';
import { BreakerField, BreakerItem, BreakerOp, BreakerResultField } from './contract';
import { expr, jsonataCatches, JSONATA, mergeAt, rendering } from './query-language';
import { LanguageHint } from './states';
import { retryDynamoDbCall, taskKindOf } from './task-kind';
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
  /** The construct's `queryLanguage` prop, for states nested in a container of the user's. */
  readonly hint?: LanguageHint;
  /** The protected task: in a JSONata machine its Output must keep the breaker's data (checked at render). */
  readonly task?: sfn.State;
  /** A literal key or a simple JSONPath (checked by `checkedBreakerKey`). */
  readonly key: string;
  /** Where the breaker's data lives, e.g. `$.circuit`. */
  readonly resultPath: string;
}

const PATH_KEY = /^\$(\.[A-Za-z_][A-Za-z0-9_-]*)+$/;
/** A literal key's longest length: the item's key (`<breakerName>#breaker#<key>`) stays far below DynamoDB's 2,048 bytes. */
export const MAX_LITERAL_KEY = 512;

/** A key: a simple JSONPath (`$.partner`, `$.order.partnerId`), or a literal of 1 to 512 characters. */
export function checkedBreakerKey(owner: IConstruct, prop: string, key: string | undefined, written: Array<string | null | undefined> = []): string {
  const k = key ?? 'default';
  if (k.startsWith('$')) {
    if (!PATH_KEY.test(k)) fail(owner, `${prop} must be a simple JSONPath like $.partner (fields only) or a literal, got ${JSON.stringify(k)}`);
    // the key is read before and after the call: not where the breaker, the acquire, the task or the library write
    const over = [...written, '$.cdkSfnThrottle'].filter((p): p is string => typeof p === 'string' && p !== '$')
      .find((p) => k === p || k.startsWith(`${p}.`) || (p === '$.cdkSfnThrottle' && k.startsWith(p)));
    if (over) fail(owner, `${prop} ${k} is under ${over}, which is written during the call (the key is read before and after it): read it from elsewhere`);
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

/** A simple JSONPath (fields only, perhaps with `-`) as JSONata on `$states.input`. */
export function js(path: string): string {
  const fields = path.replace(/^\$\.?/, '').split('.').filter((f) => f.length > 0);
  return ['$states.input', ...fields.map((f) => (/^[A-Za-z_][A-Za-z0-9_]*$/.test(f) ? f : `\`${f}\``))].join('.');
}

/**
 * The key as a JSONata string expression: the literal, or the value at the path formatted as a string — an error when
 * the field is missing, as the JSONPath rendering fails (JSONata would give undefined: every such execution one item).
 */
function keyJsonata(key: string): string {
  return key.startsWith('$')
    ? `($exists(${js(key)}) ? $string(${js(key)}) : $error(${JSON.stringify(`the circuit breaker key ${key} is not in the input`)}))`
    : JSON.stringify(key);
}

/** The language a breaker state renders in (and the marker a JSONata state needs where the surrounding is not). */
function lang(state: sfn.State, topLevel: sfn.QueryLanguage | undefined, w: { hint?: LanguageHint }) {
  return rendering(state, topLevel, w.hint?.queryLanguage);
}

/** A Choice whose every rule is given in both languages. */
class BreakerChoice extends sfn.Choice {
  private readonly jsonata: string[] = [];

  constructor(scope: Construct, id: string, private readonly w: BreakerWiring) {
    super(scope, id);
  }

  public whenBoth(condition: sfn.Condition, jsonataBody: string, next: sfn.IChainable): BreakerChoice {
    this.jsonata.push(jsonataBody);
    this.when(condition, next);
    return this;
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const r = lang(this, topLevelQueryLanguage, this.w);
    const json = super.toStateJson(sfn.QueryLanguage.JSON_PATH) as Record<string, any>;
    if (r.lang !== JSONATA) return json;
    const choices = (json.Choices as Array<{ Next: string }>).map((c, i) => ({ Condition: expr(this.jsonata[i]), Next: c.Next }));
    return { ...json, ...r.marker, Choices: choices };
  }
}

/** A Pass that puts `fields` at `at` in the data: Parameters + ResultPath, or Output (JSONata bodies given). */
export class BreakerPass extends sfn.Pass {
  constructor(scope: Construct, id: string, private readonly w: { hint?: LanguageHint },
    private readonly fields: { jsonPath: Record<string, unknown>; jsonata: Record<string, string> }, private readonly at: string) {
    super(scope, id, { parameters: fields.jsonPath, resultPath: at });
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const r = lang(this, topLevelQueryLanguage, this.w);
    const json = super.toStateJson(sfn.QueryLanguage.JSON_PATH) as Record<string, any>;
    if (r.lang !== JSONATA) return json;
    const { Parameters, ResultPath, ...rest } = json;
    const value = `{${Object.entries(this.fields.jsonata).map(([k, v]) => `${JSON.stringify(k)}: ${v}`).join(', ')}}`;
    return { ...rest, ...r.marker, Output: expr(mergeAt(this, this.at, value)) };
  }
}

/** A Fail whose error and cause are read from the data (`errorPath` or a literal `error`; `causePath`). */
class BreakerFail extends sfn.Fail {
  constructor(scope: Construct, id: string, private readonly w: BreakerWiring,
    private readonly f: { error?: string; errorPath?: string; causePath?: string }) {
    super(scope, id, f);
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const r = lang(this, topLevelQueryLanguage, this.w);
    const json = super.toStateJson(sfn.QueryLanguage.JSON_PATH) as Record<string, any>;
    if (r.lang !== JSONATA) return json;
    const { ErrorPath, CausePath, ...rest } = json;
    return {
      ...rest,
      ...r.marker,
      ...(this.f.errorPath ? { Error: expr(js(this.f.errorPath)) } : {}),
      ...(this.f.causePath ? { Cause: expr(js(this.f.causePath)) } : {}),
    };
  }
}

/** Waits until the timestamp at `path`. */
class BreakerWait extends sfn.Wait {
  constructor(scope: Construct, id: string, private readonly w: BreakerWiring, private readonly path: string) {
    super(scope, id, { time: sfn.WaitTime.timestampPath(path) });
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const r = lang(this, topLevelQueryLanguage, this.w);
    const json = super.toStateJson(sfn.QueryLanguage.JSON_PATH) as Record<string, any>;
    if (r.lang !== JSONATA) return json;
    const { TimestampPath, ...rest } = json;
    return { ...rest, ...r.marker, Timestamp: expr(js(this.path)) };
  }
}

/** A call of the breaker function: `{ op, probe?, key }`, the key always a string (a number at the path is formatted). */
class BreakerCall extends AcquireTask {
  constructor(scope: Construct, id: string, private readonly w: BreakerWiring,
    private readonly request: { op: string; probe?: boolean; period?: boolean; at?: boolean }, props: sfn.TaskStateBaseProps) {
    super(scope, id, w.breaker.breakerFunction, {}, props, { hint: w.hint ?? {} });
  }

  /** @internal */
  protected _renderTask(topLevelQueryLanguage?: sfn.QueryLanguage): any {
    const r = lang(this, topLevelQueryLanguage, this.w);
    const fields = { [BreakerField.OP]: this.request.op, ...(this.request.probe === undefined ? {} : { [BreakerField.PROBE]: this.request.probe }) };
    const key = this.w.key;
    const period = `${this.w.resultPath}.elected.${BreakerResultField.PERIOD}`;
    const resource = this.w.breaker.breakerFunction.functionArn;
    if (r.lang === JSONATA) {
      return {
        Resource: resource,
        Arguments: {
          ...fields,
          // a literal key as an expression too: a literal that looks like {% ... %} would be evaluated
          [BreakerField.KEY]: expr(keyJsonata(key)),
          ...(this.request.period ? { [BreakerField.PERIOD]: expr(js(period)) } : {}),
          ...(this.request.at ? { [BreakerField.AT]: expr('$states.context.State.EnteredTime') } : {}),
        },
      };
    }
    return {
      Resource: resource,
      Parameters: {
        ...fields,
        ...(key.startsWith('$') ? { [`${BreakerField.KEY}.$`]: `States.Format('{}', ${key})` } : { [BreakerField.KEY]: key }),
        ...(this.request.period ? { [`${BreakerField.PERIOD}.$`]: period } : {}),
        ...(this.request.at ? { [`${BreakerField.AT}.$`]: '$$.State.EnteredTime' } : {}),
      },
    };
  }
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
    retryDynamoDbCall(this);
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const r = lang(this, topLevelQueryLanguage, this.w);
    const json = super.toStateJson(sfn.QueryLanguage.JSON_PATH) as Record<string, any>;
    if (r.lang !== JSONATA) return json;
    this.checkTaskKeepsInput();
    const { Parameters, ResultSelector, ResultPath, ...rest } = json;
    const name = this.w.breaker.breakerName;
    return {
      ...jsonataCatches(this, rest),
      ...r.marker,
      Arguments: {
        TableName: Parameters.TableName,
        Key: { pk: { S: expr(`${JSON.stringify(`${name}#breaker#`)} & ${keyJsonata(this.w.key)}`) } },
        ConsistentRead: true,
      },
      Output: expr(mergeAt(this, this.w.resultPath, '{"read": $states.result, "now": $states.context.State.EnteredTime}')),
    };
  }

  /** In JSONata the task's Output replaces the data: it must merge its result into `$states.input`. */
  private checkTaskKeepsInput(): void {
    const task = this.w.task;
    if (!task) return;
    const json = task.toStateJson(JSONATA) as Record<string, unknown>;
    const field = this.w.resultPath.split('.')[1];
    const keeps = typeof json.Output === 'string' && /^\{%\s*\$merge\(\[\s*\$states\.input\s*,/.test(json.Output)
      && !new RegExp(`["'\`]${field}["'\`]\s*:`).test(json.Output);
    if (!keeps) {
      fail(this, `in a JSONata state machine the protected task ${task.node.path} must keep its input (the breaker reads whether the call was a probe from it): `
        + `give it outputs: '{% $merge([$states.input, {"result": $states.result}]) %}' (not writing "${field}"), got ${json.Output === undefined ? 'no Output' : JSON.stringify(json.Output)}`);
    }
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

/** "The execution is an elected probe", in both languages. */
function probeRule(rp: string): [sfn.Condition, string] {
  const probe = `${rp}.elected.${BreakerResultField.PROBE}`;
  return [sfn.Condition.and(sfn.Condition.isPresent(probe), sfn.Condition.booleanEquals(probe, true)), `${js(probe)} = true`];
}

/**
 * A call of the breaker function that never fails the execution: its own errors go to `then`. A probe's verdict
 * (`endsProbe`) replaces the election, answer or error alike, so the execution is no longer taken for a probe.
 */
function record(scope: Construct, name: string, w: BreakerWiring, op: string, probe: boolean, then: sfn.IChainable, endsProbe = false): sfn.State {
  const at = endsProbe ? `${w.resultPath}.elected` : undefined;
  // a probe's verdict names the period it was elected in (a probe of an earlier period is not this one's)
  const t = new BreakerCall(scope, name, w, { op, probe, period: probe }, { resultPath: at ?? sfn.JsonPath.DISCARD });
  t.addCatch(then, { errors: [sfn.Errors.ALL], resultPath: at ?? `${w.resultPath}.recordError` });
  t.next(then);
  return t;
}

/**
 * check → closed (or no item): `proceed`; half-open with room, or open past its cooldown: elect (the function) →
 * elected: `proceed`, else short-circuited; open with its cooldown ahead: short-circuited. A short-circuited execution
 * has `<rp>.open` = { cause, openedAt, retryAfter } and goes to `onOpen`. Returns the check (the gate's first state)
 * and the election.
 */
export function breakerGate(scope: Construct, id: string, w: BreakerWiring, proceed: sfn.IChainable, onOpen: sfn.IChainable):
{ check: sfn.TaskStateBase; elect: sfn.TaskStateBase } {
  const rp = w.resultPath;
  const name = w.breaker.breakerName;
  const item = `${rp}.read.Item`;
  const attr = (a: string, type = 'S') => `${item}.${a}.${type}`;
  const cause = (at: string, until: string) =>
    `States.Format('circuit breaker {} is open for key {} (opened {}): not called, retry after {}', ${intrinsicString(name)}, ${keyArgument(w.key)}, ${at}, ${until})`;
  const causeJsonata = (at: string, until: string) =>
    `'circuit breaker ' & ${JSON.stringify(name)} & ' is open for key ' & ${keyJsonata(w.key)} & ' (opened ' & ${js(at)} & '): not called, retry after ' & ${js(until)}`;
  const openData = (at: string, until: string) => ({
    jsonPath: { 'cause.$': cause(at, until), 'openedAt.$': at, 'retryAfter.$': until },
    jsonata: { cause: causeJsonata(at, until), openedAt: js(at), retryAfter: js(until) },
  });
  const open = new BreakerPass(scope, `${id} Open`, w, openData(attr(BreakerItem.OPENED_AT), attr(BreakerItem.RETRY_AFTER)), `${rp}.open`);
  open.next(onOpen);
  const elected = `${rp}.elected`;
  const notElected = new BreakerPass(scope, `${id} Not Elected`, w,
    openData(`${elected}.${BreakerResultField.OPENED_AT}`, `${elected}.${BreakerResultField.UNTIL}`), `${rp}.open`);
  notElected.next(onOpen);
  const elect = new BreakerCall(scope, `${id} Elect`, w, { op: BreakerOp.ELECT, at: true }, { resultPath: elected });
  const call = `${elected}.${BreakerResultField.CALL}`;
  elect.next(new BreakerChoice(scope, `${id} Elected`, w)
    .whenBoth(sfn.Condition.booleanEquals(call, true), `${js(call)} = true`, proceed)
    .otherwise(notElected));
  const status = attr(BreakerItem.STATUS);
  const probes = attr(BreakerItem.PROBES, 'N');
  const halfWithRoom = Array.from({ length: w.breaker.halfOpenProbes }, (_, n) => sfn.Condition.stringEquals(probes, String(n)));
  const route = new BreakerChoice(scope, `${id} Closed`, w)
    .whenBoth(sfn.Condition.or(sfn.Condition.not(sfn.Condition.isPresent(item)), sfn.Condition.stringEquals(status, 'closed')),
      `$not($exists(${js(item)})) or ${js(status)} = 'closed'`, proceed)
    .whenBoth(sfn.Condition.and(sfn.Condition.stringEquals(status, 'half'), halfWithRoom.length === 1 ? halfWithRoom[0] : sfn.Condition.or(...halfWithRoom)),
      `${js(status)} = 'half' and $number(${js(probes)}) < ${w.breaker.halfOpenProbes}`, elect)
    .whenBoth(sfn.Condition.timestampLessThanJsonPath(`${rp}.now`, attr(BreakerItem.UNTIL)),
      `$toMillis(${js(`${rp}.now`)}) < $toMillis(${js(attr(BreakerItem.UNTIL))})`, open);
  route.otherwise(elect);
  const check = new BreakerCheck(scope, `${id} Check`, w);
  check.next(route);
  return { check, elect };
}

/** The default short-circuit: fail with `CircuitOpen`, the cause from `<rp>.open`. */
export function circuitOpenFail(scope: Construct, id: string, w: BreakerWiring): sfn.State {
  return new BreakerFail(scope, `${id} Circuit Open`, w, { error: ThrottleErrors.CIRCUIT_OPEN, causePath: `${w.resultPath}.open.cause` });
}

/** Waits until the breaker's retry-after, then goes on (to the check: a CircuitOpen the retry policy retries). */
export function waitWhileOpen(scope: Construct, id: string, w: BreakerWiring): sfn.Wait {
  return new BreakerWait(scope, `${id} Wait While Open`, w, `${w.resultPath}.open.retryAfter`);
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
  const [probe, probeJsonata] = probeRule(w.resultPath);
  const probeChoice = new BreakerChoice(scope, `${id} Failed Probe`, w)
    .whenBoth(probe, probeJsonata, record(scope, `${id} Probe Failed`, w, BreakerOp.FAILURE, true, counted, true))
    .otherwise(record(scope, `${id} Record Failure`, w, BreakerOp.FAILURE, false, counted));
  const errorName = `${errorPath}.Error`;
  const conditions = w.breaker.failureErrors.map((e) => sfn.Condition.stringEquals(errorName, e));
  return new BreakerChoice(scope, `${id} Counts`, w)
    .whenBoth(conditions.length === 1 ? conditions[0] : sfn.Condition.or(...conditions), `${js(errorName)} in ${JSON.stringify(w.breaker.failureErrors)}`, probeChoice)
    .whenBoth(probe, probeJsonata, record(scope, `${id} Release Probe`, w, BreakerOp.RELEASE, true, uncounted, true))
    .otherwise(uncounted);
}

/** After a success: a probe's closes the breaker (one write); any other call writes nothing. Returns the first state. */
export function successRecorder(scope: Construct, id: string, w: BreakerWiring, then: sfn.IChainable): sfn.State {
  const [probe, probeJsonata] = probeRule(w.resultPath);
  const choice = new BreakerChoice(scope, `${id} Was Probe`, w)
    .whenBoth(probe, probeJsonata, record(scope, `${id} Probe Succeeded`, w, BreakerOp.SUCCESS, true, then, true));
  if (w.breaker.failureRateThreshold !== undefined) {
    // the rate rule counts successes within a failure window (the item read before the call says until when)
    const windowEnd = `${w.resultPath}.read.Item.${BreakerItem.WINDOW_END}.S`;
    const now = `${w.resultPath}.now`;
    choice.whenBoth(sfn.Condition.and(sfn.Condition.isPresent(windowEnd), sfn.Condition.timestampLessThanJsonPath(now, windowEnd)),
      `$exists(${js(windowEnd)}) and $toMillis(${js(now)}) < $toMillis(${js(windowEnd)})`,
      record(scope, `${id} Record Success`, w, BreakerOp.SUCCESS, false, then));
  }
  return choice.otherwise(then);
}

/** Fails with the error kept at `errorPath` ({ Error, Cause? }: a timeout has no Cause). */
export function rethrow(scope: Construct, id: string, w: BreakerWiring, errorPath: string): sfn.State {
  return new BreakerChoice(scope, `${id} Has Cause`, w)
    .whenBoth(sfn.Condition.isPresent(`${errorPath}.Cause`), `$exists(${js(`${errorPath}.Cause`)})`,
      new BreakerFail(scope, `${id} Failed`, w, { errorPath: `${errorPath}.Error`, causePath: `${errorPath}.Cause` }))
    .otherwise(new BreakerFail(scope, `${id} Failed Without Cause`, w, { errorPath: `${errorPath}.Error` }));
}

/**
 * What a protected task must not do with its data: drop it (OutputPath) or write over the breaker's result path
 * (ResultPath at, above or below it). The probe flag is read from there after the task.
 */
export function checkTaskKeepsBreakerData(owner: IConstruct, task: sfn.State, rp: string, hint: string): void {
  const json = task.toStateJson() as Record<string, unknown>;
  // a JSONata task keeps its input through its Output: checked where it renders (BreakerCheck)
  if (json.QueryLanguage === 'JSONata') return;
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
      if (e.startsWith('ApiGateway.')) return kind === 'apigateway';
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

/** Whether `state` is one of the breaker's own (its check and its function's calls: no downstream is called). */
export function isBreakerState(state: unknown): boolean {
  return state instanceof BreakerCheck || state instanceof BreakerCall;
}
