// Tenants within a shared quota, written without a version check on the shared bucket: pure planning of one
// UpdateItem. No clock, no I/O; times in integer microseconds.
//
// The item holds the shared bucket's tat `s` (a number) and, per key, its own bucket's tat (`kt.<key>`) and its share
// bucket's tat (`kf.<key>`). Every admission changes `s`, so a write conditioned on the exact `s` it computed from
// loses to every other admission in flight (measured: 5–12 DynamoDB calls per admission, 25–37 of 50/s admitted, with
// 10–30 callers and 5–20 ms per call). Instead the admission is planned from a snapshot as one of a few cases, each
// written as an UpdateItem that is right for every `s` in a range (the condition): within it, the slot and the new
// tats are `s + constant` or constants — the same arithmetic the single-limit limiter does with `tat = tat + inc`.
// The key's entry is conditioned on its exact tat (only the key's own callers contend for it).
//
// The decision is takeTenant's (tenants.ts) for one dimension, computed on the actual `s` (equivalence is
// property-tested): the key over its own limit (or over its share while the shared limit binds) is refused from the
// snapshot without a write; otherwise the slot is the latest of the shared and key slots.

export interface BucketLimit {
  /** Emission interval, µs per unit. */
  readonly intervalUs: number;
  readonly burst: number;
}

export interface TenantSnapshot {
  /** The shared bucket's tat (undefined: no item, or never taken). */
  readonly s: number | undefined;
  /** This key's bucket tat (undefined: none). */
  readonly k: number | undefined;
  /** This key's share bucket tat (undefined: none). */
  readonly f: number | undefined;
  /** Keys active now (any bucket ahead of now), counting this one. */
  readonly tenants: number;
}

/** A value written: a constant, or the shared tat as it was before the write plus a constant. */
export type Written = { readonly set: number } | { readonly sharedPlus: number };

export interface TenantPlan {
  /** The write applies when the shared tat is within [lo, hi] (a missing one counts as 0). */
  readonly lo: number;
  readonly hi: number;
  readonly s: Written;
  readonly k: Written;
  /** The share tat (a constant: it is a policy, counted from arrival). */
  readonly f: number;
  /** The slot, as written values are: known, or the shared tat before the write plus a constant. */
  readonly slot: Written;
  /** The key's entry must still be exactly this (undefined: absent). */
  readonly kBefore: number | undefined;
}

export type TenantDecision =
  | { readonly admitted: false; readonly retryAfterUs: number; readonly binding: string }
  | { readonly admitted: true; readonly plan: TenantPlan };

/**
 * Plans taking `amount` for a key at `arrivalUs`. `maxWaitUs` bounds the wait; a key whose own slot is later than the
 * shared one by more than one shared emission interval is refused (it would hold the shared bucket ahead of others).
 */
export function planTenant(snap: TenantSnapshot, arrivalUs: number, amount: number, shared: BucketLimit, own: BucketLimit,
  maxWaitUs: number): TenantDecision {
  const a = arrivalUs;
  const T = shared.intervalUs;
  const x = amount;
  const s0 = snap.s ?? 0;
  const sharedEarliest = Math.max(s0, a) + (x - shared.burst) * T;
  const keyEarliest = Math.max(snap.k ?? 0, a) + (x - own.burst) * own.intervalUs;
  const start = Math.max(sharedEarliest, a);
  if (keyEarliest > start + T) return { admitted: false, retryAfterUs: keyEarliest - a, binding: 'key' };
  if (sharedEarliest > a) {
    const shareEarliest = Math.max(snap.f ?? 0, a) + (x - shared.burst) * T * snap.tenants;
    if (shareEarliest > start + T) return { admitted: false, retryAfterUs: shareEarliest - a, binding: 'share' };
  }
  const slot0 = Math.max(sharedEarliest, keyEarliest, a);
  if (slot0 - a > maxWaitUs) return { admitted: false, retryAfterUs: slot0 - a - maxWaitUs, binding: 'shared' };
  const K = Math.max(keyEarliest, a);
  const f = Math.max(snap.f ?? 0, a) + x * T * snap.tenants;
  const k0 = snap.k ?? 0;
  const lead = (shared.burst - x) * T; // s − slot while the shared bucket binds
  // Case A: the shared bucket binds (s ≥ K + lead): slot = s − lead, s' = s + xT
  if (s0 >= K + lead) {
    const hi = a + maxWaitUs + lead;
    const base = { s: { sharedPlus: x * T }, f, slot: { sharedPlus: -lead }, kBefore: snap.k };
    // A1: the key's bucket is behind the slot (k0 ≤ s − lead): k' = s − lead + xTk
    if (s0 >= k0 + lead) {
      return { admitted: true, plan: { ...base, lo: Math.max(K + lead, k0 + lead), hi, k: { sharedPlus: -lead + x * own.intervalUs } } };
    }
    // A2: the key's bucket is ahead of the slot: k' = k0 + xTk
    return { admitted: true, plan: { ...base, lo: K + lead, hi: Math.min(hi, k0 + lead - 1), k: { set: k0 + x * own.intervalUs } } };
  }
  // Case B: the slot is K (the key's slot, or arrival); k' = max(k0, K) + xTk
  const k = { set: Math.max(k0, K) + x * own.intervalUs };
  const base = { k, f, slot: { set: K }, kBefore: snap.k };
  // B1: the shared bucket is at or behind the slot: s' = K + xT
  if (s0 <= K) return { admitted: true, plan: { ...base, lo: Number.NEGATIVE_INFINITY, hi: K, s: { set: K + x * T } } };
  // B2: ahead of the slot but not binding: s' = s + xT
  return { admitted: true, plan: { ...base, lo: K + 1, hi: K + lead - 1, s: { sharedPlus: x * T } } };
}

/** What a plan writes when the shared tat is `s` (within the plan's range). */
export function applyPlan(plan: TenantPlan, s: number): { slot: number; s: number; k: number; f: number } {
  const v = (w: Written) => ('set' in w ? w.set : s + w.sharedPlus);
  return { slot: v(plan.slot), s: v(plan.s), k: v(plan.k), f: plan.f };
}
