import { DynamoDBClient, GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { percentile } from './stats';
import { DynamoDbBucketStore } from '../lambda/rate-limiter/dynamodb-store';
import { Limiter } from '../lambda/rate-limiter/limiter';
import type { AcquireMode } from '../lambda/rate-limiter/request';
import { MemoryBucketStore, type BucketStore, type StoredBucket } from '../lambda/rate-limiter/store';
import type { LocalDynamoDb } from '../local/dynalite';
import { type Admission, maxInWindow, nowUs, sleep } from '../local/timing';

export interface Scenario {
  readonly name: string;
  readonly ratePerSecond: number;
  readonly burst: number;
  readonly shards: number;
  readonly callers: number;
  readonly durationS: number;
}

export interface Figures {
  readonly [k: string]: string | number;
}

function clientFor(db: LocalDynamoDb): DynamoDBClient {
  return new DynamoDBClient({
    endpoint: db.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' },
    maxAttempts: 1,
  });
}

/** Counts conditional failures on the way to the real store, by what the stored tat turned out to be. */
class CountingStore implements BucketStore {
  conditionalFailures = 0;
  /** Idle write found the bucket busy. */
  idleFoundBusy = 0;
  /** Busy write found the bucket idle (tat < arrival) or absent. */
  busyFoundIdle = 0;
  /** Busy write found the bucket beyond its ceiling (a denial). */
  busyFoundFull = 0;
  rescales = 0;
  overrideReads = 0;
  onOverrideRead?: () => void;
  constructor(private readonly inner: BucketStore) {}
  async takeBusy(pk: string, inc: number, lo: number, hi: number, exp: number, iv: number, tol: number) {
    const r = await this.inner.takeBusy(pk, inc, lo, hi, exp, iv, tol);
    if (!r.ok) {
      this.conditionalFailures++;
      const tat = typeof r.item === 'object' ? (r.item as StoredBucket).tat : undefined;
      if (typeof tat === 'number' && tat > hi) this.busyFoundFull++;
      else this.busyFoundIdle++;
    }
    return r;
  }
  adapt(...a: Parameters<BucketStore['adapt']>) { return this.inner.adapt(...a); }
  async takeIdle(pk: string, now: number, tat: number, exp: number, iv: number, tol: number) {
    const r = await this.inner.takeIdle(pk, now, tat, exp, iv, tol);
    if (!r.ok) {
      this.conditionalFailures++;
      this.idleFoundBusy++;
    }
    return r;
  }
  rescale(pk: string, oldTat: number, oldIv: number | undefined, newTat: number, iv: number, exp: number, tol: number) {
    this.rescales++;
    return this.inner.rescale(pk, oldTat, oldIv, newTat, iv, exp, tol);
  }
  readBucket(pk: string) { return this.inner.readBucket(pk); }
  readOverride(pk: string) {
    this.overrideReads++;
    this.onOverrideRead?.();
    return this.inner.readOverride(pk);
  }
}

/** Round-trip latency of a store: half on the way there, half on the way back (the write happens in between). */
export type Latency = () => number;

/** A constant round trip, ms. */
export const constantLatency = (ms: number): Latency => () => ms;

/** A log-normal round trip with the given median and 99th percentile, ms (DynamoDB from Lambda: 5 / 40). */
export function logNormalLatency(p50Ms: number, p99Ms: number): Latency {
  const mu = Math.log(p50Ms);
  const sigma = (Math.log(p99Ms) - mu) / 2.3263;
  return () => {
    // Box–Muller
    const u = 1 - Math.random();
    const v = Math.random();
    return Math.exp(mu + sigma * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v));
  };
}

/** A store whose every call takes `latency()`: DynamoDB's round trip from a Lambda function, without dynalite. */
export class LatencyStore implements BucketStore {
  constructor(private readonly inner: BucketStore, private readonly latency: Latency) {}
  private async trip<T>(call: () => Promise<T>): Promise<T> {
    const ms = this.latency();
    await sleep(ms / 2);
    const r = await call();
    await sleep(ms / 2);
    return r;
  }
  takeBusy(...a: Parameters<BucketStore['takeBusy']>) { return this.trip(() => this.inner.takeBusy(...a)); }
  takeIdle(...a: Parameters<BucketStore['takeIdle']>) { return this.trip(() => this.inner.takeIdle(...a)); }
  rescale(...a: Parameters<BucketStore['rescale']>) { return this.trip(() => this.inner.rescale(...a)); }
  readBucket(pk: string) { return this.trip(() => this.inner.readBucket(pk)); }
  readOverride(pk: string) { return this.trip(() => this.inner.readOverride(pk)); }
  adapt(...a: Parameters<BucketStore['adapt']>) { return this.trip(() => this.inner.adapt(...a)); }
}

