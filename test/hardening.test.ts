// The hardening sweep: every construct in its default and its fullest configuration with zero unacknowledged
// cdk-nag findings and least-privilege IAM; the handlers fuzzed; the local DynamoDB failing mid-run.
import * as path from 'path';
import { App, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import * as fc from 'fast-check';
import { dispatchBatch } from '../lambda/dispatcher/dispatcher';
import { parseRequest } from '../lambda/rate-limiter/request';
import { startDynalite } from '../local/dynalite';
import { LocalRunner } from '../local/runner';
import { type Admission, nowUs, sleep, windowViolations } from '../local/timing';
import {
  AcquireMode, BufferedQueueConsumer, Limit, MapConcurrency, MapMode, QueueTarget, RateLimitedTask, RateLimiter, RetryPolicy, ThrottleDashboard,
  ThrottledMap, ThrottleErrors,
} from '../src';
import { expectCallsHoldSlots } from './support/decisions';
import { loadAcquireHandler } from './support/handler';
import { expectLeastPrivilege } from './support/iam';
import { nagFindings } from './support/nag';

const ENV = { env: { account: '123456789012', region: 'us-east-1' } };

/** An application's own pieces, configured the way cdk-nag wants, so only the constructs' findings remain. */
function appPieces(stack: Stack) {
  const table = new dynamodb.Table(stack, 'Orders', {
    partitionKey: { name: 'id', type: dynamodb.AttributeType.STRING }, pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
  });
  const task = (id: string) => new tasks.DynamoGetItem(stack, id, { table, key: { id: tasks.DynamoAttributeValue.fromString(sfn.JsonPath.stringAt('$.id')) } });
  const fn = new lambda.Function(stack, 'Worker', {
    runtime: lambda.Runtime.NODEJS_22_X,
    handler: 'index.handler',
    code: lambda.Code.fromAsset(path.join(__dirname, 'fixtures', 'consumer')),
    memorySize: 256,
    timeout: Duration.seconds(10),
    tracing: lambda.Tracing.ACTIVE,
  });
  for (const id of ['Serverless-LambdaDLQ', 'Serverless-LambdaLatestVersion', 'AwsSolutions-L1',
    'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]', 'AwsSolutions-IAM5[Resource::*]']) {
    Validations.of(fn).acknowledge({ id, reason: 'the application\'s worker function (a fixture), not a construct of this library' });
  }
  const machine = (id: string, chain: sfn.IChainable) => {
    const m = new sfn.StateMachine(stack, id, { definitionBody: sfn.DefinitionBody.fromChainable(chain), tracingEnabled: true });
    for (const rule of ['AwsSolutions-SF1', 'AwsSolutions-IAM5[Resource::*]']) {
      Validations.of(m).acknowledge({ id: rule, reason: 'the application\'s state machine (logging is its choice; X-Ray tracing grants "*")' });
    }
    return m;
  };
  return { table, task, fn, machine };
}

const configurations: [string, (stack: Stack) => void][] = [
  ['RateLimiter default', (s) => { new RateLimiter(s, 'L', { ratePerSecond: 10 }); }],
  ['RateLimiter fullest', (s) => {
    new RateLimiter(s, 'L', { ratePerSecond: 2000, burst: 4000, shards: 4, maxWait: Duration.hours(1), reservedConcurrency: 50, memorySize: 256, limiterName: 'api' });
  }],
  ['RateLimitedTask default', (s) => {
    const { task, machine } = appPieces(s);
    machine('M', new RateLimitedTask(s, 'T', { limiter: new RateLimiter(s, 'L', { ratePerSecond: 10 }), task: task('Get') }));
  }],
  ['RateLimitedTask fullest', (s) => {
    const { task, machine } = appPieces(s);
    const t = new RateLimitedTask(s, 'T', {
      limiter: new RateLimiter(s, 'L', { ratePerSecond: 10, burst: 4 }),
      task: task('Get'),
      acquire: { key: '$.tenant', consume: { requests: 2 }, mode: AcquireMode.TRY },
      retry: RetryPolicy.throttling({ maxAttempts: 4 }),
      resultPath: '$.acquired',
    });
    t.addCatch(new sfn.Pass(s, 'Failed'));
    machine('M', t);
  }],
  ['ThrottledMap default', (s) => {
    const { task, machine } = appPieces(s);
    machine('M', new ThrottledMap(s, 'Map', { itemProcessor: task('Get') }));
  }],
  ['ThrottledMap fullest (distributed)', (s) => {
    const { task, machine } = appPieces(s);
    machine('M', new ThrottledMap(s, 'Map', {
      mode: MapMode.distributed({
        batch: { maxItems: 5, batchInput: { tenant: 't' } },
        toleratedFailurePercentage: 5,
        executionType: sfn.StateMachineType.EXPRESS,
      }),
      itemProcessor: task('Get'),
      limiter: new RateLimiter(s, 'L', { limits: [Limit.perSecond(10, { burst: 10 })], removalPolicy: RemovalPolicy.DESTROY }),
      acquire: { key: '$.BatchInput.tenant' },
      retry: RetryPolicy.throttling(),
      catchItemFailures: true,
      concurrency: MapConcurrency.forThroughput({ ratePerSecond: 2, itemDuration: Duration.seconds(5) }),
    }));
  }],
  ['BufferedQueueConsumer default', (s) => {
    const { fn } = appPieces(s);
    new BufferedQueueConsumer(s, 'B', { target: QueueTarget.batchConsumer(fn) });
  }],
  ['BufferedQueueConsumer fullest', (s) => {
    const { fn, machine } = appPieces(s);
    const b = new BufferedQueueConsumer(s, 'B', {
      target: QueueTarget.dispatch(fn, {
        limiter: new RateLimiter(s, 'L', { ratePerSecond: 20 }),
        acquire: { key: 'k', consume: { requests: 2 } },
        dispatcherTimeout: Duration.seconds(90),
        memorySize: 256,
        architecture: lambda.Architecture.X86_64,
        logRetention: logs.RetentionDays.ONE_WEEK,
      }),
      maxConcurrency: 4,
      batchSize: 5,
      fifo: true,
      maxReceiveCount: 3,
      deadLetterRetention: Duration.days(7),
      visibilityTimeout: Duration.minutes(10),
    });
    b.allowResultsFrom(machine('M', b.sendMessageTask(s, 'Send', { messageBody: sfn.TaskInput.fromJsonPathAt('$'), waitForResult: true, messageGroupId: 'g' })));
  }],
  ['ThrottleDashboard default', (s) => { new ThrottleDashboard(s, 'D'); }],
  ['ThrottleDashboard fullest', (s) => {
    const { fn, task, machine } = appPieces(s);
    const limiter = new RateLimiter(s, 'L', { ratePerSecond: 10 });
    const map = new ThrottledMap(s, 'Map', { mode: MapMode.distributed(), itemProcessor: task('Get') });
    const m = machine('M', map);
    new ThrottleDashboard(s, 'D', { alarmTopic: new sns.Topic(s, 'T', { enforceSSL: true }), limiters: [limiter], stateMachines: [m] })
      .addConsumer(new BufferedQueueConsumer(s, 'B', { target: QueueTarget.dispatch(fn, { limiter }) }))
      .addMap(map, m);
  }],
];

describe('hardening sweep', () => {
  test.each(configurations)('%s: zero unacknowledged cdk-nag findings (AwsSolutions, Serverless); least-privilege IAM', (_name, make) => {
    const stack = new Stack(new App(), 'Stack', ENV);
    make(stack);
    // synthesized first, as cdk-nag runs at synth (after aspects)
    const template = Template.fromStack(stack);
    expect(nagFindings(stack, ['AwsSolutions', 'Serverless'])).toEqual([]);
    expectLeastPrivilege(template);
  });

  test('the least-privilege check can fail', () => {
    const stack = new Stack(new App(), 'Stack', ENV);
    const { fn } = appPieces(stack);
    fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['dynamodb:GetItem'], resources: ['*'] }));
    expect(() => expectLeastPrivilege(Template.fromStack(stack))).toThrow(/dynamodb:GetItem on \*/);
  });
});

