import { App, Duration, Stack, Validations } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { MapConcurrency, MapMode, RateLimiter, RetryPolicy, ThrottledMap, type ThrottledMapProps } from '../src';
import { aslOf } from './support/asl';
import { expectCallsHoldSlots } from './support/decisions';
import { statementsOfRole } from './support/iam';
import { nagFindings } from './support/nag';
import { quiet } from './support/quiet';
import { expectValidationError } from './support/validation';
import { LocalRunner } from '../local/runner';
import { type Admission, nowUs } from '../local/timing';

const ENV = { account: '123456789012', region: 'us-east-1' };

/** A map over `$.items` whose processor is one task, 'Call API', in its own stack. */
interface BuildOptions extends Partial<ThrottledMapProps> {
  readonly rate?: number;
  readonly burst?: number;
  readonly noLimiter?: boolean;
  readonly processor?: (s: Stack) => sfn.IChainable;
}

function build(props: BuildOptions = {}) {
  const app = new App();
  const stack = new Stack(app, 'Stack', { env: ENV });
  const limiter = props.noLimiter ? undefined : new RateLimiter(stack, 'Limiter', {
    ratePerSecond: props.rate ?? 20, burst: props.burst ?? 1, limiterName: 'api', maxWait: Duration.minutes(5),
  });
  const processor = props.processor?.(stack) ?? new tasks.CallAwsService(stack, 'Call API', {
    service: 'sts', action: 'getCallerIdentity', iamResources: ['*'], parameters: { 'Item.$': '$' },
  });
  const map = new ThrottledMap(stack, 'Orders', { itemsPath: '$.items', limiter, ...props, itemProcessor: processor });
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
  // The fixture's own choices, not the construct's: its task has no resource ARN, its logging and tracing are
  // the application's to set.
  Validations.of(machine).acknowledge({ id: 'AwsSolutions-IAM5[Resource::*]', reason: 'test fixture: sts:GetCallerIdentity has no resource-level permissions' });
  for (const id of ['AwsSolutions-SF1', 'AwsSolutions-SF2', 'Serverless-StepFunctionStateMachineXray']) {
    Validations.of(machine).acknowledge({ id, reason: 'test fixture: state machine logging and tracing belong to the application' });
  }
  return { stack, machine, map, limiter };
}

const errorOf = (name: string, message = name) => Object.assign(new Error(message), { name });

