import { Annotations, Aspects, Duration, Fn, IAspect, Stack, Token, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct, IConstruct } from 'constructs';
import { AcquireMode, AcquireOptions } from './acquire';
import { ConcurrencyLimitedTask, IConcurrencyLimiter } from './concurrency-limiter';
import { ThrottleErrors } from './errors';
import { IRateLimiter } from './i-rate-limiter';
import { AcquireTask, acquireStates, backoffStates, consumedAmount, consumedAmounts, isMultiLimit } from './private/acquire-task';
import { BreakerPass, isBreakerState } from './private/breaker-states';
import { AcquireField, BACKOFF_PHASE, DEFAULT_KEY, ITEM_ERROR_FIELD } from './private/contract';
import { expr, holdsJsonata, isJsonataExpression, jsonataOf, languageValidation, pathOfToken, readsJsonPath, userExpression } from './private/query-language';
import { LanguageDistributedMap, LanguageMap, LanguageParallel, LanguagePass } from './private/states';
import { checkRange, fail } from './private/validation';
import { CircuitBreakerOptions, RateLimitedTask } from './rate-limited-task';
import { RetryPolicy } from './retry-policy';

/** Most iterations an inline Map runs at once, whatever MaxConcurrency says. */
const INLINE_MAX_CONCURRENCY = 40;
/** Most child executions a Distributed Map runs at once. */
const DISTRIBUTED_MAX_CONCURRENCY = 10_000;

/**
 * Options of `MapConcurrency.forThroughput()`.
 */
export interface ThroughputConcurrencyOptions {
  /** The item rate to sustain, items per second. Greater than 0. */
  readonly ratePerSecond: number;

  /** How long one item takes, end to end (p50 or p90 of the item processor). At least 1 ms. */
  readonly itemDuration: Duration;
}

/**
 * How many items a `ThrottledMap` processes at once. Checked by the map that uses it (errors name the map).
 */
export class MapConcurrency {
  /**
   * A fixed number of items at once (1 to 10,000; inline maps run at most 40 at once).
   */
  public static fixed(maxConcurrency: number): MapConcurrency {
    return new MapConcurrency(maxConcurrency, undefined, `fixed at ${maxConcurrency}`,
      (scope) => checkRange(scope, 'concurrency (MapConcurrency.fixed)', maxConcurrency, { min: 1, max: DISTRIBUTED_MAX_CONCURRENCY, integer: true }));
  }

  /**
   * The number of items at once, read from the state input at run time (e.g. `$.concurrency`).
   */
  public static fromPath(path: string): MapConcurrency {
    return new MapConcurrency(undefined, path, `from ${path}`, (scope) => {
      if (!path.startsWith('$') && !isJsonataExpression(path)) {
        fail(scope, `concurrency (MapConcurrency.fromPath) must be a JSONPath starting with $ (or, in a JSONata machine, a JSONata expression {% ... %}), got ${path}`);
      }
    });
  }

  /**
   * Enough items at once to sustain `ratePerSecond` when each takes `itemDuration`: by Little's law,
   * ceil(rate × duration). With a limiter at that rate the map neither starves it nor queues behind it.
   */
  public static forThroughput(options: ThroughputConcurrencyOptions): MapConcurrency {
    const ms = options.itemDuration.toMilliseconds();
    const n = Math.max(1, Math.ceil(options.ratePerSecond * (ms / 1000) - 1e-9));
    return new MapConcurrency(n, undefined, `${n} = ceil(${options.ratePerSecond}/s × ${ms / 1000} s per item) by Little's law`, (scope) => {
      checkRange(scope, 'concurrency (MapConcurrency.forThroughput) ratePerSecond', options.ratePerSecond, { min: 0, minExclusive: true, max: 100_000 });
      checkRange(scope, 'concurrency (MapConcurrency.forThroughput) itemDuration (ms)', ms, { min: 1, max: 86_400_000 });
      checkRange(scope, 'concurrency derived from forThroughput (ceil(ratePerSecond × itemDuration))', n, { min: 1, max: DISTRIBUTED_MAX_CONCURRENCY, integer: true });
    });
  }

  private constructor(
    /** The fixed concurrency, if any. */
    public readonly maxConcurrency: number | undefined,
    /** The JSONPath the concurrency is read from, if any. */
    public readonly maxConcurrencyPath: string | undefined,
    /** How the figure was reached, for annotations and the throttle plan. */
    public readonly description: string,
    private readonly check: (scope: IConstruct) => void,
  ) {}

