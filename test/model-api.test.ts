import * as fs from 'fs';
import * as path from 'path';
import { App, Aspects, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { aslOf } from './support/asl';
import { expectValidationError } from './support/validation';
import { ModelApiStub, modelWorkload } from '../local/model-api-stub';
import { LocalRunner } from '../local/runner';
import { AcquireMode, Limit, MapConcurrency, RateLimitedTask, RateLimiter, RetryPolicy, ThrottleChecks, ThrottleDashboard, ThrottledMap } from '../src';

// Requests and tokens per window, like a model API's quotas: a limiter of two limits, an acquire that takes an
// estimate (input + max_tokens) of tokens, and a settle that gives back what the call did not use. Judged at the
// model API stub, which counts both quotas in sliding windows the way the provider does and rejects above either.

// The stub's quotas per 2 s window; the limiter's, stated below them by 2 × burst (settling) and a start margin.
const QUOTA = { requests: 40, tokens: 12_000, windowMs: 2_000 };

function build(options: { settle?: boolean; mode?: AcquireMode } = {}) {
  const app = new App();
  const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiter = new RateLimiter(stack, 'Model', {
    limiterName: 'model',
    limits: [Limit.perSecond(16, { burst: 2 }), Limit.perSecond(3_500, { dimension: 'tokens', burst: 2_000 })],
  });
  const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:model');
  const invoke = tasks.LambdaInvoke.jsonPath(stack, 'Invoke Model', { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' });
  const call = new RateLimitedTask(stack, 'Call', {
    limiter,
    task: invoke,
    acquire: { consume: { requests: 1, tokens: sfn.JsonPath.numberAt('$.estimate') }, mode: options.mode },
    resultPath: '$.acquired',
    retry: RetryPolicy.throttling({ errors: ['ThrottlingException'], maxAttempts: 10 }),
    settle: options.settle === false ? undefined : { consume: { tokens: sfn.JsonPath.numberAt('$.result.usage.totalTokens') } },
  });
  const map = new ThrottledMap(stack, 'Prompts', { itemsPath: '$.items', concurrency: MapConcurrency.fixed(30), itemProcessor: call });
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
  return { stack, limiter, machine, call };
}

describe('several limits in one acquire, settled (model API)', () => {
  test('renders acquire (both dimensions) → Wait → the call → settle (what it took against what it used)', () => {
    const { stack } = build();
    const template = Template.fromStack(stack);
    const states = aslOf(template).States.Prompts.ItemProcessor.States;
    expect(states['Call Acquire'].Parameters.Payload ?? states['Call Acquire'].Parameters).toMatchObject({ consume: { 'requests': 1, 'tokens.$': '$.estimate' } });
    expect(states['Invoke Model'].Next).toBe('Call Settle');
    expect(states['Call Settle'].Parameters).toMatchObject({
      'phase': 'settle', 'key.$': '$.acquired.key', 'consume.$': '$.acquired.taken', 'used': { 'tokens.$': '$.result.usage.totalTokens' },
    });
    expect(states['Call Settle'].ResultPath).toBeNull();
    // the function writes a key's buckets whole: PutItem on its own items
    const fnEnv = Object.values(template.findResources('AWS::Lambda::Function'))[0] as any;
    expect(JSON.parse(fnEnv.Properties.Environment.Variables.LIMITS)).toEqual([
      { dimension: 'requests', ratePerSecond: 16, burst: 2 }, { dimension: 'tokens', ratePerSecond: 3_500, burst: 2_000 },
    ]);
    const actions = Object.values(template.findResources('AWS::IAM::Policy')).flatMap((p: any) => p.Properties.PolicyDocument.Statement)
      .filter((st: any) => JSON.stringify(st.Action).includes('dynamodb:PutItem'));
    expect(actions).toHaveLength(1);
    expect(actions[0].Condition).toEqual({ 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['model#*'] } });
  });

  test('in a JSONata machine: the acquire of several limits renders in JSONata (asl-validator), and settle is a synth error naming it', () => {
    const app = new App();
    const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
    const limiter = new RateLimiter(stack, 'Model', { limiterName: 'model', limits: [Limit.perMinute(60), Limit.perMinute(60_000, { dimension: 'tokens', burst: 2_000 })] });
    const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:model');
    const call = new RateLimitedTask(stack, 'Call', {
      limiter,
      task: tasks.LambdaInvoke.jsonata(stack, 'Invoke Model', { lambdaFunction: fn, retryOnServiceExceptions: false }),
      acquire: { consume: { requests: 1, tokens: 500 } },
      retry: RetryPolicy.throttling({ errors: ['ThrottlingException'] }),
    });
    new sfn.StateMachine(stack, 'Machine', { queryLanguage: sfn.QueryLanguage.JSONATA, definitionBody: sfn.DefinitionBody.fromChainable(call) });
    // validated by asl-validator as it is built
    const acquire = aslOf(Template.fromStack(stack)).States['Call Acquire'];
    expect(acquire.Arguments).toMatchObject({ consume: { requests: 1, tokens: 500 } });
    expect(acquire.Parameters).toBeUndefined();

    const b = new Stack(new App(), 'B');
    const l2 = new RateLimiter(b, 'Model', { limits: [Limit.perMinute(60), Limit.perMinute(60_000, { dimension: 'tokens', burst: 2_000 })] });
    const f2 = lambda.Function.fromFunctionArn(b, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:model');
    const settled = new RateLimitedTask(b, 'Call', {
      limiter: l2,
      task: tasks.LambdaInvoke.jsonata(b, 'Invoke Model', { lambdaFunction: f2, retryOnServiceExceptions: false }),
      resultPath: '$.acquired',
      retry: RetryPolicy.throttling({ errors: ['ThrottlingException'] }),
      settle: { consume: { tokens: 100 } },
    });
    expect(() => new sfn.StateMachine(b, 'Machine', { queryLanguage: sfn.QueryLanguage.JSONATA, definitionBody: sfn.DefinitionBody.fromChainable(settled) }).toString()
      && Template.fromStack(b)).toThrow(/settle renders in JSONPath state machines only, this one is JSONata/);
  });

  test('the throttle plan lists each limit of the limiter', () => {
    const { stack } = build();
    const app = stack.node.root as App;
    Aspects.of(app).add(new ThrottleChecks());
    const assembly = app.synth();
    const plan = JSON.parse(fs.readFileSync(path.join(assembly.directory, 'throttle-plan.json'), 'utf8'));
    expect(plan.entries.find((e: any) => e.kind === 'limiter').limits).toEqual([
      { dimension: 'requests', ratePerSecond: 16, burst: 2, stated: 'Limit.perSecond(16)' },
      { dimension: 'tokens', ratePerSecond: 3_500, burst: 2_000, stated: 'Limit.perSecond(3500)' },
    ]);
  });

  test('the dashboard shows each dimension: taken and used (settled) per minute against its limit', () => {
    const { stack, limiter } = build();
    new ThrottleDashboard(stack, 'Throttles').addLimiter(limiter);
    const body = JSON.stringify(Template.fromStack(stack).findResources('AWS::CloudWatch::Dashboard'));
    for (const d of ['requests', 'tokens']) {
      expect(body).toContain(`${d} per minute: taken and used vs the limit`);
      expect(body).toContain(`Taken_${d}`);
      expect(body).toContain(`Settled_${d}`);
    }
    expect(body).toContain('210000'); // 3,500/s × 60
  });

  test.each<[string, () => unknown, RegExp]>([
    ['the same dimension twice', () => new RateLimiter(new Stack(), 'L', { limits: [Limit.perMinute(10), Limit.perMinute(20)] }),
      /limits must count different dimensions \(one Limit per dimension\), got "requests" twice/],
    ['shards with several limits', () => new RateLimiter(new Stack(), 'L', { limits: [Limit.perMinute(10), Limit.perMinute(20, { dimension: 'tokens' })], shards: 2 }),
      /shards must be 1 with several limits/],
    ['an estimate above a limit\'s burst', () => {
      const stack = new Stack();
      const limiter = new RateLimiter(stack, 'L', { limits: [Limit.perMinute(10), Limit.perMinute(6_000, { dimension: 'tokens', burst: 100 })] });
      return new RateLimitedTask(stack, 'T', { limiter, task: new sfn.Pass(stack, 'P') as any, acquire: { consume: { tokens: 101 } } });
    }, /acquire.consume.tokens must be .*100.*got 101/],
    ['settle with one limit', () => {
      const stack = new Stack();
      const limiter = new RateLimiter(stack, 'L', { ratePerSecond: 5 });
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:model');
      return new RateLimitedTask(stack, 'T', {
        limiter, task: tasks.LambdaInvoke.jsonPath(stack, 'I', { lambdaFunction: fn, retryOnServiceExceptions: false }), resultPath: '$.a', settle: { consume: { requests: 1 } },
      });
    }, /settle needs a limiter of several limits/],
    ['settle without resultPath', () => {
      const stack = new Stack();
      const limiter = new RateLimiter(stack, 'L', { limits: [Limit.perMinute(10), Limit.perMinute(6_000, { dimension: 'tokens' })] });
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:model');
      return new RateLimitedTask(stack, 'T', {
        limiter, task: tasks.LambdaInvoke.jsonPath(stack, 'I', { lambdaFunction: fn, retryOnServiceExceptions: false }), settle: { consume: { tokens: 5 } },
      });
    }, /settle needs resultPath, a simple path such as \$\.acquired .*got none/],
  ])('fails at synth: %s', (_n, make, message) => expectValidationError(make, message));

  test('a call the provider throttled gives back all it took before the retry takes again; the call that ran settles its use', async () => {
    const { stack, machine } = build();
    let calls = 0;
    const lines: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: {
        'Invoke Model': async () => {
          calls++;
          if (calls === 1) throw Object.assign(new Error('Too many tokens'), { name: 'ThrottlingException' });
          return { usage: { totalTokens: 100 } };
        },
      },
    });
    process.stdout.write = ((chunk: any, ...rest: any[]) => {
      if (String(chunk).includes('"_aws"')) lines.push(String(chunk));
      return (write as any)(chunk, ...rest);
    }) as any;
    try {
      const result = await runner.run({ items: [{ i: 0, estimate: 1_000 }] });
      expect(result.status).toBe('SUCCEEDED');
      expect(calls).toBe(2);
      const metric = (name: string) => lines.map((l) => JSON.parse(l)).filter((m) => m[name] !== undefined).map((m) => m[name]);
      // two acquires of 1,000; the throttled call's 1,000 given back by the backoff step; the call that ran settles 900 back
      expect(metric('Taken_tokens')).toEqual([1_000, 1_000]);
      expect(metric('Settled_tokens')).toEqual([-1_000, -900]);
    } finally {
      process.stdout.write = write;
      await runner.stop();
    }
  }, 60_000);

  test.each([AcquireMode.RESERVE, AcquireMode.TRY])('60 prompts at 2× the quota through the model API stub (%s): 0 ThrottlingException, both quotas held in every window', async (mode) => {
    const { stack, machine } = build({ mode });
    const items = modelWorkload(60, { mean: 300, maxTokens: 400, seed: 11 });
    const stub = new ModelApiStub(QUOTA);
    let i = 0;
    const runner = await LocalRunner.start(stack, machine, { taskHandlers: { 'Invoke Model': async (input: any) => stub.invoke(items[input.i ?? i++]) } });
    try {
      const t0 = Date.now();
      const result = await runner.run({ items: items.map((it, n) => ({ i: n, estimate: it.estimate })) });
      const t1 = Date.now();
      expect(result.status).toBe('SUCCEEDED');
      expect(stub.rejected).toBe(0);
      expect(stub.served).toBe(60);
      expect(stub.peak.requests).toBeLessThanOrEqual(QUOTA.requests);
      expect(stub.peak.tokens).toBeLessThanOrEqual(QUOTA.tokens);
      // the give-backs: tokens the calls used ÷ the estimates they took
      const used = items.reduce((n, it) => n + Math.min(it.actual, it.estimate), 0);
      const estimated = items.reduce((n, it) => n + it.estimate, 0);
      // eslint-disable-next-line no-console
      console.log(`60 prompts (${mode}): ${((t1 - t0) / 1000).toFixed(1)} s, peak ${stub.peak.requests} requests / ${stub.peak.tokens} tokens per ${QUOTA.windowMs} ms `
        + `(quota ${QUOTA.requests} / ${QUOTA.tokens}); used ${used} of ${estimated} estimated tokens`);
    } finally {
      await runner.stop();
    }
  }, 120_000);
});
