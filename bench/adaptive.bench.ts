// The adaptive limit (AIMD) against a downstream whose hidden capacity changes: 10/s, 4/s from 20 s, 10/s again from
// 60 s (a token bucket counted at arrival, burst 2; what exceeds it is rejected with a ThrottlingException). An adaptive
// limiter (10/s, min 1/s) and a fixed 10/s limiter side by side: one state machine whose Choice sends an execution to
// either ThrottledMap, two executions at once in the same runner and the same emulator, each with its own downstream.
// Prints figures (and the targets beside them); asserts nothing.
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { App, CfnResource, Stack } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { type AdaptiveConfig, adaptiveBounds, effectiveIv, rateOf } from '../lambda/rate-limiter/adaptive';
import { CapacityStub, type CapacityPhase } from '../local/capacity-stub';
import { type LocalExecution, LocalRunner } from '../local/runner';
import { nowUs } from '../local/timing';
import { MapConcurrency, RateLimitedTask, RateLimiter, RetryPolicy, ThrottledMap } from '../src';

export interface AdaptiveScenario {
  readonly items: number;
  readonly concurrency: number;
  /** The downstream's hidden capacity over time. */
  readonly capacity: readonly CapacityPhase[];
  readonly downstreamBurst: number;
  readonly ratePerSecond: number;
  readonly burst: number;
  readonly minRatePerSecond: number;
  /** Adaptive increase, per second (the library's default: rate / 20). */
  readonly increasePerSecond?: number;
  readonly maxAttempts: number;
}

/** The scenario: 700 items (about 8/s on average over 80 s), 30 at a time. */
export const adaptiveScenario: AdaptiveScenario = {
  items: 700,
  concurrency: 30,
  capacity: [{ fromMs: 0, ratePerSecond: 10 }, { fromMs: 20_000, ratePerSecond: 4 }, { fromMs: 60_000, ratePerSecond: 10 }],
  downstreamBurst: 2,
  ratePerSecond: 10,
  burst: 2,
  minRatePerSecond: 1,
  maxAttempts: 20,
};

export type Row = 'adaptive' | 'fixed';
export const ROWS: readonly Row[] = ['adaptive', 'fixed'];
const prefix = (row: Row) => (row === 'adaptive' ? 'Adaptive' : 'Fixed');

/**
 * One state machine, two ThrottledMaps (its Choice picks one by `$.limiter`): each item a RateLimitedTask calling its
 * own downstream (`Adaptive Invoke` / `Fixed Invoke`), retrying ThrottlingException through the limiter.
 */
export function buildSideBySide(s: AdaptiveScenario) {
  const stack = new Stack(new App(), 'Adaptive', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiters = {} as Record<Row, RateLimiter>;
  const maps = {} as Record<Row, ThrottledMap>;
  for (const row of ROWS) {
    const p = prefix(row);
    const limiter = new RateLimiter(stack, `${p}Limiter`, {
      limiterName: row,
      ratePerSecond: s.ratePerSecond,
      burst: s.burst,
      adaptive: row === 'adaptive' ? { minRatePerSecond: s.minRatePerSecond, increasePerSecond: s.increasePerSecond } : undefined,
    });
    const fn = lambda.Function.fromFunctionArn(stack, `${p}Downstream`, `arn:aws:lambda:us-east-1:123456789012:function:downstream-${row}`);
    const invoke = tasks.LambdaInvoke.jsonPath(stack, `${p} Invoke`, {
      lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result',
    });
    const call = new RateLimitedTask(stack, `${p} Call`, {
      limiter,
      task: invoke,
      retry: RetryPolicy.throttling({ errors: ['ThrottlingException'], maxAttempts: s.maxAttempts }),
    });
    limiters[row] = limiter;
    maps[row] = new ThrottledMap(stack, `${p} Items`, {
      itemsPath: '$.items', concurrency: MapConcurrency.fixed(s.concurrency), itemProcessor: call, resultPath: sfn.JsonPath.DISCARD,
    });
  }
  const which = new sfn.Choice(stack, 'Which Limiter')
    .when(sfn.Condition.stringEquals('$.limiter', 'adaptive'), maps.adaptive)
    .otherwise(maps.fixed);
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(which) });
  return { stack, machine, limiters, maps };
}

/** The adaptive configuration the function is given (the library's defaults where the scenario has none). */
export function adaptiveConfigOf(s: AdaptiveScenario): AdaptiveConfig {
  return {
    minRatePerSecond: s.minRatePerSecond,
    decreaseFactor: 0.7,
    increasePerSecond: s.increasePerSecond ?? s.ratePerSecond / 20,
    maxReservationMs: 2_000,
  };
}

