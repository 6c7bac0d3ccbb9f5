import { Annotations, Duration } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { AcquireMode, AcquireOptions } from './acquire';
import { ICircuitBreaker } from './circuit-breaker';
import { ThrottleErrors } from './errors';
import { IRateLimiter } from './i-rate-limiter';
import { acquireStates, backoffStates, consumedAmount, consumedAmounts, isMultiLimit, settleStates } from './private/acquire-task';
import {
  breakerGate, BreakerWiring, checkedBreakerKey, checkedResultPath, checkTaskKeepsBreakerData,
  circuitOpenFail, failureRecorder, successRecorder, waitWhileOpen, warnBreakerUse,
} from './private/breaker-states';
import { DEFAULT_KEY, ERROR_FIELD } from './private/contract';
import { catchesInTaskLanguage, languageValidation } from './private/query-language';
import { fail } from './private/validation';
import { RetryPolicy } from './retry-policy';

/**
 * Properties of a `RateLimitedTask`.
 */
export interface RateLimitedTaskProps {
  /** The limiter every call of the task takes a token from. */
  readonly limiter: IRateLimiter;

  /**
   * The protected task (LambdaInvoke, CallAwsService, HttpInvoke, SqsSendMessage, …). It must have no `Retry` of
   * its own: Step Functions would run it again without a token (synth fails naming it). A `LambdaInvoke` adds one
   * by default: give it `retryOnServiceExceptions: false`; `retry` retries those errors, each call with a token.
   */
  readonly task: sfn.TaskStateBase;

  /**
   * What each call takes from `limiter`: the bucket (`key`), how much (`consume`), and RESERVE (wait for the slot:
   * one acquire call, at most one Wait state) or TRY (take a free token or retry `RateLimitExceeded` with backoff
   * and full jitter).
   *
   * @default - one request from the 'default' bucket, RESERVE
   */
  readonly acquire?: AcquireOptions;

  /**
   * Which task errors are retried, how often and how long apart. Every retry acquires a token again: the error
   * goes to a backoff step (the function draws the delay, exponential with full jitter), a Wait, then acquire,
   * so the backoff comes first and the token is taken for the moment the call really happens.
   *
   * @default RetryPolicy.throttling() - the throttling errors of the task's kind (see `ThrottlingRetryOptions.errors`)
   */
  readonly retry?: RetryPolicy;

  /**
   * Where the acquire result (`waitSeconds`, `waitMs`, `notBefore`, `shard`) is put in the task's input: a path
   * like `$.acquired` (the input must then be a JSON object; any other input fails the acquire with
   * `InvalidAcquireRequest` before a token is taken), or `JsonPath.DISCARD`.
   *
   * @default - discarded: the task sees its original input
   */
  readonly resultPath?: string;

  /**
   * The query language of the state machine these states render into, needed only when the RateLimitedTask is
   * nested in a Parallel or Map of yours in a JSONata machine (aws-cdk-lib renders nested states without the
   * machine's language; synth fails naming the states if they rendered as JSONPath there). Never set it to JSONPath
   * in a JSONata machine.
   *
   * @default - the state machine's, decided when it is rendered
   */
  readonly queryLanguage?: sfn.QueryLanguage;

  /**
   * With a limiter of several limits: after the task succeeds, what it really used of each dimension
   * (`{ tokens: JsonPath.numberAt('$.result.usage.totalTokens') }`), settled against what the acquire took in one
   * write — the unused part given back, an overrun taken. A dimension left out is settled at what was taken. When
   * the task fails with an error the `retry` policy retries (a throttling error: the call did not happen), the whole
   * estimate is given back before the retry acquires again. Needs `resultPath` (where the acquire's result, with what
   * it took, stays in the data until the settle) and a task that keeps its input (a task `resultPath` such as
   * `$.result`). JSONPath state machines.
   *
   * @default - nothing settled: what the acquire took counts in full
   */
  readonly settle?: SettleOptions;

  /**
   * A circuit breaker in front of the call: checked first (one DynamoDB GetItem, no Lambda while closed), so no
   * token is acquired while it is open; the task's failures of the breaker's `failureErrors` are recorded before the
   * retry policy sees them; every retry checks the breaker again. While open the execution fails with `CircuitOpen`
   * (or goes to `fallback`) — unless `retry` lists `ThrottleErrors.CIRCUIT_OPEN`: then it waits until the breaker's
   * retry-after and checks again, without using an attempt. The task must keep its input (a task `resultPath`; in a
   * JSONata machine an `outputs` that merges into `$states.input`).
   *
   * @default - no circuit breaker
   */
  readonly circuitBreaker?: CircuitBreakerOptions;
}

