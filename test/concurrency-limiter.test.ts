import * as fs from 'fs';
import * as path from 'path';
import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { App, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { LocalRunner, statesEntered } from '../local/runner';
import { sleep } from '../local/timing';
import { ConcurrencyLimitedTask, ConcurrencyLimiter, MapConcurrency, MapMode, RateLimiter, RetryPolicy, ThrottleDashboard, ThrottledMap, ThrottleErrors } from '../src';
import { aslOf } from './support/asl';
import { actionsOf, logicalIdOf, statementsOfRole } from './support/iam';
import { nagFindings } from './support/nag';
import { expectValidationError } from './support/validation';

// A cross-execution concurrency limit: judged at the job (how many run at once, counted by the job itself) and at the
// table (what is held afterwards), never by wall-clock spacing.

function build(options: { limit?: number; maxWait?: Duration; leaseDuration?: Duration; reaper?: boolean; key?: string } = {}) {
  const app = new App();
  const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiter = new ConcurrencyLimiter(stack, 'Db', {
    limit: options.limit ?? 5,
    limiterName: 'db',
    maxWait: options.maxWait,
    leaseDuration: options.leaseDuration,
    reaper: options.reaper,
    removalPolicy: RemovalPolicy.DESTROY,
  });
  const fn = lambda.Function.fromFunctionArn(stack, 'Query', 'arn:aws:lambda:us-east-1:123456789012:function:query');
  const job = tasks.LambdaInvoke.jsonPath(stack, 'Job', { lambdaFunction: fn, retryOnServiceExceptions: false, payloadResponseOnly: true });
  const limited = new ConcurrencyLimitedTask(stack, 'Limited', { limiter, task: job, key: options.key });
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
  return { app, stack, limiter, machine, limited };
}

/** A job that counts how many run at once (its own count, at its start and end). */
function counter(ms: number, fails: (n: number) => boolean = () => false) {
  let running = 0;
  let started = 0;
  const seen = { max: 0, started: 0 };
  const handler = async (input: any) => {
    const n = ++started;
    seen.started = started;
    running++;
    seen.max = Math.max(seen.max, running);
    try {
      await sleep(ms);
      if (fails(n)) throw Object.assign(new Error(`job ${n} broke`), { name: 'Job.Broken' });
      return { done: input.n };
    } finally {
      running--;
    }
  };
  return { handler, seen };
}

/** What the table still holds for the limiter: slots in use and waiters, per key. */
async function held(runner: LocalRunner, tableLogicalId: string) {
  const db = (runner as any).db;
  const items = (await db.client.send(new ScanCommand({ TableName: runner.nameOf(tableLogicalId) }))).Items ?? [];
  return items.filter((i: any) => i.pk.S.startsWith('db#c#'))
    .map((i: any) => ({ key: i.pk.S, used: Number(i.used.N), leases: Object.keys(i.L?.M ?? {}).length, waiters: (i.W?.L ?? []).length }));
}

const tableId = (b: ReturnType<typeof build>) => b.stack.getLogicalId(b.limiter.table.node.defaultChild as any);

describe('ConcurrencyLimiter', () => {
  test('renders acquire (.waitForTaskToken) → the task in a unit → release; the task gets a timeout that fits its lease; IAM on exact ARNs', () => {
    const b = build({ leaseDuration: Duration.minutes(2) });
    const template = Template.fromStack(b.stack);
    const asl = aslOf(template);
    expect(asl.StartAt).toBe('Limited Acquire');
    expect(asl.States['Limited Acquire']).toMatchObject({ Resource: 'arn:aws:states:::lambda:invoke.waitForTaskToken', TimeoutSeconds: 300, ResultPath: '$.cdkSfnThrottleLease', Next: 'Limited Run' });
    expect(asl.States['Limited Acquire'].Parameters.Payload).toMatchObject({ 'op': 'acquire', 'key': 'default', 'slots': 1, 'token.$': '$$.Task.Token' });
    expect(asl.States['Limited Run'].Branches[0].States.Job.TimeoutSeconds).toBe(108);
    expect(asl.States['Limited Run'].Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.cdkSfnThrottleError', Next: 'Limited Release Failed' }]);
    expect(asl.States['Limited Release']).toMatchObject({ ResultPath: null, OutputPath: '$.cdkSfnThrottleResult[0]', End: true });
    // the reaper listens to exactly this machine's failures
    const rule = Object.values(template.findResources('AWS::Events::Rule'))[0] as any;
    expect(rule.Properties.EventPattern.detail).toEqual({ status: ['FAILED', 'TIMED_OUT', 'ABORTED'], stateMachineArn: [{ Ref: b.stack.getLogicalId(b.machine.node.defaultChild as any) }] });
    const statements = Object.values(template.findResources('AWS::IAM::Policy')).flatMap((p: any) => p.Properties.PolicyDocument.Statement);
    expect(statements.find((s: any) => [s.Action].flat().includes('states:SendTaskSuccess'))?.Resource).toEqual({ Ref: b.stack.getLogicalId(b.machine.node.defaultChild as any) });
    expect(nagFindings(b.stack).filter((f) => f.includes('Stack/Db') || f.includes('Stack/Limited'))).toEqual([]);
  });

  test('the function is granted every DynamoDB call its handler makes, on its own items', () => {
    const b = build();
    const template = Template.fromStack(b.stack);
    // the DynamoDB commands the handler's sources send, read from the sources (a new command without a grant fails here)
    const dir = path.join(__dirname, '..', 'lambda', 'concurrency-limiter');
    const imports = fs.readdirSync(dir).filter((f) => f.endsWith('.ts'))
      .flatMap((f) => [...fs.readFileSync(path.join(dir, f), 'utf8').matchAll(/import \{([^}]*)\} from '@aws-sdk\/client-dynamodb'/g)].map((m) => m[1]));
    const used = new Set(imports.flatMap((list) => [...list.matchAll(/(\w+)Command\b/g)].map((m) => `dynamodb:${m[1]}`)));
    expect([...used].sort()).toEqual(['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Scan', 'dynamodb:UpdateItem']);
    const fnRole = logicalIdOf(template, 'AWS::IAM::Role', (p) => JSON.stringify(p).includes('Concurrency function'));
    const statements = statementsOfRole(template, fnRole);
    const granted = actionsOf(statements.filter((s) => JSON.stringify(s.Action).includes('dynamodb:')));
    expect(granted).toEqual([...used].sort());
    const itemActions = statements.find((s) => [s.Action].flat().includes('dynamodb:UpdateItem'))!;
    expect((itemActions as any).Condition).toEqual({ 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['db#*'] } });
  });

  test('imported by its attributes: acquires against its function, a warning says where to grant the waiters', () => {
    const app = new App();
    const stack = new Stack(app, 'Workflows', { env: { account: '123456789012', region: 'us-east-1' } });
    const limiter = ConcurrencyLimiter.fromConcurrencyLimiterAttributes(stack, 'Db', {
      limiterName: 'db', limit: 5, concurrencyFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:db-concurrency', tableArn: 'arn:aws:dynamodb:us-east-1:123456789012:table/limits',
    });
    const fn = lambda.Function.fromFunctionArn(stack, 'Query', 'arn:aws:lambda:us-east-1:123456789012:function:query');
    const limited = new ConcurrencyLimitedTask(stack, 'Limited', { limiter, task: tasks.LambdaInvoke.jsonPath(stack, 'Job', { lambdaFunction: fn, payloadResponseOnly: true }) });
    new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
    expect(aslOf(Template.fromStack(stack)).States['Limited Acquire'].Parameters.FunctionName).toBe('arn:aws:lambda:us-east-1:123456789012:function:db-concurrency');
    expect(Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('limiter db is imported: in its own stack, call allowWaitersFrom'))).toHaveLength(1);
  });

  test('a dashboard row with its alarms', () => {
    const b = build();
    const dashboard = new ThrottleDashboard(b.stack, 'Throttles').addConcurrencyLimiter(b.limiter);
    const alarms = Object.values(Template.fromStack(b.stack).findResources('AWS::CloudWatch::Alarm')).map((a: any) => a.Properties.MetricName ?? 'math');
    expect(alarms.sort()).toEqual(['Errors', 'Expired', 'Reclaimed']);
    expect(dashboard.alarms).toHaveLength(3);
  });

  test.each<[string, () => unknown, RegExp]>([
    ['limit 0', () => new ConcurrencyLimiter(new Stack(), 'C', { limit: 0 }), /^\[Default\/C\] limit must be an integer from 1 to 1000, got 0/],
    ['slots above the limit', () => {
      const b = build({ limit: 2 });
      return new ConcurrencyLimitedTask(b.stack, 'T2', { limiter: b.limiter, task: new sfn.Pass(b.stack, 'P') as any, slots: 3 });
    }, /slots must be an integer from 1 to 2/],
  ])('fails at synth: %s', (_n, make, message) => expectValidationError(make, message));

  test('a task timeout that does not fit in the lease fails the synth', () => {
    const app = new App();
    const stack = new Stack(app, 'Stack');
    const limiter = new ConcurrencyLimiter(stack, 'Db', { limit: 2, leaseDuration: Duration.minutes(1), limiterName: 'db' });
    const fn = lambda.Function.fromFunctionArn(stack, 'Query', 'arn:aws:lambda:us-east-1:123456789012:function:query');
    const job = tasks.LambdaInvoke.jsonPath(stack, 'Job', { lambdaFunction: fn, payloadResponseOnly: true, taskTimeout: sfn.Timeout.duration(Duration.minutes(5)) });
    const limited = new ConcurrencyLimitedTask(stack, 'T', { limiter, task: job });
    // the task renders into the machine when the machine is built
    expect(() => new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(limited) })).toThrow(/\[Stack\/T\] the task's timeout \(300 s\) × 7 attempts \+ 126 s of backoff does not fit in 90 % of the lease \(60 s\).*Raise leaseDuration \(the retries alone do not fit\)/);
  });

  test('20 executions at once, limit 5 on a new key: never more than 5 jobs at once, all succeed, nothing held afterwards, 4 states each', async () => {
    const b = build();
    const job = counter(200);
    const runner = await LocalRunner.start(b.stack, b.machine, { taskHandlers: { Job: job.handler } });
    try {
      const results = await Promise.all(Array.from({ length: 20 }, (_, n) => runner.run({ n })));
      expect(results.map((r) => r.status)).toEqual(Array(20).fill('SUCCEEDED'));
      expect(results.map((r) => r.output)).toEqual(Array.from({ length: 20 }, (_, n) => ({ done: n })));
      expect(job.seen.max).toBeLessThanOrEqual(5);
      expect(job.seen.max).toBe(5);
      // acquire, the unit, the job, release: no polling, waiting or not
      expect(Math.max(...results.map((r) => statesEntered(r)))).toBeLessThanOrEqual(5);
      expect(await held(runner, tableId(b))).toEqual([{ key: 'db#c#default', used: 0, leases: 0, waiters: 0 }]);
    } finally {
      await runner.stop();
    }
  });

  test('jobs #3, #10 and #17 throw: their executions fail with the job\'s own error, no slot leaks, 10 more run at full concurrency', async () => {
    const b = build();
    const job = counter(100, (n) => [3, 10, 17].includes(n));
    const runner = await LocalRunner.start(b.stack, b.machine, { taskHandlers: { Job: job.handler } });
    try {
      const results = await Promise.all(Array.from({ length: 20 }, (_, n) => runner.run({ n })));
      const failed = results.filter((r) => r.status === 'FAILED');
      expect(failed).toHaveLength(3);
      expect(failed.map((r) => r.error)).toEqual(['Job.Broken', 'Job.Broken', 'Job.Broken']);
      expect(await held(runner, tableId(b))).toEqual([{ key: 'db#c#default', used: 0, leases: 0, waiters: 0 }]);
      job.seen.max = 0;
      const more = await Promise.all(Array.from({ length: 10 }, (_, n) => runner.run({ n: 100 + n })));
      expect(more.every((r) => r.status === 'SUCCEEDED')).toBe(true);
      expect(job.seen.max).toBe(5);
    } finally {
      await runner.stop();
    }
  });

  test.each([
    ['with the reaper', true],
    ['with lease expiry alone (no reaper)', false],
  ])('5 executions stopped while holding slots and 3 while waiting: their slots go to the next waiters, nothing leaks (%s)', async (_name, reaper) => {
    const b = build({ limit: 5, reaper, leaseDuration: Duration.seconds(10) });
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => { release = r; });
    const startedAt = new Map<number, number>();
    const runner = await LocalRunner.start(b.stack, b.machine, {
      taskHandlers: {
        // the holders keep their jobs running until the gate opens (their executions are stopped, not their jobs)
        Job: async (input: any) => {
          startedAt.set(input.n, Date.now());
          if (input.hold) await gate;
          return { done: input.n };
        },
      },
    });
    try {
      const holders = Array.from({ length: 5 }, (_, n) => runner.startExecution({ n, hold: true }));
      while (startedAt.size < 5) await sleep(10);
      const stopped = Array.from({ length: 3 }, (_, n) => runner.startExecution({ n: 10 + n }));
      const live = Array.from({ length: 3 }, (_, n) => runner.startExecution({ n: 20 + n }));
      // all six wait in their callback state: no slot is free
      while ((await held(runner, tableId(b)))[0]?.waiters !== 6) await sleep(20);
      expect(startedAt.size).toBe(5);
      holders.forEach((h) => h.abort());
      stopped.forEach((w) => w.abort());
      const abortedAt = Date.now();
      let extra: Promise<unknown> = Promise.resolve();
      if (!reaper) {
        // without the reaper, the next operation after the leases' expiry reclaims them: a new acquire comes along
        await sleep(10_500);
        extra = runner.run({ n: 99 });
      }
      const rest = await Promise.all(live.map((w) => w.result));
      expect(rest.map((r) => r.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);
      await extra;
      // the stopped waiters never ran
      expect([10, 11, 12].filter((n) => startedAt.has(n))).toEqual([]);
      if (reaper) {
        // the reaper hands the stopped holders' slots on at once: the issue's bound is 2 s
        const lag = Math.max(...[20, 21, 22].map((n) => startedAt.get(n)! - abortedAt));
        expect(lag).toBeLessThanOrEqual(2_000);
      }
      release();
      await Promise.all(holders.map((h) => h.result));
      // the reapers of the 8 stopped executions race on one item (a read and a conditional write each, retried on a
      // lost race): the last may still be at it when the live waiters are done, so wait for the table to settle
      let state = await held(runner, tableId(b));
      for (const deadline = Date.now() + 10_000; state[0]?.used !== 0 && Date.now() < deadline;) {
        await sleep(50);
        state = await held(runner, tableId(b));
      }
      // every slot back: the stopped holders' leases were reaped (or reclaimed at expiry), nobody waits
      expect(state).toEqual([{ key: 'db#c#default', used: 0, leases: 0, waiters: 0 }]);
    } finally {
      release();
      await runner.stop();
    }
  }, 60_000);

  test('a waiter past maxWait fails with ConcurrencyWaitExpired and leaves nothing behind', async () => {
    const b = build({ limit: 1, maxWait: Duration.seconds(1) });
    let open: () => void = () => undefined;
    const gate = new Promise<void>((r) => { open = r; });
    const job = async (input: any) => {
      if (input.hold) await gate;
      return {};
    };
    const runner = await LocalRunner.start(b.stack, b.machine, { taskHandlers: { Job: job } });
    try {
      const holder = runner.startExecution({ hold: true });
      await sleep(200);
      const waiter = await runner.run({});
      expect(waiter).toMatchObject({ status: 'FAILED', error: ThrottleErrors.CONCURRENCY_WAIT_EXPIRED });
      open();
      expect((await holder.result).status).toBe('SUCCEEDED');
      expect(await held(runner, tableId(b))).toEqual([{ key: 'db#c#default', used: 0, leases: 0, waiters: 0 }]);
    } finally {
      open();
      await runner.stop();
    }
  }, 30_000);

  test.each<[string, Parameters<typeof build>[0]]>([
    ['defaults', {}],
    ['a key per tenant, no reaper, short lease and wait', { key: '$.tenant', reaper: false, leaseDuration: Duration.minutes(1), maxWait: Duration.seconds(30) }],
  ])('snapshot and cdk-nag: %s', (_name, options) => {
    const b = build(options);
    // the library's constructs (the test's own machine and its LambdaInvoke grant are not the library's)
    expect(nagFindings(b.stack).filter((f) => f.includes('Stack/Db') || f.includes('Stack/Limited'))).toEqual([]);
    expect(Template.fromStack(b.stack).toJSON()).toMatchSnapshot();
  });
});

