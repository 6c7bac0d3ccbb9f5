/** One admission as seen by whoever enforces or observes the limit. */
export interface Admission {
  /** When the admitted call may start, µs. */
  readonly atUs: number;
  readonly tokens: number;
}

/** The largest token count in any closed window [t, t + w] (windows start at an admission: that is where maxima are). */
export function maxInWindow(admissions: readonly Admission[], windowUs: number): number {
  const sorted = [...admissions].sort((a, b) => a.atUs - b.atUs);
  let best = 0;
  let sum = 0;
  let j = 0;
  for (let i = 0; i < sorted.length; i++) {
    // Extend j to include every admission at or before sorted[i].atUs + windowUs.
    while (j < sorted.length && sorted[j].atUs <= sorted[i].atUs + windowUs) {
      sum += sorted[j].tokens;
      j++;
    }
    best = Math.max(best, sum);
    sum -= sorted[i].tokens;
  }
  return best;
}

/** Windows of length w where admitted tokens exceed burst + rate·w. */
export function windowViolations(admissions: readonly Admission[], rate: number, burst: number, windowUs: number): number {
  const sorted = [...admissions].sort((a, b) => a.atUs - b.atUs);
  const bound = burst + (rate * windowUs) / 1e6;
  let violations = 0;
  let sum = 0;
  let j = 0;
  for (let i = 0; i < sorted.length; i++) {
    while (j < sorted.length && sorted[j].atUs <= sorted[i].atUs + windowUs) {
      sum += sorted[j].tokens;
      j++;
    }
    if (sum > bound + 1e-9) violations++;
    sum -= sorted[i].tokens;
  }
  return violations;
}