  /**
   * Checks the figure where it is used: errors name the map.
   *
   * @internal
   */
  public _check(scope: IConstruct): void {
    this.check(scope);
  }
}

/**
 * Options of a Distributed Map (`MapMode.distributed()`).
 */
export interface DistributedMapOptions {
  /**
   * Reads the items from S3. Its S3 permissions are added to the state machine role. Not with `itemsPath`.
   *
   * @default - items come from the map's `itemsPath`
   */
  readonly itemReader?: sfn.IItemReader;

  /**
   * Batching: each child execution gets `{ Items: [...], BatchInput }`.
   *
   * @default - one item per child execution
   */
  readonly batch?: MapBatchOptions;

  /**
   * Percentage of failed items (0 to 100) the map tolerates before it fails with
   * `States.ExceedToleratedFailureThreshold`.
   *
   * @default - 0 unless `toleratedFailureCount` is set
   */
  readonly toleratedFailurePercentage?: number;

  /**
   * Number of failed items the map tolerates before it fails.
   *
   * @default - 0 unless `toleratedFailurePercentage` is set
   */
  readonly toleratedFailureCount?: number;

  /**
   * Child execution type. Express children are cheaper and faster but must finish within 5 minutes and are not
   * redriven with the parent.
   *
   * @default sfn.StateMachineType.STANDARD
   */
  readonly executionType?: sfn.StateMachineType;
}

/**
 * Inline or distributed: what a `ThrottledMap` runs as. The options only a Distributed Map has live in
 * `MapMode.distributed()`, so an inline map cannot be given them.
 */
export class MapMode {
  /**
   * An inline Map: at most 40 iterations at once, all in the parent execution's history.
   */
  public static inline(): MapMode {
    return new MapMode(false, {});
  }

  /**
   * A Distributed Map: child executions (up to 10,000 at once), batching, S3 item readers, tolerated failures.
   */
  public static distributed(options: DistributedMapOptions = {}): MapMode {
    return new MapMode(true, options);
  }

  private constructor(
    /** Whether this is a Distributed Map. */
    public readonly isDistributed: boolean,
    /** The Distributed Map's options (empty for an inline map). */
    public readonly options: DistributedMapOptions,
  ) {}
}

/**
 * Batching of a distributed `ThrottledMap`: each child execution gets `{ Items: [...], BatchInput }`.
 */
export interface MapBatchOptions {
  /**
   * Most items per batch (1 to 100,000). Required with a limiter: the batch acquires `acquire.consume` per item.
   *
   * @default - no item limit (then `maxInputBytes` must be set)
   */
  readonly maxItems?: number;

  /**
   * Most bytes of items per batch (1 to 262,144).
   *
   * @default - no byte limit (then `maxItems` must be set)
   */
  readonly maxInputBytes?: number;

  /**
   * A fixed JSON input added to every batch as `BatchInput`.
   *
   * @default - none
   */
  readonly batchInput?: { [key: string]: any };
}

/**
 * Properties of `ThrottledMap`.
 */
export interface ThrottledMapProps {
  /**
   * What runs for each item (or each batch, with `batch`).
   */
  readonly itemProcessor: sfn.IChainable;

  /**
   * Where the items are: a JSONPath in a JSONPath machine (`$.orders`), a JSONata expression in a JSONata machine
   * (`{% $states.input.orders %}`; the other form fails the synth, saying what to write). Not with a distributed
   * `itemReader`.
   *
   * @default - the state input is the array
   */
  readonly itemsPath?: string;

  /**
   * The input each item's processor gets, built from the item and the state input: JSONPath fields in a JSONPath
   * machine (`{ 'order.$': '$$.Map.Item.Value' }`), JSONata expressions in a JSONata machine
   * (`{ order: '{% $states.context.Map.Item.Value %}' }`).
   *
   * @default - the item itself
   */
  readonly itemSelector?: { [key: string]: any };

  /**
   * Where the array of item results goes in the state output: `$`, a simple path such as `$.results` (in either
   * query language: the library renders it as `ResultPath` or as a JSONata `Output`), or `JsonPath.DISCARD`.
   *
   * @default '$' - the results replace the input
   */
  readonly resultPath?: string;

  /**
   * The query language of the state machine this map renders into, needed only when it is nested in a Parallel or
   * Map of yours in a JSONata machine (aws-cdk-lib renders nested states without the machine's language).
   *
   * @default - the state machine's, decided when it is rendered
   */
  readonly queryLanguage?: sfn.QueryLanguage;

