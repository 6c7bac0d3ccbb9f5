import * as sfn from 'aws-cdk-lib/aws-stepfunctions';

/**
 * How an acquire call behaves when the bucket has no token right now.
 */
export enum AcquireMode {
  /**
   * Reserve the next free slot (up to `maxWait` ahead) and wait for it: one acquire call, no polling.
   */
  RESERVE = 'RESERVE',
  /**
   * Take a token only if one is free now; otherwise fail with `RateLimitExceeded` carrying `retryAfterMs`.
   */
  TRY = 'TRY',
}

/**
 * The class of an acquire under contention. A class below HIGH admits only while the limiter's `priorityReserve`
 * (per class below HIGH) of its burst stays free for the classes above it, and never reserves ahead: it is refused
 * with `RateLimitExceeded` and retried instead, so a higher class never queues behind it. Without contention any
 * class may use the whole limit. An acquire without a priority ranks with HIGH (and reserves as always).
 */
export enum Priority {
  /** Critical work: the whole burst, and RESERVE queues up to `maxWait` ahead. */
  HIGH = 'HIGH',
  /** Leaves `priorityReserve` of the burst to HIGH; never reserves ahead. */
  NORMAL = 'NORMAL',
  /** Leaves twice `priorityReserve` of the burst to NORMAL and HIGH; never reserves ahead. */
  LOW = 'LOW',
}

/**
 * What one acquire takes from a limiter: the one shape used by `RateLimiter.acquire()`, `RateLimitedTask`,
 * `ThrottledMap` (per item, or per item of a batch) and the queue dispatcher (`QueueTarget.dispatch`).
 */
export interface AcquireOptions {
  /**
   * The bucket to take from: a literal, or a JSONPath into the state input (e.g. `$.tenantId`).
   *
   * Each key gets its own bucket with the limiter's limit (or the key's run-time override). A literal has 1 to 512
   * characters.
   *
   * @default 'default' - one bucket for every caller
   */
  readonly key?: string;

  /**
   * How much of each of the limiter's dimensions one acquire takes, e.g. `{ requests: 2 }`. Each amount is an
   * integer from 1 to floor(burst / shards) of that dimension's limit, or a number read from the state input at run
   * time (`JsonPath.numberAt('$.cost')`, checked by the acquire function). Every dimension named must be one of the
   * limiter's (`Limit.dimension`).
   *
   * @default { requests: 1 }
   */
  readonly consume?: { [dimension: string]: number };

  /**
   * What to do when no token is free now.
   *
   * @default AcquireMode.RESERVE
   */
  readonly mode?: AcquireMode;

  /**
   * The acquire's class under contention (a limiter of one limit). Give every caller of a limiter a class when you
   * use them: an acquire without one ranks with HIGH.
   *
   * @default - none: ranks with HIGH, reserves up to `maxWait`
   */
  readonly priority?: Priority;
}

/**
 * Options of `RateLimiter.acquire()`: what to take, and where the result goes.
 */
export interface AcquireStateOptions extends AcquireOptions {
  /**
   * The query language of the state machine these states render into, needed only when they are nested in a Parallel
   * or Map of yours in a JSONata machine (aws-cdk-lib renders nested states without the machine's language).
   *
   * @default - the state machine's, decided when it is rendered
   */
  readonly queryLanguage?: sfn.QueryLanguage;

  /**
   * Where the acquire result (`waitSeconds`, `waitMs`, `notBefore`, `shard`) goes in the state output.
   *
   * @default - discarded: the next state sees the original input
   */
  readonly resultPath?: string;
}
