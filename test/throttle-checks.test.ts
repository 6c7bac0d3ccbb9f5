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
import { MapConcurrency, RateLimitedTask, RateLimiter, ThrottleChecks, ThrottledMap, ThrottlePrices } from '../src';

function appWithChecks(region = 'us-east-1', outdir?: string) {
  const app = new App({ outdir });
  const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region } });
  Aspects.of(app).add(new ThrottleChecks({ writePlan: outdir !== undefined }));
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

  test('reserved concurrency summing above what the account can reserve', () => {
    const { stack } = appWithChecks();
    fn(stack, 'A', { reservedConcurrentExecutions: 500 });
    fn(stack, 'B', { reservedConcurrentExecutions: 450 });
    const found = warnings(stack, 'cdk-sfn-throttle:reservedConcurrencySum');
    expect(found).toHaveLength(2);
    expect(found[0]).toContain('reserved concurrency sums to 950 across 2 functions; the account default is 1000 with at least 100 unreserved');
  });

  test.each([
    ['eu-central-1', 2000, true],
    ['us-east-1', 1000, false],
  ])('a Standard workflow planned above the state-transition quota (%s, %i/s)', (region, rate, warned) => {
    const { stack } = appWithChecks(region as string);
    const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: rate as number, burst: 2000, shards: 4 });
    const task = new RateLimitedTask(stack, 'Limited', { limiter, task: apiTask(stack) });
    new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(task) });
    const found = warnings(stack, 'cdk-sfn-throttle:stateTransitionQuota');
    if (warned) {
      expect(found).toEqual([expect.stringContaining('planned 6000 state transitions/s (Stack/Limited: 2000 items/s × 3) exceed the default Standard workflow quota of 800/s in eu-central-1')]);
    } else {
      expect(found).toEqual([]);
    }
  });

  test('the throttle plan: every limiter, map, consumer and state machine, the slowest link, effective TPS, cost per million items', () => {
    const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'plan-'));
    const { app, stack } = appWithChecks('us-east-1', outdir);
    const api = new RateLimiter(stack, 'Api', { ratePerSecond: 20, burst: 5, limiterName: 'api' });
    const crm = new RateLimiter(stack, 'Crm', { ratePerSecond: 5, burst: 1, limiterName: 'crm' });
    const chain = new RateLimitedTask(stack, 'Api Call', { limiter: api, task: apiTask(stack, 'Call API') })
      .next(new RateLimitedTask(stack, 'CRM Call', { limiter: crm, task: apiTask(stack, 'Call CRM') }));
    new sfn.StateMachine(stack, 'Orders', { definitionBody: sfn.DefinitionBody.fromChainable(chain) });
    app.synth();

    const plan = JSON.parse(fs.readFileSync(path.join(outdir, 'throttle-plan.json'), 'utf8'));
    expect(plan.entries).toEqual(expect.arrayContaining([
      expect.objectContaining({ kind: 'limiter', path: 'Stack/Api', ratePerSecond: 20, burst: 5, shards: 1 }),
      expect.objectContaining({ kind: 'limiter', path: 'Stack/Crm', ratePerSecond: 5 }),
    ]));
    const machine = plan.entries.find((e: any) => e.kind === 'stateMachine');
    expect(machine).toMatchObject({ path: 'Stack/Orders', type: 'STANDARD', slowestLink: 'Stack/CRM Call', effectiveItemsPerSecond: 5, plannedTransitionsPerSecond: 75 });
    // 6 transitions, 2 acquire calls and 2 writes per item
    const perMillion = machine.throttleCostPerMillionItemsUsd;
    expect(perMillion.transitions).toBeCloseTo(6 * 1e6 * ThrottlePrices.STANDARD_TRANSITION, 3);
    expect(perMillion.dynamoDbWrites).toBeCloseTo(2 * 1e6 * ThrottlePrices.DYNAMODB_WRITE, 3);
    expect(perMillion.total).toBeCloseTo(perMillion.transitions + perMillion.lambda + perMillion.dynamoDbWrites, 2);
    const summary = fs.readFileSync(path.join(outdir, 'throttle-plan.md'), 'utf8');
    expect(summary).toContain('- **stateMachine** `Stack/Orders` — type: STANDARD');
    expect(summary).toContain('slowestLink: Stack/CRM Call');
  });
});
