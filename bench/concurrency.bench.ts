// The ConcurrencyLimiter beside the construct people use today, @dontirun/state-machine-semaphore, in the same run,
// the same local runner and the same in-process dynalite. Prints figures; asserts nothing.
import { Semaphore } from '@dontirun/state-machine-semaphore';
import { App, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { type LocalExecution, LocalRunner, statesEntered } from '../local/runner';
import { sleep } from '../local/timing';
import { ConcurrencyLimitedTask, ConcurrencyLimiter } from '../src';

type Impl = 'ConcurrencyLimiter' | 'state-machine-semaphore';

/** One implementation around a task 'Job' (a stand-in job that counts how many run at once). */
function build(impl: Impl, limit: number) {
  const app = new App();
  const stack = new Stack(app, 'Bench', { env: { account: '123456789012', region: 'us-east-1' } });
  const fn = lambda.Function.fromFunctionArn(stack, 'Query', 'arn:aws:lambda:us-east-1:123456789012:function:query');
  const job = tasks.LambdaInvoke.jsonPath(stack, 'Job', { lambdaFunction: fn, retryOnServiceExceptions: false, payloadResponseOnly: true });
  let chain: sfn.IChainable;
  let pollState: string | undefined;
  if (impl === 'ConcurrencyLimiter') {
    const limiter = new ConcurrencyLimiter(stack, 'Db', { limit, limiterName: 'db', removalPolicy: RemovalPolicy.DESTROY, leaseDuration: Duration.minutes(5) });
    chain = new ConcurrencyLimitedTask(stack, 'Limited', { limiter, task: job });
  } else {
    chain = new Semaphore(stack, 'Semaphore', { lockName: 'db', limit, job, nextState: new sfn.Pass(stack, 'Done') });
    pollState = 'Wait to get Lock';
  }
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(chain) });
  return { stack, machine, pollState };
}

interface JobCounter {
  handler: (input: any) => Promise<unknown>;
  maxAtOnce: () => number;
  busyMs: () => number;
  /** Every job's start and end, epoch ms. */
  spans: () => Array<[number, number]>;
  reset: () => void;
}

function jobs(durationMs: (n: number) => number, fails: (n: number) => boolean = () => false): JobCounter {
  let running = 0;
  let max = 0;
  let busy = 0;
  let started = 0;
  let spans: Array<[number, number]> = [];
  return {
    handler: async () => {
      const n = ++started;
      running++;
      max = Math.max(max, running);
      const t0 = Date.now();
      try {
        await sleep(durationMs(n));
        if (fails(n)) throw Object.assign(new Error(`job ${n} broke`), { name: 'Job.Broken' });
        return { n };
      } finally {
        busy += Date.now() - t0;
        spans.push([t0, Date.now()]);
        running--;
      }
    },
    maxAtOnce: () => max,
    busyMs: () => busy,
    spans: () => spans,
    reset: () => {
      max = 0;
      busy = 0;
      spans = [];
    },
  };
}

async function runBatch(runner: LocalRunner, n: number): Promise<{ results: LocalExecution[]; wallS: number }> {
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: n }, (_, i) => runner.run({ i })));
  return { results, wallS: (Date.now() - t0) / 1000 };
}

const dynamoCalls = (runner: LocalRunner) => Object.values((runner as any).db.requests?.() ?? {}).reduce((a: number, b) => a + (b as number), 0);
const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/** 20 executions, limit 5, 200 ms jobs, a new key. */
export async function runContention(impl: Impl) {
  const b = build(impl, 5);
  const job = jobs(() => 200);
  const runner = await LocalRunner.start(b.stack, b.machine, { taskHandlers: { Job: job.handler } });
  try {
    const before = dynamoCalls(runner);
    const { results, wallS } = await runBatch(runner, 20);
    const during = dynamoCalls(runner) - before;
    // then 5 on the same key, one at a time's worth of slots: nobody waits
    const quiet = dynamoCalls(runner);
    await runBatch(runner, 5);
    const withoutWaiting = (dynamoCalls(runner) - quiet) / 5;
    return {
      'implementation': impl,
      'scenario': '20 executions, limit 5, 200 ms jobs',
      'succeeded': results.filter((r) => r.status === 'SUCCEEDED').length,
      'max at once': job.maxAtOnce(),
      'wall s (ideal 0.80)': wallS.toFixed(2),
      'transitions/exec': avg(results.map((r) => statesEntered(r))).toFixed(1),
      'DynamoDB calls/exec': (during / 20).toFixed(1),
      'then 5 (nobody waits): DynamoDB calls/exec': withoutWaiting.toFixed(1),
      'polling transitions': b.pollState ? results.reduce((n, r) => n + statesEntered(r, b.pollState), 0) : 0,
    };
  } finally {
    await runner.stop();
  }
}