/** Where a run's buckets live: dynalite through the SDK, or an in-memory store behind an injected latency. */
export type StoreTarget =
  | { readonly kind: 'dynalite'; readonly db: LocalDynamoDb; readonly table: string; readonly name: string }
  | { readonly kind: 'latency'; readonly latency: Latency; readonly name: string };

/**
 * Lambda-like containers: a call takes an idle container or starts a new one, and holds it until it returns
 * (in RESERVE that includes the sub-second sleep the handler does). Each container has its own caches.
 */
class ContainerPool {
  private readonly idle: Limiter[] = [];
  created = 0;
  constructor(private readonly make: () => Limiter) {}
  async run<T>(fn: (l: Limiter) => Promise<T>): Promise<T> {
    const container = this.idle.pop() ?? (this.created++, this.make());
    try {
      return await fn(container);
    } finally {
      this.idle.push(container);
    }
  }
}

/**
 * GCRA under load. TRY callers come back after retryAfter (+ up to 2 ms jitter); RESERVE callers wait out
 * their reservation and reserve again.
 */
export async function runGcra(target: StoreTarget, s: Scenario, mode: AcquireMode): Promise<Figures> {
  const emulator = target.name;
  const client = target.kind === 'dynalite' ? clientFor(target.db) : undefined;
  const store = new CountingStore(client && target.kind === 'dynalite'
    ? new DynamoDbBucketStore(client, target.table)
    : new LatencyStore(new MemoryBucketStore(), (target as { latency: Latency }).latency));
  const config = { limiterName: `bench-${mode}-${s.ratePerSecond}-${emulator.length}`, ratePerSecond: s.ratePerSecond, burst: s.burst, shards: s.shards, maxWaitMs: 300_000 };
  const pool = new ContainerPool(() => new Limiter(config, { store, clockUs: nowUs, random: Math.random }));
  const admitted: Admission[] = [];
  /** When each admitted caller really starts: max(its answer, its notBefore). */
  const starts: Admission[] = [];
  let lateAnswers = 0;
  const latenciesMs: number[] = [];
  /** [time, DynamoDB calls, admitted?] per attempt, for the steady-state (second half) figures. */
  const log: [number, number, boolean][] = [];
  const overrideReadsAt: number[] = [];
  let attempts = 0;
  let calls = 0;
  let denied = 0;
  const errors: Record<string, number> = {};
  if (client && target.kind === 'dynalite') await client.send(new GetItemCommand({ TableName: target.table, Key: { pk: { S: 'warm-up' } } }));
  store.onOverrideRead = () => overrideReadsAt.push(nowUs());
  const start = nowUs();
  const end = start + s.durationS * 1e6;

  const caller = async () => {
    while (nowUs() < end) {
      try {
        const r = await pool.run(async (limiter) => {
          const t0 = performance.now();
          const out = await limiter.acquire({ key: 'api', tokens: 1, mode });
          latenciesMs.push(performance.now() - t0);
          if (out.admitted) {
            const answeredUs = nowUs();
            if (answeredUs > out.atUs) lateAnswers++;
            starts.push({ atUs: Math.max(answeredUs, out.atUs), tokens: 1 });
          }
          // The handler sleeps the sub-second part of a wait before it returns.
          if (out.admitted) await sleep((out.waitUs % 1e6) / 1000);
          return out;
        });
        attempts++;
        calls += r.dynamoCalls;
        log.push([nowUs(), r.dynamoCalls, r.admitted]);
        if (r.admitted) {
          admitted.push({ atUs: r.atUs, tokens: 1 });
          if (mode === 'RESERVE') await sleep((r.atUs - nowUs()) / 1000);
        } else {
          denied++;
          await sleep(r.retryAfterUs / 1000 + Math.random() * 2);
        }
      } catch (err) {
        errors[(err as Error).name] = (errors[(err as Error).name] ?? 0) + 1;
        await sleep(50);
      }
    }
  };
  await Promise.all(Array.from({ length: s.callers }, caller));
  client?.destroy();

  const inRun = admitted.filter((a) => a.atUs <= end).length;
  // Ideal from the first admission: the bucket starts full then, not when the bench started its clock.
  const first = Math.min(...admitted.map((a) => a.atUs));
  const ideal = s.burst + (s.ratePerSecond * (end - first)) / 1e6;
  const mid = start + (end - start) / 2;
  const late = log.filter(([t]) => t >= mid);
  const lateCalls = late.reduce((n, [, c]) => n + c, 0);
  const lateAdmitted = late.filter(([, , a]) => a).length;
  const lateOverrideReads = overrideReadsAt.filter((t) => t >= mid).length;
  return {
    'scenario': s.name,
    'design': `GCRA ${mode}`,
    'emulator': emulator,
    'admitted': inRun,
    ...windowFigures(admitted, s),
    'windows over at start': windowFigures(starts, s)['windows over bound'],
    'answers after slot': `${lateAnswers} (${((100 * lateAnswers) / Math.max(1, admitted.length)).toFixed(1)} %)`,
    'utilization %': (100 * inRun) / ideal,
    'attempts': attempts,
    'calls/attempt': calls / attempts,
    'calls/admitted': calls / admitted.length,
    'calls/attempt 2nd half': lateCalls / late.length,
    'calls/admitted 2nd half': lateCalls / lateAdmitted,
    'override reads': store.overrideReads,
    'bucket calls/admitted (all / 2nd half)': `${((calls - store.overrideReads) / admitted.length).toFixed(2)} / ${((lateCalls - lateOverrideReads) / lateAdmitted).toFixed(2)}`,
    'cond. failures': store.conditionalFailures,
    'rescales': store.rescales,
    'failures idle/busy-low/busy-full': `${store.idleFoundBusy}/${store.busyFoundIdle}/${store.busyFoundFull}`,
    'denied': denied,
    'containers': pool.created,
    'p50 ms': percentile(latenciesMs, 50),
    'p99 ms': percentile(latenciesMs, 99),
    'errors': Object.keys(errors).length ? JSON.stringify(errors) : '-',
  };
}

