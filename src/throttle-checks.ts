import * as fs from 'fs';
import * as path from 'path';
import { Annotations, attachCustomSynthesis, IAspect, Stack, Token } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct, IConstruct } from 'constructs';
import { AcquireOptions } from './acquire';
import { BufferedQueueConsumer } from './buffered-queue-consumer';
import { ConcurrencyLimitedTask, ConcurrencyLimiterBase } from './concurrency-limiter';
import { IRateLimiter } from './i-rate-limiter';
import type { Limit } from './limit';
import { type ProxyCall, proxyCalls } from './private/proxy-calls';
import { fail } from './private/validation';
import { RateLimitedTask } from './rate-limited-task';
import { RateLimiterBase } from './rate-limiter';
import { ThrottledApiProxy } from './throttled-api-proxy';
import { ThrottledMap } from './throttled-map';

/**
 * Unit prices the throttle plan's cost estimate uses. The defaults are us-east-1 on-demand list prices in USD, as
 * published on the AWS pricing pages in November 2026; give your Region's or your contract's.
 */
export interface ThrottlePriceList {
  /**
   * Step Functions Standard, per state transition.
   *
   * @default 0.000025 ($25 per million, us-east-1, 2026-11)
   */
  readonly standardTransition?: number;
  /**
   * Lambda, per request.
   *
   * @default 0.0000002 ($0.20 per million, us-east-1, 2026-11)
   */
  readonly lambdaRequest?: number;
  /**
   * Lambda on Arm (Graviton), per GB-second (first pricing tier).
   *
   * @default 0.0000133334 (us-east-1, 2026-11)
   */
  readonly lambdaArmGbSecond?: number;
  /**
   * Lambda on x86, per GB-second (first pricing tier).
   *
   * @default 0.0000166667 (us-east-1, 2026-11)
   */
  readonly lambdaX86GbSecond?: number;
  /**
   * DynamoDB on-demand, per write request unit.
   *
   * @default 0.000000625 ($0.625 per million, us-east-1, 2026-11)
   */
  readonly dynamoDbWriteRequestUnit?: number;
}

/** The default prices: us-east-1, on-demand, USD, November 2026. */
const DEFAULT_PRICES: Required<ThrottlePriceList> = {
  standardTransition: 0.000025,
  lambdaRequest: 0.0000002,
  lambdaArmGbSecond: 0.0000133334,
  lambdaX86GbSecond: 0.0000166667,
  dynamoDbWriteRequestUnit: 0.000000625,
};

/**
 * Default `StateTransition` quota of Standard workflows, per account and Region: a token bucket. The sustained rate
 * is the refill rate. AWS Step Functions Developer Guide, "Quotas related to state throttling": 5,000 bucket and 1,500
 * refill per second in US East (N. Virginia), US West (Oregon) and Europe (Ireland); 800 and 500 in all other
 * Regions. New accounts start lower, and AWS raises them with use.
 */
const STATE_TRANSITION_QUOTA = {
  large: { regions: ['us-east-1', 'us-west-2', 'eu-west-1'], bucket: 5000, refillPerSecond: 1500 },
  other: { bucket: 800, refillPerSecond: 500 },
};
/** Lambda's default concurrency quota per account and Region, and what must stay unreserved. */
const ACCOUNT_CONCURRENCY = 1000;
const UNRESERVED_MINIMUM = 100;
/** The mean sub-second sleep of a RESERVE acquire that waits: the sub-second part of a wait is uniform in [0, 1 s). */
const MEAN_SUB_SECOND_SLEEP = 0.5;

/**
 * Options of `ThrottleChecks`.
 */
export interface ThrottleChecksOptions {
  /**
   * Write `throttle-plan.json` and `throttle-plan.md` into the cloud assembly directory (at synthesis).
   *
   * @default true
   */
  readonly writePlan?: boolean;

  /**
   * Unit prices of the plan's cost per million items.
   *
   * @default - us-east-1 on-demand list prices, November 2026 (see `ThrottlePriceList`)
   */
  readonly prices?: ThrottlePriceList;

  /**
   * Mean time one acquire call takes apart from any sleep (its DynamoDB round trips and the Lambda invoke), seconds:
   * what a call costs in GB-seconds and holds in concurrency when it does not wait.
   *
   * @default 0.05
   */
  readonly acquireCallSeconds?: number;

