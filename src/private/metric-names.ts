// One source for metric names: the constructs' metricX() methods and the handlers' EMF lines both
// import from here, so the dashboard and the emitted metrics cannot drift apart.

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
} as const;
