// Several limits in one acquire: one GCRA bucket per dimension (requests, tokens, ...) on one item, taken together.
// Pure: no clock, no I/O. Times in integer microseconds.
//
// An acquire is admitted at one slot for every dimension: the latest of the per-dimension earliest slots. Each
// dimension then takes its amount as if the caller arrived at that slot (tat = max(tat, slot) + amount × T), so
// every dimension's admissions stay conformant at the time the caller really starts: a caller held back by one
// dimension never starts later than the slot another dimension counted it at (which would bunch with the callers
// that dimension admitted after it).
//
// Settle: after the call, the caller reports what it used. Used more than taken: the difference is taken at once
// (tat = max(tat, now) + extra × T), a debt later callers wait for. Used less: the difference is given back, but
// never below the tat the latest reservation still ahead of `now` was counted from (lowering it would let a new
// caller in before that reservation and bunch with it), and never below `now` (an idle bucket holds at most burst).
//
// The bound, per dimension, on what callers used at the slots they were given (property-tested): without give-backs,
// burst + rate·w in every window of length w; with them, 2 × burst + rate·w — a give-back arrives at settle time,
// after callers the estimate had pushed later, and lets at most one more burst in beside them. A limit meant to hold
// a provider's quota Q per window P is therefore stated as Q − 2 × burst per P when callers settle.

/** One dimension's limit, as the handler counts it. */
export interface DimensionLimit {
  readonly dimension: string;
  /** Emission interval, µs per unit (rounded up: the rate is never exceeded). */
  readonly intervalUs: number;
  /** Units at once after idleness. */
  readonly burst: number;
}

/** One dimension's bucket. */
export interface DimensionBucket {
  /** Theoretical arrival time, µs. */
  readonly tat: number;
  /** The latest slot handed out, µs. */
  readonly hz: number;
  /** The tat the latest slot's admission wrote, µs: the floor of a give-back while that slot is ahead. */
  readonly hzt: number;
  /**
   * The tat written when the bucket was last found idle (an admission after a gap, or a give-back down to now), µs:
   * an estimate taken before it was absorbed by that idle time, so it is not given back.
   */
  readonly ct?: number;
}

/** A key's buckets, by dimension (a dimension never taken from has none). */
export type MultiState = Readonly<Record<string, DimensionBucket>>;

export type MultiTake =
  /** `tats`: what this admission wrote per dimension; a settle gives back only what no idle time absorbed since. */
  | { readonly admitted: true; readonly slotUs: number; readonly state: MultiState; readonly tats: Readonly<Record<string, number>> }
  | { readonly admitted: false; readonly retryAfterUs: number; readonly binding: string };

/** Emission interval of `amount` units per `windowSeconds`, µs per unit, rounded up. */
export function intervalUs(ratePerSecond: number): number {
  return Math.ceil(1_000_000 / ratePerSecond);
}

/**
 * Takes `consume[d]` of every dimension `d` at `arrivalUs`, waiting at most `maxWaitUs` for the slot. Amounts of
 * dimensions without a limit, negative amounts and amounts above a burst are the caller's to reject first.
 */
export function takeAll(state: MultiState, arrivalUs: number, consume: Readonly<Record<string, number>>, limits: readonly DimensionLimit[],
  maxWaitUs: number): MultiTake {
  let slot = arrivalUs;
  let binding = '';
  for (const l of limits) {
    const amount = consume[l.dimension] ?? 0;
    if (amount <= 0) continue;
    const b = state[l.dimension];
    const earliest = Math.max(b?.tat ?? 0, arrivalUs) + amount * l.intervalUs - l.burst * l.intervalUs;
    if (earliest > slot) {
      slot = earliest;
      binding = l.dimension;
    }
  }
  if (slot - arrivalUs > maxWaitUs) return { admitted: false, retryAfterUs: slot - arrivalUs - maxWaitUs, binding };
  const next: Record<string, DimensionBucket> = { ...state };
  const tats: Record<string, number> = {};
  for (const l of limits) {
    const amount = consume[l.dimension] ?? 0;
    if (amount <= 0) continue;
    const b = state[l.dimension];
    const idle = !b || b.tat <= slot;
    const tat = Math.max(b?.tat ?? 0, slot) + amount * l.intervalUs;
    tats[l.dimension] = tat;
    // hz is the latest slot handed out, hzt the tat its admission wrote (a later admission may get an earlier slot)
    const latest = !b || slot >= b.hz ? { hz: slot, hzt: tat } : { hz: b.hz, hzt: b.hzt };
    next[l.dimension] = { tat, ...latest, ct: idle ? tat : b?.ct };
  }
  return { admitted: true, slotUs: slot, state: next, tats };
}

/**
 * Settles an admitted take: `taken[d]` was taken, `used[d]` was used (a dimension missing from `used` is settled at
 * what was taken), `tats[d]` is what the take wrote (its admission's place in the bucket: without it nothing is given
 * back). Returns the new state; dimensions without a limit are ignored.
 */
export function settleAll(state: MultiState, nowUs: number, taken: Readonly<Record<string, number>>, used: Readonly<Record<string, number>>,
  limits: readonly DimensionLimit[], tats: Readonly<Record<string, number>> = {}): MultiState {
  const next: Record<string, DimensionBucket> = { ...state };
  for (const l of limits) {
    const t = taken[l.dimension] ?? 0;
    const u = used[l.dimension] ?? t;
    const b = state[l.dimension];
    if (u === t) continue;
    if (u > t) {
      const idle = !b || b.tat <= nowUs;
      const tat = Math.max(b?.tat ?? 0, nowUs) + (u - t) * l.intervalUs;
      next[l.dimension] = { tat, hz: b?.hz ?? nowUs, hzt: b ? (b.hz > nowUs ? b.hzt : tat) : tat, ct: idle ? tat : b?.ct };
      continue;
    }
    if (!b) continue;
    // an estimate the bucket has since absorbed in idle time (or an admission of unknown place) is not given back
    const at = tats[l.dimension];
    if (at === undefined || at < (b.ct ?? 0)) continue;
    // the floor: a reservation still ahead keeps the tat it was counted from; an idle bucket holds at most burst
    const floor = Math.max(nowUs, b.hz > nowUs ? b.hzt : 0);
    const lowered = b.tat - (t - u) * l.intervalUs;
    const tat = Math.max(lowered, floor);
    // a give-back down to now leaves the bucket idle: what was taken before it is absorbed
    if (tat < b.tat) next[l.dimension] = { ...b, tat, ct: lowered <= nowUs ? tat : b.ct };
  }
  return next;
}
