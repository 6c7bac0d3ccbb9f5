// The dispatcher's core: takes an SQS batch, and for each message (in order) acquires a token when a limiter is
// configured, waits for its slot, invokes the target once, synchronously, and settles the message — deleted on
// success, left for redelivery (a batch item failure) on error, or reported back to a waiting workflow.
//
// What it promises:
// - A message's failure (acquire, invoke — SDK and service errors included, such as Lambda's 429 — or reporting)
//   fails that message only: the batch response lists it, the others are settled. Nothing escapes as a rejected
//   batch, which would make SQS deliver (and the target run) again the messages already handled.
// - FIFO: once a message of a group fails, the group's later messages fail unprocessed, keeping their order.
// - Deadline: no token is taken and no invoke starts unless the target's timeout plus a margin still fits in
//   what is left of this invocation; a slot is only reserved if it comes early enough. Messages not reached are
//   returned as failures (redelivered, not lost, not run twice).
// - A waiting workflow hears the outcome; a result Step Functions cannot take (over 256 KiB, not JSON) becomes
//   `DispatchFailed` and the message is settled, so the target is not run again for it.
import { ThrottleErrors } from '../../src/errors';
import { type AcquireModeName, DEADLINE_MARGIN_MS, MAX_TASK_OUTPUT_BYTES, TASK_TOKEN_FIELD } from '../../src/private/contract';
import { RateLimitExceeded } from '../rate-limiter/errors';
import type { AcquireOutcome, Limiter, PriorityName } from '../rate-limiter/limiter';
import { BatchFailures } from '../shared/batch-failures';

export { TASK_TOKEN_FIELD };

/**
 * Time an acquire call itself may take (its DynamoDB round trips), kept apart from the wait for the slot: the
 * slot is capped so that after the call the target's timeout plus the margin still fit.
 */
export const ACQUIRE_ALLOWANCE_MS = 500;

/**
 * The dispatcher's `acquire`: `tokens` from `limiter` (RESERVE), whose slot comes within `maxWaitMs` of now
 * (the limiter counts its own lookahead in), then a sleep until the slot. Refused (no slot that early):
 * `RateLimitExceeded`, and no token is taken.
 */
export function limiterAcquire(
  limiter: Pick<Limiter, 'acquire'>,
  key: string,
  tokens: number,
  hooks: {
    readonly sleepUntilUs: (atUs: number) => Promise<void>;
    readonly onOutcome?: (outcome: AcquireOutcome) => void;
    /** Wall clock, µs (a class below HIGH comes back after its retry-after while the deadline allows). */
    readonly clockUs?: () => number;
  },
  priority?: PriorityName,
): (maxWaitMs: number) => Promise<void> {
  const clock = hooks.clockUs ?? (() => Date.now() * 1000);
  return async (maxWaitMs) => {
    // RESERVE: a refused message would be redelivered and count a receive (the construct allows no other mode).
    const mode: AcquireModeName = 'RESERVE';
    const deadlineUs = clock() + maxWaitMs * 1000;
    for (;;) {
      const outcome = await limiter.acquire({ key, tokens, mode, priority }, { maxWaitMs: Math.max(0, (deadlineUs - clock()) / 1000) });
      hooks.onOutcome?.(outcome);
      if (outcome.admitted) {
        // (a limit derived from a provider's window rule: the limiter has given up any slot answered too late)
        await hooks.sleepUntilUs(outcome.atUs);
        return;
      }
      // A class below HIGH never reserves ahead: it comes back when room opens for it, while its slot could still come
      // in time (up to 20 ms later than the retry-after, so dispatchers refused together do not return together).
      const againUs = clock() + outcome.retryAfterUs + Math.floor(Math.random() * 20_000);
      if (priority === undefined || priority === 'HIGH' || againUs > deadlineUs) {
        throw new RateLimitExceeded(Math.ceil(outcome.retryAfterUs / 1000));
      }
      await hooks.sleepUntilUs(againUs);
    }
  };
}

