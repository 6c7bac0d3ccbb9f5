// A deployed run of a RateLimitedTask: 20 executions through one 2/s limit to a Lambda function. Deploy with
// `npx integ-runner --directory test/integ` (an AWS account needed); `npm test` checks its snapshot offline.
import { ExpectedResult, IntegTest } from '@aws-cdk/integ-tests-alpha';
import { App, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { MapConcurrency, RateLimitedTask, RateLimiter, RetryPolicy, ThrottledMap } from '../../src';

const app = new App();
const stack = new Stack(app, 'CdkSfnThrottleRateLimitedTask');
const limiter = new RateLimiter(stack, 'Limit', { ratePerSecond: 2, burst: 1, removalPolicy: RemovalPolicy.DESTROY });
const partner = new lambda.Function(stack, 'Partner', {
  runtime: lambda.Runtime.NODEJS_22_X,
  handler: 'index.handler',
  code: lambda.Code.fromInline('exports.handler = async (e) => ({ ok: true, at: Date.now(), item: e });'),
});
const call = new RateLimitedTask(stack, 'Call Partner', {
  limiter,
  task: tasks.LambdaInvoke.jsonPath(stack, 'Invoke Partner', { lambdaFunction: partner, payloadResponseOnly: true, retryOnServiceExceptions: false }),
  retry: RetryPolicy.throttling(),
});
const items = new ThrottledMap(stack, 'Items', { itemsPath: '$.items', concurrency: MapConcurrency.fixed(10), itemProcessor: call });
const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(items), timeout: Duration.minutes(5) });

const integ = new IntegTest(app, 'RateLimitedTask', { testCases: [stack] });
const start = integ.assertions.awsApiCall('StepFunctions', 'startExecution', {
  stateMachineArn: machine.stateMachineArn,
  input: JSON.stringify({ items: Array.from({ length: 20 }, (_, i) => ({ i })) }),
});
// 20 calls at 2/s: the execution takes about 10 s and succeeds
start.next(integ.assertions.awsApiCall('StepFunctions', 'describeExecution', { executionArn: start.getAttString('executionArn') })
  .expect(ExpectedResult.objectLike({ status: 'SUCCEEDED' }))
  .waitForAssertions({ totalTimeout: Duration.minutes(5), interval: Duration.seconds(10) }));

app.synth();
