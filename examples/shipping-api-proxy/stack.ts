// The shipping API of scenario (b) behind a ThrottledApiProxy: the provider allows 5 requests/s with no burst. The
// workflows call the proxy (IAM-signed, the only callers it accepts), paced by a RateLimiter a little below the
// proxy's throttle; the proxy's own throttle is the guard that holds even for a caller that bypasses the limiter.
import { Duration, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
import { ProxyTarget, RateLimitedTask, RateLimiter, ThrottleDashboard, ThrottledApiProxy } from '../../src';

/** The provider's documented limit. */
export const PROVIDER_RATE = 5;
/** What the limiter paces at: below the proxy's throttle, so the guard rarely has to refuse. */
export const PACED_RATE = 4;

export class ShippingApiProxyStack extends Stack {
  public readonly machine: sfn.StateMachine;
  public readonly proxy: ThrottledApiProxy;

  constructor(scope: Construct, id: string, props?: StackProps) {
    super(scope, id, props);
    this.proxy = new ThrottledApiProxy(this, 'ShippingProxy', {
      target: ProxyTarget.http('https://api.shipping.example.com/v1'),
      stageThrottle: { rateLimit: PROVIDER_RATE, burstLimit: 1 },
      upstreamLimit: { rateLimit: PROVIDER_RATE, burstLimit: 1 },
    });
    this.proxy.addRoute('POST', '/labels', {
      requestModel: {
        type: apigateway.JsonSchemaType.OBJECT,
        required: ['orderId', 'address'],
        properties: { orderId: { type: apigateway.JsonSchemaType.STRING }, address: { type: apigateway.JsonSchemaType.OBJECT } },
      },
    });
    const limiter = new RateLimiter(this, 'ShippingPace', {
      limiterName: 'shipping-proxy', ratePerSecond: PACED_RATE, burst: 1, maxWait: Duration.minutes(10), removalPolicy: RemovalPolicy.DESTROY,
    });
    const label = new RateLimitedTask(this, 'Create Label', {
      limiter,
      task: this.proxy.callTask(this, 'Call Shipping Proxy', {
        method: 'POST',
        path: '/labels',
        body: sfn.TaskInput.fromObject({ 'orderId.$': '$.orderId', 'address.$': '$.address' }),
        resultPath: '$.label',
      }),
      // the default retries ApiGateway.429 and ApiGateway.503, each retry with a token
    });
    this.machine = new sfn.StateMachine(this, 'ShipOrder', {
      definitionBody: sfn.DefinitionBody.fromChainable(label),
      tracingEnabled: true,
      timeout: Duration.hours(1),
    });
    new ThrottleDashboard(this, 'Dashboard').addLimiter(limiter).addApiProxy(this.proxy).addStateMachine(this.machine);
  }
}
