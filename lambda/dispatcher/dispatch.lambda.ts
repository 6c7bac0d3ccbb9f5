import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { SendTaskFailureCommand, SendTaskSuccessCommand, SFNClient } from '@aws-sdk/client-sfn';
import { dispatchBatch, type InvokeResult, type QueueRecord } from './dispatcher';
import { DynamoDbBucketStore } from '../rate-limiter/dynamodb-store';
import { emfLine, metricsOf } from '../rate-limiter/emf';
import { RateLimitExceeded } from '../rate-limiter/errors';
import { configFromEnv, Limiter } from '../rate-limiter/limiter';
import { clockUs, sleepUntilUs } from '../shared/clock';

// Built once per container, with the default SDK configuration (AWS_ENDPOINT_URL_* can point the clients at
// local emulators). With LIMITER_NAME set, every message takes a token from the same GCRA bucket the
// RateLimiter's acquire function uses, through the same Limiter and store code.
const target = requiredEnv('TARGET_FUNCTION');
const lambda = new LambdaClient({});
const sfn = new SFNClient({});
const limiterConfig = process.env.LIMITER_NAME ? configFromEnv(process.env) : undefined;
const limiter = limiterConfig && new Limiter(limiterConfig, {
  store: new DynamoDbBucketStore(new DynamoDBClient({}), requiredEnv('TABLE_NAME')),
  clockUs,
  random: Math.random,
});
const limiterKey = process.env.LIMITER_KEY ?? 'default';
const decoder = new TextDecoder();

async function acquire(): Promise<void> {
  const outcome = await limiter!.acquire({ key: limiterKey, tokens: 1, mode: 'RESERVE' });
  process.stdout.write(`${emfLine(limiterConfig!.limiterName, metricsOf(outcome), Date.now())}\n`);
  if (!outcome.admitted) throw new RateLimitExceeded(Math.ceil(outcome.retryAfterUs / 1000));
  await sleepUntilUs(outcome.atUs);
}

async function invoke(payload: unknown): Promise<InvokeResult> {
  const res = await lambda.send(new InvokeCommand({
    FunctionName: target,
    InvocationType: 'RequestResponse',
    Payload: new TextEncoder().encode(JSON.stringify(payload ?? null)),
  }));
  const text = res.Payload ? decoder.decode(res.Payload) : 'null';
  if (res.FunctionError) {
    let error = 'Lambda.Unknown';
    try {
      error = JSON.parse(text).errorType ?? error;
    } catch { /* keep the generic name */ }
    return { ok: false, error, cause: text };
  }
  return { ok: true, output: text === '' ? null : JSON.parse(text) };
}

/** An SQS event source batch, with partial batch failures. */
export const handler = async (event: { Records: QueueRecord[] }) => {
  const summary = await dispatchBatch(event.Records ?? [], {
    acquire: limiter ? acquire : undefined,
    invoke,
    sendTaskSuccess: async (taskToken, output) => {
      await sfn.send(new SendTaskSuccessCommand({ taskToken, output: JSON.stringify(output ?? null) }));
    },
    sendTaskFailure: async (taskToken, error, cause) => {
      await sfn.send(new SendTaskFailureCommand({ taskToken, error: error.slice(0, 256), cause: cause.slice(0, 32_768) }));
    },
    warn: (message) => process.stderr.write(`${JSON.stringify({ level: 'WARN', message })}\n`),
  });
  return { batchItemFailures: summary.batchItemFailures };
};

function requiredEnv(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is required`);
  return v;
}