describe('ThrottledMap', () => {
  describe('template', () => {
    test('inline: Map with MaxConcurrency 10; each item acquires, waits, then runs its task', () => {
      const { stack } = build();
      const asl = aslOf(Template.fromStack(stack));
      const map = asl.States.Orders;
      expect(map).toMatchObject({ Type: 'Map', ItemsPath: '$.items', MaxConcurrency: 10, End: true });
      expect(map.ItemProcessor.ProcessorConfig).toEqual({ Mode: 'INLINE' });
      expect(map.ItemProcessor.StartAt).toBe('Orders Item Acquire');
      expect(map.ItemProcessor.States['Orders Item Acquire'].Next).toBe('Orders Item Wait');
      expect(map.ItemProcessor.States['Orders Item Wait'].Next).toBe('Call API');
      const info = Annotations.fromStack(stack).findInfo('*', Match.stringLikeRegexp('ThrottledMap Orders: concurrency fixed at 10'));
      expect(info).toHaveLength(1);
    });

    test('distributed: batching, tolerated failures, a Map Run label; a batch acquires tokens per item', () => {
      const { stack } = build({
        mode: MapMode.distributed({ batch: { maxItems: 5, batchInput: { source: 'orders' } }, toleratedFailurePercentage: 5 }),
        burst: 10,
        concurrency: MapConcurrency.forThroughput({ ratePerSecond: 20, itemDuration: Duration.millis(1500) }),
      });
      const map = aslOf(Template.fromStack(stack)).States.Orders;
      expect(map).toMatchObject({
        Type: 'Map',
        Label: 'Orders',
        MaxConcurrency: 30,
        ItemBatcher: { MaxItemsPerBatch: 5, BatchInput: { source: 'orders' } },
        ToleratedFailurePercentage: 5,
      });
      expect(map.ItemProcessor.ProcessorConfig).toEqual({ Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' });
      // the batch is one unit: acquire (tokens × its item count) first, every failure through the backoff state
      const unit = map.ItemProcessor.States['Orders Item Unit'];
      expect(unit.Branches[0].States['Orders Item Acquire'].Parameters).toMatchObject({ 'tokens': 1, 'count.$': 'States.ArrayLength($.Items)' });
      expect(unit.Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.cdkSfnThrottleError', Next: 'Orders Item Backoff' }]);
      const info = Annotations.fromStack(stack).findInfo('*', Match.stringLikeRegexp("30 = ceil\\(20/s × 1.5 s per item\\) by Little's law"));
      expect(info).toHaveLength(1);
    });

    test.each([
      ['at the top level', false],
      ['inside a Parallel branch', true],
    ])('distributed IAM %s: start this machine, describe/stop its executions, redrive this Map Run', (_name, nested) => {
      const app = new App();
      const stack = new Stack(app, 'Stack', { env: ENV });
      const map = new ThrottledMap(stack, 'Orders', { mode: MapMode.distributed(), itemProcessor: new sfn.Pass(stack, 'Work') });
      const chain = nested ? new sfn.Parallel(stack, 'Fan Out').branch(map) : map;
      new sfn.StateMachine(stack, 'Machine', { stateMachineName: 'orders', definitionBody: sfn.DefinitionBody.fromChainable(chain) });
      const template = Template.fromStack(stack);
      const role = Object.keys(template.findResources('AWS::IAM::Role'))[0];
      const statements = statementsOfRole(template, role);
      // execution:<this machine's name>:* and execution:<name>/<Map Run label>:*, the name taken from its ARN
      const machineRef = Object.keys(template.findResources('AWS::StepFunctions::StateMachine'))[0];
      const execution = (suffix: string) => ({
        'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':states:us-east-1:123456789012:execution:', { 'Fn::Select': [6, { 'Fn::Split': [':', { Ref: machineRef }] }] }, suffix]],
      });
      expect(statements).toEqual(expect.arrayContaining([
        expect.objectContaining({ Action: 'states:StartExecution', Resource: { Ref: machineRef } }),
        expect.objectContaining({ Action: ['states:DescribeExecution', 'states:StopExecution'], Resource: execution(':*') }),
        expect.objectContaining({ Action: 'states:RedriveExecution', Resource: execution('/Orders:*') }),
      ]));
      // nothing else, and no wildcard resource
      expect(statements).toHaveLength(3);
    });

    test('inline concurrency above 40 warns and names distributed mode', () => {
      const { stack } = build({ concurrency: MapConcurrency.fixed(100) });
      const warnings = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('concurrency 100 .* above what an inline Map runs at once \\(40\\): use mode: MapMode.distributed\\(\\)'));
      expect(warnings).toHaveLength(1);
    });

    test.each<[string, () => unknown, RegExp]>([
      ['toleratedFailurePercentage 150', () => build({ mode: MapMode.distributed({ toleratedFailurePercentage: 150 }) }), /\[Stack\/Orders\] mode toleratedFailurePercentage must be from 0 to 100, got 150/],
      ['toleratedFailureCount -1', () => build({ mode: MapMode.distributed({ toleratedFailureCount: -1 }) }), /mode toleratedFailureCount must be an integer from 0 to 100000000, got -1/],
      ['batch with no limit', () => build({ mode: MapMode.distributed({ batch: {} }) }), /mode batch needs maxItems or maxInputBytes/],
      ['batch.maxItems 0', () => build({ mode: MapMode.distributed({ batch: { maxItems: 0 } }) }), /mode batch.maxItems must be an integer from 1 to 100000, got 0/],
      ['batch.maxInputBytes 300000', () => build({ mode: MapMode.distributed({ batch: { maxInputBytes: 300_000 } }), noLimiter: true }), /mode batch.maxInputBytes must be an integer from 1 to 262144, got 300000/],
      ['a batch above the burst', () => build({ mode: MapMode.distributed({ batch: { maxItems: 5 } }), burst: 4 }), /acquire.consume × batch.maxItems must be at most floor\(burst 4 \/ shards 1\) = 4 \(one acquire per batch\), got 1 × 5 = 5/],
      ['a limited batch without maxItems', () => build({ mode: MapMode.distributed({ batch: { maxInputBytes: 1000 } }) }), /mode batch.maxItems is required with a limiter/],
      ['consume above the burst', () => build({ burst: 2, acquire: { consume: { requests: 3 } } }), /acquire.consume.requests must be an integer from 1 to 2 \(floor\(burst 2 \/ shards 1\)\), got 3/],
      ['consume of a dimension the limiter has not', () => build({ acquire: { consume: { tokens: 3 } } }), /acquire.consume must name the limiter's dimension \(requests\) and no other, got \{"tokens":3\}/],
      ['acquire without a limiter', () => build({ noLimiter: true, acquire: { consume: { requests: 2 } } }), /acquire needs a limiter, got acquire \{"consume":\{"requests":2\}\} and no limiter/],
      ['a literal key over 512 characters', () => build({ acquire: { key: 'k'.repeat(513) } }), /acquire.key must be a JSONPath or a literal of 1 to 512 characters/],
      ['itemsPath with an itemReader', () => build({
        mode: MapMode.distributed({ itemReader: new sfn.S3JsonItemReader({ bucketNamePath: '$.bucket', key: 'items.json' }) }),
      }), /itemsPath and mode's itemReader are exclusive/],
      ['concurrency 0', () => build({ concurrency: MapConcurrency.fixed(0) }), /\[Stack\/Orders\] concurrency \(MapConcurrency.fixed\) must be an integer from 1 to 10000, got 0/],
      ['a concurrency path without $', () => build({ concurrency: MapConcurrency.fromPath('concurrency') }), /concurrency \(MapConcurrency.fromPath\) must be a JSONPath starting with \$ \(or, in a JSONata machine, a JSONata expression \{% ... %\}\), got concurrency/],
      ['forThroughput at rate 0', () => build({ concurrency: MapConcurrency.forThroughput({ ratePerSecond: 0, itemDuration: Duration.seconds(1) }) }), /forThroughput\) ratePerSecond must be greater than 0 and at most 100000, got 0/],
      ['forThroughput above 10,000', () => build({ concurrency: MapConcurrency.forThroughput({ ratePerSecond: 1000, itemDuration: Duration.minutes(1) }) }), /concurrency derived from forThroughput .* must be an integer from 1 to 10000, got 60000/],
      ['a retry policy with an interval of 0', () => build({ retry: RetryPolicy.throttling({ interval: Duration.seconds(0) }) }), /\[Stack\/Orders\] retry \(RetryPolicy.throttling\) interval \(s\) must be an integer from 1 to 3600, got 0/],
    ])('fails at synth: %s', (_name, make, message) => {
      expectValidationError(make, message);
    });

    test.each([
      ['inline, limited, retried, failures caught', { retry: RetryPolicy.throttling({ maxAttempts: 3 }), catchItemFailures: true }],
      ['distributed, batched, tolerated failures', { mode: MapMode.distributed({ batch: { maxItems: 5 }, toleratedFailureCount: 3 }), burst: 10 }],
    ] as [string, Partial<ThrottledMapProps>][])('snapshot and cdk-nag: %s', (_name, props) => {
      const { stack } = build(props);
      expect(Template.fromStack(stack).toJSON()).toMatchSnapshot();
      expect(nagFindings(stack, ['AwsSolutions', 'Serverless'])).toEqual([]);
    });
  });

  describe('through the local runner', () => {
    test('200 items, limiter at 20/s, 10 % failing: the bound holds at the downstream, failed items are collected', async () => {
      // GIVEN an inline map of 200 items at concurrency 40 under 20/s, burst 1; every tenth item fails for good
      const { stack, machine } = build({
        concurrency: MapConcurrency.fixed(40), catchItemFailures: true, retry: RetryPolicy.throttling({ maxAttempts: 3 }),
      });
      const calls: Admission[] = [];
      const runner = await LocalRunner.start(stack, machine, {
        dynamoDbProcess: true,
        taskHandlers: {
          'Call API': ({ Item: item }: any) => {
            calls.push({ atUs: nowUs(), tokens: 1 });
            if (item.id % 10 === 0) throw errorOf('OrderRejected', `order ${item.id} rejected`);
            return { id: item.id, ok: true };
          },
        },
      });
      try {
        // WHEN it runs
        const r = await quiet(() => runner.run({ items: Array.from({ length: 200 }, (_, id) => ({ id })) }));

        // THEN every item has a result, failures are records in place, and the downstream saw the bound
        expect([r.status, r.error, r.cause]).toEqual(['SUCCEEDED', undefined, undefined]);
        const failed = r.output.filter((x: any) => x.failed);
        expect(failed).toHaveLength(20);
        expect(failed[0]).toMatchObject({ failed: true, error: { Error: 'OrderRejected' }, item: { id: 0 } });
        expect(r.output.filter((x: any) => x.ok)).toHaveLength(180);
        expect(calls).toHaveLength(200);
        expectCallsHoldSlots(calls.map((c) => c.atUs), runner.grants, 20, 1);
      } finally {
        await runner.stop();
      }
    });

    test.each([
      ['percentage 10 %', { toleratedFailurePercentage: 10 }],
      ['count 2', { toleratedFailureCount: 2 }],
    ])('distributed, tolerated %s: 2 of 20 failing succeeds, 3 fails the map', async (_name, tolerance) => {
      const { stack, machine } = build({ mode: MapMode.distributed(tolerance), noLimiter: true, concurrency: MapConcurrency.fixed(5) });
      const runner = await LocalRunner.start(stack, machine, {
        taskHandlers: {
          'Call API': ({ Item: item }: any) => {
            if (item.bad) throw errorOf('OrderRejected');
            return { id: item.id };
          },
        },
      });
      try {
        const items = (bad: number) => Array.from({ length: 20 }, (_, id) => ({ id, bad: id < bad }));
        const ok = await runner.run({ items: items(2) });
        expect(ok.status).toBe('SUCCEEDED');
        expect(ok.output.filter((x: any) => x.Error === 'OrderRejected')).toHaveLength(2);
        const over = await runner.run({ items: items(3) });
        expect([over.status, over.error]).toEqual(['FAILED', 'States.ExceedToleratedFailureThreshold']);
        expect(over.cause).toMatch(/3 of 20 items failed/);
      } finally {
        await runner.stop();
      }
    });

    test('distributed, batches of 3 under 10/s burst 3: the right batches, each holding a token per item', async () => {
      const { stack, machine } = build({ mode: MapMode.distributed({ batch: { maxItems: 3, batchInput: { source: 'orders' } } }), rate: 10, burst: 3, concurrency: MapConcurrency.fixed(4) });
      const batches: Admission[] = [];
      const seen: unknown[] = [];
      const runner = await LocalRunner.start(stack, machine, {
        dynamoDbProcess: true,
        taskHandlers: {
          'Call API': ({ Item: batch }: any) => {
            batches.push({ atUs: nowUs(), tokens: batch.Items.length });
            seen.push(batch);
            return { n: batch.Items.length };
          },
        },
      });
      try {
        const r = await quiet(() => runner.run({ items: Array.from({ length: 10 }, (_, id) => ({ id })) }));
        expect(r.status).toBe('SUCCEEDED');
        // 10 items in batches of 3, 3, 3, 1, each with its BatchInput
        expect(seen.map((b: any) => b.Items.map((i: any) => i.id)).sort((a, b) => a[0] - b[0])).toEqual([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]);
        expect(seen.every((b: any) => b.BatchInput.source === 'orders')).toBe(true);
        expect(r.output).toEqual([{ n: 3 }, { n: 3 }, { n: 3 }, { n: 1 }]);
        // a batch takes one token per item: 10 tokens at 10/s after a burst of 3 need 0.7 s; one token per batch
        // would have let all four through within 0.1 s
        expect(runner.grants.map((g) => g.tokens).sort()).toEqual([1, 3, 3, 3]);
        expectCallsHoldSlots(batches.flatMap((b) => Array(b.tokens).fill(b.atUs)), runner.grants, 10, 3);
        const slots = runner.grants.map((g) => g.atUs).sort((a, b) => a - b);
        expect(slots[3] - slots[0]).toBeGreaterThanOrEqual(600_000);
      } finally {
        await runner.stop();
      }
    });

    test('an S3 item reader needs a local reader, and then runs', async () => {
      const { stack, machine } = build({
        mode: MapMode.distributed({ itemReader: new sfn.S3JsonItemReader({ bucketNamePath: '$.bucket', key: 'items.json' }) }),
        noLimiter: true,
        itemsPath: undefined,
      });
      await expect(LocalRunner.start(stack, machine, { taskHandlers: { 'Call API': () => ({}) } }))
        .rejects.toThrow(/cannot read the items of Map state "Orders" \(ItemReader arn:aws:states:::s3:getObject\): give it one in itemReaders/);
      const runner = await LocalRunner.start(stack, machine, {
        taskHandlers: { 'Call API': ({ Item: item }: any) => ({ twice: item.n * 2 }) },
        itemReaders: { Orders: (input: any) => (input.bucket === 'b' ? [{ n: 1 }, { n: 2 }] : []) },
      });
      try {
        expect((await runner.run({ bucket: 'b' })).output).toEqual([{ twice: 2 }, { twice: 4 }]);
      } finally {
        await runner.stop();
      }
    });
  });
});
