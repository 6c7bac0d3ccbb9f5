// A downstream that fails from t = 2 s to t = 8 s of a 12 s run (the issue's 10–40 s of 60 s, scaled 5×), 20
// executions at a time calling it in a loop: with the CircuitBreaker (threshold 5 in 10 s, cooldown 1 s, 1 probe)
// and with the task's own Retry alone (2 attempts, 1 s apart). Local runner; prints figures, asserts nothing.
import { App, Duration, Stack } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { LocalRunner } from '../local/runner';
import { sleep } from '../local/timing';
import { CircuitBreaker, RateLimitedTask, RateLimiter, RetryPolicy } from '../src';

const RUN_MS = 12_000;
const DOWN = { fromMs: 2_000, toMs: 8_000 };
const LOOPS = 20;
const COOLDOWN_S = 1;

/**
 * `limited`: the call is a RateLimitedTask (100/s, burst 20) whose RetryPolicy retries the failure once after up to
 * 1 s (each retry with a token), with the breaker as its `circuitBreaker` option; otherwise the task alone, with its
 * own Retry (`taskRetry`) and `protect()`.
 */
export async function runBreaker(withBreaker: boolean, taskRetry = true, limited = false) {
  const stack = new Stack(new App(), 'Bench', { env: { account: '123456789012', region: 'us-east-1' } });
  const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:partner');
  const task = tasks.LambdaInvoke.jsonPath(stack, 'Call Partner', { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' });
  if (taskRetry && !limited) task.addRetry({ errors: ['DownstreamUnavailable'], interval: Duration.seconds(1), maxAttempts: 2, backoffRate: 1 });
  const breaker = withBreaker ? new CircuitBreaker(stack, 'Partner', {
    breakerName: 'partner', failureThreshold: 5, window: Duration.seconds(10), cooldown: Duration.seconds(COOLDOWN_S), failureErrors: ['DownstreamUnavailable'],
  }) : undefined;
  const body: sfn.IChainable = limited
    ? new RateLimitedTask(stack, 'Limited', {
      limiter: new RateLimiter(stack, 'Api', { limiterName: 'api', ratePerSecond: 100, burst: 20 }),
      task,
      retry: RetryPolicy.custom({ errors: ['DownstreamUnavailable'], maxAttempts: 2, interval: Duration.seconds(1) }),
      circuitBreaker: breaker && { breaker },
    })
    : breaker ? breaker.protect(stack, 'Guard', { task }) : task;
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(body) });
  let t0 = 0;
  const calls: { at: number; ok: boolean }[] = [];
  let inFlightWhileDown = 0;
  let maxInFlightWhileDown = 0;
  const runner = await LocalRunner.start(stack, machine, {
    taskHandlers: {
      'Call Partner': async () => {
        const at = Date.now() - t0;
        const down = at >= DOWN.fromMs && at < DOWN.toMs;
        calls.push({ at, ok: !down });
        if (down) {
          inFlightWhileDown++;
          maxInFlightWhileDown = Math.max(maxInFlightWhileDown, inFlightWhileDown);
          await sleep(20);
          inFlightWhileDown--;
          throw Object.assign(new Error('partner is down'), { name: 'DownstreamUnavailable' });
        }
        await sleep(20);
        return { ok: true };
      },
    },
  });
  const out = process.stdout.write;
  process.stdout.write = ((chunk: any, ...rest: any[]) => (String(chunk).includes('"_aws"') ? true : (out as any).call(process.stdout, chunk, ...rest))) as any;
  const ends: { at: number; status: string; error?: string }[] = [];
  try {
    t0 = Date.now();
    await Promise.all(Array.from({ length: LOOPS }, async () => {
      while (Date.now() - t0 < RUN_MS) {
        const r = await runner.run({});
        ends.push({ at: Date.now() - t0, status: r.status, error: (r as any).error });
        if (r.status !== 'SUCCEEDED') await sleep(50); // a caller's loop: the next item
      }
    }));
  } finally {
    process.stdout.write = out;
    await runner.stop();
  }
  const whileDown = calls.filter((c) => c.at >= DOWN.fromMs && c.at < DOWN.toMs).length;
  const firstOkAfter = calls.filter((c) => c.ok && c.at >= DOWN.toMs).map((c) => c.at).sort((a, b) => a - b)[0];
  const okPerS = (from: number, to: number) => calls.filter((c) => c.ok && c.at >= from && c.at < to).length / ((to - from) / 1000);
  return {
    'protection': `${withBreaker ? `CircuitBreaker (threshold 5 / 10 s, cooldown ${COOLDOWN_S} s, 1 probe)` : 'no breaker'}, `
      + `${limited ? 'RateLimitedTask 100/s, RetryPolicy (2 attempts, ≤ 1 s)' : taskRetry ? 'task Retry (2 attempts, 1 s)' : 'no task Retry'}`,
    'calls to the downstream while down (6 s)': whileDown,
    'most calls in flight at once while down': maxInFlightWhileDown,
    'executions': ends.length,
    'CircuitOpen': ends.filter((e) => e.error === 'CircuitOpen').length,
    'first success after it healed (s)': firstOkAfter === undefined ? 'none' : ((firstOkAfter - DOWN.toMs) / 1000).toFixed(2),
    'successful calls / s before': okPerS(0, DOWN.fromMs).toFixed(1),
    'successful calls / s, 2 s after healing': okPerS(DOWN.toMs + 2_000, RUN_MS).toFixed(1),
  };
}
