import * as fc from 'fast-check';
import { type DimensionLimit, type MultiState, settleAll, takeAll } from '../../lambda/rate-limiter/multi';
import { type Admission, windowViolations } from '../../local/timing';

// Several limits in one acquire, with give-backs and overruns settled afterwards: judged on what each caller really
// used, at the slot it was given, in every window of every length tried — per dimension.

const dimensionArb = fc.record({
  intervalUs: fc.oneof(fc.constant(1_000), fc.integer({ min: 1_000, max: 500_000 })),
  burst: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 30 })),
});

type Op =
  | { kind: 'advance'; us: number }
  | { kind: 'acquire'; requests: number; tokens: number; maxWaitUs: number }
  | { kind: 'settle'; pick: number; fraction: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('advance' as const), us: fc.oneof(fc.integer({ min: 0, max: 5_000 }), fc.integer({ min: 0, max: 3_000_000 })) }),
  fc.record({
    kind: fc.constant('acquire' as const),
    requests: fc.constantFrom(0, 1, 1, 2),
    tokens: fc.integer({ min: 0, max: 30 }),
    maxWaitUs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 20_000_000 })),
  }),
  fc.record({ kind: fc.constant('settle' as const), pick: fc.nat(), fraction: fc.double({ min: 0, max: 1, noNaN: true }) }),
);

interface Caller { slotUs: number; taken: Record<string, number>; tats: Record<string, number>; used?: Record<string, number> }

function run(limits: DimensionLimit[], ops: Op[]) {
  let now = 1_700_000_000_000_000;
  let state: MultiState = {};
  const callers: Caller[] = [];
  for (const op of ops) {
    if (op.kind === 'advance') {
      now += op.us;
    } else if (op.kind === 'acquire') {
      const consume = { requests: op.requests, tokens: Math.min(op.tokens, limits[1].burst) };
      if (consume.requests > limits[0].burst) consume.requests = limits[0].burst;
      const out = takeAll(state, now, consume, limits, op.maxWaitUs);
      if (out.admitted) {
        expect(out.slotUs).toBeGreaterThanOrEqual(now);
        expect(out.slotUs - now).toBeLessThanOrEqual(op.maxWaitUs);
        state = out.state;
        callers.push({ slotUs: out.slotUs, taken: consume, tats: { ...out.tats } });
      } else {
        expect(out.retryAfterUs).toBeGreaterThan(0);
      }
    } else {
      // a caller settles after its call: its slot has come; it used a part of what it took (never more)
      const open = callers.filter((c) => !c.used && c.slotUs <= now);
      if (open.length === 0) continue;
      const c = open[op.pick % open.length];
      c.used = { tokens: Math.floor(c.taken.tokens * op.fraction) };
      state = settleAll(state, now, c.taken, c.used, limits, c.tats);
    }
  }
  return callers;
}

