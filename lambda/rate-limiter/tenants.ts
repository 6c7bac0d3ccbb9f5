// Tenants within a shared quota: every key (tenant) has its own limits (`keyLimits`), and all keys together stay under
// the limiter's shared limits (`limits`). Pure: no clock, no I/O. Times in integer microseconds.
//
// The model of the decision (several dimensions, on a multi-limit state: a key's bucket is the dimension
// `<dimension>@<key>`, dimensions never contain '@'; a key whose buckets are all idle is dropped, an idle bucket being
// the same as none). The handler writes one dimension of it without a version check on the shared bucket
// (tenant-write.ts, tenant-limiter.ts); the bounds and the fairness are property-tested here.
//
// Admission (takeTenant):
// - The shared bucket and the key's bucket each give an earliest slot (GCRA, as multi.ts). When the key's is later
//   than the shared one by more than one shared emission interval, the key's own limit binds: the caller is refused
//   with retryAfter (it comes back when its key has room) instead of reserving the shared bucket at that later slot —
//   a GCRA bucket cannot hold a hole, so a reservation far ahead would make every other tenant wait behind it.
// - Fairness (max-min): each key also has a share bucket at the shared rate ÷ n (n = keys active now, at least 1),
//   with the shared burst. It is always advanced but only enforced while the shared limit binds (a caller would wait
//   for it): a key that has taken more than its share recently is refused until its share has room. A key asking less
//   than its share is never refused by it (it gets what it asks); the rest goes to the busy keys, each held to its
//   share while they contend, so none of them starves the others.
// - Otherwise the caller is admitted at the latest of the shared and key slots (within maxWait), taking from both.
//
// The bounds hold as for any multi-limit admission: the shared limits over all keys, and each key's limits, in every
// window at the slots handed out (property-tested in test/lambda/tenants.property.test.ts). The share bucket is a
// policy, not a bound: it only refuses.

import { type DimensionLimit, type DimensionBucket, type MultiState, takeAll } from './multi';

/** The dimension of `key`'s bucket of `dimension` in the item's state. */
export function keyDimension(dimension: string, key: string): string {
  return `${dimension}@${key}`;
}

/** The dimension of `key`'s share bucket of the shared `dimension`. */
export function shareDimension(dimension: string, key: string): string {
  return `~${dimension}@${key}`;
}

export interface TenantLimits {
  /** All keys together. */
  readonly shared: readonly DimensionLimit[];
  /** Each key (its override, when it has one). */
  readonly perKey: readonly DimensionLimit[];
}

export type TenantTake =
  | {
    readonly admitted: true;
    readonly slotUs: number;
    readonly state: MultiState;
    readonly tats: Readonly<Record<string, number>>;
    readonly tenants: number;
  }
  /** `binding`: the shared dimension, `key:<dimension>` (the key's own limit), or `share` (the key's fair share). */
  | { readonly admitted: false; readonly retryAfterUs: number; readonly binding: string; readonly tenants: number };

/** The state without the buckets of keys idle at `nowUs` (tat and latest slot passed): none is the same as those. */
export function pruneIdle(state: MultiState, nowUs: number): MultiState {
  const out: Record<string, DimensionBucket> = {};
  for (const [d, b] of Object.entries(state)) {
    if (!d.includes('@') || b.tat > nowUs || b.hz > nowUs) out[d] = b;
  }
  return out;
}

/** The keys with a bucket in the state. */
export function activeKeys(state: MultiState): Set<string> {
  const keys = new Set<string>();
  for (const d of Object.keys(state)) {
    const at = d.indexOf('@');
    if (at > 0) keys.add(d.slice(at + 1));
  }
  return keys;
}

