import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { SendTaskFailureCommand, SendTaskSuccessCommand, SFNClient } from '@aws-sdk/client-sfn';
import { dispatchBatch, type InvokeResult, limiterAcquire, type QueueRecord } from './dispatcher';
import { ThrottleErrors } from '../../src/errors';
import { DEADLINE_MARGIN_MS, DEFAULT_KEY, DispatcherEnv, LimiterEnv, PRIORITY_CLASSES } from '../../src/private/contract';
import { DynamoDbBucketStore } from '../rate-limiter/dynamodb-store';
import { emfLine, metricsOf } from '../rate-limiter/emf';
import { configFromEnv, Limiter, type PriorityName } from '../rate-limiter/limiter';
import { clockUs, sleepUntilUs } from '../shared/clock';

// Built once per container, with the default SDK configuration (AWS_ENDPOINT_URL_* can point the clients at
// local emulators). With LIMITER_NAME set, every message takes a token from the same GCRA bucket the
// RateLimiter's acquire function uses, through the same Limiter and store code.
const target = requiredEnv(DispatcherEnv.TARGET_FUNCTION);
const targetTimeoutMs = numberEnv(DispatcherEnv.TARGET_TIMEOUT_MS, 0);
const marginMs = numberEnv(DispatcherEnv.DEADLINE_MARGIN_MS, DEADLINE_MARGIN_MS);
// One attempt per invoke: a call the SDK retried by itself would reach the target without its own token (and a
// retried network error may run the target twice). A failed call fails its message, which is redelivered.
const lambda = new LambdaClient({ maxAttempts: 1 });
const sfn = new SFNClient({});
const limiterConfig = process.env[LimiterEnv.LIMITER_NAME] ? configFromEnv(process.env) : undefined;
const limiter = limiterConfig && new Limiter(limiterConfig, {
  store: new DynamoDbBucketStore(new DynamoDBClient({}), requiredEnv(LimiterEnv.TABLE_NAME)),
  clockUs,
  random: Math.random,
});
const limiterKey = process.env[DispatcherEnv.LIMITER_KEY] ?? DEFAULT_KEY;
const limiterTokens = numberEnv(DispatcherEnv.LIMITER_TOKENS, 1);
const decoder = new TextDecoder();

/** `limiterTokens` tokens, RESERVE, its slot no later than `maxWaitMs` from now (and within the limiter's own maxWait). */
const acquire = limiter && limiterAcquire(limiter, limiterKey, limiterTokens, {
  sleepUntilUs,
  onOutcome: (outcome) => process.stdout.write(`${emfLine(limiterConfig!.limiterName, metricsOf(outcome), Date.now())}\n`),
  clockUs,
}, priorityOf(process.env[DispatcherEnv.LIMITER_PRIORITY]));

function priorityOf(v: string | undefined): PriorityName | undefined {
  if (v === undefined || v === '') return undefined;
  if (!(PRIORITY_CLASSES as readonly string[]).includes(v)) throw new Error(`environment variable ${DispatcherEnv.LIMITER_PRIORITY} must be one of ${PRIORITY_CLASSES.join(', ')}, got ${v}`);
  return v as PriorityName;
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
  try {
    return { ok: true, output: text === '' ? null : JSON.parse(text) };
  } catch (err) {
    // The target ran: an unreadable response is its outcome, not a reason to run it again.
    return { ok: false, error: ThrottleErrors.DISPATCH_FAILED, cause: `the target's response is not JSON (${(err as Error).message})` };
  }
}

/** An SQS event source batch, with partial batch failures. */
export const handler = async (event: { Records: QueueRecord[] }, context?: { getRemainingTimeInMillis?: () => number }) => {
  const remaining = context?.getRemainingTimeInMillis;
  const summary = await dispatchBatch(event.Records ?? [], {
    acquire,
    invoke,
    sendTaskSuccess: async (taskToken, output) => {
      await sfn.send(new SendTaskSuccessCommand({ taskToken, output }));
    },
    sendTaskFailure: async (taskToken, error, cause) => {
      await sfn.send(new SendTaskFailureCommand({ taskToken, error: error.slice(0, 256), cause: cause.slice(0, 32_768) }));
    },
    warn: (message) => process.stderr.write(`${JSON.stringify({ level: 'WARN', message })}\n`),
    remainingMs: remaining ? () => remaining.call(context) : undefined,
    targetTimeoutMs,
    marginMs,
  });
  return { batchItemFailures: summary.batchItemFailures };
};

function requiredEnv(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is required`);
  return v;
}

function numberEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < 0) throw new Error(`environment variable ${name} must be a number >= 0, got ${JSON.stringify(raw)}`);
  return v;
}
