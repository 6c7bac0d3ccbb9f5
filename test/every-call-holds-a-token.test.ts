import { App, Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { aslOf } from './support/asl';
import { quiet } from './support/quiet';
import { LocalExecution, LocalRunner } from '../local/runner';
import { MapConcurrency, RateLimitedTask, RateLimiter, RetryPolicy, ThrottledMap, ThrottleErrors } from '../src';

// Issue 11, part 1 and 3: every call of a wrapped task holds its own token — its own Retry, a redrive, a second
// RateLimitedTask and resultPath included.

function stackWithLimiter() {
  const app = new App();
  const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: 50, burst: 5, limiterName: 'api' });
  const fn = lambda.Function.fromFunctionArn(stack, 'Downstream', 'arn:aws:lambda:us-east-1:123456789012:function:downstream');
  return { app, stack, limiter, fn };
}

/** Admissions of a run: acquire states that finished (each took a token). */
function admissions(r: LocalExecution, acquireState: string): number {
  return r.events.filter((e) => e.type === 'StateExited' && e.stateName === acquireState).length;
}

/** States entered, in order. */
function path(r: LocalExecution): string[] {
  return r.events.filter((e) => e.type === 'StateEntered').map((e) => e.stateName!);
}

describe('a wrapped task never calls its downstream without a token', () => {
  test('fails if the wrapped LambdaInvoke keeps its default Retry (retryOnServiceExceptions)', () => {
    // GIVEN the README's task as users write it
    const { app, stack, limiter, fn } = stackWithLimiter();
    const task = new tasks.LambdaInvoke(stack, 'Call Shipping API', { lambdaFunction: fn });
    const limited = new RateLimitedTask(stack, 'Ship', { limiter, task });
    new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
    // THEN synth names the state, the errors, and the fix
    expect(() => app.synth()).toThrow(/task "Call Shipping API" of RateLimitedTask Stack\/Ship has its own Retry on Lambda\.ClientExecutionTimeoutException, Lambda\.ServiceException, Lambda\.AWSLambdaException, Lambda\.SdkClientException: Step Functions would call it again without a token \(.*already retried by the RetryPolicy.*retryOnServiceExceptions: false/);
  });

  test('fails if a Retry is added to the task after wrapping, or a Catch of its own', () => {
    const { app, stack, limiter, fn } = stackWithLimiter();
    const task = new tasks.LambdaInvoke(stack, 'Call', { lambdaFunction: fn, retryOnServiceExceptions: false });
    const limited = new RateLimitedTask(stack, 'Ship', { limiter, task });
    task.addRetry({ errors: ['Custom.Flaky'] });
    new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
    expect(() => app.synth()).toThrow(/has its own Retry on Custom\.Flaky/);

    const b = stackWithLimiter();
    const t2 = new tasks.LambdaInvoke(b.stack, 'Call', { lambdaFunction: b.fn, retryOnServiceExceptions: false });
    t2.addCatch(new sfn.Pass(b.stack, 'Handled'), { errors: ['Custom.Bad'] });
    const l2 = new RateLimitedTask(b.stack, 'Ship', { limiter: b.limiter, task: t2 });
    new sfn.StateMachine(b.stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(l2) });
    expect(() => b.app.synth()).toThrow(/has its own Catch \(Custom\.Bad → Handled\).*Use RateLimitedTask\.addCatch\(\)/);
  });

  test('fails if a state in a limited ThrottledMap processor has its own Retry', () => {
    const { app, stack, limiter, fn } = stackWithLimiter();
    const first = new tasks.LambdaInvoke(stack, 'Enrich', { lambdaFunction: fn, retryOnServiceExceptions: false });
    const second = new tasks.LambdaInvoke(stack, 'Ship', { lambdaFunction: fn });
    const map = new ThrottledMap(stack, 'Orders', {
      itemsPath: '$.orders',
      itemProcessor: first.next(second),
      limiter,
      concurrency: MapConcurrency.fixed(5),
    });
    new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
    expect(() => app.synth()).toThrow(/state "Ship" in the item processor of ThrottledMap Stack\/Orders has its own Retry on Lambda\.ClientExecutionTimeoutException/);
  });

  test('RetryPolicy.throttling() retries the errors of the wrapped task kind, by exact name', () => {
    const { stack, limiter, fn } = stackWithLimiter();
    const lambdaTask = new RateLimitedTask(stack, 'L', { limiter, task: new tasks.LambdaInvoke(stack, 'Invoke', { lambdaFunction: fn, retryOnServiceExceptions: false }) });
    const ddb = new RateLimitedTask(stack, 'D', {
      limiter, task: new tasks.CallAwsService(stack, 'Put', { service: 'dynamodb', action: 'putItem', iamResources: ['*'] }),
    });
    const sqsTask = new RateLimitedTask(stack, 'Q', {
      limiter, task: new tasks.CallAwsService(stack, 'Send', { service: 'sqs', action: 'sendMessage', iamResources: ['*'] }),
    });
    expect(lambdaTask.retryErrors).toEqual(RetryPolicy.lambdaThrottlingErrors());
    expect(ddb.retryErrors).toEqual(expect.arrayContaining(['DynamoDb.ProvisionedThroughputExceededException', 'DynamoDb.ThrottlingException']));
    expect(sqsTask.retryErrors).toEqual(expect.arrayContaining(['Sqs.ThrottlingException']));
    expect([...lambdaTask.retryErrors, ...ddb.retryErrors, ...sqsTask.retryErrors].filter((e) => e.includes('*'))).toEqual([]);
  });

  test('resultPath: JsonPath.DISCARD discards the acquire result (no SecondsPath from null)', () => {
    const { stack, limiter, fn } = stackWithLimiter();
    const limited = new RateLimitedTask(stack, 'Ship', {
      limiter, resultPath: sfn.JsonPath.DISCARD, task: new tasks.LambdaInvoke(stack, 'Call', { lambdaFunction: fn, retryOnServiceExceptions: false }),
    });
    new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
    const asl = aslOf(Template.fromStack(stack));
    expect(asl.States['Ship Wait']).toEqual({ Type: 'Wait', SecondsPath: '$.waitSeconds', OutputPath: '$.input', Next: 'Call' });
    expect(asl.States['Ship Acquire'].Parameters.resultField).toBeUndefined();
    expect(asl.States['Ship Acquire'].ResultPath).toBeUndefined();
  });
});

