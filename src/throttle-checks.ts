import * as fs from 'fs';
import * as path from 'path';
import { Annotations, IAspect, Stack, Stage, Token } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { IConstruct } from 'constructs';
import { AcquireOptions } from './acquire';
import { BufferedQueueConsumer } from './buffered-queue-consumer';
import { RateLimitedTask } from './rate-limited-task';
import { IRateLimiter } from './i-rate-limiter';
import { RateLimiterBase } from './rate-limiter';
import { ThrottledMap } from './throttled-map';

/**
 * Unit prices the throttle plan's cost estimate uses (us-east-1, on-demand, USD; November 2026 price pages).
 */
export class ThrottlePrices {
  /** Step Functions Standard, per state transition. */
  public static readonly STANDARD_TRANSITION = 0.000025;
  /** Lambda, per request. */
  public static readonly LAMBDA_REQUEST = 0.0000002;
  /** Lambda on Arm, per GB-second. */
  public static readonly LAMBDA_ARM_GB_SECOND = 0.0000133334;
  /** DynamoDB on-demand, per write request unit. */
  public static readonly DYNAMODB_WRITE = 0.000000625;
  /** Assumed duration of one acquire call, seconds (the bench's p50 is a few ms; sub-second waits are slept in it). */
  public static readonly ACQUIRE_SECONDS = 0.05;

  private constructor() {}
}

/** Regions where Standard workflows get 5,000 state transitions/s by default (800 elsewhere). */
const LARGE_TRANSITION_QUOTA_REGIONS = ['us-east-1', 'us-west-2', 'eu-west-1'];
/** Lambda's default concurrency quota per account and Region, and what must stay unreserved. */
const ACCOUNT_CONCURRENCY = 1000;
const UNRESERVED_MINIMUM = 100;

/**
 * Options of `ThrottleChecks`.
 */
export interface ThrottleChecksOptions {
  /**
   * Write `throttle-plan.json` and `throttle-plan.md` into the cloud assembly directory.
   *
   * @default true
   */
  readonly writePlan?: boolean;
}

/** One line of the throttle plan. */
interface PlanEntry {
  readonly kind: 'limiter' | 'map' | 'consumer' | 'stateMachine';
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

  constructor(options: ThrottleChecksOptions = {}) {
    this.writePlan = options.writePlan ?? true;
  }

  public visit(node: IConstruct): void {
    // The first node visited is the scope the aspect was added to: check everything under it once.
    if (this.done) return;
    this.done = true;
    const all = node.node.findAll();
    const plan: PlanEntry[] = [];
    for (const limiter of all.filter((c): c is RateLimiterBase => c instanceof RateLimiterBase)) plan.push(limiterEntry(limiter));
    for (const map of all.filter((c): c is ThrottledMap => c instanceof ThrottledMap)) plan.push(checkMap(map));
    for (const consumer of all.filter((c): c is BufferedQueueConsumer => c instanceof BufferedQueueConsumer)) plan.push(consumerEntry(consumer));
    checkEventSources(all);
    checkReservedConcurrency(all);
    for (const machine of all.filter((c): c is sfn.StateMachine => c instanceof sfn.StateMachine)) {
      plan.push(checkStateMachine(machine, all));
    }
    if (this.writePlan) writePlanFiles(node, plan);
  }
}

