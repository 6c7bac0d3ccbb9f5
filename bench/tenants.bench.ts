// Tenants within a shared quota against dynalite (own process) with 5–20 ms per call in front of it: the keyLimits
// limiter (one item, one UpdateItem per admission, additive on the shared tat) beside the single-limit limiter (one
// item per key, no shared ceiling). Write units: DynamoDB charges an UpdateItem by the item's size (1 per KB).
// Prints figures; asserts nothing.
import { type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDbBucketStore } from '../lambda/rate-limiter/dynamodb-store';
import { Limiter } from '../lambda/rate-limiter/limiter';
import { type DimensionLimit } from '../lambda/rate-limiter/multi';
import { DynamoDbTenantStore, TenantLimiter } from '../lambda/rate-limiter/tenant-limiter';
import { type LocalDynamoDb } from '../local/dynalite';
import { type Admission, nowUs, sleep, windowViolations } from '../local/timing';

function slow(client: DynamoDBClient, counter: { calls: number }): DynamoDBClient {
  const send = client.send.bind(client);
  return { send: async (cmd: any) => { counter.calls++; await sleep(5 + Math.random() * 15); return send(cmd); } } as unknown as DynamoDBClient;
}

const SHARED = { rate: 50, burst: 5 };
const PER_KEY = { rate: 10, burst: 2 };
const TENANTS = 10;
const CALLERS_PER_TENANT = Number(process.env.BENCH_CALLERS_PER_TENANT ?? 2);
const DURATION_S = 10;

export async function runTenants(db: LocalDynamoDb, table: string, kind: 'keyLimits' | 'single-limit') {
  const counter = { calls: 0 };
  const writes = { n: 0 };
  class Measured extends DynamoDbTenantStore {
    async write(...args: Parameters<DynamoDbTenantStore['write']>) {
      writes.n++;
      const out = await super.write(...args);
      return out;
    }
  }
  const shared: DimensionLimit = { dimension: 'requests', intervalUs: Math.ceil(1e6 / SHARED.rate), burst: SHARED.burst };
  const perKey: DimensionLimit = { dimension: 'requests', intervalUs: Math.ceil(1e6 / PER_KEY.rate), burst: PER_KEY.burst };
  const name = `bench-${kind}-${Date.now()}`;
  const containers = Array.from({ length: 8 }, () => {
    const client = slow(db.client, counter);
    if (kind === 'keyLimits') {
      const m = new TenantLimiter({ limiterName: name, shared, perKey, maxWaitMs: 60_000 },
        { store: new Measured(client, table), clockUs: nowUs, overrides: new DynamoDbBucketStore(client, table) });
      return async (key: string) => m.acquire(key, 1, 'RESERVE');
    }
    // one limit per key (the tenants' own), no shared ceiling: every key its own item
    const l = new Limiter({ limiterName: name, ratePerSecond: PER_KEY.rate, burst: PER_KEY.burst, shards: 1, maxWaitMs: 60_000 },
      { store: new DynamoDbBucketStore(client, table), clockUs: nowUs, random: Math.random });
    return async (key: string) => {
      const out = await l.acquire({ key, tokens: 1, mode: 'RESERVE' });
      if (out.admitted) writes.n++;
      return out;
    };
  });
  const admitted: { key: string; atUs: number }[] = [];
  let refusals = 0;
  const end = nowUs() + DURATION_S * 1e6;
  let next = 0;
  let unavailable = 0;
  const caller = async (key: string) => {
    while (nowUs() < end) {
      let out;
      try {
        out = await containers[next++ % containers.length](key);
      } catch (err) {
        // LimiterUnavailable (a write lost to contention 50 times): the acquire state retries it after a second
        unavailable++;
        await sleep(1000);
        continue;
      }
      if (out.admitted) {
        admitted.push({ key, atUs: out.atUs });
        await sleep((out.atUs - nowUs()) / 1000);
      } else {
        refusals++;
        // the acquire state's retry: within a second, full jitter
        await sleep(Math.min(out.retryAfterUs / 1000, Math.random() * 1000));
      }
    }
  };
  const t0 = nowUs();
  await Promise.all(Array.from({ length: TENANTS * CALLERS_PER_TENANT }, (_, i) => caller(`t${i % TENANTS}`)));
  const inRun = admitted.filter((a) => a.atUs <= end);
  const adm = (key?: string): Admission[] => inRun.filter((a) => key === undefined || a.key === key)
    .map((a) => ({ atUs: a.atUs, tokens: 1 })).sort((a, b) => a.atUs - b.atUs);
  const windows = [0, 100_000, 1_000_000, 5_000_000];
  const sharedOver = windows.reduce((n, w) => n + windowViolations(adm(), SHARED.rate, SHARED.burst, w), 0);
  let keyOver = 0;
  for (const w of windows) for (let k = 0; k < TENANTS; k++) keyOver += windowViolations(adm(`t${k}`), PER_KEY.rate, PER_KEY.burst, w);
  const rates = Array.from({ length: TENANTS }, (_, k) => adm(`t${k}`).length / ((end - t0) / 1e6));
  return {
    'limiter': kind === 'keyLimits' ? `keyLimits: shared ${SHARED.rate}/s, each key ${PER_KEY.rate}/s` : `single limit: each key ${PER_KEY.rate}/s, no shared ceiling`,
    'offered': `${TENANTS} tenants × ${CALLERS_PER_TENANT} callers, ${DURATION_S} s`,
    'admitted / s': (inRun.length / ((end - t0) / 1e6)).toFixed(1),
    'per tenant / s (min–max)': `${Math.min(...rates).toFixed(1)}–${Math.max(...rates).toFixed(1)}`,
    'shared windows over': kind === 'keyLimits' ? sharedOver : `${sharedOver} (no shared limit)`,
    'key windows over': keyOver,
    'DynamoDB calls / admission': (counter.calls / Math.max(1, inRun.length)).toFixed(2),
    'writes / admission': (writes.n / Math.max(1, inRun.length)).toFixed(2),
    'refusals retried': refusals,
    'LimiterUnavailable (contention)': unavailable,
  };
}
