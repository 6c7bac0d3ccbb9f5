/* eslint-disable no-console */
// npm run bench: prints figures; asserts nothing. See README "Benchmarks".
import * as os from 'os';
import { adaptiveScenario, runAdaptive } from './adaptive.bench';
import { measureVariants } from './bundle.bench';
import { runBreaker } from './circuit-breaker.bench';
import { runContention, runFailures, runUtilization } from './concurrency.bench';
import { dispatcherScenarios, runDispatcher } from './dispatcher.bench';
import { modelApiScenarios, runModelApi } from './model-api.bench';
import { priorityScenarios, runPriorityCore, runPriorityRunner } from './priority.bench';
import { constantLatency, logNormalLatency, runFixedWindow, runGcra, type Scenario } from './rate-limiter.bench';
import { table } from './stats';
import { runTenants } from './tenants.bench';
import { runFixedWaitLoop, runMapWithRetry, runRateLimitedTask } from './workflow.bench';
import { startDynaliteProcess } from '../local/dynalite';

const only = process.argv.slice(2);
const want = (name: string) => only.length === 0 || only.includes(name);
const scenarioFilter = process.env.BENCH_SCENARIO;

const scenarios: Scenario[] = [
  { name: '50/s burst 10, 100 callers', ratePerSecond: 50, burst: 10, shards: 1, callers: 100, durationS: 10 },
  { name: '1000/s 4 shards, 200 callers', ratePerSecond: 1000, burst: 1000, shards: 4, callers: 200, durationS: 10 },
];

