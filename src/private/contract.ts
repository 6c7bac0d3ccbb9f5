// The contract between the constructs and the bundled handlers: every name, default and request/result shape both
// sides must agree on. This module imports only `src/errors.ts` (itself import-free), so a handler bundle that imports
// it pulls in no aws-cdk-lib or constructs code; `lambda/**` may import only this module and `src/errors.ts` (ESLint
// no-restricted-imports, and test/contract.test.ts checks the built bundles).

import { ThrottleErrors } from '../errors';

// ---- The acquire call (the acquire function, and the dispatcher's in-process acquire) ----

/** The bucket an acquire takes from when it names none. */
export const DEFAULT_KEY = 'default';
/** Longest literal key. */
export const MAX_KEY_LENGTH = 512;
/** Most items one acquire may count (a Distributed Map batch holds at most 10,000 items). */
export const MAX_COUNT = 10_000;

/** The acquire modes on the wire (`AcquireMode`'s values; test/contract.test.ts checks they match). */
export type AcquireModeName = 'RESERVE' | 'TRY';
export const ACQUIRE_MODES: readonly AcquireModeName[] = ['RESERVE', 'TRY'];
export const DEFAULT_MODE: AcquireModeName = 'RESERVE';

/** The `phase` of a RateLimitedTask's backoff step: count the attempt and draw the backoff, take no token. */
export const BACKOFF_PHASE = 'backoff';
/** The phase of a call that settles an admitted acquire: what it took (`consume`) against what it used (`used`). */
export const SETTLE_PHASE = 'settle';

/** Field names of the acquire event the state machine sends (`Parameters` of the acquire and backoff states). */
export const AcquireField = {
  KEY: 'key',
  TOKENS: 'tokens',
  /** How many items share the acquire (a batch: `States.ArrayLength($.Items)`); tokens are taken per item. */
  COUNT: 'count',
  MODE: 'mode',
  /** The state input, echoed back so the Wait state's OutputPath restores it. */
  INPUT: 'input',
  /** Dotted path in the echoed input where the result is also put (a RateLimitedTask's resultPath). */
  RESULT_FIELD: 'resultField',
  PHASE: 'phase',
  /** The RateLimitedTask the attempt count belongs to (its backoff state's name). */
  TASK: 'task',
  /** `$$.Execution.RedriveCount`: a redriven execution starts a fresh retry budget. */
  REDRIVE_COUNT: 'redriveCount',
  RETRY: 'retry',
  /** A limiter of several limits: what the acquire takes of each dimension (`{ requests: 1, tokens: 2400 }`). */
  CONSUME: 'consume',
  /** Settle: what the call used of each dimension. */
  USED: 'used',
  /** Settle: what the acquire wrote per dimension (its `tats`), which places it in each bucket. */
  TATS: 'tats',
  /** The acquire's priority class: `HIGH`, `NORMAL` or `LOW` (absent: unclassed, ranks with HIGH). */
  PRIORITY: 'priority',
  /** Backoff of an adaptive limiter: the errors that are throttling signals (they lower the rate). */
  SIGNALS: 'signals',
} as const;

/** Share of the burst each priority class below HIGH leaves to the ones above, when the limiter does not say. */
export const DEFAULT_PRIORITY_RESERVE = 0.2;

/** The library's own error names: never a downstream's throttling signal. */
export const LIBRARY_ERRORS: ReadonlySet<string> = new Set(Object.values(ThrottleErrors).filter((v): v is string => typeof v === 'string'));

/** The priority classes an acquire may name. */
export const PRIORITY_CLASSES = ['HIGH', 'NORMAL', 'LOW'] as const;

/** An adaptive limiter's decrease without a task: a CloudWatch alarm's state change (EventBridge) or a test. */
export const DECREASE_PHASE = 'decrease';

/** A retry policy as the backoff step reads it (`AcquireField.RETRY`). */
export interface RetryPayload {
  readonly maxAttempts: number;
  readonly intervalMs: number;
  readonly backoffRate: number;
  readonly maxDelayMs: number;
  readonly jitter: boolean;
  /** Error names the policy retries (exact names; `States.ALL` and `States.TaskFailed` as in ErrorEquals). */
  readonly errors?: readonly string[];
}

/** Field names of what the acquire function returns, read by the states that follow. */
export const AcquireResultField = {
  /** Whole seconds still to wait: the Wait state's `SecondsPath`. */
  WAIT_SECONDS: 'waitSeconds',
  /** The echoed state input: the Wait state's `OutputPath`. */
  INPUT: 'input',
} as const;

