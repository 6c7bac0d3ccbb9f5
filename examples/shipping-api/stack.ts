// Scenario (b): an external shipping API that accepts 5 requests/s across everything that calls it. Each order
// is its own execution; every execution's label request (retries included) takes a token from one shared limit.
import { Duration, RemovalPolicy, SecretValue, Stack, type StackProps } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import { Limit, RateLimitedTask, RateLimiter, RetryPolicy } from '../../src';

/** The shipping provider's published limit, as the guide's Scenario 2 states it: 5 requests per second, no burst. */
export const SHIPPING_API_REQUESTS = 5;
/**
 * The limit that holds it at the provider's own counter: the rate and burst derived from the rule and the calls' start
 * jitter (100 ms: 5 / 1.1 s = 4.545/s, burst 1).
 */
export const SHIPPING_API_LIMIT = Limit.perWindow({ requests: SHIPPING_API_REQUESTS, window: Duration.seconds(1), burst: 0 });
export const SHIPPING_API_RATE = SHIPPING_API_LIMIT.ratePerSecond;
export const SHIPPING_API_BURST = SHIPPING_API_LIMIT.burst;

export class ShippingApiStack extends Stack {
  public readonly machine: sfn.StateMachine;
  public readonly limiter: RateLimiter;
  public readonly labels: dynamodb.TableV2;

  constructor(scope: Construct, id: string, props?: StackProps) {
    super(scope, id, props);

    // One limit for every execution: the provider counts requests per account, not per workflow.
    this.limiter = new RateLimiter(this, 'ShippingApiLimit', {
      limiterName: 'shipping-api',
      limits: [SHIPPING_API_LIMIT],
      maxWait: Duration.minutes(10),
      removalPolicy: RemovalPolicy.DESTROY,
    });

    const connection = new events.Connection(this, 'ShippingApiConnection', {
      description: 'Shipping provider API key',
      authorization: events.Authorization.apiKey('x-api-key', SecretValue.secretsManager('shipping-api-key')),
    });
    const createLabel = new tasks.HttpInvoke(this, 'Create Shipping Label', {
      connection,
      apiRoot: 'https://api.shipping.example.com',
      apiEndpoint: sfn.TaskInput.fromText('v1/labels'),
      method: sfn.TaskInput.fromText('POST'),
      body: sfn.TaskInput.fromObject({ 'orderId.$': '$.orderId', 'address.$': '$.address' }),
      resultSelector: { 'trackingNumber.$': '$.ResponseBody.trackingNumber' },
      resultPath: '$.label',
    });
    const limited = new RateLimitedTask(this, 'Shipping API', {
      limiter: this.limiter,
      task: createLabel,
      acquire: { key: 'shipping-api' },
      // 429 and 503 from the provider go back through the limiter: every retry holds a token too.
      retry: RetryPolicy.custom({ errors: ['States.Http.StatusCode.429', 'States.Http.StatusCode.503'], maxAttempts: 5 }),
    });

    this.labels = new dynamodb.TableV2(this, 'Labels', {
      partitionKey: { name: 'orderId', type: dynamodb.AttributeType.STRING },
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const save = new tasks.DynamoPutItem(this, 'Save Label', {
      table: this.labels,
      item: {
        orderId: tasks.DynamoAttributeValue.fromString(sfn.JsonPath.stringAt('$.orderId')),
        trackingNumber: tasks.DynamoAttributeValue.fromString(sfn.JsonPath.stringAt('$.label.trackingNumber')),
      },
      resultPath: sfn.JsonPath.DISCARD,
    });
    const failed = new sfn.Fail(this, 'Label Failed', { error: 'LabelFailed', causePath: '$.error.Cause' });
    limited.addCatch(failed, { resultPath: '$.error' });

    this.machine = new sfn.StateMachine(this, 'ShipOrder', {
      definitionBody: sfn.DefinitionBody.fromChainable(limited.next(save)),
      tracingEnabled: true,
      timeout: Duration.hours(1),
    });
  }
}
