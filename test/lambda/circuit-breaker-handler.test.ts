import { type BreakerStore, handle, type StoredBreaker, wholeSecond } from '../../lambda/circuit-breaker/breaker';
import type { BreakerState } from '../../lambda/circuit-breaker/core';

// The breaker function against an in-memory store: what it answers the state machine, which waits on its times.

class MemoryStore implements BreakerStore {
  readonly items = new Map<string, StoredBreaker>();
  async read(pk: string) { return this.items.get(pk); }
  async write(pk: string, state: BreakerState, ver: number | undefined) {
    if (this.items.get(pk)?.ver !== ver) return false;
    this.items.set(pk, { state, ver: (ver ?? 0) + 1 });
    return true;
  }
}

const settings = { failureThreshold: 1, windowMs: 10_000, cooldownMs: 2_500, halfOpenProbes: 1 };

function deps(store: MemoryStore, now: () => number) {
  return { store, nowMs: now, breakerName: 'b', settings, emit: () => undefined };
}

describe('breaker function', () => {
  test('a retry-after is a whole second (a Wait on a timestamp ignores milliseconds), and a second or more ahead when not elected', async () => {
    const store = new MemoryStore();
    let now = 1_700_000_000_123;
    await handle({ op: 'failure', key: 'k' }, deps(store, () => now)); // opens: until = now + 2.5 s
    now += 2_600;
    const probe = await handle({ op: 'elect', key: 'k' }, deps(store, () => now));
    expect(probe).toMatchObject({ call: true, probe: true });
    // a clock behind the state machine's: until has passed for Step Functions, not here
    now += 100;
    const lost = await handle({ op: 'elect', key: 'k' }, deps(store, () => now)) as { call: boolean; until: string };
    expect(lost.call).toBe(false);
    const until = Date.parse(lost.until);
    expect(until % 1000).toBe(0);
    expect(until).toBeGreaterThanOrEqual(now + 1000);
    expect(until).toBeGreaterThanOrEqual(wholeSecond(store.items.get('b#breaker#k')!.state.until));
  });

  test('release gives a probe\'s place back: the next execution is elected at once', async () => {
    const store = new MemoryStore();
    let now = 1_700_000_000_000;
    await handle({ op: 'failure', key: 'k' }, deps(store, () => now));
    now += 3_000;
    const first = await handle({ op: 'elect', key: 'k' }, deps(store, () => now)) as { call: boolean; probe: boolean; period: number };
    expect(first).toMatchObject({ call: true, probe: true, period: expect.any(Number) });
    expect(await handle({ op: 'elect', key: 'k' }, deps(store, () => now))).toMatchObject({ call: false });
    await handle({ op: 'release', key: 'k', probe: true, period: first.period }, deps(store, () => now));
    expect(await handle({ op: 'elect', key: 'k' }, deps(store, () => now))).toMatchObject({ call: true, probe: true });
  });

  test('a probe of an earlier period (taken for lost) gives back nothing: never two probes at once', async () => {
    const store = new MemoryStore();
    let now = 1_700_000_000_000;
    await handle({ op: 'failure', key: 'k' }, deps(store, () => now));
    now += 3_000;
    const p1 = await handle({ op: 'elect', key: 'k' }, deps(store, () => now)) as { period: number };
    now += 3_000; // P1 outlived the cooldown: P2 is elected in a new period
    const p2 = await handle({ op: 'elect', key: 'k' }, deps(store, () => now)) as { call: boolean; period: number };
    expect(p2).toMatchObject({ call: true, probe: true });
    expect(p2.period).not.toBe(p1.period);
    await handle({ op: 'release', key: 'k', probe: true, period: p1.period }, deps(store, () => now)); // P1 ends uncounted
    expect(await handle({ op: 'elect', key: 'k' }, deps(store, () => now))).toMatchObject({ call: false }); // P2 still holds it
    // P1's counted failure does not re-open it either: only P2 decides
    await handle({ op: 'failure', key: 'k', probe: true, period: p1.period }, deps(store, () => now));
    expect(store.items.get('b#breaker#k')!.state).toMatchObject({ st: 'half', pr: 1 });
  });

  test.each([
    ['a number key', { op: 'elect', key: 7 }, /key must be a string/],
    ['a key of 2,100 characters', { op: 'elect', key: 'x'.repeat(2100) }, /key must be a string whose item key fits 2048 bytes/],
    ['an unknown op', { op: 'reset', key: 'k' }, /op must be one of elect, failure, success, release, got "reset"/],
  ])('refuses %s', async (_name, event, message) => {
    await expect(handle(event, deps(new MemoryStore(), () => 0))).rejects.toMatchObject({ name: 'InvalidAcquireRequest', message: expect.stringMatching(message) });
  });
});
