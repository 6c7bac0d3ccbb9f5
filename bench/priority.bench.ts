// Priority classes under contention. (a) The limiter core: Limiter containers over an in-memory store with 5–20 ms per
// call (DynamoDB from Lambda), 10/s burst 10, priorityReserve 0.2. LOW work saturates the limit at twice its rate (20
// workers, each call 1 s long; a refused acquire is retried after U(0, 1 s), as the acquire state's Retry on
// RateLimitExceeded does: IntervalSeconds 1, BackoffRate 1, JitterStrategy FULL); HIGH work arrives at a fifth of the
// limit (Poisson, 2/s) and reserves. (b) The same through the local runner: state transitions per admission per class.
// Prints figures (and the issue's targets beside them); asserts nothing.
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { App, CfnResource, Stack } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { LatencyStore } from './rate-limiter.bench';
import { percentile } from './stats';
import { Limiter, type LimiterConfig, type PriorityName } from '../lambda/rate-limiter/limiter';
import { MemoryBucketStore } from '../lambda/rate-limiter/store';
import { type LocalExecution, LocalRunner } from '../local/runner';
import { nowUs, sleep } from '../local/timing';
import { MapConcurrency, Priority, RateLimitedTask, RateLimiter, RetryPolicy, ThrottledMap } from '../src';

const RATE = 10;
const BURST = 10;
const INTERVAL_US = 1e6 / RATE;

export interface PriorityScenario {
  readonly name: string;
  readonly durationS: number;
  /** Background workers (closed loop: acquire, then a call of `callMs`), and their class (undefined: none, RESERVE). */
  readonly workers: number;
  readonly workerClass: PriorityName | undefined;
  /** HIGH arrivals per second (Poisson); 0 for none. */
  readonly highPerSecond: number;
  /** The class the arrivals acquire with (undefined: none). */
  readonly highClass: PriorityName | undefined;
  readonly callMs: number;
}

export const priorityScenarios: PriorityScenario[] = [
  { name: 'LOW 2× the limit + HIGH at 20 %', durationS: 120, workers: 20, workerClass: 'LOW', highPerSecond: 2, highClass: 'HIGH', callMs: 1000 },
  { name: 'LOW 2× the limit, no HIGH', durationS: 60, workers: 20, workerClass: 'LOW', highPerSecond: 0, highClass: 'HIGH', callMs: 1000 },
  { name: 'no classes: background 2× + arrivals at 20 % (all RESERVE)', durationS: 60, workers: 20, workerClass: undefined, highPerSecond: 2, highClass: undefined, callMs: 1000 },
];

/** Lambda-like containers of the acquire function: a call takes an idle one or starts a new one (own caches). */
class Containers {
  private readonly idle: Limiter[] = [];
  created = 0;
  constructor(private readonly make: () => Limiter) {}
  async run<T>(fn: (l: Limiter) => Promise<T>): Promise<T> {
    const c = this.idle.pop() ?? (this.created++, this.make());
    try {
      return await fn(c);
    } finally {
      this.idle.push(c);
    }
  }
}

interface ClassFigures { attempts: number; refused: number; admitted: number; dynamoCalls: number; errors: number }

/** Five to twenty ms per store call, uniform. */
const latency = () => 5 + Math.random() * 15;

