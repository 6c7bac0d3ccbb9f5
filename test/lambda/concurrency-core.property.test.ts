import * as fc from 'fast-check';
import { acquire, EMPTY, held, type KeyState, reap, release, type Settings } from '../../lambda/concurrency-limiter/core';

// Random interleavings of acquire (with and without a token), release, expiry (time passing), reap and "a release
// between a refused acquire and the waiter's registration" on the pure core.

type Op =
  | { kind: 'acquire'; who: number; slots: number; wait: boolean }
  | { kind: 'release'; who: number }
  | { kind: 'tick'; ms: number }
  | { kind: 'reap'; execution: number }
  | { kind: 'raceRelease'; who: number; other: number; slots: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('acquire' as const), who: fc.integer({ min: 0, max: 11 }), slots: fc.integer({ min: 1, max: 3 }), wait: fc.boolean() }),
  fc.record({ kind: fc.constant('release' as const), who: fc.integer({ min: 0, max: 11 }) }),
  fc.record({ kind: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 400 }) }),
  fc.record({ kind: fc.constant('reap' as const), execution: fc.integer({ min: 0, max: 3 }) }),
  fc.record({ kind: fc.constant('raceRelease' as const), who: fc.integer({ min: 0, max: 11 }), other: fc.integer({ min: 0, max: 11 }), slots: fc.integer({ min: 1, max: 3 }) }),
);

describe('concurrency limiter core', () => {
  test('in use never above the limit nor negative, equal to the leases; each lease released once; FIFO; nobody waits while slots are free', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 6 }), fc.array(op, { maxLength: 80, size: 'max' }), (limit, ops) => {
      const settings: Settings = { limit, leaseMs: 1000 };
      let state: KeyState = EMPTY;
      let now = 0;
      const granted = new Map<string, number>(); // lease id → times granted
      const released = new Map<string, number>();
      const queueOrder: string[] = []; // ids in the order they started waiting
      const grantOrder: string[] = []; // waiters' ids in the order they were granted
      const execOf = (who: number) => `exec-${who % 4}`;
      const leaseOf = (who: number) => `lease-${who}`;
      const noteGrants = (grants: readonly { id: string }[]) => {
        for (const g of grants) grantOrder.push(g.id);
      };
      function check() {
        expect(state.used).toBeGreaterThanOrEqual(0);
        expect(state.used).toBeLessThanOrEqual(limit);
        expect(state.used).toBe(held(state));
        // no waiter left waiting while its slots are free (the head could be granted)
        if (state.waiters.length > 0) expect(state.used + state.waiters[0].s).toBeGreaterThan(limit);
        // each grant of an id is followed by exactly one release before the next grant
        for (const [id, n] of granted) expect(n - (released.get(id) ?? 0)).toBeGreaterThanOrEqual(0);
        for (const [id, n] of granted) expect(n - (released.get(id) ?? 0)).toBeLessThanOrEqual(1);
        for (const id of Object.keys(state.leases)) expect((granted.get(id) ?? 0) - (released.get(id) ?? 0)).toBe(1);
      }
      const apply = (next: { state: KeyState; grants: readonly { id: string }[] }) => {
        // FIFO: the waiters an operation grants are the first of those still waiting before it (the ones that left
        // without a grant — cancelled, expired, reaped — aside), in order; a waiter whose wait has expired by now
        // left, even when its id waits again from this very operation (then at the tail: found once arrays were
        // generated at their full length, 1,257 runs in)
        const stayed = state.waiters.filter((w) => w.exp > now).map((w) => w.id)
          .filter((id) => next.grants.some((g) => g.id === id) || next.state.waiters.some((w) => w.id === id));
        expect(next.grants.map((g) => g.id)).toEqual(stayed.slice(0, next.grants.length));
        // a lease granted = an id that appears; released = an id that goes (release, expiry, reap)
        for (const id of Object.keys(next.state.leases)) if (!state.leases[id]) granted.set(id, (granted.get(id) ?? 0) + 1);
        for (const id of Object.keys(state.leases)) if (!next.state.leases[id]) released.set(id, (released.get(id) ?? 0) + 1);
        const waitingBefore = new Set(state.waiters.map((w) => w.id));
        for (const w of next.state.waiters) if (!waitingBefore.has(w.id)) queueOrder.push(w.id);
        noteGrants(next.grants);
        state = next.state;
        check();
      };
      for (const o of ops) {
        if (o.kind === 'acquire') {
          const id = leaseOf(o.who);
          const newcomer = !state.leases[id] && !state.waiters.some((w) => w.id === id);
          const next = acquire(state, { id, slots: Math.min(o.slots, limit), execution: execOf(o.who), token: o.wait ? `token-${o.who}` : undefined, maxWaitMs: 300 }, now, settings);
          // FIFO: a newcomer is granted only when nobody is left waiting before it
          if (newcomer && next.result === 'granted') expect(next.state.waiters).toEqual([]);
          apply(next);
        } else if (o.kind === 'raceRelease') {
          // a refused acquire (no token), then another lease released, then the same acquirer registers to wait
          const req = { id: leaseOf(o.who), slots: Math.min(o.slots, limit), execution: execOf(o.who), maxWaitMs: 300 };
          apply(acquire(state, req, now, settings));
          apply(release(state, leaseOf(o.other), now, settings));
          apply(acquire(state, { ...req, token: `token-${o.who}` }, now, settings));
        } else if (o.kind === 'release') {
          apply(release(state, leaseOf(o.who), now, settings));
        } else if (o.kind === 'tick') {
          now += o.ms;
        } else {
          apply(reap(state, `exec-${o.execution}`, now, settings));
        }
      }
    }), { numRuns: 600 }); // 80 operations a run (size 'max'): 2,000 runs took 84 s
  });

  test('an expired lease is reclaimed by the next acquire, in the same operation', () => {
    const settings = { limit: 1, leaseMs: 100 };
    const first = acquire(EMPTY, { id: 'a', slots: 1, execution: 'e1', maxWaitMs: 0 }, 0, settings);
    expect(acquire(first.state, { id: 'b', slots: 1, execution: 'e2', maxWaitMs: 0 }, 50, settings).result).toBe('refused');
    const later = acquire(first.state, { id: 'b', slots: 1, execution: 'e2', maxWaitMs: 0 }, 100, settings);
    expect(later).toMatchObject({ result: 'granted', reclaimed: 1 });
    expect(Object.keys(later.state.leases)).toEqual(['b']);
  });

  test('repeating an acquire (a lost answer) takes nothing more; releasing twice frees once', () => {
    const settings = { limit: 2, leaseMs: 1000 };
    const a = acquire(EMPTY, { id: 'a', slots: 1, execution: 'e', maxWaitMs: 0 }, 0, settings);
    const again = acquire(a.state, { id: 'a', slots: 1, execution: 'e', maxWaitMs: 0 }, 1, settings);
    expect(again.result).toBe('granted');
    expect(again.state.used).toBe(1);
    const r1 = release(again.state, 'a', 2, settings);
    const r2 = release(r1.state, 'a', 3, settings);
    expect([r1.released, r2.released, r2.state.used]).toEqual([true, false, 0]);
  });
});

