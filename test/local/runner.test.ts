import * as path from 'path';
import { App, Duration, Stack } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { LocalRunner, statesEntered } from '../../local/runner';
import { type Admission, nowUs } from '../../local/timing';
import { AcquireMode, RateLimiter } from '../../src';
import { expectCallsHoldSlots } from '../support/decisions';

function plainMachine(extra?: (stack: Stack, chain: sfn.Chain) => sfn.Chain) {
  const app = new App();
  const stack = new Stack(app, 'Plain', { env: { account: '123456789012', region: 'us-east-1' } });
  const table = new dynamodb.Table(stack, 'Orders', { partitionKey: { name: 'id', type: dynamodb.AttributeType.STRING } });
  const fn = new lambda.Function(stack, 'Echo', {
    runtime: lambda.Runtime.NODEJS_22_X,
    handler: 'index.handler',
    code: lambda.Code.fromAsset(path.join(__dirname, '..', 'fixtures', 'echo')),
    environment: { GREETING: 'hello', TABLE_NAME: table.tableName },
  });
  let chain = sfn.Chain.start(new tasks.LambdaInvoke(stack, 'Call Echo', {
    lambdaFunction: fn,
    payloadResponseOnly: false,
    resultSelector: { 'echo.$': '$.Payload' },
    resultPath: '$.result',
  })).next(new tasks.DynamoPutItem(stack, 'Save Order', {
    table,
    item: { id: tasks.DynamoAttributeValue.fromString(sfn.JsonPath.stringAt('$.orderId')), greeting: tasks.DynamoAttributeValue.fromString(sfn.JsonPath.stringAt('$.result.echo.greeting')) },
    resultPath: sfn.JsonPath.DISCARD,
  })).next(new tasks.DynamoGetItem(stack, 'Load Order', {
    table,
    key: { id: tasks.DynamoAttributeValue.fromString(sfn.JsonPath.stringAt('$.orderId')) },
    consistentRead: true,
    resultSelector: { 'greeting.$': '$.Item.greeting.S' },
    resultPath: '$.loaded',
  }));
  if (extra) chain = extra(stack, chain);
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(chain) });
  return { stack, machine };
}

