// The handlers' clock: wall time in integer microseconds, read per call, and a sleep that never wakes before its
// instant (timers may fire a little early against this clock).
//
// Date.now() is the wall clock (NTP-disciplined on Lambda hosts: Amazon Time Sync) but only to the millisecond;
// performance.now() has sub-millisecond resolution but runs from a fixed origin and drifts from the wall clock
// over a long-lived container. So: wall time from Date.now(), the microseconds within it from performance.now(),
// re-anchored whenever the two disagree by more than a millisecond (a clock step, or drift).
//
// Skew: containers on different hosts disagree by their clocks' offsets (typically well under 1 ms with Time
// Sync). Every container's slots keep the bound on its own clock; measured on one true clock, calls of two
// containers can be closer by up to their skew, so a window can hold up to rate × skew more tokens than
// burst + rate × w (at 100/s and 1 ms of skew, 0.1 token).

interface ClockState { anchorWallMs: number; anchorPerfMs: number; lastUs: number }

// One state per process, shared by every copy of this module (the local runner and tests load handler bundles as
// separate module instances: they must read one clock, as the code of one container does).
const state: ClockState = ((globalThis as any)[Symbol.for('cdk-sfn-throttle.clock')] ??= {
  anchorWallMs: Date.now(),
  anchorPerfMs: performance.now(),
  lastUs: 0,
});

export const clockUs = (): number => {
  const wallMs = Date.now();
  const perfMs = performance.now();
  let estimateMs = state.anchorWallMs + (perfMs - state.anchorPerfMs);
  if (Math.abs(estimateMs - wallMs) > 1) {
    state.anchorWallMs = wallMs;
    state.anchorPerfMs = perfMs;
    estimateMs = wallMs;
  }
  const us = Math.floor(estimateMs * 1000);
  // Never backwards by a re-anchoring's millisecond (a sleep must not wake before its instant); a real step back
  // of more than a second is followed.
  state.lastUs = us >= state.lastUs || state.lastUs - us > 1_000_000 ? us : state.lastUs;
  return state.lastUs;
};

/** Sleeps until `clockUs()` reaches `atUs`. */
export async function sleepUntilUs(atUs: number): Promise<void> {
  for (let leftUs = atUs - clockUs(); leftUs > 0; leftUs = atUs - clockUs()) {
    await new Promise((resolve) => setTimeout(resolve, Math.ceil(leftUs / 1000)));
  }
}
