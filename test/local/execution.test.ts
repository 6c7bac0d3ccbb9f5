import { App, Duration, Stack } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { type ExecutionStatusChangeEvent, LocalRunner } from '../../local/runner';

const ACCOUNT = '123456789012';

function newStack(id: string) {
  return new Stack(new App(), id, { env: { account: ACCOUNT, region: 'us-east-1' } });
}

function machineOf(stack: Stack, chain: sfn.IChainable, props: Partial<sfn.StateMachineProps> = {}) {
  return new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(chain), ...props });
}

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => { resolve = r; });
  return { promise, resolve };
}

/** The status events the runner emitted, by execution name. */
function recordStatuses(runner: LocalRunner) {
  const events: ExecutionStatusChangeEvent[] = [];
  const unsubscribe = runner.onExecutionStatusChange((e) => events.push(e));
  return { events, unsubscribe, statuses: (name: string) => events.filter((e) => e.detail.name === name).map((e) => e.detail.status) };
}

const at = (path: string) => sfn.JsonPath.stringAt(path);

describe('the context object', () => {
  test('a Pass state reads $$.Execution.Id/Name/StartTime/Input, $$.State.Name/EnteredTime, $$.StateMachine.Id and, in a Map, $$.Map.Item', async () => {
    // GIVEN Read Context → Pause (20 ms) → Read Again → an inline Map whose items read the context too
    const stack = newStack('Context');
    const chain = sfn.Chain.start(new sfn.Pass(stack, 'Read Context', {
      parameters: {
        id: at('$$.Execution.Id'),
        name: at('$$.Execution.Name'),
        start: at('$$.Execution.StartTime'),
        input: sfn.JsonPath.objectAt('$$.Execution.Input'),
        redriveCount: sfn.JsonPath.numberAt('$$.Execution.RedriveCount'),
        entered: at('$$.State.EnteredTime'),
        state: at('$$.State.Name'),
        greeting: sfn.JsonPath.format('in {}', at('$$.State.Name')),
        machine: at('$$.StateMachine.Id'),
      },
      resultPath: '$.first',
    }))
      .next(new sfn.Wait(stack, 'Pause', { time: sfn.WaitTime.duration(Duration.hours(1)) }))
      .next(new sfn.Pass(stack, 'Read Again', { parameters: { entered: at('$$.State.EnteredTime'), state: at('$$.State.Name') }, resultPath: '$.second' }))
      .next(new sfn.Map(stack, 'Each', {
        itemsPath: '$.items',
        itemSelector: { index: sfn.JsonPath.numberAt('$$.Map.Item.Index'), value: at('$$.Map.Item.Value') },
        resultPath: '$.each',
      }).itemProcessor(new sfn.Pass(stack, 'Item', {
        parameters: {
          index: sfn.JsonPath.numberAt('$.index'),
          value: at('$.value'),
          id: at('$$.Execution.Id'),
          start: at('$$.Execution.StartTime'),
          input: sfn.JsonPath.objectAt('$$.Execution.Input'),
          state: at('$$.State.Name'),
        },
      })));
    const machine = machineOf(stack, chain);
    const runner = await LocalRunner.start(stack, machine, { waitTimeOverrides: { Pause: 20 } });
    const { events } = recordStatuses(runner);
    try {
      // WHEN
      const input = { items: ['a', 'b'] };
      const handle = runner.startExecution(input, { name: 'ctx-1' });
      const result = await handle.result;

      // THEN
      expect([result.status, result.error, result.cause]).toEqual(['SUCCEEDED', undefined, undefined]);
      const executionArn = `arn:aws:states:us-east-1:${ACCOUNT}:execution:${stack.getLogicalId(machine.node.defaultChild as sfn.CfnStateMachine)}:ctx-1`;
      expect([handle.executionArn, result.executionArn, result.name]).toEqual([executionArn, executionArn, 'ctx-1']);
      const start = new Date(events[0].detail.startDate).toISOString();
      const { first, second, each } = result.output;
      expect(first).toEqual({
        id: executionArn,
        name: 'ctx-1',
        start,
        input,
        redriveCount: 0,
        entered: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
        state: 'Read Context',
        greeting: 'in Read Context',
        machine: runner.stateMachineArn,
      });
      expect(Date.parse(first.entered)).toBeGreaterThanOrEqual(Date.parse(start));
      // each state has its own EnteredTime: Read Again is entered after the 20 ms pause
      expect(second.state).toBe('Read Again');
      expect(Date.parse(second.entered) - Date.parse(first.entered)).toBeGreaterThanOrEqual(15);
      // in the Map's iterations (started after the pause): the execution's Id, StartTime and Input, not the iteration's
      expect(each).toEqual(['a', 'b'].map((value, index) => ({ index, value, id: executionArn, start, input, state: 'Item' })));
    } finally {
      await runner.stop();
    }
  });

  test('$$.Execution.RedriveCount is the run\'s', async () => {
    const stack = newStack('Redrive');
    const runner = await LocalRunner.start(stack, machineOf(stack, new sfn.Pass(stack, 'Read', { parameters: { n: sfn.JsonPath.numberAt('$$.Execution.RedriveCount') } })));
    try {
      expect((await runner.run({}, { redriveCount: 2 })).output).toEqual({ n: 2 });
      expect((await runner.run({})).output).toEqual({ n: 0 });
    } finally {
      await runner.stop();
    }
  });

  test('$$.State.EnteredTime stays the time the state was entered across its retries', async () => {
    const stack = newStack('Retries');
    const flaky = new tasks.CallAwsService(stack, 'Flaky', {
      service: 'sts',
      action: 'getCallerIdentity',
      iamResources: ['*'],
      parameters: { Entered: at('$$.State.EnteredTime') },
    });
    flaky.addRetry({ errors: ['Flaky.Error'], maxAttempts: 2 });
    const calls: { entered: string; atMs: number }[] = [];
    const runner = await LocalRunner.start(stack, machineOf(stack, flaky), {
      retryIntervalOverrides: { Flaky: 20 },
      taskHandlers: {
        Flaky: (input: any) => {
          calls.push({ entered: input.Entered, atMs: Date.now() });
          if (calls.length === 1) throw Object.assign(new Error('try again'), { name: 'Flaky.Error' });
          return { ok: true };
        },
      },
    });
    try {
      expect((await runner.run({})).status).toBe('SUCCEEDED');
      expect(calls).toHaveLength(2);
      expect(calls[1].entered).toBe(calls[0].entered);
      expect(calls[1].atMs - Date.parse(calls[0].entered)).toBeGreaterThanOrEqual(15);
    } finally {
      await runner.stop();
    }
  });

  test('a Distributed Map (emulated) gives $$.Map.Item and the execution context to its ItemSelector', async () => {
    const stack = newStack('Distributed');
    const map = new sfn.DistributedMap(stack, 'Each', {
      itemsPath: '$.items',
      itemSelector: { index: sfn.JsonPath.numberAt('$$.Map.Item.Index'), value: at('$$.Map.Item.Value'), id: at('$$.Execution.Id') },
    }).itemProcessor(new sfn.Pass(stack, 'Item', {
      parameters: { index: sfn.JsonPath.numberAt('$.index'), value: sfn.JsonPath.numberAt('$.value'), id: at('$.id'), child: at('$$.Execution.Id') },
    }));
    const runner = await LocalRunner.start(stack, machineOf(stack, map));
    try {
      const handle = runner.startExecution({ items: [10, 20] }, { name: 'dm' });
      const result = await handle.result;
      expect(result.status).toBe('SUCCEEDED');
      expect(result.output).toEqual([10, 20].map((value, index) => ({ index, value, id: handle.executionArn, child: handle.executionArn })));
    } finally {
      await runner.stop();
    }
  });

  test('a definition reading $$.State.RetryCount, which the runner cannot give, fails before it runs, naming the state', async () => {
    const stack = newStack('RetryCount');
    const machine = machineOf(stack, new sfn.Pass(stack, 'Count', { parameters: { n: sfn.JsonPath.numberAt('$$.State.RetryCount') } }));
    await expect(LocalRunner.start(stack, machine)).rejects.toThrow(/state "Count" reads n\.\$: "\$\$\.State\.RetryCount": \$\$\.State\.RetryCount is not available locally/);
  });
});

