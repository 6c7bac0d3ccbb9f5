import * as fc from 'fast-check';
import { applyPlan, planTenant, type BucketLimit } from '../../lambda/rate-limiter/tenant-write';

// One UpdateItem per admission, right for every shared tat in its condition's range: for any snapshot, any shared
// tat the write may meet within that range gives what GCRA computes from that tat (slot, shared and key tats), and
// the snapshot's own tat is always within it.

const limit = fc.record({ intervalUs: fc.integer({ min: 1, max: 200_000 }), burst: fc.integer({ min: 1, max: 20 }) });
const t0 = 1_700_000_000_000_000;

function reference(s: number, k0: number | undefined, a: number, x: number, shared: BucketLimit, own: BucketLimit) {
  const sharedEarliest = Math.max(s, a) + (x - shared.burst) * shared.intervalUs;
  const keyEarliest = Math.max(k0 ?? 0, a) + (x - own.burst) * own.intervalUs;
  const slot = Math.max(sharedEarliest, keyEarliest, a);
  return { slot, s: Math.max(s, slot) + x * shared.intervalUs, k: Math.max(k0 ?? 0, slot) + x * own.intervalUs };
}

describe('tenant write planning (pure)', () => {
  test('every shared tat within the plan\'s range gets exactly what GCRA computes from it; the snapshot\'s is within it', () => {
    fc.assert(fc.property(limit, limit,
      fc.option(fc.integer({ min: -3_000_000, max: 3_000_000 }), { nil: undefined }),
      fc.option(fc.integer({ min: -3_000_000, max: 3_000_000 }), { nil: undefined }),
      fc.integer({ min: 1, max: 20 }), fc.integer({ min: 0, max: 5_000_000 }), fc.integer({ min: 1, max: 10 }),
      fc.array(fc.integer({ min: -4_000_000, max: 4_000_000 }), { minLength: 1, maxLength: 20, size: 'max' }),
      (shared, own, sOff, kOff, x0, maxWaitUs, tenants, others) => {
        const x = Math.min(x0, shared.burst, own.burst);
        const a = t0;
        const snap = { s: sOff === undefined ? undefined : t0 + sOff, k: kOff === undefined ? undefined : t0 + kOff, f: undefined, tenants };
        const d = planTenant(snap, a, x, shared, own, maxWaitUs);
        if (!d.admitted) {
          expect(d.retryAfterUs).toBeGreaterThan(0);
          return;
        }
        const p = d.plan;
        const sNow = snap.s ?? 0;
        expect(sNow).toBeGreaterThanOrEqual(p.lo);
        expect(sNow).toBeLessThanOrEqual(p.hi);
        for (const s of [sNow, p.lo, p.hi, ...others.map((o) => t0 + o)]) {
          if (!Number.isFinite(s) || s < p.lo || s > p.hi) continue;
          const got = applyPlan(p, s);
          const want = reference(s, snap.k, a, x, shared, own);
          expect({ slot: got.slot, s: got.s, k: got.k }).toEqual(want);
          expect(got.slot).toBeGreaterThanOrEqual(a);
          expect(got.slot - a).toBeLessThanOrEqual(maxWaitUs);
        }
      }), { numRuns: 5_000 });
  });

  test('a key over its own limit is refused from the snapshot, nothing written', () => {
    const shared = { intervalUs: 10_000, burst: 5 };
    const own = { intervalUs: 100_000, burst: 1 };
    expect(planTenant({ s: undefined, k: t0 + 100_000, f: undefined, tenants: 1 }, t0, 1, shared, own, 10_000_000))
      .toEqual({ admitted: false, retryAfterUs: 100_000, binding: 'key' });
  });
});
