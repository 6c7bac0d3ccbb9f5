import * as fc from 'fast-check';
import { type DimensionLimit, type MultiState } from '../../lambda/rate-limiter/multi';
import { activeKeys, keyDimension, takeTenant, type TenantLimits } from '../../lambda/rate-limiter/tenants';
import { type Admission, windowViolations } from '../../local/timing';

// Tenants within a shared quota (pure core): the shared limit over all keys and each key's own limit hold in every
// window at the slots handed out; under contention the shared capacity goes max-min fair.

const limitArb = fc.record({ intervalUs: fc.integer({ min: 1_000, max: 200_000 }), burst: fc.integer({ min: 1, max: 10 }) });

type Op = { kind: 'advance'; us: number } | { kind: 'acquire'; key: number; amount: number; maxWaitUs: number };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('advance' as const), us: fc.oneof(fc.integer({ min: 0, max: 5_000 }), fc.integer({ min: 0, max: 2_000_000 })) }),
  fc.record({
    kind: fc.constant('acquire' as const),
    key: fc.integer({ min: 0, max: 4 }),
    amount: fc.integer({ min: 1, max: 10 }),
    maxWaitUs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 10_000_000 })),
  }),
);

function windows(l: { intervalUs: number; burst: number }, admissions: Admission[]): number {
  const sorted = [...admissions].sort((a, b) => a.atUs - b.atUs);
  const tolerance = l.burst * l.intervalUs;
  let over = 0;
  for (const w of [0, l.intervalUs, Math.floor(tolerance / 2), tolerance, 3 * tolerance, 10 * tolerance, 60_000_000]) {
    over += windowViolations(sorted, 1e6 / l.intervalUs, l.burst, w);
  }
  return over;
}

describe('tenants within a shared quota (pure core)', () => {
  test('the shared limit over all keys, and each key\'s limit, hold in every window', () => {
    fc.assert(fc.property(limitArb, limitArb, fc.array(opArb, { minLength: 1, maxLength: 300, size: 'max' }), (sharedL, keyL, ops) => {
      const limits: TenantLimits = { shared: [{ dimension: 'requests', ...sharedL }], perKey: [{ dimension: 'requests', ...keyL }] };
      let now = 1_700_000_000_000_000;
      let state: MultiState = {};
      const all: Admission[] = [];
      const perKey = new Map<number, Admission[]>();
      for (const op of ops) {
        if (op.kind === 'advance') {
          now += op.us;
          continue;
        }
        const amount = Math.min(op.amount, sharedL.burst, keyL.burst);
        const out = takeTenant(state, now, `k${op.key}`, { requests: amount }, limits, op.maxWaitUs);
        if (!out.admitted) {
          expect(out.retryAfterUs).toBeGreaterThan(0);
          continue;
        }
        expect(out.slotUs).toBeGreaterThanOrEqual(now);
        expect(out.slotUs - now).toBeLessThanOrEqual(op.maxWaitUs);
        state = out.state;
        all.push({ atUs: out.slotUs, tokens: amount });
        perKey.set(op.key, [...(perKey.get(op.key) ?? []), { atUs: out.slotUs, tokens: amount }]);
      }
      expect(windows(sharedL, all)).toBe(0);
      for (const admissions of perKey.values()) expect(windows(keyL, admissions)).toBe(0);
    }), { numRuns: 1500 });
  });

  test('an idle key leaves the item: it holds the tenants active now', () => {
    const limits: TenantLimits = { shared: [{ dimension: 'requests', intervalUs: 10_000, burst: 10 }], perKey: [{ dimension: 'requests', intervalUs: 50_000, burst: 2 }] };
    const t0 = 1_000_000_000;
    let state: MultiState = {};
    for (const key of ['a', 'b', 'c']) state = (takeTenant(state, t0, key, { requests: 1 }, limits, 0) as any).state;
    expect([...activeKeys(state)].sort()).toEqual(['a', 'b', 'c']);
    expect(state[keyDimension('requests', 'a')].tat).toBe(t0 + 50_000);
    // a second later only d is active
    const later = takeTenant(state, t0 + 1_000_000, 'd', { requests: 1 }, limits, 0) as any;
    expect([...activeKeys(later.state)]).toEqual(['d']);
    expect(later.tenants).toBe(1);
  });

  test('a key over its own limit is refused (retryAfter), not queued ahead of the other keys', () => {
    const limits: TenantLimits = { shared: [{ dimension: 'requests', intervalUs: 10_000, burst: 5 }], perKey: [{ dimension: 'requests', intervalUs: 100_000, burst: 1 }] };
    const t0 = 1_000_000_000;
    const a1 = takeTenant({}, t0, 'a', { requests: 1 }, limits, 10_000_000) as any;
    expect(a1.slotUs).toBe(t0);
    const a2 = takeTenant(a1.state, t0, 'a', { requests: 1 }, limits, 10_000_000);
    expect(a2).toMatchObject({ admitted: false, retryAfterUs: 100_000, binding: 'key:requests' });
    // b is not behind a's next slot
    expect(takeTenant(a1.state, t0, 'b', { requests: 1 }, limits, 10_000_000)).toMatchObject({ admitted: true, slotUs: t0 });
  });
});

