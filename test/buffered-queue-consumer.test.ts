import * as path from 'path';
import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { App, Duration, Stack, Validations } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { statementsOfRole } from './support/iam';
import { nagFindings } from './support/nag';
import { LocalRunner } from '../local/runner';
import { type Admission, nowUs, sleep, windowViolations } from '../local/timing';
import { BufferedQueueConsumer, type BufferedQueueConsumerProps, RateLimiter } from '../src';

const ENV = { env: { account: '123456789012', region: 'us-east-1' } };

function fixtureFunction(stack: Stack, id: string, props: Partial<lambda.FunctionProps> = {}) {
  return new lambda.Function(stack, id, {
    runtime: lambda.Runtime.NODEJS_22_X,
    handler: 'index.handler',
    code: lambda.Code.fromAsset(path.join(__dirname, 'fixtures', 'consumer')),
    timeout: Duration.seconds(10),
    memorySize: 256,
    ...props,
  });
}

/** A stack with a target function (and, on request, a limiter) behind a BufferedQueueConsumer. */
function build(props: Partial<BufferedQueueConsumerProps> & { consumerMode?: boolean; rate?: number } = {}) {
  const stack = new Stack(new App(), 'Stack', ENV);
  const fn = fixtureFunction(stack, props.consumerMode ? 'Consumer' : 'Target');
  const limiter = props.rate ? new RateLimiter(stack, 'Limiter', { ratePerSecond: props.rate, burst: 1, limiterName: 'target' }) : undefined;
  const buffer = new BufferedQueueConsumer(stack, 'Buffer', {
    ...(props.consumerMode ? { consumer: fn } : { target: fn, limiter }),
    ...props,
  });
  return { stack, fn, buffer, limiter };
}

const roleOf = (template: Template, fnLogicalIdPrefix: string) => {
  const fns = template.findResources('AWS::Lambda::Function');
  const id = Object.keys(fns).find((k) => k.startsWith(fnLogicalIdPrefix))!;
  return fns[id].Properties.Role['Fn::GetAtt'][0] as string;
};