  /**
   * How many items run at once.
   *
   * @default MapConcurrency.fixed(10)
   */
  readonly concurrency?: MapConcurrency;

  /**
   * A rate limit every item (or batch) acquires from before its processor runs.
   *
   * @default - no rate limit: only `concurrency` bounds the load
   */
  readonly limiter?: IRateLimiter;

  /**
   * What each item takes from `limiter`: the bucket (`key`, a literal or a JSONPath into the item's input such as
   * `$.tenantId`), how much (`consume`; a batch takes it once per item in it, and a batch at its `maxItems` must fit
   * floor(burst / shards)), and RESERVE (wait for the slot) or TRY (fail the item with `RateLimitExceeded`, retried
   * on the emission interval when the processor is a single task).
   *
   * @default - one request per item from the 'default' bucket, RESERVE
   */
  readonly acquire?: AcquireOptions;

  /**
   * A concurrency limit every item (or batch) holds a slot of while its processor runs: a cap across every execution
   * and every Map on the same key, where `concurrency` (MaxConcurrency) bounds one Map run only. The processor must be
   * one task state; it runs in a `ConcurrencyLimitedTask` (its timeout fitted to the limiter's lease, `retry` applied
   * while the slot is held). Inline maps only, and not together with `limiter`.
   *
   * @default - none: only `concurrency` bounds the items at once, per Map run
   */
  readonly concurrencyLimit?: MapConcurrencyLimit;

  /**
   * A circuit breaker in front of every item's call, as on `RateLimitedTask`: while it is open no item acquires a
   * token or calls the task; each item fails with `CircuitOpen` (collected as a failed item with
   * `catchItemFailures`), goes to `fallback`, or — when `retry` lists `ThrottleErrors.CIRCUIT_OPEN` — waits until
   * the breaker's retry-after. Needs `limiter` and an item processor that is one task (not batched). Items must be
   * JSON objects (the breaker's data is put in them).
   *
   * @default - no circuit breaker
   */
  readonly circuitBreaker?: CircuitBreakerOptions;

  /**
   * Inline (at most 40 iterations at once, all in the parent's history) or distributed (child executions, up to
   * 10,000 at once, with batching, S3 item readers and tolerated failures).
   *
   * @default MapMode.inline()
   */
  readonly mode?: MapMode;

  /**
   * Retries per item. With a limiter every retry acquires a token again: when the processor is one task this is
   * a `RateLimitedTask` (backoff, then acquire); otherwise the item's states (acquire first) are one unit whose every
   * failure passes a backoff state that retries the unit per this policy or raises the error again, so no task of
   * the item ever ends an execution and a redrive goes back through the acquire. With a limiter the item (or
   * batch) must be a JSON object: the caught error is put in it. Without a limiter, the item's states are retried
   * as a whole.
   *
   * @default RetryPolicy.none() - no retries (with a limiter, a redrive still acquires again)
   */
  readonly retry?: RetryPolicy;

  /**
   * Collect failed items instead of failing the map: a failed item's result is
   * `{ "failed": true, "error": { "Error", "Cause" }, "item": <its input> }`.
   *
   * @default false
   */
  readonly catchItemFailures?: boolean;
}

/**
 * The concurrency limit the items of a `ThrottledMap` hold slots of.
 */
export interface MapConcurrencyLimit {
  /** The limiter. */
  readonly limiter: IConcurrencyLimiter;

  /**
   * The limit's key: a literal (one limit per database), or a JSONPath / JSONata expression into the item's input.
   *
   * @default 'default'
   */
  readonly key?: string;

  /**
   * Slots one item holds. Valid range: 1 to the limiter's limit.
   *
   * @default 1
   */
  readonly slots?: number;
}

/**
 * An inline or Distributed Map with its throttles wired in: a concurrency bound, an optional rate limit per
 * item or batch, batching, tolerated failures, retries that hold tokens and failed-item collection.
 */
