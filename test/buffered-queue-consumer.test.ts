import * as path from 'path';
import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { App, Duration, Stack, Validations } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { actionsOf, expectLeastPrivilege, statementsOfRole } from './support/iam';
import { nagFindings } from './support/nag';
import { localServiceError } from '../local/aws-endpoint';
import { type LocalGrant, LocalRunner } from '../local/runner';
import { type Admission, nowUs, sleep } from '../local/timing';
import { AcquireMode, BufferedQueueConsumer, type BufferedQueueConsumerProps, type DispatchOptions, QueueTarget, RateLimiter, ThrottleErrors } from '../src';
import { expectCallsHoldSlots } from './support/decisions';
import { expectValidationError } from './support/validation';
import { DeadLetterAttributes } from '../src/private/contract';

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
function build(props: Partial<BufferedQueueConsumerProps> & { consumerMode?: boolean; rate?: number; dispatch?: DispatchOptions } = {}) {
  const { consumerMode, rate, dispatch, ...rest } = props;
  const stack = new Stack(new App(), 'Stack', ENV);
  const fn = fixtureFunction(stack, consumerMode ? 'Consumer' : 'Target');
  const limiter = rate ? new RateLimiter(stack, 'Limiter', { ratePerSecond: rate, burst: 1, limiterName: 'target' }) : undefined;
  const buffer = new BufferedQueueConsumer(stack, 'Buffer', {
    target: consumerMode ? QueueTarget.batchConsumer(fn) : QueueTarget.dispatch(fn, { limiter, ...dispatch }),
    ...rest,
  });
  return { stack, fn, buffer, limiter };
}

/** A machine that hands its input to the buffer and waits for the target's result. */
function waitingMachine(stack: Stack, buffer: BufferedQueueConsumer, options: { allow?: boolean; messageGroupId?: string } = {}) {
  const machine = new sfn.StateMachine(stack, 'Machine', {
    definitionBody: sfn.DefinitionBody.fromChainable(buffer.sendMessageTask(stack, 'Hand Off', {
      messageBody: sfn.TaskInput.fromJsonPathAt('$'), waitForResult: true, resultPath: '$.result', messageGroupId: options.messageGroupId,
    })),
  });
  if (options.allow ?? true) buffer.allowResultsFrom(machine);
  return machine;
}

