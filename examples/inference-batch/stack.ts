// Scenario (a): a large dataset in S3 scored by a SageMaker endpoint that keeps up with 4 requests in flight.
// A Distributed Map reads the dataset, sends it in batches of 25 records, never more than 4 batches at once,
// retries the endpoint's throttling and tolerates 1 % of failed batches.
import { Duration, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import { MapConcurrency, MapMode, RetryPolicy, ThrottledMap } from '../../src';

/** Requests the endpoint serves at once (its instance count × workers). */
export const ENDPOINT_CONCURRENCY = 4;
export const BATCH_SIZE = 25;

export class InferenceBatchStack extends Stack {
  public readonly machine: sfn.StateMachine;
  public readonly map: ThrottledMap;

  constructor(scope: Construct, id: string, props?: StackProps) {
    super(scope, id, props);
    const dataset = new s3.Bucket(this, 'Dataset', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    const score = new tasks.CallAwsService(this, 'Score Batch', {
      service: 'sagemakerruntime',
      action: 'invokeEndpoint',
      iamAction: 'sagemaker:InvokeEndpoint',
      iamResources: [this.formatArn({ service: 'sagemaker', resource: 'endpoint', resourceName: 'classifier' })],
      parameters: {
        'EndpointName': 'classifier',
        'ContentType': 'application/json',
        'Body.$': 'States.JsonToString($.Items)',
      },
      resultSelector: { 'scores.$': 'States.StringToJson($.Body)' },
    });

    this.map = new ThrottledMap(this, 'Score Dataset', {
      mode: MapMode.distributed({
        itemReader: new sfn.S3JsonItemReader({ bucket: dataset, key: 'records.json' }),
        batch: { maxItems: BATCH_SIZE },
        toleratedFailurePercentage: 1,
      }),
      concurrency: MapConcurrency.fixed(ENDPOINT_CONCURRENCY),
      retry: RetryPolicy.custom({
        errors: ['SageMakerRuntime.ThrottlingException', 'SageMakerRuntime.ServiceUnavailableException', 'SageMakerRuntime.ModelNotReadyException'],
        maxAttempts: 6,
        interval: Duration.seconds(2),
      }),
      itemProcessor: score,
    });

    this.machine = new sfn.StateMachine(this, 'ScoreDataset', {
      definitionBody: sfn.DefinitionBody.fromChainable(this.map),
      tracingEnabled: true,
      timeout: Duration.hours(12),
    });
  }
}
