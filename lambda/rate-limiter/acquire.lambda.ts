import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDbBucketStore } from './dynamodb-store';
import { dimensionMetrics, emfLine, metricsOf } from './emf';
import { InvalidAcquireRequest, LimiterUnavailable, RateLimitExceeded } from './errors';
import { configFromEnv, Limiter } from './limiter';
import { checkConsume, checkUsed, DynamoDbMultiStore, MultiLimiter, multiLimitsFromJson } from './multi-limiter';
import { type AcquireRequest, parseRequest } from './request';
import { errorMatches, retryStep, stampRedrive } from './retry';
import { DynamoDbTenantStore, TenantLimiter } from './tenant-limiter';
import {
  AcquireField, type AcquireResult, type BackoffResult, BACKOFF_PHASE, DECREASE_PHASE, ERROR_FIELD, LIBRARY_ERRORS, LimiterEnv, LimiterMetricNames,
  SETTLE_PHASE,
} from '../../src/private/contract';
import { clockUs, sleepUntilUs } from '../shared/clock';

export type { AcquireResult, BackoffResult };

// Built once per container. The client uses the default SDK configuration, so AWS_ENDPOINT_URL_DYNAMODB /
// AWS_ENDPOINT_URL can point it at a local emulator.
const config = configFromEnv(process.env);
const client = new DynamoDBClient({});
const bucketStore = new DynamoDbBucketStore(client, requiredEnv(LimiterEnv.TABLE_NAME));
const limiter = new Limiter(config, {
  store: bucketStore,
  clockUs,
  random: Math.random,
});
// A limiter of several limits (requests and tokens per minute, say), or of per-key limits under shared ones (tenants
// within a quota): every acquire takes from all of them at once.
const multiLimits = multiLimitsFromJson(process.env[LimiterEnv.LIMITS]);
const keyLimits = multiLimitsFromJson(process.env[LimiterEnv.KEY_LIMITS]);
const tenants = multiLimits && keyLimits && new TenantLimiter({
  limiterName: config.limiterName, shared: multiLimits[0], perKey: keyLimits[0], maxWaitMs: config.maxWaitMs,
}, { store: new DynamoDbTenantStore(client, requiredEnv(LimiterEnv.TABLE_NAME)), clockUs, overrides: bucketStore });
const multi = multiLimits && !tenants && new MultiLimiter({ limiterName: config.limiterName, limits: multiLimits, maxWaitMs: config.maxWaitMs }, {
  store: new DynamoDbMultiStore(client, requiredEnv(LimiterEnv.TABLE_NAME)),
  clockUs,
});

/**
 * Acquires tokens. When the event carries `input`, it is echoed back so a Wait state's OutputPath can restore
 * the workflow's original input (the acquire fragment's default).
 */
export type SettleResult = { settled: boolean; input?: unknown };
export type DecreaseResult = { decreased: boolean; ratePerSecond: number; key: string };