describe('execution status', () => {
  test('abort() ends the execution ABORTED: nothing after the current state runs, listeners get RUNNING then ABORTED', async () => {
    // GIVEN Block (a task that returns when the test says) → After
    const stack = newStack('Abort');
    const block = new tasks.CallAwsService(stack, 'Block', { service: 'sts', action: 'getCallerIdentity', iamResources: ['*'] });
    const after = new tasks.CallAwsService(stack, 'After', { service: 'sts', action: 'getCallerIdentity', iamResources: ['*'] });
    const entered = deferred();
    const release = deferred<unknown>();
    let afterCalls = 0;
    const runner = await LocalRunner.start(stack, machineOf(stack, sfn.Chain.start(block).next(after)), {
      taskHandlers: {
        Block: () => {
          entered.resolve();
          return release.promise;
        },
        After: () => ++afterCalls,
      },
    });
    const { events, statuses } = recordStatuses(runner);
    try {
      const handle = runner.startExecution({ order: 7 }, { name: 'stop-me' });
      await entered.promise;
      expect(statuses('stop-me')).toEqual(['RUNNING']);

      // WHEN
      handle.abort('Operator.Stop', 'stopped by the test');
      const result = await handle.result;

      // THEN
      expect(result).toMatchObject({ status: 'ABORTED', error: 'Operator.Stop', cause: 'stopped by the test', name: 'stop-me' });
      expect(result.output).toBeUndefined();
      expect(result.events.map((e) => e.type)).toEqual(['ExecutionStarted', 'StateEntered', 'ExecutionAborted']);
      expect(statuses('stop-me')).toEqual(['RUNNING', 'ABORTED']);
      const aborted = events[1];
      expect(aborted).toMatchObject({
        'detail-type': 'Step Functions Execution Status Change',
        'source': 'aws.states',
        'account': ACCOUNT,
        'region': 'us-east-1',
        'resources': [handle.executionArn],
        'detail': {
          executionArn: handle.executionArn,
          stateMachineArn: runner.stateMachineArn,
          name: 'stop-me',
          status: 'ABORTED',
          input: '{"order":7}',
          output: null,
          error: 'Operator.Stop',
          cause: 'stopped by the test',
        },
      });
      expect(aborted.detail.startDate).toBe(events[0].detail.startDate);
      expect(aborted.detail.stopDate).toBeGreaterThanOrEqual(aborted.detail.startDate);
      // the blocked task returns after the stop: the execution does not go on to After
      release.resolve({ late: true });
      await new Promise((r) => setTimeout(r, 50));
      expect(afterCalls).toBe(0);
      handle.abort(); // no effect once ended
      expect(statuses('stop-me')).toEqual(['RUNNING', 'ABORTED']);
    } finally {
      release.resolve({});
      await runner.stop();
    }
  });

  test('a successful execution: RUNNING then SUCCEEDED with its output; unsubscribing stops the events', async () => {
    const stack = newStack('Succeed');
    const runner = await LocalRunner.start(stack, machineOf(stack, new sfn.Pass(stack, 'Done', { result: sfn.Result.fromObject({ shipped: true }) })));
    const { events, unsubscribe } = recordStatuses(runner);
    try {
      const result = await runner.run({ order: 1 }, { name: 'ok-1' });
      expect(result).toMatchObject({ status: 'SUCCEEDED', output: { shipped: true } });
      expect(events.map((e) => e.detail.status)).toEqual(['RUNNING', 'SUCCEEDED']);
      const [running, succeeded] = events;
      expect(running.detail).toMatchObject({ name: 'ok-1', status: 'RUNNING', stopDate: null, output: null, input: '{"order":1}' });
      expect(succeeded.detail).toMatchObject({
        executionArn: result.executionArn,
        stateMachineArn: runner.stateMachineArn,
        name: 'ok-1',
        status: 'SUCCEEDED',
        startDate: running.detail.startDate,
        input: '{"order":1}',
        output: '{"shipped":true}',
        outputDetails: { included: true },
        error: null,
        cause: null,
      });
      expect(succeeded.detail.stopDate).toBeGreaterThanOrEqual(succeeded.detail.startDate);
      expect(succeeded.id).not.toBe(running.id);

      unsubscribe();
      await runner.run({ order: 2 });
      expect(events).toHaveLength(2);
    } finally {
      await runner.stop();
    }
  });

  test('a failed execution: FAILED with the error and cause', async () => {
    const stack = newStack('Fail');
    const runner = await LocalRunner.start(stack, machineOf(stack, new sfn.Fail(stack, 'Boom', { error: 'Order.Invalid', cause: 'no items' })));
    const { events } = recordStatuses(runner);
    try {
      const result = await runner.run({});
      expect(result).toMatchObject({ status: 'FAILED', error: 'Order.Invalid', cause: 'no items' });
      expect(events.map((e) => [e.detail.status, e.detail.error, e.detail.cause])).toEqual([['RUNNING', null, null], ['FAILED', 'Order.Invalid', 'no items']]);
    } finally {
      await runner.stop();
    }
  });

  test('an execution past its TimeoutSeconds: TIMED_OUT', async () => {
    const stack = newStack('Timeout');
    const machine = machineOf(stack, new sfn.Wait(stack, 'Forever', { time: sfn.WaitTime.duration(Duration.hours(1)) }), { timeout: Duration.seconds(1) });
    const runner = await LocalRunner.start(stack, machine);
    const { events } = recordStatuses(runner);
    try {
      const result = await runner.run({});
      expect(result).toMatchObject({ status: 'TIMED_OUT', error: 'States.Timeout' });
      expect(events.map((e) => e.detail.status)).toEqual(['RUNNING', 'TIMED_OUT']);
      expect(events[1].detail.stopDate! - events[1].detail.startDate).toBeGreaterThanOrEqual(990);
    } finally {
      await runner.stop();
    }
  });
});