const NAMED = new Set<string>([ThrottleErrors.INVALID_ACQUIRE_REQUEST, ThrottleErrors.RATE_LIMIT_EXCEEDED, ThrottleErrors.LIMITER_UNAVAILABLE]);

describe('handlers fuzzed', () => {
  test('acquire requests: anything malformed is InvalidAcquireRequest, never a default that admits', () => {
    fc.assert(fc.property(fc.anything({ withBigInt: true, withDate: true, withMap: true, withNullPrototype: true }), (event) => {
      try {
        const r = parseRequest(event);
        // accepted: a plain object whose fields are all well-formed
        expect(typeof event === 'object' && event !== null && !Array.isArray(event)).toBe(true);
        expect(Number.isInteger(r.tokens) && r.tokens >= 1).toBe(true);
        expect(['RESERVE', 'TRY']).toContain(r.mode);
      } catch (err) {
        expect((err as Error).name).toBe(ThrottleErrors.INVALID_ACQUIRE_REQUEST);
      }
    }), { numRuns: 2000 });
  });

  test('acquire requests with plausible but random fields: every refusal is named, tokens × count never grows past what was asked', () => {
    fc.assert(fc.property(fc.record({
      key: fc.oneof(fc.string(), fc.integer(), fc.constant(undefined), fc.object()),
      tokens: fc.oneof(fc.integer({ min: -3, max: 20 }), fc.double(), fc.string(), fc.constant(undefined)),
      count: fc.oneof(fc.integer({ min: -3, max: 20_000 }), fc.double(), fc.constant(undefined)),
      mode: fc.oneof(fc.constantFrom('RESERVE', 'TRY', 'try', ''), fc.constant(undefined)),
    }, { requiredKeys: [] }), (event) => {
      try {
        const r = parseRequest(event);
        expect(r.tokens).toBe((typeof event.tokens === 'number' ? event.tokens : 1) * (typeof event.count === 'number' ? event.count : 1));
      } catch (err) {
        expect(NAMED.has((err as Error).name)).toBe(true);
      }
    }), { numRuns: 2000 });
  });

  test('the acquire handler against dynalite: random events admit only when well-formed, fail only with named errors, never over-admit', async () => {
    const db = await startDynalite();
    await db.createTable('fuzz');
    const handler = loadAcquireHandler({
      AWS_ENDPOINT_URL_DYNAMODB: db.endpoint, TABLE_NAME: 'fuzz', LIMITER_NAME: 'fuzz', RATE_PER_SECOND: '50', BURST: '5', SHARDS: '1', MAX_WAIT_MS: '0',
    });
    const out = process.stdout.write;
    process.stdout.write = (() => true) as any; // EMF lines
    const admitted: Record<string, Admission[]> = {};
    const refused: Record<string, number> = {};
    try {
      await fc.assert(fc.asyncProperty(fc.oneof(
        fc.anything(),
        fc.record({
          key: fc.oneof(fc.constantFrom('a', 'b'), fc.integer({ min: 0, max: 2 }), fc.string(), fc.anything()),
          tokens: fc.oneof(fc.integer({ min: -1, max: 7 }), fc.double(), fc.anything()),
          count: fc.oneof(fc.integer({ min: 0, max: 3 }), fc.anything()),
          mode: fc.oneof(fc.constantFrom('RESERVE', 'TRY', 'FAST'), fc.anything()),
        }, { requiredKeys: [] }),
      ), async (event) => {
        let wellFormed = true;
        try {
          parseRequest(event);
        } catch {
          wellFormed = false;
        }
        try {
          const r = await handler(event);
          expect(wellFormed).toBe(true);
          expect(r.admitted).toBe(true);
          (admitted[r.key] ??= []).push({ atUs: r.notBeforeUs, tokens: r.tokens });
        } catch (err) {
          expect(NAMED.has((err as Error).name)).toBe(true);
          refused[(err as Error).name] = (refused[(err as Error).name] ?? 0) + 1;
          if (!wellFormed) expect((err as Error).name).toBe(ThrottleErrors.INVALID_ACQUIRE_REQUEST);
        }
      }), { numRuns: 300 });
      // An empty bucket for sure, whatever the machine's speed: 200 well-formed TRY calls at once on one key
      // (50/s, burst 5 can admit them all only if they spread over 3.9 s).
      await Promise.all(Array.from({ length: 200 }, async () => {
        try {
          const r = await handler({ key: 'a', mode: 'TRY' });
          (admitted[r.key] ??= []).push({ atUs: r.notBeforeUs, tokens: r.tokens });
        } catch (err) {
          refused[(err as Error).name] = (refused[(err as Error).name] ?? 0) + 1;
        }
      }));
      // not vacuous: some events were admitted, some refused as malformed, some for an empty bucket
      expect(Object.values(admitted).flat().length).toBeGreaterThan(0);
      expect(refused[ThrottleErrors.INVALID_ACQUIRE_REQUEST]).toBeGreaterThan(0);
      expect(refused[ThrottleErrors.RATE_LIMIT_EXCEEDED]).toBeGreaterThan(0);
      for (const [key, list] of Object.entries(admitted)) {
        for (const w of [0, 100_000, 1_000_000]) expect([key, w, windowViolations(list, 50, 5, w)]).toEqual([key, w, 0]);
      }
    } finally {
      process.stdout.write = out;
      await db.stop();
    }
  });

  test('dispatcher: random batches never throw; every message ends invoked-and-settled or reported failed', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.record({ body: fc.oneof(fc.string(), fc.json()), group: fc.option(fc.constantFrom('a', 'b')), fail: fc.boolean() }), { maxLength: 20 }),
      async (messages) => {
        const records = messages.map((m, i) => ({ messageId: String(i), body: m.body, attributes: m.group ? { MessageGroupId: m.group } : {} }));
        let invoked = 0;
        const result = await dispatchBatch(records, {
          invoke: async () => (messages[invoked++]?.fail ? { ok: false, error: 'E', cause: 'c' } : { ok: true, output: null }),
          sendTaskSuccess: async () => {},
          sendTaskFailure: async () => {},
          warn: () => {},
        });
        const failed = new Set(result.batchItemFailures.map((f) => f.itemIdentifier));
        expect(result.invoked).toBe(invoked);
        expect(result.invoked + [...failed].filter((id) => Number(id) >= invoked).length).toBeLessThanOrEqual(records.length);
        for (const id of failed) expect(records.some((r) => r.messageId === id)).toBe(true);
      }), { numRuns: 300 });
  });
});