/** One reading of the adaptive bucket item: ms after the start, the stored rate and the rate in force then. */
export interface RateSample {
  readonly atMs: number;
  readonly storedRate: number;
  readonly rateInForce: number;
}

/** What one side-by-side run gives. */
export interface SideBySideRun {
  readonly stubs: Record<Row, CapacityStub>;
  readonly results: Record<Row, LocalExecution>;
  /** ms after the start that each execution ended. */
  readonly endedMs: Record<Row, number>;
  /** ms after the start that each execution's last item started (the Map has no item left to start). */
  readonly lastStartedMs: Record<Row, number>;
  readonly samples: RateSample[];
  readonly wallMs: number;
}

/**
 * Runs both executions at once, starting the downstreams' clocks with them, and reads the adaptive bucket item every
 * `sampleMs` (a consistent GetItem; the rate in force is the item's interval, raised by the time since its last change).
 */
export async function runSideBySide(s: AdaptiveScenario, options: { sampleMs?: number; dynamoDbProcess?: boolean; warmUp?: boolean } = {}):
Promise<SideBySideRun> {
  const { stack, machine, limiters } = buildSideBySide(s);
  const stubs: Record<Row, CapacityStub> = {
    adaptive: new CapacityStub(s.capacity, s.downstreamBurst),
    fixed: new CapacityStub(s.capacity, s.downstreamBurst),
  };
  const runner = await LocalRunner.start(stack, machine, {
    taskHandlers: { 'Adaptive Invoke': () => stubs.adaptive.invoke(), 'Fixed Invoke': () => stubs.fixed.invoke() },
    dynamoDbProcess: options.dynamoDbProcess ?? true,
  });
  const tableName = runner.nameOf(stack.getLogicalId(limiters.adaptive.table.node.defaultChild as CfnResource));
  if (options.warmUp ?? true) await warmUp(runner, stack, limiters);
  const config = adaptiveConfigOf(s);
  const bounds = adaptiveBounds(s.ratePerSecond, config, 1);
  const samples: RateSample[] = [];
  const write = process.stdout.write;
  process.stdout.write = (() => true) as any; // the handlers' EMF lines
  let timer: NodeJS.Timeout | undefined;
  try {
    const items = Array.from({ length: s.items }, (_, i) => ({ i }));
    const t0 = nowUs();
    for (const row of ROWS) stubs[row].start();
    const endedMs = {} as Record<Row, number>;
    const handles = ROWS.map((row) => runner.startExecution({ limiter: row, items }));
    const running = ROWS.map((row, n) => handles[n].result.then((r) => {
      endedMs[row] = (nowUs() - t0) / 1000;
      return r;
    }));
    let reading = false;
    timer = setInterval(() => {
      if (reading) return;
      reading = true;
      const atUs = nowUs();
      runner.db.client.send(new GetItemCommand({ TableName: tableName, Key: { pk: { S: 'adaptive#bucket#default#0' } }, ConsistentRead: true }))
        .then((out) => {
          const iv = out.Item?.iv?.N === undefined ? undefined : Number(out.Item.iv.N);
          const ac = out.Item?.ac?.N === undefined ? undefined : Number(out.Item.ac.N);
          samples.push({
            atMs: (atUs - t0) / 1000,
            storedRate: iv === undefined ? s.ratePerSecond : rateOf(iv, 1),
            rateInForce: rateOf(effectiveIv(iv, ac, atUs, bounds, config), 1),
          });
        })
        .catch(() => undefined)
        .finally(() => { reading = false; });
    }, options.sampleMs ?? 500);
    const done = await Promise.all(running);
    const wallMs = (nowUs() - t0) / 1000;
    const lastStartedMs = {} as Record<Row, number>;
    for (const [n, row] of ROWS.entries()) {
      const starts = done[n].events.filter((e) => e.type === 'MapIterationStarted').map((e) => e.timestamp);
      lastStartedMs[row] = starts.length ? Math.max(...starts) - t0 / 1000 : NaN;
    }
    return { stubs, results: { adaptive: done[0], fixed: done[1] }, endedMs, lastStartedMs, samples, wallMs };
  } finally {
    if (timer) clearInterval(timer);
    process.stdout.write = write;
    await runner.stop();
  }
}

/**
 * Loads both acquire functions before the clock starts (one acquire each, on a key of their own, through the runner's
 * Lambda endpoint): the first invocation of a handler module imports the SDK and opens its connection (about a second
 * here), and a limiter that has not measured a round trip reserves a whole second ahead. Neither is the adaptation
 * measured here.
 */