/** What RESERVE and TRY return on admission. */
export interface AcquireResult {
  readonly admitted: true;
  readonly key: string;
  readonly tokens: number;
  readonly shard: number;
  /** Whole seconds the caller must still wait (a Wait state's SecondsPath); the sub-second part was slept. */
  readonly waitSeconds: number;
  /** Total wait handed out with this admission, ms. */
  readonly waitMs: number;
  /** Earliest start, epoch µs (limiter clock). */
  readonly notBeforeUs: number;
  /** Earliest start, ISO 8601. */
  readonly notBefore: string;
  /** A limiter of several limits: what was taken of each dimension (a settle gives it back against what was used). */
  readonly taken?: Readonly<Record<string, number>>;
  /** A limiter of several limits: what the admission wrote per dimension (a settle passes it back). */
  readonly tats?: Readonly<Record<string, number>>;
}

/** What the backoff step of a RateLimitedTask returns. */
export interface BackoffResult {
  readonly attempt: number;
  readonly waitSeconds: number;
  readonly waitMs: number;
  readonly input: unknown;
}

/** Attempt record of the next call of a RateLimitedTask's task (`{ task, attempt, redrive }`; absent on the first). */
export const ATTEMPT_FIELD = 'cdkSfnThrottleAttempt';
/** Where the task's Catch puts an error before the backoff step. */
export const ERROR_FIELD = 'cdkSfnThrottleError';
/** Where a ThrottledMap with `catchItemFailures` puts a failed item's error. */
export const ITEM_ERROR_FIELD = 'cdkSfnThrottleItemError';

/** The environment every handler that takes tokens reads (the acquire function and the dispatcher). */
export const LimiterEnv = {
  TABLE_NAME: 'TABLE_NAME',
  LIMITER_NAME: 'LIMITER_NAME',
  RATE_PER_SECOND: 'RATE_PER_SECOND',
  BURST: 'BURST',
  SHARDS: 'SHARDS',
  MAX_WAIT_MS: 'MAX_WAIT_MS',
  /** A limiter of several limits: `[{ dimension, ratePerSecond, burst }]` as JSON (absent: one limit, the fields above). */
  LIMITS: 'LIMITS',
  /** Each key's own limits under LIMITS (tenants within a quota), as JSON like LIMITS. */
  KEY_LIMITS: 'KEY_LIMITS',
  /** An adaptive limit: `{ minRatePerSecond, decreaseFactor, increasePerSecond, maxReservationMs }` as JSON (absent: fixed). */
  ADAPTIVE: 'ADAPTIVE',
  /** Share of the tolerance each priority class below HIGH leaves to the ones above (absent: 0.2). */
  PRIORITY_RESERVE: 'PRIORITY_RESERVE',
  /**
   * A limit derived from a provider's window rule (`Limit.perWindow`): the start jitter it was derived with, ms. A slot
   * whose answer comes back too late to keep it is given up and taken again (absent: no such check).
   */
  START_JITTER_MS: 'START_JITTER_MS',
} as const;

// ---- The concurrency limiter's function ----

/** What the concurrency function is asked to do (`ConcurrencyField.OP`). */
export const ConcurrencyOp = {
  /** Take slots for a lease, or wait for them with the task token. */
  ACQUIRE: 'acquire',
  /** Give a lease's slots back (and hand them to the waiters); with `error`, raise that error again afterwards. */
  RELEASE: 'release',
  /** A waiter's maxWait passed: drop its registration (or give back what it was granted) and fail it. */
  EXPIRE: 'expire',
} as const;

/** Field names of the concurrency function's event. */
export const ConcurrencyField = {
  OP: 'op',
  KEY: 'key',
  SLOTS: 'slots',
  LEASE: 'leaseId',
  EXECUTION: 'execution',
  TOKEN: 'token',
  /** The task's error and cause (`{ Error, Cause }`), on the failure path of a release. */
  ERROR: 'error',
} as const;

/** Where a ConcurrencyLimitedTask keeps its lease in the state data (`{ leaseId, key, slots }`). */
export const LEASE_FIELD = 'cdkSfnThrottleLease';

