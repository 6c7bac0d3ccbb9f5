import { App, Stack } from 'aws-cdk-lib';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import {
  builtInIntegrations, type ExecutionScope, type IntegrationEnvironment, IntegrationRegistry, type ServiceIntegration, sqsSendMessage,
  type TaskStateInfo,
} from '../../local/integrations';
import { LocalRunner } from '../../local/runner';
import { LocalQueue } from '../../local/sqs';
import { TASK_TOKEN_PLACEHOLDER, TaskTokens } from '../../local/task-tokens';

const QUEUE_URL = 'https://sqs.us-east-1.amazonaws.com/123456789012/Jobs';

/** The parts of the runner's environment these tests use: a queue and the task tokens. */
function fakeEnvironment() {
  const queue = new LocalQueue({ name: 'Jobs', visibilityTimeoutMs: 1000 });
  const tokens = new TaskTokens();
  const env = { region: 'us-east-1', account: '123456789012', tokens, queueByUrl: (url: unknown) => (url === QUEUE_URL ? queue : undefined) };
  return { queue, tokens, env: env as unknown as IntegrationEnvironment };
}

function scope(controller = new AbortController()): ExecutionScope {
  return { executionArn: 'arn:aws:states:us-east-1:123456789012:execution:M:e-1', context: {}, signal: controller.signal, runOptions: { context: {} } };
}

const task = (name: string, resource: string, state: any = {}): TaskStateInfo => ({ name, resource, state: { Type: 'Task', Resource: resource, ...state } });

const snsPublish = (sent: unknown[]): ServiceIntegration => ({
  name: 'SNS Publish',
  resource: /^arn:aws:states:::sns:(publish)$/,
  handler: (t, match) => (input, execution) => {
    sent.push({ state: t.name, action: match[1], input, executionArn: execution.executionArn });
    return { MessageId: `m-${sent.length}` };
  },
});

