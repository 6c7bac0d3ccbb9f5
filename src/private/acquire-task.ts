import { Annotations, Duration, Token } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { AcquireMode, AcquireStateOptions, Priority } from '../acquire';
import { ThrottleErrors } from '../errors';
import type { IRateLimiter } from '../i-rate-limiter';
import { AcquireField as F, AcquireResultField as R, BACKOFF_PHASE, DEFAULT_KEY, ERROR_FIELD, LIBRARY_ERRORS, RetryPayload, SETTLE_PHASE } from './contract';
import type { RetryPolicy } from '../retry-policy';
import { argumentsOf, expr, isJsonataExpression, jsonataCatches, JSONATA, mergeAt, pathOfToken, rendering, userExpression } from './query-language';
import { LanguageHint, LanguageWait } from './states';
import { checkRange, fail } from './validation';

/** Options of the acquire states, beyond `AcquireOptions`. */
export interface AcquireStatesOptions extends AcquireStateOptions, LanguageHint {
  /** How the construct's props name the options in messages: `acquire.` (the default) or `` for limiter.acquire(). */
  readonly prop?: string;
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
export function retryPayload(retry: RetryPolicy, errors: string[]): RetryPayload {
  return {
    maxAttempts: retry.maxAttempts,
    intervalMs: retry.interval.toMilliseconds(),
    backoffRate: retry.backoffRate,
    maxDelayMs: retry.maxDelay.toMilliseconds(),
    jitter: retry.jitter,
    errors,
  };
}

/** `<field>.$`: the field read from a path at run time. */
const fromPath = (field: string) => `${field}.$`;

/**
 * The backoff step every error of a protected unit (a RateLimitedTask's task, a ThrottledMap item) goes through:
 * it counts the attempt and draws the backoff (full jitter, in the function), then a Wait, then `next` (the unit's
 * acquire) — or raises the error again, from a state that is not the unit, so neither a Catch nor a redrive can
 * reach the unit without an acquire. `catcher` gets the only Catch (`States.ALL`).
 */
export function backoffStates(
  scope: Construct,
  name: string,
  limiter: IRateLimiter,
  retry: RetryPolicy,
  errors: string[],
  catcher: { addCatch(handler: sfn.IChainable, props?: sfn.CatchProps): unknown },
  next: sfn.IChainable,
  hint: LanguageHint = {},
  settleField?: string,
  key?: string,
): AcquireTask {
  // An adaptive limiter: the retried errors of the task (not the library's own) are throttling signals for the key
  const signals = limiter.adaptive && retry.retries ? errors.filter((e) => !LIBRARY_ERRORS.has(e)) : [];
  const backoff = new AcquireTask(scope, name, limiter.acquireFunction, {
    [F.PHASE]: BACKOFF_PHASE,
    [F.TASK]: name,
    [fromPath(F.INPUT)]: '$',
    [F.RETRY]: retryPayload(retry, retry.retries ? errors : []),
    [fromPath(F.REDRIVE_COUNT)]: '$$.Execution.RedriveCount',
    // settling: where the acquire result is, so a retried call (it did not happen) gives back all it took
    ...(settleField !== undefined ? { [F.RESULT_FIELD]: settleField } : {}),
    ...(signals.length > 0 ? { [F.SIGNALS]: signals } : {}),
  }, {}, {
    hint: settleField !== undefined ? jsonPathOnly(scope, hint) : hint,
    key: signals.length > 0 ? pathOfToken(key ?? DEFAULT_KEY) : undefined,
    owner: scope,
  });
  const wait = new LanguageWait(scope, `${name} Wait`, {
    secondsPath: `$.${R.WAIT_SECONDS}`,
    outputPath: `$.${R.INPUT}`,
    queryLanguage: hint.queryLanguage,
  });
  catcher.addCatch(backoff, { errors: [sfn.Errors.ALL], resultPath: `$.${ERROR_FIELD}` });
  backoff.next(wait).next(next);
  return backoff;
}

/**
 * The settle call after a RateLimitedTask's task: what the acquire took (kept at `field` of the data) against what the
 * call used. Its result is discarded: the next state sees the task's output.
 */
export function settleStates(scope: Construct, name: string, limiter: IRateLimiter, field: string,
  settle: { consume: { [dimension: string]: number } }): AcquireTask {
  return new AcquireTask(scope, name, limiter.acquireFunction, {
    [F.PHASE]: SETTLE_PHASE,
    [fromPath(F.KEY)]: `$.${field}.key`,
    [fromPath(F.CONSUME)]: `$.${field}.taken`,
    [fromPath(F.TATS)]: `$.${field}.tats`,
    [F.USED]: { ...settle.consume },
  }, { resultPath: sfn.JsonPath.DISCARD }, { hint: jsonPathOnly(scope, {}) });
}

/** Settling renders in JSONPath machines only (for now): a JSONata machine fails the synth naming the construct. */
function jsonPathOnly(scope: Construct, hint: LanguageHint): LanguageHint {
  return {
    ...hint,
    onRender: (lang) => {
      if (lang === JSONATA) fail(scope, 'settle renders in JSONPath state machines only, this one is JSONata: settle in a JSONPath machine, or leave settle out');
      hint.onRender?.(lang);
    },
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
  const prop = options.prop ?? 'acquire.';
  const multi = isMultiLimit(limiter);
  const tokens = multi ? 1 : consumedAmount(scope, limiter, options, prop);
  // a JsonPath token (JsonPath.stringAt('$.tenant')) is its path
  const key = pathOfToken(options.key ?? DEFAULT_KEY);
  if (!key.startsWith('$') && !Token.isUnresolved(key) && (key.length < 1 || key.length > 512)) {
    fail(scope, `${prop}key must be a JSONPath or a literal of 1 to 512 characters, got ${JSON.stringify(key)}`);
  }
  const resultPath = options.resultPath === sfn.JsonPath.DISCARD ? undefined : options.resultPath;
  const echo = resultPath === undefined || options.resultInInput === true;
  if (echo && resultPath !== undefined && !/^\$\.([A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*)$/.test(resultPath)) {
    fail(scope, `resultPath must be a simple path like $.acquired, or JsonPath.DISCARD, got ${resultPath}`);
  }
  const payload: Record<string, unknown> = multi
    ? { [F.CONSUME]: consumedAmounts(scope, limiter, options, prop), [F.MODE]: options.mode ?? AcquireMode.RESERVE }
    : { [F.TOKENS]: tokens, [F.MODE]: options.mode ?? AcquireMode.RESERVE };
  if (multi && options.countPath !== undefined) {
    fail(scope, `a batch takes acquire.consume per item, which a limiter of several limits (${limiter.limiterName}: ${limiter.limits.map((l) => l.dimension).join(', ')}) does not do yet: give the batch's total in acquire.consume of an item processor of your own`);
  }
  if (options.priority !== undefined) {
    if (multi) fail(scope, `${prop}priority needs a limiter of one limit, got ${limiter.limiterName} with ${limiter.keyLimits ? 'keyLimits' : `${limiter.limits.length} limits`}: priorities there are not supported yet`);
    payload[F.PRIORITY] = options.priority;
    const shardBurst = Math.floor(limiter.burst / limiter.shards);
    if (options.priority !== Priority.HIGH && limiter.priorityReserve * shardBurst < 1) {
      Annotations.of(scope).addWarningV2('cdk-sfn-throttle:priorityReserveBelowOneToken',
        `${prop}priority ${options.priority}: priorityReserve ${limiter.priorityReserve} of ${shardBurst} tokens per shard (burst ${limiter.burst} / shards ${limiter.shards}) `
        + 'keeps less than one token free for the classes above: they wait up to an emission interval behind this class. Raise burst (or priorityReserve).');
    }
  }
  if (options.countPath !== undefined) payload[fromPath(F.COUNT)] = options.countPath;
  if (echo) payload[fromPath(F.INPUT)] = '$';
  if (echo && resultPath !== undefined) payload[F.RESULT_FIELD] = resultPath.slice(2);
  if (options.owner !== undefined) {
    payload[F.TASK] = options.owner;
    payload[fromPath(F.REDRIVE_COUNT)] = '$$.Execution.RedriveCount';
  }
  // No ResultPath means "$": the result (with the echoed input) replaces the state's data.
  const hint = { queryLanguage: options.queryLanguage, onRender: options.onRender };
  const acquire = new AcquireTask(scope, `${id} Acquire`, limiter.acquireFunction, payload, { resultPath: echo ? undefined : resultPath }, { key, prop, hint, owner: scope });
  const wait = new LanguageWait(scope, `${id} Wait`, {
    secondsPath: `${echo ? '$' : resultPath}.${R.WAIT_SECONDS}`,
    outputPath: echo ? `$.${R.INPUT}` : undefined,
    queryLanguage: options.queryLanguage,
  });
  const refusedInReserve = (limiter.keyLimits?.length ?? 0) > 0 || limiter.adaptive !== undefined
    || (options.priority !== undefined && options.priority !== Priority.HIGH);
  if (refusedInReserve && (options.mode ?? AcquireMode.RESERVE) === AcquireMode.RESERVE) {
    // refused rather than queued: a key over its own limit (or its fair share) ahead of the other keys, a class below
    // HIGH ahead of the classes above it, a slot beyond an adaptive limiter's maxReservation. It comes back within
    // about a second (TRY mode has its own retry)
    acquire.addRetry({
      errors: [ThrottleErrors.RATE_LIMIT_EXCEEDED],
      interval: Duration.seconds(1),
      backoffRate: 1,
      maxAttempts: 1000,
      jitterStrategy: sfn.JitterType.FULL,
    });
  }
  acquire.next(wait);
  return { acquire, wait };
}

/**
 * The amount an acquire takes of the limiter's one limit: `consume[dimension]`, checked (every dimension named must
 * be the limiter's; an amount is 1 to floor(burst / shards), or a number read from the input at run time).
 */
export function consumedAmount(scope: Construct, limiter: IRateLimiter, options: { consume?: { [dimension: string]: number } }, prop = 'acquire.'): number {
  if (isMultiLimit(limiter)) {
    // several limits: the amounts are checked by consumedAmounts; this is the first dimension's (1 when not taken)
    const amounts = consumedAmounts(scope, limiter, options, prop);
    return amounts[limiter.limits[0].dimension] ?? 1;
  }
  const limit = limiter.limits[0];
  const consume = options.consume ?? { [limit.dimension]: 1 };
  const names = Object.keys(consume);
  const foreign = names.filter((d) => d !== limit.dimension);
  if (foreign.length > 0 || names.length === 0) {
    fail(scope, `${prop}consume must name the limiter's dimension (${limit.dimension}) and no other, got ${JSON.stringify(consume)}`);
  }
  const amount = consume[limit.dimension];
  const max = Math.floor(limiter.burst / limiter.shards);
  checkRange(scope, `${prop}consume.${limit.dimension}`, amount, { min: 1, max, integer: true, why: `floor(burst ${limiter.burst} / shards ${limiter.shards})` });
  return amount;
}

/**
 * The amounts an acquire takes of a limiter of several limits, checked: every dimension named is the limiter's; an
 * amount is 0 to the limit's burst, or a number read from the input at run time; at least one dimension taken.
 */
/**
 * Whether a limiter takes through the several-limit path (one item, one conditional write for every limit of an
 * acquire): several limits, or per-key limits under shared ones.
 */
export function isMultiLimit(limiter: Pick<IRateLimiter, 'limits' | 'keyLimits'>): boolean {
  return limiter.limits.length > 1 || (limiter.keyLimits?.length ?? 0) > 0;
}

export function consumedAmounts(scope: Construct, limiter: IRateLimiter, options: { consume?: { [dimension: string]: number } }, prop = 'acquire.'):
{ [dimension: string]: number } {
  const consume = options.consume ?? { [limiter.limits[0].dimension]: 1 };
  const dims = limiter.limits.map((l) => l.dimension);
  const foreign = Object.keys(consume).filter((d) => !dims.includes(d));
  if (foreign.length > 0 || Object.keys(consume).length === 0) {
    fail(scope, `${prop}consume must name dimensions of the limiter (${dims.join(', ')}), got ${JSON.stringify(consume)}`);
  }
  for (const [d, amount] of Object.entries(consume)) {
    const limit = limiter.limits.find((l) => l.dimension === d)!;
    const own = limiter.keyLimits?.find((l) => l.dimension === d);
    const max = Math.min(limit.burst, own?.burst ?? limit.burst);
    checkRange(scope, `${prop}consume.${d}`, amount, {
      min: 0,
      max,
      integer: true,
      why: own && own.burst < limit.burst ? `the ${d} key limit's burst (more can never be admitted)` : `the ${d} limit's burst (more can never be admitted)`,
    });
  }
  if (Object.values(consume).every((a) => !Token.isUnresolved(a) && a === 0)) {
    fail(scope, `${prop}consume must take something of a dimension, got ${JSON.stringify(consume)}`);
  }
  return { ...consume };
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
    private readonly options: { readonly key?: string; readonly prop?: string; readonly hint: LanguageHint; readonly owner?: Construct },
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

  /** JSONPath fields (`Parameters`, `ResultPath`) in a JSONPath machine; `Arguments` and `Output` in a JSONata one. */
  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const r = rendering(this, topLevelQueryLanguage, this.options.hint.queryLanguage);
    if (r.known) this.options.hint.onRender?.(r.lang);
    // _renderTask resolves the same language from the same inputs
    const json = super.toStateJson(topLevelQueryLanguage) as Record<string, any>;
    if (r.lang !== JSONATA) return json;
    const { ResultPath, OutputPath, InputPath, ...rest } = json;
    if (OutputPath !== undefined || InputPath !== undefined) fail(this, 'cannot render InputPath or OutputPath in JSONata');
    return { ...jsonataCatches(this, rest), ...r.marker, ...(ResultPath !== undefined ? { Output: expr(mergeAt(this, ResultPath, '$states.result')) } : {}) };
  }

  /** @internal */
  protected _renderTask(topLevelQueryLanguage?: sfn.QueryLanguage): any {
    const { lang, known } = rendering(this, topLevelQueryLanguage, this.options.hint.queryLanguage);
    // Without a known language (aws-cdk-lib renders a Distributed Map once without one, for its policies) the user's
    // key is rendered as written, unchecked.
    const key = this.options.key;
    const check = (value: string) => (known ? userExpression(this.options.owner ?? this, `${this.options.prop ?? 'acquire.'}key`, value, lang) : value);
    if (lang === JSONATA) {
      // The user's key: a JSONata expression or a literal, never a JSONPath here.
      const keyArg = key === undefined ? {} : { [F.KEY]: isJsonataExpression(key) || key.startsWith('$') ? check(key) : key };
      return { Resource: this.fn.functionArn, Arguments: { ...keyArg, ...argumentsOf(this, sfn.FieldUtils.renderObject(this.payload) ?? {}) } };
    }
    const keyParam = key === undefined ? {} : key.startsWith('$') ? { [fromPath(F.KEY)]: check(key) } : isJsonataExpression(key) ? { [F.KEY]: check(key) } : { [F.KEY]: key };
    return { Resource: this.fn.functionArn, Parameters: sfn.FieldUtils.renderObject({ ...keyParam, ...this.payload }) };
  }
}
