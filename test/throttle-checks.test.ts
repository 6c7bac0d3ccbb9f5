import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { App, Aspects, Duration, Stack } from 'aws-cdk-lib';
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sources from 'aws-cdk-lib/aws-lambda-event-sources';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { ConcurrencyLimitedTask, ConcurrencyLimiter, MapConcurrency, RateLimitedTask, RateLimiter, ThrottleChecks, type ThrottleChecksOptions, ThrottledMap } from '../src';

function appWithChecks(region = 'us-east-1', outdir?: string, options: ThrottleChecksOptions = {}) {
  const app = new App({ outdir });
  const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region } });
  Aspects.of(app).add(new ThrottleChecks({ writePlan: outdir !== undefined, ...options }));
  return { app, stack };
}

const fn = (stack: Stack, id: string, props: Partial<lambda.FunctionProps> = {}) => new lambda.Function(stack, id, {
  runtime: lambda.Runtime.NODEJS_22_X, handler: 'index.handler', code: lambda.Code.fromInline('exports.handler = async () => ({})'), ...props,
});
const apiTask = (stack: Stack, id = 'Call API') => new tasks.CallAwsService(stack, id, { service: 'sts', action: 'getCallerIdentity', iamResources: ['*'] });
const warnings = (stack: Stack, id: string) => Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp(`.*\\[ack: ${id}\\]`))
  .map((w) => String(w.entry.data));

