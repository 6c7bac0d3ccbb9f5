import { App, RemovalPolicy, Duration, Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { AcquireMode, Limit, RateLimitedTask, RateLimiter, RateLimiterProps } from '../src';
import { aslOf } from './support/asl';
import { actionsOf, logicalIdOf, statementsOfRole } from './support/iam';
import { nagFindings } from './support/nag';
import { expectValidationError } from './support/validation';

/** Every optional prop set to a non-default value. */
const FULLEST: RateLimiterProps = {
  ratePerSecond: 1000,
  burst: 200,
  shards: 4,
  maxWait: Duration.seconds(30),
  reservedConcurrency: 20,
  memorySize: 256,
  logRetention: logs.RetentionDays.ONE_WEEK,
};

function synth(props: RateLimiterProps, extra?: (stack: Stack, limiter: RateLimiter) => void) {
  const app = new App();
  const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiter = new RateLimiter(stack, 'Limiter', props);
  extra?.(stack, limiter);
  return { app, stack, limiter, template: Template.fromStack(stack) };
}

describe('RateLimiter', () => {
  test('defaults: on-demand encrypted table with TTL, ARM64 traced function, log group, no reserved concurrency', () => {
    // GIVEN / WHEN
    const { template } = synth({ ratePerSecond: 5 });

    // THEN
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
      AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
      BillingMode: 'PAY_PER_REQUEST',
      TimeToLiveSpecification: { AttributeName: 'exp', Enabled: true },
      SSESpecification: { SSEEnabled: true },
    });
    // kept on removal: it holds the limits operators set at run time (aws-cdk-lib keeps tables by default too)
    template.hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'nodejs24.x',
      Architectures: ['arm64'],
      MemorySize: 128,
      Timeout: 10,
      TracingConfig: { Mode: 'Active' },
      LoggingConfig: { LogGroup: Match.anyValue() },
      Environment: {
        Variables: Match.objectLike({
          RATE_PER_SECOND: '5',
          BURST: '5',
          SHARDS: '1',
          MAX_WAIT_MS: '300000',
          LIMITER_NAME: Match.stringLikeRegexp('^[A-Za-z0-9._-]+$'),
          TABLE_NAME: Match.anyValue(),
        }),
      },
    });
    template.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
    const fn = template.findResources('AWS::Lambda::Function');
    expect(Object.values(fn)[0].Properties.ReservedConcurrentExecutions).toBeUndefined();
    // No managed policies: the role is scoped by hand.
    template.hasResourceProperties('AWS::IAM::Role', { ManagedPolicyArns: Match.absent() });
  });

  test('the function role holds only the actions the handler uses, on exact ARNs', () => {
    // GIVEN
    const { template } = synth({ ratePerSecond: 50, burst: 10 });
    const roleId = logicalIdOf(template, 'AWS::IAM::Role');
    const tableId = logicalIdOf(template, 'AWS::DynamoDB::Table');
    const logGroupId = logicalIdOf(template, 'AWS::Logs::LogGroup');

    // WHEN
    const statements = statementsOfRole(template, roleId);

    // THEN
    expect(actionsOf(statements)).toEqual([
      'dynamodb:GetItem', 'dynamodb:UpdateItem',
      'logs:CreateLogStream', 'logs:PutLogEvents',
      'xray:PutTelemetryRecords', 'xray:PutTraceSegments',
    ]);
    for (const s of statements) {
      const actions = Array.isArray(s.Action) ? s.Action : [s.Action];
      if (actions[0].startsWith('dynamodb:')) {
        expect([s.Resource].flat()).toEqual([{ 'Fn::GetAtt': [tableId, 'Arn'] }]);
      } else if (actions[0].startsWith('logs:')) {
        expect([s.Resource].flat()).toEqual([{ 'Fn::GetAtt': [logGroupId, 'Arn'] }]);
      } else {
        // X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level permissions.
        expect(s.Resource).toBe('*');
      }
    }
  });

  test('a state machine using acquire() may invoke only the exact function ARN', () => {
    // GIVEN / WHEN
    const { template } = synth({ ratePerSecond: 5 }, (stack, limiter) => {
      new sfn.StateMachine(stack, 'Machine', {
        definitionBody: sfn.DefinitionBody.fromChainable(limiter.acquire(stack, 'Throttle').next(new sfn.Pass(stack, 'Call API'))),
      });
    });
    const roleId = logicalIdOf(template, 'AWS::IAM::Role', (p) => JSON.stringify(p).includes('states.amazonaws.com'));
    const fnId = logicalIdOf(template, 'AWS::Lambda::Function');
    // THEN
    expect(statementsOfRole(template, roleId)).toEqual([
      { Action: 'lambda:InvokeFunction', Effect: 'Allow', Resource: { 'Fn::GetAtt': [fnId, 'Arn'] } },
    ]);
  });

  test('grantAcquire grants invoke on the exact function ARN only', () => {
    // GIVEN
    const { template } = synth({ ratePerSecond: 5 }, (stack, limiter) => {
      const caller = new iam.Role(stack, 'Caller', { assumedBy: new iam.ServicePrincipal('states.amazonaws.com') });
      // WHEN
      limiter.grantAcquire(caller);
    });
    const callerId = logicalIdOf(template, 'AWS::IAM::Role', (p) => JSON.stringify(p).includes('states.amazonaws.com'));
    const fnId = logicalIdOf(template, 'AWS::Lambda::Function');

    // THEN
    expect(statementsOfRole(template, callerId)).toEqual([
      { Action: 'lambda:InvokeFunction', Effect: 'Allow', Resource: { 'Fn::GetAtt': [fnId, 'Arn'] } },
    ]);
  });

  test('an existing table: no table created, grants on that table', () => {
    // GIVEN
    const { template } = synth({ ratePerSecond: 5 }, () => undefined);
    expect(template.resourceCountIs('AWS::DynamoDB::Table', 1)).toBeUndefined();
    const app = new App();
    const stack = new Stack(app, 'Stack');
    const table = dynamodb.Table.fromTableName(stack, 'Existing', 'limits');
    // WHEN
    new RateLimiter(stack, 'Limiter', { ratePerSecond: 5, table, limiterName: 'shipping' });
    const t = Template.fromStack(stack);
    // THEN
    t.resourceCountIs('AWS::DynamoDB::Table', 0);
    t.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ TABLE_NAME: 'limits', LIMITER_NAME: 'shipping' }) },
    });
    t.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: Match.arrayWith([Match.objectLike({
          Action: ['dynamodb:UpdateItem', 'dynamodb:GetItem'],
          Resource: { 'Fn::Join': ['', Match.arrayWith([':table/limits'])] },
          Condition: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['shipping#*'] } },
        })]),
      },
    });
  });

  test('fromRateLimiterAttributes: another stack\'s state machine takes from the same limit, least privilege on exact ARNs', () => {
    // GIVEN a limiter in one stack, imported by its attributes in another app
    const app = new App();
    const stack = new Stack(app, 'Workflows', { env: { account: '123456789012', region: 'us-east-1' } });
    const limiter = RateLimiter.fromRateLimiterAttributes(stack, 'ShippingApi', {
      limiterName: 'shipping',
      ratePerSecond: 5,
      acquireFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:shipping-acquire',
      tableArn: 'arn:aws:dynamodb:us-east-1:123456789012:table/limits',
    });
    // WHEN a RateLimitedTask uses it
    const fn = lambda.Function.fromFunctionArn(stack, 'Api', 'arn:aws:lambda:us-east-1:123456789012:function:api');
    const limited = new RateLimitedTask(stack, 'Ship', {
      limiter, task: new tasks.LambdaInvoke(stack, 'Call', { lambdaFunction: fn, retryOnServiceExceptions: false }),
    });
    new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited) });
    const template = Template.fromStack(stack);
    // THEN the acquire state invokes exactly the imported function, and its defaults match RateLimiter's
    expect(aslOf(template).States['Ship Acquire'].Resource).toBe('arn:aws:lambda:us-east-1:123456789012:function:shipping-acquire');
    expect([limiter.burst, limiter.shards, limiter.maxWait.toMinutes()]).toEqual([5, 1, 5]);
    const statements = Object.values(template.findResources('AWS::IAM::Policy')).flatMap((p: any) => p.Properties.PolicyDocument.Statement);
    expect(statements.filter((st: any) => [st.Action].flat().includes('lambda:InvokeFunction')).map((st: any) => st.Resource))
      .toContainEqual('arn:aws:lambda:us-east-1:123456789012:function:shipping-acquire');
    expect(limiter.metricAdmitted().dimensions).toEqual({ LimiterName: 'shipping' });
    expectValidationError(() => RateLimiter.fromRateLimiterAttributes(stack, 'Bad', { limiterName: 'a#b', ratePerSecond: 5, acquireFunctionArn: 'x', tableArn: 'y' }),
      /^\[Workflows\/Bad\] limiterName must be/);
    expectValidationError(() => RateLimiter.fromRateLimiterAttributes(stack, 'Neither', { limiterName: 'n', acquireFunctionArn: 'x', tableArn: 'y' }),
      /^\[Workflows\/Neither\] give the limit as ratePerSecond \(with burst\) or as limits, not neither/);
    // the Limit form imports the same limit
    const byLimits = RateLimiter.fromRateLimiterAttributes(stack, 'ByLimits', {
      limiterName: 'shipping', limits: [Limit.perSecond(5, { burst: 2 })], acquireFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:shipping-acquire', tableArn: 'arn:aws:dynamodb:us-east-1:123456789012:table/limits',
    });
    expect([byLimits.ratePerSecond, byLimits.burst, byLimits.shards]).toEqual([5, 2, 1]);
  });

  test('fails if removalPolicy is given with an existing table', () => {
    const stack = new Stack(new App(), 'Stack');
    const table = dynamodb.Table.fromTableName(stack, 'Existing', 'limits');
    expectValidationError(() => new RateLimiter(stack, 'Limiter', { ratePerSecond: 5, table, removalPolicy: RemovalPolicy.RETAIN }),
      /^\[Stack\/Limiter\] removalPolicy applies to the table this construct creates: provide either table or removalPolicy, but not both \(got table Stack\/Existing and removalPolicy retain\)/);
  });

  test('limiters sharing a table may each touch only their own items (dynamodb:LeadingKeys)', () => {
    // GIVEN two limiters and a dispatcher on one table
    const app = new App();
    const stack = new Stack(app, 'Stack');
    const table = dynamodb.Table.fromTableName(stack, 'Shared', 'limits');
    new RateLimiter(stack, 'Shipping', { ratePerSecond: 5, table, limiterName: 'shipping' });
    new RateLimiter(stack, 'Billing', { ratePerSecond: 5, table, limiterName: 'billing' });
    // WHEN
    const policies = Object.values(Template.fromStack(stack).findResources('AWS::IAM::Policy'));
    const dynamo = policies.flatMap((p: any) => p.Properties.PolicyDocument.Statement)
      .filter((st: any) => [st.Action].flat().some((a: string) => a.startsWith('dynamodb:')));
    // THEN every DynamoDB statement is scoped to one limiter's prefix
    expect(dynamo.map((st: any) => st.Condition)).toEqual([
      { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['shipping#*'] } },
      { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['billing#*'] } },
    ]);
  });

  test('Limit.perSecond is the same limit as ratePerSecond and burst: identical templates', () => {
    const short = synth({ ratePerSecond: 7.5, burst: 3, limiterName: 'api' }).template.toJSON();
    const long = synth({ limits: [Limit.perSecond(7.5, { burst: 3 })], limiterName: 'api' }).template.toJSON();
    expect(long).toEqual(short);
    const { limiter } = synth({ limits: [Limit.perSecond(7.5)] });
    expect([limiter.ratePerSecond, limiter.burst, limiter.limits[0].dimension]).toEqual([7.5, 8, 'requests']);
  });

  test('removalPolicy DESTROY for a test stack', () => {
    synth({ ratePerSecond: 5, removalPolicy: RemovalPolicy.DESTROY }).template.hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Delete' });
  });

  test('default shards keep each item at or below 500 writes/s; a hot shard warns', () => {
    expect(synth({ ratePerSecond: 1000 }).limiter.shards).toBe(2);
    expect(synth({ ratePerSecond: 1001 }).limiter.shards).toBe(3);
    expect(synth({ ratePerSecond: 10.5 }).limiter.burst).toBe(11);
    // the default stays within the shards maximum at the highest rate
    expect(synth({ ratePerSecond: 600_000 }).limiter.shards).toBe(1000);
    const { stack } = synth({ ratePerSecond: 2000, shards: 2 });
    Annotations.fromStack(stack).hasWarning('/Stack/Limiter', Match.stringLikeRegexp('each of the 2 shards takes 1000 writes/s'));
  });

  test('acquire() renders acquire → Wait with the input echoed through', () => {
    // GIVEN / WHEN
    const { template } = synth({ ratePerSecond: 5 }, (stack, limiter) => {
      const done = new sfn.Pass(stack, 'Call API');
      new sfn.StateMachine(stack, 'Machine', {
        definitionBody: sfn.DefinitionBody.fromChainable(limiter.acquire(stack, 'Throttle', { key: '$.tenant', consume: { requests: 2 }, mode: AcquireMode.TRY }).next(done)),
      });
    });
    const asl = aslOf(template);
    // THEN
    expect(asl.StartAt).toBe('Throttle Acquire');
    expect(asl.States['Throttle Acquire']).toMatchObject({
      Type: 'Task',
      Resource: '<LimiterFunction31C170C3.Arn>',
      Parameters: { 'key.$': '$.tenant', 'tokens': 2, 'mode': 'TRY', 'input.$': '$' },
      Next: 'Throttle Wait',
    });
    expect(asl.States['Throttle Acquire'].ResultPath).toBeUndefined();
    expect(asl.States['Throttle Acquire'].Retry.map((r: any) => r.ErrorEquals)).toEqual([
      ['Lambda.ClientExecutionTimeoutException', 'Lambda.ServiceException', 'Lambda.AWSLambdaException', 'Lambda.SdkClientException', 'Lambda.TooManyRequestsException'],
      ['LimiterUnavailable'],
    ]);
    expect(asl.States['Throttle Wait']).toEqual({
      Type: 'Wait', SecondsPath: '$.waitSeconds', OutputPath: '$.input', Next: 'Call API',
    });
  });

  test('metrics use the CdkSfnThrottle namespace and the limiter name dimension', () => {
    const { limiter, stack } = synth({ ratePerSecond: 5, limiterName: 'api' });
    const m = limiter.metricAdmitted();
    expect(stack.resolve(m.namespace)).toBe('CdkSfnThrottle');
    expect(m.metricName).toBe('Admitted');
    expect(m.dimensions).toEqual({ LimiterName: 'api' });
    expect(m.statistic).toBe('Sum');
    expect(m.period.toSeconds()).toBe(60);
    expect(limiter.metricWaitTime().statistic).toBe('p99');
    expect(limiter.metricWaitTime({ statistic: 'p50' }).statistic).toBe('p50');
    expect(limiter.metricDelayed().metricName).toBe('Delayed');
    expect(limiter.metricRejected().metricName).toBe('Rejected');
    expect(limiter.metricDynamoDbCalls().metricName).toBe('DynamoDbCalls');
    expect(limiter.metricUnavailable().metricName).toBe('Unavailable');
  });

  describe('validation', () => {
    test.each<[string, RateLimiterProps, RegExp]>([
      ['fails if ratePerSecond is 0', { ratePerSecond: 0 }, /^\[Stack\/Limiter\] ratePerSecond must be from 0.001 to 1000000, got 0/],
      ['fails if ratePerSecond is absurdly small', { ratePerSecond: 1e-121 }, /ratePerSecond must be from 0.001 to 1000000, got 1e-121/],
      ['fails if ratePerSecond is negative', { ratePerSecond: -1 }, /ratePerSecond must be .*got -1/],
      ['fails if ratePerSecond is NaN', { ratePerSecond: NaN }, /ratePerSecond must be .*got NaN/],
      ['fails if burst is fractional', { ratePerSecond: 5, burst: 2.5 }, /burst must be an integer from 1 to 1000000, got 2.5/],
      ['fails if burst is 0', { ratePerSecond: 5, burst: 0 }, /burst must be an integer from 1 .*got 0/],
      ['fails if shards is 0', { ratePerSecond: 5, shards: 0 }, /shards must be an integer from 1 to 1000, got 0/],
      ['fails if burst is below shards', { ratePerSecond: 50, burst: 2, shards: 4 }, /burst must be at least shards \(4\).*got 2/],
      ['fails if maxWait exceeds 24 h', { ratePerSecond: 5, maxWait: Duration.hours(25) }, /maxWait \(ms\) must be an integer from 0 to 86400000, got 90000000/],
      ['fails if reservedConcurrency is 0', { ratePerSecond: 5, reservedConcurrency: 0 }, /reservedConcurrency must be an integer from 1 to 1000, got 0/],
      ['fails if memorySize is 64', { ratePerSecond: 5, memorySize: 64 }, /memorySize must be an integer from 128 to 10240, got 64/],
      ['fails if limiterName has a #', { ratePerSecond: 5, limiterName: 'a#b' }, /limiterName must be 1 to 64 letters.*got "a#b"/],
      ['fails if neither form of the limit is given', {}, /give the limit as ratePerSecond \(with burst\) or as limits, not neither/],
      ['fails if both forms are given', { ratePerSecond: 5, limits: [Limit.perSecond(5)] }, /give the limit as ratePerSecond \(with burst\) or as limits, not both/],
      ['fails if burst comes with limits', { limits: [Limit.perSecond(5)], burst: 3 }, /burst goes with ratePerSecond; with limits give it in the Limit/],
      ['fails if limits is empty', { limits: [] }, /limits must hold 1 to 10 Limits, got 0/],
      ['fails if two limits count the same dimension', { limits: [Limit.perSecond(5), Limit.perSecond(50)] }, /limits must count different dimensions \(one Limit per dimension\), got "requests" twice/],
      ['fails if the second limit\'s burst is 0', { limits: [Limit.perSecond(5), Limit.perMinute(50, { dimension: 'tokens', burst: 0 })] }, /limits\[1\] burst must be an integer from 1 to 1000000, got 0/],
      ['fails if a Limit\'s rate is 0', { limits: [Limit.perSecond(0)] }, /^\[Stack\/Limiter\] limits\[0\] ratePerSecond must be from 0.001 to 1000000, got 0/],
      ['fails if a Limit\'s burst is 0', { limits: [Limit.perSecond(5, { burst: 0 })] }, /limits\[0\] burst must be an integer from 1 to 1000000, got 0/],
      ['fails if a Limit\'s dimension has a space', { limits: [Limit.perSecond(5, { dimension: 'input tokens' })] }, /limits\[0\] dimension must be 1 to 32 letters, digits or '_', starting with a letter, got "input tokens"/],
    ])('%s', (_name, props, message) => {
      expectValidationError(() => synth(props), message);
    });

    test('fails if acquire tokens exceed the burst per shard', () => {
      const { stack, limiter } = synth({ ratePerSecond: 50, burst: 8, shards: 2 });
      expectValidationError(() => limiter.acquire(stack, 'A', { consume: { requests: 5 } }), /^\[Stack\/A\] consume.requests must be an integer from 1 to 4 \(floor\(burst 8 \/ shards 2\)\), got 5/);
    });
  });

  describe('cdk-nag', () => {
    test.each<[string, RateLimiterProps]>([
      ['default', { ratePerSecond: 5 }],
      ['fullest', { ...FULLEST, architecture: lambda.Architecture.X86_64, limiterName: 'full' }],
    ])('%s configuration has zero unacknowledged AwsSolutions and Serverless findings', (_name, props) => {
      const { stack } = synth(props);
      expect(nagFindings(stack, ['AwsSolutions', 'Serverless'])).toEqual([]);
    });

    test('the check can fail: a finding the construct did not acknowledge is reported', () => {
      const { stack } = synth({ ratePerSecond: 5 }, (s) => {
        new dynamodb.Table(s, 'Unprotected', { partitionKey: { name: 'id', type: dynamodb.AttributeType.STRING } });
      });
      expect(nagFindings(stack).join('\n')).toMatch(/AwsSolutions-DDB3 at Stack\/Unprotected/);
    });
  });

  describe('snapshots', () => {
    test.each<[string, RateLimiterProps]>([
      ['default', { ratePerSecond: 5, limiterName: 'snap' }],
      ['sharded with overrides', { ...FULLEST, limiterName: 'snap-sharded' }],
    ])('%s', (_name, props) => {
      expect(synth(props).template.toJSON()).toMatchSnapshot();
    });

    test('existing table, used by acquire() in a state machine', () => {
      const app = new App();
      const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
      const table = dynamodb.Table.fromTableName(stack, 'Existing', 'limits');
      const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: 5, table, limiterName: 'snap-existing' });
      new sfn.StateMachine(stack, 'Machine', {
        definitionBody: sfn.DefinitionBody.fromChainable(
          limiter.acquire(stack, 'Throttle', { key: '$.tenant', mode: AcquireMode.TRY, resultPath: '$.acquired' }).next(new sfn.Pass(stack, 'Call')),
        ),
      });
      expect(Template.fromStack(stack).toJSON()).toMatchSnapshot();
    });
  });
});
