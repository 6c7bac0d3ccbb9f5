import type { LocalGrant } from '../../local/runner';
import { type Admission, maxInWindow, windowViolations } from '../../local/timing';

/**
 * Judges a limit at the limiter's decisions, which no machine load can move: the granted slots keep
 * burst + rate × w in every window, and every downstream call holds a slot of its own that is not after it (the
 * i-th call in time order starts at or after the i-th slot). Calls counted at the downstream's own clock are
 * only ever later than their slots; how much later depends on the machine, so spacing is for the bench.
 */
export function expectCallsHoldSlots(callsAtUs: readonly number[], grants: readonly LocalGrant[], rate: number, burst: number): void {
  const slots: Admission[] = grants.flatMap((g) => Array.from({ length: g.tokens }, () => ({ atUs: g.atUs, tokens: 1 })));
  const over = [0, 100_000, 1_000_000, 5_000_000]
    .map((w) => ({ w, violations: windowViolations(slots, rate, burst, w), max: maxInWindow(slots, w) }))
    .filter((x) => x.violations > 0);
  expect(over).toEqual([]);
  expect(callsAtUs.length).toBeLessThanOrEqual(slots.length);
  const calls = [...callsAtUs].sort((a, b) => a - b);
  const sorted = slots.map((s) => s.atUs).sort((a, b) => a - b);
  const early = calls.map((c, i) => sorted[i] - c).filter((d) => d > 0);
  expect(early).toEqual([]);
}

/** The grants of one key. */
export const grantsOf = (grants: readonly LocalGrant[], key: string) => grants.filter((g) => g.key === key);
