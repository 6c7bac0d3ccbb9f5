import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { App, SecretValue, Stack } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { perSecond, perSecondChart } from '../../local/chart';
import { inputFor, main, parseArgs, UsageError } from '../../local/cli';
import type { LocalHttpRequest } from '../../local/http';
import { LocalRunner } from '../../local/runner';
import { stateTimeline } from '../../local/timeline';
import { Limit, RateLimitedTask, RateLimiter, RetryPolicy } from '../../src';
import { quiet } from '../support/quiet';

const ENV = { env: { account: '123456789012', region: 'us-east-1' } };

/** A user's app: an HTTP call paced by a RateLimiter (2/s, burst 1), then a user function. */
function userApp(outdir?: string) {
  const app = new App(outdir ? { outdir } : {});
  const stack = new Stack(app, 'Orders', ENV);
  const limiter = new RateLimiter(stack, 'Partner', { ratePerSecond: 2, burst: 1 });
  limiter.addSchedule('Night', { schedule: scheduler.ScheduleExpression.cron({ hour: '20', minute: '0' }), key: 'partner', limit: Limit.perSecond(1) });
  const call = new tasks.HttpInvoke(stack, 'Create Label', {
    connection: new events.Connection(stack, 'Api', { authorization: events.Authorization.apiKey('x-api-key', SecretValue.unsafePlainText('k')) }),
    apiRoot: 'https://api.partner.example.com',
    apiEndpoint: sfn.TaskInput.fromText('v1/labels'),
    method: sfn.TaskInput.fromText('POST'),
    body: sfn.TaskInput.fromObject({ 'orderId.$': '$.orderId' }),
    resultSelector: { 'tracking.$': '$.ResponseBody.tracking' },
    resultPath: '$.label',
  });
  const fn = new lambda.Function(stack, 'Notify', { runtime: lambda.Runtime.NODEJS_22_X, handler: 'index.handler', code: lambda.Code.fromInline('exports.handler = async () => { throw new Error("not run locally"); };') });
  const chain = new RateLimitedTask(stack, 'Label', { limiter, task: call, retry: RetryPolicy.custom({ errors: ['States.Http.StatusCode.429'], maxAttempts: 3 }) })
    .next(new tasks.LambdaInvoke(stack, 'Notify Customer', { lambdaFunction: fn, payloadResponseOnly: true, resultPath: '$.notified' }));
  const machine = new sfn.StateMachine(stack, 'Shipping Workflow', { definitionBody: sfn.DefinitionBody.fromChainable(chain) });
  return { app, stack, machine };
}