export class ThrottledMap extends sfn.StateMachineFragment {
  public readonly startState: sfn.State;
  public readonly endStates: sfn.INextable[];
  /** The Map (or DistributedMap) state. */
  public readonly mapState: sfn.State;
  /** The concurrency in force. */
  public readonly concurrency: MapConcurrency;
  /** Whether this is a Distributed Map. */
  public readonly distributed: boolean;
  /** The limiter items take from, if any. */
  public readonly limiter?: IRateLimiter;
  /** What each item takes from the limiter (a batch: per item in it), defaults filled in; undefined without a limiter. */
  public readonly acquireOptions?: AcquireOptions;
  /** Whether this map runs as inline or distributed, with its distributed options. */
  public readonly mode: MapMode;
  /** The Map Run label of a distributed map (child executions' metrics are published under it). */
  public readonly mapRunLabel?: string;
  private readonly map: sfn.Map | sfn.DistributedMap;

  constructor(scope: Construct, id: string, props: ThrottledMapProps) {
    super(scope, id);
    this.mode = props.mode ?? MapMode.inline();
    const distributed = this.mode.isDistributed;
    const dist = this.mode.options;
    this.distributed = distributed;
    this.limiter = props.limiter;
    this.concurrency = props.concurrency ?? MapConcurrency.fixed(10);
    this.concurrency._check(this);
    validate(this, props, this.concurrency);
    if (props.limiter) {
      const given = props.acquire ?? {};
      this.acquireOptions = {
        key: given.key ?? DEFAULT_KEY,
        consume: isMultiLimit(props.limiter)
          ? consumedAmounts(this, props.limiter, given)
          : { [props.limiter.limits[0].dimension]: consumedAmount(this, props.limiter, given) },
        mode: given.mode ?? AcquireMode.RESERVE,
        priority: given.priority,
      };
    }

    const itemBody = this.itemBody(id, props);
    // User-given paths and expressions: JSONPath ones go to aws-cdk-lib's Map, JSONata ones are rendered by the
    // library's Map in a JSONata machine; either is checked against the machine's language when it renders.
    const jsonataItems = isJsonataExpression(props.itemsPath) ? props.itemsPath : undefined;
    // a selector is JSONata when it holds JSONata expressions and reads no JSONPath; any other goes to aws-cdk-lib's Map
    const jsonataSelector = props.itemSelector !== undefined && holdsJsonata(props.itemSelector) && !readsJsonPath(props.itemSelector);
    const concurrencyPath = this.concurrency.maxConcurrencyPath;
    const common = {
      itemsPath: dist.itemReader || jsonataItems ? undefined : props.itemsPath,
      itemSelector: jsonataSelector ? undefined : props.itemSelector,
      resultPath: props.resultPath,
      maxConcurrency: this.concurrency.maxConcurrency,
      maxConcurrencyPath: isJsonataExpression(concurrencyPath) ? undefined : concurrencyPath,
    };
    const hint = { queryLanguage: props.queryLanguage, onRender: (lang: sfn.QueryLanguage) => this.checkLanguage(lang, props) };
    const jsonata = {
      items: jsonataItems,
      itemSelector: jsonataSelector ? props.itemSelector : undefined,
      maxConcurrency: isJsonataExpression(concurrencyPath) ? concurrencyPath : undefined,
    };
    if (distributed) {
      const batch = dist.batch;
      this.map = new LanguageDistributedMap(this, id, {
        ...common,
        // The label names the Map Run, and scopes the role's RedriveExecution grant to this map's children.
        label: this.mapRunLabel = mapRunLabel(id),
        itemReader: dist.itemReader,
        itemBatcher: batch ? new sfn.ItemBatcher({
          maxItemsPerBatch: batch.maxItems,
          maxInputBytesPerBatch: batch.maxInputBytes,
          batchInput: batch.batchInput,
        }) : undefined,
        toleratedFailurePercentage: dist.toleratedFailurePercentage,
        toleratedFailureCount: dist.toleratedFailureCount,
        mapExecutionType: dist.executionType ?? sfn.StateMachineType.STANDARD,
      }, hint, jsonata);
      (this.map as sfn.DistributedMap).itemProcessor(itemBody);
      AcknowledgeDistributedMapPolicy.addTo(Stack.of(this));
    } else {
      this.map = new LanguageMap(this, id, common, hint, jsonata);
      this.map.itemProcessor(itemBody);
    }
    Annotations.of(this).addInfo(`ThrottledMap ${id}: concurrency ${this.concurrency.description}`);
    this.mapState = this.map;
    this.startState = this.map;
    this.endStates = [this.map];
    this.node.addValidation(languageValidation(this, () => [this.map]));
  }

