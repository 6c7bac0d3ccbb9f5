// The handlers' clock: wall time in integer microseconds with sub-millisecond resolution, and a sleep that
// never wakes before its instant (timers may fire a little early against this clock).

export const clockUs = (): number => Math.floor((performance.timeOrigin + performance.now()) * 1000);

/** Sleeps until `clockUs()` reaches `atUs`. */
export async function sleepUntilUs(atUs: number): Promise<void> {
  for (let leftUs = atUs - clockUs(); leftUs > 0; leftUs = atUs - clockUs()) {
    await new Promise((resolve) => setTimeout(resolve, Math.ceil(leftUs / 1000)));
  }
}
