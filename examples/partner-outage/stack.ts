// A payment partner's API behind a rate limit and a circuit breaker shared by every execution: while the partner is
// down, executions stop calling it (and stop taking tokens) and park their payment for later instead of retrying
// into the outage; after the cooldown one execution probes, and a success closes the breaker for everyone.
import { Duration, RemovalPolicy, SecretValue, Stack, type StackProps } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import { CircuitBreaker, RateLimitedTask, RateLimiter, RetryPolicy, ThrottleDashboard } from '../../src';

/** The partner's published limit. */
export const PARTNER_RATE = 10;
/** Server errors and timeouts within a minute that open the breaker. */
export const PARTNER_FAILURES = 5;

export class PartnerOutageStack extends Stack {
  public readonly machine: sfn.StateMachine;
  public readonly breaker: CircuitBreaker;
  public readonly parked: dynamodb.TableV2;

  constructor(scope: Construct, id: string, props?: StackProps) {
    super(scope, id, props);

    const limiter = new RateLimiter(this, 'PartnerLimit', {
      limiterName: 'payments-partner', ratePerSecond: PARTNER_RATE, burst: 2, removalPolicy: RemovalPolicy.DESTROY,
    });
    // the breaker's items live in the limiter's table (a string key pk, TTL on exp)
    this.breaker = new CircuitBreaker(this, 'PartnerBreaker', {
      breakerName: 'payments-partner-breaker',
      failureThreshold: PARTNER_FAILURES,
      window: Duration.minutes(1),
      cooldown: Duration.seconds(30),
      table: limiter.table,
      // the defaults: timeouts, Lambda's service errors, HttpInvoke's 500, 502 and 504
    });

    const connection = new events.Connection(this, 'PartnerConnection', {
      description: 'Payment partner API key',
      authorization: events.Authorization.apiKey('x-api-key', SecretValue.secretsManager('payments-partner-key')),
    });
    const charge = new tasks.HttpInvoke(this, 'Charge Payment', {
      connection,
      apiRoot: 'https://api.payments.example.com',
      apiEndpoint: sfn.TaskInput.fromText('v2/charges'),
      method: sfn.TaskInput.fromText('POST'),
      body: sfn.TaskInput.fromObject({ 'paymentId.$': '$.paymentId', 'amount.$': '$.amount' }),
      resultSelector: { 'chargeId.$': '$.ResponseBody.chargeId' },
      resultPath: '$.charge',
      taskTimeout: sfn.Timeout.duration(Duration.seconds(20)),
    });

    // while the breaker is open: park the payment for a later run, do not call the partner
    this.parked = new dynamodb.TableV2(this, 'ParkedPayments', {
      partitionKey: { name: 'paymentId', type: dynamodb.AttributeType.STRING },
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const park = new tasks.DynamoPutItem(this, 'Park Payment', {
      table: this.parked,
      item: {
        paymentId: tasks.DynamoAttributeValue.fromString(sfn.JsonPath.stringAt('$.paymentId')),
        reason: tasks.DynamoAttributeValue.fromString(sfn.JsonPath.stringAt('$.circuit.open.cause')),
      },
      resultPath: sfn.JsonPath.DISCARD,
    });

    const limited = new RateLimitedTask(this, 'Partner', {
      limiter,
      task: charge,
      // 429 and 503 are throttling: retried through the limiter. 500/502/504 and timeouts are the breaker's.
      retry: RetryPolicy.custom({ errors: ['States.Http.StatusCode.429', 'States.Http.StatusCode.503'], maxAttempts: 5 }),
      circuitBreaker: { breaker: this.breaker, fallback: park.next(new sfn.Succeed(this, 'Parked')) },
    });
    limited.addCatch(new sfn.Fail(this, 'Charge Failed', { error: 'ChargeFailed', causePath: '$.error.Cause' }), { resultPath: '$.error' });

    this.machine = new sfn.StateMachine(this, 'ChargePayment', {
      definitionBody: sfn.DefinitionBody.fromChainable(limited),
      tracingEnabled: true,
      timeout: Duration.hours(1),
    });
    new ThrottleDashboard(this, 'Dashboard').addLimiter(limiter).addCircuitBreaker(this.breaker);
  }
}