describe('BufferedQueueConsumer', () => {
  describe('template', () => {
    test('queue: SSE, enforceSSL, a DLQ after 5 receives kept 14 days, visibility 6 × the consumer timeout', () => {
      const { stack } = build({ consumerMode: true });
      const t = Template.fromStack(stack);
      t.hasResourceProperties('AWS::SQS::Queue', {
        VisibilityTimeout: 60,
        SqsManagedSseEnabled: true,
        RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('BufferDeadLetterQueue'), 'Arn'] }, maxReceiveCount: 5 },
      });
      t.hasResourceProperties('AWS::SQS::Queue', { MessageRetentionPeriod: 1_209_600, SqsManagedSseEnabled: true });
      t.hasResourceProperties('AWS::SQS::QueuePolicy', {
        PolicyDocument: { Statement: [Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })] },
      });
      t.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
        BatchSize: 10, ScalingConfig: { MaximumConcurrency: 2 }, FunctionResponseTypes: ['ReportBatchItemFailures'],
      });
    });

    test('IAM: the dispatcher may invoke only its target, use its queue, its limiter table, and report results to one machine', () => {
      const { stack, buffer } = build({ rate: 20 });
      const machine = new sfn.StateMachine(stack, 'Machine', {
        definitionBody: sfn.DefinitionBody.fromChainable(buffer.sendMessageTask(stack, 'Hand Off', { messageBody: sfn.TaskInput.fromJsonPathAt('$'), waitForResult: true })),
      });
      buffer.allowResultsFrom(machine);
      const t = Template.fromStack(stack);
      const statements = statementsOfRole(t, roleOf(t, 'BufferDispatcher'));
      const byAction = (a: string) => statements.filter((s) => ([] as string[]).concat(s.Action).includes(a)).map((s) => s.Resource);
      expect(byAction('lambda:InvokeFunction')).toEqual([{ 'Fn::GetAtt': [expect.stringMatching(/^Target/), 'Arn'] }]);
      expect(byAction('sqs:ReceiveMessage')).toEqual([{ 'Fn::GetAtt': [expect.stringMatching(/^BufferQueue/), 'Arn'] }]);
      expect(byAction('dynamodb:UpdateItem')).toEqual([[{ 'Fn::GetAtt': [expect.stringMatching(/^LimiterTable/), 'Arn'] }]]);
      expect(byAction('states:SendTaskSuccess')).toEqual([{ Ref: expect.stringMatching(/^Machine/) }]);
      // no wildcard resource except X-Ray's, which has none
      const wild = statements.filter((s) => s.Resource === '*').flatMap((s) => ([] as string[]).concat(s.Action));
      expect(wild.sort()).toEqual(['xray:PutTelemetryRecords', 'xray:PutTraceSegments']);
    });

    test('waitForResult without allowResultsFrom fails at synth, naming the method', () => {
      const { stack, buffer } = build();
      new sfn.StateMachine(stack, 'Machine', {
        definitionBody: sfn.DefinitionBody.fromChainable(buffer.sendMessageTask(stack, 'Hand Off', { messageBody: sfn.TaskInput.fromJsonPathAt('$'), waitForResult: true })),
      });
      expect(() => Template.fromStack(stack)).toThrow(/call allowResultsFrom\(stateMachine\)/);
    });

    test('reserved concurrency on the consumer warns (the poller over-pulls)', () => {
      const stack = new Stack(new App(), 'Stack', ENV);
      const consumer = fixtureFunction(stack, 'Consumer', { reservedConcurrentExecutions: 5 });
      new BufferedQueueConsumer(stack, 'Buffer', { consumer, maxConcurrency: 5 });
      expect(Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('reserved concurrency 5.*good messages can reach the DLQ'))).toHaveLength(1);
    });

    test.each<[string, () => unknown, RegExp]>([
      ['neither consumer nor target', () => new BufferedQueueConsumer(new Stack(), 'B', {}), /give exactly one of consumer and target, got neither/],
      ['both consumer and target', () => {
        const s = new Stack();
        const f = fixtureFunction(s, 'F');
        return new BufferedQueueConsumer(s, 'B', { consumer: f, target: f });
      }, /give exactly one of consumer and target, got both/],
      ['visibilityTimeout below 6 × timeout', () => build({ consumerMode: true, visibilityTimeout: Duration.seconds(30) }),
        /visibilityTimeout must be at least 6 × the consumer's timeout \(10 s\) = 60 s, got 30 s/],
      ['maxConcurrency 1', () => build({ maxConcurrency: 1 }), /maxConcurrency must be an integer from 2 to 1000, got 1/],
      ['maxConcurrency 1001', () => build({ maxConcurrency: 1001 }), /maxConcurrency must be an integer from 2 to 1000, got 1001/],
      ['batchSize 11 without a window', () => build({ batchSize: 11 }), /batchSize must be an integer from 1 to 10 \(up to 10,000 needs a standard queue and maxBatchingWindow\), got 11/],
      ['maxReceiveCount 0', () => build({ maxReceiveCount: 0 }), /maxReceiveCount must be an integer from 1 to 1000, got 0/],
      ['a limiter with a consumer', () => {
        const s = new Stack();
        return new BufferedQueueConsumer(s, 'B', { consumer: fixtureFunction(s, 'F'), limiter: new RateLimiter(s, 'L', { ratePerSecond: 1 }) });
      }, /limiter needs target mode/],
      ['fifo with a batching window', () => build({ fifo: true, maxBatchingWindow: Duration.seconds(5) }), /maxBatchingWindow is not supported on FIFO queues/],
      ['fifo mismatching the existing queue', () => {
        const s = new Stack();
        return new BufferedQueueConsumer(s, 'B', { target: fixtureFunction(s, 'F'), fifo: true, existingQueue: new sqs.Queue(s, 'Q', { enforceSSL: true }) });
      }, /fifo must match existingQueue: the queue is standard, got fifo: true/],
      ['a FIFO send without a group', () => build({ fifo: true }).buffer.sendMessageTask(new Stack(), 'S', { messageBody: sfn.TaskInput.fromText('x') }),
        /messageGroupId is required on a FIFO queue/],
      ['a group on a standard queue', () => build().buffer.sendMessageTask(new Stack(), 'S', { messageBody: sfn.TaskInput.fromText('x'), messageGroupId: 'g' }),
        /messageGroupId applies to FIFO queues only, got g/],
      ['waitForResult with a consumer', () => build({ consumerMode: true }).buffer.sendMessageTask(new Stack(), 'S', { messageBody: sfn.TaskInput.fromText('x'), waitForResult: true }),
        /waitForResult needs target mode/],
    ])('fails at synth: %s', (_name, make, message) => {
      expect(make).toThrow(message);
    });

    test.each([
      ['consumer mode', { consumerMode: true }],
      ['target mode with a limiter, FIFO', { rate: 20, fifo: true }],
    ] as [string, any][])('snapshot and cdk-nag: %s', (_name, props) => {
      const { stack, fn } = build(props);
      for (const id of ['Serverless-LambdaDLQ', 'Serverless-LambdaTracing', 'AwsSolutions-L1', 'Serverless-LambdaLatestVersion', 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]']) {
        Validations.of(fn).acknowledge({ id, reason: 'test fixture function: its configuration is the application\'s' });
      }
      expect(Template.fromStack(stack).toJSON()).toMatchSnapshot();
      expect(nagFindings(stack, ['AwsSolutions', 'Serverless'])).toEqual([]);
    });
  });

  describe('through the local runner', () => {
    test('1,000 messages, 10 % poison: every good message processed, every poison message in the DLQ, none lost', async () => {
      const { stack, fn, buffer } = build({ consumerMode: true, maxConcurrency: 5 });
      const table = new dynamodb.Table(stack, 'Processed', { partitionKey: { name: 'id', type: dynamodb.AttributeType.STRING } });
      fn.addEnvironment('TABLE_NAME', table.tableName);
      // a machine is what the runner runs; this one only hands the message to the buffer
      const machine = new sfn.StateMachine(stack, 'Machine', {
        definitionBody: sfn.DefinitionBody.fromChainable(buffer.sendMessageTask(stack, 'Enqueue', { messageBody: sfn.TaskInput.fromJsonPathAt('$') })),
      });
      const runner = await LocalRunner.start(stack, machine, { queueVisibilityTimeoutMs: 100 });
      try {
        const queue = runner.queue(stack.getLogicalId(buffer.queue.node.defaultChild as sqs.CfnQueue));
        const dlq = runner.queue(stack.getLogicalId(buffer.deadLetterQueue!.node.defaultChild as sqs.CfnQueue));
        for (let id = 0; id < 1000; id++) queue.send(JSON.stringify({ id, poison: id % 10 === 7 }));
        for (let waited = 0; (queue.depth > 0 || dlq.depth < 100) && waited < 60_000; waited += 50) await sleep(50);

        const tableName = runner.nameOf(stack.getLogicalId(table.node.defaultChild as dynamodb.CfnTable));
        const processed = await runner.db.client.send(new ScanCommand({ TableName: tableName }));
        const ids = (processed.Items ?? []).map((i) => Number(i.id.S)).sort((a, b) => a - b);
        const dead = dlq.bodies().map((b) => JSON.parse(b));
        expect(queue.depth).toBe(0);
        expect(ids).toEqual(Array.from({ length: 1000 }, (_, i) => i).filter((i) => i % 10 !== 7));
        expect(dead.every((m) => m.poison)).toBe(true);
        expect(dead).toHaveLength(100);
        expect(runner.consumers[0].maxInFlight).toBeLessThanOrEqual(5);
        // nothing lost: every message is processed or dead-lettered
        expect(ids.length + dead.length).toBe(1000);
      } finally {
        await runner.stop();
      }
    });

    test('dispatcher with a limiter at 20/s: target calls obey burst + rate·w; waitForResult returns the output or the error', async () => {
      const { stack, buffer, fn } = build({ rate: 20, maxConcurrency: 4, batchSize: 5 });
      const machine = new sfn.StateMachine(stack, 'Machine', {
        definitionBody: sfn.DefinitionBody.fromChainable(buffer.sendMessageTask(stack, 'Hand Off', {
          messageBody: sfn.TaskInput.fromJsonPathAt('$'), waitForResult: true, resultPath: '$.result',
        })),
      });
      buffer.allowResultsFrom(machine);
      const calls: Admission[] = [];
      const runner = await LocalRunner.start(stack, machine, {
        dynamoDbProcess: true,
        functionHandlers: {
          [stack.getLogicalId(fn.node.defaultChild as lambda.CfnFunction)]: (event: any) => {
            calls.push({ atUs: nowUs(), tokens: 1 });
            if (event.fail) throw Object.assign(new Error(`order ${event.id} refused`), { name: 'OrderRefused' });
            return { id: event.id, shipped: true };
          },
        },
      });
      const out = process.stdout.write;
      process.stdout.write = (() => true) as any; // EMF lines
      try {
        const results = await Promise.all(Array.from({ length: 60 }, (_, id) => runner.run({ id, fail: id === 13 })));
        expect(calls).toHaveLength(60);
        for (const w of [100_000, 1_000_000, 5_000_000]) expect([w, windowViolations(calls, 20, 1, w)]).toEqual([w, 0]);
        expect(results[0]).toMatchObject({ status: 'SUCCEEDED', output: { id: 0, result: { id: 0, shipped: true } } });
        expect(results[13]).toMatchObject({ status: 'FAILED', error: 'OrderRefused' });
        expect(results.filter((r) => r.status === 'SUCCEEDED')).toHaveLength(59);
      } finally {
        process.stdout.write = out;
        await runner.stop();
      }
    });
  });
});