export async function runPriorityCore(s: PriorityScenario): Promise<Record<string, string | number>> {
  const config: LimiterConfig = { limiterName: 'prio', ratePerSecond: RATE, burst: BURST, shards: 1, maxWaitMs: 300_000, priorityReserve: 0.2 };
  const store = new LatencyStore(new MemoryBucketStore(), latency);
  const pool = new Containers(() => new Limiter(config, { store, clockUs: nowUs, random: Math.random }));
  const byClass: Record<string, ClassFigures> = {};
  const fig = (c: string) => (byClass[c] ??= { attempts: 0, refused: 0, admitted: 0, dynamoCalls: 0, errors: 0 });
  const slots: number[] = [];
  const highWaitUs: number[] = [];
  const highWaitAfterAnswerUs: number[] = [];
  const start = nowUs();
  const end = start + s.durationS * 1e6;

  /** One acquire through a container: the handler sleeps the sub-second part of a wait before it returns. */
  const attempt = (cls: PriorityName | undefined) => pool.run(async (limiter) => {
    const out = await limiter.acquire({ key: 'default', tokens: 1, mode: 'RESERVE', priority: cls });
    const answeredUs = nowUs();
    if (out.admitted) await sleep((out.waitUs % 1e6) / 1000);
    return { out, answeredUs };
  });

  /** Acquires until admitted (a refusal retried after U(0, 1 s)); returns the slot and when the answer came. */
  const acquire = async (cls: PriorityName | undefined, label: string): Promise<{ atUs: number; answeredUs: number } | undefined> => {
    const f = fig(label);
    while (nowUs() < end) {
      f.attempts++;
      try {
        const { out, answeredUs } = await attempt(cls);
        f.dynamoCalls += out.dynamoCalls;
        if (out.admitted) {
          f.admitted++;
          slots.push(out.atUs);
          return { atUs: out.atUs, answeredUs };
        }
        f.refused++;
      } catch {
        f.errors++;
      }
      await sleep(Math.random() * 1000);
    }
    return undefined;
  };

  const workerLabel = s.workerClass ?? 'background (no class)';
  const worker = async () => {
    while (nowUs() < end) {
      const got = await acquire(s.workerClass, workerLabel);
      if (!got) return;
      await sleep((got.atUs - nowUs()) / 1000);
      await sleep(s.callMs);
    }
  };
  const highLabel = s.highClass ?? 'arrivals (no class)';
  const arrivals: Promise<void>[] = [];
  const arrive = async () => {
    const askedUs = nowUs();
    const got = await acquire(s.highClass, highLabel);
    if (!got) return;
    highWaitUs.push(got.atUs - askedUs);
    highWaitAfterAnswerUs.push(Math.max(0, got.atUs - got.answeredUs));
  };
  const generator = async () => {
    if (s.highPerSecond <= 0) return;
    for (;;) {
      await sleep((-Math.log(1 - Math.random()) / s.highPerSecond) * 1000);
      if (nowUs() >= end) return;
      arrivals.push(arrive());
    }
  };
  await Promise.all([...Array.from({ length: s.workers }, worker), generator()]);
  await Promise.all(arrivals);

  const inRun = slots.filter((t) => t <= end);
  const first = Math.min(...slots);
  const ideal = BURST + (RATE * (end - first)) / 1e6;
  const perClass = (label: string) => {
    const f = byClass[label];
    if (!f) return '-';
    return `${f.admitted} admitted, ${f.refused} refused${f.errors ? `, ${f.errors} errors` : ''}; ${(f.dynamoCalls / Math.max(1, f.admitted)).toFixed(2)} DynamoDB calls/admission`;
  };
  const inIntervals = (us: number) => (us / INTERVAL_US).toFixed(2);
  return {
    'scenario': `${s.name} (${s.durationS} s)`,
    'background workers': perClass(workerLabel),
    'arrivals': s.highPerSecond > 0 ? perClass(highLabel) : '-',
    'arrival wait p50 / p99 / max, intervals (request → slot)': highWaitUs.length
      ? `${inIntervals(percentile(highWaitUs, 50))} / ${inIntervals(percentile(highWaitUs, 99))} / ${inIntervals(Math.max(...highWaitUs))}` : '-',
    'arrival wait p50 / p99, intervals (answer → slot)': highWaitAfterAnswerUs.length
      ? `${inIntervals(percentile(highWaitAfterAnswerUs, 50))} / ${inIntervals(percentile(highWaitAfterAnswerUs, 99))}` : '-',
    'utilization (all classes)': `${(100 * inRun.length / ideal).toFixed(1)} % (${inRun.length} of ${ideal.toFixed(0)})`,
    'containers': pool.created,
  };
}

/**
 * (b) Through the runner: one execution runs the LOW work (a ThrottledMap of 20, each item a RateLimitedTask LOW whose
 * call takes 1 s), and HIGH executions (a RateLimitedTask HIGH) start at 2/s (Poisson) meanwhile. One state machine, a
 * Choice on `$.class`.
 */