export const handler = async (event: unknown): Promise<(AcquireResult & { input?: unknown }) | BackoffResult | SettleResult | DecreaseResult> => {
  const request = parseRequest(event);
  if (request.phase === BACKOFF_PHASE) {
    return backoff(event, request);
  }
  if (request.phase === SETTLE_PHASE) {
    return settle(event as Record<string, unknown>, request);
  }
  if (request.phase === DECREASE_PHASE) {
    return { ...(await decrease(request.key)), key: request.key };
  }
  // A resultPath that cannot be applied fails before a token is taken (a token taken is a token spent).
  if (request.resultField && hasInput(event)) checkResultPath(event.input, request.resultField);
  if (tenants) return acquireAll(event as Record<string, unknown>, request, tenants);
  if (multi) return acquireAll(event as Record<string, unknown>, request, multi);
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

/** A limiter of several limits: takes `consume` of every dimension at once (a missing `consume`: `tokens` of the first). */
async function acquireAll(event: Record<string, unknown>, request: AcquireRequest, m: MultiLimiter | TenantLimiter):
Promise<AcquireResult & { input?: unknown }> {
  const limits = m instanceof TenantLimiter ? [m.config.shared] : m.config.limits;
  const given = event[AcquireField.CONSUME] ?? { [limits[0].dimension]: request.tokens };
  const consume = checkConsume(given, limits);
  let outcome;
  try {
    outcome = m instanceof TenantLimiter
      ? await m.acquire(request.key, consume[limits[0].dimension], request.mode)
      : await m.acquire(request.key, consume, request.mode);
  } catch (err) {
    if (err instanceof LimiterUnavailable) {
      emit(emfLine(config.limiterName, { admitted: 0, delayed: 0, rejected: 0, dynamoCalls: 0, unavailable: 1 }, Date.now()));
    }
    throw err;
  }
  emit(emfLine(config.limiterName, {
    admitted: outcome.admitted ? 1 : 0,
    delayed: outcome.admitted && outcome.waitUs > 0 ? 1 : 0,
    rejected: outcome.admitted ? 0 : 1,
    dynamoCalls: outcome.dynamoCalls,
    unavailable: 0,
    ...(outcome.admitted ? { waitMs: outcome.waitUs / 1000, notBeforeUs: outcome.atUs, key: outcome.key } : {}),
  }, Date.now(), outcome.admitted ? dimensionMetrics('Taken', consume) : {}));
  if (!outcome.admitted) throw new RateLimitExceeded(Math.ceil(outcome.retryAfterUs / 1000));
  const waitSeconds = await sleepSubSecondUntil(outcome.atUs);
  const result: AcquireResult = {
    admitted: true,
    key: outcome.key,
    tokens: consume[limits[0].dimension] ?? 0,
    shard: 0,
    waitSeconds,
    waitMs: outcome.waitUs / 1000,
    notBeforeUs: outcome.atUs,
    notBefore: new Date(Math.ceil(outcome.atUs / 1000)).toISOString(),
    taken: consume,
    tats: outcome.tats,
  };
  if (!hasInput(event)) return result;
  const input = stampRedrive(event.input, request);
  return { ...result, input: request.resultField ? withField(input, request.resultField, result) : input };
}

/** Settles an admitted acquire of a limiter of several limits: `consume` was taken, `used` was used. */
async function settle(event: Record<string, unknown>, request: AcquireRequest): Promise<SettleResult> {
  if (!multi) throw new InvalidAcquireRequest(`settle needs a limiter of several limits (limits: [...]) without keyLimits: this one has ${tenants ? 'keyLimits' : 'one'}`);
  const taken = checkUsed(event[AcquireField.CONSUME], multi.config.limits);
  const used = checkUsed(event[AcquireField.USED], multi.config.limits);
  const out = await multi.settle(request.key, taken, used, tatsOf(event[AcquireField.TATS]));
  const delta = Object.fromEntries(Object.keys(taken).map((d) => [d, (used[d] ?? taken[d]) - taken[d]]));
  emit(emfLine(config.limiterName, { admitted: 0, delayed: 0, rejected: 0, dynamoCalls: out.dynamoCalls, unavailable: 0 }, Date.now(), dimensionMetrics('Settled', delta)));
  return hasInput(event) ? { settled: out.changed, input: event.input } : { settled: out.changed };
}

/** The tats an acquire returned, as a settle passes them back (anything else: none, so nothing is given back). */
function tatsOf(v: unknown): Record<string, number> {
  if (!isObject(v)) return {};
  return Object.fromEntries(Object.entries(v).filter(([, t]) => typeof t === 'number' && Number.isFinite(t))) as Record<string, number>;
}

/** Gives back all an acquire took (its result is at `field` of `input`): the call it was for did not happen. */
async function giveBack(input: unknown, field: string, m: MultiLimiter): Promise<void> {
  let node: unknown = input;
  for (const part of field.split('.')) node = isObject(node) ? node[part] : undefined;
  if (!isObject(node) || typeof node.key !== 'string' || !isObject(node.taken)) return;
  const taken = checkUsed(node.taken, m.config.limits);
  const none = Object.fromEntries(Object.keys(taken).map((d) => [d, 0]));
  const out = await m.settle(node.key, taken, none, tatsOf(node.tats));
  emit(emfLine(config.limiterName, { admitted: 0, delayed: 0, rejected: 0, dynamoCalls: out.dynamoCalls, unavailable: 0 }, Date.now(),
    dimensionMetrics('Settled', Object.fromEntries(Object.entries(taken).map(([d, v]) => [d, -v])))));
}

/**
 * A RateLimitedTask's retry step, before it acquires again: counts the attempt, sleeps the sub-second part of
 * the backoff (exponential, capped, full jitter) and returns the whole seconds for its Wait state. No token is
 * taken here: the acquire after the Wait takes one at the time the call will really happen.
 */
async function backoff(event: unknown, request: AcquireRequest): Promise<BackoffResult> {
  // An adaptive limiter: a throttling error of the downstream lowers the key's rate before anything else (the retry
  // acquires at the lower rate; a task out of attempts still reports it).
  // The library's own errors are never the downstream's signals (a wildcard in the policy's errors matches them too);
  // a decrease that fails (the table unreachable) loses one signal, not the task's retry.
  const error = hasInput(event) ? errorNameOf(event.input) : undefined;
  if (config.adaptive && request.signals && error !== undefined && !LIBRARY_ERRORS.has(error) && errorMatches(error, request.signals)) {
    try {
      await decrease(request.key);
    } catch (err) {
      process.stderr.write(`${JSON.stringify({ level: 'WARN', message: `throttling signal for key ${JSON.stringify(request.key)} not applied: ${(err as Error).message}` })}\n`);
    }
  }
  const step = retryStep(hasInput(event) ? event.input : undefined, request.retry, Math.random, {
    task: request.task,
    redriveCount: request.redriveCount,
  });
  // A RateLimitedTask that settles (several limits): the call is retried because it did not happen (the policy's
  // throttling errors), so all the acquire took goes back before the retry acquires again.
  if (multi && request.resultField && hasInput(event)) await giveBack(event.input, request.resultField, multi);
  const waitSeconds = await sleepSubSecondUntil(clockUs() + step.delayUs);
  return { attempt: step.attempt, waitSeconds, waitMs: step.delayUs / 1000, input: step.input };
}

/** A throttling signal: lowers the key's adaptive rate (once per second at most), with its metrics. */
async function decrease(key: string): Promise<{ decreased: boolean; ratePerSecond: number }> {
  const out = await limiter.decrease(key);
  const figures = { admitted: 0, delayed: 0, rejected: 0, dynamoCalls: out.dynamoCalls, unavailable: 0, key, limitPerSecond: out.ratePerSecond };
  emit(emfLine(config.limiterName, figures,
    Date.now(), { [LimiterMetricNames.THROTTLE_SIGNALS]: 1, [LimiterMetricNames.RATE_DECREASES]: out.decreased ? 1 : 0 }));
  return { decreased: out.decreased, ratePerSecond: out.ratePerSecond };
}

/** The error name a task's Catch put in the state data, if any. */
function errorNameOf(input: unknown): string | undefined {
  const e = isObject(input) ? input[ERROR_FIELD] : undefined;
  return isObject(e) && typeof e.Error === 'string' ? e.Error : undefined;
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
