// A deployed run of a BufferedQueueConsumer with the strict-TPS dispatcher: a message sent to the buffer reaches the
// target through the limiter. Deploy with `npx integ-runner --directory test/integ`; `npm test` checks the snapshot.
import { ExpectedResult, IntegTest } from '@aws-cdk/integ-tests-alpha';
import { App, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { BufferedQueueConsumer, QueueTarget, RateLimiter } from '../../src';

const app = new App();
const stack = new Stack(app, 'CdkSfnThrottleBufferedQueueConsumer');
const limiter = new RateLimiter(stack, 'Limit', { ratePerSecond: 2, burst: 1, removalPolicy: RemovalPolicy.DESTROY });
const target = new lambda.Function(stack, 'Target', {
  runtime: lambda.Runtime.NODEJS_22_X,
  handler: 'index.handler',
  code: lambda.Code.fromInline('exports.handler = async (e) => { console.log(JSON.stringify({ received: e })); return { ok: true }; };'),
});
const buffer = new BufferedQueueConsumer(stack, 'Buffer', { target: QueueTarget.dispatch(target, { limiter }) });

const integ = new IntegTest(app, 'BufferedQueueConsumer', { testCases: [stack] });
integ.assertions.awsApiCall('SQS', 'sendMessage', { QueueUrl: buffer.queue.queueUrl, MessageBody: JSON.stringify({ order: 1 }) })
  // the dispatcher took the message off the buffer (and nothing went to the dead-letter queue)
  .next(integ.assertions.awsApiCall('SQS', 'getQueueAttributes', {
    QueueUrl: buffer.queue.queueUrl, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
  }).expect(ExpectedResult.objectLike({ Attributes: { ApproximateNumberOfMessages: '0', ApproximateNumberOfMessagesNotVisible: '0' } }))
    .waitForAssertions({ totalTimeout: Duration.minutes(5), interval: Duration.seconds(15) }));

app.synth();
