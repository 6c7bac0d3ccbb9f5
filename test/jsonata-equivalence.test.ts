import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
// eslint-disable-next-line @typescript-eslint/no-require-imports
import jsonata = require('jsonata');
import { definitionOf } from './support/asl-validate';
import { LocalRunner } from '../local/runner';
import { RateLimitedTask, RateLimiter, RetryPolicy, ThrottledMap } from '../src';

// aws-local-stepfunctions runs no JSONata, so the JSONata renderings are proven offline: the same construct is built
// in a JSONPath machine and run in the local runner, recording what each state of the library received and returned;
// then every JSONata expression of the JSONata rendering is evaluated with the jsonata package (Step Functions
// implements JSONata 2.0.6) on the same `$states` values, and must give what the JSONPath rendering gave.

type Lang = 'JSONPath' | 'JSONata';

interface States { input: unknown; context?: unknown; result?: unknown; errorOutput?: unknown }

/** Every `{% ... %}` string in `value`, evaluated with `$states` bound. */
async function evaluate(value: unknown, states: States): Promise<any> {
  if (typeof value === 'string') {
    const m = /^\{%([\s\S]*)%\}$/.exec(value.trim());
    return m ? jsonata(m[1]).evaluate({}, { states: { context: { Execution: { RedriveCount: 0 } }, ...states } }) : value;
  }
  if (Array.isArray(value)) return Promise.all(value.map((v) => evaluate(v, states)));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = await evaluate(v, states);
    return out;
  }
  return value;
}

function setIn(input: any, field: string, value: unknown): any {
  const [head, ...rest] = field.split('.');
  return { ...input, [head]: rest.length === 0 ? value : setIn(input?.[head] ?? {}, rest.join('.'), value) };
}

/** The acquire function, deterministic: echoes as the real one does (input back, the result at resultField). */
function standInLimiter(calls: { event: any; result: any }[]) {
  return (event: any) => {
    let result: any;
    if (event.phase === 'backoff') {
      const { cdkSfnThrottleError: error, ...rest } = event.input;
      if (!(event.retry?.errors ?? []).includes(error?.Error)) {
        // not retried by the policy: raised again under its own name, as the real backoff step does
        calls.push({ event, result: undefined });
        throw Object.assign(new Error(error?.Cause ?? 'error'), { name: error?.Error ?? 'Error' });
      }
      result = { attempt: 2, waitSeconds: 1, waitMs: 1000, input: { ...rest, cdkSfnThrottleAttempt: { task: event.task, attempt: 2, redrive: 0 } } };
    } else {
      const acquired = { admitted: true, key: event.key, tokens: event.tokens * (event.count ?? 1), shard: 0, waitSeconds: 1, waitMs: 1000, notBeforeUs: 1, notBefore: 'then' };
      const echoed = event.resultField ? setIn(event.input, event.resultField, acquired) : event.input;
      result = event.input === undefined ? acquired : { ...acquired, input: echoed };
    }
    calls.push({ event, result });
    return result;
  };
}

function build(lang: Lang, shape: (stack: Stack, limiter: RateLimiter, fn: lambda.IFunction) => sfn.IChainable) {
  const app = new App();
  const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const fn = lambda.Function.fromFunctionArn(stack, 'Api', 'arn:aws:lambda:us-east-1:123456789012:function:api');
  const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: 10, burst: 10, limiterName: 'api' });
  const machine = new sfn.StateMachine(stack, 'Machine', {
    queryLanguage: lang === 'JSONata' ? sfn.QueryLanguage.JSONATA : sfn.QueryLanguage.JSON_PATH,
    definitionBody: sfn.DefinitionBody.fromChainable(shape(stack, limiter, fn)),
  });
  const definition = definitionOf(Object.values(Template.fromStack(stack).findResources('AWS::StepFunctions::StateMachine'))[0].Properties.DefinitionString);
  return { stack, machine, limiter, definition };
}

