import { App, Duration, Stack } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { LocalRunner, type LocalExecution } from '../local/runner';
import { type Admission, maxInWindow, nowUs } from '../local/timing';
import { RateLimitedTask, RateLimiter, RetryPolicy } from '../src';

const RATE = 10;
const BURST = 1;
const ITEMS = 60;
const THROTTLE_ERROR = 'Lambda.TooManyRequestsException';

/**
 * A downstream that accepts 10 calls/s (burst 1, with 10 ms of clock tolerance) and rejects the rest with a
 * throttling error, as a strict third-party API would.
 */
function downstream() {
  const calls: Admission[] = [];
  let accepted = 0;
  let tat = 0;
  const handler = () => {
    const now = nowUs();
    calls.push({ atUs: now, tokens: 1 });
    const t = Math.max(tat, now);
    if (t + 1e6 / RATE - BURST * (1e6 / RATE) - 10_000 > now) {
      throw Object.assign(new Error('Rate exceeded'), { name: THROTTLE_ERROR });
    }
    tat = t + 1e6 / RATE;
    accepted++;
    return { ok: true };
  };
  return { calls, handler, accepted: () => accepted };
}

function apiTask(stack: Stack) {
  return new tasks.CallAwsService(stack, 'Call API', { service: 'sts', action: 'getCallerIdentity', iamResources: ['*'], resultPath: '$.api' });
}

function figures(name: string, results: LocalExecution[], calls: Admission[], accepted: number, elapsedS: number, lambdaStates: string[]) {
  const entered = results.flatMap((r) => r.events.filter((e) => e.type === 'StateEntered'));
  return {
    'design': name,
    'items ok': results.filter((r) => r.status === 'SUCCEEDED').length,
    'downstream calls': calls.length,
    'accepted': accepted,
    'max 0.1s (bound 2)': maxInWindow(calls, 100_000),
    'max 1s (bound 11)': maxInWindow(calls, 1_000_000),
    'max 5s (bound 51)': maxInWindow(calls, 5_000_000),
    'total s (ideal 5.9)': elapsedS,
    'transitions/item': entered.length / ITEMS,
    'Lambda invocations/item': entered.filter((e) => lambdaStates.includes(e.stateName ?? '')).length / ITEMS,
  };
}

async function timed(runner: LocalRunner, inputs: unknown[]) {
  const out = process.stdout.write;
  process.stdout.write = (() => true) as any; // EMF lines
  try {
    const t0 = nowUs();
    const results = await Promise.all(inputs.map((i) => runner.run(i)));
    return { results, elapsedS: (nowUs() - t0) / 1e6 };
  } finally {
    process.stdout.write = out;
  }
}

/** 60 items, each its own execution, through RateLimitedTask (RESERVE). */
export async function runRateLimitedTask() {
  const app = new App();
  const stack = new Stack(app, 'Limited', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: RATE, burst: BURST, maxWait: Duration.minutes(5) });
  const limited = new RateLimitedTask(stack, 'Limited', { limiter, task: apiTask(stack), retry: RetryPolicy.throttling({ errors: [THROTTLE_ERROR] }) });
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
  const d = downstream();
  const runner = await LocalRunner.start(stack, machine, { taskHandlers: { 'Call API': d.handler }, dynamoDbProcess: true });
  try {
    const { results, elapsedS } = await timed(runner, Array.from({ length: ITEMS }, (_, i) => ({ i })));
    return figures('RateLimitedTask (RESERVE), one execution per item', results, d.calls, d.accepted(), elapsedS, ['Limited Acquire', 'Limited Backoff']);
  } finally {
    await runner.stop();
  }
}

/** Baseline (a): a Map with MaxConcurrency 10 and Retry on the throttling error, no limiter. */
export async function runMapWithRetry() {
  const app = new App();
  const stack = new Stack(app, 'Map', { env: { account: '123456789012', region: 'us-east-1' } });
  const call = apiTask(stack);
  call.addRetry({ errors: [THROTTLE_ERROR], interval: Duration.seconds(1), backoffRate: 2, maxAttempts: 8, jitterStrategy: sfn.JitterType.FULL });
  const map = new sfn.Map(stack, 'Items', { itemsPath: '$.items', maxConcurrency: 10 });
  map.itemProcessor(call);
  return runMapBaseline('Map MaxConcurrency 10 + Retry (no limiter)', stack, map);
}

/** Baseline (b): a serial loop with a fixed 1 s Wait before each call (Map MaxConcurrency 1). */
export async function runFixedWaitLoop() {
  const app = new App();
  const stack = new Stack(app, 'Loop', { env: { account: '123456789012', region: 'us-east-1' } });
  const pace = new sfn.Wait(stack, 'Pace', { time: sfn.WaitTime.duration(Duration.seconds(1)) });
  const call = apiTask(stack);
  call.addRetry({ errors: [THROTTLE_ERROR], interval: Duration.seconds(1), maxAttempts: 3 });
  const map = new sfn.Map(stack, 'Items', { itemsPath: '$.items', maxConcurrency: 1 });
  map.itemProcessor(pace.next(call));
  return runMapBaseline('fixed 1 s Wait loop (Map MaxConcurrency 1)', stack, map);
}

/** Runs a one-execution Map baseline over the 60 items against the strict downstream. */
async function runMapBaseline(name: string, stack: Stack, map: sfn.Map) {
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
  const d = downstream();
  const runner = await LocalRunner.start(stack, machine, { taskHandlers: { 'Call API': d.handler } });
  try {
    const { results, elapsedS } = await timed(runner, [{ items: Array.from({ length: ITEMS }, (_, i) => ({ i })) }]);
    const r = results[0];
    return {
      ...figures(name, [], d.calls, d.accepted(), elapsedS, []),
      'items ok': r.status === 'SUCCEEDED' ? ITEMS : 0,
      'transitions/item': r.events.filter((e) => e.type === 'StateEntered').length / ITEMS,
    };
  } finally {
    await runner.stop();
  }
}