describe('through the local runner', () => {
  /** 12 items, each failing its first call with Lambda.ServiceException (what LambdaInvoke's own Retry would repeat). */
  test('a downstream failing each item\'s first call with Lambda.ServiceException: every call has its own admission', async () => {
    const { stack, limiter, fn } = stackWithLimiter();
    const task = new tasks.LambdaInvoke(stack, 'Call Shipping API', { lambdaFunction: fn, retryOnServiceExceptions: false, resultPath: '$.shipped' });
    const limited = new RateLimitedTask(stack, 'Ship', { limiter, task, retry: RetryPolicy.throttling({ interval: Duration.seconds(1), maxDelay: Duration.seconds(1) }) });
    const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
    const calls: Record<number, number> = {};
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: {
        'Call Shipping API': (input: any) => {
          const n = (calls[input.Payload.order] = (calls[input.Payload.order] ?? 0) + 1);
          if (n === 1) throw Object.assign(new Error('service hiccup'), { name: 'Lambda.ServiceException' });
          return { Payload: { ok: true } };
        },
      },
      waitTimeOverrides: { 'Ship Backoff Wait': 0 },
    });
    try {
      const results = await quiet(() => Promise.all(Array.from({ length: 12 }, (_, order) => runner.run({ order }))));
      expect(results.map((r) => r.status)).toEqual(Array(12).fill('SUCCEEDED'));
      const totalCalls = Object.values(calls).reduce((a, b) => a + b, 0);
      const totalAdmissions = results.reduce((a, r) => a + admissions(r, 'Ship Acquire'), 0);
      expect([totalCalls, totalAdmissions]).toEqual([24, 24]);
      for (const r of results) {
        // every call of the task comes right after its own acquire and Wait
        const p = path(r);
        p.forEach((s, i) => {
          if (s === 'Call Shipping API') expect(p.slice(i - 2, i)).toEqual(['Ship Acquire', 'Ship Wait']);
        });
      }
    } finally {
      await runner.stop();
    }
  });

  test('a task error the policy does not retry ends the execution at the backoff state, never at the task; a redrive acquires before it calls', async () => {
    const { stack, limiter, fn } = stackWithLimiter();
    const task = new tasks.LambdaInvoke(stack, 'Call', { lambdaFunction: fn, retryOnServiceExceptions: false, resultPath: '$.result' });
    const limited = new RateLimitedTask(stack, 'Ship', { limiter, task });
    const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
    let calls = 0;
    let broken = true;
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: {
        Call: () => {
          calls++;
          if (broken) throw Object.assign(new Error('no such order'), { name: 'Orders.NotFound' });
          return { Payload: 'shipped' };
        },
      },
    });
    try {
      const failed = await quiet(() => runner.run({ order: 1 }));
      // THEN the error keeps its name and cause, and the state that failed is the backoff state
      expect([failed.status, failed.error]).toEqual(['FAILED', 'Orders.NotFound']);
      expect(String(failed.cause)).toContain('no such order');
      // (the runner logs StateFailed for a caught error too, then StateCaught)
      const failedStates = failed.events.filter((e) => e.type === 'StateFailed').map((e) => e.stateName);
      const caught = failed.events.filter((e) => e.type === 'StateCaught').map((e) => e.stateName);
      expect([failedStates, caught]).toEqual([['Call', 'Ship Backoff'], ['Call']]);
      expect(calls).toBe(1);

      // WHEN the operator fixes the downstream and redrives: Step Functions restarts at the failed state with its input
      broken = false;
      const redriveInput = { order: 1, cdkSfnThrottleError: { Error: 'Orders.NotFound', Cause: 'no such order' } };
      const redriven = await quiet(() => runner.run(redriveInput, { startAt: 'Ship Backoff', redriveCount: 1 }));
      // THEN it goes back through acquire before the call
      expect(redriven.status).toBe('SUCCEEDED');
      expect(path(redriven)).toEqual(['Ship Backoff', 'Ship Backoff Wait', 'Ship Acquire', 'Ship Wait', 'Call']);
      expect(calls).toBe(2);
      expect(redriven.output.result.Payload).toBe('shipped');
    } finally {
      await runner.stop();
    }
  });

  test('a redrive after RetriesExhausted gets a fresh budget, every call with a token', async () => {
    const { stack, limiter, fn } = stackWithLimiter();
    const task = new tasks.LambdaInvoke(stack, 'Call', { lambdaFunction: fn, retryOnServiceExceptions: false, resultPath: '$.result' });
    const limited = new RateLimitedTask(stack, 'Ship', { limiter, task, retry: RetryPolicy.throttling({ maxAttempts: 2 }) });
    const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
    let calls = 0;
    let failuresLeft = 3;
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: {
        Call: () => {
          calls++;
          if (failuresLeft-- > 0) throw Object.assign(new Error('slow down'), { name: 'Lambda.TooManyRequestsException' });
          return { Payload: 'ok' };
        },
      },
      waitTimeOverrides: { 'Ship Backoff Wait': 0 },
    });
    try {
      const failed = await quiet(() => runner.run({ order: 1 }));
      expect([failed.status, failed.error]).toEqual(['FAILED', ThrottleErrors.RETRIES_EXHAUSTED]);
      expect([calls, admissions(failed, 'Ship Acquire')]).toEqual([2, 2]);
      // the backoff state's input when it failed: the second error, attempt record 2 of this task, redrive 0
      const input = {
        order: 1,
        cdkSfnThrottleAttempt: { task: 'Ship Backoff', attempt: 2, redrive: 0 },
        cdkSfnThrottleError: { Error: 'Lambda.TooManyRequestsException', Cause: 'slow down' },
      };
      const redriven = await quiet(() => runner.run(input, { startAt: 'Ship Backoff', redriveCount: 1 }));
      // a fresh budget of 2: one more failure, then success — each of the 2 calls after its own acquire
      expect(redriven.status).toBe('SUCCEEDED');
      expect([calls, admissions(redriven, 'Ship Acquire')]).toEqual([4, 2]);
    } finally {
      await runner.stop();
    }
  });

  test('two RateLimitedTasks in sequence each get their full retry budget', async () => {
    const { stack, limiter, fn } = stackWithLimiter();
    const policy = RetryPolicy.throttling({ maxAttempts: 3 });
    const first = new RateLimitedTask(stack, 'Quote', {
      limiter, retry: policy, task: new tasks.LambdaInvoke(stack, 'Get Quote', { lambdaFunction: fn, retryOnServiceExceptions: false, resultPath: '$.quote' }),
    });
    const second = new RateLimitedTask(stack, 'Book', {
      limiter, retry: policy, task: new tasks.LambdaInvoke(stack, 'Book Shipment', { lambdaFunction: fn, retryOnServiceExceptions: false, resultPath: '$.booking' }),
    });
    const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(first.next(second)) });
    const calls: Record<string, number> = { quote: 0, book: 0 };
    const flaky = (name: string) => () => {
      // each fails twice, then succeeds on its third (last allowed) attempt
      if (++calls[name] <= 2) throw Object.assign(new Error('busy'), { name: 'Lambda.TooManyRequestsException' });
      return { Payload: name };
    };
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: { 'Get Quote': flaky('quote'), 'Book Shipment': flaky('book') },
      waitTimeOverrides: { 'Quote Backoff Wait': 0, 'Book Backoff Wait': 0 },
    });
    try {
      const r = await quiet(() => runner.run({ order: 7 }));
      expect([r.status, r.error]).toEqual(['SUCCEEDED', undefined]);
      expect(calls).toEqual({ quote: 3, book: 3 });
      expect([admissions(r, 'Quote Acquire'), admissions(r, 'Book Acquire')]).toEqual([3, 3]);
      expect(r.output.booking.Payload).toBe('book');
    } finally {
      await runner.stop();
    }
  });

  test('a limited ThrottledMap whose processor is several tasks: each retry re-acquires, a final error is raised from the backoff state', async () => {
    const { stack, limiter, fn } = stackWithLimiter();
    const enrich = new tasks.LambdaInvoke(stack, 'Enrich', { lambdaFunction: fn, retryOnServiceExceptions: false, resultPath: '$.enriched' });
    const ship = new tasks.LambdaInvoke(stack, 'Ship', { lambdaFunction: fn, retryOnServiceExceptions: false, resultPath: '$.shipped' });
    const map = new ThrottledMap(stack, 'Orders', {
      itemsPath: '$.orders',
      itemProcessor: enrich.next(ship),
      limiter,
      concurrency: MapConcurrency.fixed(4),
      retry: RetryPolicy.throttling({ maxAttempts: 3 }),
      catchItemFailures: true,
    });
    const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
    const asl = aslOf(Template.fromStack(stack));
    const item = asl.States.Orders.ItemProcessor.States;
    // every failure of the item unit goes to the backoff state, which loops back to the unit (acquire first)
    expect(item['Orders Item Unit'].Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.cdkSfnThrottleError', Next: 'Orders Item Backoff' }]);
    expect(item['Orders Item Unit'].Retry).toBeUndefined();
    expect(item['Orders Item Unit'].Branches[0].StartAt).toBe('Orders Item Acquire');
    expect(item['Orders Item Backoff Wait'].Next).toBe('Orders Item Unit');
    let calls = 0;
    const seen = new Map<number, number>();
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: {
        Enrich: (input: any) => ({ Payload: { order: input.Payload.order } }),
        Ship: (input: any) => {
          calls++;
          const order = input.Payload.order;
          const n = (seen.get(order) ?? 0) + 1;
          seen.set(order, n);
          if (n === 1) throw Object.assign(new Error('hiccup'), { name: 'Lambda.ServiceException' });
          if (order === 3) throw Object.assign(new Error('no such order'), { name: 'Orders.NotFound' });
          return { Payload: 'ok' };
        },
      },
      waitTimeOverrides: { 'Orders Item Backoff Wait': 0 },
    });
    try {
      const r = await quiet(() => runner.run({ orders: [1, 2, 3, 4].map((order) => ({ order })) }));
      // order 3 fails for good: its error keeps its name, raised from the backoff state and collected
      expect([r.status, r.error]).toEqual(['SUCCEEDED', undefined]);
      expect(r.output.filter((x: any) => x.failed).map((x: any) => x.error.Error)).toEqual(['Orders.NotFound']);
      // every Ship call came after an acquire of its own: 4 items × 2 attempts = 8 calls, 8 admissions
      expect(calls).toBe(8);
      expect(runner.grants).toHaveLength(8);
    } finally {
      await runner.stop();
    }
  });

  test('resultPath on a non-object input fails with InvalidAcquireRequest before a token is taken', async () => {
    const { stack, limiter, fn } = stackWithLimiter();
    const limited = new RateLimitedTask(stack, 'Ship', {
      limiter, resultPath: '$.acquired', task: new tasks.LambdaInvoke(stack, 'Call', { lambdaFunction: fn, retryOnServiceExceptions: false }),
    });
    const map = new sfn.Map(stack, 'Each', { itemsPath: '$.skus', maxConcurrency: 2 }).itemProcessor(limited);
    const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
    let calls = 0;
    const runner = await LocalRunner.start(stack, machine, { taskHandlers: { Call: () => ({ Payload: ++calls }) } });
    try {
      const r = await quiet(() => runner.run({ skus: ['a', 'b'] }));
      expect([r.status, r.error]).toEqual(['FAILED', ThrottleErrors.INVALID_ACQUIRE_REQUEST]);
      expect(String(r.cause)).toMatch(/resultPath \$\.acquired needs a JSON object as the state input, got a string/);
      expect(calls).toBe(0);
    } finally {
      await runner.stop();
    }
  });
});