/**
 * A circuit breaker on a `RateLimitedTask` (or a `ThrottledMap`'s items).
 */
export interface CircuitBreakerOptions {
  /** The breaker. */
  readonly breaker: ICircuitBreaker;
  /**
   * The breaker key (one breaker state per key): a literal, or a simple JSONPath (`$.partner`; a number there is
   * formatted as a string).
   *
   * @default 'default'
   */
  readonly key?: string;
  /**
   * Where to go instead of failing with `CircuitOpen` while the breaker is open (the task is not called; the
   * breaker's data at `resultPath` holds `open`: { cause, openedAt, retryAfter }).
   *
   * @default - fail with `CircuitOpen`
   */
  readonly fallback?: sfn.IChainable;
  /**
   * Where the breaker keeps its data in the execution's data (the item it read, the time, the election).
   *
   * @default '$.circuit'
   */
  readonly resultPath?: string;
}

/**
 * What a `RateLimitedTask` settles after its task: what the call really used.
 */
export interface SettleOptions {
  /** What the call used of each dimension: numbers, or JSONPath numbers read from the task's output. */
  readonly consume: { [dimension: string]: number };
}

/**
 * Runs a task under a `RateLimiter`: acquire → Wait (whole seconds, only what is left) → task. Every call of the
 * task, retries included, holds a token:
 * - the task's only `Catch` is `States.ALL` → `<id> Backoff`, so the task never ends an execution: a redrive
 *   restarts at Backoff (or Acquire), never at the task. Backoff retries an error of the policy (backoff → Wait →
 *   acquire), raises any other error again under its own name (for `addCatch`), and gives a redriven execution a
 *   fresh retry budget (`$$.Execution.RedriveCount`);
 * - the task may have no `Retry` of its own (checked at synth, also for retriers added after wrapping).
 *
 * On a retry the task's input carries one extra field, `cdkSfnThrottleAttempt`: `{ task, attempt, redrive }`,
 * owned by this RateLimitedTask (a second one downstream starts its own count).
 */
export class RateLimitedTask extends sfn.StateMachineFragment {
  public readonly startState: sfn.State;
  public readonly endStates: sfn.INextable[];
  /** The state that settles what the task used, when `settle` is given. */
  public readonly settleState?: sfn.TaskStateBase;
  /** The acquire state (catches added with `addCatch` apply to it too). */
  public readonly acquireState: sfn.TaskStateBase;
  /** The backoff state: every error of the task passes through it. */
  public readonly backoffState: sfn.TaskStateBase;
  /** The protected task. */
  public readonly task: sfn.TaskStateBase;
  /** The retry policy in force. */
  public readonly retry: RetryPolicy;
  /** The error names retried (each retry with a token). */
  public readonly retryErrors: string[];
  /** The limiter every call takes from. */
  public readonly limiter: IRateLimiter;
  /** What each call takes from the limiter, defaults filled in. */
  public readonly acquireOptions: AcquireOptions;
  private readonly catchers: sfn.TaskStateBase[];
  /** With a circuit breaker: where the task's Catch goes (it records a counted failure, then the backoff step). */
  private breakerRecorder?: sfn.State;

