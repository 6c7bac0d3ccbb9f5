import { Duration, Stack } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { fail } from './validation';

// Which downstream a Task state calls, read from its rendered Resource, and the error names Step Functions gives
// that downstream's throttling and transient failures. ErrorEquals takes exact names only.

export const LAMBDA: readonly string[] = [
  'Lambda.TooManyRequestsException',
  'Lambda.ServiceException',
  'Lambda.AWSLambdaException',
  'Lambda.SdkClientException',
  'Lambda.ClientExecutionTimeoutException',
];
export const HTTP: readonly string[] = ['States.Http.StatusCode.429', 'States.Http.StatusCode.503'];
/**
 * The optimized API Gateway integration (`apigateway:invoke`) names a failed call `ApiGateway.<status>` (as LocalStack's
 * parity-tested emulation of it does; not verified against AWS from this machine).
 */
export const API_GATEWAY: readonly string[] = ['ApiGateway.429', 'ApiGateway.503'];
/** The optimized DynamoDB integrations (DynamoGetItem, DynamoPutItem, ...) prefix errors with `DynamoDB.`. */
const DYNAMODB_OPTIMIZED = [
  'DynamoDB.ProvisionedThroughputExceededException',
  'DynamoDB.RequestLimitExceededException',
  'DynamoDB.ThrottlingException',
  'DynamoDB.InternalServerErrorException',
];

/**
 * AWS SDK integrations name errors `<ServiceName>.<ErrorName>`, both in PascalCase; the service's casing is not
 * derivable from the lower-case name in the Resource, so the common ones are listed.
 * @see https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html
 */
const SDK_SERVICE_NAMES: Record<string, string> = {
  apigateway: 'ApiGateway',
  bedrock: 'Bedrock',
  bedrockruntime: 'BedrockRuntime',
  cloudwatch: 'CloudWatch',
  dynamodb: 'DynamoDb',
  ec2: 'Ec2',
  ecs: 'Ecs',
  eventbridge: 'EventBridge',
  firehose: 'Firehose',
  kinesis: 'Kinesis',
  kms: 'Kms',
  rdsdata: 'RdsData',
  s3: 'S3',
  sagemaker: 'SageMaker',
  sagemakerruntime: 'SageMakerRuntime',
  secretsmanager: 'SecretsManager',
  ses: 'Ses',
  sesv2: 'SesV2',
  sfn: 'Sfn',
  sns: 'Sns',
  sqs: 'Sqs',
  ssm: 'Ssm',
  sts: 'Sts',
  textract: 'Textract',
};

/** Errors a service raises when it throttles, beyond the generic ones (with the Exception suffix Step Functions adds). */
const SDK_SERVICE_ERRORS: Record<string, string[]> = {
  dynamodb: ['ProvisionedThroughputExceededException', 'RequestLimitExceededException', 'InternalServerErrorException'],
  s3: ['SlowDownException'],
  kinesis: ['ProvisionedThroughputExceededException'],
  bedrockruntime: ['ModelNotReadyException'],
};
const SDK_GENERIC_ERRORS = ['ThrottlingException', 'TooManyRequestsException', 'ServiceUnavailableException'];

/** What a task calls. */
export type TaskKind =
  | { kind: 'lambda' }
  | { kind: 'http' }
  | { kind: 'apigateway' }
  | { kind: 'sdk'; service: string }
  | { kind: 'dynamodb' }
  | { kind: 'other'; resource: string };

/** The kind of downstream a task calls, from its Resource (`arn:<partition>:states:::lambda:invoke`, ...). */
export function taskKindOf(state: sfn.State): TaskKind {
  const json = state.toStateJson() as { Resource?: unknown };
  const resource = flatten(Stack.of(state).resolve(json.Resource));
  if (/:states:::lambda:invoke(\.|$)/.test(resource) || /:lambda:[^:]*:[^:]*:function:/.test(resource)) return { kind: 'lambda' };
  if (/:states:::http:invoke(\.|$)/.test(resource)) return { kind: 'http' };
  if (/:states:::apigateway:invoke(\.|$)/.test(resource)) return { kind: 'apigateway' };
  const sdk = /:states:::aws-sdk:([a-z0-9]+):/.exec(resource);
  if (sdk) return sdk[1] === 'lambda' ? { kind: 'lambda' } : { kind: 'sdk', service: sdk[1] };
  if (/:states:::dynamodb:/.test(resource)) return { kind: 'dynamodb' };
  return { kind: 'other', resource };
}

/** The throttling errors of the downstream `state` calls; throws for a kind without known names. */
export function throttlingErrorsOf(state: sfn.State): string[] {
  const k = taskKindOf(state);
  switch (k.kind) {
    case 'lambda': return [...LAMBDA];
    case 'http': return [...HTTP];
    case 'apigateway': return [...API_GATEWAY];
    case 'sdk': {
      const prefix = SDK_SERVICE_NAMES[k.service] ?? k.service.charAt(0).toUpperCase() + k.service.slice(1);
      return [...SDK_GENERIC_ERRORS, ...(SDK_SERVICE_ERRORS[k.service] ?? [])].map((e) => `${prefix}.${e}`);
    }
    case 'dynamodb': return [...DYNAMODB_OPTIMIZED];
    default:
      fail(state, `RetryPolicy.throttling() does not know the throttling errors of ${state.stateId} (Resource ${k.resource}): give errors, e.g. RetryPolicy.throttling({ errors: ['...'] })`);
  }
}

/** A resolved Resource as one string (Fn::Join pieces joined, other tokens as placeholders). */
function flatten(v: unknown): string {
  if (typeof v === 'string') return v;
  const o = v as Record<string, any> | undefined;
  if (o && Array.isArray(o['Fn::Join'])) return (o['Fn::Join'][1] as unknown[]).map(flatten).join(o['Fn::Join'][0]);
  if (o && typeof o.Ref === 'string') return `<${o.Ref}>`;
  if (o && Array.isArray(o['Fn::GetAtt'])) {
    // A function's Arn attribute: an ARN of a Lambda function.
    return o['Fn::GetAtt'][1] === 'Arn' ? 'arn:aws:lambda:region:account:function:<fn>' : '<attr>';
  }
  return '<token>';
}

/**
 * The library's own DynamoDB service-integration states (a breaker's check, an override write): their transient
 * errors retried with backoff and full jitter; an unreachable table admits nothing.
 */
export function retryDynamoDbCall(state: sfn.TaskStateBase): void {
  state.addRetry({
    errors: ['DynamoDB.InternalServerErrorException', 'DynamoDB.ProvisionedThroughputExceededException', 'DynamoDB.RequestLimitExceededException', 'DynamoDB.ThrottlingException'],
    interval: Duration.seconds(1),
    maxAttempts: 4,
    backoffRate: 2,
    jitterStrategy: sfn.JitterType.FULL,
  });
}