  /**
   * The account's Lambda concurrency in each Region (the quota, or what your account has been raised to).
   *
   * @default 1000 - Lambda's default concurrency quota per account and Region
   */
  readonly accountConcurrency?: number;

  /**
   * Share of `accountConcurrency` one limiter's acquire function may take at its full rate before a warning
   * (`cdk-sfn-throttle:acquireConcurrency`). Between 0 and 1.
   *
   * @default 0.1
   */
  readonly acquireConcurrencyShare?: number;

  /**
   * Sustained `StateTransition` quota of Standard workflows, per second, when your account's differs from the
   * Region's default.
   *
   * @default - the Region's default refill rate: 1,500/s in us-east-1, us-west-2 and eu-west-1, 500/s elsewhere (or
   * in an environment-agnostic stack)
   */
  readonly stateTransitionsPerSecond?: number;
}

/** One line of the throttle plan. */
interface PlanEntry {
  readonly kind: 'limiter' | 'concurrencyLimiter' | 'map' | 'consumer' | 'stateMachine' | 'apiProxy';
  readonly path: string;
  readonly [key: string]: unknown;
}

/**
 * Synth-time throttle checks across constructs, and the throttle plan. Add once:
 * `Aspects.of(app).add(new ThrottleChecks())`. Findings are warnings (ids `cdk-sfn-throttle:<check>`) with the
 * numbers involved; `cdk synth --strict` turns them into errors.
 */
export class ThrottleChecks implements IAspect {
  private done = false;
  private readonly writePlan: boolean;
  private readonly settings: CheckSettings;

  constructor(options: ThrottleChecksOptions = {}) {
    this.writePlan = options.writePlan ?? true;
    this.settings = {
      prices: { ...DEFAULT_PRICES, ...definedOnly(options.prices ?? {}) },
      acquireCallSeconds: options.acquireCallSeconds ?? 0.05,
      accountConcurrency: options.accountConcurrency ?? ACCOUNT_CONCURRENCY,
      acquireConcurrencyShare: options.acquireConcurrencyShare ?? 0.1,
      stateTransitionsPerSecond: options.stateTransitionsPerSecond,
    };
  }

  public visit(node: IConstruct): void {
    // The first node visited is the scope the aspect was added to: check everything under it once. Checks add their
    // warnings here (before the stacks are synthesized); the plan files are written by a synthesis step.
    if (this.done) return;
    this.done = true;
    for (const [name, v, max] of [
      ['acquireCallSeconds', this.settings.acquireCallSeconds, 900],
      ['accountConcurrency', this.settings.accountConcurrency, 1_000_000],
      ['acquireConcurrencyShare', this.settings.acquireConcurrencyShare, 1],
      ['stateTransitionsPerSecond', this.settings.stateTransitionsPerSecond ?? 1, 10_000_000],
      ...Object.entries(this.settings.prices).map(([k, p]) => [`prices.${k}`, p, 1] as const),
    ] as const) {
      if (!Number.isFinite(v) || v <= 0 || v > max) {
        fail(node, `ThrottleChecks ${name} must be greater than 0 and at most ${max}, got ${v}`);
      }
    }
    const all = node.node.findAll();
    const plan: PlanEntry[] = [];
    for (const limiter of all.filter((c): c is RateLimiterBase => c instanceof RateLimiterBase)) plan.push(checkLimiter(limiter, this.settings));
    for (const map of all.filter((c): c is ThrottledMap => c instanceof ThrottledMap)) plan.push(checkMap(map));
    for (const consumer of all.filter((c): c is BufferedQueueConsumer => c instanceof BufferedQueueConsumer)) plan.push(consumerEntry(consumer));
    for (const limiter of all.filter((c): c is ConcurrencyLimiterBase => c instanceof ConcurrencyLimiterBase)) plan.push(concurrencyEntry(limiter));
    for (const proxy of all.filter((c): c is ThrottledApiProxy => c instanceof ThrottledApiProxy)) plan.push(proxyEntry(proxy));
    checkProxyCalls(all);
    checkConcurrencyTasks(all);
    checkEventSources(all);
    checkReservedConcurrency(all, this.settings);
    for (const machine of all.filter((c): c is sfn.StateMachine => c instanceof sfn.StateMachine)) {
      plan.push(checkStateMachine(machine, all, this.settings));
    }
    if (this.writePlan) writePlanAtSynthesis(node, plan);
  }
}

