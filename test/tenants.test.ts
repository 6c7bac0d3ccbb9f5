import * as fs from 'fs';
import * as path from 'path';
import { App, Aspects, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { aslOf } from './support/asl';
import { expectValidationError } from './support/validation';
import { LocalRunner } from '../local/runner';
import { type Admission, windowViolations } from '../local/timing';
import { BufferedQueueConsumer, Limit, MapConcurrency, QueueTarget, RateLimitedTask, RateLimiter, RetryPolicy, ThrottleChecks, ThrottledMap } from '../src';

// Tenants within a shared quota: each key (tenant) has its own limit under the limiter's shared one. Judged at the
// limiter's decisions (the admitted slots its metrics log), per key and over all keys, in every window.

const SHARED = { rate: 6, burst: 2 };
const PER_KEY = { rate: 4, burst: 1 };

function build() {
  const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiter = new RateLimiter(stack, 'Api', {
    limiterName: 'api',
    limits: [Limit.perSecond(SHARED.rate, { burst: SHARED.burst })],
    keyLimits: [Limit.perSecond(PER_KEY.rate, { burst: PER_KEY.burst })],
  });
  const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:api');
  const call = new RateLimitedTask(stack, 'Call', {
    limiter,
    task: tasks.LambdaInvoke.jsonPath(stack, 'Call Api', { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' }),
    acquire: { key: sfn.JsonPath.stringAt('$.tenant') },
    retry: RetryPolicy.throttling({ errors: ['TooManyRequests'] }),
  });
  const map = new ThrottledMap(stack, 'Requests', { itemsPath: '$.items', concurrency: MapConcurrency.fixed(16), itemProcessor: call });
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
  return { stack, limiter, machine };
}

describe('RateLimiter keyLimits (tenants within a shared quota)', () => {
  test('renders the shared and per-key limits for the function, one item (PutItem on its own items), and a retry of refused keys', () => {
    const { stack } = build();
    const template = Template.fromStack(stack);
    const fnEnv = (Object.values(template.findResources('AWS::Lambda::Function'))[0] as any).Properties.Environment.Variables;
    expect(JSON.parse(fnEnv.LIMITS)).toEqual([{ dimension: 'requests', ratePerSecond: 6, burst: 2 }]);
    expect(JSON.parse(fnEnv.KEY_LIMITS)).toEqual([{ dimension: 'requests', ratePerSecond: 4, burst: 1 }]);
    expect(fnEnv.SHARDS).toBe('1');
    const puts = Object.values(template.findResources('AWS::IAM::Policy')).flatMap((p: any) => p.Properties.PolicyDocument.Statement)
      .filter((st: any) => JSON.stringify(st.Action).includes('dynamodb:PutItem'));
    expect(puts).toHaveLength(1);
    expect(puts[0].Condition).toEqual({ 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['api#*'] } });
    const states = aslOf(template).States.Requests.ItemProcessor.States;
    expect(states['Call Acquire'].Parameters).toMatchObject({ 'key.$': '$.tenant', 'consume': { requests: 1 } });
    expect(states['Call Acquire'].Retry).toEqual(expect.arrayContaining([expect.objectContaining({
      ErrorEquals: ['RateLimitExceeded'], IntervalSeconds: 1, BackoffRate: 1, JitterStrategy: 'FULL',
    })]));
    expect(template.toJSON()).toMatchSnapshot();
  });

  test('the throttle plan lists the shared limits and the per-key ones', () => {
    const { stack } = build();
    const app = stack.node.root as App;
    Aspects.of(app).add(new ThrottleChecks());
    const plan = JSON.parse(fs.readFileSync(path.join(app.synth().directory, 'throttle-plan.json'), 'utf8'));
    const entry = plan.entries.find((e: any) => e.kind === 'limiter');
    expect(entry.limits).toEqual([{ dimension: 'requests', ratePerSecond: 6, burst: 2, stated: 'Limit.perSecond(6)' }]);
    expect(entry.keyLimits).toEqual([{ dimension: 'requests', ratePerSecond: 4, burst: 1, stated: 'Limit.perSecond(4)' }]);
  });

  test.each<[string, () => unknown, RegExp]>([
    ['a key limit of a dimension the shared limits do not count', () => new RateLimiter(new Stack(), 'L', {
      limits: [Limit.perSecond(10)], keyLimits: [Limit.perSecond(2, { dimension: 'tokens' })],
    }), /keyLimits must count dimensions the shared limits count \(requests\).*got \["tokens"\]/],
    ['shards with keyLimits', () => new RateLimiter(new Stack(), 'L', { limits: [Limit.perSecond(10)], keyLimits: [Limit.perSecond(2)], shards: 2 }),
      /shards must be 1 with keyLimits/],
    ['no key limit', () => new RateLimiter(new Stack(), 'L', { limits: [Limit.perSecond(10)], keyLimits: [] }), /keyLimits must hold one Limit .*got 0/],
    ['several shared limits', () => new RateLimiter(new Stack(), 'L', { limits: [Limit.perSecond(10), Limit.perSecond(9, { dimension: 'tokens' })], keyLimits: [Limit.perSecond(2)] }),
      /limits must hold one Limit with keyLimits .*got 2/],
    ['settle', () => {
      const stack = new Stack();
      const limiter = new RateLimiter(stack, 'L', { limits: [Limit.perSecond(10)], keyLimits: [Limit.perSecond(2)] });
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      return new RateLimitedTask(stack, 'T', {
        limiter, task: tasks.LambdaInvoke.jsonPath(stack, 'I', { lambdaFunction: fn, retryOnServiceExceptions: false }), resultPath: '$.a', settle: { consume: { requests: 1 } },
      });
    }, /settle is not supported with a limiter of keyLimits yet/],
    ['an amount above the key limit\'s burst', () => {
      const stack = new Stack();
      const limiter = new RateLimiter(stack, 'L', { limits: [Limit.perSecond(10, { burst: 10 })], keyLimits: [Limit.perSecond(2, { burst: 2 })] });
      return new RateLimitedTask(stack, 'T', { limiter, task: new sfn.Pass(stack, 'P') as any, acquire: { consume: { requests: 3 } } });
    }, /acquire.consume.requests must be .*2.*key limit's burst.*got 3/],
    ['the queue dispatcher', () => {
      const stack = new Stack();
      const limiter = new RateLimiter(stack, 'L', { limits: [Limit.perSecond(10)], keyLimits: [Limit.perSecond(2)] });
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      return new BufferedQueueConsumer(stack, 'Q', { target: QueueTarget.dispatch(fn, { limiter }) });
    }, /QueueTarget.dispatch takes from a limiter of one limit.*keyLimits/],
  ])('fails at synth: %s', (_n, make, message) => expectValidationError(make, message));

  test('two tenants busy and one idle, then all three: each key within its limit and all within the shared one, in every window', async () => {
    const { stack, machine } = build();
    const lines: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    const runner = await LocalRunner.start(stack, machine, { taskHandlers: { 'Call Api': async () => ({ ok: true }) } });
    process.stdout.write = ((chunk: any, ...rest: any[]) => {
      if (String(chunk).includes('"NotBeforeUs"')) lines.push(String(chunk));
      return String(chunk).includes('"_aws"') ? true : (write as any)(chunk, ...rest);
    }) as any;
    try {
      // a: 12 requests (3 s of its own limit), b: 12, c: 4 — 28 at once (c's among the Map's first 16), 4.3 s of
      // the shared limit
      const order: string[] = Array.from({ length: 24 }, (_, i) => (i % 2 === 0 ? 'a' : 'b'));
      for (const at of [1, 5, 9, 13]) order.splice(at, 0, 'c');
      const items = order.map((tenant, i) => ({ tenant, i }));
      const result = await runner.run({ items });
      expect(result.status).toBe('SUCCEEDED');
      const decisions = lines.map((l) => JSON.parse(l)).map((m) => ({ key: m.Key as string, atUs: m.NotBeforeUs as number }));
      expect(decisions).toHaveLength(28);
      const admissions = (key?: string): Admission[] => decisions.filter((d) => key === undefined || d.key === key)
        .map((d) => ({ atUs: d.atUs, tokens: 1 })).sort((x, y) => x.atUs - y.atUs);
      for (const w of [0, 100_000, 500_000, 1_000_000, 2_000_000, 5_000_000]) {
        expect(windowViolations(admissions(), SHARED.rate, SHARED.burst, w)).toBe(0);
        for (const k of ['a', 'b', 'c']) expect(windowViolations(admissions(k), PER_KEY.rate, PER_KEY.burst, w)).toBe(0);
      }
      // c (4 requests) is not starved behind a and b: it is done within the first half of the run
      const span = (k: string) => admissions(k).map((a) => a.atUs);
      const first = Math.min(...decisions.map((d) => d.atUs));
      const last = Math.max(...decisions.map((d) => d.atUs));
      expect(Math.max(...span('c')) - first).toBeLessThan((last - first) * 0.75);
      // eslint-disable-next-line no-console
      console.log(`tenants: 28 admissions over ${((last - first) / 1e6).toFixed(2)} s (shared ${SHARED.rate}/s: at least ${(27 - SHARED.burst) / SHARED.rate} s); `
        + `c done at ${((Math.max(...span('c')) - first) / 1e6).toFixed(2)} s`);
    } finally {
      process.stdout.write = write;
      await runner.stop();
    }
  }, 180_000);
});