describe('ThrottleChecks', () => {
  test('a map whose items wait for more tokens than the limiter serves within maxWait', () => {
    const { stack } = appWithChecks();
    const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: 1, burst: 1, maxWait: Duration.seconds(10), limiterName: 'slow' });
    const map = new ThrottledMap(stack, 'Orders', { limiter, concurrency: MapConcurrency.fixed(40), itemProcessor: apiTask(stack) });
    new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
    expect(warnings(stack, 'cdk-sfn-throttle:mapConcurrencyUnfed')).toEqual([expect.stringContaining(
      '40 items at once × 1 tokens = 40 tokens waiting, but limiter slow serves at most burst 1 + 1/s × maxWait 10 s = 11 within maxWait')]);
  });

  test('a map the limiter can feed: no warning', () => {
    const { stack } = appWithChecks();
    const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: 10, burst: 1, maxWait: Duration.seconds(10) });
    new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(new ThrottledMap(stack, 'Orders', { limiter, itemProcessor: apiTask(stack) })) });
    expect(warnings(stack, 'cdk-sfn-throttle:mapConcurrencyUnfed')).toEqual([]);
  });

  test('any SQS event source: visibility timeout below 6 × the function timeout, reserved concurrency below maxConcurrency', () => {
    const { stack } = appWithChecks();
    const queue = new sqs.Queue(stack, 'Jobs', { visibilityTimeout: Duration.seconds(30), enforceSSL: true });
    const worker = fn(stack, 'Worker', { timeout: Duration.seconds(60), reservedConcurrentExecutions: 2 });
    worker.addEventSource(new sources.SqsEventSource(queue, { maxConcurrency: 5 }));
    fn(stack, 'Fine', { timeout: Duration.seconds(5) }).addEventSource(new sources.SqsEventSource(new sqs.Queue(stack, 'Ok', { visibilityTimeout: Duration.seconds(30) })));
    expect(warnings(stack, 'cdk-sfn-throttle:visibilityTimeout')).toEqual([expect.stringContaining(
      'has a visibility timeout of 30 s, below 6 × the timeout of Stack/Worker/Resource (60 s) = 360 s')]);
    expect(warnings(stack, 'cdk-sfn-throttle:sqsConsumerReservedConcurrency')).toEqual([expect.stringContaining(
      'reserved concurrency 2, below the event source\'s maximum concurrency 5')]);
  });

  test('reserved concurrency summing above what the account can reserve, per account and Region', () => {
    const { app, stack } = appWithChecks();
    fn(stack, 'A', { reservedConcurrentExecutions: 500 });
    fn(stack, 'B', { reservedConcurrentExecutions: 450 });
    // another environment has its own quota: 500 + 450 there would not add to this one's
    const other = new Stack(app, 'Other', { env: { account: '123456789012', region: 'eu-west-1' } });
    fn(other, 'C', { reservedConcurrentExecutions: 500 });
    const found = warnings(stack, 'cdk-sfn-throttle:reservedConcurrencySum');
    expect(found).toHaveLength(2);
    expect(found[0]).toContain('reserved concurrency sums to 950 across 2 functions in account 123456789012, us-east-1; the account\'s concurrency is 1000 with at least 100 unreserved');
    expect(warnings(other, 'cdk-sfn-throttle:reservedConcurrencySum')).toEqual([]);
  });

  test('reserved concurrency in two environments apart stays apart (today\'s app-wide sum warned at 1,000)', () => {
    const { app, stack } = appWithChecks();
    fn(stack, 'A', { reservedConcurrentExecutions: 500 });
    const other = new Stack(app, 'Other', { env: { account: '210987654321', region: 'us-east-1' } });
    fn(other, 'B', { reservedConcurrentExecutions: 500 });
    expect(warnings(stack, 'cdk-sfn-throttle:reservedConcurrencySum')).toEqual([]);
    expect(warnings(other, 'cdk-sfn-throttle:reservedConcurrencySum')).toEqual([]);
  });

  test.each([
    // the sustained quota is the refill rate: 500/s outside the three large Regions (not the 800 bucket), 1,500/s in them
    ['eu-central-1', 200, 'planned 600 state transitions/s (200 items/s through the slowest link Stack/Limited × 3 transitions per item: Stack/Limited 3) exceed the sustained Standard workflow StateTransition quota of 500/s (the default in eu-central-1, bucket 800)'],
    ['eu-central-1', 150, undefined],
    ['us-east-1', 600, 'exceed the sustained Standard workflow StateTransition quota of 1500/s (the default in us-east-1, bucket 5000)'],
    ['us-east-1', 400, undefined],
  ])('a Standard workflow planned above the state-transition quota (%s, %i/s)', (region, rate, message) => {
    const { stack } = appWithChecks(region as string);
    const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: rate as number, burst: 2000, shards: 4 });
    const task = new RateLimitedTask(stack, 'Limited', { limiter, task: apiTask(stack) });
    new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(task) });
    const found = warnings(stack, 'cdk-sfn-throttle:stateTransitionQuota');
    expect(found).toEqual(message ? [expect.stringContaining(message)] : []);
  });

  test('transitions flow at the slowest link: a 5/s link after a 20/s one is 5 items/s through both (30/s, not 75/s)', () => {
    const { stack } = appWithChecks('eu-central-1', undefined, { stateTransitionsPerSecond: 29 });
    const fast = new RateLimiter(stack, 'Fast', { ratePerSecond: 20 });
    const slow = new RateLimiter(stack, 'Slow', { ratePerSecond: 5 });
    const chain = new RateLimitedTask(stack, 'First', { limiter: fast, task: apiTask(stack, 'A') })
      .next(new RateLimitedTask(stack, 'Second', { limiter: slow, task: apiTask(stack, 'B') }));
    new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(chain) });
    expect(warnings(stack, 'cdk-sfn-throttle:stateTransitionQuota')).toEqual([expect.stringContaining(
      'planned 30 state transitions/s (5 items/s through the slowest link Stack/Second × 6 transitions per item: Stack/First 3, Stack/Second 3) exceed the sustained Standard workflow StateTransition quota of 29/s (stateTransitionsPerSecond)')]);
  });

  test('an acquire function whose full rate takes more than a share of the account\'s Lambda concurrency', () => {
    const { stack } = appWithChecks();
    new RateLimiter(stack, 'Busy', { ratePerSecond: 200, limiterName: 'busy' });
    new RateLimiter(stack, 'Calm', { ratePerSecond: 100, limiterName: 'calm' });
    new RateLimiter(stack, 'Capped', { ratePerSecond: 50, limiterName: 'capped', reservedConcurrency: 10 });
    // 200/s × (0.05 s call + 0.5 s mean sub-second sleep) = 110 > 10 % of 1,000; 100/s → 55, not above
    expect(warnings(stack, 'cdk-sfn-throttle:acquireConcurrency')).toEqual([expect.stringContaining(
      'at its full rate limiter busy takes about 110 concurrent acquire calls (200/s × 0.55 s: the call and its sub-second sleep), more than 10 % of the account\'s Lambda concurrency (1000) = 100')]);
    // 50/s × 0.55 s = 27.5 > 10 reserved
    expect(warnings(stack, 'cdk-sfn-throttle:acquireReservedConcurrency')).toEqual([expect.stringContaining(
      'limiter capped\'s acquire function has reserved concurrency 10, below the 27.5 concurrent calls its full rate takes')]);
  });

  test('bad options fail at synth, naming the scope', () => {
    const app = new App();
    new Stack(app, 'Stack');
    Aspects.of(app).add(new ThrottleChecks({ acquireConcurrencyShare: 2 }));
    expect(() => app.synth()).toThrow(/ThrottleChecks acquireConcurrencyShare must be greater than 0 and at most 1, got 2/);
  });

  test('the throttle plan: every limiter, map, consumer and state machine, the slowest link, effective TPS, cost per million items', () => {
    const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'plan-'));
    const { app, stack } = appWithChecks('us-east-1', outdir);
    const api = new RateLimiter(stack, 'Api', { ratePerSecond: 20, burst: 5, limiterName: 'api' });
    const crm = new RateLimiter(stack, 'Crm', { ratePerSecond: 5, burst: 1, limiterName: 'crm' });
    const chain = new RateLimitedTask(stack, 'Api Call', { limiter: api, task: apiTask(stack, 'Call API') })
      .next(new RateLimitedTask(stack, 'CRM Call', { limiter: crm, task: apiTask(stack, 'Call CRM') }));
    new sfn.StateMachine(stack, 'Orders', { definitionBody: sfn.DefinitionBody.fromChainable(chain) });
    // the plan is written by synthesis, not by the aspect: nothing in the directory before
    expect(fs.existsSync(path.join(outdir, 'throttle-plan.json'))).toBe(false);
    app.synth();

    const plan = JSON.parse(fs.readFileSync(path.join(outdir, 'throttle-plan.json'), 'utf8'));
    expect(plan.entries).toEqual(expect.arrayContaining([
      expect.objectContaining({ kind: 'limiter', path: 'Stack/Api', ratePerSecond: 20, burst: 5, shards: 1 }),
      expect.objectContaining({ kind: 'limiter', path: 'Stack/Crm', ratePerSecond: 5 }),
    ]));
    const machine = plan.entries.find((e: any) => e.kind === 'stateMachine');
    // 5 items/s through both links: 5 × 6 transitions
    expect(machine).toMatchObject({ path: 'Stack/Orders', type: 'STANDARD', slowestLink: 'Stack/CRM Call', effectiveItemsPerSecond: 5, plannedTransitionsPerSecond: 30 });
    // 6 transitions, 2 acquire calls (128 MB Arm, 0.55 s each at the full rate) and 2 writes per item
    const perMillion = machine.throttleCostPerMillionItemsUsd;
    expect(perMillion.transitions).toBeCloseTo(6 * 1e6 * 0.000025, 3);
    expect(perMillion.lambda).toBeCloseTo(2 * 1e6 * (0.0000002 + (128 / 1024) * 0.55 * 0.0000133334), 3);
    expect(perMillion.dynamoDbWrites).toBeCloseTo(2 * 1e6 * 0.000000625, 3);
    expect(perMillion.total).toBeCloseTo(perMillion.transitions + perMillion.lambda + perMillion.dynamoDbWrites, 2);
    const summary = fs.readFileSync(path.join(outdir, 'throttle-plan.md'), 'utf8');
    expect(summary).toContain('- **stateMachine** `Stack/Orders` — type: STANDARD');
    expect(summary).toContain('slowestLink: Stack/CRM Call');
  });

  test('the cost follows the acquire function\'s memory and architecture, and the prices given', () => {
    const cost = (props: { memorySize?: number; architecture?: lambda.Architecture }, options: ThrottleChecksOptions = {}) => {
      const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'plan-'));
      const { app, stack } = appWithChecks('us-east-1', outdir, options);
      const limiter = new RateLimiter(stack, 'Api', { ratePerSecond: 5, ...props });
      new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(new RateLimitedTask(stack, 'T', { limiter, task: apiTask(stack) })) });
      app.synth();
      const plan = JSON.parse(fs.readFileSync(path.join(outdir, 'throttle-plan.json'), 'utf8'));
      return plan.entries.find((e: any) => e.kind === 'stateMachine').throttleCostPerMillionItemsUsd.lambda;
    };
    expect(cost({})).toBeCloseTo(1e6 * (0.0000002 + 0.125 * 0.55 * 0.0000133334), 3);
    expect(cost({ memorySize: 1024, architecture: lambda.Architecture.X86_64 })).toBeCloseTo(1e6 * (0.0000002 + 1 * 0.55 * 0.0000166667), 3);
    expect(cost({}, { prices: { lambdaRequest: 0.000001, lambdaArmGbSecond: 0.00002 } })).toBeCloseTo(1e6 * (0.000001 + 0.125 * 0.55 * 0.00002), 3);
  });
});

