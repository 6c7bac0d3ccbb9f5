import { App, Duration, Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { AcquireMode, Limit, MapConcurrency, Priority, RateLimitedTask, RateLimiter, RetryPolicy, ThrottleDashboard, ThrottledMap } from '../src';
import { aslOf } from './support/asl';
import { nagFindings } from './support/nag';
import { expectValidationError } from './support/validation';

// The adaptive limit and priority classes as CloudFormation: what the function is told, which states report
// throttling signals, which acquires are retried rather than queued, and what is refused at synth.

function stackOf() {
  const app = new App();
  return new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
}

function fnEnv(template: Template): Record<string, string> {
  const fns = Object.values(template.findResources('AWS::Lambda::Function')) as any[];
  return fns.find((f) => f.Properties.Environment?.Variables?.LIMITER_NAME)!.Properties.Environment.Variables;
}

function callThrough(stack: Stack, limiter: RateLimiter, acquire = {}, queryLanguage?: sfn.QueryLanguage) {
  const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:partner');
  const invoke = queryLanguage === sfn.QueryLanguage.JSONATA
    ? tasks.LambdaInvoke.jsonata(stack, 'Call Partner', { lambdaFunction: fn, retryOnServiceExceptions: false })
    : tasks.LambdaInvoke.jsonPath(stack, 'Call Partner', { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false });
  const call = new RateLimitedTask(stack, 'Call', {
    limiter,
    task: invoke,
    acquire: { key: queryLanguage === sfn.QueryLanguage.JSONATA ? '{% $states.input.partner %}' : '$.partner', ...acquire },
    retry: RetryPolicy.throttling({ errors: ['ThrottlingException', 'Partner.Busy'], maxAttempts: 8 }),
  });
  new sfn.StateMachine(stack, 'Machine', { queryLanguage, definitionBody: sfn.DefinitionBody.fromChainable(call) });
  return call;
}

describe('adaptive limiter', () => {
  test('the function gets the adaptive options with their defaults; the backoff step reports the retried errors for the key', () => {
    // GIVEN an adaptive limiter of 20/s and a RateLimitedTask retrying two throttling errors
    const stack = stackOf();
    const limiter = new RateLimiter(stack, 'Partner', { limiterName: 'partner', ratePerSecond: 20, adaptive: { minRatePerSecond: 2 } });
    callThrough(stack, limiter);
    const template = Template.fromStack(stack);
    // THEN the function reads the adaptive limit (factor 0.7, +1/s = rate/20, 2 s reservations) and no priority reserve
    const env = fnEnv(template);
    expect(JSON.parse(env.ADAPTIVE)).toEqual({ minRatePerSecond: 2, decreaseFactor: 0.7, increasePerSecond: 1, maxReservationMs: 2000 });
    expect(env.PRIORITY_RESERVE).toBeUndefined();
    // AND the backoff state names the errors that lower the rate and the key they lower it for
    const states = aslOf(template).States;
    expect(states['Call Backoff'].Parameters).toMatchObject({ 'phase': 'backoff', 'signals': ['ThrottlingException', 'Partner.Busy'], 'key.$': '$.partner' });
    // AND a refused acquire (a slot beyond maxReservation) is retried about a second later instead of failing
    expect(states['Call Acquire'].Retry).toEqual(expect.arrayContaining([expect.objectContaining({
      ErrorEquals: ['RateLimitExceeded'], IntervalSeconds: 1, JitterStrategy: 'FULL',
    })]));
    expect(template.toJSON()).toMatchSnapshot();
  });

  test('the dashboard shows an adaptive limiter\'s throttling signals and rate decreases', () => {
    const stack = stackOf();
    const limiter = new RateLimiter(stack, 'Partner', { limiterName: 'partner', ratePerSecond: 20, adaptive: { minRatePerSecond: 2 } });
    new ThrottleDashboard(stack, 'Dash').addLimiter(limiter);
    const body = JSON.stringify(Template.fromStack(stack).findResources('AWS::CloudWatch::Dashboard'));
    expect(body).toContain('ThrottleSignals');
    expect(body).toContain('RateDecreases');
    expect(limiter.metricRateDecreases().metricName).toBe('RateDecreases');
  });

  test('a fixed limiter\'s backoff reports nothing and its RESERVE acquire is not retried on RateLimitExceeded', () => {
    const stack = stackOf();
    const limiter = new RateLimiter(stack, 'Partner', { limiterName: 'partner', ratePerSecond: 20 });
    callThrough(stack, limiter);
    const states = aslOf(Template.fromStack(stack)).States;
    expect(states['Call Backoff'].Parameters.signals).toBeUndefined();
    expect(states['Call Backoff'].Parameters['key.$']).toBeUndefined();
    expect(JSON.stringify(states['Call Acquire'].Retry)).not.toContain('RateLimitExceeded');
  });

  test('in a JSONata machine the backoff state carries the key expression and the signals (asl-validator)', () => {
    const stack = stackOf();
    const limiter = new RateLimiter(stack, 'Partner', { limiterName: 'partner', ratePerSecond: 20, adaptive: { minRatePerSecond: 2 } });
    callThrough(stack, limiter, {}, sfn.QueryLanguage.JSONATA);
    const backoff = aslOf(Template.fromStack(stack)).States['Call Backoff'];
    expect(backoff.Arguments).toMatchObject({ key: '{% $states.input.partner %}', signals: ['ThrottlingException', 'Partner.Busy'] });
    expect(backoff.Parameters).toBeUndefined();
  });

  test('an alarm lowers the rate too: an EventBridge rule on its transitions into ALARM invokes the function, with a DLQ; nag clean', () => {
    // GIVEN an adaptive limiter driven by the partner's error alarm too
    const stack = stackOf();
    const alarm = new cloudwatch.Alarm(stack, 'PartnerErrors', {
      metric: new cloudwatch.Metric({ namespace: 'Partner', metricName: 'Errors' }), threshold: 5, evaluationPeriods: 1,
    });
    new RateLimiter(stack, 'Partner', {
      limiterName: 'partner', ratePerSecond: 20, adaptive: { minRatePerSecond: 2, decreaseFactor: 0.5, increasePerSecond: 0.5, maxReservation: Duration.seconds(1), alarm },
    });
    const template = Template.fromStack(stack);
    // THEN one rule: the alarm's ALARM transitions → the function, with the decrease event for the default key
    const rules = Object.values(template.findResources('AWS::Events::Rule')) as any[];
    expect(rules).toHaveLength(1);
    expect(rules[0].Properties.EventPattern).toMatchObject({
      'source': ['aws.cloudwatch'], 'detail-type': ['CloudWatch Alarm State Change'], 'detail': { state: { value: ['ALARM'] } },
    });
    const target = rules[0].Properties.Targets[0];
    expect(JSON.parse(target.Input)).toEqual({ phase: 'decrease', key: 'default' });
    expect(target.DeadLetterConfig).toBeDefined();
    expect(target.RetryPolicy).toEqual({ MaximumRetryAttempts: 4, MaximumEventAgeInSeconds: 300 });
    template.hasResourceProperties('AWS::Lambda::Permission', { Principal: 'events.amazonaws.com', Action: 'lambda:InvokeFunction' });
    expect(JSON.parse(fnEnv(template).ADAPTIVE)).toEqual({
      minRatePerSecond: 2, decreaseFactor: 0.5, increasePerSecond: 0.5, maxReservationMs: 1000,
    });
    expect(nagFindings(stack, ['AwsSolutions', 'Serverless'])).toEqual([]);
    expect(template.toJSON()).toMatchSnapshot();
  });

  test.each([
    [{ minRatePerSecond: 25 }, /adaptive.minRatePerSecond must be from 0.001 to 20 \(the limiter's rate\), got 25/],
    [{ minRatePerSecond: 0 }, /adaptive.minRatePerSecond must be from 0.001 to 20 \(the limiter's rate\), got 0/],
    [{ minRatePerSecond: 1, decreaseFactor: 1 }, /adaptive.decreaseFactor must be from 0.1 to 0.95, got 1/],
    [{ minRatePerSecond: 1, increasePerSecond: 50 }, /adaptive.increasePerSecond must be from 0.001 to 20 \(the limiter's rate\), got 50/],
    [{ minRatePerSecond: 1, maxReservation: Duration.minutes(10) }, /adaptive.maxReservation \(ms\) must be an integer from 0 to 300000 \(the limiter's maxWait\), got 600000/],
  ])('adaptive %o is refused at synth, naming the prop, the value and the range', (adaptive, message) => {
    expectValidationError(() => new RateLimiter(stackOf(), 'L', { ratePerSecond: 20, adaptive: adaptive as any }), message);
  });

  test('adaptive on a limiter of several limits or with keyLimits is refused (not supported yet)', () => {
    expectValidationError(() => new RateLimiter(stackOf(), 'L', {
      limits: [Limit.perSecond(10), Limit.perSecond(1000, { dimension: 'tokens' })], adaptive: { minRatePerSecond: 1 },
    }), /adaptive needs a limiter of one limit, got 2 limits/);
    expectValidationError(() => new RateLimiter(stackOf(), 'L', {
      limits: [Limit.perSecond(10)], keyLimits: [Limit.perSecond(2)], adaptive: { minRatePerSecond: 1 },
    }), /adaptive needs a limiter of one limit, got 1 limits and keyLimits/);
  });

  test('an imported adaptive limiter: RateLimitedTasks report its signals too', () => {
    const stack = stackOf();
    const limiter = RateLimiter.fromRateLimiterAttributes(stack, 'Imported', {
      limiterName: 'partner',
      ratePerSecond: 20,
      tableArn: 'arn:aws:dynamodb:us-east-1:123456789012:table/limits',
      acquireFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:acquire',
      adaptive: { minRatePerSecond: 2 },
    });
    callThrough(stack, limiter as RateLimiter);
    expect(aslOf(Template.fromStack(stack)).States['Call Backoff'].Parameters.signals).toEqual(['ThrottlingException', 'Partner.Busy']);
  });
});

describe('priority classes', () => {
  test('the acquire carries its class; a class below HIGH is retried on RateLimitExceeded, HIGH reserves as before', () => {
    // GIVEN a limiter with a 25 % reserve, a LOW RateLimitedTask and a HIGH ThrottledMap
    const stack = stackOf();
    const limiter = new RateLimiter(stack, 'Partner', { limiterName: 'partner', ratePerSecond: 20, burst: 10, priorityReserve: 0.25 });
    callThrough(stack, limiter, { priority: Priority.LOW });
    const template = Template.fromStack(stack);
    expect(fnEnv(template).PRIORITY_RESERVE).toBe('0.25');
    const states = aslOf(template).States;
    expect(states['Call Acquire'].Parameters).toMatchObject({ priority: 'LOW', mode: 'RESERVE' });
    expect(JSON.stringify(states['Call Acquire'].Retry)).toContain('RateLimitExceeded');

    const stack2 = stackOf();
    const limiter2 = new RateLimiter(stack2, 'Partner', { limiterName: 'partner', ratePerSecond: 20, burst: 10 });
    const fn = lambda.Function.fromFunctionArn(stack2, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:partner');
    const map = new ThrottledMap(stack2, 'Orders', {
      itemsPath: '$.orders',
      concurrency: MapConcurrency.fixed(10),
      limiter: limiter2,
      acquire: { priority: Priority.HIGH },
      itemProcessor: tasks.LambdaInvoke.jsonPath(stack2, 'Ship', { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false }),
    });
    new sfn.StateMachine(stack2, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(map) });
    const t2 = Template.fromStack(stack2);
    const itemStates = aslOf(t2).States.Orders.ItemProcessor.States;
    const acquire = Object.values(itemStates).find((s: any) => (s.Parameters ?? {}).priority) as any;
    expect(acquire.Parameters.priority).toBe('HIGH');
    expect(JSON.stringify(acquire.Retry ?? [])).not.toContain('RateLimitExceeded');
    expect(t2.toJSON()).toMatchSnapshot();
  });

  test('priority on a limiter of several limits is refused; priorityReserve outside 0–0.45 is refused', () => {
    const stack = stackOf();
    const limiter = new RateLimiter(stack, 'Model', { limits: [Limit.perSecond(10), Limit.perSecond(1000, { dimension: 'tokens', burst: 1000 })] });
    expectValidationError(() => callThrough(stack, limiter, { priority: Priority.LOW, consume: { requests: 1, tokens: 10 } }),
      /acquire.priority needs a limiter of one limit, got model?[^ ]* with 2 limits|acquire.priority needs a limiter of one limit/);
    expectValidationError(() => new RateLimiter(stackOf(), 'L', { ratePerSecond: 10, priorityReserve: 0.5 }), /priorityReserve must be from 0 to 0.45, got 0.5/);
  });

  test('a class below HIGH on a burst too small to keep a token free for the classes above: a synth warning naming the figures', () => {
    const stack = stackOf();
    const limiter = new RateLimiter(stack, 'Partner', { limiterName: 'partner', ratePerSecond: 5, burst: 1 });
    callThrough(stack, limiter, { priority: Priority.LOW });
    const warnings = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('priorityReserveBelowOneToken'));
    expect(warnings).toHaveLength(1);
    expect(JSON.stringify(warnings[0].entry.data)).toContain('priorityReserve 0.2 of 1 tokens per shard');
  });

  test('TRY mode with a class: the TRY retry only (no second RateLimitExceeded retry)', () => {
    const stack = stackOf();
    const limiter = new RateLimiter(stack, 'Partner', { limiterName: 'partner', ratePerSecond: 20, burst: 10 });
    callThrough(stack, limiter, { priority: Priority.NORMAL, mode: AcquireMode.TRY });
    const retries = aslOf(Template.fromStack(stack)).States['Call Acquire'].Retry.filter((r: any) => r.ErrorEquals.includes('RateLimitExceeded'));
    expect(retries).toHaveLength(1);
  });
});
