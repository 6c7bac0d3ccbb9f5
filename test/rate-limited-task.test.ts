import { App, Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { AcquireMode, RateLimitedTask, RateLimiter, RetryPolicy, ThrottleErrors } from '../src';
import { aslOf } from './support/asl';
import { nagFindings } from './support/nag';
import { expectValidationError } from './support/validation';
import { LocalExecution, type LocalGrant, LocalRunner, statesEntered } from '../local/runner';
import { type Admission, nowUs } from '../local/timing';
import { expectCallsHoldSlots, grantsOf } from './support/decisions';

const RATE = 10;
const BURST = 1;

interface Built { stack: Stack; machine: sfn.StateMachine; limited: RateLimitedTask }

function build(options: { mode?: AcquireMode; retry?: RetryPolicy; key?: string; catchAll?: boolean; resultPath?: string } = {}): Built {
  const app = new App();
  const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: RATE, burst: BURST, limiterName: 'api', maxWait: Duration.minutes(5) });
  const task = new tasks.CallAwsService(stack, 'Call API', {
    service: 'sts',
    action: 'getCallerIdentity',
    iamResources: ['*'],
    resultPath: '$.api',
    parameters: { Tenant: sfn.JsonPath.stringAt('$.tenant'), NotBeforeUs: sfn.JsonPath.numberAt(`${options.resultPath ?? '$.acquired'}.notBeforeUs`) },
  });
  const limited = new RateLimitedTask(stack, 'Limited', {
    limiter, task, acquire: { key: options.key ?? '$.tenant', mode: options.mode }, retry: options.retry, resultPath: options.resultPath ?? '$.acquired',
  });
  if (options.catchAll) limited.addCatch(new sfn.Pass(stack, 'Failed Item', { resultPath: '$.failure' }), { resultPath: '$.error' });
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
  return { stack, machine, limited };
}

/**
 * Runs `items` executions at once. The downstream stub records the time every call reaches it (its own clock) and
 * fails some with a throttling error; it also records calls that start before the slot the limiter granted.
 */
async function runItems(b: Built, items: { tenant: string }[], opts: { failRate?: number; failAll?: boolean } = {}) {
  const calls: Record<string, Admission[]> = {};
  const early: string[] = [];
  let n = 0;
  const runner = await LocalRunner.start(b.stack, b.machine, {
    taskHandlers: {
      'Call API': (input: any) => {
        const arrivedUs = nowUs();
        if (arrivedUs < input.NotBeforeUs) early.push(`${input.NotBeforeUs - arrivedUs} µs early`);
        (calls[input.Tenant] ??= []).push({ atUs: arrivedUs, tokens: 1 });
        // Deterministic 30 % failures: every call whose sequence number ends in 0, 3 or 6 (of ten) fails.
        if (opts.failAll || (opts.failRate && [0, 3, 6].includes(n++ % 10))) {
          throw Object.assign(new Error('Rate exceeded'), { name: 'Sts.ThrottlingException' });
        }
        return { ok: true };
      },
    },
    dynamoDbProcess: true,
  });
  const out = process.stdout.write;
  process.stdout.write = (() => true) as any; // EMF lines
  try {
    const results: LocalExecution[] = await Promise.all(items.map((item) => runner.run(item)));
    expect(early).toEqual([]);
    return { results, calls, grants: runner.grants };
  } finally {
    process.stdout.write = out;
    await runner.stop();
  }
}

const items = (count: number, tenants = ['acme']) => Array.from({ length: count }, (_, i) => ({ tenant: tenants[i % tenants.length], order: i }));

/** The bound at the limiter's decisions, and every downstream call after a slot of its own (see support/decisions). */
function expectBound(calls: Admission[], grants: LocalGrant[]) {
  expectCallsHoldSlots(calls.map((c) => c.atUs), grants, RATE, BURST);
}

/** A policy applied to a task 'T' in stack 'S' (where it is checked). */
function applied(policy: RetryPolicy): void {
  const stack = new Stack(new App(), 'S');
  policy.applyTo(new tasks.CallAwsService(stack, 'T', { service: 'sts', action: 'getCallerIdentity', iamResources: ['*'] }));
}