/** Errors of a task-token callback that mean nobody waits for the token any more. */
export const GONE: ReadonlySet<string> = new Set(['TaskTimedOut', 'TaskDoesNotExist', 'InvalidToken']);

export interface QueueRecord {
  readonly messageId: string;
  readonly body: string;
  readonly attributes?: { readonly MessageGroupId?: string; readonly ApproximateReceiveCount?: string };
}

export type InvokeResult =
  | { readonly ok: true; readonly output: unknown }
  | { readonly ok: false; readonly error: string; readonly cause: string };

export interface DispatchDeps {
  /**
   * Takes one token and resolves at its slot, which must come within `maxWaitMs`; rejects when refused (the
   * message is retried later).
   */
  readonly acquire?: (maxWaitMs: number) => Promise<void>;
  /** Invokes the target with one message's payload; rejects when the call fails (throttled, unreachable...). */
  readonly invoke: (payload: unknown) => Promise<InvokeResult>;
  /** Reports a result, already serialized (JSON, at most 256 KiB). */
  readonly sendTaskSuccess: (token: string, outputJson: string) => Promise<void>;
  readonly sendTaskFailure: (token: string, error: string, cause: string) => Promise<void>;
  /** Logs a problem that does not change a message's fate. */
  readonly warn: (message: string) => void;
  /** Milliseconds left in this invocation (`context.getRemainingTimeInMillis()`). Default: no deadline. */
  readonly remainingMs?: () => number;
  /** The target's timeout: an invoke may take this long. Default 0. */
  readonly targetTimeoutMs?: number;
  /** Kept beyond the target's timeout. Default `DEADLINE_MARGIN_MS`. */
  readonly marginMs?: number;
}

export interface DispatchSummary {
  readonly batchItemFailures: { itemIdentifier: string }[];
  /** Target invocations started. */
  readonly invoked: number;
  /** Messages answered to a waiting workflow (success or failure). */
  readonly reported: number;
  /** Messages not reached before the deadline (returned as failures, no token taken for them). */
  readonly unreached: number;
}

/** A message body: the workflow envelope, or the payload itself (JSON when it parses, else the raw string). */
export function parseBody(body: string): { payload: unknown; taskToken?: string } {
  let parsed: unknown = body;
  try {
    parsed = JSON.parse(body);
  } catch {
    return { payload: body };
  }
  if (parsed !== null && typeof parsed === 'object' && typeof (parsed as any)[TASK_TOKEN_FIELD] === 'string') {
    return { payload: (parsed as any).input, taskToken: (parsed as any)[TASK_TOKEN_FIELD] };
  }
  return { payload: parsed };
}

const describe = (err: unknown): string => `${(err as Error)?.name ?? 'Error'}: ${(err as Error)?.message ?? String(err)}`;

/**
 * Dispatches one batch. Messages run one after another; with FIFO, once a message of a group fails, the group's
 * later messages are failed unprocessed so they keep their order on redelivery.
 */
