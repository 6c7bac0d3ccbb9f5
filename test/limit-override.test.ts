import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { App, Duration, Stack, TimeZone } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { aslOf } from './support/asl';
import { nagFindings } from './support/nag';
import { quiet } from './support/quiet';
import { expectValidationError } from './support/validation';
import { LocalRunner, statesEntered } from '../local/runner';
import { AcquireMode, Limit, RateLimitedTask, RateLimiter, RetryPolicy } from '../src';

// A workflow changes a limit while others run: setLimitTask / clearLimitTask write the override item the limiter reads.

function build() {
  const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiter = new RateLimiter(stack, 'Api', { limiterName: 'api', ratePerSecond: 100, burst: 100 });
  const set = limiter.setLimitTask(stack, 'Lower Limit', { key: '$.tenant', limit: Limit.perSecond(1, { burst: 1 }), until: '$.until' });
  const clear = limiter.clearLimitTask(stack, 'Clear Limit', { key: '$.tenant' });
  const call = new RateLimitedTask(stack, 'Call', {
    limiter,
    task: tasks.LambdaInvoke.jsonPath(stack, 'Work', {
      lambdaFunction: lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:work'), retryOnServiceExceptions: false, resultPath: '$.r',
    }),
    acquire: { key: '$.tenant', mode: AcquireMode.TRY },
    retry: RetryPolicy.none(),
  });
  return { stack, limiter, set, clear, call };
}