describe('LocalRunner', () => {
  test('runs a plain CDK state machine: a Lambda asset with its template environment and DynamoDB integrations', async () => {
    // GIVEN
    const { stack, machine } = plainMachine();
    const runner = await LocalRunner.start(stack, machine);
    try {
      // WHEN
      const result = await runner.run({ orderId: 'o-1' });
      // THEN
      expect([result.status, result.error, result.cause]).toEqual(['SUCCEEDED', undefined, undefined]);
      expect(result.output.result.echo).toEqual({ echoed: { orderId: 'o-1' }, greeting: 'hello', table: runner.nameOf(stack.getLogicalId(stack.node.findChild('Orders').node.defaultChild as any)) });
      expect(result.output.loaded).toEqual({ greeting: 'hello' });
      expect(statesEntered(result)).toBe(3);
      expect(result.events.every((e) => typeof e.timestamp === 'number')).toBe(true);
    } finally {
      await runner.stop();
    }
  });

  test('a Lambda error fails the execution with its name', async () => {
    const { stack, machine } = plainMachine();
    const runner = await LocalRunner.start(stack, machine, { retryIntervalOverrides: { 'Call Echo': 0 } });
    try {
      const result = await runner.run({ orderId: 'o-2', fail: true });
      expect(result).toMatchObject({ status: 'FAILED', error: 'EchoFailed' });
    } finally {
      await runner.stop();
    }
  });

  test('fails loudly, before running, on a task it has no handler for', async () => {
    // GIVEN a machine that also publishes to SNS, with no handler for it
    const { stack, machine } = plainMachine((s, chain) => chain.next(new tasks.SnsPublish(s, 'Notify', {
      topic: new sns.Topic(s, 'Notifications', { enforceSSL: true }),
      message: sfn.TaskInput.fromJsonPathAt('$.orderId'),
    })));
    // WHEN / THEN
    await expect(LocalRunner.start(stack, machine)).rejects.toThrow(/no handler for Task state "Notify" \(Resource arn:aws:states:::sns:publish\)/);
    // and with a handler it runs
    const sent: unknown[] = [];
    const runner = await LocalRunner.start(stack, machine, { taskHandlers: { Notify: (input) => { sent.push(input); return { MessageId: 'm-1' }; } } });
    try {
      expect((await runner.run({ orderId: 'o-3' })).status).toBe('SUCCEEDED');
      expect(sent).toEqual([{ TopicArn: expect.stringContaining('Notifications'), Message: 'o-3' }]);
    } finally {
      await runner.stop();
    }
  });

  test.each([AcquireMode.RESERVE, AcquireMode.TRY])('the RateLimiter acquire fragment (%s) holds the bound at the downstream across 30 executions', async (mode) => {
    // GIVEN acquire → downstream at 10/s, burst 1; the downstream records arrival times
    const app = new App();
    const stack = new Stack(app, 'Limited', { env: { account: '123456789012', region: 'us-east-1' } });
    const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: 10, burst: 1, maxWait: Duration.minutes(1) });
    const downstream = new tasks.CallAwsService(stack, 'Call Downstream', {
      service: 'sts',
      action: 'getCallerIdentity',
      iamResources: ['*'],
      resultPath: '$.downstream',
      parameters: { NotBeforeUs: sfn.JsonPath.numberAt('$.acquired.notBeforeUs') },
    });
    const acquire = limiter.acquire(stack, 'Throttle', { key: '$.tenant', mode, resultPath: '$.acquired' });
    const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(acquire.next(downstream)) });
    const arrivals: Admission[] = [];
    const early: number[] = [];
    const runner = await LocalRunner.start(stack, machine, {
      // Counted on the downstream's clock, which must never be before the granted slot.
      taskHandlers: {
        'Call Downstream': (input: any) => {
          const arrivedUs = nowUs();
          if (arrivedUs < input.NotBeforeUs) early.push(input.NotBeforeUs);
          arrivals.push({ atUs: arrivedUs, tokens: 1 });
          return { ok: true };
        },
      },
      // TRY refusals retry after a second in the ASL; here, after 50 ms.
      retryIntervalOverrides: { 'Throttle Acquire': 50 },
    });
    const out = process.stdout.write;
    process.stdout.write = (() => true) as any; // EMF lines
    try {
      // WHEN 30 executions start at once
      const started = nowUs();
      const results = await Promise.all(Array.from({ length: 30 }, (_, i) => runner.run({ tenant: 'acme', order: i })));
      const elapsedS = (nowUs() - started) / 1e6;

      // THEN every execution ran the downstream after acquiring, and the downstream saw the bound hold
      if (mode === AcquireMode.RESERVE) {
        expect(results.map((r) => [r.status, r.error, r.cause]).filter(([st]) => st !== 'SUCCEEDED')).toEqual([]);
        // acquire, wait, downstream: three states per execution, no polling
        expect(results.map((r) => statesEntered(r))).toEqual(Array(30).fill(3));
        expect(results[0].output).toMatchObject({ tenant: 'acme', downstream: { ok: true }, acquired: { admitted: true } });
        // 30 calls at 10/s with burst 1 need at least 2.9 s
        expect(elapsedS).toBeGreaterThanOrEqual(2.9);
      } else {
        // TRY: the fragment does not retry an empty bucket (RateLimitedTask will): refused executions fail with
        // RateLimitExceeded and never reach the downstream
        const admitted = results.filter((r) => r.status === 'SUCCEEDED');
        expect(admitted.length).toBeGreaterThanOrEqual(1);
        expect(results.filter((r) => r.status === 'FAILED').every((r) => r.error === 'RateLimitExceeded')).toBe(true);
        expect(arrivals).toHaveLength(admitted.length);
      }
      expectCallsHoldSlots(arrivals.map((a) => a.atUs), runner.grants, 10, 1);
      expect(early).toEqual([]);
    } finally {
      process.stdout.write = out;
      await runner.stop();
    }
  });
});
