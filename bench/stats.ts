/** Small helpers shared by the benchmarks. */

export interface Timed {
  readonly atUs: number;
  readonly tokens: number;
}

export function maxInAnyWindow(events: readonly Timed[], windowUs: number): number {
  const sorted = [...events].sort((a, b) => a.atUs - b.atUs);
  let best = 0;
  let sum = 0;
  let j = 0;
  for (let i = 0; i < sorted.length; i++) {
    while (j < sorted.length && sorted[j].atUs <= sorted[i].atUs + windowUs) {
      sum += sorted[j].tokens;
      j++;
    }
    best = Math.max(best, sum);
    sum -= sorted[i].tokens;
  }
  return best;
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export const nowUs = () => Math.floor((performance.timeOrigin + performance.now()) * 1000);
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

export function table(rows: Record<string, string | number>[]): string {
  const cols = Object.keys(rows[0] ?? {});
  const cell = (v: string | number) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : v);
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => `| ${vals.map((v, i) => v.padEnd(widths[i])).join(' | ')} |`;
  return [line(cols), line(widths.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join('\n');
}
