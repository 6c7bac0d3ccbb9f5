import * as fc from 'fast-check';
import { type BreakerSettings, type BreakerState, CLOSED, elect, recordFailure, recordSuccess, releaseProbe } from '../../lambda/circuit-breaker/core';

// The breaker's state machine on the pure core, driven as the state machine drives it: an execution reads the state,
// is let through when closed, short-circuited while `until` is ahead, asks for election once it has passed; its call
// then fails (a counted failure) or succeeds; time passes in between.

type Op =
  | { kind: 'start'; stale: number }
  | { kind: 'finish'; pick: number; ok: boolean; counted: boolean }
  | { kind: 'abandon'; pick: number }
  | { kind: 'tick'; ms: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('start' as const), stale: fc.nat(3) }) },
  // a failure the breaker does not count (the caller's own, throttling): a probe gives its place back
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('finish' as const), pick: fc.nat(), ok: fc.boolean(), counted: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('abandon' as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('tick' as const), ms: fc.oneof(fc.integer({ min: 0, max: 50 }), fc.integer({ min: 0, max: 3_000 })) }) },
);

const settingsArb: fc.Arbitrary<BreakerSettings> = fc.record({
  failureThreshold: fc.integer({ min: 1, max: 5 }),
  windowMs: fc.integer({ min: 100, max: 5_000 }),
  cooldownMs: fc.integer({ min: 100, max: 2_000 }),
  halfOpenProbes: fc.integer({ min: 1, max: 3 }),
});

interface Call { probe: boolean; startedAt: number; period: number; until: number }