describe('RateLimitedTask', () => {
  describe('template', () => {
    test('acquire → Wait → task; every task error goes to backoff → Wait → acquire (or is raised again there)', () => {
      const { stack } = build();
      const asl = aslOf(Template.fromStack(stack));
      expect(asl.StartAt).toBe('Limited Acquire');
      expect(asl.States['Limited Acquire']).toMatchObject({
        Type: 'Task',
        Parameters: { 'key.$': '$.tenant', 'tokens': 1, 'mode': 'RESERVE', 'input.$': '$', 'task': 'Limited Backoff', 'redriveCount.$': '$$.Execution.RedriveCount' },
        Next: 'Limited Wait',
      });
      expect(asl.States['Limited Wait']).toEqual({ Type: 'Wait', SecondsPath: '$.waitSeconds', OutputPath: '$.input', Next: 'Call API' });
      // the task never ends the execution itself: one catch-all to the backoff state, no Retry of its own
      expect(asl.States['Call API'].Catch).toEqual([{
        ErrorEquals: ['States.ALL'], ResultPath: '$.cdkSfnThrottleError', Next: 'Limited Backoff',
      }]);
      expect(asl.States['Call API'].Retry).toBeUndefined();
      // the error path: backoff (drawn by the function) → Wait → acquire; the policy's errors fit the task (STS)
      expect(asl.States['Limited Backoff']).toMatchObject({
        Parameters: {
          'phase': 'backoff',
          'task': 'Limited Backoff',
          'input.$': '$',
          'redriveCount.$': '$$.Execution.RedriveCount',
          'retry': {
            maxAttempts: 6,
            intervalMs: 1000,
            backoffRate: 2,
            maxDelayMs: 60000,
            jitter: true,
            errors: ['Sts.ThrottlingException', 'Sts.TooManyRequestsException', 'Sts.ServiceUnavailableException'],
          },
        },
        Next: 'Limited Backoff Wait',
      });
      expect(asl.States['Limited Backoff Wait']).toEqual({ Type: 'Wait', SecondsPath: '$.waitSeconds', OutputPath: '$.input', Next: 'Limited Acquire' });
    });

    test('TRY retries RateLimitExceeded on the acquire state with full jitter; addCatch covers acquire and backoff', () => {
      const { stack } = build({ mode: AcquireMode.TRY, catchAll: true, retry: RetryPolicy.none() });
      const asl = aslOf(Template.fromStack(stack));
      expect(asl.States['Limited Acquire'].Retry).toContainEqual({
        ErrorEquals: ['RateLimitExceeded'], IntervalSeconds: 1, MaxAttempts: 1000, BackoffRate: 1.5, MaxDelaySeconds: 30, JitterStrategy: 'FULL',
      });
      for (const s of ['Limited Acquire', 'Limited Backoff']) {
        expect(asl.States[s].Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: 'Failed Item' }]);
      }
      expect(asl.States['Call API'].Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.cdkSfnThrottleError', Next: 'Limited Backoff' }]);
      expect(asl.States['Limited Acquire'].Parameters.retry).toBeUndefined();
      // RetryPolicy.none(): the backoff state retries nothing and raises every error again
      expect(asl.States['Limited Backoff'].Parameters.retry).toMatchObject({ maxAttempts: 1, errors: [] });
    });

    test('snapshot and cdk-nag: the state machine role may invoke only the acquire function', () => {
      const { stack } = build({ catchAll: true });
      const template = Template.fromStack(stack);
      expect(template.toJSON()).toMatchSnapshot();
      expect(nagFindings(stack).filter((f) => /Limiter|Limited/.test(f))).toEqual([]);
    });

    test('fails if consume exceeds the burst per shard, or names another dimension', () => {
      const app = new App();
      const stack = new Stack(app, 'S');
      const limiter = new RateLimiter(stack, 'L', { ratePerSecond: 10, burst: 2 });
      const task = new sfn.Pass(stack, 'P') as unknown as sfn.TaskStateBase;
      expectValidationError(() => new RateLimitedTask(stack, 'T', { limiter, task, acquire: { consume: { requests: 3 } } }),
        /^\[S\/T\] acquire.consume.requests must be an integer from 1 to 2 \(floor\(burst 2 \/ shards 1\)\), got 3/);
      expectValidationError(() => new RateLimitedTask(stack, 'U', { limiter, task, acquire: { consume: {} } }),
        /^\[S\/U\] acquire.consume must name the limiter's dimension \(requests\) and no other, got \{\}/);
    });
  });

  describe('RetryPolicy', () => {
    test('applies to plain CDK states', () => {
      const app = new App();
      const stack = new Stack(app, 'S');
      const task = new tasks.CallAwsService(stack, 'T', { service: 'sts', action: 'getCallerIdentity', iamResources: ['*'] });
      RetryPolicy.throttling({ maxAttempts: 3, interval: Duration.seconds(2) }).applyTo(task);
      new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(task) });
      expect(aslOf(Template.fromStack(stack)).States.T.Retry).toEqual([{
        ErrorEquals: ['Sts.ThrottlingException', 'Sts.TooManyRequestsException', 'Sts.ServiceUnavailableException'], MaxAttempts: 2, IntervalSeconds: 2, BackoffRate: 2, MaxDelaySeconds: 60, JitterStrategy: 'FULL',
      }]);
    });

    test('shared defaults are not mutable, and a policy does not follow later changes to the caller\'s array', () => {
      // handed out as copies: editing one changes nothing else
      RetryPolicy.lambdaThrottlingErrors().push('Oops');
      RetryPolicy.httpThrottlingErrors().push('Oops');
      ThrottleErrors.retryable().push('Oops');
      expect(RetryPolicy.lambdaThrottlingErrors()).not.toContain('Oops');
      expect(RetryPolicy.httpThrottlingErrors()).toEqual(['States.Http.StatusCode.429', 'States.Http.StatusCode.503']);
      expect(ThrottleErrors.retryable()).toEqual(['RateLimitExceeded', 'LimiterUnavailable']);
      const mine = ['Api.Throttled'];
      const policy = RetryPolicy.throttling({ errors: mine });
      mine.push('Api.Other');
      expect(policy.errors).toEqual(['Api.Throttled']);
      const stack = new Stack(new App(), 'S');
      const task = new tasks.CallAwsService(stack, 'T', { service: 'sts', action: 'getCallerIdentity', iamResources: ['*'] });
      policy.errorsFor(task).push('Api.Other');
      expect(policy.errorsFor(task)).toEqual(['Api.Throttled']);
    });

    test.each<[string, () => unknown, RegExp]>([
      ['maxAttempts 0', () => applied(RetryPolicy.throttling({ maxAttempts: 0 })), /^\[S\/T\] retry \(RetryPolicy.throttling\) maxAttempts must be an integer from 1 to 100, got 0/],
      ['backoffRate 0.5', () => applied(RetryPolicy.throttling({ backoffRate: 0.5 })), /backoffRate must be from 1 to 10, got 0.5/],
      ['maxDelay below interval', () => applied(RetryPolicy.throttling({ interval: Duration.seconds(10), maxDelay: Duration.seconds(5) })), /maxDelay \(s\) must be an integer from 10 to 3600 \(at least interval\), got 5/],
      ['custom without errors', () => applied(RetryPolicy.custom({})), /retry \(RetryPolicy.custom\): errors must name at least one error/],
      ['an empty error list', () => applied(RetryPolicy.throttling({ errors: [] })), /errors must name at least one error, got an empty list/],
      ['a Pass state', () => RetryPolicy.throttling({ errors: ['E'] }).applyTo(new sfn.Pass(new Stack(new App(), 'S'), 'P')), /^\[S\/P\] state P cannot retry/],
      ['a wildcard pattern', () => applied(RetryPolicy.throttling({ errors: ['Lambda.*'] })), /exact error names \(ErrorEquals has no patterns\), got Lambda\.\*/],
      ['a policy checked where a RateLimitedTask uses it', () => {
        const stack = new Stack(new App(), 'S');
        const limiter = new RateLimiter(stack, 'L', { ratePerSecond: 10 });
        const task = new tasks.CallAwsService(stack, 'C', { service: 'sts', action: 'getCallerIdentity', iamResources: ['*'] });
        return new RateLimitedTask(stack, 'T', { limiter, task, retry: RetryPolicy.throttling({ maxAttempts: 101 }) });
      }, /^\[S\/T\] retry \(RetryPolicy.throttling\) maxAttempts must be an integer from 1 to 100, got 101/],
      ['no errors for an unknown task kind', () => {
        const stack = new Stack(new App(), 'S');
        const topic = new sns.Topic(stack, 'Tp');
        return RetryPolicy.throttling().applyTo(new tasks.SnsPublish(stack, 'G', { topic, message: sfn.TaskInput.fromText('hi') }));
      }, /^\[S\/G\] RetryPolicy.throttling\(\) does not know the throttling errors of G .*give errors/],
    ])('fails if %s', (_name, make, message) => {
      expectValidationError(make, message);
    });
  });

  describe('through the local runner', () => {
    test('RESERVE: 60 items at 10/s, burst 1 — the bound holds at the downstream, no call starts before its slot, 3 states per item', async () => {
      const { results, calls, grants } = await runItems(build(), items(60));
      expect(results.filter((r) => r.status !== 'SUCCEEDED').map((r) => [r.error, r.cause])).toEqual([]);
      expectBound(calls.acme, grants);
      expect(calls.acme).toHaveLength(60);
      // 60 slots at 10/s after a burst of 1: 5.9 s from the first slot to the last at best (the window bound
      // above is the lower limit; this is the upper one: no slot wasted). The downstream's own spacing is the bench's.
      const ideal = (60 - BURST) / RATE;
      const slots = grants.map((g) => g.atUs).sort((a, b) => a - b);
      expect((slots[slots.length - 1] - slots[0]) / 1e6).toBeLessThanOrEqual(ideal * 1.1);
      // acquire, wait, task: no polling, no state entered twice
      for (const r of results) {
        expect(statesEntered(r)).toBe(3);
        const names = r.events.filter((e) => e.type === 'StateEntered').map((e) => e.stateName);
        expect(new Set(names).size).toBe(names.length);
      }
      expect(results[0].output).toMatchObject({ tenant: 'acme', api: { ok: true } });
    });

    test('RESERVE: 30 % throttling errors — every downstream call holds a token, every item succeeds', async () => {
      const { results, calls, grants } = await runItems(build({ retry: RetryPolicy.throttling({ maxAttempts: 10 }) }), items(40), { failRate: 0.3 });
      expect(results.filter((r) => r.status !== 'SUCCEEDED').map((r) => [r.error, r.cause])).toEqual([]);
      expect(calls.acme.length).toBeGreaterThan(40);
      expectBound(calls.acme, grants);
      // the task saw its input plus the attempt number on retries only
      expect(results.every((r) => r.output.api.ok)).toBe(true);
    });

    test('TRY: 40 items — the bound holds at the downstream, every item succeeds', async () => {
      const { results, calls, grants } = await runItems(build({ mode: AcquireMode.TRY, resultPath: '$.acquired' }), items(40), {});
      expect(results.filter((r) => r.status !== 'SUCCEEDED').map((r) => [r.error, r.cause])).toEqual([]);
      expectBound(calls.acme, grants);
      expect(calls.acme).toHaveLength(40);
    });

    test('TRY: 30 % throttling errors — the bound holds at the downstream counting every call, every item succeeds', async () => {
      const built = build({ mode: AcquireMode.TRY, retry: RetryPolicy.throttling({ maxAttempts: 10 }), resultPath: '$.acquired' });
      const { results, calls, grants } = await runItems(built, items(30), { failRate: 0.3 });
      expect(results.filter((r) => r.status !== 'SUCCEEDED').map((r) => [r.error, r.cause])).toEqual([]);
      expectBound(calls.acme, grants);
    });

    test('two tenants at once: each within its own bound', async () => {
      const { results, calls, grants } = await runItems(build(), items(40, ['a', 'b']));
      expect(results.every((r) => r.status === 'SUCCEEDED')).toBe(true);
      expectBound(calls.a, grantsOf(grants, 'a'));
      expectBound(calls.b, grantsOf(grants, 'b'));
      expect(calls.a).toHaveLength(20);
      expect(calls.b).toHaveLength(20);
    });

    test('exhausted retries end in RetriesExhausted, routed by addCatch', async () => {
      const { results } = await runItems(build({ retry: RetryPolicy.throttling({ maxAttempts: 2 }), catchAll: true }), items(1), { failAll: true });
      expect([results[0].status, results[0].output]).toEqual(['SUCCEEDED', expect.anything()]);
      expect(results[0].output.error.Error).toBe(ThrottleErrors.RETRIES_EXHAUSTED);
      expect(JSON.parse(JSON.parse(results[0].output.error.Cause).errorMessage)).toMatchObject({ attempts: 2, error: 'Sts.ThrottlingException' });
    });
  });
});