  /** The user's paths and expressions against the language the map renders in. */
  private checkLanguage(lang: sfn.QueryLanguage, props: ThrottledMapProps): void {
    if (props.itemsPath !== undefined) userExpression(this, 'itemsPath', pathOfToken(props.itemsPath), lang);
    const path = this.concurrency.maxConcurrencyPath;
    if (path !== undefined) userExpression(this, 'concurrency (MapConcurrency.fromPath)', path, lang);
    const selector = props.itemSelector;
    if (selector !== undefined) {
      const pathKeys = Object.keys(selector).filter((k) => k.endsWith('.$'));
      if (lang === sfn.QueryLanguage.JSONATA && pathKeys.length === 0 && readsJsonPath(selector)) {
        fail(this, 'itemSelector reads JSONPath (a nested \'.$\' field or a JsonPath token) but the state machine\'s query language is JSONata: write JSONata expressions ({% ... %})');
      }
      if (lang === sfn.QueryLanguage.JSONATA && pathKeys.length > 0) {
        fail(this, `itemSelector has JSONPath fields (${pathKeys.join(', ')}) but the state machine's query language is JSONata: write JSONata expressions, e.g. `
          + pathKeys.map((k) => `${k.slice(0, -2)}: '${expr(jsonataOf(String(selector[k])) ?? '...')}'`).join(', '));
      }
      const expressions = Object.entries(selector).filter(([, v]) => holdsJsonata(v)).map(([k]) => k);
      if (lang === sfn.QueryLanguage.JSON_PATH && expressions.length > 0) {
        fail(this, `itemSelector has JSONata expressions (${expressions.join(', ')}) but the state machine's query language is JSONPath: write JSONPath fields such as 'order.$': '$$.Map.Item.Value'`);
      }
    }
  }

  /**
   * Routes a failure of the map as a whole (tolerated-failure threshold exceeded, an item failure without
   * `catchItemFailures`, a missing item array) to `handler`.
   */
  public addCatch(handler: sfn.IChainable, props: sfn.CatchProps = {}): ThrottledMap {
    this.map.addCatch(handler, props);
    return this;
  }

  /**
   * A metric of this distributed map's items (its child executions), as Step Functions publishes it: namespace
   * `AWS/States`, dimension `StateMachineArn` = `<stateMachineArn>/<Map Run label>`. `metricName` is one of
   * `ExecutionsStarted`, `ExecutionsSucceeded`, `ExecutionsFailed`, `ExecutionsTimedOut`, `ExecutionsAborted`.
   *
   * @default - sum over 1 minute
   */
  public metricItems(metricName: string, stateMachine: sfn.IStateMachine, props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    if (!this.distributed || !this.mapRunLabel) fail(this, `metricItems needs a distributed map: ${this.node.path} is inline (its items are states of the parent execution)`);
    return new cloudwatch.Metric({
      namespace: 'AWS/States',
      metricName,
      dimensionsMap: { StateMachineArn: Fn.join('', [stateMachine.stateMachineArn, '/', this.mapRunLabel]) },
      statistic: cloudwatch.Stats.SUM,
      period: Duration.minutes(1),
      ...props,
    });
  }

  /**
   * Failed items (child executions) of this distributed map.
   *
   * @default - sum over 1 minute
   */
  public metricFailedItems(stateMachine: sfn.IStateMachine, props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metricItems('ExecutionsFailed', stateMachine, props);
  }