describe('ThrottledMap with a concurrency limit', () => {
  function mapStack(props: { limit: number; concurrency: number; key?: string }) {
    const app = new App();
    const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
    const limiter = new ConcurrencyLimiter(stack, 'Db', { limit: props.limit, limiterName: 'db', removalPolicy: RemovalPolicy.DESTROY });
    const fn = lambda.Function.fromFunctionArn(stack, 'Query', 'arn:aws:lambda:us-east-1:123456789012:function:query');
    const job = tasks.LambdaInvoke.jsonPath(stack, 'Job', { lambdaFunction: fn, retryOnServiceExceptions: false, payloadResponseOnly: true });
    const map = new ThrottledMap(stack, 'Orders', {
      itemsPath: '$.orders',
      concurrency: MapConcurrency.fixed(props.concurrency),
      concurrencyLimit: { limiter, key: props.key },
      itemProcessor: job,
      retry: RetryPolicy.custom({ errors: ['Job.Flaky'], maxAttempts: 2 }),
      catchItemFailures: true,
    });
    const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
    return { stack, limiter, machine, map };
  }

  test('renders each item as acquire → the task (its retry inside the held slot) → release', () => {
    const { stack } = mapStack({ limit: 3, concurrency: 10 });
    const template = Template.fromStack(stack);
    const item = aslOf(template).States.Orders.ItemProcessor;
    expect(item.StartAt).toBe('Orders Item Acquire');
    const job = item.States['Orders Item Run'].Branches[0].States.Job;
    expect(job.Retry).toEqual([expect.objectContaining({ ErrorEquals: ['Job.Flaky'], MaxAttempts: 1 })]);
    expect(job.TimeoutSeconds).toBeGreaterThan(0);
    expect(item.States['Orders Item Failed']).toBeDefined();
    expect(nagFindings(stack).filter((f) => f.includes('Stack/Db') || f.includes('Stack/Orders'))).toEqual([]);
    expect(template.toJSON()).toMatchSnapshot();
  });

  test('two executions of a 12-item map (MaxConcurrency 12 each), limit 3: never more than 3 jobs at once across both, nothing held afterwards', async () => {
    const { stack, limiter, machine } = mapStack({ limit: 3, concurrency: 12 });
    const job = counter(100, (n) => n === 5);
    const runner = await LocalRunner.start(stack, machine, { taskHandlers: { Job: job.handler } });
    try {
      const orders = (base: number) => Array.from({ length: 12 }, (_, n) => ({ n: base + n }));
      const results = await Promise.all([runner.run({ orders: orders(0) }), runner.run({ orders: orders(100) })]);
      expect(results.map((r) => r.status)).toEqual(['SUCCEEDED', 'SUCCEEDED']);
      const items = results.flatMap((r) => r.output as any[]);
      // the 5th job threw: its item is collected as failed, the other 23 return their results
      expect(items.filter((i) => i.failed)).toHaveLength(1);
      expect(items.filter((i) => i.done !== undefined)).toHaveLength(23);
      expect(job.seen.max).toBeLessThanOrEqual(3);
      expect(job.seen.max).toBe(3);
      expect(await held(runner, stack.getLogicalId(limiter.table.node.defaultChild as any))).toEqual([{ key: 'db#c#default', used: 0, leases: 0, waiters: 0 }]);
    } finally {
      await runner.stop();
    }
  }, 60_000);

  test.each<[string, (stack: Stack, limiter: ConcurrencyLimiter, job: sfn.TaskStateBase) => unknown, RegExp]>([
    ['with a rate limiter too', (stack, limiter, job) => new ThrottledMap(stack, 'M', {
      concurrencyLimit: { limiter }, limiter: new RateLimiter(stack, 'Api', { ratePerSecond: 5, limiterName: 'api' }), itemProcessor: job,
    }), /\[Stack\/M\] concurrencyLimit and limiter are exclusive on one ThrottledMap, got both \(db and api\)/],
    ['distributed', (stack, limiter, job) => new ThrottledMap(stack, 'M', { concurrencyLimit: { limiter }, mode: MapMode.distributed(), itemProcessor: job }),
      /concurrencyLimit needs an inline map \(mode: MapMode.inline\(\)\), got a distributed one/],
    ['a chain as the processor', (stack, limiter, job) => new ThrottledMap(stack, 'M', { concurrencyLimit: { limiter }, itemProcessor: job.next(new sfn.Pass(stack, 'After')) }),
      /concurrencyLimit needs the item processor to be one task state, got a chain starting at "Job"/],
  ])('fails at synth: %s', (_n, make, message) => {
    const stack = new Stack(new App(), 'Stack');
    const limiter = new ConcurrencyLimiter(stack, 'Db', { limit: 3, limiterName: 'db' });
    const fn = lambda.Function.fromFunctionArn(stack, 'Query', 'arn:aws:lambda:us-east-1:123456789012:function:query');
    expectValidationError(() => make(stack, limiter, tasks.LambdaInvoke.jsonPath(stack, 'Job', { lambdaFunction: fn, payloadResponseOnly: true })), message);
  });
});
