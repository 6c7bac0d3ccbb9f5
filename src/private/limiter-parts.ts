import { Duration, Names, RemovalPolicy, Token } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import { Construct, IConstruct } from 'constructs';
import { LIMITER_DIMENSION, METRIC_NAMESPACE } from './contract';
import { fail } from './validation';

// What every limiter construct (RateLimiter, ConcurrencyLimiter) has the same way: its name, its table, its metrics.

/** A limiter name: it prefixes the limiter's items and is its metrics' dimension. Default: unique in the app. */
export function checkedLimiterName(scope: Construct, name: string = Names.uniqueResourceName(scope, { maxLength: 64, separator: '-' })): string {
  if (!Token.isUnresolved(name) && !/^[A-Za-z0-9._-]{1,64}$/.test(name)) {
    fail(scope, `limiterName must be 1 to 64 letters, digits, '.', '_' or '-', got ${JSON.stringify(name)}`);
  }
  return name;
}

/**
 * The limiter's table: the one given, or a new on-demand table (partition key `pk`, TTL on `exp`, encrypted, point-in-time
 * recovery, retained by default). `removalPolicy` with a given table is an error: that table's policy is its owner's.
 */
export function limiterTable(scope: Construct, table: dynamodb.ITable | undefined, removalPolicy: RemovalPolicy | undefined): dynamodb.ITable {
  if (table && removalPolicy !== undefined) {
    fail(scope, `removalPolicy applies to the table this construct creates: provide either table or removalPolicy, but not both (got table ${table.node.path} and removalPolicy ${removalPolicy})`);
  }
  return table ?? new dynamodb.Table(scope, 'Table', {
    partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
    billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
    timeToLiveAttribute: 'exp',
    encryption: dynamodb.TableEncryption.AWS_MANAGED,
    pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
    removalPolicy: removalPolicy ?? RemovalPolicy.RETAIN,
  });
}

/** A metric a limiter's function publishes: namespace `CdkSfnThrottle`, dimension `LimiterName`, sum over 1 minute. */
export function limiterMetric(scope: IConstruct, limiterName: string, metricName: string, props?: cloudwatch.MetricOptions): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: METRIC_NAMESPACE,
    metricName,
    dimensionsMap: { [LIMITER_DIMENSION]: limiterName },
    statistic: cloudwatch.Stats.SUM,
    period: Duration.minutes(1),
    ...props,
  }).attachTo(scope);
}