async function main() {
  console.log(`cdk-sfn-throttle bench — node ${process.version}, ${os.cpus().length} cores`);
  // dynalite runs in its own process: at 1,000/s an in-process emulator shares the event loop with 200
  // callers and becomes the bottleneck. Two emulators: with DynamoDB's ReturnValuesOnConditionCheckFailure
  // (the old item comes back with a failed condition) and stock dynalite (the handler's GetItem fallback).
  const emulators = [
    { name: 'dynalite+ALL_OLD', returnOldItemOnConditionFailure: true },
    { name: 'dynalite stock', returnOldItemOnConditionFailure: false },
  ];
  if (want('limiter')) {
    const rows = [];
    // DynamoDB from Lambda: an in-memory store behind an injected round trip (constant 8 ms; log-normal with
    // p50 5 ms and p99 40 ms), then dynalite itself.
    for (const target of [
      { kind: 'latency' as const, latency: constantLatency(8), name: 'memory +8 ms' },
      { kind: 'latency' as const, latency: logNormalLatency(5, 40), name: 'memory +lognormal 5/40 ms' },
    ]) {
      for (const s of scenarios.filter((x) => !scenarioFilter || x.name.startsWith(scenarioFilter))) {
        for (const mode of ['RESERVE', 'TRY'] as const) {
          process.stderr.write(`running ${s.name} GCRA ${mode} on ${target.name}…\n`);
          rows.push(await runGcra(target, s, mode));
        }
      }
    }
    for (const e of emulators) {
      const db = await startDynaliteProcess(e);
      try {
        await db.createTable('bench');
        for (const s of scenarios.filter((x) => !scenarioFilter || x.name.startsWith(scenarioFilter))) {
          for (const mode of ['RESERVE', 'TRY'] as const) {
            process.stderr.write(`running ${s.name} GCRA ${mode} on ${e.name}…\n`);
            rows.push(await runGcra({ kind: 'dynalite', db, table: 'bench', name: e.name }, s, mode));
          }
          if (e.returnOldItemOnConditionFailure) {
            process.stderr.write(`running ${s.name} fixed window…\n`);
            rows.push(await runFixedWindow(db, s, 'bench', e.name));
          }
        }
      } finally {
        await db.stop();
      }
    }
    console.log('## RateLimiter under load (10 s each; windows counted at notBefore, and at the caller\'s start = max(answer, notBefore); dynalite in its own process)\n');
    console.log(table(rows));
    console.log();
  }
  if (want('workflow')) {
    process.stderr.write('running the workflow scenario and its baselines…\n');
    const rows = [await runRateLimitedTask(), await runMapWithRetry(), await runFixedWaitLoop()];
    console.log('## Workflow: 60 items, downstream limit 10/s burst 1 (it rejects excess calls with a throttling error); local runner\n');
    console.log(table(rows));
    console.log();
  }
  if (want('concurrency')) {
    // the ConcurrencyLimiter and @dontirun/state-machine-semaphore, side by side: same runner, same emulator
    // the last row: jobs 10× longer, where the runner's own CPU (AWS SDK + dynalite, ~30 ms per execution) matters less
    const utilizationX10 = Object.defineProperty((impl: 'ConcurrencyLimiter' | 'state-machine-semaphore') => runUtilization(impl, 10), 'name', { value: 'runUtilization×10' });
    for (const scenario of [runContention, runFailures, runUtilization, utilizationX10]) {
      const rows = [];
      for (const impl of ['ConcurrencyLimiter', 'state-machine-semaphore'] as const) {
        process.stderr.write(`running ${scenario.name} with ${impl}…\n`);
        rows.push(await scenario(impl));
      }
      console.log(table(rows));
    }
  }
  if (want('model-api')) {
    const rows = [];
    for (const s of modelApiScenarios) {
      process.stderr.write(`running the model API: ${s.name}, ${s.mode}, settle ${s.settle}…\n`);
      rows.push(await runModelApi(s));
    }
    console.log('## Model API: requests and tokens per 2 s window (a minute scaled 30×), through a stub that counts like the provider; local runner\n');
    console.log(table(rows));
    console.log();
  }
  if (want('tenants')) {
    const db = await startDynaliteProcess({ returnOldItemOnConditionFailure: true });
    try {
      await db.createTable('bench');
      const rows = [];
      for (const kind of ['keyLimits', 'single-limit'] as const) {
        process.stderr.write(`running tenants: ${kind}…\n`);
        rows.push(await runTenants(db, 'bench', kind));
      }
      console.log('## Tenants within a shared quota: dynalite (own process) + 5–20 ms per call; RESERVE callers, refusals retried within a second\n');
      console.log(table(rows));
      console.log();
    } finally {
      await db.stop();
    }
  }
  if (want('circuit-breaker')) {
    const rows = [];
    const cases = [[true, true, false], [false, true, false], [true, false, false], [false, false, false], [true, true, true], [false, true, true]];
    for (const [withBreaker, taskRetry, limited] of cases) {
      process.stderr.write(`running the circuit breaker scenario ${withBreaker ? 'with' : 'without'} the breaker, task Retry ${taskRetry}, RateLimitedTask ${limited}…\n`);
      rows.push(await runBreaker(withBreaker, taskRetry, limited));
    }
    console.log('## CircuitBreaker: a downstream down from 2 s to 8 s of 12 s, 20 executions at a time in a loop; local runner\n');
    console.log(table(rows));
    console.log();
  }
  if (want('dispatcher')) {
    const rows = [];
    for (const s of dispatcherScenarios) {
      process.stderr.write(`running the dispatcher: ${s.name}…\n`);
      rows.push(await runDispatcher(s));
    }
    console.log('## BufferedQueueConsumer dispatcher: a backlog drained through the local runner (target calls counted where they arrive)\n');
    console.log(table(rows));
    console.log();
  }
  if (want('adaptive')) {
    const s = adaptiveScenario;
    process.stderr.write(`running the adaptive limiter against a changing capacity: ${s.items} items, adaptive and fixed side by side…\n`);
    const out = await runAdaptive(s);
    console.log(`## Adaptive limit (AIMD) vs a fixed limit: downstream capacity ${s.capacity.map((p) => `${p.ratePerSecond}/s from ${p.fromMs / 1000} s`).join(', ')} `
      + `(token bucket at arrival, burst ${s.downstreamBurst}); ${s.items} items, ThrottledMap of ${s.concurrency}, RetryPolicy.throttling maxAttempts ${s.maxAttempts}; `
      + `limiters ${s.ratePerSecond}/s burst ${s.burst} (adaptive: min ${s.minRatePerSecond}/s, defaults); one runner, one dynalite (own process); wall ${(out.wallMs / 1000).toFixed(1)} s\n`);
    console.log(table(out.rows));
    console.log('\nTrace every 2 s (calls/s = all calls at the downstream, served/s = accepted ones):\n');
    console.log(table(out.trace));
    console.log();
  }
  if (want('priority')) {
    const rows = [];
    for (const s of priorityScenarios) {
      process.stderr.write(`running priority classes in the limiter core: ${s.name}…\n`);
      rows.push(await runPriorityCore(s));
    }
    console.log('## Priority classes, limiter core: 10/s burst 10, priorityReserve 0.2; Limiter containers over an in-memory store, 5–20 ms per call; '
      + 'background: 20 workers (1 s calls: 2× the limit), a refusal retried after U(0, 1 s) as the acquire state\'s Retry does; arrivals: Poisson 2/s, RESERVE. '
      + 'Wait in emission intervals (100 ms). Targets: HIGH p99 ≤ 2 intervals; utilization ≥ 97 % (with HIGH, and LOW alone)\n');
    console.log(table(rows));
    console.log();
    process.stderr.write('running priority classes through the local runner…\n');
    console.log('## Priority classes through the local runner: LOW = a ThrottledMap of 20 (1 s calls), HIGH = an execution each at 2/s (Poisson); 10/s burst 10; 30 s\n');
    console.log(table(await runPriorityRunner({ lowItems: 1000, durationS: 30 })));
    console.log();
  }
  if (want('bundle')) {
    const db = await startDynaliteProcess();
    try {
      await db.createTable('bench');
      process.stderr.write('measuring handler bundles…\n');
      console.log('## Acquire handler bundle (esbuild, node24 target)\n');
      console.log(table(measureVariants(db, 'bench')));
      console.log();
    } finally {
      await db.stop();
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
