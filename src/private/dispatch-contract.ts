// One source for the names BufferedQueueConsumer shares with its handlers (the dispatcher and the dead-letter
// reporter): the message envelope, the environment each handler reads, and the attributes a forwarded
// dead-lettered message carries. The construct and the handlers import from here, so they cannot drift apart.

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