const invoke = (stack: Stack, fn: lambda.IFunction, lang: Lang, id = 'Call') => (lang === 'JSONata'
  ? tasks.LambdaInvoke.jsonata(stack, id, { lambdaFunction: fn, retryOnServiceExceptions: false, outputs: '{% $states.result.Payload %}' })
  : tasks.LambdaInvoke.jsonPath(stack, id, { lambdaFunction: fn, retryOnServiceExceptions: false, payloadResponseOnly: true }));

describe('JSONata renderings evaluate to what the JSONPath renderings do in the runner', () => {
  const rateLimited = (lang: Lang) => (stack: Stack, limiter: RateLimiter, fn: lambda.IFunction) => new RateLimitedTask(stack, 'Limited', {
    limiter,
    task: invoke(stack, fn, lang),
    acquire: { key: lang === 'JSONata' ? '{% $states.input.tenant %}' : '$.tenant' },
    retry: RetryPolicy.throttling({ errors: ['Api.Throttled'], maxAttempts: 3 }),
    resultPath: '$.acquired',
  }).addCatch(new sfn.Pass(stack, 'Failed'), { resultPath: '$.error' });

  test('RateLimitedTask: acquire, wait, a throttled call, backoff, acquire again, the call; and an error raised to addCatch', async () => {
    // GIVEN the JSONPath rendering run in the runner: the call is throttled once, then succeeds
    const path = build('JSONPath', rateLimited('JSONPath'));
    const calls: { event: any; result: any }[] = [];
    const taskInputs: any[] = [];
    const limiterId = path.stack.getLogicalId(path.limiter.acquireFunction.node.defaultChild as lambda.CfnFunction);
    const runner = await LocalRunner.start(path.stack, path.machine, {
      functionHandlers: { [limiterId]: standInLimiter(calls) },
      taskHandlers: {
        Call: (input: any) => {
          taskInputs.push(input);
          if (taskInputs.length === 1) throw Object.assign(new Error('slow down'), { name: 'Api.Throttled' });
          return { ok: true };
        },
      },
      waitTimeOverrides: { 'Limited Wait': 0, 'Limited Backoff Wait': 0 },
    });
    const input = { tenant: 'a', order: 7 };
    let execution;
    try {
      execution = await runner.run(input);
    } finally {
      await runner.stop();
    }
    expect(execution.status).toBe('SUCCEEDED');
    expect(calls.map((c) => c.event.phase ?? 'acquire')).toEqual(['acquire', 'backoff', 'acquire']);

    // WHEN the JSONata rendering's expressions are evaluated on the same values
    const s = build('JSONata', rateLimited('JSONata')).definition.States;
    const errorOutput = { Error: 'Api.Throttled', Cause: 'slow down' };
    // THEN each gives what the JSONPath rendering gave
    expect(await evaluate(s['Limited Acquire'].Arguments, { input })).toEqual(calls[0].event);
    expect(await evaluate(s['Limited Wait'].Seconds, { input: calls[0].result })).toBe(1);
    expect(await evaluate(s['Limited Wait'].Output, { input: calls[0].result })).toEqual(taskInputs[0]);
    const caught = await evaluate(s.Call.Catch[0].Output, { input: taskInputs[0], errorOutput });
    expect(caught).toEqual({ ...calls[1].event.input, cdkSfnThrottleError: { Error: 'Api.Throttled', Cause: expect.any(String) } });
    expect(await evaluate(s['Limited Backoff'].Arguments, { input: calls[1].event.input })).toEqual(calls[1].event);
    expect(await evaluate(s['Limited Backoff Wait'].Output, { input: calls[1].result })).toEqual(calls[2].event.input);
    expect(await evaluate(s['Limited Acquire'].Arguments, { input: calls[2].event.input })).toEqual(calls[2].event);
    expect(await evaluate(s['Limited Wait'].Output, { input: calls[2].result })).toEqual(taskInputs[1]);
    // the user's catch on the backoff state (resultPath $.error) as JSONata Output
    const fatal = { Error: 'Api.Fatal', Cause: 'no' };
    expect(await evaluate(s['Limited Backoff'].Catch[0].Output, { input: calls[1].event.input, errorOutput: fatal }))
      .toEqual({ ...calls[1].event.input, error: fatal });
    expect(s['Limited Backoff'].Catch[0].ResultPath).toBeUndefined();
  });

  const map = (lang: Lang) => (stack: Stack, limiter: RateLimiter, fn: lambda.IFunction) => new ThrottledMap(stack, 'Orders', {
    itemsPath: lang === 'JSONata' ? '{% $states.input.orders %}' : '$.orders',
    limiter,
    itemProcessor: (lang === 'JSONata' ? sfn.Pass.jsonata(stack, 'Prep', { outputs: '{% $states.input %}' }) : sfn.Pass.jsonPath(stack, 'Prep')).next(invoke(stack, fn, lang)),
    catchItemFailures: true,
    resultPath: '$.results',
  });

  test('ThrottledMap with a unit per item: items, the unit\'s acquire and output, a failed item\'s record, the results in the output', async () => {
    const path = build('JSONPath', map('JSONPath'));
    const calls: { event: any; result: any }[] = [];
    const limiterId = path.stack.getLogicalId(path.limiter.acquireFunction.node.defaultChild as lambda.CfnFunction);
    const runner = await LocalRunner.start(path.stack, path.machine, {
      functionHandlers: { [limiterId]: standInLimiter(calls) },
      taskHandlers: {
        Call: (input: any) => {
          if (input.id === 2) throw Object.assign(new Error('broken'), { name: 'Api.Broken' });
          return { done: input.id };
        },
      },
      waitTimeOverrides: { 'Orders Item Wait': 0, 'Orders Item Backoff Wait': 0 },
    });
    const input = { orders: [{ id: 1 }, { id: 2 }], batch: 'b' };
    let execution;
    try {
      execution = await runner.run(input);
    } finally {
      await runner.stop();
    }
    expect(execution.status).toBe('SUCCEEDED');
    const results = (execution.output as any).results;
    expect(results[0]).toEqual({ done: 1 });
    expect(results[1]).toMatchObject({ failed: true, item: { id: 2 } });

    const s = build('JSONata', map('JSONata')).definition.States;
    const orders = s.Orders;
    const items = await evaluate(orders.Items, { input });
    expect(items).toEqual(input.orders);
    const unit = orders.ItemProcessor.States['Orders Item Unit'];
    const acquires = calls.filter((c) => c.event.phase === undefined);
    for (const item of items) {
      expect(await evaluate(unit.Branches[0].States['Orders Item Acquire'].Arguments, { input: item })).toEqual(acquires.find((c) => c.event.input.id === item.id)!.event);
    }
    expect(await evaluate(unit.Output, { input: items[0], result: [{ done: 1 }] })).toEqual(results[0]);
    // item 2: the unit fails, its catch puts the error in, the backoff raises it again, the item's record
    const errorOutput = { Error: 'Api.Broken', Cause: 'broken' };
    const caught = await evaluate(unit.Catch[0].Output, { input: items[1], errorOutput });
    const backoff = calls.find((c) => c.event.phase === 'backoff')!;
    expect(caught).toEqual({ ...backoff.event.input, cdkSfnThrottleError: { Error: 'Api.Broken', Cause: expect.any(String) } });
    const failedInput = await evaluate(orders.ItemProcessor.States['Orders Item Backoff'].Catch[0].Output, { input: caught, errorOutput: results[1].error });
    expect(await evaluate(orders.ItemProcessor.States['Orders Item Failed'].Output, { input: failedInput })).toEqual(results[1]);
    // the map's results merged into its input, as ResultPath $.results does
    expect(await evaluate(orders.Output, { input, result: results })).toEqual(execution.output);
  });
});