async function warmUp(runner: LocalRunner, stack: Stack, limiters: Record<Row, RateLimiter>): Promise<void> {
  const lambdaClient = new LambdaClient({ region: 'us-east-1', endpoint: process.env.AWS_ENDPOINT_URL_LAMBDA, credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
  const write = process.stdout.write;
  process.stdout.write = (() => true) as any;
  try {
    for (const row of ROWS) {
      const name = runner.nameOf(stack.getLogicalId(limiters[row].acquireFunction.node.defaultChild as CfnResource));
      for (let i = 0; i < 3; i++) {
        await lambdaClient.send(new InvokeCommand({ FunctionName: name, Payload: Buffer.from(JSON.stringify({ key: 'warm-up', tokens: 1, mode: 'TRY' })) }));
      }
    }
  } finally {
    process.stdout.write = write;
    lambdaClient.destroy();
  }
}

/** A value and its sample time (ms after the start). */
interface Point { readonly atMs: number; readonly value: number }

/**
 * Seconds after `changeMs` from which every point up to `endMs` stays within ±20 % of `capacity` ('never' when the
 * last one does not), and the share of points within it from `changeMs + 15 s` on.
 */
export function settling(points: readonly Point[], changeMs: number, endMs: number, capacity: number): { afterS: number | 'never'; within15: number } {
  const span = points.filter((p) => p.atMs >= changeMs && p.atMs < endMs);
  const ok = (p: Point) => Math.abs(p.value - capacity) <= 0.2 * capacity + 1e-9;
  let from: number | 'never' = 'never';
  for (let i = span.length - 1; i >= 0 && ok(span[i]); i--) from = span[i].atMs;
  const late = span.filter((p) => p.atMs >= changeMs + 15_000);
  return { afterS: from === 'never' ? 'never' : (from - changeMs) / 1000, within15: late.length ? late.filter(ok).length / late.length : NaN };
}

/** Calls per second at the downstream, one point per whole 1 s bucket in [fromMs, toMs) (bucket start time). */
export function callsPerSecond(stub: CapacityStub, fromMs: number, toMs: number, which: 'all' | 'accepted' = 'all'): Point[] {
  const out: Point[] = [];
  for (let t = fromMs; t + 1000 <= toMs; t += 1000) out.push({ atMs: t, value: stub.count(t, t + 1000, which) });
  return out;
}

/** A moving average over `n` points (a point per full window, stamped at its end). */
function movingAverage(points: readonly Point[], n: number): Point[] {
  const out: Point[] = [];
  for (let i = n - 1; i < points.length; i++) {
    out.push({ atMs: points[i].atMs + 1000, value: points.slice(i - n + 1, i + 1).reduce((a, p) => a + p.value, 0) / n });
  }
  return out;
}

/** States entered and retried (the transitions Step Functions bills), and how often the limiter function is invoked. */
export function transitions(execution: LocalExecution, row: Row) {
  const p = prefix(row);
  const counted = execution.events.filter((e) => e.type === 'StateEntered' || e.type === 'StateRetried');
  const limiterStates = [`${p} Call Acquire`, `${p} Call Backoff`];
  return {
    all: counted.length,
    limiterInvocations: counted.filter((e) => limiterStates.includes(e.stateName ?? '')).length,
    refusalsRetried: execution.events.filter((e) => e.type === 'StateRetried' && e.stateName === `${p} Call Acquire`).length,
    backoffs: execution.events.filter((e) => e.type === 'StateEntered' && e.stateName === `${p} Call Backoff`).length,
  };
}

const pct = (x: number) => (Number.isFinite(x) ? `${Math.round(100 * x)} %` : '-');
const secs = (x: number | 'never') => (x === 'never' ? 'never' : `${x.toFixed(1)} s`);

export async function runAdaptive(s: AdaptiveScenario = adaptiveScenario) {
  const run = await runSideBySide(s);
  const changes = s.capacity.slice(1);
  const byRow = {} as Record<Row, Record<string, string | number>>;
  for (const row of ROWS) {
    const stub = run.stubs[row];
    const result = run.results[row];
    const lastServed = Math.max(...stub.calls.filter((c) => c.accepted).map((c) => c.atMs));
    // The settling windows end at the next change; the last one when the Map has no item left to start (after that the
    // demand winds down with the items still in flight, whatever the limiter does).
    const loadedEnd = run.lastStartedMs[row];
    const phases = s.capacity.map((p, i) => ({
      from: p.fromMs, to: i + 1 < s.capacity.length ? s.capacity[i + 1].fromMs : lastServed, rate: p.ratePerSecond,
    }));
    const t = transitions(result, row);
    const figures: Record<string, string | number> = {
      'status (items served)': `${result.status} (${stub.accepted}/${s.items})`,
      'last item started / served / execution ended': `${(loadedEnd / 1000).toFixed(1)} / ${(lastServed / 1000).toFixed(1)} / ${(run.endedMs[row] / 1000).toFixed(1)} s`,
      'downstream calls': stub.calls.length,
      'rejected (ThrottlingException)': stub.rejected,
    };
    for (const ph of phases) {
      const served = stub.count(ph.from, ph.to + 1e-6, 'accepted');
      const perS = served / ((ph.to - ph.from) / 1000);
      figures[`completed/s ${ph.from / 1000}–${ph.to === lastServed ? 'end' : ph.to / 1000} s, % of ${ph.rate}/s`] = `${pct(perS / ph.rate)} (${perS.toFixed(2)}/s)`;
    }
    for (const [i, c] of changes.entries()) {
      const end = i + 1 < changes.length ? changes[i + 1].fromMs : loadedEnd;
      const rate = run.samples.map((x) => ({ atMs: x.atMs, value: row === 'adaptive' ? x.rateInForce : s.ratePerSecond }));
      const a = settling(callsPerSecond(stub, c.fromMs, end), c.fromMs, end, c.ratePerSecond);
      const b = settling(movingAverage(callsPerSecond(stub, Math.max(0, c.fromMs - 4000), end), 5), c.fromMs, end, c.ratePerSecond);
      const r = settling(rate, c.fromMs, end, c.ratePerSecond);
      const label = `→ ${c.ratePerSecond}/s at ${c.fromMs / 1000} s`;
      figures[`${label}: within ±20 % for good after — calls/1 s ; 5 s avg ; rate in force`] = `${secs(a.afterS)} ; ${secs(b.afterS)} ; ${secs(r.afterS)}`;
      figures[`${label}: window judged`] = `${c.fromMs / 1000}–${(end / 1000).toFixed(1)} s`;
      figures[`${label}: share within ±20 % from +15 s — same three`] = `${pct(a.within15)} ; ${pct(b.within15)} ; ${pct(r.within15)}`;
    }
    figures['transitions / item (states entered + retried)'] = (t.all / s.items).toFixed(1);
    figures['limiter Lambda invocations / item'] = (t.limiterInvocations / s.items).toFixed(2);
    figures['  of which: acquire refusals retried ; backoff steps'] = `${(t.refusalsRetried / s.items).toFixed(2)} ; ${(t.backoffs / s.items).toFixed(2)}`;
    figures['downstream calls / item'] = (stub.calls.length / s.items).toFixed(2);
    byRow[row] = figures;
  }
  const ra = run.stubs.adaptive.rejected;
  const rf = run.stubs.fixed.rejected;
  const targets: Record<string, string> = {
    'rejected (ThrottlingException)': `adaptive ≤ 20 % of fixed: ${pct(ra / rf)} → ${ra <= 0.2 * rf ? 'met' : 'MISSED'}`,
  };
  for (const k of Object.keys(byRow.adaptive)) {
    if (k.startsWith('completed/s')) targets[k] = `≥ 75 % → ${parseInt(String(byRow.adaptive[k]), 10) >= 75 ? 'met' : 'MISSED'}`;
    if (k.includes('for good after')) {
      const first = String(byRow.adaptive[k]).split(' ; ').map((x) => x.replace(' s', ''));
      targets[k] = `≤ 15 s → ${first.map((x) => (x !== 'never' && parseFloat(x) <= 15 ? 'met' : 'MISSED')).join(' ; ')}`;
    }
  }
  const rows = Object.keys(byRow.adaptive).map((k) => ({ 'figure': k, 'adaptive': byRow.adaptive[k], 'fixed': byRow.fixed[k], 'target (adaptive)': targets[k] ?? '' }));

  // traces every 2 s: capacity, the adaptive rate in force (item read every 500 ms), calls and served per second
  const horizon = Math.max(run.endedMs.adaptive, run.endedMs.fixed);
  const trace = [];
  for (let t = 0; t < horizon; t += 2000) {
    const sample = [...run.samples].reverse().find((x) => x.atMs <= t + 1000);
    const cell = (row: Row) => `${(run.stubs[row].count(t, t + 2000) / 2).toFixed(1)} / ${(run.stubs[row].count(t, t + 2000, 'accepted') / 2).toFixed(1)}`;
    trace.push({
      't (s)': `${t / 1000}–${(t + 2000) / 1000}`,
      'capacity /s': run.stubs.adaptive.capacityAt(t),
      'adaptive rate in force /s (item at t+1 s)': sample ? sample.rateInForce.toFixed(2) : '-',
      'adaptive calls/s / served/s': cell('adaptive'),
      'fixed calls/s / served/s': cell('fixed'),
    });
  }
  return { rows, trace, wallMs: run.wallMs, samples: run.samples.length };
}