// Fairness: closed-loop workers per key (each acquires again at its slot, or when told to come back); the shared
// capacity each key gets over 60 s.
interface Tenant { readonly key: string; readonly workers: number; /** open-loop: one acquire every this many µs */ readonly everyUs?: number }

function simulate(limits: TenantLimits, tenants: Tenant[], seconds: number, maxWaitUs = 10_000_000) {
  const t0 = 1_000_000_000_000;
  const end = t0 + seconds * 1e6;
  let state: MultiState = {};
  const events: { at: number; key: string }[] = [];
  for (const t of tenants) {
    if (t.everyUs) for (let at = t0; at < end; at += t.everyUs) events.push({ at, key: t.key });
    else for (let w = 0; w < t.workers; w++) events.push({ at: t0 + w, key: t.key });
  }
  const got = new Map<string, Admission[]>(tenants.map((t) => [t.key, []]));
  const closed = new Set(tenants.filter((t) => !t.everyUs).map((t) => t.key));
  let maxTenants = 0;
  while (events.length > 0) {
    events.sort((a, b) => a.at - b.at);
    const e = events.shift()!;
    if (e.at >= end) continue;
    const out = takeTenant(state, e.at, e.key, { requests: 1 }, limits, maxWaitUs);
    maxTenants = Math.max(maxTenants, out.tenants);
    if (out.admitted) {
      state = out.state;
      got.get(e.key)!.push({ atUs: out.slotUs, tokens: 1 });
      if (closed.has(e.key)) events.push({ at: out.slotUs + 1, key: e.key });
    } else {
      events.push({ at: e.at + out.retryAfterUs, key: e.key });
    }
  }
  const rate = (key: string) => got.get(key)!.filter((a) => a.atUs >= t0 + 10e6 && a.atUs < end).length / (seconds - 10);
  return { rate, got, maxTenants, all: [...got.values()].flat() };
}

describe('fairness among tenants (pure core, simulated 60 s)', () => {
  const shared = (rate: number, burst: number): DimensionLimit => ({ dimension: 'requests', intervalUs: Math.ceil(1e6 / rate), burst });
  const perKey = (rate: number, burst: number): DimensionLimit => ({ dimension: 'requests', intervalUs: Math.ceil(1e6 / rate), burst });

  test('one tenant at overload, the other idle: the busy one gets its own limit, never more', () => {
    const limits: TenantLimits = { shared: [shared(100, 10)], perKey: [perKey(20, 2)] };
    const r = simulate(limits, [{ key: 'a', workers: 40 }], 60);
    expect(r.rate('a')).toBeGreaterThanOrEqual(19.5);
    expect(windows(limits.perKey[0], r.got.get('a')!)).toBe(0);
  });

  test('two busy tenants whose limits add up to more than the shared one: each gets at least half of it', () => {
    const limits: TenantLimits = { shared: [shared(30, 3)], perKey: [perKey(20, 2)] };
    const r = simulate(limits, [{ key: 'a', workers: 40 }, { key: 'b', workers: 5 }], 60);
    expect(windows(limits.shared[0], r.all)).toBe(0);
    expect(r.rate('a')).toBeGreaterThanOrEqual(15 * 0.9);
    expect(r.rate('b')).toBeGreaterThanOrEqual(15 * 0.9);
    expect(r.rate('a') + r.rate('b')).toBeGreaterThanOrEqual(30 * 0.95);
  });

  test('a light tenant gets what it asks; the busy ones share the rest without starving each other', () => {
    const limits: TenantLimits = { shared: [shared(30, 3)], perKey: [perKey(20, 2)] };
    const r = simulate(limits, [{ key: 'a', workers: 40 }, { key: 'b', workers: 40 }, { key: 'light', workers: 0, everyUs: 200_000 }], 60);
    expect(windows(limits.shared[0], r.all)).toBe(0);
    expect(r.rate('light')).toBeGreaterThanOrEqual(5 * 0.98);
    for (const k of ['a', 'b']) expect(r.rate(k)).toBeGreaterThanOrEqual(12.5 * 0.85);
  });

  test('10 tenants at random demand: 0 windows over for the shared limit and for each key', () => {
    const limits: TenantLimits = { shared: [shared(50, 5)], perKey: [perKey(10, 2)] };
    const tenants: Tenant[] = Array.from({ length: 10 }, (_, i) => (i % 3 === 0 ? { key: `t${i}`, workers: 0, everyUs: 50_000 + i * 37_000 } : { key: `t${i}`, workers: 1 + i * 3 }));
    const r = simulate(limits, tenants, 60);
    expect(windows(limits.shared[0], r.all)).toBe(0);
    for (const t of tenants) expect(windows(limits.perKey[0], r.got.get(t.key)!)).toBe(0);
    expect(r.maxTenants).toBe(10);
  });
});