describe('setLimitTask / clearLimitTask', () => {
  test('one DynamoDB PutItem / DeleteItem of the key\'s override item, granted only this limiter\'s override items', () => {
    const { stack, set, clear } = build();
    new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(set.next(clear)) });
    const t = Template.fromStack(stack);
    const asl = aslOf(t);
    expect(asl.States['Lower Limit']).toMatchObject({
      Resource: 'arn:aws:states:::dynamodb:putItem',
      Parameters: {
        Item: {
          pk: { 'S.$': "States.Format('api#config#{}', $.tenant)" },
          ratePerSecond: { N: '1' },
          burst: { N: '1' },
          until: { 'S.$': "States.Format('{}', $.until)" },
          by: { 'S.$': '$$.Execution.Id' },
        },
      },
      ResultPath: null,
    });
    expect(asl.States['Clear Limit']).toMatchObject({ Resource: 'arn:aws:states:::dynamodb:deleteItem', Parameters: { Key: { pk: { 'S.$': "States.Format('api#config#{}', $.tenant)" } } } });
    const statements = Object.values(t.findResources('AWS::IAM::Policy')).flatMap((p: any) => p.Properties.PolicyDocument.Statement);
    for (const action of ['dynamodb:PutItem', 'dynamodb:DeleteItem']) {
      expect(statements.filter((s: any) => s.Action === action).map((s: any) => s.Condition)).toEqual([{ 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['api#config#*'] } }]);
    }
    expect(nagFindings(stack).filter((f) => f.includes('Lower Limit') || f.includes('Clear Limit'))).toEqual([]);
  });

  test('a literal key: exactly its item; JSONata machines: Arguments and Output', () => {
    const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
    const limiter = new RateLimiter(stack, 'Api', { limiterName: 'api', ratePerSecond: 10 });
    const set = limiter.setLimitTask(stack, 'Night Limit', { key: 'partner', limit: Limit.perSecond(2), until: '2026-12-03T06:00:00Z' });
    new sfn.StateMachine(stack, 'Machine', { queryLanguage: sfn.QueryLanguage.JSONATA, definitionBody: sfn.DefinitionBody.fromChainable(set) });
    const t = Template.fromStack(stack);
    expect(aslOf(t).States['Night Limit']).toMatchObject({
      Arguments: { Item: { pk: { S: 'api#config#partner' }, ratePerSecond: { N: '2' }, burst: { N: '2' }, until: { S: '2026-12-03T06:00:00Z' }, by: { S: '{% $states.context.Execution.Id %}' } } },
      Output: '{% $states.input %}',
    });
    const put = Object.values(t.findResources('AWS::IAM::Policy')).flatMap((p: any) => p.Properties.PolicyDocument.Statement).find((s: any) => s.Action === 'dynamodb:PutItem');
    expect(put.Condition).toEqual({ 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': ['api#config#partner'] } });
  });

  test('addSchedule: EventBridge Scheduler writes the override itself (universal target, no Lambda), its role granted exactly that item', () => {
    const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
    const limiter = new RateLimiter(stack, 'Api', { limiterName: 'api', ratePerSecond: 10 });
    limiter.addSchedule('Night', { schedule: scheduler.ScheduleExpression.cron({ hour: '20', minute: '0', timeZone: TimeZone.EUROPE_BERLIN }), key: 'partner', limit: Limit.perSecond(2) });
    limiter.addSchedule('Day', { schedule: scheduler.ScheduleExpression.cron({ hour: '8', minute: '0', timeZone: TimeZone.EUROPE_BERLIN }), key: 'partner' });
    const t = Template.fromStack(stack);
    const schedules = Object.values(t.findResources('AWS::Scheduler::Schedule')).map((r: any) => r.Properties);
    const arn = (s: any) => s.Target.Arn['Fn::Join'][1].slice(-1)[0];
    expect(schedules.map((s) => [s.ScheduleExpression, s.ScheduleExpressionTimezone, arn(s)])).toEqual([
      ['cron(0 20 * * ? *)', 'Europe/Berlin', ':scheduler:::aws-sdk:dynamodb:putItem'],
      ['cron(0 8 * * ? *)', 'Europe/Berlin', ':scheduler:::aws-sdk:dynamodb:deleteItem'],
    ]);
    const input = JSON.stringify(schedules[0].Target.Input);
    for (const part of ['api#config#partner', 'ratePerSecond', '{\\"N\\":\\"2\\"}', 'schedule:Night']) expect(input).toContain(part);
    const statements = Object.values(t.findResources('AWS::IAM::Policy')).flatMap((p: any) => p.Properties.PolicyDocument.Statement);
    for (const action of ['dynamodb:PutItem', 'dynamodb:DeleteItem']) {
      expect(statements.filter((s: any) => s.Action === action).map((s: any) => s.Condition)).toEqual([{ 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': ['api#config#partner'] } }]);
    }
    expect(nagFindings(stack).filter((f) => f.includes('Stack/Api/Schedule'))).toEqual([]);
    expectValidationError(() => limiter.addSchedule('Bad', { schedule: scheduler.ScheduleExpression.rate(Duration.hours(1)), key: '$.tenant' }), /addSchedule\(Bad\) key must be a literal/);
  });

  test.each<[string, () => unknown, RegExp]>([
    ['a rate of 0', () => { const { stack, limiter } = build(); return limiter.setLimitTask(stack, 'S', { limit: Limit.perSecond(0) }); }, /limit.ratePerSecond must be .*got 0/],
    ['another dimension', () => { const { stack, limiter } = build(); return limiter.setLimitTask(stack, 'S', { limit: Limit.perSecond(1, { dimension: 'tokens' }) }); },
      /limit.dimension must be requests .*got tokens/],
    ['a malformed until', () => { const { stack, limiter } = build(); return limiter.setLimitTask(stack, 'S', { limit: Limit.perSecond(1), until: 'tomorrow' }); },
      /until must be an ISO 8601 time with its zone \(Z or ±hh:mm\) or a JSONPath, got "tomorrow"/],
    ['an until without its zone', () => { const { stack, limiter } = build(); return limiter.setLimitTask(stack, 'S', { limit: Limit.perSecond(1), until: '2026-12-03T06:00:00' }); },
      /until must be an ISO 8601 time with its zone/],
    ['a scheduled burst below the shards', () => {
      const stack = new Stack();
      const l = new RateLimiter(stack, 'L', { ratePerSecond: 100, burst: 100, shards: 4 });
      return l.addSchedule('Night', { schedule: scheduler.ScheduleExpression.rate(Duration.hours(1)), limit: Limit.perSecond(2) });
    }, /addSchedule\(Night\) limit.burst must be at least shards \(4\), got 2/],
    ['a limiter of several limits', () => {
      const stack = new Stack();
      const l = new RateLimiter(stack, 'M', { limits: [Limit.perMinute(60), Limit.perMinute(600, { dimension: 'tokens', burst: 100 })] });
      return l.setLimitTask(stack, 'S', { limit: Limit.perSecond(1) });
    }, /setLimitTask: limiter .* has several limits/],
  ])('fails at synth: %s', (_n, make, message) => expectValidationError(make, message));

  test('in the local runner: a workflow lowers a key\'s limit; the next admissions of that key follow it, another key\'s do not', async () => {
    const { stack, set, clear, call } = build();
    const route = new sfn.Choice(stack, 'Op')
      .when(sfn.Condition.stringEquals('$.op', 'set'), set)
      .when(sfn.Condition.stringEquals('$.op', 'clear'), clear)
      .otherwise(call);
    const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(route) });
    const runner = await LocalRunner.start(stack, machine, { taskHandlers: { Work: async () => ({ ok: true }) } });
    try {
      const until = new Date(Date.now() + 60_000).toISOString();
      expect((await runner.run({ op: 'set', tenant: 'small', until })).status).toBe('SUCCEEDED');
      const item = await runner.db.client.send(new GetItemCommand({ TableName: runner.nameOf(stack.getLogicalId((stack.node.findChild('Api') as RateLimiter).table.node.defaultChild as any)), Key: { pk: { S: 'api#config#small' } } }));
      expect(item.Item).toMatchObject({ ratePerSecond: { N: '1' }, burst: { N: '1' }, until: { S: until } });
      // 10 at once per key: the lowered key's admissions come at its new limit (1/s, burst 1: TRY retries the refused
      // ones each second), the other key's all at once (100/s, burst 100) — judged at the limiter's decisions
      const small = await quiet(() => Promise.all(Array.from({ length: 10 }, () => runner.run({ op: 'call', tenant: 'small' }))));
      const big = await quiet(() => Promise.all(Array.from({ length: 10 }, () => runner.run({ op: 'call', tenant: 'big' }))));
      expect([...small, ...big].filter((r) => r.status !== 'SUCCEEDED')).toEqual([]);
      const slots = (key: string) => runner.grants.filter((g) => g.key === key).map((g) => g.atUs).sort((x, y) => x - y);
      const s = slots('small');
      expect(s).toHaveLength(10);
      // burst 1 at 1/s: any two admissions at least one emission interval apart (tolerance 0 at burst 1)
      for (let i = 1; i < s.length; i++) expect(s[i] - s[i - 1]).toBeGreaterThanOrEqual(1_000_000 - 1);
      const b = slots('big');
      expect(b[b.length - 1] - b[0]).toBeLessThan(1_000_000);
      expect(small.every((r) => statesEntered(r, 'Call Acquire') === 1)).toBe(true);
      expect((await runner.run({ op: 'clear', tenant: 'small' })).status).toBe('SUCCEEDED');
      const gone = await runner.db.client.send(new GetItemCommand({ TableName: runner.nameOf(stack.getLogicalId((stack.node.findChild('Api') as RateLimiter).table.node.defaultChild as any)), Key: { pk: { S: 'api#config#small' } } }));
      expect(gone.Item).toBeUndefined();
    } finally {
      await runner.stop();
    }
  }, 120_000);
});
