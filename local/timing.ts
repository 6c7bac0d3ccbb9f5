// Clock and window arithmetic shared by the behaviour tests, the benchmarks and (later) the local runner.

/** One admission (or downstream call) in time. */
export interface Admission {
  /** When the admitted call may start (or started), µs since the epoch. */
  readonly atUs: number;
  readonly tokens: number;
}

/** Wall clock in integer microseconds, with sub-millisecond resolution: the handlers' own clock. */
export { clockUs as nowUs } from '../lambda/shared/clock';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/**
 * Token sums of every closed window [t, t + w] that starts at an admission (where the maxima are), in time order.
 */
function windowSums(admissions: readonly Admission[], windowUs: number): number[] {
  const sorted = [...admissions].sort((a, b) => a.atUs - b.atUs);
  const sums: number[] = [];
  let sum = 0;
  let j = 0;
  for (let i = 0; i < sorted.length; i++) {
    while (j < sorted.length && sorted[j].atUs <= sorted[i].atUs + windowUs) {
      sum += sorted[j].tokens;
      j++;
    }
    sums.push(sum);
    sum -= sorted[i].tokens;
  }
  return sums;
}

/** The largest token count in any window of length w. */
export function maxInWindow(admissions: readonly Admission[], windowUs: number): number {
  return windowSums(admissions, windowUs).reduce((a, b) => Math.max(a, b), 0);
}

/** Windows of length w in which admitted tokens exceed burst + rate·w. */
export function windowViolations(admissions: readonly Admission[], rate: number, burst: number, windowUs: number): number {
  const bound = burst + (rate * windowUs) / 1e6;
  return windowSums(admissions, windowUs).filter((sum) => sum > bound + 1e-9).length;
}