describe('fault: the local DynamoDB goes away mid-run and comes back', () => {
  test('no over-admission at the downstream; acquires fail closed, are retried, and every item completes', async () => {
    const stack = new Stack(new App(), 'Stack', ENV);
    const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: 10, burst: 1, limiterName: 'fault' });
    const task = new tasks.CallAwsService(stack, 'Call API', {
      service: 'sts', action: 'getCallerIdentity', iamResources: ['*'], parameters: { 'NotBeforeUs.$': '$.acquired.notBeforeUs' }, resultPath: '$.api',
    });
    const limited = new RateLimitedTask(stack, 'Limited', { limiter, task, resultPath: '$.acquired' });
    const machine = new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
    const calls: Admission[] = [];
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: { 'Call API': () => { calls.push({ atUs: nowUs(), tokens: 1 }); return { ok: true }; } },
      // the acquire state's retries of LimiterUnavailable, every 400 ms here (5 attempts outlast the 1 s outage)
      retryIntervalOverrides: { 'Limited Acquire': 400 },
    });
    const out = process.stdout.write;
    const err = process.stderr.write;
    process.stdout.write = (() => true) as any; // EMF lines
    process.stderr.write = (() => true) as any; // SDK connection warnings
    try {
      // items arrive one every 100 ms for 3 s; the outage is from 1 s to 2 s
      const running = Promise.all(Array.from({ length: 30 }, async (_, i) => {
        await sleep(i * 100);
        return runner.run({ id: i });
      }));
      await sleep(1000);
      const before = calls.length;
      await runner.db.pause!();
      await sleep(1000);
      await runner.db.resume!();
      const results = await running;
      expect(results.filter((r) => r.status !== 'SUCCEEDED').map((r) => [r.error, r.cause])).toEqual([]);
      expect(calls).toHaveLength(30);
      expectCallsHoldSlots(calls.map((c) => c.atUs), runner.grants, 10, 1);
      // the outage was felt: some acquires failed closed and were retried
      const retried = results.filter((r) => r.events.some((e) => e.type === 'StateRetried' && e.stateName === 'Limited Acquire'));
      expect([before < 30, retried.length > 0]).toEqual([true, true]);
    } finally {
      process.stdout.write = out;
      process.stderr.write = err;
      await runner.stop();
    }
  });
});