/** The environment of the concurrency function. */
export const ConcurrencyEnv = {
  TABLE_NAME: 'TABLE_NAME',
  LIMITER_NAME: 'LIMITER_NAME',
  /** Slots per key. */
  LIMIT: 'LIMIT',
  /** How long a lease lasts, ms. */
  LEASE_MS: 'LEASE_MS',
  /** Longest wait for a slot, ms. */
  MAX_WAIT_MS: 'MAX_WAIT_MS',
} as const;

/** Metrics published by the concurrency function. */
export const ConcurrencyMetricNames = {
  /** Slots in use after an operation (maximum over the period). */
  IN_USE: 'InUse',
  /** Acquirers waiting after an operation. */
  WAITING: 'Waiting',
  /** How long a granted waiter waited, ms. */
  WAIT_TIME: 'WaitTime',
  /** Expired leases reclaimed. */
  RECLAIMED: 'Reclaimed',
  /** Waiters whose maxWait passed. */
  EXPIRED: 'Expired',
} as const;

// ---- Metrics (the handlers' EMF lines and the constructs' metricX() methods) ----

/** CloudWatch namespace of every metric the handlers publish. */
export const METRIC_NAMESPACE = 'CdkSfnThrottle';

/** Dimension naming the limiter a metric belongs to. */
export const LIMITER_DIMENSION = 'LimiterName';

/** Metrics published by the acquire handler, one EMF line per acquire call. */
export const LimiterMetricNames = {
  /** Tokens admitted (RESERVE or TRY). */
  ADMITTED: 'Admitted',
  /** Tokens admitted with a wait (RESERVE only). */
  DELAYED: 'Delayed',
  /** Tokens refused: TRY with an empty bucket, or RESERVE beyond maxWait. */
  REJECTED: 'Rejected',
  /** Wait handed out with an admission, in milliseconds. */
  WAIT_TIME: 'WaitTime',
  /** DynamoDB calls made by one acquire call. */
  DYNAMODB_CALLS: 'DynamoDbCalls',
  /** Acquire calls that failed closed because DynamoDB was unreachable or throttling. */
  UNAVAILABLE: 'Unavailable',
  /** The key's rate in force (its adaptive rate, its override's, or the deployed one), per second; also by limiter and key. */
  LIMIT_IN_FORCE: 'LimitInForce',
  /** Adaptive limiters: throttling errors reported by RateLimitedTasks (and alarm transitions). */
  THROTTLE_SIGNALS: 'ThrottleSignals',
  /** Adaptive limiters: signals that lowered the rate (the others came within a second of a decrease). */
  RATE_DECREASES: 'RateDecreases',
  /** A provider's window rule: slots given up because their answer came back too late to keep the start jitter. */
  LATE_SLOTS: 'LateSlots',
} as const;

// ---- BufferedQueueConsumer: the dispatcher and the dead-letter reporter ----

/** The field of a `waitForResult` message that carries the task token (`{ [TASK_TOKEN_FIELD]: token, input }`). */
export const TASK_TOKEN_FIELD = 'cdkSfnThrottleTaskToken';

/**
 * Time the dispatcher keeps beyond the target's timeout when it decides whether it may still take a token and
 * start an invoke: the call's own overhead (cold start of the target, network), reporting the result to the
 * workflow and returning the batch response before the dispatcher's own timeout.
 */
export const DEADLINE_MARGIN_MS = 3_000;

/** Step Functions' limit on `SendTaskSuccess` output (UTF-8 bytes). */
export const MAX_TASK_OUTPUT_BYTES = 262_144;

/** SQS's limit on a message: body and message attributes (names, types and values) together, bytes. */
export const MAX_SQS_MESSAGE_BYTES = 262_144;

/** The environment of the dispatcher. */
export const DispatcherEnv = {
  /** ARN of the function invoked once per message. */
  TARGET_FUNCTION: 'TARGET_FUNCTION',
  /** The target's timeout in milliseconds (what an invoke may take). */
  TARGET_TIMEOUT_MS: 'TARGET_TIMEOUT_MS',
  /** Milliseconds kept beyond the target's timeout before the dispatcher's deadline. */
  DEADLINE_MARGIN_MS: 'DEADLINE_MARGIN_MS',
  /** The limiter bucket the dispatcher takes from (with a limiter). */
  LIMITER_KEY: 'LIMITER_KEY',
  /** Tokens one invoke takes (with a limiter); 1 when unset. */
  LIMITER_TOKENS: 'LIMITER_TOKENS',
  /** The acquire's priority class (with a limiter); unclassed when unset. */
  LIMITER_PRIORITY: 'LIMITER_PRIORITY',
} as const;

