// BufferedQueueConsumer dispatcher throughput: a backlog of messages in the (in-memory) queue drained by the
// bundled dispatcher through the local runner, with and without a limiter; the target is a stand-in that
// records when each call reaches it and takes `targetMs`.
import * as path from 'path';
import { App, Duration, Stack } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { LocalRunner } from '../local/runner';
import { type Admission, maxInWindow, nowUs, sleep, windowViolations } from '../local/timing';
import { BufferedQueueConsumer, QueueTarget, RateLimiter } from '../src';

export interface DispatcherScenario {
  readonly name: string;
  readonly messages: number;
  readonly ratePerSecond?: number;
  readonly burst?: number;
  readonly maxConcurrency: number;
  readonly batchSize: number;
  readonly targetMs: number;
}

export async function runDispatcher(s: DispatcherScenario): Promise<Record<string, string | number>> {
  const stack = new Stack(new App(), 'DispatcherBench', { env: { account: '123456789012', region: 'us-east-1' } });
  const target = new lambda.Function(stack, 'Target', {
    runtime: lambda.Runtime.NODEJS_22_X,
    handler: 'index.handler',
    code: lambda.Code.fromAsset(path.join(__dirname, '..', 'test', 'fixtures', 'consumer')),
  });
  const limiter = s.ratePerSecond
    ? new RateLimiter(stack, 'Limiter', { ratePerSecond: s.ratePerSecond, burst: s.burst ?? 1, limiterName: 'target' })
    : undefined;
  const buffer = new BufferedQueueConsumer(stack, 'Buffer', {
    target: QueueTarget.dispatch(target, { limiter, dispatcherTimeout: Duration.minutes(5) }),
    maxConcurrency: s.maxConcurrency,
    batchSize: s.batchSize,
  });
  const machine = new sfn.StateMachine(stack, 'Machine', {
    definitionBody: sfn.DefinitionBody.fromChainable(buffer.sendMessageTask(stack, 'Enqueue', { messageBody: sfn.TaskInput.fromJsonPathAt('$') })),
  });
  const calls: Admission[] = [];
  const runner = await LocalRunner.start(stack, machine, {
    dynamoDbProcess: true,
    functionHandlers: {
      [stack.getLogicalId(target.node.defaultChild as lambda.CfnFunction)]: async () => {
        calls.push({ atUs: nowUs(), tokens: 1 });
        await sleep(s.targetMs);
        return { ok: true };
      },
    },
  });
  const out = process.stdout.write;
  process.stdout.write = (() => true) as any; // EMF lines
  try {
    const queue = runner.queue(stack.getLogicalId(buffer.queue.node.defaultChild as sqs.CfnQueue));
    const started = nowUs();
    for (let i = 0; i < s.messages; i++) queue.send(JSON.stringify({ i }));
    while (queue.depth > 0) await sleep(5);
    const elapsedS = (nowUs() - started) / 1e6;
    const first = Math.min(...calls.map((c) => c.atUs));
    const spanS = (Math.max(...calls.map((c) => c.atUs)) - first) / 1e6;
    const row: Record<string, string | number> = {
      'scenario': s.name,
      'messages': s.messages,
      'target calls': calls.length,
      'drained in s': elapsedS.toFixed(2),
      'calls/s (first to last)': (calls.length / Math.max(spanS, 1e-9)).toFixed(1),
      'max 0.1s / 1s': `${maxInWindow(calls, 100_000)} / ${maxInWindow(calls, 1_000_000)}`,
      'batches in flight (max)': runner.consumers[0].maxInFlight,
    };
    if (s.ratePerSecond) {
      const burst = s.burst ?? 1;
      row['bound 0.1s / 1s'] = `${burst + s.ratePerSecond * 0.1} / ${burst + s.ratePerSecond}`;
      row['windows over bound'] = [100_000, 1_000_000, 5_000_000].reduce((n, w) => n + windowViolations(calls, s.ratePerSecond!, burst, w), 0);
      row['utilization %'] = ((100 * calls.length) / (burst + s.ratePerSecond * spanS)).toFixed(1);
    } else {
      Object.assign(row, { 'bound 0.1s / 1s': '-', 'windows over bound': '-', 'utilization %': '-' });
    }
    return row;
  } finally {
    process.stdout.write = out;
    await runner.stop();
  }
}

export const dispatcherScenarios: DispatcherScenario[] = [
  { name: 'no limiter, 10 pollers × 10, target 20 ms', messages: 2000, maxConcurrency: 10, batchSize: 10, targetMs: 20 },
  { name: 'limiter 20/s burst 1, 4 pollers × 5, target 20 ms', messages: 200, ratePerSecond: 20, maxConcurrency: 4, batchSize: 5, targetMs: 20 },
  { name: 'limiter 100/s burst 10, 10 pollers × 10, target 20 ms', messages: 1000, ratePerSecond: 100, burst: 10, maxConcurrency: 10, batchSize: 10, targetMs: 20 },
];