export async function dispatchBatch(records: readonly QueueRecord[], deps: DispatchDeps): Promise<DispatchSummary> {
  const failures = new BatchFailures();
  const remaining = deps.remainingMs ?? (() => Number.POSITIVE_INFINITY);
  const needMs = (deps.targetTimeoutMs ?? 0) + (deps.marginMs ?? DEADLINE_MARGIN_MS);
  let invoked = 0;
  let reported = 0;
  let unreached = 0;

  for (let i = 0; i < records.length; i++) {
    const record = records[i];
    if (failures.blocked(record)) continue;
    const fail = () => failures.fail(record);
    const outOfTime = (why: string) => {
      const rest = records.slice(i);
      unreached += rest.length;
      failures.items.push(...rest.map((r) => ({ itemIdentifier: r.messageId })));
      deps.warn(`${rest.length} message(s) from ${record.messageId} on not dispatched: ${why}; they will be redelivered`);
    };

    // Before a token: the slot may only be as late as leaves room for the call and the target's timeout.
    const spareMs = remaining() - needMs - (deps.acquire ? ACQUIRE_ALLOWANCE_MS : 0);
    if (spareMs < 0) {
      outOfTime(`${Math.max(0, Math.floor(remaining()))} ms left, an invoke needs the target's timeout plus margin (${needMs} ms)`);
      break;
    }
    const { payload, taskToken } = parseBody(record.body);
    if (deps.acquire) {
      try {
        await deps.acquire(Math.floor(spareMs));
      } catch (err) {
        deps.warn(`message ${record.messageId}: no token (${describe(err)}); it will be redelivered`);
        fail();
        continue;
      }
      if (remaining() < needMs) {
        // The acquire call took longer than its allowance: the token is spent, but starting now could be cut off.
        deps.warn(`message ${record.messageId}: its slot came too late (${Math.floor(remaining())} ms left, an invoke needs ${needMs} ms); its token is unused`);
        outOfTime('the deadline');
        break;
      }
    }

    invoked++;
    let result: InvokeResult;
    try {
      result = await deps.invoke(payload);
    } catch (err) {
      // The call failed (throttled, unreachable): the message is redelivered and tried again with a new token.
      deps.warn(`message ${record.messageId}: the invoke failed (${describe(err)}); it will be redelivered`);
      fail();
      continue;
    }
    if (taskToken === undefined) {
      if (!result.ok) fail();
      continue;
    }

    // A waiting workflow gets the outcome, success or failure: the message is settled either way.
    const outcome = await report(record.messageId, taskToken, result, deps);
    if (outcome === 'reported') reported++;
    else if (outcome === 'retry') fail();
  }
  return { batchItemFailures: failures.items, invoked, reported, unreached };
}

/** Reports a result to the workflow waiting on `token`: 'reported', 'gone' (nobody waits) or 'retry'. */
async function report(messageId: string, token: string, result: InvokeResult, deps: DispatchDeps): Promise<'reported' | 'gone' | 'retry'> {
  const attempt = async (send: () => Promise<void>): Promise<'reported' | 'gone' | 'retry' | { invalidOutput: string }> => {
    try {
      await send();
      return 'reported';
    } catch (err) {
      const name = (err as Error)?.name;
      if (GONE.has(name)) {
        // The workflow stopped waiting: nobody is left to tell, and retrying the target would not change that.
        deps.warn(`message ${messageId}: the waiting task is gone (${name}); the message is dropped`);
        return 'gone';
      }
      if (name === 'InvalidOutput') return { invalidOutput: describe(err) };
      deps.warn(`message ${messageId}: could not report to the workflow (${describe(err)}); it will be redelivered`);
      return 'retry';
    }
  };

  if (!result.ok) {
    const r = await attempt(() => deps.sendTaskFailure(token, result.error, result.cause));
    return typeof r === 'string' ? r : 'retry';
  }
  let problem: string | undefined;
  let json: string | undefined;
  try {
    json = JSON.stringify(result.output ?? null) ?? 'null';
  } catch (err) {
    problem = `it is not JSON-serializable (${describe(err)})`;
  }
  if (json !== undefined) {
    const bytes = Buffer.byteLength(json, 'utf8');
    if (bytes > MAX_TASK_OUTPUT_BYTES) problem = `it is ${bytes} bytes of JSON, over Step Functions' limit of ${MAX_TASK_OUTPUT_BYTES} bytes for a task's output`;
  }
  if (problem === undefined) {
    const r = await attempt(() => deps.sendTaskSuccess(token, json!));
    if (typeof r === 'string') return r;
    problem = `Step Functions refused it (${r.invalidOutput})`;
  }
  // The target ran and succeeded: running it again would not make its result reportable. Settle the message.
  const cause = `message ${messageId}: the target succeeded but its result cannot be reported: ${problem}. The target is not run again for this message.`;
  deps.warn(cause);
  const r = await attempt(() => deps.sendTaskFailure(token, ThrottleErrors.DISPATCH_FAILED, cause));
  return typeof r === 'string' ? r : 'retry';
}