/**
 * The common hand-written design: a counter per fixed one-second window (UpdateItem ADD n IF n < limit).
 * Callers that are refused poll again after 50 ms.
 */
export async function runFixedWindow(db: LocalDynamoDb, s: Scenario, table: string, emulator: string): Promise<Figures> {
  // (the hand-written baseline: starts are at the answer, so both window counts are the same)
  const client = clientFor(db);
  const admitted: Admission[] = [];
  const latenciesMs: number[] = [];
  let attempts = 0;
  let failures = 0;
  const start = nowUs();
  const end = start + s.durationS * 1e6;
  const limit = Math.floor(s.ratePerSecond);
  const caller = async () => {
    while (nowUs() < end) {
      const now = nowUs();
      const windowId = Math.floor(now / 1e6);
      const t0 = performance.now();
      attempts++;
      try {
        await client.send(new UpdateItemCommand({
          TableName: table,
          Key: { pk: { S: `naive#${windowId}` } },
          UpdateExpression: 'ADD n :one',
          ConditionExpression: 'attribute_not_exists(n) OR n < :limit',
          ExpressionAttributeValues: { ':one': { N: '1' }, ':limit': { N: String(limit) } },
        }));
        latenciesMs.push(performance.now() - t0);
        admitted.push({ atUs: now, tokens: 1 });
      } catch (err) {
        latenciesMs.push(performance.now() - t0);
        if ((err as Error).name !== 'ConditionalCheckFailedException') throw err;
        failures++;
        await sleep(50);
      }
    }
  };
  await Promise.all(Array.from({ length: s.callers }, caller));
  client.destroy();
  const inRun = admitted.filter((a) => a.atUs <= end).length;
  return {
    'scenario': s.name,
    'design': 'fixed window (naive)',
    'emulator': emulator,
    'admitted': inRun,
    ...windowFigures(admitted, s),
    'windows over at start': '-',
    'answers after slot': '-',
    'utilization %': (100 * inRun) / (s.burst + s.ratePerSecond * s.durationS),
    'attempts': attempts,
    'calls/attempt': 1,
    'calls/admitted': attempts / admitted.length,
    'calls/attempt 2nd half': 1,
    'calls/admitted 2nd half': '-',
    'override reads': '-',
    'bucket calls/admitted (all / 2nd half)': '-',
    'cond. failures': failures,
    'rescales': '-',
    'failures idle/busy-low/busy-full': '-',
    'denied': failures,
    'containers': '-',
    'p50 ms': percentile(latenciesMs, 50),
    'p99 ms': percentile(latenciesMs, 99),
    'errors': '-',
  };
}

function windowFigures(admitted: Admission[], s: Scenario): Figures {
  const out: Record<string, string | number> = {};
  let violations = 0;
  for (const [label, w] of [['0.1s', 0.1], ['1s', 1], ['10s', 10]] as const) {
    const max = maxInWindow(admitted, w * 1e6);
    const bound = s.burst + s.ratePerSecond * w;
    if (max > bound) violations++;
    out[`max ${label} (bound)`] = `${max} (${Number.isInteger(bound) ? bound : bound.toFixed(1)})`;
  }
  out['windows over bound'] = violations;
  return out;
}
