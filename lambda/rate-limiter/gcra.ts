// The Generic Cell Rate Algorithm, in integer microseconds. Pure: no clock, no I/O.
//
// A bucket is one number, `tat` (theoretical arrival time). With emission interval T and
// tolerance tau = burst × T, taking n tokens (inc = n × T) at time `now` is admitted iff
//   max(tat, now) + inc − tau ≤ now (+ maxWait when the caller accepts a reservation),
// after which tat becomes max(tat, now) + inc and the caller may start at max(now, tat − tau).
// Admissions then satisfy: in any window of length w, tokens ≤ burst + w / T ≤ burst + rate × w.

export const MICROS_PER_SECOND = 1_000_000;

/** Per-shard constants of one bucket. */
export interface BucketParams {
  /** Emission interval T, µs per token (rounded up, so the rate is never exceeded). */
  readonly intervalUs: number;
  /** Tokens a shard may hand out at once after idleness. */
  readonly shardBurst: number;
  /** tau = shardBurst × T, µs. */
  readonly toleranceUs: number;
}

/**
 * Splits a limit of `rate` tokens/s and `burst` tokens over `shards` items: each shard gets rate / shards
 * and floor(burst / shards), so the shards together never exceed the limit.
 */
export function bucketParams(rate: number, burst: number, shards: number): BucketParams {
  const intervalUs = Math.ceil((MICROS_PER_SECOND * shards) / rate);
  const shardBurst = Math.floor(burst / shards);
  return { intervalUs, shardBurst, toleranceUs: shardBurst * intervalUs };
}

/** What to do next with a bucket whose stored `tat` is known. */
export type Plan =
  /** The bucket is idle (no tat, or tat in the past): SET tat = now + inc. */
  | { readonly kind: 'idle' }
  /** The bucket is busy but has room: SET tat = tat + inc, conditional on tat staying in [now, ceiling]. */
  | { readonly kind: 'busy' }
  /** No room within the caller's patience: try again after retryAfterUs. */
  | { readonly kind: 'deny'; readonly retryAfterUs: number };

/** Inputs of one take: the tokens' cost and how long the caller accepts to wait. */
export interface Take {
  readonly incUs: number;
  readonly toleranceUs: number;
  /** 0 in TRY mode; maxWait in RESERVE mode. */
  readonly maxWaitUs: number;
  /**
   * Tolerance a priority class below HIGH leaves free for the classes above it, µs (at most toleranceUs − incUs, so
   * an idle bucket always admits): such a take admits only while that much stays free, and never reserves ahead.
   */
  readonly reserveUs?: number;
  /** Longest round-trip allowance (lookahead) the take may reserve ahead for, µs (a class below HIGH: one interval). */
  readonly lookaheadCapUs?: number;
}

/** Highest stored tat for which the busy branch may add `inc` (the busy write's condition ceiling). */
export function busyCeiling(now: number, take: Take): number {
  return now + take.toleranceUs - (take.reserveUs ?? 0) - take.incUs + take.maxWaitUs;
}

/** Decides the branch from a known stored tat (undefined: no item yet). */
export function plan(tat: number | undefined, now: number, take: Take): Plan {
  if (tat === undefined || tat <= now) {
    return { kind: 'idle' };
  }
  const ceiling = busyCeiling(now, take);
  if (tat <= ceiling) {
    return { kind: 'busy' };
  }
  return { kind: 'deny', retryAfterUs: tat - ceiling };
}

/** The time the caller may start, given the tat its write produced. */
export function admittedAt(newTat: number, now: number, toleranceUs: number): number {
  return Math.max(now, newTat - toleranceUs);
}