  /** The states each item runs: [acquire → Wait →] processor, with retries and failure collection. */
  private itemBody(id: string, props: ThrottledMapProps): sfn.IChainable {
    const retry = props.retry ?? RetryPolicy.none();
    retry._check(this);
    const processor = props.itemProcessor;
    const single = singleTask(processor);
    const batched = this.mode.options.batch !== undefined;
    const limiterOptions = {
      ...this.acquireOptions,
      countPath: batched ? 'States.ArrayLength($.Items)' : undefined,
      queryLanguage: props.queryLanguage,
    };

    let body: sfn.IChainable;
    // states that end in a failed-item record (catchItemFailures) besides the catch
    const failedItemEntries: sfn.Pass[] = [];
    let catchOn: { addCatch(handler: sfn.IChainable, props?: sfn.CatchProps): unknown } | undefined;
    const hold = props.concurrencyLimit;
    if (hold) {
      if (!single) {
        fail(this, `concurrencyLimit needs the item processor to be one task state, got a chain starting at "${sfn.Chain.start(processor).startState.stateId}": `
          + 'put a ConcurrencyLimitedTask in the processor around the task that needs the slot');
      }
      // the task's own retries run while the slot is held, and the lease fits them (ConcurrencyLimitedTask checks it)
      retry.applyTo(single);
      const limited = new ConcurrencyLimitedTask(this, `${id} Item`, { limiter: hold.limiter, task: single, key: hold.key, slots: hold.slots });
      body = limited;
      catchOn = limited;
    } else if (props.limiter && single && !batched) {
      // One task under a limiter: RateLimitedTask (backoff, then a token for the retry).
      const cb = props.circuitBreaker;
      const waitsWhileOpen = retry.retries && (retry.errors ?? []).includes(ThrottleErrors.CIRCUIT_OPEN);
      const cause = `${cb?.resultPath ?? '$.circuit'}.open.cause`;
      const openAsFailedItem = cb && props.catchItemFailures && !cb.fallback && !waitsWhileOpen ? new BreakerPass(this, `${id} Item Circuit Open`,
        { hint: { queryLanguage: props.queryLanguage } },
        { jsonPath: { 'Error': ThrottleErrors.CIRCUIT_OPEN, 'Cause.$': cause }, jsonata: { Error: JSON.stringify(ThrottleErrors.CIRCUIT_OPEN), Cause: jsonataOf(cause)! } },
        `$.${ITEM_ERROR_FIELD}`) : undefined;
      const limited = new RateLimitedTask(this, `${id} Item`, {
        limiter: props.limiter,
        task: single,
        acquire: this.acquireOptions,
        retry,
        queryLanguage: props.queryLanguage,
        circuitBreaker: cb && { ...cb, fallback: cb.fallback ?? openAsFailedItem },
      });
      failedItemEntries.push(...(openAsFailedItem ? [openAsFailedItem] : []));
      body = limited;
      catchOn = limited;
    } else if (props.limiter) {
      const limiter = props.limiter;
      const { acquire, wait } = acquireStates(this, `${id} Item`, limiter, limiterOptions);
      wait.next(processor);
      const start = sfn.Chain.start(processor).startState;
      this.node.addValidation({
        validate: () => ownRetries(start).map((r) =>
          `state "${r.state}" in the item processor of ThrottledMap ${this.node.path} has its own Retry on ${r.errors.join(', ')}: `
        + 'Step Functions would run it again without a token. Remove it (LambdaInvoke: retryOnServiceExceptions: false) and give the map '
        + '`retry` (RetryPolicy.throttling({ errors })): the whole item is retried, acquire included'),
      });
      // The item's states as one unit whose every failure passes a backoff state, as in RateLimitedTask: a retry
      // (per `retry`) or a redrive goes back to the unit, which starts with the acquire; any other error is raised
      // again from the backoff state. So no task of the item ever ends an execution (a Distributed Map child is
      // one), and a redrive never restarts inside the item without a token.
      const unit = new LanguageParallel(this, `${id} Item Unit`, { outputPath: '$[0]', queryLanguage: props.queryLanguage });
      unit.branch(sfn.Chain.custom(acquire, sfn.Chain.start(processor).endStates, wait));
      const errors = retry.retries ? retry.errorsFor(unit, sfn.State.findReachableStates(start)) : [];
      const backoff = backoffStates(this, `${id} Item Backoff`, limiter, retry, errors, unit, unit, { queryLanguage: props.queryLanguage }, undefined,
        this.acquireOptions?.key);
      body = unit;
      catchOn = backoff;
    } else if (retry.retries || props.catchItemFailures) {
      // The item's states as one unit: retried whole and caught whole.
      const unit = new LanguageParallel(this, `${id} Item Unit`, { outputPath: '$[0]', queryLanguage: props.queryLanguage });
      unit.branch(processor);
      retry.applyToStates(unit, sfn.State.findReachableStates(sfn.Chain.start(processor).startState));
      body = unit;
      catchOn = unit;
    } else {
      body = processor;
    }

    if (props.catchItemFailures && catchOn) {
      const failed = new LanguagePass(this, `${id} Item Failed`, {
        parameters: { 'failed': true, 'error.$': `$.${ITEM_ERROR_FIELD}`, 'item.$': '$' },
        queryLanguage: props.queryLanguage,
      });
      catchOn.addCatch(failed, { resultPath: `$.${ITEM_ERROR_FIELD}` });
      for (const entry of failedItemEntries) entry.next(failed);
      // The failure record ends the item like a success; the fragment's end states are the body's.
      return sfn.Chain.custom(sfn.Chain.start(body).startState, [...sfn.Chain.start(body).endStates, failed], body);
    }
    return body;
  }
}

