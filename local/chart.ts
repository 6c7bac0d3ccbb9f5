// What the runner prints while many executions run: a progress bar, then a chart of events per second (the calls
// a downstream received, or the admissions the limiters granted), with a limit marked.

/** Where text goes: a stream, or anything with write() (and isTTY when it is a terminal). */
export interface TextOut {
  readonly isTTY?: boolean;
  write(s: string): unknown;
}

export interface ProgressBar {
  /** Counts one execution as done (failed or not) and redraws. */
  tick(failed?: boolean): void;
  /** Ends the bar's line. */
  end(): void;
}

/**
 * A progress bar of `total` executions on `out`: redrawn in place on a terminal, a line every 20 % otherwise.
 * `detail()` adds to the line (e.g. "37 API calls").
 */
export function progressBar(out: TextOut, total: number, noun: string, detail: () => string = () => ''): ProgressBar {
  const tty = out.isTTY === true;
  let done = 0;
  let failed = 0;
  let lastLine = -1;
  const draw = () => {
    const width = 40;
    const filled = Math.round((done / Math.max(1, total)) * width);
    const extra = detail();
    const line = `[${'█'.repeat(filled)}${'░'.repeat(width - filled)}] ${done}/${total} ${noun}${failed ? `, ${failed} failed` : ''}${extra ? `, ${extra}` : ''}`;
    if (tty) {out.write(`\r${line}`);} else {
      const step = Math.floor((done * 5) / Math.max(1, total));
      if (step !== lastLine || done === total) {
        lastLine = step;
        out.write(`${line}\n`);
      }
    }
  };
  return {
    tick(f = false) {
      done++;
      if (f) failed++;
      draw();
    },
    end() {
      if (tty) out.write('\n');
    },
  };
}

/** Events per second from the first one: `[count of second 0, count of second 1, ...]`. */
export function perSecond(timesUs: readonly number[]): number[] {
  if (timesUs.length === 0) return [];
  const t0 = Math.min(...timesUs);
  const seconds = Math.floor((Math.max(...timesUs) - t0) / 1e6) + 1;
  const counts = new Array<number>(seconds).fill(0);
  for (const t of timesUs) counts[Math.floor((t - t0) / 1e6)]++;
  return counts;
}

/** The per-second chart: one bar per second, the limit (if given) marked `│`. */
export function perSecondChart(counts: readonly number[], limit?: number): string {
  const scale = Math.max(Math.ceil(limit ?? 0) + 1, ...counts, 1);
  return counts.map((n, s) => {
    const bar = Array.from({ length: scale }, (_, k) => (k < n ? '█' : limit !== undefined && k === Math.ceil(limit) ? '│' : ' ')).join('');
    return `  ${String(s).padStart(3)} s  ${bar} ${n}\n`;
  }).join('');
}