describe('IntegrationRegistry', () => {
  test('a Resource no integration serves fails naming the state and the Resource, all of them at once', () => {
    const { env } = fakeEnvironment();
    const registry = new IntegrationRegistry(builtInIntegrations());
    expect(() => registry.handlersFor([
      task('Notify', 'arn:aws:states:::sns:publish'),
      task('Frob', 'arn:aws:states:::dynamodb:frobnicate'), // matches the DynamoDB integration, which has no such command
      task('Send', 'arn:aws:states:::sqs:sendMessage'),
    ], env)).toThrow(expect.objectContaining({
      name: 'UnsupportedTaskStates',
      states: ['"Notify" (Resource arn:aws:states:::sns:publish)', '"Frob" (Resource arn:aws:states:::dynamodb:frobnicate)'],
      message: expect.stringContaining('the local runner has no handler for Task state "Notify" (Resource arn:aws:states:::sns:publish), '
        + '"Frob" (Resource arn:aws:states:::dynamodb:frobnicate): give it one in taskHandlers'),
    }));
  });

  test('a registered integration serves its Resource: it gets the state, the match, the input and the execution', async () => {
    const { env } = fakeEnvironment();
    const sent: unknown[] = [];
    const registry = new IntegrationRegistry(builtInIntegrations()).register(snsPublish(sent));
    const handlers = registry.handlersFor([task('Notify', 'arn:aws:states:::sns:publish')], env);
    expect(await handlers.Notify({ Message: 'hi' }, scope())).toEqual({ MessageId: 'm-1' });
    expect(sent).toEqual([{ state: 'Notify', action: 'publish', input: { Message: 'hi' }, executionArn: scope().executionArn }]);
  });

  test('the latest registration is asked first, one that declines passes to the next, and handlers by state name come before all', () => {
    const { env } = fakeEnvironment();
    const answering = (answer: string, serves = true): ServiceIntegration => ({
      name: answer, resource: /^arn:aws:states:::x:y$/, handler: () => (serves ? () => answer : undefined),
    });
    const registry = new IntegrationRegistry([answering('first')]).register(answering('second')).register(answering('declines', false));
    expect(registry.all.map((i) => i.name)).toEqual(['declines', 'second', 'first']);
    const handlers = registry.handlersFor([task('A', 'arn:aws:states:::x:y'), task('B', 'arn:aws:states:::x:y')], env, { B: () => 'by name' });
    expect([handlers.A({}, scope()), handlers.B({}, scope())]).toEqual(['second', 'by name']);
  });

  test('SQS SendMessage.waitForTaskToken sends the message with a fresh token and waits for SendTaskSuccess', async () => {
    const { env, queue, tokens } = fakeEnvironment();
    const handler = sqsSendMessage.handler(task('Ask', 'arn:aws:states:::sqs:sendMessage.waitForTaskToken'),
      sqsSendMessage.resource.exec('arn:aws:states:::sqs:sendMessage.waitForTaskToken')!, env)!;
    const result = handler({ QueueUrl: QUEUE_URL, MessageBody: { order: 1, token: TASK_TOKEN_PLACEHOLDER } }, scope()) as Promise<unknown>;
    const body = JSON.parse(queue.bodies()[0]);
    expect(body).toEqual({ order: 1, token: expect.stringMatching(/^local-token-/) });
    expect(tokens.succeed(body.token, { shipped: true })).toBe(true);
    await expect(result).resolves.toEqual({ shipped: true });
  });

  test('SQS SendMessage.waitForTaskToken: a stopped execution withdraws the token; one stopped already sends nothing', async () => {
    const { env, queue, tokens } = fakeEnvironment();
    const handler = sqsSendMessage.handler(task('Ask', 'arn:aws:states:::sqs:sendMessage.waitForTaskToken'),
      sqsSendMessage.resource.exec('arn:aws:states:::sqs:sendMessage.waitForTaskToken')!, env)!;
    const controller = new AbortController();
    const waiting = handler({ QueueUrl: QUEUE_URL, MessageBody: { token: TASK_TOKEN_PLACEHOLDER } }, scope(controller)) as Promise<unknown>;
    expect(tokens.pending).toBe(1);
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ name: 'States.Runtime' });
    expect(tokens.pending).toBe(0);
    await expect(handler({ QueueUrl: QUEUE_URL, MessageBody: {} }, scope(controller)) as Promise<unknown>).rejects.toMatchObject({ name: 'States.Runtime' });
    expect(queue.depth).toBe(1); // only the first message
  });

  test('SQS SendMessage to a queue that is not in the template fails as Step Functions names it', () => {
    const { env } = fakeEnvironment();
    const handler = sqsSendMessage.handler(task('Send', 'arn:aws:states:::sqs:sendMessage'), sqsSendMessage.resource.exec('arn:aws:states:::sqs:sendMessage')!, env)!;
    expect(() => handler({ QueueUrl: 'https://sqs.us-east-1.amazonaws.com/123456789012/Other', MessageBody: 'x' }, scope()))
      .toThrow(expect.objectContaining({ name: 'SQS.QueueDoesNotExistException', message: expect.stringContaining('/Other is not in the template') }));
  });
});

describe('LocalRunner integrations option', () => {
  test('runs a Task through an integration given in the options; without it the start fails naming the Resource', async () => {
    const stack = new Stack(new App(), 'Notify', { env: { account: '123456789012', region: 'us-east-1' } });
    const topic = new sns.Topic(stack, 'Notifications', { enforceSSL: true });
    const machine = new sfn.StateMachine(stack, 'Machine', {
      definitionBody: sfn.DefinitionBody.fromChainable(new tasks.SnsPublish(stack, 'Notify', { topic, message: sfn.TaskInput.fromJsonPathAt('$.orderId') })),
    });
    await expect(LocalRunner.start(stack, machine)).rejects.toThrow(/no handler for Task state "Notify" \(Resource arn:aws:states:::sns:publish\)/);
    const sent: any[] = [];
    const runner = await LocalRunner.start(stack, machine, { integrations: [snsPublish(sent)] });
    try {
      const result = await runner.run({ orderId: 'o-9' }, { name: 'notify-1' });
      expect(result).toMatchObject({ status: 'SUCCEEDED', output: { MessageId: 'm-1' } });
      expect(sent).toEqual([{ state: 'Notify', action: 'publish', input: { TopicArn: expect.stringContaining('Notifications'), Message: 'o-9' }, executionArn: result.executionArn }]);
    } finally {
      await runner.stop();
    }
  });
});