/** Jobs #3, #10, #17 throw; then 10 more executions: how many run at once. */
export async function runFailures(impl: Impl) {
  const b = build(impl, 5);
  const job = jobs(() => 200, (n) => [3, 10, 17].includes(n));
  const runner = await LocalRunner.start(b.stack, b.machine, { taskHandlers: { Job: job.handler } });
  try {
    const first = await runBatch(runner, 20);
    job.reset();
    const settle = Promise.race([runBatch(runner, 10), sleep(60_000).then(() => undefined)]);
    const more = await settle;
    return {
      'implementation': impl,
      'scenario': 'jobs #3, #10, #17 throw, then 10 more',
      'failed (of 20)': first.results.filter((r) => r.status !== 'SUCCEEDED').length,
      'then: succeeded (of 10)': more ? more.results.filter((r) => r.status === 'SUCCEEDED').length : 'not done in 60 s',
      'then: max at once': job.maxAtOnce(),
      'then: wall s (ideal 0.40)': more ? more.wallS.toFixed(2) : '> 60',
    };
  } finally {
    await runner.stop();
  }
}

/**
 * Slot-time used while there was demand for it: the jobs' busy time over the integral of min(limit, executions that
 * had started and whose job had not ended yet). Wall-clock utilization (busy over limit × wall) also counts the time
 * the runner itself takes to start 200 executions, which on a CPU-bound 2-core machine is most of the wall.
 */
function demandUtilization(limit: number, results: LocalExecution[], spans: Array<[number, number]>): number {
  const changes: Array<[number, number, number]> = []; // [time, Δwanting, Δbusy]
  for (const r of results) changes.push([r.events[0]?.timestamp ?? 0, 1, 0]);
  for (const [start, end] of spans) changes.push([start, 0, 1], [end, -1, -1]);
  changes.sort((a, b) => a[0] - b[0]);
  let wanting = 0;
  let busy = 0;
  let used = 0;
  let available = 0;
  for (let i = 0; i < changes.length; i++) {
    wanting += changes[i][1];
    busy += changes[i][2];
    const dt = (changes[i + 1]?.[0] ?? changes[i][0]) - changes[i][0];
    used += busy * dt;
    available += Math.min(limit, wanting) * dt;
  }
  return available > 0 ? used / available : 0;
}

/** 200 executions, limit 50, jobs of 50 to 500 ms: slot-time utilization. */
export async function runUtilization(impl: Impl, scale = 1) {
  const b = build(impl, 50);
  const job = jobs((n) => scale * (50 + ((n * 7919) % 451)));
  const runner = await LocalRunner.start(b.stack, b.machine, { taskHandlers: { Job: job.handler }, dynamoDbProcess: false });
  try {
    const before = dynamoCalls(runner);
    const cpu0 = process.cpuUsage();
    const { results, wallS } = await runBatch(runner, 200);
    const cpu = process.cpuUsage(cpu0);
    return {
      'implementation': impl,
      'scenario': `200 executions, limit 50, ${50 * scale}–${500 * scale} ms jobs`,
      'succeeded': results.filter((r) => r.status === 'SUCCEEDED').length,
      'max at once': job.maxAtOnce(),
      'wall s': wallS.toFixed(2),
      'slot-time utilization (wall)': `${((100 * job.busyMs()) / (50 * wallS * 1000)).toFixed(0)} %`,
      'slot-time utilization while in demand': `${(100 * demandUtilization(50, results, job.spans())).toFixed(0)} %`,
      'DynamoDB calls/exec': ((dynamoCalls(runner) - before) / 200).toFixed(1),
      'runner CPU s': ((cpu.user + cpu.system) / 1e6).toFixed(1),
    };
  } finally {
    await runner.stop();
  }
}