describe('ThrottleChecks: concurrency limits', () => {
  const build = (options: { reserved?: number; type?: sfn.StateMachineType; limit?: number } = {}) => {
    const { stack } = appWithChecks();
    const limiter = new ConcurrencyLimiter(stack, 'Db', { limit: options.limit ?? 10, limiterName: 'db' });
    const query = fn(stack, 'Query', { reservedConcurrentExecutions: options.reserved });
    const task = tasks.LambdaInvoke.jsonPath(stack, 'Query rows', { lambdaFunction: query, retryOnServiceExceptions: false, payloadResponseOnly: true });
    const limited = new ConcurrencyLimitedTask(stack, 'Limited', { limiter, task });
    new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(limited), stateMachineType: options.type });
    return stack;
  };

  test('a limit above the reserved concurrency of the function the task calls', () => {
    expect(warnings(build({ reserved: 4 }), 'cdk-sfn-throttle:concurrencyAboveReserved')).toEqual([expect.stringContaining(
      'limiter db lets 10 runs of Query rows at once on a key, but its function Stack/Query has reserved concurrency 4: the calls above 4 are throttled')]);
  });

  test('a limit the reserved concurrency covers, or none reserved: no warning', () => {
    expect(warnings(build({ reserved: 10 }), 'cdk-sfn-throttle:concurrencyAboveReserved')).toEqual([]);
    expect(warnings(build(), 'cdk-sfn-throttle:concurrencyAboveReserved')).toEqual([]);
  });

  test('an Express machine holding slots: no status events, leases are the only way back', () => {
    expect(warnings(build({ type: sfn.StateMachineType.EXPRESS }), 'cdk-sfn-throttle:concurrencyInExpress')).toEqual([expect.stringContaining(
      'Stack/Limited runs in the Express state machine Stack/M, which emits no execution status events')]);
    expect(warnings(build(), 'cdk-sfn-throttle:concurrencyInExpress')).toEqual([]);
  });

  test('the plan lists the concurrency limiter', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plan-'));
    const { app, stack } = appWithChecks('us-east-1', dir);
    const limiter = new ConcurrencyLimiter(stack, 'Db', { limit: 50, limiterName: 'db', leaseDuration: Duration.minutes(2) });
    const task = tasks.LambdaInvoke.jsonPath(stack, 'Q', { lambdaFunction: fn(stack, 'Query'), retryOnServiceExceptions: false });
    new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(new ConcurrencyLimitedTask(stack, 'Limited', { limiter, task })) });
    app.synth();
    const plan = JSON.parse(fs.readFileSync(path.join(dir, 'throttle-plan.json'), 'utf8'));
    expect(plan.entries).toEqual(expect.arrayContaining([expect.objectContaining({ kind: 'concurrencyLimiter', name: 'db', limit: 50, leaseDurationSeconds: 120, maxWaitSeconds: 300 })]));
  });
});