/** The options, defaults filled in. */
interface CheckSettings {
  readonly prices: Required<ThrottlePriceList>;
  readonly acquireCallSeconds: number;
  readonly accountConcurrency: number;
  readonly acquireConcurrencyShare: number;
  readonly stateTransitionsPerSecond?: number;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The acquire function's memory (MB) and architecture, when it is a function of this app. */
function acquireFunctionShape(l: IRateLimiter): { memoryMb: number; arm: boolean; reserved?: number } {
  const cfn = l.acquireFunction.node.defaultChild as lambda.CfnFunction | undefined;
  if (!(cfn instanceof lambda.CfnFunction)) return { memoryMb: 128, arm: true };
  const stack = Stack.of(cfn);
  const memory = stack.resolve(cfn.memorySize);
  const archs = stack.resolve(cfn.architectures) as string[] | undefined;
  const reserved = stack.resolve(cfn.reservedConcurrentExecutions);
  return {
    memoryMb: typeof memory === 'number' ? memory : 128,
    arm: !archs || archs.includes('arm64'),
    reserved: typeof reserved === 'number' ? reserved : undefined,
  };
}

/**
 * Time one acquire call holds its caller at the limiter's full rate: the call itself, plus the sub-second sleep of a
 * RESERVE acquire that waits (the sub-second part of a wait is uniform in [0, 1 s), so 0.5 s on average when every
 * caller waits, which is what running at the full rate means).
 */
function acquireHoldSeconds(settings: CheckSettings): number {
  return settings.acquireCallSeconds + MEAN_SUB_SECOND_SLEEP;
}

/** A limiter's plan line; at its full rate, its acquire function's concurrency against the account's. */
function checkLimiter(l: RateLimiterBase, settings: CheckSettings): PlanEntry {
  const shape = acquireFunctionShape(l);
  // One acquire call per token at most (consume 1): the most calls per second the limiter admits.
  const callsPerSecond = l.ratePerSecond;
  const concurrency = callsPerSecond * acquireHoldSeconds(settings);
  const allowed = settings.accountConcurrency * settings.acquireConcurrencyShare;
  if (concurrency > allowed) {
    Annotations.of(l).addWarningV2('cdk-sfn-throttle:acquireConcurrency',
      `at its full rate limiter ${l.limiterName} takes about ${round(concurrency)} concurrent acquire calls (${l.ratePerSecond}/s × ${round(acquireHoldSeconds(settings))} s: `
      + `the call and its sub-second sleep), more than ${round(settings.acquireConcurrencyShare * 100)} % of the account's Lambda concurrency (${settings.accountConcurrency}) = ${round(allowed)}: `
      + 'other functions in the account and Region can be throttled. Raise the account quota (then accountConcurrency), or lower the rate or split it over limiters.');
  }
  if (shape.reserved !== undefined && concurrency > shape.reserved) {
    Annotations.of(l).addWarningV2('cdk-sfn-throttle:acquireReservedConcurrency',
      `limiter ${l.limiterName}'s acquire function has reserved concurrency ${shape.reserved}, below the ${round(concurrency)} concurrent calls its full rate takes: `
      + 'acquires are throttled (Lambda.TooManyRequestsException, retried with backoff) and the limit is not reached');
  }
  return {
    kind: 'limiter',
    path: l.node.path,
    name: l.limiterName,
    ratePerSecond: l.ratePerSecond,
    burst: l.burst,
    shards: l.shards,
    maxWaitSeconds: l.maxWait.toSeconds(),
    writesPerSecondPerShard: round(l.ratePerSecond / l.shards),
    // several limits, or a provider's rule the rate was derived from: each limit as stated
    ...(l.limits.length > 1 || l.keyLimits || l.limits.some((x) => x.windowRule) ? { limits: l.limits.map(planLimit) } : {}),
    ...(l.keyLimits ? { keyLimits: l.keyLimits.map(planLimit) } : {}),
    acquireFunction: { memoryMb: shape.memoryMb, architecture: shape.arm ? 'arm64' : 'x86_64', concurrencyAtFullRate: round(concurrency) },
  };
}

/** A limit as the plan lists it. */
function planLimit(x: Limit): { dimension: string; ratePerSecond: number; burst: number; stated: string } {
  return { dimension: x.dimension, ratePerSecond: round(x.ratePerSecond), burst: x.burst, stated: x.description };
}

/**
 * Tokens one acquire takes: its `consume` amount (the options hold one, defaults filled in). An amount read at run
 * time counts as 1: the plan then shows the most items per second it could reach.
 */
function tokensOf(options: AcquireOptions | undefined): number {
  const amount = Object.values(options?.consume ?? {})[0] ?? 1;
  return Token.isUnresolved(amount) ? 1 : amount;
}

/** Items waiting at once must get their tokens within maxWait, or RESERVE refuses them. */
function checkMap(map: ThrottledMap): PlanEntry {
  const tokensPerItem = tokensOf(map.acquireOptions);
  const n = map.concurrency.maxConcurrency;
  const entry: Record<string, unknown> = {
    kind: 'map',
    path: map.node.path,
    distributed: map.distributed,
    concurrency: n ?? map.concurrency.maxConcurrencyPath,
    concurrencyFrom: map.concurrency.description,
    limiter: map.limiter?.limiterName,
    tokensPerItem,
  };
  if (map.limiter && n !== undefined && !Token.isUnresolved(n)) {
    const l = map.limiter;
    const servable = l.burst + l.ratePerSecond * l.maxWait.toSeconds();
    const waiting = n * tokensPerItem;
    entry.itemsPerSecond = round(l.ratePerSecond / tokensPerItem);
    if (waiting > servable) {
      Annotations.of(map).addWarningV2('cdk-sfn-throttle:mapConcurrencyUnfed',
        `${n} items at once × ${tokensPerItem} tokens = ${waiting} tokens waiting, but limiter ${l.limiterName} serves at most burst ${l.burst} + `
        + `${l.ratePerSecond}/s × maxWait ${l.maxWait.toSeconds()} s = ${round(servable)} within maxWait: the rest are refused. Lower concurrency to `
        + `${Math.floor(servable / tokensPerItem)} or raise maxWait.`);
    }
  }
  return entry as PlanEntry;
}

function proxyEntry(p: ThrottledApiProxy): PlanEntry {
  return {
    kind: 'apiProxy',
    path: p.node.path,
    stage: p.stageName,
    stageThrottle: { ...p.stageThrottle },
    routes: p.routeKeys.map((r) => {
      const [method, ...resource] = r.split(' ');
      return { route: r, ...p.throttleOf(method, resource.join(' ')) };
    }),
    upstreamLimit: p.upstreamLimit && { ...p.upstreamLimit },
  } as PlanEntry;
}

/**
 * A RateLimitedTask calling a ThrottledApiProxy route whose limiter lets through more than the route's throttle: the
 * proxy answers the excess 429 (retried with a token, but each one a wasted call and a token).
 */
function checkProxyCalls(all: IConstruct[]): void {
  // per route: every limiter feeding it, counted once (calls per second it lets through, the slowest dimension's)
  const byRoute = new Map<string, { call: ProxyCall; feeds: Map<string, { task: RateLimitedTask; rate: number; burst: number }> }>();
  for (const t of all.filter((c): c is RateLimitedTask => c instanceof RateLimitedTask)) {
    const call = proxyCalls.get(t.task);
    if (!call) continue;
    const l = t.limiter;
    const consume = t.acquireOptions.consume ?? {};
    const perDimension = l.limits.map((x) => {
      const amount = consume[x.dimension];
      const n = amount === undefined || Token.isUnresolved(amount) ? (amount === undefined ? 0 : 1) : amount;
      return n > 0 ? { rate: x.ratePerSecond / n, burst: x.burst / n } : { rate: Infinity, burst: Infinity };
    });
    const rate = Math.min(...perDimension.map((d) => d.rate));
    const burst = Math.min(...perDimension.map((d) => d.burst));
    const key = t.acquireOptions.key ?? 'default';
    if (typeof key === 'string' && (key.startsWith('$') || key.startsWith('{%')) && !l.keyLimits) {
      Annotations.of(t).addWarningV2('cdk-sfn-throttle:limiterAboveProxy',
        `limiter ${l.limiterName} is taken per key (${key}): each key has its own ${round(rate)} calls/s, so together they may send ${call.route} of `
        + `${call.proxyPath} more than its ${call.throttle.rateLimit}/s. Use one key for the proxy's route, or keyLimits under a shared limit`);
    }
    const entry = byRoute.get(`${call.proxyPath} ${call.route}`) ?? { call, feeds: new Map() };
    entry.feeds.set(`${l.limiterName}/${String(key)}`, { task: t, rate, burst });
    byRoute.set(`${call.proxyPath} ${call.route}`, entry);
  }
  for (const { call, feeds } of byRoute.values()) {
    const rate = [...feeds.values()].reduce((n, f) => n + f.rate, 0);
    const burst = [...feeds.values()].reduce((n, f) => n + f.burst, 0);
    if (rate > call.throttle.rateLimit || burst > call.throttle.burstLimit) {
      const names = [...feeds.keys()].join(', ');
      for (const f of feeds.values()) {
        Annotations.of(f.task).addWarningV2('cdk-sfn-throttle:limiterAboveProxy',
          `${feeds.size > 1 ? `limiters ${names} together let` : `limiter ${names.split('/')[0]} lets`} ${round(rate)} calls/s (burst ${round(burst)}) through to `
          + `${call.route} of ${call.proxyPath}, whose throttle is ${call.throttle.rateLimit}/s (burst ${call.throttle.burstLimit}): the proxy answers the excess 429. `
          + 'Lower the limiter to the proxy\'s throttle or below');
      }
    }
  }
}

function concurrencyEntry(l: ConcurrencyLimiterBase): PlanEntry {
  return {
    kind: 'concurrencyLimiter', path: l.node.path, name: l.limiterName, limit: l.limit, leaseDurationSeconds: l.leaseDuration.toSeconds(), maxWaitSeconds: l.maxWait.toSeconds(),
  };
}

/**
 * Each ConcurrencyLimitedTask: a wrapped function of this app whose reserved concurrency is below the limit (the
 * calls above it are throttled while they hold slots), and an Express state machine holding it (no execution status
 * events: slots of failed executions come back only when their leases expire).
 */
function checkConcurrencyTasks(all: IConstruct[]): void {
  const fns = all.filter((c): c is lambda.CfnFunction => c instanceof lambda.CfnFunction);
  // each Express machine's definition, resolved once
  const express = all.filter((c): c is sfn.StateMachine => c instanceof sfn.StateMachine && c.stateMachineType === sfn.StateMachineType.EXPRESS)
    .map((m) => {
      const cfn = m.node.defaultChild as sfn.CfnStateMachine;
      return { m, definition: JSON.stringify(Stack.of(m).resolve(cfn.definitionString ?? cfn.definition) ?? '') };
    });
  for (const t of all.filter((c): c is ConcurrencyLimitedTask => c instanceof ConcurrencyLimitedTask)) {
    const stack = Stack.of(t);
    const limit = t.limiter.limit;
    let rendered: unknown;
    try {
      rendered = t.task.toStateJson();
    } catch {
      rendered = undefined; // a task that renders only inside its machine: nothing to read here
    }
    for (const f of fns) {
      if (Stack.of(f) !== stack || rendered === undefined || !refersTo(stack, rendered, { logicalId: stack.getLogicalId(f) })) continue;
      const reserved = stack.resolve(f.reservedConcurrentExecutions);
      if (typeof reserved === 'number' && reserved < limit * t.slots) {
        Annotations.of(t).addWarningV2('cdk-sfn-throttle:concurrencyAboveReserved',
          `limiter ${t.limiter.limiterName} lets ${Math.floor(limit / t.slots)} runs of ${t.task.stateId} at once on a key, but its function ${f.node.scope?.node.path ?? f.node.path} `
          + `has reserved concurrency ${reserved}: the calls above ${reserved} are throttled (Lambda.TooManyRequestsException) while they hold slots. `
          + `Lower the limit to ${reserved * t.slots}, or raise the reserved concurrency`);
      }
    }
    for (const { m, definition } of express) {
      if (!definition.includes(JSON.stringify(JSON.stringify(t.acquireState.stateId)).slice(1, -1))) continue;
      Annotations.of(t).addWarningV2('cdk-sfn-throttle:concurrencyInExpress',
        `${t.node.path} runs in the Express state machine ${m.node.path}, which emits no execution status events: the slots of an execution that fails outside `
        + `the task (a runtime error, a timeout) come back only when its lease expires (${t.limiter.leaseDuration.toSeconds()} s). Use a Standard state machine, or a shorter leaseDuration`);
    }
  }
}

function consumerEntry(c: BufferedQueueConsumer): PlanEntry {
  return {
    kind: 'consumer', path: c.node.path, mode: c.dispatchedFunction ? 'dispatch' : 'batchConsumer', maxConcurrency: c.maxConcurrency, batchSize: c.batchSize, fifo: c.fifo,
  };
}

/** Any SQS event source in the app: visibility timeout vs 6 × the function timeout; reserved concurrency. */
function checkEventSources(all: IConstruct[]): void {
  const mappings = all.filter((c): c is lambda.CfnEventSourceMapping => c instanceof lambda.CfnEventSourceMapping);
  for (const m of mappings) {
    const stack = Stack.of(m);
    const queue = all.find((c): c is sqs.CfnQueue => c instanceof sqs.CfnQueue && refersTo(stack, m.eventSourceArn, c));
    const fn = all.find((c): c is lambda.CfnFunction => c instanceof lambda.CfnFunction && refersTo(stack, m.functionName, c));
    if (!queue || !fn) continue;
    const visibility = Number(stack.resolve(queue.visibilityTimeout) ?? 30);
    const timeout = Number(stack.resolve(fn.timeout) ?? 3);
    if (Number.isFinite(visibility) && Number.isFinite(timeout) && visibility < 6 * timeout) {
      Annotations.of(m).addWarningV2('cdk-sfn-throttle:visibilityTimeout',
        `queue ${queue.node.path} has a visibility timeout of ${visibility} s, below 6 × the timeout of ${fn.node.path} (${timeout} s) = ${6 * timeout} s: `
        + 'messages in flight can be delivered twice');
    }
    const reserved = stack.resolve(fn.reservedConcurrentExecutions);
    const maxConcurrency = stack.resolve((m.scalingConfig as lambda.CfnEventSourceMapping.ScalingConfigProperty | undefined)?.maximumConcurrency);
    if (typeof reserved === 'number') {
      const below = typeof maxConcurrency === 'number' && reserved < maxConcurrency ? `, below the event source's maximum concurrency ${maxConcurrency}` : '';
      Annotations.of(m).addWarningV2('cdk-sfn-throttle:sqsConsumerReservedConcurrency',
        `${fn.node.path} consumes SQS with reserved concurrency ${reserved}${below}: throttled invocations return messages and count receives, `
        + 'good messages can reach the DLQ. Throttle with the event source\'s maximum concurrency instead.');
    }
  }
}

/**
 * Reserved concurrency per environment (account and Region): each has its own Lambda concurrency quota. Functions of
 * environment-agnostic stacks are summed together (they may all land in one account and Region).
 */
function checkReservedConcurrency(all: IConstruct[], settings: CheckSettings): void {
  const fns = all.filter((c): c is lambda.CfnFunction => c instanceof lambda.CfnFunction);
  const byEnv = new Map<string, { f: lambda.CfnFunction; n: number }[]>();
  for (const f of fns) {
    const n = Stack.of(f).resolve(f.reservedConcurrentExecutions);
    if (typeof n !== 'number') continue;
    const env = environmentOf(Stack.of(f));
    byEnv.set(env, [...(byEnv.get(env) ?? []), { f, n }]);
  }
  const reservable = settings.accountConcurrency - UNRESERVED_MINIMUM;
  for (const [env, reserved] of byEnv) {
    const total = reserved.reduce((s, x) => s + x.n, 0);
    if (total <= reservable) continue;
    for (const { f } of reserved) {
      Annotations.of(f).addWarningV2('cdk-sfn-throttle:reservedConcurrencySum',
        `reserved concurrency sums to ${total} across ${reserved.length} functions in ${env}; the account's concurrency is ${settings.accountConcurrency} with at least `
        + `${UNRESERVED_MINIMUM} unreserved, so at most ${reservable} can be reserved there (deployment fails above it)`);
    }
  }
}

/** `account/Region` of a stack, or a note that it is environment-agnostic. */
function environmentOf(stack: Stack): string {
  const known = (v: string) => !Token.isUnresolved(v);
  return known(stack.account) && known(stack.region) ? `account ${stack.account}, ${stack.region}` : 'environment-agnostic stacks';
}

/** The sustained StateTransition quota of Standard workflows where `stack` deploys. */
function transitionQuota(stack: Stack, settings: CheckSettings): { perSecond: number; bucket?: number; source: string } {
  if (settings.stateTransitionsPerSecond !== undefined) return { perSecond: settings.stateTransitionsPerSecond, source: 'stateTransitionsPerSecond' };
  const region = stack.region;
  if (!Token.isUnresolved(region) && STATE_TRANSITION_QUOTA.large.regions.includes(region)) {
    return { perSecond: STATE_TRANSITION_QUOTA.large.refillPerSecond, bucket: STATE_TRANSITION_QUOTA.large.bucket, source: `the default in ${region}` };
  }
  const where = Token.isUnresolved(region) ? 'an unknown Region (the smaller default assumed)' : region;
  return { perSecond: STATE_TRANSITION_QUOTA.other.refillPerSecond, bucket: STATE_TRANSITION_QUOTA.other.bucket, source: `the default in ${where}` };
}

/**
 * A state machine's planned load. Every RateLimitedTask and ThrottledMap in its definition is a link an item passes
 * once; items flow at the slowest link's rate, so the steady state is that flow through every link: transitions per
 * second = flow × the transitions of all links. A Standard workflow above its Region's sustained StateTransition
 * quota is a warning.
 */
function checkStateMachine(machine: sfn.StateMachine, all: IConstruct[], settings: CheckSettings): PlanEntry {
  const stack = Stack.of(machine);
  const cfn = machine.node.defaultChild as sfn.CfnStateMachine;
  const definition = JSON.stringify(stack.resolve(cfn.definitionString ?? cfn.definition) ?? '');
  const has = (state: sfn.State) => definition.includes(JSON.stringify(JSON.stringify(state.stateId)).slice(1, -1));
  const links: Link[] = [];
  for (const t of all.filter((c): c is RateLimitedTask => c instanceof RateLimitedTask)) {
    // a map's own per-item RateLimitedTask is counted with the map
    if (!has(t.acquireState) || (t.node.scope instanceof ThrottledMap && t.node.scope.limiter)) continue;
    links.push(link(t.node.path, t.limiter, t.acquireOptions));
  }
  for (const m of all.filter((c): c is ThrottledMap => c instanceof ThrottledMap)) {
    if (!m.limiter || !has(m.mapState)) continue;
    links.push(link(m.node.path, m.limiter, m.acquireOptions));
  }
  const standard = machine.stateMachineType === sfn.StateMachineType.STANDARD;
  const slowest = links.length > 0 ? links.reduce((a, b) => (b.itemsPerSecond < a.itemsPerSecond ? b : a)) : undefined;
  const flow = slowest?.itemsPerSecond ?? 0;
  const perItem = links.reduce((s, l) => ({
    transitions: s.transitions + l.transitionsPerItem,
    lambda: s.lambda + l.lambdaPerItem,
    gbSeconds: s.gbSeconds + l.lambdaPerItem * (l.memoryMb / 1024) * acquireHoldSeconds(settings),
    armGbSeconds: s.armGbSeconds + (l.arm ? l.lambdaPerItem * (l.memoryMb / 1024) * acquireHoldSeconds(settings) : 0),
    writes: s.writes + l.writesPerItem,
  }), { transitions: 0, lambda: 0, gbSeconds: 0, armGbSeconds: 0, writes: 0 });
  const transitionsPerSecond = flow * perItem.transitions;
  const quota = transitionQuota(stack, settings);
  if (standard && transitionsPerSecond > quota.perSecond) {
    Annotations.of(machine).addWarningV2('cdk-sfn-throttle:stateTransitionQuota',
      `planned ${round(transitionsPerSecond)} state transitions/s (${round(flow)} items/s through the slowest link ${slowest!.path} × ${perItem.transitions} transitions per item: `
      + `${links.map((l) => `${l.path} ${l.transitionsPerItem}`).join(', ')}) exceed the sustained Standard workflow StateTransition quota of ${quota.perSecond}/s `
      + `(${quota.source}${quota.bucket ? `, bucket ${quota.bucket}` : ''}): request an increase or use Express`);
  }
  const p = settings.prices;
  const million = 1_000_000;
  const cost = {
    transitions: standard ? perItem.transitions * million * p.standardTransition : 0,
    lambda: million * (perItem.lambda * p.lambdaRequest + perItem.armGbSeconds * p.lambdaArmGbSecond
      + (perItem.gbSeconds - perItem.armGbSeconds) * p.lambdaX86GbSecond),
    dynamoDbWrites: perItem.writes * million * p.dynamoDbWriteRequestUnit,
  };
  return {
    kind: 'stateMachine',
    path: machine.node.path,
    type: machine.stateMachineType,
    throttledLinks: links.map((l) => ({ ...l, itemsPerSecond: round(l.itemsPerSecond) })),
    slowestLink: slowest?.path,
    effectiveItemsPerSecond: slowest ? round(flow) : undefined,
    plannedTransitionsPerSecond: round(transitionsPerSecond),
    transitionQuotaPerSecond: quota.perSecond,
    transitionQuotaSource: quota.source,
    throttleCostPerMillionItemsUsd: { ...mapValues(cost, round), total: round(cost.transitions + cost.lambda + cost.dynamoDbWrites) },
  };
}

/** One throttled link of a state machine: what an item costs there and how fast items pass. */
interface Link {
  readonly path: string;
  readonly itemsPerSecond: number;
  readonly transitionsPerItem: number;
  readonly lambdaPerItem: number;
  readonly writesPerItem: number;
  readonly memoryMb: number;
  readonly arm: boolean;
}

/** acquire, Wait, the protected state: 3 transitions, one acquire call, one conditional write (usually). */
function link(linkPath: string, limiter: IRateLimiter, options: AcquireOptions | undefined): Link {
  const shape = acquireFunctionShape(limiter);
  return {
    path: linkPath,
    itemsPerSecond: limiter.ratePerSecond / tokensOf(options),
    transitionsPerItem: 3,
    lambdaPerItem: 1,
    writesPerItem: 1,
    memoryMb: shape.memoryMb,
    arm: shape.arm,
  };
}

/**
 * The plan files, written by a synthesis step into the cloud assembly directory (not by the aspect itself, which runs
 * before the assembly exists).
 */
function writePlanAtSynthesis(root: IConstruct, plan: PlanEntry[]): void {
  if ((root as any)[PLAN_ATTACHED]) return;
  Object.defineProperty(root, PLAN_ATTACHED, { value: true });
  attachCustomSynthesis(root as Construct, { onSynthesize: (session) => writePlanFiles(session.outdir, plan) });
}

const PLAN_ATTACHED = Symbol.for('cdk-sfn-throttle.throttle-plan-attached');

function writePlanFiles(outdir: string, plan: PlanEntry[]): void {
  fs.mkdirSync(outdir, { recursive: true });
  fs.writeFileSync(path.join(outdir, 'throttle-plan.json'), `${JSON.stringify({ version: 1, entries: plan }, null, 2)}\n`);
  const lines = ['# Throttle plan', ''];
  for (const e of plan) {
    const details = Object.entries(e).filter(([k, v]) => k !== 'kind' && k !== 'path' && v !== undefined)
      .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
    lines.push(`- **${e.kind}** \`${e.path}\` — ${details.join('; ')}`);
  }
  fs.writeFileSync(path.join(outdir, 'throttle-plan.md'), `${lines.join('\n')}\n`);
}

function refersTo(stack: Stack, value: unknown, target: { logicalId: string }): boolean {
  const id = stack.resolve(target.logicalId);
  return JSON.stringify(stack.resolve(value) ?? '').includes(`"${id}"`);
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

function mapValues<T extends Record<string, number>>(o: T, f: (n: number) => number): T {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v)])) as T;
}
