// npm run demo -- adaptive: a downstream whose hidden capacity is 10/s, drops to 4/s at 20 s and comes back at 60 s
// (it rejects what exceeds it with a ThrottlingException). 700 items through an adaptive limiter (10/s, AIMD) and,
// side by side in the same runner, a fixed 10/s limiter. Charts, per 2 s: the capacity, the adaptive rate in force and
// the calls each limiter let through (served + rejected); then the rejected calls of each. Exits non-zero if an item
// was not served or the adaptive limiter was rejected more than a fifth as often as the fixed one.
import { adaptiveScenario, callsPerSecond, runSideBySide } from '../bench/adaptive.bench';

const out = process.stdout;

export async function adaptiveDemo(): Promise<number> {
  const s = adaptiveScenario;
  out.write(`cdk-sfn-throttle demo (adaptive): ${s.items} items, ${s.concurrency} at a time, a downstream of 10/s → 4/s at 20 s → 10/s at 60 s; `
    + `an adaptive limiter (10/s, min ${s.minRatePerSecond}/s) beside a fixed 10/s one. About 2 minutes…\n`);
  const write = process.stdout.write.bind(process.stdout);
  (process.stdout as any).write = () => true; // the handlers' EMF lines
  let run;
  try {
    run = await runSideBySide(s, { sampleMs: 500, dynamoDbProcess: true, warmUp: true });
  } finally {
    (process.stdout as any).write = write;
  }
  const endMs = Math.max(run.endedMs.adaptive, run.endedMs.fixed);
  const step = 2_000;
  const adaptive = callsPerSecond(run.stubs.adaptive, 0, endMs);
  const fixed = callsPerSecond(run.stubs.fixed, 0, endMs);
  const at = (points: { atMs: number; value: number }[], ms: number) => {
    const inStep = points.filter((p) => p.atMs >= ms && p.atMs < ms + step);
    return inStep.length ? inStep.reduce((a, p) => a + p.value, 0) / inStep.length : 0;
  };
  const rateAt = (ms: number) => {
    const inStep = run!.samples.filter((x) => x.atMs >= ms && x.atMs < ms + step);
    return inStep.length ? inStep.reduce((a, x) => a + x.rateInForce, 0) / inStep.length : NaN;
  };
  const scale = 3; // characters per call/s
  out.write('\n   t   capacity ▏ adaptive rate in force ● ▏ calls/s through the adaptive limiter █, the fixed one ░\n');
  for (let ms = 0; ms < endMs; ms += step) {
    const cap = run.stubs.adaptive.capacityAt(ms);
    const rate = rateAt(ms);
    const a = at(adaptive, ms);
    const f = at(fixed, ms);
    const width = 12 * scale;
    const line = Array.from({ length: width }, (_, k) => {
      const v = k / scale;
      if (Number.isFinite(rate) && Math.abs(v - rate) < 0.5 / scale) return '●';
      if (Math.abs(v - cap) < 0.5 / scale) return '▏';
      return v < a ? '█' : v < f ? '░' : ' ';
    }).join('');
    out.write(`  ${String(ms / 1000).padStart(3)} s ${String(cap).padStart(4)}/s ${line} ${a.toFixed(1)} vs ${f.toFixed(1)}/s, rate ${Number.isFinite(rate) ? rate.toFixed(2) : '-'}\n`);
  }
  const served = (r: 'adaptive' | 'fixed') => run!.stubs[r].accepted;
  const rejected = (r: 'adaptive' | 'fixed') => run!.stubs[r].rejected;
  const ok = served('adaptive') >= s.items && served('fixed') >= s.items && rejected('adaptive') <= 0.2 * rejected('fixed');
  out.write(`\n${ok ? 'PASS' : 'FAIL'}: rejected calls (ThrottlingException at the downstream): adaptive ${rejected('adaptive')}, fixed ${rejected('fixed')} `
    + `(${(100 * rejected('adaptive') / Math.max(1, rejected('fixed'))).toFixed(0)} %, target ≤ 20 %); served ${served('adaptive')} and ${served('fixed')} of ${s.items}; `
    + `run ${(run.wallMs / 1000).toFixed(1)} s\n`);
  return ok ? 0 : 1;
}