const logicalId = (stack: Stack, c: { node: { defaultChild?: unknown } }) => stack.getLogicalId(c.node.defaultChild as any);

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
      expect(byAction('dynamodb:UpdateItem')).toEqual([{ 'Fn::GetAtt': [expect.stringMatching(/^LimiterTable/), 'Arn'] }]);
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

    test('waitForResult: dead letters pass through an internal DeadLetterReports queue (SSE, SSL) consumed by the DeadLetterReporter, then reach the DLQ', () => {
      const { stack, buffer } = build({ maxReceiveCount: 3 });
      waitingMachine(stack, buffer);
      const t = Template.fromStack(stack);
      const dlqArn = { 'Fn::GetAtt': [Match.stringLikeRegexp('^BufferDeadLetterQueue'), 'Arn'] };
      const reportsArn = { 'Fn::GetAtt': [Match.stringLikeRegexp('^BufferDeadLetterReports'), 'Arn'] };
      // the buffer dead-letters into the reports queue; the reports queue into the DLQ
      t.hasResourceProperties('AWS::SQS::Queue', { VisibilityTimeout: 360, RedrivePolicy: { deadLetterTargetArn: reportsArn, maxReceiveCount: 3 } });
      t.hasResourceProperties('AWS::SQS::Queue', {
        VisibilityTimeout: 180,
        MessageRetentionPeriod: 1_209_600,
        SqsManagedSseEnabled: true,
        RedrivePolicy: { deadLetterTargetArn: dlqArn, maxReceiveCount: 8 },
      });
      t.resourceCountIs('AWS::SQS::Queue', 3);
      t.hasResourceProperties('AWS::SQS::QueuePolicy', {
        Queues: [{ Ref: Match.stringLikeRegexp('^BufferDeadLetterReports') }],
        PolicyDocument: { Statement: [Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })] },
      });
      const reporterId = Object.keys(t.findResources('AWS::Lambda::Function')).find((k) => k.startsWith('BufferDeadLetterReporter'))!;
      t.hasResourceProperties('AWS::Lambda::Function', {
        Description: Match.stringLikeRegexp('fails the waiting executions of dead-lettered messages'),
        Timeout: 30,
        Environment: { Variables: Match.objectLike({ DEAD_LETTER_QUEUE_URL: { Ref: Match.stringLikeRegexp('^BufferDeadLetterQueue') }, MAX_RECEIVE_COUNT: '3', FIFO: 'false' }) },
      });
      t.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
        EventSourceArn: reportsArn, FunctionName: { Ref: reporterId }, FunctionResponseTypes: ['ReportBatchItemFailures'],
      });
      // the dispatcher knows the target's timeout (10 s) and its margin
      t.hasResourceProperties('AWS::Lambda::Function', {
        Environment: { Variables: Match.objectLike({ TARGET_TIMEOUT_MS: '10000', DEADLINE_MARGIN_MS: '3000' }) },
      });
    });

    test('IAM: the reporter may consume only the reports queue, send only to the DLQ, and fail tasks of the allowed machines only', () => {
      const { stack, buffer } = build();
      const machine = waitingMachine(stack, buffer, { allow: false });
      // allowed after the reporter exists, and a second machine allowed too: both get SendTaskFailure, nothing else
      buffer.allowResultsFrom(machine);
      const other = new sfn.StateMachine(stack, 'Other', {
        definitionBody: sfn.DefinitionBody.fromChainable(buffer.sendMessageTask(stack, 'Hand Off 2', { messageBody: sfn.TaskInput.fromJsonPathAt('$'), waitForResult: true })),
      });
      buffer.allowResultsFrom(other);
      const t = Template.fromStack(stack);
      const statements = statementsOfRole(t, roleOf(t, 'BufferDeadLetterReporter'));
      const resourcesOf = (a: string) => statements.filter((st) => ([] as string[]).concat(st.Action).includes(a)).map((st) => st.Resource);
      expect(resourcesOf('sqs:ReceiveMessage')).toEqual([{ 'Fn::GetAtt': [expect.stringMatching(/^BufferDeadLetterReports/), 'Arn'] }]);
      expect(resourcesOf('sqs:DeleteMessage')).toEqual([{ 'Fn::GetAtt': [expect.stringMatching(/^BufferDeadLetterReports/), 'Arn'] }]);
      expect(resourcesOf('sqs:SendMessage')).toEqual([{ 'Fn::GetAtt': [expect.stringMatching(/^BufferDeadLetterQueue/), 'Arn'] }]);
      expect(resourcesOf('states:SendTaskFailure')).toEqual([{ Ref: expect.stringMatching(/^Machine/) }, { Ref: expect.stringMatching(/^Other/) }]);
      expect(resourcesOf('logs:PutLogEvents')).toEqual([{ 'Fn::GetAtt': [expect.stringMatching(/^BufferDeadLetterReporterLogGroup/), 'Arn'] }]);
      expect([...new Set(actionsOf(statements))]).toEqual([
        'logs:CreateLogStream', 'logs:PutLogEvents',
        'sqs:ChangeMessageVisibility', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl', 'sqs:ReceiveMessage', 'sqs:SendMessage',
        'states:SendTaskFailure', 'xray:PutTelemetryRecords', 'xray:PutTraceSegments',
      ]);
      expectLeastPrivilege(t);
    });

    test('without waitForResult there is no reporter: the buffer dead-letters straight into the DLQ', () => {
      const { stack, buffer } = build();
      new sfn.StateMachine(stack, 'Machine', {
        definitionBody: sfn.DefinitionBody.fromChainable(buffer.sendMessageTask(stack, 'Enqueue', { messageBody: sfn.TaskInput.fromJsonPathAt('$') })),
      });
      const t = Template.fromStack(stack);
      t.resourceCountIs('AWS::SQS::Queue', 2);
      t.hasResourceProperties('AWS::SQS::Queue', { RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^BufferDeadLetterQueue'), 'Arn'] }, maxReceiveCount: 5 } });
    });

    test('an imported target: its timeout is assumed 3 s with a warning, or taken from targetTimeout', () => {
      const stack = new Stack(new App(), 'Stack', ENV);
      const imported = lambda.Function.fromFunctionArn(stack, 'Imported', 'arn:aws:lambda:us-east-1:123456789012:function:labels');
      new BufferedQueueConsumer(stack, 'Buffer', { target: QueueTarget.dispatch(imported) });
      expect(Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('imported: its timeout is not known here.*Set targetTimeout'))).toHaveLength(1);
      Template.fromStack(stack).hasResourceProperties('AWS::Lambda::Function', { Environment: { Variables: Match.objectLike({ TARGET_TIMEOUT_MS: '3000' }) } });

      const stack2 = new Stack(new App(), 'Stack', ENV);
      const imported2 = lambda.Function.fromFunctionArn(stack2, 'Imported', 'arn:aws:lambda:us-east-1:123456789012:function:labels');
      new BufferedQueueConsumer(stack2, 'Buffer', { target: QueueTarget.dispatch(imported2, { targetTimeout: Duration.seconds(40) }) });
      expect(Annotations.fromStack(stack2).findWarning('*', Match.stringLikeRegexp('imported'))).toHaveLength(0);
      // the default dispatcher timeout makes room for two calls: 2 × 40 + 3 s
      Template.fromStack(stack2).hasResourceProperties('AWS::Lambda::Function', { Timeout: 83, Environment: { Variables: Match.objectLike({ TARGET_TIMEOUT_MS: '40000' }) } });
    });

    test('the dispatcher: memory, architecture, logs and what each invoke takes are configurable', () => {
      const { stack } = build({
        rate: 10,
        dispatch: { acquire: { key: 'labels' }, memorySize: 512, architecture: lambda.Architecture.X86_64, logRetention: logs.RetentionDays.ONE_WEEK, tracing: lambda.Tracing.PASS_THROUGH },
      });
      const t = Template.fromStack(stack);
      t.hasResourceProperties('AWS::Lambda::Function', {
        MemorySize: 512,
        Architectures: ['x86_64'],
        TracingConfig: { Mode: 'PassThrough' },
        Environment: { Variables: Match.objectLike({ LIMITER_KEY: 'labels', LIMITER_TOKENS: '1', LIMITER_NAME: 'target' }) },
      });
      t.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 7 });
    });

    test('reserved concurrency on the consumer warns (the poller over-pulls)', () => {
      const stack = new Stack(new App(), 'Stack', ENV);
      const consumer = fixtureFunction(stack, 'Consumer', { reservedConcurrentExecutions: 5 });
      new BufferedQueueConsumer(stack, 'Buffer', { target: QueueTarget.batchConsumer(consumer), maxConcurrency: 5 });
      expect(Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('reserved concurrency 5.*good messages can reach the DLQ'))).toHaveLength(1);
    });

    test.each<[string, () => unknown, RegExp]>([
      ['visibilityTimeout below 6 × timeout', () => build({ consumerMode: true, visibilityTimeout: Duration.seconds(30) }),
        /visibilityTimeout must be at least 6 × the consumer's timeout \(10 s\) = 60 s, got 30 s/],
      ['maxConcurrency 1', () => build({ maxConcurrency: 1 }), /maxConcurrency must be an integer from 2 to 1000, got 1/],
      ['maxConcurrency 1001', () => build({ maxConcurrency: 1001 }), /maxConcurrency must be an integer from 2 to 1000, got 1001/],
      ['batchSize 11 without a window', () => build({ batchSize: 11 }), /batchSize must be an integer from 1 to 10 \(up to 10,000 needs a standard queue and maxBatchingWindow\), got 11/],
      ['maxReceiveCount 0', () => build({ maxReceiveCount: 0 }), /maxReceiveCount must be an integer from 1 to 1000, got 0/],
      ['acquire without a limiter', () => build({ dispatch: { acquire: { key: 'k' } } }), /^\[Stack\/Buffer\] target's acquire needs a limiter, got acquire \{"key":"k"\} and no limiter/],
      ['a JSONPath key (the dispatcher takes from one bucket)', () => build({ rate: 5, dispatch: { acquire: { key: '$.tenant' } } }),
        /acquire.key of QueueTarget.dispatch must be a literal \(the dispatcher takes from one bucket\), got \$.tenant/],
      ['TRY mode (a refused message would count a receive)', () => build({ rate: 5, dispatch: { acquire: { mode: AcquireMode.TRY } } }),
        /acquire.mode of QueueTarget.dispatch must be AcquireMode.RESERVE .*got TRY/],
      ['consume above the burst', () => build({ rate: 5, dispatch: { acquire: { consume: { requests: 2 } } } }),
        /acquire.consume.requests must be an integer from 1 to 1 \(floor\(burst 1 \/ shards 1\)\), got 2/],
      ['dispatcher memorySize 64', () => build({ dispatch: { memorySize: 64 } }), /memorySize \(QueueTarget.dispatch\) must be an integer from 128 to 10240, got 64/],
      ['fifo with a batching window', () => build({ fifo: true, maxBatchingWindow: Duration.seconds(5) }), /maxBatchingWindow is not supported on FIFO queues/],
      ['fifo mismatching the existing queue', () => {
        const s = new Stack();
        return new BufferedQueueConsumer(s, 'B', { target: QueueTarget.dispatch(fixtureFunction(s, 'F')), fifo: true, existingQueue: new sqs.Queue(s, 'Q', { enforceSSL: true }) });
      }, /fifo must match existingQueue: the queue is standard, got fifo: true/],
      ['a FIFO send without a group', () => build({ fifo: true }).buffer.sendMessageTask(new Stack(), 'S', { messageBody: sfn.TaskInput.fromText('x') }),
        /messageGroupId is required on a FIFO queue/],
      ['a group on a standard queue', () => build().buffer.sendMessageTask(new Stack(), 'S', { messageBody: sfn.TaskInput.fromText('x'), messageGroupId: 'g' }),
        /messageGroupId applies to FIFO queues only, got g/],
      ['waitForResult with a consumer', () => build({ consumerMode: true }).buffer.sendMessageTask(new Stack(), 'S', { messageBody: sfn.TaskInput.fromText('x'), waitForResult: true }),
        /waitForResult needs QueueTarget.dispatch/],
      ['waitForResult with an existing queue (its DLQ is unknown)', () => {
        const s = new Stack();
        const b = new BufferedQueueConsumer(s, 'B', { target: QueueTarget.dispatch(fixtureFunction(s, 'F')), existingQueue: new sqs.Queue(s, 'Q', { enforceSSL: true }) });
        return b.sendMessageTask(s, 'S', { messageBody: sfn.TaskInput.fromText('x'), waitForResult: true });
      }, /waitForResult needs the queue this construct creates, got existingQueue: its dead-letter queue is not known here/],
      ['dispatcherTimeout below the target timeout + margin', () => build({ dispatch: { dispatcherTimeout: Duration.seconds(12) } }),
        /dispatcherTimeout must be at least the target's timeout \(10 s\) \+ a 3 s margin = 13 s, got 12 s/],
      ['targetTimeout below the target\'s own timeout', () => build({ dispatch: { targetTimeout: Duration.seconds(5) } }),
        /targetTimeout must be at least the target's own timeout \(10 s\), got 5 s/],
      ['a target whose timeout leaves no room in a dispatcher', () => {
        const s = new Stack();
        return new BufferedQueueConsumer(s, 'B', { target: QueueTarget.dispatch(fixtureFunction(s, 'F', { timeout: Duration.seconds(899) })) });
      }, /the target's timeout \(899 s\) \+ a 3 s margin = 902 s is more than a dispatcher may run \(900 s\)/],
    ])('fails at synth: %s', (_name, make, message) => {
      expectValidationError(make, message);
    });

    test.each([
      ['consumer mode', { consumerMode: true }],
      ['target mode with a limiter, FIFO', { rate: 20, fifo: true }],
      ['target mode, FIFO, waitForResult (the dead-letter reporter)', { fifo: true, waitForResult: true }],
    ] as [string, any][])('snapshot and cdk-nag: %s', (_name, { waitForResult, ...props }) => {
      const { stack, fn, buffer } = build(props);
      if (waitForResult) {
        const machine = waitingMachine(stack, buffer, { messageGroupId: 'g' });
        for (const id of ['AwsSolutions-SF1', 'AwsSolutions-SF2', 'Serverless-StepFunctionStateMachineAllLogging', 'Serverless-StepFunctionStateMachineXray']) {
          Validations.of(machine).acknowledge({ id, reason: 'test fixture state machine: its configuration is the application\'s' });
        }
      }
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
      // A visibility timeout well above a batch's time even on a loaded machine: a good message must not come
      // back (and count receives) while it is being processed; poison messages still reach the DLQ in ~6 s.
      const runner = await LocalRunner.start(stack, machine, { queueVisibilityTimeoutMs: 1500 });
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
      // The dispatcher's EMF lines carry each admission's slot: the limit is judged at those decisions
      const grants: LocalGrant[] = [];
      process.stdout.write = ((chunk: any) => {
        for (const line of String(chunk).split('\n').filter((l) => l.startsWith('{'))) {
          const e = JSON.parse(line);
          if (e.Admitted > 0 && typeof e.NotBeforeUs === 'number') {
            grants.push({ functionLogicalId: 'dispatcher', key: e.Key, atUs: e.NotBeforeUs, tokens: e.Admitted, returnedAtUs: 0 });
          }
        }
        return true;
      }) as any;
      try {
        const results = await Promise.all(Array.from({ length: 60 }, (_, id) => runner.run({ id, fail: id === 13 })));
        expect(calls).toHaveLength(60);
        expectCallsHoldSlots(calls.map((c) => c.atUs), grants, 20, 1);
        expect(results[0]).toMatchObject({ status: 'SUCCEEDED', output: { id: 0, result: { id: 0, shipped: true } } });
        expect(results[13]).toMatchObject({ status: 'FAILED', error: 'OrderRefused' });
        expect(results.filter((r) => r.status === 'SUCCEEDED')).toHaveLength(59);
      } finally {
        process.stdout.write = out;
        await runner.stop();
      }
    });
    /** Waits until `done()` holds (checked every 20 ms), at most `ms`; the run's own events decide, not the clock. */
    async function until(done: () => boolean, ms = 60_000): Promise<void> {
      for (const end = Date.now() + ms; !done() && Date.now() < end;) await sleep(20);
    }

    /** Runs one execution; fails plainly (instead of hanging) if nobody reports its outcome within `ms`. */
    async function runReported(runner: LocalRunner, input: unknown, ms = 30_000) {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the execution still waits after ${ms / 1000} s: nobody reported its outcome`)), ms);
      });
      try {
        return await Promise.race([runner.run(input), late]);
      } finally {
        clearTimeout(timer);
      }
    }

    test('the Lambda service answers 429 to message 2 of a 3-message batch: 1 and 3 run once in that delivery, only 2 is redelivered', async () => {
      const { stack, buffer, fn } = build({ batchSize: 3 });
      const machine = new sfn.StateMachine(stack, 'Machine', {
        definitionBody: sfn.DefinitionBody.fromChainable(buffer.sendMessageTask(stack, 'Enqueue', { messageBody: sfn.TaskInput.fromJsonPathAt('$') })),
      });
      const calls: string[] = [];
      let throttled = 0;
      const runner = await LocalRunner.start(stack, machine, {
        queueVisibilityTimeoutMs: 100,
        functionHandlers: {
          [logicalId(stack, fn)]: (event: any) => {
            // the service refuses message 2 three times (as many as the SDK's default retries would make in one delivery)
            if (event.n === 2 && throttled < 3) {
              throttled++;
              calls.push('2:429');
              throw localServiceError('TooManyRequestsException', 429, 'Rate Exceeded.');
            }
            calls.push(String(event.n));
            return { ok: true };
          },
        },
      });
      const err = process.stderr.write;
      process.stderr.write = (() => true) as any; // the dispatcher's warnings
      try {
        const queue = runner.queue(logicalId(stack, buffer.queue));
        for (const n of [1, 2, 3]) queue.send(JSON.stringify({ n })); // one tick: the first batch holds all three
        await until(() => queue.depth === 0);
        expect(queue.depth).toBe(0);
        // delivery 1: 1, 2 (refused), 3; then only 2 comes back, until the service takes it
        expect(calls).toEqual(['1', '2:429', '3', '2:429', '2:429', '2']);
        expect(runner.consumers[0].invocations).toBe(4);
      } finally {
        process.stderr.write = err;
        await runner.stop();
      }
    });

    test('waitForResult, a poison message (the target is always throttled): once it reaches the DLQ, the execution fails with DispatchFailed', async () => {
      const { stack, buffer, fn } = build({ maxReceiveCount: 2 });
      const machine = waitingMachine(stack, buffer);
      let calls = 0;
      const runner = await LocalRunner.start(stack, machine, {
        queueVisibilityTimeoutMs: 100,
        functionHandlers: {
          [logicalId(stack, fn)]: () => {
            calls++;
            throw localServiceError('TooManyRequestsException', 429, 'Rate Exceeded.');
          },
        },
      });
      const err = process.stderr.write;
      process.stderr.write = (() => true) as any;
      try {
        const dlq = runner.queue(logicalId(stack, buffer.deadLetterQueue!));
        const result = await runReported(runner, { order: 7 });
        expect(result.status).toBe('FAILED');
        expect(result.error).toBe(ThrottleErrors.DISPATCH_FAILED);
        expect(result.cause).toMatch(/^message local-\d+ was not dispatched within 2 receive\(s\) \(every delivery failed, or the dispatcher crashed or timed out\) and was moved to the dead-letter queue/);
        expect(calls).toBe(2); // one call per receive, none after
        await until(() => dlq.depth === 1);
        const [dead] = dlq.stored();
        expect(JSON.parse(dead.body).input).toEqual({ order: 7 });
        expect(dead.attributes?.[DeadLetterAttributes.ERROR]).toEqual({ DataType: 'String', StringValue: 'DispatchFailed' });
        expect(dead.attributes?.[DeadLetterAttributes.CAUSE]?.StringValue).toBe(result.cause);
        expect(runner.queue(logicalId(stack, buffer.queue)).depth).toBe(0);
      } finally {
        process.stderr.write = err;
        await runner.stop();
      }
    });

    test('waitForResult, a dispatcher that crashes on every delivery: the execution still fails with DispatchFailed', async () => {
      const { stack, buffer, fn } = build({ maxReceiveCount: 1 });
      const machine = waitingMachine(stack, buffer);
      const dispatcherId = logicalId(stack, buffer.consumerFunction);
      let calls = 0;
      const runner = await LocalRunner.start(stack, machine, {
        queueVisibilityTimeoutMs: 100,
        functionHandlers: {
          [dispatcherId]: () => { throw new Error('Runtime.OutOfMemory'); },
          [logicalId(stack, fn)]: () => { calls++; return {}; },
        },
      });
      try {
        const result = await runReported(runner, { order: 8 });
        expect([result.status, result.error]).toEqual(['FAILED', 'DispatchFailed']);
        expect(calls).toBe(0);
        await until(() => runner.queue(logicalId(stack, buffer.deadLetterQueue!)).depth === 1);
        expect(runner.queue(logicalId(stack, buffer.deadLetterQueue!)).depth).toBe(1);
      } finally {
        await runner.stop();
      }
    });

    test('waitForResult, a result over 256 KiB: the execution fails with DispatchFailed and the target runs once', async () => {
      const { stack, buffer, fn } = build();
      const machine = waitingMachine(stack, buffer);
      let calls = 0;
      const runner = await LocalRunner.start(stack, machine, {
        queueVisibilityTimeoutMs: 100,
        functionHandlers: { [logicalId(stack, fn)]: () => { calls++; return { label: 'x'.repeat(300_000) }; } },
      });
      const err = process.stderr.write;
      process.stderr.write = (() => true) as any;
      try {
        const queue = runner.queue(logicalId(stack, buffer.queue));
        const result = await runReported(runner, { order: 9 });
        expect([result.status, result.error]).toEqual(['FAILED', 'DispatchFailed']);
        expect(result.cause).toMatch(/the target succeeded but its result cannot be reported: it is 300012 bytes of JSON, over Step Functions' limit of 262144 bytes/);
        await until(() => queue.depth === 0); // settled: deleted, never delivered again
        expect(queue.depth).toBe(0);
        expect(calls).toBe(1);
      } finally {
        process.stderr.write = err;
        await runner.stop();
      }
    });
  });
});