/** The environment of the dead-letter reporter. */
export const ReporterEnv = {
  /** URL of the consumer's dead-letter queue, where reported messages are forwarded. */
  DEAD_LETTER_QUEUE_URL: 'DEAD_LETTER_QUEUE_URL',
  /** The buffer's maxReceiveCount, quoted in the failure's cause. */
  MAX_RECEIVE_COUNT: 'MAX_RECEIVE_COUNT',
  /** 'true' when the queues are FIFO (forwarded messages keep their group). */
  FIFO: 'FIFO',
} as const;

/** Message attributes of a message the reporter forwards to the dead-letter queue. */
export const DeadLetterAttributes = {
  /** The error the waiting execution was failed with (`DispatchFailed`), or none without a waiting execution. */
  ERROR: 'cdkSfnThrottleError',
  /** Why the message was dead-lettered (message id, receives). */
  CAUSE: 'cdkSfnThrottleCause',
} as const;

// ---- The circuit breaker's function ----

/** The environment of a CircuitBreaker's function. */
export const BreakerEnv = {
  TABLE_NAME: 'TABLE_NAME',
  BREAKER_NAME: 'BREAKER_NAME',
  FAILURE_THRESHOLD: 'FAILURE_THRESHOLD',
  WINDOW_MS: 'WINDOW_MS',
  COOLDOWN_MS: 'COOLDOWN_MS',
  HALF_OPEN_PROBES: 'HALF_OPEN_PROBES',
  /** The rate rule (a fraction, 0 < rate ≤ 1) and its minimum calls; absent: the count rule. */
  FAILURE_RATE: 'FAILURE_RATE',
  MINIMUM_CALLS: 'MINIMUM_CALLS',
} as const;

/** What the breaker function is asked: elect probes, or record a call's failure or a probe's success. */
export const BreakerOp = { ELECT: 'elect', FAILURE: 'failure', SUCCESS: 'success', RELEASE: 'release' } as const;

/** Fields of a breaker function request. */
export const BreakerField = {
  OP: 'op',
  KEY: 'key',
  /** Whether the call was a probe (elected while half-open). */
  PROBE: 'probe',
  /** The period the probe was elected in (the election's `period`). */
  PERIOD: 'period',
  /** The state machine's time of the request (`$$.State.EnteredTime`). */
  AT: 'at',
} as const;

/** Fields of the breaker function's answer to an election. */
export const BreakerResultField = {
  /** Whether to call the task. */
  CALL: 'call',
  PROBE: 'probe',
  /** Until when the breaker stays open (or its probes may report), ISO 8601: the retry-after of a short-circuit. */
  UNTIL: 'until',
  /** When it last opened, ISO 8601. */
  OPENED_AT: 'openedAt',
  /** A probe's period (epoch ms): sent back with the probe's verdict. */
  PERIOD: 'period',
} as const;

/**
 * Attributes of a breaker item that the state machine reads through its GetItem (no Lambda on the closed path): the
 * status (`closed`, `open`, `half`), until when it is open (ISO 8601, UTC, milliseconds: compared with
 * `$$.State.EnteredTime`) and that time rounded up to a whole second (the retry-after a Wait waits for), the probes elected in the half-open period, when it last opened (ISO 8601), and while a
 * failure window runs, its end (ISO 8601: under the rate rule successes before it are recorded).
 */
export const BreakerItem = { STATUS: 'st', UNTIL: 'until', RETRY_AFTER: 'ra', PROBES: 'pr', OPENED_AT: 'at', WINDOW_END: 'we' } as const;

/** Metrics published by the breaker function. */
export const BreakerMetricNames = {
  OPENED: 'CircuitOpened',
  CLOSED: 'CircuitClosed',
  PROBES: 'Probes',
  SHORT_CIRCUITED: 'ShortCircuited',
} as const;

// ---- Run-time limit overrides ----

/**
 * Attributes of an override item (`<limiterName>#config#<key>`): the limit in force instead of the deployed one,
 * until when (ISO 8601; absent: until cleared), and a write counter so two writers cannot interleave a half change.
 */
export const OverrideAttr = {
  RATE_PER_SECOND: 'ratePerSecond',
  BURST: 'burst',
  UNTIL: 'until',
  VERSION: 'ver',
  /** Who wrote it (CLI user, state machine, schedule), for the operator reading it. */
  BY: 'by',
} as const;