/** States reachable from `start` (and inside their Parallel branches and Map processors) that carry a Retry. */
function ownRetries(start: sfn.State): { state: string; errors: string[] }[] {
  // The limiter's own calls (acquire and backoff of a RateLimitedTask inside the processor) call no downstream.
  const limiterStates = new Set(Stack.of(start).node.findAll().filter((c) => c instanceof AcquireTask).map((c) => (c as AcquireTask).stateId));
  // a circuit breaker's check and function calls (breaker.protect() in the processor) call no downstream either
  const breakerStates = new Set(Stack.of(start).node.findAll().filter((c) => isBreakerState(c)).map((c) => (c as sfn.State).stateId));
  const found: { state: string; errors: string[] }[] = [];
  const visit = (name: string, json: any) => {
    const errors = ((json.Retry ?? []) as { ErrorEquals: string[] }[]).flatMap((r) => r.ErrorEquals);
    const params = json.Parameters;
    const ours = limiterStates.has(name) && params !== undefined && (AcquireField.TOKENS in params || params[AcquireField.PHASE] === BACKOFF_PHASE);
    if (errors.length > 0 && !ours && !breakerStates.has(name)) found.push({ state: name, errors });
    for (const branch of [...(json.Branches ?? []), ...(json.ItemProcessor ? [json.ItemProcessor] : []), ...(json.Iterator ? [json.Iterator] : [])]) {
      for (const [n, st] of Object.entries(branch.States ?? {})) visit(n, st);
    }
  };
  for (const state of sfn.State.findReachableStates(start)) visit(state.stateId, state.toStateJson());
  return found;
}

/**
 * The state machine policy aws-cdk-lib adds for Distributed Maps grants DescribeExecution, StopExecution and
 * RedriveExecution on `execution:<machine>:*` and `execution:<machine>/<label>:*`: child execution names are
 * generated per Map Run, so that is as narrow as those grants go. Acknowledged once per stack.
 */
class AcknowledgeDistributedMapPolicy implements IAspect {
  public static addTo(stack: Stack): void {
    if ((stack as any)[ACKNOWLEDGED]) return;
    (stack as any)[ACKNOWLEDGED] = true;
    Aspects.of(stack).add(new AcknowledgeDistributedMapPolicy());
  }

  public visit(node: IConstruct): void {
    if (!(node instanceof iam.Policy && node.node.id === 'DistributedMapPolicy' && node.node.scope instanceof sfn.StateMachine)) return;
    const doc = Stack.of(node).resolve(node.document.toJSON()) as { Statement?: { Resource?: unknown }[] };
    const resources = (doc.Statement ?? []).flatMap((st) => (Array.isArray(st.Resource) ? st.Resource : [st.Resource]));
    // cdk-nag names each wildcard finding after the resource, rendered as below.
    for (const finding of new Set(resources.map(renderForNag).filter((r) => r.includes('*')))) {
      Validations.of(node).acknowledge({
        id: `AwsSolutions-IAM5[Resource::${finding}]`,
        reason: 'Distributed Map child executions get generated names: Describe/Stop/RedriveExecution are scoped to this state machine\'s executions and its Map Run labels, the narrowest ARNs they have',
      });
    }
  }
}

/** A resolved IAM resource as cdk-nag prints it in finding ids. */
function renderForNag(v: unknown): string {
  if (typeof v === 'string') return v;
  const o = v as Record<string, any>;
  if (o && typeof o.Ref === 'string' && o.Ref.startsWith('AWS::')) return `<${o.Ref}>`;
  if (o && Array.isArray(o['Fn::Join']) && o['Fn::Join'][0] === '') return (o['Fn::Join'][1] as unknown[]).map(renderForNag).join('');
  return JSON.stringify(v);
}

const ACKNOWLEDGED = Symbol.for('cdk-sfn-throttle.distributed-map-policy-acknowledged');

/** The Map Run label: letters, digits, - and _ (at most 40 characters). */
function mapRunLabel(id: string): string {
  return id.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 40);
}

/** The processor when it is exactly one Task state. */
function singleTask(processor: sfn.IChainable): sfn.TaskStateBase | undefined {
  const chain = sfn.Chain.start(processor);
  if (chain.startState instanceof sfn.TaskStateBase && chain.endStates.length === 1 && chain.endStates[0] === chain.startState) {
    return chain.startState;
  }
  return undefined;
}

