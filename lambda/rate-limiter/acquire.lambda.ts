import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDbBucketStore } from './dynamodb-store';
import { emfLine, metricsOf } from './emf';
import { InvalidAcquireRequest, LimiterUnavailable, RateLimitExceeded } from './errors';
import { configFromEnv, Limiter } from './limiter';
import { type AcquireRequest, parseRequest } from './request';
import { retryStep, stampRedrive } from './retry';
import { AcquireField, type AcquireResult, type BackoffResult, BACKOFF_PHASE, LimiterEnv } from '../../src/private/contract';
import { clockUs, sleepUntilUs } from '../shared/clock';

export type { AcquireResult, BackoffResult };

// Built once per container. The client uses the default SDK configuration, so AWS_ENDPOINT_URL_DYNAMODB /
// AWS_ENDPOINT_URL can point it at a local emulator.
const config = configFromEnv(process.env);
const limiter = new Limiter(config, {
  store: new DynamoDbBucketStore(new DynamoDBClient({}), requiredEnv(LimiterEnv.TABLE_NAME)),
  clockUs,
  random: Math.random,
});

/**
 * Acquires tokens. When the event carries `input`, it is echoed back so a Wait state's OutputPath can restore
 * the workflow's original input (the acquire fragment's default).
 */
export const handler = async (event: unknown): Promise<(AcquireResult & { input?: unknown }) | BackoffResult> => {
  const request = parseRequest(event);
  if (request.phase === BACKOFF_PHASE) {
    return backoff(event, request);
  }
  // A resultPath that cannot be applied fails before a token is taken (a token taken is a token spent).
  if (request.resultField && hasInput(event)) checkResultPath(event.input, request.resultField);
  let outcome;
  try {
    outcome = await limiter.acquire(request);
  } catch (err) {
    if (err instanceof LimiterUnavailable) {
      emit(emfLine(config.limiterName, { admitted: 0, delayed: 0, rejected: 0, dynamoCalls: 0, unavailable: 1 }, Date.now()));
    }
    throw err;
  }
  emit(emfLine(config.limiterName, metricsOf(outcome), Date.now()));
  if (!outcome.admitted) {
    throw new RateLimitExceeded(Math.ceil(outcome.retryAfterUs / 1000));
  }
  const waitSeconds = await sleepSubSecondUntil(outcome.atUs);
  const result: AcquireResult = {
    admitted: true,
    key: outcome.key,
    tokens: outcome.tokens,
    shard: outcome.shard,
    waitSeconds,
    waitMs: outcome.waitUs / 1000,
    notBeforeUs: outcome.atUs,
    notBefore: new Date(Math.ceil(outcome.atUs / 1000)).toISOString(),
  };
  if (!hasInput(event)) return result;
  const input = stampRedrive(event.input, request);
  return { ...result, input: request.resultField ? withField(input, request.resultField, result) : input };
};

/**
 * A RateLimitedTask's retry step, before it acquires again: counts the attempt, sleeps the sub-second part of
 * the backoff (exponential, capped, full jitter) and returns the whole seconds for its Wait state. No token is
 * taken here: the acquire after the Wait takes one at the time the call will really happen.
 */
async function backoff(event: unknown, request: AcquireRequest): Promise<BackoffResult> {
  const step = retryStep(hasInput(event) ? event.input : undefined, request.retry, Math.random, {
    task: request.task,
    redriveCount: request.redriveCount,
  });
  const waitSeconds = await sleepSubSecondUntil(clockUs() + step.delayUs);
  return { attempt: step.attempt, waitSeconds, waitMs: step.delayUs / 1000, input: step.input };
}

/**
 * Splits what is left until `atUs`: sleeps the sub-second part here and returns the whole seconds for a Wait
 * state. Timers may fire a little early against this clock, so it sleeps until the clock says so.
 */
async function sleepSubSecondUntil(atUs: number): Promise<number> {
  const waitSeconds = Math.floor(Math.max(0, atUs - clockUs()) / 1_000_000);
  // The Wait state that follows counts its whole seconds on another clock than this one (Step Functions', or the
  // runner's timers), which can run a little slower than the wall clock read here: a margin keeps the call from
  // starting before its slot.
  await sleepUntilUs(atUs - waitSeconds * 1_000_000 + (waitSeconds > 0 ? WAIT_STATE_MARGIN_US : 0));
  return waitSeconds;
}

/** Kept after a sub-second sleep that a Wait state of whole seconds follows. */
const WAIT_STATE_MARGIN_US = 2_000;

/**
 * A copy of `input` with `value` at a dotted path, as Step Functions applies a ResultPath: the input and every
 * object on the way must be JSON objects (missing ones are created); anything else fails, never replaced.
 */
export function withField(input: unknown, dotted: string, value: unknown): unknown {
  checkResultPath(input, dotted);
  const parts = dotted.split('.');
  const root: Record<string, unknown> = { ...(input as Record<string, unknown>) };
  let node = root;
  for (const p of parts.slice(0, -1)) {
    node[p] = { ...(node[p] as Record<string, unknown> | undefined) };
    node = node[p] as Record<string, unknown>;
  }
  node[parts[parts.length - 1]] = value;
  return root;
}

/** Fails as Step Functions fails a ResultPath it cannot apply: the input and every object on the way must be objects. */
function checkResultPath(input: unknown, dotted: string): void {
  if (!isObject(input)) {
    throw new InvalidAcquireRequest(`resultPath $.${dotted} needs a JSON object as the state input, got ${kindOf(input)}: set no resultPath, or give the task an object input`);
  }
  const parts = dotted.split('.');
  let node: Record<string, unknown> = input;
  for (const [i, p] of parts.slice(0, -1).entries()) {
    const child = node[p];
    if (child === undefined) return;
    if (!isObject(child)) {
      throw new InvalidAcquireRequest(`resultPath $.${dotted}: $.${parts.slice(0, i + 1).join('.')} is ${kindOf(child)}, not a JSON object`);
    }
    node = child;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function kindOf(v: unknown): string {
  return Array.isArray(v) ? 'an array' : v === null ? 'null' : `a ${typeof v}`;
}

function hasInput(event: unknown): event is { input: unknown } {
  return typeof event === 'object' && event !== null && AcquireField.INPUT in event;
}

function requiredEnv(name: string): string {
  const v = process.env[name];
  if (!v) throw new LimiterUnavailable(`environment variable ${name} is not set`);
  return v;
}

// Bypasses the Lambda runtime's console prefix so each line is pure JSON, as EMF requires.
function emit(line: string): void {
  process.stdout.write(`${line}\n`);
}