describe('circuit breaker core (pure)', () => {
  test('probes per half-open period never above halfOpenProbes; no call while open; open only on threshold failures in the window; a probe decides', () => {
    fc.assert(fc.property(settingsArb, fc.array(opArb, { minLength: 1, maxLength: 150, size: 'max' }), (s, ops) => {
      let state: BreakerState = CLOSED;
      let now = 1_700_000_000_000;
      let period = 0; // half-open periods begun
      const inFlight: Call[] = [];
      const failuresClosed: number[] = []; // times of counted failures while closed, since it last closed
      const history: BreakerState[] = [state];
      for (const op of ops) {
        if (history[history.length - 1] !== state) history.push(state);
        if (op.kind === 'tick') {
          now += op.ms;
        } else if (op.kind === 'start') {
          // the state machine, on the item as it read it (perhaps a few writes old: executions race): closed → call;
          // `until` ahead → short-circuit (no write); else ask the function, which elects on the item as it is
          const read = history[Math.max(0, history.length - 1 - op.stale)];
          if (read.st === 'closed') {
            inFlight.push({ probe: false, startedAt: now, period, until: 0 });
          } else if (now < read.until && !(read.st === 'half' && read.pr < s.halfOpenProbes)) {
            // short-circuited: the state machine compares the time itself
          } else {
            const before = state;
            const e = elect(state, now, s);
            if (e.probe && (before.st === 'open' || now >= before.until)) period++;
            state = e.state;
            if (e.call) inFlight.push({ probe: e.probe, startedAt: now, period, until: e.state.until });
            // never a probe while open with its cooldown ahead
            if (before.st === 'open' && now < before.until) expect(e.call).toBe(false);
          }
        } else if (inFlight.length > 0) {
          const [call] = inFlight.splice(op.pick % inFlight.length, 1);
          if (op.kind === 'abandon') continue; // its execution stopped: it never reports
          const before = state;
          const current = call.probe && before.st === 'half' && call.until === before.until;
          if (op.ok) {
            state = recordSuccess(state, call.probe, now, s, call.probe ? call.until : undefined).state;
            // a probe's success closes it (one of an earlier period too: the downstream answered)
            if (call.probe && before.st === 'half') expect(state.st).toBe('closed');
          } else if (!op.counted) {
            state = releaseProbe(state, call.probe, call.probe ? call.until : undefined).state;
            // only the current period's probe gives a place back
            expect(state.pr).toBe(current ? before.pr - 1 : before.pr);
          } else {
            const r = recordFailure(state, now, s, call.probe, call.probe ? call.until : undefined);
            state = r.state;
            if (before.st === 'closed') failuresClosed.push(now);
            if (r.transition === 'opened') {
              // opened: at least failureThreshold failures, the last failureThreshold within the window
              const recent = failuresClosed.filter((t) => now - t < s.windowMs);
              expect(recent.length).toBeGreaterThanOrEqual(Math.min(s.failureThreshold, failuresClosed.length));
              expect(failuresClosed.length).toBeGreaterThanOrEqual(s.failureThreshold);
              expect(state.until).toBe(now + s.cooldownMs);
            }
            if (current) expect(state).toMatchObject({ st: 'open', until: now + s.cooldownMs });
          }
          if (state.st === 'closed' && before.st !== 'closed') failuresClosed.length = 0;
          if (before.st === 'closed' && state.st === 'open') failuresClosed.length = 0;
        }
        // never more probes of the current half-open period running at once than halfOpenProbes
        if (state.st === 'half') {
          expect(inFlight.filter((c) => c.probe && c.until === state.until).length).toBeLessThanOrEqual(s.halfOpenProbes);
        }
        expect(state.pr).toBeLessThanOrEqual(s.halfOpenProbes);
      }
    }), { numRuns: 800 });
  });

  test('below the threshold, or failures spread wider than the window, it stays closed', () => {
    const s: BreakerSettings = { failureThreshold: 3, windowMs: 1_000, cooldownMs: 500, halfOpenProbes: 1 };
    let state = CLOSED;
    for (const t of [0, 600, 1_200, 1_800, 2_400]) state = recordFailure(state, 1e12 + t, s, false).state;
    expect(state.st).toBe('closed');
    // (a window starts at its first failure: 2,400 counts with 3,000, and 3,000 + 3,100 would open it)
    for (const t of [3_600, 3_700, 3_800]) state = recordFailure(state, 1e12 + t, s, false).state;
    expect(state).toMatchObject({ st: 'open', until: 1e12 + 4_300, openedAt: 1e12 + 3_800 });
  });

  test('a probe that never reports: after a cooldown another execution is elected', () => {
    const s: BreakerSettings = { failureThreshold: 1, windowMs: 1_000, cooldownMs: 500, halfOpenProbes: 1 };
    const open = recordFailure(CLOSED, 0, s, false).state;
    const first = elect(open, 500, s);
    expect(first).toMatchObject({ call: true, probe: true, state: { st: 'half', pr: 1, until: 1_000 } });
    expect(elect(first.state, 900, s)).toMatchObject({ call: false });
    expect(elect(first.state, 1_000, s)).toMatchObject({ call: true, probe: true, state: { st: 'half', pr: 1, until: 1_500 } });
  });

  test('the rate rule: opens only with minimumCalls calls in a window of which the rate failed; successes outside a window change nothing', () => {
    fc.assert(fc.property(
      fc.record({
        rate: fc.integer({ min: 1, max: 100 }), minimumCalls: fc.integer({ min: 1, max: 12 }), windowMs: fc.integer({ min: 100, max: 3_000 }),
      }),
      fc.array(
        fc.record({ ok: fc.boolean(), dt: fc.oneof(fc.integer({ min: 0, max: 50 }), fc.integer({ min: 0, max: 2_000 })) }),
        { minLength: 1, maxLength: 120, size: 'max' }),
      (r, events) => {
        const s: BreakerSettings = {
          failureThreshold: 1, windowMs: r.windowMs, cooldownMs: 1_000, halfOpenProbes: 1, failureRate: r.rate / 100, minimumCalls: r.minimumCalls,
        };
        let state = CLOSED;
        let now = 1e12;
        const seen: { t: number; ok: boolean }[] = []; // every call while closed, since it last opened
        for (const e of events) {
          now += e.dt;
          if (state.st !== 'closed') break;
          seen.push({ t: now, ok: e.ok });
          if (e.ok) {
            const next = recordSuccess(state, false, now, s).state;
            // outside a window (no failure counted within windowMs before): no write
            const inWindow = seen.some((x) => !x.ok && now - x.t < s.windowMs);
            if (!inWindow) expect(next).toBe(state);
            state = next;
            expect(state.st).toBe('closed');
          } else {
            const res = recordFailure(state, now, s, false);
            state = res.state;
            if (res.transition === 'opened') {
              // some failure at w within the window before now starts a span [w, now] that meets both conditions
              const ok = seen.some((start, i) => {
                if (start.ok || now - start.t >= s.windowMs) return false;
                const span = seen.slice(i);
                const failures = span.filter((x) => !x.ok).length;
                return span.length >= r.minimumCalls && failures >= (r.rate / 100) * span.length - 1e-9;
              });
              expect(ok).toBe(true);
              seen.length = 0;
            }
          }
        }
      }), { numRuns: 2_000 });
  });

  test('the rate rule by example: 50 %, 4 calls', () => {
    const s: BreakerSettings = { failureThreshold: 1, windowMs: 10_000, cooldownMs: 500, halfOpenProbes: 1, failureRate: 0.5, minimumCalls: 4 };
    const run = (calls: boolean[]) => calls.reduce(
      (st, ok, i) => (ok ? recordSuccess(st, false, i, s).state : recordFailure(st, i, s, false).state), CLOSED);
    expect(run([false, true, true, false]).st).toBe('open');
    expect(run([false, true, true, true]).st).toBe('closed');
    expect(run([false, false, false]).st).toBe('closed'); // 3 calls: below minimumCalls
    expect(run([true, true, true])).toBe(CLOSED); // no window: nothing counted, nothing written
  });
});