function validate(scope: Construct, props: ThrottledMapProps, concurrency: MapConcurrency): void {
  const mode = props.mode ?? MapMode.inline();
  const dist = mode.options;
  if (dist.itemReader && props.itemsPath !== undefined) {
    fail(scope, `itemsPath and mode's itemReader are exclusive: items come from one of them, got itemsPath ${props.itemsPath} and an itemReader`);
  }
  if (dist.toleratedFailurePercentage !== undefined) {
    checkRange(scope, 'mode toleratedFailurePercentage', dist.toleratedFailurePercentage, { min: 0, max: 100 });
  }
  if (dist.toleratedFailureCount !== undefined) {
    checkRange(scope, 'mode toleratedFailureCount', dist.toleratedFailureCount, { min: 0, max: 100_000_000, integer: true });
  }
  const batch = dist.batch;
  if (batch) {
    if (batch.maxItems === undefined && batch.maxInputBytes === undefined) {
      fail(scope, 'mode batch needs maxItems or maxInputBytes (or both), got neither');
    }
    if (batch.maxItems !== undefined) checkRange(scope, 'mode batch.maxItems', batch.maxItems, { min: 1, max: 100_000, integer: true });
    if (batch.maxInputBytes !== undefined) checkRange(scope, 'mode batch.maxInputBytes', batch.maxInputBytes, { min: 1, max: 262_144, integer: true });
  }
  if (props.concurrencyLimit && props.limiter) {
    fail(scope, `concurrencyLimit and limiter are exclusive on one ThrottledMap, got both (${props.concurrencyLimit.limiter.limiterName} and ${props.limiter.limiterName}): `
      + 'a rate slot waited for while holding a concurrency slot wastes it, and one taken before the concurrency slot goes stale; use one of them per map');
  }
  if (props.concurrencyLimit && mode.isDistributed) {
    fail(scope, 'concurrencyLimit needs an inline map (mode: MapMode.inline()), got a distributed one: its items are child executions, whose task tokens and failures the limiter is not granted');
  }
  if (props.circuitBreaker && (!props.limiter || batch || !singleTask(props.itemProcessor))) {
    fail(scope, 'circuitBreaker needs a limiter and an item processor that is one task, not batched (it is the RateLimitedTask option), got '
      + `${!props.limiter ? 'no limiter' : batch ? 'a batched map' : 'a processor of several states'}: otherwise put breaker.protect() in the item processor`);
  }
  if (props.acquire !== undefined && !props.limiter) {
    fail(scope, `acquire needs a limiter, got acquire ${JSON.stringify(props.acquire)} and no limiter`);
  }
  if (props.limiter && batch && props.limiter.limits.some((l) => l.windowRule)) {
    // the window rule's guarantee holds for calls made at their slots: a batch's child makes its calls after one slot
    fail(scope, `limiter ${props.limiter.limiterName} holds a provider's window rule (${props.limiter.limits[0].description}), which counts calls at their slots: `
      + 'a batch makes its calls after one slot for all of them. Leave batch out (each item acquires), or acquire per call inside the child workflow');
  }
  if (props.limiter && batch) {
    const perAcquire = Math.floor(props.limiter.burst / props.limiter.shards);
    const tokens = consumedAmount(scope, props.limiter, props.acquire ?? {});
    if (batch.maxItems === undefined) {
      fail(scope, 'mode batch.maxItems is required with a limiter (a batch acquires acquire.consume per item), got only batch.maxInputBytes');
    }
    const batchTokens = tokens * batch.maxItems;
    if (!Token.isUnresolved(tokens) && batchTokens > perAcquire) {
      fail(scope, `acquire.consume × batch.maxItems must be at most floor(burst ${props.limiter.burst} / shards ${props.limiter.shards}) = ${perAcquire} (one acquire per batch), got ${tokens} × ${batch.maxItems} = ${batchTokens}`);
    }
  }
  const n = concurrency.maxConcurrency;
  if (!mode.isDistributed && n !== undefined && !Token.isUnresolved(n) && n > INLINE_MAX_CONCURRENCY) {
    Annotations.of(scope).addWarningV2('cdk-sfn-throttle:inlineMapConcurrency',
      `concurrency ${n} (${concurrency.description}) is above what an inline Map runs at once (${INLINE_MAX_CONCURRENCY}): use mode: MapMode.distributed(), or expect at most ${INLINE_MAX_CONCURRENCY}`);
  }
}