function limiterEntry(l: IRateLimiter): PlanEntry {
  return {
    kind: 'limiter',
    path: l.node.path,
    name: l.limiterName,
    ratePerSecond: l.ratePerSecond,
    burst: l.burst,
    shards: l.shards,
    maxWaitSeconds: l.maxWait.toSeconds(),
    writesPerSecondPerShard: round(l.ratePerSecond / l.shards),
  };
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

function checkReservedConcurrency(all: IConstruct[]): void {
  const fns = all.filter((c): c is lambda.CfnFunction => c instanceof lambda.CfnFunction);
  const reserved = fns.map((f) => ({ f, n: Stack.of(f).resolve(f.reservedConcurrentExecutions) })).filter((x) => typeof x.n === 'number');
  const total = reserved.reduce((s, x) => s + (x.n as number), 0);
  if (total > ACCOUNT_CONCURRENCY - UNRESERVED_MINIMUM) {
    for (const { f } of reserved) {
      Annotations.of(f).addWarningV2('cdk-sfn-throttle:reservedConcurrencySum',
        `reserved concurrency sums to ${total} across ${reserved.length} functions; the account default is ${ACCOUNT_CONCURRENCY} with at least `
        + `${UNRESERVED_MINIMUM} unreserved, so at most ${ACCOUNT_CONCURRENCY - UNRESERVED_MINIMUM} can be reserved (deployment fails above it)`);
    }
  }
}

/**
 * A state machine's planned load: every RateLimitedTask and ThrottledMap in its definition, at its limiter's
 * rate. A Standard workflow above the default state-transition quota is a warning.
 */
function checkStateMachine(machine: sfn.StateMachine, all: IConstruct[]): PlanEntry {
  const stack = Stack.of(machine);
  const cfn = machine.node.defaultChild as sfn.CfnStateMachine;
  const definition = JSON.stringify(stack.resolve(cfn.definitionString ?? cfn.definition) ?? '');
  const has = (state: sfn.State) => definition.includes(JSON.stringify(JSON.stringify(state.stateId)).slice(1, -1));
  const links: { path: string; itemsPerSecond: number; transitionsPerItem: number; lambdaPerItem: number; writesPerItem: number }[] = [];
  for (const t of all.filter((c): c is RateLimitedTask => c instanceof RateLimitedTask)) {
    // a map's own per-item RateLimitedTask is counted with the map
    if (!has(t.acquireState) || (t.node.scope instanceof ThrottledMap && t.node.scope.limiter)) continue;
    // acquire, wait, task; one acquire call, one conditional write (usually)
    links.push({
      path: t.node.path,
      itemsPerSecond: t.limiter.ratePerSecond / tokensOf(t.acquireOptions),
      transitionsPerItem: 3,
      lambdaPerItem: 1,
      writesPerItem: 1,
    });
  }
  for (const m of all.filter((c): c is ThrottledMap => c instanceof ThrottledMap)) {
    if (!m.limiter || !has(m.mapState)) continue;
    links.push({
      path: m.node.path,
      itemsPerSecond: m.limiter.ratePerSecond / tokensOf(m.acquireOptions),
      transitionsPerItem: 3,
      lambdaPerItem: 1,
      writesPerItem: 1,
    });
  }
  const standard = machine.stateMachineType === sfn.StateMachineType.STANDARD;
  const region = stack.region;
  const quota = !Token.isUnresolved(region) && LARGE_TRANSITION_QUOTA_REGIONS.includes(region) ? 5000 : 800;
  const transitionsPerSecond = links.reduce((s, l) => s + l.itemsPerSecond * l.transitionsPerItem, 0);
  if (standard && transitionsPerSecond > quota) {
    Annotations.of(machine).addWarningV2('cdk-sfn-throttle:stateTransitionQuota',
      `planned ${round(transitionsPerSecond)} state transitions/s (${links.map((l) => `${l.path}: ${round(l.itemsPerSecond)} items/s × ${l.transitionsPerItem}`).join(', ')}) `
      + `exceed the default Standard workflow quota of ${quota}/s in ${Token.isUnresolved(region) ? 'an unknown Region (smallest quota assumed)' : region}: `
      + 'request an increase or use Express');
  }
  const slowest = links.length > 0 ? links.reduce((a, b) => (b.itemsPerSecond < a.itemsPerSecond ? b : a)) : undefined;
  const perItem = links.reduce((s, l) => ({
    transitions: s.transitions + l.transitionsPerItem, lambda: s.lambda + l.lambdaPerItem, writes: s.writes + l.writesPerItem,
  }), { transitions: 0, lambda: 0, writes: 0 });
  const million = 1_000_000;
  const cost = {
    transitions: standard ? perItem.transitions * million * ThrottlePrices.STANDARD_TRANSITION : 0,
    lambda: perItem.lambda * million * (ThrottlePrices.LAMBDA_REQUEST + 0.125 * ThrottlePrices.ACQUIRE_SECONDS * ThrottlePrices.LAMBDA_ARM_GB_SECOND),
    dynamoDbWrites: perItem.writes * million * ThrottlePrices.DYNAMODB_WRITE,
  };
  return {
    kind: 'stateMachine',
    path: machine.node.path,
    type: machine.stateMachineType,
    throttledLinks: links.map((l) => ({ ...l, itemsPerSecond: round(l.itemsPerSecond) })),
    slowestLink: slowest?.path,
    effectiveItemsPerSecond: slowest ? round(slowest.itemsPerSecond) : undefined,
    plannedTransitionsPerSecond: round(transitionsPerSecond),
    transitionQuotaPerSecond: quota,
    throttleCostPerMillionItemsUsd: { ...mapValues(cost, round), total: round(cost.transitions + cost.lambda + cost.dynamoDbWrites) },
  };
}

function writePlanFiles(root: IConstruct, plan: PlanEntry[]): void {
  const stage = Stage.of(root) ?? (root.node.root as Stage);
  const outdir = (stage as Stage | undefined)?.outdir;
  if (!outdir) return;
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