describe('LocalRunner for users', () => {
  test('by construct path (full or within the stack): HTTP endpoints and functions stood in, a 429 retried with a token, the timeline', async () => {
    const { stack } = userApp();
    const requests: LocalHttpRequest[] = [];
    const envBefore = { ...process.env };
    const runner = await LocalRunner.start(stack, 'Shipping Workflow', {
      httpHandlers: {
        'https://api.partner.example.com/v1': (req) => {
          requests.push(req);
          return requests.length === 1 ? { status: 429, body: { message: 'slow down' } } : { status: 201, body: { tracking: `T-${(req.body as any).orderId}` } };
        },
      },
      functionHandlers: { 'Orders/Notify': (event: any) => ({ sent: event.orderId }) },
      retryIntervalOverrides: { 'Create Label': 1 },
    });
    try {
      const r = await quiet(() => runner.run({ orderId: 'o-1' }));
      expect([r.status, r.error]).toEqual(['SUCCEEDED', undefined]);
      expect(r.output.label).toEqual({ tracking: 'T-o-1' });
      expect(r.output.notified).toEqual({ sent: 'o-1' });
      expect(requests.map((q) => [q.method, q.url, q.body])).toEqual([
        ['POST', 'https://api.partner.example.com/v1/labels', { orderId: 'o-1' }],
        ['POST', 'https://api.partner.example.com/v1/labels', { orderId: 'o-1' }],
      ]);
      expect(runner.grants).toHaveLength(2); // the retry of the 429 acquired a token of its own
      const timeline = stateTimeline(r);
      expect(timeline.filter((v) => v.stateName === 'Create Label')).toHaveLength(2);
      expect(timeline.at(-1)?.stateName).toBe('Notify Customer');
      for (const v of timeline) expect(v.durationMs).toBeGreaterThanOrEqual(0);
      for (let i = 1; i < timeline.length; i++) expect(timeline[i].enteredAt).toBeGreaterThanOrEqual(timeline[i - 1].enteredAt);
    } finally {
      await runner.stop();
    }
    expect(process.env).toEqual(envBefore); // no global left changed
    expect(await LocalRunner.start(stack, 'Orders/Shipping Workflow', { httpHandlers: {}, functionHandlers: { Notify: () => ({}) } }).then((r2) => r2.stop())).toBeUndefined();
  });

  test('an HTTP status of 400 or more fails the state as Step Functions does; an endpoint no handler serves fails it too, naming it', async () => {
    const { stack, machine } = userApp();
    const runner = await LocalRunner.start(stack, machine, {
      httpHandlers: { 'https://api.partner.example.com/v1/labels': () => ({ status: 404, body: { message: 'no such order' } }) },
      functionHandlers: { 'Orders/Notify': () => ({}) },
    });
    try {
      const r = await quiet(() => runner.run({ orderId: 'o-2' }));
      expect(r.status).toBe('FAILED');
      expect(r.error).toBe('States.Http.StatusCode.404');
      expect(String(r.cause)).toContain('StatusCode\\":404'); // the response, in the cause
      expect(String(r.cause)).toContain('no such order');
    } finally {
      await runner.stop();
    }
    const other = await LocalRunner.start(stack, machine, { httpHandlers: { 'https://elsewhere.example.com': () => ({}) }, functionHandlers: { 'Orders/Notify': () => ({}) } });
    try {
      const r = await quiet(() => other.run({ orderId: 'o-3' }));
      expect(r.status).toBe('FAILED');
      expect(String(r.cause)).toContain('no httpHandlers entry serves https://api.partner.example.com/v1/labels');
    } finally {
      await other.stop();
    }
  });

  test('a schedule fired by hand writes what EventBridge Scheduler would (the limiter\'s override item)', async () => {
    const { stack, machine } = userApp();
    const runner = await LocalRunner.start(stack, machine, { httpHandlers: {}, functionHandlers: { 'Orders/Notify': () => ({}) } });
    try {
      const table = runner.nameOf(stack.getLogicalId((stack.node.findChild('Partner').node.findChild('Table').node.defaultChild) as any));
      const before = await runner.db.client.send(new ScanCommand({ TableName: table }));
      await runner.fireSchedule('Orders/Partner/ScheduleNight');
      const after = await runner.db.client.send(new ScanCommand({ TableName: table }));
      expect(after.Items!.length).toBe(before.Items!.length + 1);
      expect(JSON.stringify(after.Items)).toContain('partner');
      await expect(runner.fireSchedule('Orders/Partner/ScheduleDay')).rejects.toMatchObject({ name: 'ResourceNotFound' });
    } finally {
      await runner.stop();
    }
  });

  test('named errors before anything runs: a state machine that is not there (listing those that are), a Task it cannot serve', async () => {
    const { stack } = userApp();
    await expect(LocalRunner.start(stack, 'Orders/Nope')).rejects.toMatchObject({
      name: 'ResourceNotFound',
      message: expect.stringContaining('it has: Orders/Shipping Workflow ('),
    });
    const app = new App();
    const other = new Stack(app, 'Alerts', ENV);
    new sfn.StateMachine(other, 'Alert', {
      definitionBody: sfn.DefinitionBody.fromChainable(new tasks.SnsPublish(other, 'Page', { topic: new sns.Topic(other, 'T'), message: sfn.TaskInput.fromText('x') })),
    });
    const envBefore = { ...process.env };
    await expect(LocalRunner.start(other, 'Alert')).rejects.toMatchObject({ name: 'UnsupportedTaskStates', states: ['"Page" (Resource arn:aws:states:::sns:publish)'] });
    expect(process.env).toEqual(envBefore);
  });

  test('from a cloud assembly directory (cdk synth output), and the CLI over it: progress, the per-second chart, exit 0', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runner-api-'));
    try {
      const { app } = userApp(path.join(dir, 'cdk.out'));
      app.synth();
      const handlers = path.join(dir, 'handlers.js');
      fs.writeFileSync(handlers, [
        "exports.httpHandlers = { 'https://api.partner.example.com': (req) => ({ status: 200, body: { tracking: 'T-' + req.body.orderId } }) };",
        "exports.functionHandlers = { 'Orders/Notify': () => ({ sent: true }) };",
      ].join('\n'));
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { httpHandlers, functionHandlers } = require(handlers);
      const runner = await LocalRunner.fromAssembly(path.join(dir, 'cdk.out'), 'Orders/Shipping Workflow', { httpHandlers, functionHandlers });
      try {
        expect((await quiet(() => runner.run({ orderId: 'a-1' }))).output.label).toEqual({ tracking: 'T-a-1' });
      } finally {
        await runner.stop();
      }
      fs.writeFileSync(path.join(dir, 'input.json'), JSON.stringify({ orderId: 'order-$index' }));
      let printed = '';
      const out = { write: (s: string) => (printed += s, true), isTTY: false };
      const code = await main(['run', '--assembly', path.join(dir, 'cdk.out'), '--state-machine', 'Orders/Shipping Workflow', '--input', path.join(dir, 'input.json'),
        '--executions', '6', '--handlers', handlers, '--limit', '2', '--json'], out, out);
      expect(code).toBe(0);
      expect(printed).toContain('[████████████████████████████████████████] 6/6 executions');
      expect(printed).toContain('admissions granted by the limiters per second (2 per second marked │):');
      expect(printed).toMatch(/ {4}0 s {2}██ *│? *\d/);
      expect(printed).toContain('6 SUCCEEDED');
      const lines = printed.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
      expect(lines.map((l) => l.output.label.tracking).sort()).toEqual(['T-order-1', 'T-order-2', 'T-order-3', 'T-order-4', 'T-order-5', 'T-order-6']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the CLI, offline parts', () => {
  test('arguments: what is required, what is refused (exit 2 with the usage)', async () => {
    expect(parseArgs(['run', '--app', 'node app.js', '--state-machine', 'S/M', '--executions', '3', '--input-json', '{"a":1}'])).toMatchObject({ app: 'node app.js', stateMachine: 'S/M', executions: 3, input: { a: 1 }, json: false });
    expect(() => parseArgs(['deploy'])).toThrow(UsageError);
    expect(() => parseArgs(['run', '--state-machine', 'S/M'])).toThrow('give one of --app and --assembly');
    expect(() => parseArgs(['run', '--app', 'x', '--assembly', 'y', '--state-machine', 'S/M'])).toThrow('give one of --app and --assembly');
    expect(() => parseArgs(['run', '--app', 'x'])).toThrow('--state-machine is required');
    expect(() => parseArgs(['run', '--app', 'x', '--state-machine', 'S/M', '--executions', '0'])).toThrow('--executions must be an integer 1 to 100000, got 0');
    expect(() => parseArgs(['run', '--app', 'x', '--state-machine', 'S/M', '--input-json', '{'])).toThrow('the input is not JSON');
    expect(() => parseArgs(['run', '--app', 'x', '--state-machine', 'S/M', '--frob', '1'])).toThrow('unknown option --frob');
    let err = '';
    expect(await main(['run'], { write: () => true }, { write: (s: string) => (err += s, true) })).toBe(2);
    expect(err).toContain('usage: cdk-sfn-throttle-local run');
  });

  test('inputs per execution and the chart', () => {
    expect(inputFor({ id: 'o-$index', n: 1, nested: ['$index'] }, 7)).toEqual({ id: 'o-7', n: 1, nested: ['7'] });
    expect(perSecond([5_000_000, 5_400_000, 6_100_000, 8_000_000])).toEqual([2, 1, 0, 1]);
    expect(perSecondChart([2, 0, 3], 2)).toBe('    0 s  ██│ 2\n    1 s    │ 0\n    2 s  ███ 3\n');
  });
});