/** Earliest slot of taking `amount` of each limit from the buckets named by `name`, counted from `arrivalUs`. */
function earliest(state: MultiState, arrivalUs: number, limits: readonly DimensionLimit[], consume: Readonly<Record<string, number>>,
  name: (d: string) => string, scale = 1): { at: number; dimension: string } {
  let at = arrivalUs;
  let dimension = '';
  for (const l of limits) {
    const amount = consume[l.dimension] ?? 0;
    if (amount <= 0) continue;
    const t = l.intervalUs * scale;
    const e = Math.max(state[name(l.dimension)]?.tat ?? 0, arrivalUs) + (amount - l.burst) * t;
    if (e > at) {
      at = e;
      dimension = l.dimension;
    }
  }
  return { at, dimension };
}

/**
 * Takes `consume` (per dimension, the same amounts from the shared limits and the key's) for `key` at `arrivalUs`,
 * waiting at most `maxWaitUs`. Amounts are the caller's to check first (each at most every burst it meets).
 */
export function takeTenant(state0: MultiState, arrivalUs: number, key: string, consume: Readonly<Record<string, number>>, limits: TenantLimits,
  maxWaitUs: number): TenantTake {
  const state = pruneIdle(state0, arrivalUs);
  const keys = activeKeys(state);
  keys.add(key);
  const n = keys.size;
  const shared = earliest(state, arrivalUs, limits.shared, consume, (d) => d);
  const own = earliest(state, arrivalUs, limits.perKey, consume, (d) => keyDimension(d, key));
  // one shared slot of slack: a key slot that close leaves no hole worth refusing for
  const slack = Math.max(0, ...limits.shared.filter((l) => (consume[l.dimension] ?? 0) > 0).map((l) => l.intervalUs));
  const start = Math.max(shared.at, arrivalUs);
  if (own.at > start + slack) {
    return { admitted: false, retryAfterUs: own.at - arrivalUs, binding: `key:${own.dimension}`, tenants: n };
  }
  if (shared.at > arrivalUs) {
    // the shared limit binds: each key is held to its share while it does
    const share = earliest(state, arrivalUs, limits.shared, consume, (d) => shareDimension(d, key), n);
    if (share.at > start + slack) return { admitted: false, retryAfterUs: share.at - arrivalUs, binding: 'share', tenants: n };
  }
  const composite: DimensionLimit[] = [...limits.shared, ...limits.perKey.map((l) => ({ ...l, dimension: keyDimension(l.dimension, key) }))];
  const amounts: Record<string, number> = {};
  for (const l of limits.shared) if (consume[l.dimension]) amounts[l.dimension] = consume[l.dimension];
  for (const l of limits.perKey) if (consume[l.dimension]) amounts[keyDimension(l.dimension, key)] = consume[l.dimension];
  const out = takeAll(state, arrivalUs, amounts, composite, maxWaitUs);
  if (!out.admitted) return { ...out, tenants: n };
  // the share buckets advance on every admission, at the shared rate ÷ n, counted from arrival (a policy: it only
  // refuses; tenant-write.ts writes it as a constant)
  const next: Record<string, DimensionBucket> = { ...out.state };
  for (const l of limits.shared) {
    const amount = consume[l.dimension] ?? 0;
    if (amount <= 0) continue;
    const d = shareDimension(l.dimension, key);
    const tat = Math.max(state[d]?.tat ?? 0, arrivalUs) + amount * l.intervalUs * n;
    next[d] = { tat, hz: arrivalUs, hzt: tat };
  }
  return { admitted: true, slotUs: out.slotUs, state: next, tats: out.tats, tenants: n };
}

/** What a tenant admission took, by the item's dimension names (for a settle). */
export function tenantAmounts(amounts: Readonly<Record<string, number>>, key: string, limits: TenantLimits): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of limits.shared) if (amounts[l.dimension] !== undefined) out[l.dimension] = amounts[l.dimension];
  for (const l of limits.perKey) if (amounts[l.dimension] !== undefined) out[keyDimension(l.dimension, key)] = amounts[l.dimension];
  return out;
}

/** The limits by the item's dimension names, for a settle of `key`. */
export function tenantLimits(key: string, limits: TenantLimits): DimensionLimit[] {
  return [...limits.shared, ...limits.perKey.map((l) => ({ ...l, dimension: keyDimension(l.dimension, key) }))];
}
