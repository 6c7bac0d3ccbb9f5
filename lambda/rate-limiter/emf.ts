import type { AcquireOutcome } from './limiter';
import { LIMITER_DIMENSION, LimiterMetricNames, METRIC_NAMESPACE } from '../../src/private/contract';

/** Figures of one acquire call. */
export interface AcquireMetrics {
  readonly admitted: number;
  readonly delayed: number;
  readonly rejected: number;
  readonly waitMs?: number;
  readonly dynamoCalls: number;
  readonly unavailable: number;
  /** The admitted slot, epoch µs: a log field (not a metric), so each admission's start can be traced in the logs. */
  readonly notBeforeUs?: number;
  /** The bucket key (a log field). */
  readonly key?: string;
  /** The key's rate in force, tokens per second (the LimitInForce metric: its maximum shows the highest in force). */
  readonly limitPerSecond?: number;
  /** Tokens of slots given up because their answer came back too late (a window rule): the LateSlots metric. */
  readonly lateSlots?: number;
}

export function metricsOf(outcome: AcquireOutcome): AcquireMetrics {
  if (!outcome.admitted) {
    return {
      admitted: 0,
      delayed: 0,
      rejected: outcome.tokens,
      dynamoCalls: outcome.dynamoCalls,
      unavailable: 0,
      key: outcome.key,
      limitPerSecond: outcome.limitPerSecond,
    };
  }
  // the given-up slots' tokens were taken too (Admitted counts them; LateSlots says they were never used)
  const late = outcome.lateTokens ?? 0;
  return {
    admitted: outcome.tokens + late,
    ...(late > 0 ? { lateSlots: late } : {}),
    delayed: outcome.waitUs > 0 ? outcome.tokens : 0,
    rejected: 0,
    waitMs: outcome.waitUs / 1000,
    dynamoCalls: outcome.dynamoCalls,
    unavailable: 0,
    notBeforeUs: outcome.atUs,
    key: outcome.key,
    limitPerSecond: outcome.limitPerSecond,
  };
}

/**
 * One CloudWatch Embedded Metric Format line: CloudWatch Logs turns it into metrics, no PutMetricData call.
 * @see https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
 */
/**
 * The per-dimension metrics of a limiter of several limits: what an acquire took of each (`Taken_<dimension>`), and
 * what a settle changed (`Settled_<dimension>`, used − taken: negative when the estimate was above the use). Their
 * sum over a period is what the dimension's calls used.
 */
export function dimensionMetrics(kind: 'Taken' | 'Settled', amounts: Readonly<Record<string, number>>): Record<string, number> {
  return Object.fromEntries(Object.entries(amounts).map(([d, v]) => [`${kind}_${d}`, v]));
}

export function emfLine(limiterName: string, m: AcquireMetrics, timestampMs: number, extra: Readonly<Record<string, number>> = {}): string {
  const metrics: { Name: string; Unit: string }[] = [
    { Name: LimiterMetricNames.ADMITTED, Unit: 'Count' },
    { Name: LimiterMetricNames.DELAYED, Unit: 'Count' },
    { Name: LimiterMetricNames.REJECTED, Unit: 'Count' },
    { Name: LimiterMetricNames.DYNAMODB_CALLS, Unit: 'Count' },
    { Name: LimiterMetricNames.UNAVAILABLE, Unit: 'Count' },
  ];
  const values: Record<string, number> = {
    [LimiterMetricNames.ADMITTED]: m.admitted,
    [LimiterMetricNames.DELAYED]: m.delayed,
    [LimiterMetricNames.REJECTED]: m.rejected,
    [LimiterMetricNames.DYNAMODB_CALLS]: m.dynamoCalls,
    [LimiterMetricNames.UNAVAILABLE]: m.unavailable,
  };
  if (m.waitMs !== undefined) {
    metrics.push({ Name: LimiterMetricNames.WAIT_TIME, Unit: 'Milliseconds' });
    values[LimiterMetricNames.WAIT_TIME] = Math.round(m.waitMs * 1000) / 1000;
  }
  if (m.lateSlots !== undefined) {
    metrics.push({ Name: LimiterMetricNames.LATE_SLOTS, Unit: 'Count' });
    values[LimiterMetricNames.LATE_SLOTS] = m.lateSlots;
  }
  for (const [name, v] of Object.entries(extra)) {
    metrics.push({ Name: name, Unit: 'Count' });
    values[name] = v;
  }
  // the rate in force, per limiter and per limiter and key (an override shows here within its cache's 10 s)
  const inForce = m.limitPerSecond !== undefined && m.key !== undefined;
  if (inForce) {
    metrics.push({ Name: LimiterMetricNames.LIMIT_IN_FORCE, Unit: 'Count/Second' });
    values[LimiterMetricNames.LIMIT_IN_FORCE] = m.limitPerSecond!;
  }
  return JSON.stringify({
    _aws: {
      Timestamp: Math.floor(timestampMs),
      CloudWatchMetrics: [
        { Namespace: METRIC_NAMESPACE, Dimensions: [[LIMITER_DIMENSION]], Metrics: metrics },
        ...(inForce ? [{ Namespace: METRIC_NAMESPACE, Dimensions: [[LIMITER_DIMENSION, 'Key']], Metrics: [{ Name: LimiterMetricNames.LIMIT_IN_FORCE, Unit: 'Count/Second' }] }] : []),
      ],
    },
    [LIMITER_DIMENSION]: limiterName,
    ...values,
    ...(m.notBeforeUs !== undefined ? { NotBeforeUs: m.notBeforeUs } : {}),
    ...(m.key !== undefined ? { Key: m.key } : {}),
  });
}
