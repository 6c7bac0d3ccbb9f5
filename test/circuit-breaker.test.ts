import * as fs from 'fs';
import * as path from 'path';
import { App, Duration, Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { aslOf } from './support/asl';
import { actionsOf, logicalIdOf, statementsOfRole } from './support/iam';
import { nagFindings } from './support/nag';
import { expectValidationError } from './support/validation';
import { LocalRunner, statesEntered } from '../local/runner';
import { sleep } from '../local/timing';
import { CircuitBreaker, Limit, MapConcurrency, RateLimitedTask, RateLimiter, RetryPolicy, ThrottleDashboard, ThrottledMap, ThrottleErrors } from '../src';

// A circuit breaker shared by every execution: judged by the calls that reach the downstream, in the local runner
// with the real breaker function and dynalite.

function build(options: { probes?: number } = {}) {
  const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const breaker = new CircuitBreaker(stack, 'Partner', {
    breakerName: 'partner',
    failureThreshold: 3,
    window: Duration.seconds(30),
    cooldown: Duration.seconds(6),
    halfOpenProbes: options.probes ?? 1,
    failureErrors: ['DownstreamUnavailable'],
  });
  const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:partner');
  const task = tasks.LambdaInvoke.jsonPath(stack, 'Call Partner', { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' });
  const protectedCall = breaker.protect(stack, 'Guard', { task, key: '$.partner' });
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(protectedCall) });
  return { stack, breaker, machine };
}

describe('CircuitBreaker', () => {
  test('renders check (GetItem on its own items) → closed? → the task; IAM on exact ARNs; the function only off the closed path', () => {
    const { stack } = build();
    const template = Template.fromStack(stack);
    const asl = aslOf(template);
    expect(asl.StartAt).toBe('Guard Check');
    expect(asl.States['Guard Check']).toMatchObject({
      Resource: 'arn:aws:states:::dynamodb:getItem',
      Parameters: { Key: { pk: { 'S.$': "States.Format('partner#breaker#{}', $.partner)" } }, ConsistentRead: true },
      ResultSelector: { 'read.$': '$', 'now.$': '$$.State.EnteredTime' },
      ResultPath: '$.circuit',
    });
    expect(asl.States['Guard Closed'].Choices[0].Next).toBe('Call Partner');
    // every error passes the recorder: failure errors are counted, others raised again (a probe's after giving its place back)
    expect(asl.States['Call Partner'].Catch).toEqual([{ ErrorEquals: ['States.ALL'], Next: 'Guard Counts', ResultPath: '$.circuit.error' }]);
    expect(asl.States['Guard Counts']).toMatchObject({
      Choices: [{ Variable: '$.circuit.error.Error', StringEquals: 'DownstreamUnavailable', Next: 'Guard Failed Probe' }, { Next: 'Guard Release Probe' }],
      Default: 'Guard Has Cause',
    });
    expect(asl.States['Guard Circuit Open']).toMatchObject({ Type: 'Fail', Error: 'CircuitOpen', CausePath: '$.circuit.open.cause' });
    const statements = Object.values(template.findResources('AWS::IAM::Policy')).flatMap((p: any) => p.Properties.PolicyDocument.Statement);
    const getItem = statements.filter((st: any) => JSON.stringify(st.Action) === '"dynamodb:GetItem"');
    expect(getItem).toHaveLength(1);
    expect(getItem[0].Condition).toEqual({ 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['partner#breaker#*'] } });
    expect(template.toJSON()).toMatchSnapshot();
    // the library's constructs (the test's own task and its LambdaInvoke grant are not the library's)
    expect(nagFindings(stack).filter((f) => f.includes('Stack/Partner') || f.includes('Stack/Guard'))).toEqual([]);
  });

  test('dashboard row: opened/closed, probes, the function; an alarm while open over its cooldown, one on the function\'s errors', () => {
    const { stack, breaker } = build();
    const dashboard = new ThrottleDashboard(stack, 'Throttles').addCircuitBreaker(breaker);
    const template = Template.fromStack(stack);
    const body = JSON.stringify(template.findResources('AWS::CloudWatch::Dashboard'));
    for (const m of ['CircuitOpened', 'CircuitClosed', 'Probes', 'ShortCircuited']) expect(body).toContain(m);
    expect(dashboard.alarms).toHaveLength(2);
    const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm')).map((a: any) => a.Properties);
    expect(alarms.find((a) => a.MetricName === 'CircuitOpened')).toMatchObject({
      Namespace: 'CdkSfnThrottle',
      Period: 60,
      Threshold: 1,
      EvaluationPeriods: 1,
      Dimensions: [{ Name: 'BreakerName', Value: 'partner' }],
      TreatMissingData: 'notBreaching',
    });
  });

  test('a warning when the task\'s own Catch takes the failure errors first (they would never open it)', () => {
    const stack = new Stack();
    const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
    const task = tasks.LambdaInvoke.jsonPath(stack, 'T', { lambdaFunction: fn, resultPath: '$.r' });
    task.addCatch(new sfn.Pass(stack, 'Swallow'), { errors: ['States.ALL'] });
    new CircuitBreaker(stack, 'B', { failureErrors: ['Down'] }).protect(stack, 'G', { task });
    const warnings = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('.*breakerNeverCounts.*|.*never counted.*'));
    expect(warnings.map((w) => String(w.entry.data))).toEqual([expect.stringContaining('the task\'s own Catch takes ["Down"] before the breaker\'s')]);
  });

  test('the function is granted exactly the DynamoDB calls its handler makes, on its own items', () => {
    const { stack } = build();
    const template = Template.fromStack(stack);
    const dir = path.join(__dirname, '..', 'lambda', 'circuit-breaker');
    const imports = fs.readdirSync(dir).filter((f) => f.endsWith('.ts'))
      .flatMap((f) => [...fs.readFileSync(path.join(dir, f), 'utf8').matchAll(/import \{([^}]*)\} from '@aws-sdk\/client-dynamodb'/g)].map((m) => m[1]));
    const used = new Set(imports.flatMap((list) => [...list.matchAll(/(\w+)Command\b/g)].map((m) => `dynamodb:${m[1]}`)));
    expect([...used].sort()).toEqual(['dynamodb:GetItem', 'dynamodb:PutItem']);
    const fnRole = logicalIdOf(template, 'AWS::IAM::Role', (p) => JSON.stringify(p).includes('Circuit breaker function'));
    const statements = statementsOfRole(template, fnRole);
    expect(actionsOf(statements.filter((st) => JSON.stringify(st.Action).includes('dynamodb:')))).toEqual([...used].sort());
    expect((statements.find((st) => [st.Action].flat().includes('dynamodb:PutItem')) as any).Condition)
      .toEqual({ 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['partner#*'] } });
  });

  test.each<[string, () => unknown, RegExp]>([
    ['a wildcard failure error', () => new CircuitBreaker(new Stack(), 'B', { failureErrors: ['States.ALL'] }), /failureErrors must be exact error names .*\["States.ALL"\]/],
    ['a throttling error counted as a failure', () => new CircuitBreaker(new Stack(), 'B', { failureErrors: ['Lambda.TooManyRequestsException'] }),
      /failureErrors must not count throttling errors/],
    ['an HTTP throttling status counted as a failure', () => new CircuitBreaker(new Stack(), 'B', { failureErrors: ['States.Http.StatusCode.503'] }),
      /failureErrors must not count throttling errors .*States.Http.StatusCode.503/],
    ['both rules', () => new CircuitBreaker(new Stack(), 'B', { failureThreshold: 3, failureRateThreshold: 50 }),
      /failureThreshold and failureRateThreshold are exclusive .*got 3 and 50/],
    ['a rate above 100 %', () => new CircuitBreaker(new Stack(), 'B', { failureRateThreshold: 150 }), /failureRateThreshold \(%\) must be .*100.*got 150/],
    ['minimumCalls without the rate rule', () => new CircuitBreaker(new Stack(), 'B', { minimumCalls: 5 }), /minimumCalls needs failureRateThreshold/],
    ...['DynamoDB.ProvisionedThroughputExceededException', 'S3.SlowDownException', 'Sqs.ServiceUnavailableException'].map((e): [string, () => unknown, RegExp] =>
      [`${e} counted as a failure`, () => new CircuitBreaker(new Stack(), 'B', { failureErrors: [e] }), /failureErrors must not count throttling errors/]),
    ...['CircuitOpen', 'RetriesExhausted', 'LimiterUnavailable'].map((e): [string, () => unknown, RegExp] =>
      [`the library's ${e} counted as a failure`, () => new CircuitBreaker(new Stack(), 'B', { failureErrors: [e] }), /failureErrors must not count the library's own errors/]),
    ['a resultPath on the library\'s own fields', () => {
      const stack = new Stack();
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      const task = tasks.LambdaInvoke.jsonPath(stack, 'T', { lambdaFunction: fn, resultPath: '$.r' });
      return new CircuitBreaker(stack, 'B').protect(stack, 'G', { task, resultPath: '$.cdkSfnThrottleError' });
    }, /resultPath must not be one of the library's own fields .*got \$.cdkSfnThrottleError/],
    ['halfOpenProbes out of range', () => new CircuitBreaker(new Stack(), 'B', { halfOpenProbes: 11 }), /halfOpenProbes must be .*10.*got 11/],
    ['a task that does not keep its input', () => {
      const stack = new Stack();
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      return new CircuitBreaker(stack, 'B').protect(stack, 'G', { task: tasks.LambdaInvoke.jsonPath(stack, 'T', { lambdaFunction: fn }) });
    }, /task must keep its input/],
    ['a JSONPath task in a JSONata machine', () => {
      const stack = new Stack();
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      const g = new CircuitBreaker(stack, 'B').protect(stack, 'G', { task: tasks.LambdaInvoke.jsonPath(stack, 'T', { lambdaFunction: fn, resultPath: '$.r' }) });
      new sfn.StateMachine(stack, 'M', { queryLanguage: sfn.QueryLanguage.JSONATA, definitionBody: sfn.DefinitionBody.fromChainable(g) });
      return Template.fromStack(stack);
    }, /in a JSONata state machine the protected task Default\/T must keep its input/],
    ['a task with an outputPath (the probe flag would be dropped)', () => {
      const stack = new Stack();
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      const task = tasks.LambdaInvoke.jsonPath(stack, 'T', { lambdaFunction: fn, resultPath: '$.r', outputPath: '$.r' });
      return new CircuitBreaker(stack, 'B').protect(stack, 'G', { task });
    }, /task must not have an outputPath \(got "\$.r" on Default\/T\)/],
    ['a task result over the breaker\'s data', () => {
      const stack = new Stack();
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      const task = tasks.LambdaInvoke.jsonPath(stack, 'T', { lambdaFunction: fn, resultPath: '$.circuit.result' });
      return new CircuitBreaker(stack, 'B').protect(stack, 'G', { task });
    }, /task's resultPath \$.circuit.result overlaps the breaker's resultPath \$.circuit/],
    ['a key path with an expression', () => {
      const stack = new Stack();
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      const task = tasks.LambdaInvoke.jsonPath(stack, 'T', { lambdaFunction: fn, resultPath: '$.r' });
      return new CircuitBreaker(stack, 'B').protect(stack, 'G', { task, key: '$.partners[0]' });
    }, /key must be a simple JSONPath like \$.partner \(fields only\) or a literal, got "\$.partners\[0\]"/],
    ['a literal key too long', () => {
      const stack = new Stack();
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      const task = tasks.LambdaInvoke.jsonPath(stack, 'T', { lambdaFunction: fn, resultPath: '$.r' });
      return new CircuitBreaker(stack, 'B').protect(stack, 'G', { task, key: 'k'.repeat(513) });
    }, /key must be a JSONPath or a literal of 1 to 512 characters, got "k+" \(513\)/],
    ['a key under the breaker\'s own data (overwritten by the check)', () => {
      const stack = new Stack();
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      const task = tasks.LambdaInvoke.jsonPath(stack, 'T', { lambdaFunction: fn, resultPath: '$.r' });
      return new CircuitBreaker(stack, 'B').protect(stack, 'G', { task, key: '$.circuit.id' });
    }, /key \$.circuit.id is under \$.circuit, which is written during the call/],
    ['a key under the task\'s result', () => {
      const stack = new Stack();
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      const task = tasks.LambdaInvoke.jsonPath(stack, 'T', { lambdaFunction: fn, resultPath: '$.r' });
      return new CircuitBreaker(stack, 'B').protect(stack, 'G', { task, key: '$.r.partner' });
    }, /key \$.r.partner is under \$.r, which is written during the call/],
    ['a literal key with a backslash', () => {
      const stack = new Stack();
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      const task = tasks.LambdaInvoke.jsonPath(stack, 'T', { lambdaFunction: fn, resultPath: '$.r' });
      return new CircuitBreaker(stack, 'B').protect(stack, 'G', { task, key: 'eu\\west' });
    }, /key must not contain a backslash, got "eu\\\\west"/],
  ])('fails at synth: %s', (_n, make, message) => expectValidationError(make, message));

  test('a warning when the task\'s own Retry on failure errors outlasts the cooldown (a probe taken for lost)', () => {
    const stack = new Stack();
    const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
    // LambdaInvoke's default Retry: Lambda.ServiceException & co., 2 s × 2^n, 6 retries: 126 s in all
    const task = tasks.LambdaInvoke.jsonPath(stack, 'T', { lambdaFunction: fn, resultPath: '$.r' });
    new CircuitBreaker(stack, 'B', { cooldown: Duration.seconds(30) }).protect(stack, 'G', { task });
    const warnings = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('.*probeOutlivesCooldown.*'));
    expect(warnings.map((w) => String(w.entry.data))).toEqual([expect.stringContaining('can wait 126 s in all, longer than the breaker\'s cooldown (30 s)')]);
    // no warning without the task's Retry
    const quiet = new Stack();
    const fn2 = lambda.Function.fromFunctionArn(quiet, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
    const task2 = tasks.LambdaInvoke.jsonPath(quiet, 'T', { lambdaFunction: fn2, resultPath: '$.r', retryOnServiceExceptions: false });
    new CircuitBreaker(quiet, 'B', { cooldown: Duration.seconds(30) }).protect(quiet, 'G', { task: task2 });
    expect(Annotations.fromStack(quiet).findWarning('*', Match.stringLikeRegexp('.*probeOutlivesCooldown.*'))).toHaveLength(0);
  });

  test('warnings: failure errors this task can never raise (it never trips); a cooldown shorter than the retry policy\'s first backoff', () => {
    const stack = new Stack();
    const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
    const breaker = new CircuitBreaker(stack, 'B', { cooldown: Duration.seconds(5) });
    // an SDK call without a timeout: none of the default errors (timeouts, Lambda's, HttpInvoke's) can come from it
    const sdk = new tasks.CallAwsService(stack, 'Sdk', { service: 'sqs', action: 'sendMessage', iamResources: ['*'], resultPath: '$.r' });
    breaker.protect(stack, 'G', { task: sdk });
    const never = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('.*breakerNeverTrips.*'));
    expect(never.map((w) => String(w.entry.data))).toEqual([expect.stringContaining('can come from Default/Sdk (a sdk task without a timeout): it can never trip')]);
    // a Lambda task: its service errors count
    const lambdaTask = tasks.LambdaInvoke.jsonPath(stack, 'L', { lambdaFunction: fn, resultPath: '$.r', retryOnServiceExceptions: false });
    const limiter = new RateLimiter(stack, 'Api', { ratePerSecond: 5 });
    new RateLimitedTask(stack, 'Limited', {
      limiter, task: lambdaTask, retry: RetryPolicy.throttling({ interval: Duration.seconds(10) }), circuitBreaker: { breaker },
    });
    const all = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('.*breakerNeverTrips.*|.*breakerCooldownShort.*')).map((w) => String(w.entry.data));
    expect(all).toHaveLength(2);
    expect(all[1]).toContain('the breaker\'s cooldown (5 s) is shorter than the retry policy\'s first backoff (10 s)');
  });

  test('a failure without a Cause (a timeout) is raised again without one; the recording\'s own failure never replaces the task\'s error', () => {
    const { stack } = build();
    const asl = aslOf(Template.fromStack(stack));
    expect(asl.States['Guard Has Cause']).toMatchObject({
      Type: 'Choice',
      Choices: [{ Variable: '$.circuit.error.Cause', IsPresent: true, Next: 'Guard Failed' }],
      Default: 'Guard Failed Without Cause',
    });
    expect(asl.States['Guard Failed Without Cause']).toEqual({ Type: 'Fail', ErrorPath: '$.circuit.error.Error' });
    expect(asl.States['Guard Record Failure'].Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.circuit.recordError', Next: 'Guard Has Cause' }]);
    // a probe's verdict replaces the election, answer or error alike: the execution is no longer a probe
    for (const name of ['Guard Probe Failed', 'Guard Release Probe']) {
      expect(asl.States[name]).toMatchObject({ ResultPath: '$.circuit.elected', Catch: [{ ErrorEquals: ['States.ALL'], ResultPath: '$.circuit.elected', Next: 'Guard Has Cause' }] });
    }
    expect(asl.States['Guard Probe Succeeded'].Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.circuit.elected', Next: 'Guard Done' }]);
    // every key sent to the function is a string
    expect(asl.States['Guard Elect'].Parameters['key.$']).toBe("States.Format('{}', $.partner)");
  });

  test('the rate rule: a healthy downstream costs no write; within a failure window successes are recorded; 2 of 4 failed opens it', async () => {
    const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
    const breaker = new CircuitBreaker(stack, 'Partner', {
      breakerName: 'partner', failureRateThreshold: 50, minimumCalls: 4, window: Duration.seconds(60), cooldown: Duration.seconds(60), failureErrors: ['DownstreamUnavailable'],
    });
    const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:partner');
    const task = tasks.LambdaInvoke.jsonPath(stack, 'Call Partner', { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' });
    const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(breaker.protect(stack, 'Guard', { task })) });
    const env = Template.fromStack(stack).findResources('AWS::Lambda::Function');
    expect(JSON.stringify(env)).toContain('"FAILURE_RATE":"0.5","MINIMUM_CALLS":"4"');
    let calls = 0;
    const outcomes = [true, true, false, true, true, false];
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: { 'Call Partner': async () => { const ok = outcomes[calls++]; if (!ok) throw Object.assign(new Error('down'), { name: 'DownstreamUnavailable' }); return { ok }; } },
    });
    const quiet = process.stdout.write;
    process.stdout.write = ((chunk: any, ...rest: any[]) => (String(chunk).includes('"_aws"') ? true : (quiet as any).call(process.stdout, chunk, ...rest))) as any;
    try {
      const results: Awaited<ReturnType<typeof runner.run>>[] = [];
      for (let i = 0; i < 7; i++) results.push(await runner.run({}));
      // healthy: no function call at all
      expect(statesEntered(results[0], 'Guard Record Success') + statesEntered(results[1], 'Guard Record Success')).toBe(0);
      // the window starts at the 3rd call's failure; the 4th and 5th succeed inside it (recorded); the 6th fails: 2 of 4
      expect([3, 4].map((i) => statesEntered(results[i], 'Guard Record Success'))).toEqual([1, 1]);
      expect(results.map((r) => r.error ?? r.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'DownstreamUnavailable', 'SUCCEEDED', 'SUCCEEDED', 'DownstreamUnavailable', 'CircuitOpen']);
      expect(calls).toBe(6);
    } finally {
      process.stdout.write = quiet;
      await runner.stop();
    }
  }, 120_000);

  test('a probe that fails with an error the breaker does not count gives its place back: the next execution probes at once', async () => {
    const { stack, machine } = build();
    const outcomes = ['down', 'down', 'down', 'bad', 'ok'];
    let calls = 0;
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: {
        'Call Partner': async () => {
          const o = outcomes[calls++];
          if (o === 'down') throw Object.assign(new Error('partner is down'), { name: 'DownstreamUnavailable' });
          if (o === 'bad') throw Object.assign(new Error('no such order'), { name: 'BadRequest' });
          return { ok: true };
        },
      },
    });
    const quiet = process.stdout.write;
    process.stdout.write = ((chunk: any, ...rest: any[]) => (String(chunk).includes('"_aws"') ? true : (quiet as any).call(process.stdout, chunk, ...rest))) as any;
    try {
      for (let i = 0; i < 3; i++) await runner.run({ partner: 'acme' }); // opens it (threshold 3)
      await sleep(7_100);
      const bad = await runner.run({ partner: 'acme' });
      expect(bad.error).toBe('BadRequest');
      expect(statesEntered(bad, 'Guard Release Probe')).toBe(1);
      const next = await runner.run({ partner: 'acme' });
      expect(next.status).toBe('SUCCEEDED');
      expect(statesEntered(next, 'Guard Probe Succeeded')).toBe(1);
      expect(calls).toBe(5);
    } finally {
      process.stdout.write = quiet;
      await runner.stop();
    }
  }, 120_000);

  test('the breaker function failing after the task failed: the execution fails with the task\'s error, not the function\'s', async () => {
    const { stack, machine } = build();
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: {
        'Call Partner': async () => { throw Object.assign(new Error('partner is down'), { name: 'DownstreamUnavailable' }); },
        'Guard Record Failure': async () => { throw Object.assign(new Error('table gone'), { name: 'ResourceNotFoundException' }); },
      },
    });
    try {
      const r = await runner.run({ partner: 'acme' });
      expect(r.error).toBe('DownstreamUnavailable');
      expect(String(r.cause)).toContain('partner is down');
      expect(statesEntered(r, 'Guard Record Failure')).toBe(1);
    } finally {
      await runner.stop();
    }
  }, 60_000);

  test('keys as the state machine gets them: a number at the path, a literal with quotes and braces', async () => {
    const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
    const breaker = new CircuitBreaker(stack, 'Partner', {
      breakerName: 'partner', failureThreshold: 2, cooldown: Duration.seconds(60), failureErrors: ['DownstreamUnavailable'],
    });
    const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:partner');
    const call = (name: string) => tasks.LambdaInvoke.jsonPath(stack, name, { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' });
    const byNumber = breaker.protect(stack, 'ByNumber', { task: call('Call By Number'), key: '$.partnerId' });
    const byLiteral = breaker.protect(stack, 'ByLiteral', { task: call('Call By Literal'), key: "o'brien {eu}" });
    const choice = new sfn.Choice(stack, 'Which').when(sfn.Condition.isPresent('$.partnerId'), byNumber).otherwise(byLiteral);
    const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(choice) });
    let calls = 0;
    const fail = async () => { calls++; throw Object.assign(new Error('down'), { name: 'DownstreamUnavailable' }); };
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: {
        'Call By Number': fail,
        'Call By Literal': fail,
      },
    });
    const quiet = process.stdout.write;
    process.stdout.write = ((chunk: any, ...rest: any[]) => (String(chunk).includes('"_aws"') ? true : (quiet as any).call(process.stdout, chunk, ...rest))) as any;
    try {
      for (let i = 0; i < 3; i++) await runner.run({ partnerId: 42 });
      expect(calls).toBe(2); // a number key is counted: the third is short-circuited
      for (let i = 0; i < 3; i++) {
        const r = await runner.run({});
        if (i === 2) {
          expect(r.error).toBe('CircuitOpen');
          expect(String(r.cause)).toContain("circuit breaker partner is open for key o'brien {eu} (opened 20");
        }
      }
      expect(calls).toBe(4);
    } finally {
      process.stdout.write = quiet;
      await runner.stop();
    }
  }, 120_000);

  test('a failing downstream: threshold calls reach it, then none until the cooldown; one probe; healed, the probe closes it', async () => {
    const { stack, machine } = build();
    let down = true;
    let calls = 0;
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: {
        'Call Partner': async () => {
          calls++;
          if (down) throw Object.assign(new Error('partner is down'), { name: 'DownstreamUnavailable' });
          return { ok: true };
        },
      },
    });
    const quiet = process.stdout.write;
    process.stdout.write = ((chunk: any, ...rest: any[]) => (String(chunk).includes('"_aws"') ? true : (quiet as any).call(process.stdout, chunk, ...rest))) as any;
    try {
      const statuses: string[] = [];
      for (let i = 0; i < 6; i++) {
        const r = await runner.run({ partner: 'acme' });
        statuses.push(`${r.status}:${(r as any).error ?? ''}`);
      }
      // 3 failures open it; the next 3 are short-circuited without a call
      expect(calls).toBe(3);
      expect(statuses.slice(0, 3).every((s) => s.startsWith('FAILED:DownstreamUnavailable'))).toBe(true);
      expect(statuses.slice(3).every((s) => s.startsWith('FAILED:CircuitOpen'))).toBe(true);
      // another key is not affected
      const other = await runner.run({ partner: 'globex' });
      expect(other.status).toBe('FAILED');
      expect(calls).toBe(4);
      // after the cooldown, 50 executions race while it is still down: one probe reaches it, fails, re-opens it
      // (a cooldown of 6 s: the race must end within one, or a later execution rightly probes again)
      await sleep(7_100);
      const raced = await Promise.all(Array.from({ length: 50 }, () => runner.run({ partner: 'acme' })));
      expect(calls).toBe(5);
      expect(raced.filter((r) => (r as any).error === 'CircuitOpen')).toHaveLength(49);
      // healed: after the next cooldown the probe succeeds and closes it; calls flow again
      down = false;
      await sleep(7_100);
      expect((await runner.run({ partner: 'acme' })).status).toBe('SUCCEEDED');
      expect(calls).toBe(6);
      const after = await Promise.all(Array.from({ length: 5 }, () => runner.run({ partner: 'acme' })));
      expect(after.every((r) => r.status === 'SUCCEEDED')).toBe(true);
      expect(calls).toBe(11);
    } finally {
      process.stdout.write = quiet;
      await runner.stop();
    }
  }, 120_000);

  test('around a RateLimitedTask (in a Parallel): while open, no token is acquired', async () => {
    const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
    const breaker = new CircuitBreaker(stack, 'Partner', { breakerName: 'partner', failureThreshold: 1, cooldown: Duration.seconds(60), failureErrors: ['DownstreamUnavailable'] });
    const limiter = new RateLimiter(stack, 'Api', { limiterName: 'api', ratePerSecond: 5 });
    const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:partner');
    const limited = new RateLimitedTask(stack, 'Limited', {
      limiter,
      task: tasks.LambdaInvoke.jsonPath(stack, 'Call Partner', { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' }),
      retry: RetryPolicy.none(),
    });
    const parallel = new sfn.Parallel(stack, 'Limited Call', { resultPath: '$.result' }).branch(limited);
    const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(breaker.protect(stack, 'Guard', { task: parallel })) });
    let calls = 0;
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: { 'Call Partner': async () => { calls++; throw Object.assign(new Error('down'), { name: 'DownstreamUnavailable' }); } },
    });
    const quiet = process.stdout.write;
    process.stdout.write = ((chunk: any, ...rest: any[]) => (String(chunk).includes('"_aws"') ? true : (quiet as any).call(process.stdout, chunk, ...rest))) as any;
    try {
      const first = await runner.run({});
      expect((first as any).error).toBe('DownstreamUnavailable');
      expect(statesEntered(first, 'Limited Acquire')).toBe(1);
      for (let i = 0; i < 3; i++) {
        const r = await runner.run({});
        expect((r as any).error).toBe('CircuitOpen');
        expect(statesEntered(r, 'Limited Acquire')).toBe(0);
      }
      expect(calls).toBe(1);
    } finally {
      process.stdout.write = quiet;
      await runner.stop();
    }
  }, 120_000);

  describe('RateLimitedTask circuitBreaker', () => {
    function limitedBuild(retry: RetryPolicy, cooldownS: number, handled = false) {
      const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
      const breaker = new CircuitBreaker(stack, 'Partner', {
        breakerName: 'partner', failureThreshold: 1, cooldown: Duration.seconds(cooldownS), failureErrors: ['DownstreamUnavailable'],
      });
      const limiter = new RateLimiter(stack, 'Api', { limiterName: 'api', ratePerSecond: 5 });
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:partner');
      const limited = new RateLimitedTask(stack, 'Limited', {
        limiter,
        task: tasks.LambdaInvoke.jsonPath(stack, 'Call Partner', { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' }),
        retry,
        circuitBreaker: { breaker, key: '$.partner' },
      });
      if (handled) limited.addCatch(new sfn.Pass(stack, 'Handled'));
      const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
      return { stack, machine, limited };
    }

    test('renders check → acquire; the task\'s failures pass the recorder on their way to the backoff step; a retry checks again', () => {
      const { stack, limited } = limitedBuild(RetryPolicy.throttling({ errors: ['DownstreamUnavailable'] }), 30);
      const asl = aslOf(Template.fromStack(stack));
      expect(asl.StartAt).toBe('Limited Check');
      expect(asl.States['Limited Closed'].Choices[0].Next).toBe('Limited Acquire');
      expect(asl.States['Call Partner'].Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.cdkSfnThrottleError', Next: 'Limited Counts' }]);
      expect(asl.States['Limited Counts']).toMatchObject({
        Choices: [{ Variable: '$.cdkSfnThrottleError.Error', StringEquals: 'DownstreamUnavailable', Next: 'Limited Failed Probe' }, { Next: 'Limited Release Probe' }],
        Default: 'Limited Backoff',
      });
      expect(asl.States['Limited Release Probe'].Next).toBe('Limited Backoff');
      expect(asl.States['Limited Record Failure'].Next).toBe('Limited Backoff');
      expect(asl.States['Limited Backoff Wait'].Next).toBe('Limited Check');
      expect(asl.States['Limited Circuit Open']).toMatchObject({ Type: 'Fail', Error: 'CircuitOpen' });
      expect(limited.endStates.map((st) => (st as unknown as sfn.State).stateId)).toEqual(['Limited Done']);
      expect(Template.fromStack(stack).toJSON()).toMatchSnapshot();
    });

    test('addCatch reaches the check and the election (a table that cannot be read); a ThrottledMap that retries CircuitOpen waits', () => {
      const { stack } = limitedBuild(RetryPolicy.none(), 30, true);
      const asl = aslOf(Template.fromStack(stack));
      for (const name of ['Limited Check', 'Limited Elect', 'Limited Acquire', 'Limited Backoff']) {
        expect((asl.States[name].Catch ?? []).map((c: any) => c.Next)).toContain('Handled');
      }
      const mapStack = new Stack();
      const fn = lambda.Function.fromFunctionArn(mapStack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      const map = new ThrottledMap(mapStack, 'Orders', {
        limiter: new RateLimiter(mapStack, 'Api', { ratePerSecond: 5 }),
        catchItemFailures: true,
        retry: RetryPolicy.throttling({ errors: ['Lambda.TooManyRequestsException', ThrottleErrors.CIRCUIT_OPEN] }),
        circuitBreaker: { breaker: new CircuitBreaker(mapStack, 'B') },
        itemProcessor: tasks.LambdaInvoke.jsonPath(mapStack, 'Call', { lambdaFunction: fn, retryOnServiceExceptions: false, resultPath: '$.r' }),
      });
      new sfn.StateMachine(mapStack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
      const states = aslOf(Template.fromStack(mapStack)).States.Orders.ItemProcessor.States;
      expect(states['Orders Item Open'].Next).toBe('Orders Item Wait While Open');
      expect(states['Orders Item Wait While Open']).toMatchObject({ TimestampPath: '$.circuit.open.retryAfter', Next: 'Orders Item Check' });
    });

    test('with settle: a probe\'s success is recorded before the settle; addCatch reaches the settle', () => {
      const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
      const breaker = new CircuitBreaker(stack, 'Partner', { breakerName: 'partner', failureErrors: ['DownstreamUnavailable'] });
      const limiter = new RateLimiter(stack, 'Api', { limiterName: 'api', limits: [Limit.perMinute(60), Limit.perMinute(6000, { dimension: 'tokens', burst: 1000 })] });
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:partner');
      const limited = new RateLimitedTask(stack, 'Limited', {
        limiter,
        task: tasks.LambdaInvoke.jsonPath(stack, 'Call Partner', { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' }),
        acquire: { consume: { requests: 1, tokens: 100 } },
        resultPath: '$.acquired',
        settle: { consume: { tokens: sfn.JsonPath.numberAt('$.result.used') } },
        circuitBreaker: { breaker },
      });
      limited.addCatch(new sfn.Pass(stack, 'Handled'));
      new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
      const asl = aslOf(Template.fromStack(stack));
      expect(asl.States['Call Partner'].Next).toBe('Limited Was Probe');
      expect(asl.States['Limited Was Probe'].Default).toBe('Limited Settle');
      expect(asl.States['Limited Probe Succeeded'].Next).toBe('Limited Settle');
      expect(asl.States['Limited Settle'].Catch.map((c: any) => c.Next)).toContain('Handled');
      expect(limited.endStates.map((st) => (st as unknown as sfn.State).stateId)).toEqual(['Limited Settle']);
    });

    test('a probe that meets a throttling error gives its place back and is elected again on its retry; it closes the breaker', async () => {
      const { stack, machine } = limitedBuild(RetryPolicy.throttling({ errors: ['Lambda.TooManyRequestsException'], maxAttempts: 3 }), 2);
      let calls = 0;
      const script = ['down', 'throttled', 'ok', 'ok'];
      const runner = await LocalRunner.start(stack, machine, {
        taskHandlers: {
          'Call Partner': async () => {
            const next = script[calls++];
            if (next === 'down') throw Object.assign(new Error('down'), { name: 'DownstreamUnavailable' });
            if (next === 'throttled') throw Object.assign(new Error('slow down'), { name: 'Lambda.TooManyRequestsException' });
            return { ok: true };
          },
        },
      });
      const quiet = process.stdout.write;
      process.stdout.write = ((chunk: any, ...rest: any[]) => (String(chunk).includes('"_aws"') ? true : (quiet as any).call(process.stdout, chunk, ...rest))) as any;
      try {
        expect((await runner.run({ partner: 'acme' })).error).toBe('DownstreamUnavailable'); // opens it
        await sleep(3_100); // the cooldown (2 s), its retry-after rounded up to a whole second
        const probe = await runner.run({ partner: 'acme' });
        expect(probe.status).toBe('SUCCEEDED');
        expect(calls).toBe(3);
        expect(['Limited Release Probe', 'Limited Elect', 'Limited Probe Succeeded'].map((n) => statesEntered(probe, n))).toEqual([1, 2, 1]);
        // the breaker's retry-after, as the state machine read it, is a whole second
        expect((await runner.run({ partner: 'acme' })).status).toBe('SUCCEEDED');
        expect(calls).toBe(4);
      } finally {
        process.stdout.write = quiet;
        await runner.stop();
      }
    }, 120_000);

    test('while open no token is taken (CircuitOpen); with CircuitOpen in the retry policy it waits, probes, and succeeds once healed', async () => {
      const failing = limitedBuild(RetryPolicy.none(), 60);
      let calls = 0;
      const down = async () => { calls++; throw Object.assign(new Error('down'), { name: 'DownstreamUnavailable' }); };
      let runner = await LocalRunner.start(failing.stack, failing.machine, { taskHandlers: { 'Call Partner': down } });
      const quiet = process.stdout.write;
      process.stdout.write = ((chunk: any, ...rest: any[]) => (String(chunk).includes('"_aws"') ? true : (quiet as any).call(process.stdout, chunk, ...rest))) as any;
      try {
        const first = await runner.run({ partner: 'acme' });
        expect(first.error).toBe('DownstreamUnavailable');
        expect(statesEntered(first, 'Limited Record Failure')).toBe(1);
        for (let i = 0; i < 3; i++) {
          const r = await runner.run({ partner: 'acme' });
          expect(r.error).toBe('CircuitOpen');
          expect(statesEntered(r, 'Limited Acquire')).toBe(0);
        }
        expect(calls).toBe(1);
        await runner.stop();

        // CircuitOpen retried: the first call fails and opens it (cooldown 2 s); the retry waits until the breaker's
        // retry-after, is elected the probe, the downstream is back, the probe closes it
        const waiting = limitedBuild(RetryPolicy.throttling({ errors: ['DownstreamUnavailable', ThrottleErrors.CIRCUIT_OPEN], maxAttempts: 3 }), 2);
        calls = 0;
        runner = await LocalRunner.start(waiting.stack, waiting.machine, {
          taskHandlers: { 'Call Partner': async () => { calls++; if (calls === 1) throw Object.assign(new Error('down'), { name: 'DownstreamUnavailable' }); return { ok: true }; } },
        });
        const r = await runner.run({ partner: 'globex' });
        expect(r.status).toBe('SUCCEEDED');
        expect(calls).toBe(2);
        expect(statesEntered(r, 'Limited Wait While Open')).toBeGreaterThanOrEqual(1);
        expect(statesEntered(r, 'Limited Elect')).toBe(1);
        expect(statesEntered(r, 'Limited Probe Succeeded')).toBe(1);
        expect(statesEntered(r, 'Limited Acquire')).toBe(2);
        // closed again: the next call goes straight through, no function call
        const next = await runner.run({ partner: 'globex' });
        expect(next.status).toBe('SUCCEEDED');
        expect(statesEntered(next, 'Limited Elect') + statesEntered(next, 'Limited Probe Succeeded')).toBe(0);
      } finally {
        process.stdout.write = quiet;
        await runner.stop();
      }
    }, 120_000);
  });

  describe('ThrottledMap circuitBreaker', () => {
    test('items after the breaker opens call nothing and are collected as CircuitOpen failures', async () => {
      const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
      const breaker = new CircuitBreaker(stack, 'Partner', {
        breakerName: 'partner', failureThreshold: 2, cooldown: Duration.seconds(60), failureErrors: ['DownstreamUnavailable'],
      });
      const limiter = new RateLimiter(stack, 'Api', { limiterName: 'api', ratePerSecond: 20, burst: 5 });
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:partner');
      const map = new ThrottledMap(stack, 'Orders', {
        itemsPath: '$.items',
        limiter,
        concurrency: MapConcurrency.fixed(1),
        catchItemFailures: true,
        circuitBreaker: { breaker },
        itemProcessor: tasks.LambdaInvoke.jsonPath(stack, 'Call Partner', { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' }),
      });
      const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
      let calls = 0;
      const runner = await LocalRunner.start(stack, machine, {
        taskHandlers: { 'Call Partner': async () => { calls++; throw Object.assign(new Error('down'), { name: 'DownstreamUnavailable' }); } },
      });
      const quiet = process.stdout.write;
      process.stdout.write = ((chunk: any, ...rest: any[]) => (String(chunk).includes('"_aws"') ? true : (quiet as any).call(process.stdout, chunk, ...rest))) as any;
      try {
        const r = await runner.run({ items: Array.from({ length: 8 }, (_, i) => ({ order: i })) });
        expect(r.status).toBe('SUCCEEDED');
        const results = r.output as Array<{ failed: boolean; error: { Error: string; Cause?: string } }>;
        expect(results.map((x) => x.error.Error)).toEqual([
          'DownstreamUnavailable', 'DownstreamUnavailable', ...Array.from({ length: 6 }, () => 'CircuitOpen'),
        ]);
        expect(results[7].error.Cause).toContain('circuit breaker partner is open for key default');
        expect(calls).toBe(2);
        expect(statesEntered(r, 'Orders Item Acquire')).toBe(2);
      } finally {
        process.stdout.write = quiet;
        await runner.stop();
      }
    }, 120_000);

    test('protect() in a multi-state item processor under a limiter: the breaker\'s own retries are not the downstream\'s', () => {
      const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
      const breaker = new CircuitBreaker(stack, 'B', { failureErrors: ['Down'] });
      const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:x');
      const guarded = breaker.protect(stack, 'Guard', { task: tasks.LambdaInvoke.jsonPath(stack, 'Call', { lambdaFunction: fn, retryOnServiceExceptions: false, resultPath: '$.r' }) });
      const map = new ThrottledMap(stack, 'Orders', { limiter: new RateLimiter(stack, 'Api', { ratePerSecond: 5 }), itemProcessor: guarded });
      new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
      expect(() => Template.fromStack(stack)).not.toThrow();
    });

    test('fails at synth without a limiter (it is the RateLimitedTask option)', () => {
      const stack = new Stack();
      const breaker = new CircuitBreaker(stack, 'B');
      expectValidationError(() => new ThrottledMap(stack, 'M', { circuitBreaker: { breaker }, itemProcessor: new sfn.Pass(stack, 'P') }),
        /circuitBreaker needs a limiter and an item processor that is one task, not batched .*got no limiter/);
    });
  });
});
