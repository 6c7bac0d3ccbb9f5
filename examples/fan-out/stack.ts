// Scenario (c): one order fans out (Parallel) to two downstreams with limits of their own — a carrier API at
// 2 requests/s and a CRM at 10 requests/s. Two limiters share one table; each branch waits only for its own.
import { Duration, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import { RateLimitedTask, RateLimiter, RetryPolicy } from '../../src';

export const CARRIER_RATE = 2;
export const CRM_RATE = 10;

export class FanOutStack extends Stack {
  public readonly machine: sfn.StateMachine;

  constructor(scope: Construct, id: string, props?: StackProps) {
    super(scope, id, props);
    const carrierLimit = new RateLimiter(this, 'CarrierLimit', {
      limiterName: 'carrier', ratePerSecond: CARRIER_RATE, burst: 1, maxWait: Duration.minutes(15), removalPolicy: RemovalPolicy.DESTROY,
    });
    const crmLimit = new RateLimiter(this, 'CrmLimit', {
      limiterName: 'crm', ratePerSecond: CRM_RATE, burst: 2, maxWait: Duration.minutes(15), table: carrierLimit.table,
    });

    const notifyCarrier = this.limitedPublish('Carrier', 'Notify Carrier', carrierLimit, 'carrier', 'ShipmentBooked');
    const updateCrm = this.limitedPublish('CRM', 'Update CRM', crmLimit, 'crm', 'OrderShipped');

    const fanOut = new sfn.Parallel(this, 'Fan Out', { resultPath: sfn.JsonPath.DISCARD })
      .branch(notifyCarrier)
      .branch(updateCrm);
    this.machine = new sfn.StateMachine(this, 'OrderFanOut', {
      definitionBody: sfn.DefinitionBody.fromChainable(fanOut),
      tracingEnabled: true,
      timeout: Duration.hours(1),
    });
  }

  /** A branch: publishes to its downstream's event bus under that downstream's own limit. */
  private limitedPublish(branchId: string, stateName: string, limiter: RateLimiter, bus: string, detailType: string): RateLimitedTask {
    return new RateLimitedTask(this, branchId, {
      limiter,
      task: new tasks.CallAwsService(this, stateName, {
        service: 'eventbridge',
        action: 'putEvents',
        iamResources: [this.formatArn({ service: 'events', resource: 'event-bus', resourceName: bus })],
        parameters: { Entries: [{ 'Source': 'orders', 'DetailType': detailType, 'Detail.$': 'States.JsonToString($)', 'EventBusName': bus }] },
        resultPath: sfn.JsonPath.DISCARD,
      }),
      retry: RetryPolicy.throttling(),
    });
  }
}
