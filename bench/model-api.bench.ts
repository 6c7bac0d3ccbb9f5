// Requests and tokens per window through a model API stub that counts like the provider (reserve input + max_tokens
// at start, release the unused part at completion, ThrottlingException above either quota in a sliding window).
// Prints figures; asserts nothing. The window is 2 s (a minute scaled down 30×, so a run takes seconds).
import { App, Stack } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { ModelApiStub, modelWorkload } from '../local/model-api-stub';
import { LocalRunner } from '../local/runner';
import { AcquireMode, Limit, MapConcurrency, RateLimitedTask, RateLimiter, RetryPolicy, ThrottledMap } from '../src';

const QUOTA = { requests: 40, tokens: 12_000, windowMs: 2_000 };
// The limiter states each quota below the provider's by 2 × burst (settling can add one burst) and a start margin.
const LIMITS = [Limit.perSecond(16, { burst: 2 }), Limit.perSecond(3_500, { dimension: 'tokens', burst: 2_000 })];

export interface ModelApiScenario {
  readonly name: string;
  readonly mode: AcquireMode;
  readonly settle: boolean;
  readonly items: number;
  /** Mean tokens a call uses, and the max_tokens it asks for (the estimate is input + max_tokens). */
  readonly mean: number;
  readonly maxTokens: number;
}

export const modelApiScenarios: ModelApiScenario[] = [
  { name: 'tokens bind', mode: AcquireMode.RESERVE, settle: true, items: 300, mean: 300, maxTokens: 400 },
  { name: 'tokens bind', mode: AcquireMode.TRY, settle: true, items: 300, mean: 300, maxTokens: 400 },
  { name: 'tokens bind', mode: AcquireMode.RESERVE, settle: false, items: 300, mean: 300, maxTokens: 400 },
  { name: 'requests bind', mode: AcquireMode.RESERVE, settle: true, items: 300, mean: 40, maxTokens: 60 },
];

export async function runModelApi(s: ModelApiScenario) {
  const stack = new Stack(new App(), 'Bench', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiter = new RateLimiter(stack, 'Model', { limiterName: 'model', limits: LIMITS });
  const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:model');
  const invoke = tasks.LambdaInvoke.jsonPath(stack, 'Invoke Model', { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' });
  const call = new RateLimitedTask(stack, 'Call', {
    limiter,
    task: invoke,
    acquire: { consume: { requests: 1, tokens: sfn.JsonPath.numberAt('$.estimate') }, mode: s.mode },
    resultPath: '$.acquired',
    retry: RetryPolicy.throttling({ errors: ['ThrottlingException'], maxAttempts: 10 }),
    settle: s.settle ? { consume: { tokens: sfn.JsonPath.numberAt('$.result.usage.totalTokens') } } : undefined,
  });
  const map = new ThrottledMap(stack, 'Prompts', { itemsPath: '$.items', concurrency: MapConcurrency.fixed(40), itemProcessor: call });
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
  const items = modelWorkload(s.items, { mean: s.mean, maxTokens: s.maxTokens, seed: 3 });
  const stub = new ModelApiStub(QUOTA);
  const runner = await LocalRunner.start(stack, machine, { taskHandlers: { 'Invoke Model': async (input: any) => stub.invoke(items[input.i]) } });
  const out = process.stdout.write;
  process.stdout.write = (() => true) as any; // EMF lines
  try {
    const calls0 = Object.values((runner as any).db.requests?.() ?? {}).reduce((a: number, b) => a + (b as number), 0);
    const t0 = Date.now();
    const result = await runner.run({ items: items.map((it, i) => ({ i, estimate: it.estimate })) });
    const t1 = Date.now();
    const calls = Object.values((runner as any).db.requests?.() ?? {}).reduce((a: number, b) => a + (b as number), 0) - calls0;
    const used = items.reduce((n, it) => n + Math.min(it.actual, it.estimate), 0);
    const estimated = items.reduce((n, it) => n + it.estimate, 0);
    // utilization over the run after its first window (the burst): what the quota allowed vs what was used
    const from = t0 + QUOTA.windowMs;
    return {
      'workload': `${s.name} (${s.items} prompts, used/estimate ${(used / estimated).toFixed(2)})`,
      'mode': s.mode,
      'settle': s.settle ? 'yes' : 'no',
      'status': result.status,
      'ThrottlingException': stub.rejected,
      'peak requests / window (quota 40)': stub.peak.requests,
      'peak tokens / window (quota 12000)': stub.peak.tokens,
      'wall s': ((t1 - t0) / 1000).toFixed(1),
      'tokens used % of quota': `${Math.round(100 * stub.tokenUtilization(from, t1))} %`,
      'requests % of quota': `${Math.round(100 * stub.requestUtilization(from, t1))} %`,
      'DynamoDB calls / prompt': (calls / s.items).toFixed(1),
    };
  } finally {
    process.stdout.write = out;
    await runner.stop();
  }
}