  constructor(scope: Construct, id: string, props: RateLimitedTaskProps) {
    super(scope, id);
    this.retry = props.retry ?? RetryPolicy.throttling();
    this.retry._check(this);
    this.retryErrors = this.retry.errorsFor(props.task);
    this.limiter = props.limiter;
    const given = props.acquire ?? {};
    const mode = given.mode ?? AcquireMode.RESERVE;
    this.acquireOptions = {
      key: given.key ?? DEFAULT_KEY,
      consume: isMultiLimit(props.limiter)
        ? consumedAmounts(this, props.limiter, given)
        : { [props.limiter.limits[0].dimension]: consumedAmount(this, props.limiter, given) },
      mode,
      priority: given.priority,
    };
    const backoffName = `${id} Backoff`;
    const { acquire, wait } = acquireStates(this, id, props.limiter, {
      ...this.acquireOptions,
      resultPath: props.resultPath,
      resultInInput: true,
      owner: backoffName,
      queryLanguage: props.queryLanguage,
    });
    if (mode === AcquireMode.TRY) {
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
    // Every error of the task passes the backoff step: retried with a token, or raised again from there.
    const hint = { queryLanguage: props.queryLanguage };
    const settleField = props.settle ? checkedSettle(this, props) : undefined;
    const breaker = props.circuitBreaker ? breakerWiring(this, props) : undefined;
    let first: sfn.State = acquire;
    const breakerStates: sfn.TaskStateBase[] = [];
    let catcher: { addCatch(handler: sfn.IChainable, p?: sfn.CatchProps): unknown } = props.task;
    if (breaker) {
      // check → acquire; the task's failures of the breaker's errors are recorded on their way to the backoff step;
      // a retry goes back to the check
      const waitOpen = this.retry.retries && this.retryErrors.includes(ThrottleErrors.CIRCUIT_OPEN);
      const onOpen: sfn.IChainable = props.circuitBreaker!.fallback
        ?? (waitOpen ? waitWhileOpen(this, id, breaker) : circuitOpenFail(this, id, breaker));
      const gate = breakerGate(this, id, breaker, acquire, onOpen);
      first = gate.check;
      breakerStates.push(gate.check, gate.elect);
      if (waitOpen && !props.circuitBreaker!.fallback) (onOpen as sfn.Wait).next(first);
      catcher = {
        addCatch: (handler, p) => {
          this.breakerRecorder = failureRecorder(this, id, breaker, `$.${ERROR_FIELD}`, handler, handler);
          return props.task.addCatch(this.breakerRecorder, p);
        },
      };
    }
    const backoff = backoffStates(this, backoffName, props.limiter, this.retry, this.retryErrors, catcher, first, hint, settleField,
      this.acquireOptions.key);
    // The backoff catch is rendered in the task's own language (JSONata: Output, not ResultPath).
    catchesInTaskLanguage(props.task);
    // the breaker's check and election too: a table that cannot be read goes to the caller's catch
    this.catchers = [...breakerStates, acquire, backoff];
    this.acquireState = acquire;
    this.backoffState = backoff;
    this.task = props.task;
    this.startState = first;
    this.endStates = [props.task];
    if (props.settle && settleField) {
      this.settleState = settleStates(this, `${id} Settle`, props.limiter, settleField, props.settle);
      this.endStates = [this.settleState];
      // its errors reach addCatch too
      this.catchers.push(this.settleState);
    }
    // after the task: a probe's success closes the breaker (before a settle, whose failure must not leave it
    // half-open; any other success writes nothing), then the settle
    if (breaker) {
      const last: sfn.INextable & sfn.IChainable = this.settleState ?? new sfn.Pass(this, `${id} Done`);
      props.task.next(successRecorder(this, id, breaker, last));
      this.endStates = [last];
    } else if (this.settleState) {
      props.task.next(this.settleState);
    }
    this.node.addValidation({ validate: () => this.validateTask() });
    const ownStates = () => this.node.findAll().filter((c): c is sfn.State => c instanceof sfn.State);
    this.node.addValidation(languageValidation(this, () => [...ownStates(), props.task]));
  }

  /**
   * Routes errors of the acquire call and of the task (non-retryable ones, raised again by the backoff state under
   * their own name, and `RetriesExhausted` once `retry` is used up) to `handler`.
   */
  public addCatch(handler: sfn.IChainable, props: sfn.CatchProps = {}): RateLimitedTask {
    for (const state of this.catchers) state.addCatch(handler, props);
    return this;
  }

  /** The task may not call its downstream again on its own, nor leave the execution past the backoff state. */
  private validateTask(): string[] {
    const errors: string[] = [];
    const json = this.task.toStateJson() as { Retry?: { ErrorEquals: string[] }[]; Catch?: { ErrorEquals: string[]; Next: string }[] };
    const retried = (json.Retry ?? []).flatMap((r) => r.ErrorEquals);
    if (retried.length > 0) {
      const overlap = retried.filter((e) => this.retryErrors.includes(e));
      errors.push(`task "${this.task.stateId}" of RateLimitedTask ${this.node.path} has its own Retry on ${retried.join(', ')}: `
        + 'Step Functions would call it again without a token'
        + (overlap.length > 0 ? ` (${overlap.join(', ')} are already retried by the RetryPolicy, each call with a token)` : '')
        + '. Remove the task\'s Retry (LambdaInvoke: retryOnServiceExceptions: false) and put the errors in `retry` (RetryPolicy.throttling({ errors }))');
    }
    const target = (this.breakerRecorder ?? this.backoffState).stateId;
    const foreign = (json.Catch ?? []).filter((c) => c.Next !== target);
    if (foreign.length > 0) {
      errors.push(`task "${this.task.stateId}" of RateLimitedTask ${this.node.path} has its own Catch (${foreign.map((c) => `${c.ErrorEquals.join(', ')} → ${c.Next}`).join('; ')}): `
        + 'every error of the task must pass the backoff state, which retries it with a token or raises it again. Use RateLimitedTask.addCatch()');
    }
    return errors;
  }
}

function breakerWiring(scope: Construct, props: RateLimitedTaskProps): BreakerWiring {
  const cb = props.circuitBreaker!;
  const resultPath = checkedResultPath(scope, cb.resultPath);
  const w: BreakerWiring = {
    breaker: cb.breaker,
    key: checkedBreakerKey(scope, 'circuitBreaker.key', cb.key, [resultPath, props.resultPath, (props.task.toStateJson() as { ResultPath?: string }).ResultPath]),
    resultPath,
    hint: { queryLanguage: props.queryLanguage },
    task: props.task,
  };
  checkTaskKeepsBreakerData(scope, props.task, w.resultPath, 'the circuit breaker reads whether the call was a probe from the data after it');
  warnBreakerUse(scope, cb.breaker, props.task, props.retry ?? RetryPolicy.throttling());
  // an elected probe waits for its token before it calls: a wait longer than the cooldown and it is taken for lost
  const mode = props.acquire?.mode ?? AcquireMode.RESERVE;
  const cooldown = cb.breaker.cooldown.toSeconds();
  if (mode === AcquireMode.RESERVE && props.limiter.maxWait.toSeconds() > cooldown) {
    Annotations.of(scope).addWarningV2('cdk-sfn-throttle:probeOutlivesCooldown',
      `limiter ${props.limiter.limiterName} may keep a call waiting for its token up to maxWait (${props.limiter.maxWait.toSeconds()} s), longer than the breaker's `
      + `cooldown (${cooldown} s): a probe still waiting is taken for lost and another execution is elected beside it. Lengthen the cooldown or shorten maxWait`);
  }
  const rp = props.resultPath;
  if (rp !== undefined && rp !== sfn.JsonPath.DISCARD && (rp === '$' || rp === w.resultPath || rp.startsWith(`${w.resultPath}.`) || w.resultPath.startsWith(`${rp}.`))) {
    fail(scope, `resultPath ${rp} overlaps circuitBreaker.resultPath ${w.resultPath}: the acquire's result would overwrite the breaker's data`);
  }
  return w;
}

/** Checks `settle` against the limiter and the task's props; returns the dotted field the acquire result is kept at. */
function checkedSettle(scope: Construct, props: RateLimitedTaskProps): string {
  const l = props.limiter;
  if (l.keyLimits) {
    fail(scope, `settle is not supported with a limiter of keyLimits yet (${l.limiterName}): its per-key admissions are not settled`);
  }
  if (!isMultiLimit(l)) {
    fail(scope, `settle needs a limiter of several limits (limits: [Limit.perMinute(...), Limit.perMinute(..., { dimension: 'tokens' })]), got ${l.limiterName} with one (${l.limits[0].dimension})`);
  }
  const dims = l.limits.map((x) => x.dimension);
  const foreign = Object.keys(props.settle!.consume).filter((d) => !dims.includes(d));
  if (foreign.length > 0 || Object.keys(props.settle!.consume).length === 0) {
    fail(scope, `settle.consume must name dimensions of the limiter (${dims.join(', ')}), got ${JSON.stringify(props.settle!.consume)}`);
  }
  const rp = props.resultPath;
  if (rp === undefined || rp === sfn.JsonPath.DISCARD || !/^\$\.([A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*)$/.test(rp)) {
    fail(scope, `settle needs resultPath, a simple path such as $.acquired where the acquire's result (what it took) stays for the settle, got ${rp === undefined ? 'none' : rp}`);
  }
  return rp.slice(2);
}