export async function runPriorityRunner(options: { lowItems: number; durationS: number }): Promise<Record<string, string | number>[]> {
  const stack = new Stack(new App(), 'Priority', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiter = new RateLimiter(stack, 'Limiter', { limiterName: 'prio', ratePerSecond: RATE, burst: BURST, priorityReserve: 0.2 });
  const calls: { cls: string; atUs: number; started?: number }[] = [];
  const call = (cls: 'LOW' | 'HIGH') => {
    const fn = lambda.Function.fromFunctionArn(stack, `${cls}Fn`, `arn:aws:lambda:us-east-1:123456789012:function:work-${cls.toLowerCase()}`);
    const invoke = tasks.LambdaInvoke.jsonPath(stack, `${cls} Work`, { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' });
    return new RateLimitedTask(stack, `${cls} Call`, {
      limiter,
      task: invoke,
      acquire: { priority: cls === 'LOW' ? Priority.LOW : Priority.HIGH },
      retry: RetryPolicy.throttling({ errors: ['ThrottlingException'], maxAttempts: 5 }),
    });
  };
  const low = new ThrottledMap(stack, 'LOW Items', { itemsPath: '$.items', concurrency: MapConcurrency.fixed(20), itemProcessor: call('LOW'), resultPath: sfn.JsonPath.DISCARD });
  const which = new sfn.Choice(stack, 'Which Class').when(sfn.Condition.stringEquals('$.class', 'LOW'), low).otherwise(call('HIGH'));
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(which) });
  const runner = await LocalRunner.start(stack, machine, {
    taskHandlers: {
      'LOW Work': async () => {
        calls.push({ cls: 'LOW', atUs: nowUs() });
        await sleep(1000);
        return { ok: true };
      },
      'HIGH Work': async (input: any) => {
        calls.push({ cls: 'HIGH', atUs: nowUs(), started: input.startedUs });
        return { ok: true };
      },
    },
    dynamoDbProcess: true,
  });
  const write = process.stdout.write;
  process.stdout.write = (() => true) as any;
  try {
    // the function loaded before the clock starts (its first call imports the SDK): three acquires on a key of their own
    const lambdaClient = new LambdaClient({ region: 'us-east-1', endpoint: process.env.AWS_ENDPOINT_URL_LAMBDA, credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
    const fnName = runner.nameOf(stack.getLogicalId(limiter.acquireFunction.node.defaultChild as CfnResource));
    for (let i = 0; i < 3; i++) await lambdaClient.send(new InvokeCommand({ FunctionName: fnName, Payload: Buffer.from(JSON.stringify({ key: 'warm-up', mode: 'TRY' })) }));
    lambdaClient.destroy();
    const t0 = nowUs();
    const end = t0 + options.durationS * 1e6;
    const lowRun = runner.startExecution({ class: 'LOW', items: Array.from({ length: options.lowItems }, (_, i) => ({ i })) });
    const highRuns: Promise<LocalExecution>[] = [];
    while (nowUs() < end) {
      await sleep((-Math.log(1 - Math.random()) / 2) * 1000);
      highRuns.push(runner.startExecution({ class: 'HIGH', startedUs: nowUs() }).result);
    }
    const highs = await Promise.all(highRuns);
    const abortedUs = nowUs();
    lowRun.abort('BenchOver', 'the HIGH arrivals ended');
    const lowResult = await lowRun.result;
    const count = (e: LocalExecution, names: string[]) => e.events.filter((x) => (x.type === 'StateEntered' || x.type === 'StateRetried') && names.includes(x.stateName ?? '')).length;
    const lowStates = ['LOW Call Acquire', 'LOW Call Wait', 'LOW Work', 'LOW Call Backoff', 'LOW Call Backoff Wait'];
    const highStates = ['HIGH Call Acquire', 'HIGH Call Wait', 'HIGH Work', 'HIGH Call Backoff', 'HIGH Call Backoff Wait'];
    // the LOW execution's transitions are counted up to its abort: so are its calls
    const lowCalls = calls.filter((c) => c.cls === 'LOW' && c.atUs <= abortedUs).length;
    const highCalls = calls.filter((c) => c.cls === 'HIGH');
    const waits = highCalls.map((c) => (c.atUs - (c.started ?? c.atUs)) / INTERVAL_US);
    const slow = highCalls.filter((c) => c.atUs - (c.started ?? c.atUs) > 2 * INTERVAL_US)
      .map((c) => `${(((c.started ?? c.atUs) - t0) / 1e6).toFixed(1)} s: ${((c.atUs - (c.started ?? c.atUs)) / INTERVAL_US).toFixed(1)}`);
    const lowTransitions = count(lowResult, lowStates);
    const highTransitions = highs.reduce((n, e) => n + count(e, highStates), 0);
    const retried = (e: LocalExecution, name: string) => e.events.filter((x) => x.type === 'StateRetried' && x.stateName === name).length;
    return [
      {
        'class': 'LOW (ThrottledMap of 20, 1 s calls)',
        'admissions (calls)': lowCalls,
        'transitions / admission (entered + retried)': (lowTransitions / Math.max(1, lowCalls)).toFixed(2),
        'acquire refusals retried / admission': (retried(lowResult, 'LOW Call Acquire') / Math.max(1, lowCalls)).toFixed(2),
        'wait p50 / p99, intervals (execution start → call)': '-',
        'waits > 2 intervals (started at: wait)': '-',
        'calls/s over the run': (lowCalls / ((abortedUs - t0) / 1e6)).toFixed(2),
      },
      {
        'class': 'HIGH (an execution each, 2/s)',
        'admissions (calls)': highCalls.length,
        'transitions / admission (entered + retried)': (highTransitions / Math.max(1, highCalls.length)).toFixed(2),
        'acquire refusals retried / admission': (highs.reduce((n, e) => n + retried(e, 'HIGH Call Acquire'), 0) / Math.max(1, highCalls.length)).toFixed(2),
        'wait p50 / p99, intervals (execution start → call)': `${percentile(waits, 50).toFixed(2)} / ${percentile(waits, 99).toFixed(2)}`,
        'waits > 2 intervals (started at: wait)': slow.length ? slow.join(', ') : 'none',
        'calls/s over the run': (highCalls.length / options.durationS).toFixed(2),
      },
    ];
  } finally {
    process.stdout.write = write;
    await runner.stop();
  }
}