describe('several limits in one acquire (pure core)', () => {
  const check = (withSettles: boolean) => (req: { intervalUs: number; burst: number }, tok: { intervalUs: number; burst: number }, ops: Op[]) => {
    const limits: DimensionLimit[] = [{ dimension: 'requests', ...req }, { dimension: 'tokens', ...tok }];
    const callers = run(limits, withSettles ? ops : ops.filter((o) => o.kind !== 'settle'));
    for (const l of limits) {
      const admissions: Admission[] = callers.map((c) => ({ atUs: c.slotUs, tokens: (c.used ?? c.taken)[l.dimension] ?? c.taken[l.dimension] ?? 0 }))
        .filter((a) => a.tokens > 0).sort((a, b) => a.atUs - b.atUs);
      const rate = 1e6 / l.intervalUs;
      const toleranceUs = l.burst * l.intervalUs;
      // without give-backs, burst + rate·w; a give-back lands at settle time, after callers the estimate pushed
      // later, and may let up to one more burst in beside them: 2 × burst + rate·w
      const allowed = withSettles ? 2 * l.burst : l.burst;
      for (const w of [0, l.intervalUs, Math.floor(toleranceUs / 2), toleranceUs, 2 * toleranceUs, 10 * toleranceUs, 60_000_000]) {
        expect(windowViolations(admissions, rate, allowed, w)).toBe(0);
      }
    }
  };

  test('without settling: per dimension, admissions in every window stay within burst + rate·w', () => {
    fc.assert(fc.property(dimensionArb, dimensionArb, fc.array(opArb, { minLength: 1, maxLength: 250, size: 'max' }), check(false)), { numRuns: 1000 });
  });

  test('with give-backs: what callers used at their slots stays within 2 × burst + rate·w in every window', () => {
    const runs = Number(process.env.RUNS ?? 2000);
    fc.assert(fc.property(dimensionArb, dimensionArb, fc.array(opArb, { minLength: 1, maxLength: 250, size: 'max' }), check(true)), { numRuns: runs });
  });

  test('under a queue (callers wait in line, those whose slot has come settle low): within 2 × burst + rate·w', () => {
    // the regime of a tokens-per-minute limit at overload: every give-back meets reservations still ahead
    const queued: fc.Arbitrary<Op> = fc.oneof(
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('advance' as const), us: fc.integer({ min: 0, max: 3_000 }) }) },
      {
        weight: 3,
        arbitrary: fc.record({
          kind: fc.constant('acquire' as const),
          requests: fc.constant(1),
          tokens: fc.integer({ min: 1, max: 30 }),
          maxWaitUs: fc.constant(1_000_000_000),
        }),
      },
      { weight: 3, arbitrary: fc.record({ kind: fc.constant('settle' as const), pick: fc.nat(), fraction: fc.constantFrom(0, 0, 0.1, 0.5, 1) }) },
    );
    const small = fc.record({ intervalUs: fc.constantFrom(1_000, 1_500), burst: fc.integer({ min: 1, max: 30 }) });
    fc.assert(fc.property(small, small, fc.array(queued, { minLength: 20, maxLength: 300, size: 'max' }), check(true)), { numRuns: 1000 });
  });

  test('a long line of reservations: give-backs do not let newcomers in among them (a credit design measured 62 bursts over)', () => {
    // 100 callers in line, then two newcomers per half slot while every caller whose slot has come settles at 0 (or
    // 20 %). An earlier design kept what the floor held back as credit (at most one burst) for the next admission:
    // credits spent one after another moved each newcomer in among the reservations ahead, 62 bursts over in a window
    for (const [burst, amount, fraction] of [[10, 10, 0], [10, 5, 0], [10, 3, 0.2], [30, 7, 0]]) {
      const limits: DimensionLimit[] = [{ dimension: 'tokens', intervalUs: 1_000, burst }];
      let now = 1_000_000_000_000;
      let state: MultiState = {};
      const callers: Caller[] = [];
      const take = () => {
        const out = takeAll(state, now, { tokens: amount }, limits, 1e12) as Extract<ReturnType<typeof takeAll>, { admitted: true }>;
        state = out.state;
        callers.push({ slotUs: out.slotUs, taken: { tokens: amount }, tats: { ...out.tats } });
      };
      for (let i = 0; i < 100; i++) take();
      for (let k = 0; k < 2_000; k++) {
        now += (1_000 * amount) / 2;
        for (const c of callers.filter((x) => !x.used && x.slotUs <= now)) {
          c.used = { tokens: Math.floor(amount * fraction) };
          state = settleAll(state, now, c.taken, c.used, limits, c.tats);
        }
        take();
        take();
      }
      const admissions: Admission[] = callers.map((c) => ({ atUs: c.slotUs, tokens: (c.used ?? c.taken).tokens })).sort((a, b) => a.atUs - b.atUs);
      for (const w of [0, 1_000, burst * 500, burst * 1_000, 3 * burst * 1_000, 100 * burst * 1_000]) {
        expect(windowViolations(admissions, 1_000, 2 * burst, w)).toBe(0);
      }
    }
  });

  test('a give-back stops at the tat of a reservation still ahead (found by 30,000 runs with that floor removed)', () => {
    const one = { intervalUs: 1_000, burst: 1 };
    const ops: Op[] = [
      { kind: 'acquire', requests: 0, tokens: 1, maxWaitUs: 0 }, { kind: 'advance', us: 1000 },
      { kind: 'acquire', requests: 0, tokens: 1, maxWaitUs: 0 }, { kind: 'acquire', requests: 0, tokens: 1, maxWaitUs: 1000 },
      { kind: 'settle', pick: 0, fraction: 0 }, { kind: 'acquire', requests: 0, tokens: 1, maxWaitUs: 1000 },
      { kind: 'settle', pick: 0, fraction: 0 }, { kind: 'acquire', requests: 0, tokens: 1, maxWaitUs: 1000 },
    ];
    check(true)(one, one, ops);
  });

  test('give-backs of estimates idle time has absorbed do not stack (found by 40,000 runs of an earlier rule)', () => {
    const one = { intervalUs: 1_000, burst: 1 };
    const ops: Op[] = [
      { kind: 'acquire', requests: 0, tokens: 1, maxWaitUs: 0 }, { kind: 'acquire', requests: 0, tokens: 1, maxWaitUs: 1000 },
      { kind: 'advance', us: 2000 }, { kind: 'acquire', requests: 0, tokens: 1, maxWaitUs: 0 }, { kind: 'settle', pick: 0, fraction: 0 },
      { kind: 'acquire', requests: 0, tokens: 1, maxWaitUs: 0 }, { kind: 'settle', pick: 0, fraction: 0 }, { kind: 'acquire', requests: 0, tokens: 1, maxWaitUs: 0 },
    ];
    check(true)(one, one, ops);
  });

  test('the give-back bound is not burst + rate·w: a give-back can be larger than the room idle time would have left', () => {
    // burst 29 per ms: a takes 1 at t0; b (16) and c (2) come 0.5 ms later, behind a; a used nothing and gives back
    // 1 ms of the bucket, of which 0.5 ms idle time would have absorbed had a taken nothing; d (26) then gets a slot
    // 0.5 ms early: 44 in a window of 14.5 ms, where burst + rate·w = 43.5 (and 2 × burst + rate·w = 72.5)
    const limits: DimensionLimit[] = [{ dimension: 'tokens', intervalUs: 1_000, burst: 29 }];
    const t0 = 1_000_000_000;
    const a = takeAll({}, t0, { tokens: 1 }, limits, 0) as any;
    const b = takeAll(a.state, t0 + 500, { tokens: 16 }, limits, 0) as any;
    const c = takeAll(b.state, t0 + 500, { tokens: 2 }, limits, 0) as any;
    const settled = settleAll(c.state, t0 + 500, { tokens: 1 }, { tokens: 0 }, limits, a.tats);
    const d = takeAll(settled, t0 + 500, { tokens: 26 }, limits, 14_500) as any;
    expect(d.slotUs).toBe(t0 + 15_000);
    const used: Admission[] = [{ atUs: b.slotUs, tokens: 16 }, { atUs: c.slotUs, tokens: 2 }, { atUs: d.slotUs, tokens: 26 }];
    expect(windowViolations(used, 1_000, 29, 14_500)).toBe(1);
    expect(windowViolations(used, 1_000, 58, 14_500)).toBe(0);
  });

  test('a caller is admitted only when every limit admits: the slot is the latest of the per-limit slots', () => {
    const limits: DimensionLimit[] = [{ dimension: 'requests', intervalUs: 100_000, burst: 10 }, { dimension: 'tokens', intervalUs: 1_000, burst: 1_000 }];
    const now = 1_000_000_000;
    // tokens bind: 1,000 taken at once, the next 500 wait 0.5 s although requests has room
    const a = takeAll({}, now, { requests: 1, tokens: 1_000 }, limits, 0);
    expect(a).toMatchObject({ admitted: true, slotUs: now });
    const b = takeAll((a as any).state, now, { requests: 1, tokens: 500 }, limits, 10_000_000);
    expect(b).toMatchObject({ admitted: true, slotUs: now + 500_000 });
    // TRY: no wait allowed, refused with the binding dimension and how long until it admits
    expect(takeAll((b as any).state, now, { requests: 1, tokens: 1 }, limits, 0)).toEqual({ admitted: false, retryAfterUs: 501_000, binding: 'tokens' });
  });

  test('settling: a give-back never makes room before a reservation still ahead, nor more than burst; an overrun is a debt', () => {
    const limits: DimensionLimit[] = [{ dimension: 'tokens', intervalUs: 1_000, burst: 1_000 }];
    const now = 1_000_000_000;
    const first = takeAll({}, now, { tokens: 1_000 }, limits, 0) as any; // slot now, tat now + 1 s
    const second = takeAll(first.state, now, { tokens: 500 }, limits, 10_000_000) as any; // slot now + 0.5 s
    expect(second.slotUs).toBe(now + 500_000);
    // the first used nothing; the second's reservation is still ahead: the give-back stops at its tat
    const settled = settleAll(second.state, now + 100_000, { tokens: 1_000 }, { tokens: 0 }, limits, first.tats);
    expect(settled.tokens.tat).toBe(second.state.tokens.tat);
    // once that slot has passed, the give-back lowers the tat, but not below now (an idle bucket holds burst)
    const later = settleAll(second.state, now + 600_000, { tokens: 1_000 }, { tokens: 0 }, limits, first.tats);
    expect(later.tokens.tat).toBe(now + 600_000);
    // an overrun of 300 is owed at once
    const over = settleAll(first.state, now + 100_000, { tokens: 1_000 }, { tokens: 1_300 }, limits, first.tats);
    expect(over.tokens.tat).toBe(first.state.tokens.tat + 300_000);
  });
});
