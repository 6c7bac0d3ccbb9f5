// Scenario (d): the guide's database that takes 50 connections. Every execution that queries it holds one of 50
// slots, across every execution and Map at once; a query that fails or an execution that is stopped gives its slot
// back (the release, the reaper, or the lease's expiry), and executions beyond 50 wait in one state, not polling.
import { Duration, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import { ConcurrencyLimitedTask, ConcurrencyLimiter } from '../../src';

export const CONNECTIONS = 50;

export class OrdersDatabaseStack extends Stack {
  public readonly machine: sfn.StateMachine;
  public readonly limiter: ConcurrencyLimiter;

  constructor(scope: Construct, id: string, props?: StackProps) {
    super(scope, id, props);
    this.limiter = new ConcurrencyLimiter(this, 'OrdersDb', {
      limiterName: 'orders-db', limit: CONNECTIONS, leaseDuration: Duration.minutes(5), maxWait: Duration.minutes(10), removalPolicy: RemovalPolicy.DESTROY,
    });
    // The query: a function that opens a connection to the database (here, by ARN).
    const query = lambda.Function.fromFunctionArn(this, 'QueryFunction', this.formatArn({ service: 'lambda', resource: 'function', resourceName: 'orders-report-query', arnFormat: undefined }));
    const runQuery = tasks.LambdaInvoke.jsonPath(this, 'Run Report Query', { lambdaFunction: query, payloadResponseOnly: true, retryOnServiceExceptions: false });
    const limited = new ConcurrencyLimitedTask(this, 'Query', { limiter: this.limiter, task: runQuery, key: 'orders-db' });
    this.machine = new sfn.StateMachine(this, 'OrdersReport', {
      definitionBody: sfn.DefinitionBody.fromChainable(limited),
      tracingEnabled: true,
      timeout: Duration.hours(1),
    });
  }
}
