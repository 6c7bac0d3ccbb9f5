import {
  ConditionalCheckFailedException,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { InvalidAcquireRequest, LimiterUnavailable } from './errors';
import { RoundTrip } from './limiter';
import { type DimensionLimit, intervalUs, type MultiState, settleAll, takeAll } from './multi';
import { jitteredPause } from '../shared/backoff';

// Several limits of one key on one item, taken in one conditional write: the item holds every dimension's bucket
// and a write counter `ver`; a write is conditioned on the counter it computed from. A container remembers the
// item its last write produced (or the one a failed write returned), so an uncontended acquire is one write and no
// read; a failed write returns the item as it is (ALL_OLD), which the next try computes from.

/** Format version of a multi-limit item (`v`); an item of another version fails closed. */
export const MULTI_ITEM_VERSION = 1;

/** Most writes one acquire or settle tries on a contended item before it fails closed. */
const MAX_WRITES = 50;

/** Item lifetime past its last tat: an expired item is an idle one. */
const TTL_SLACK_S = 3600;
const MAX_CACHED_KEYS = 10_000;

export interface MultiItem {
  readonly state: MultiState;
  readonly ver: number;
  /**
   * The admissions settled last (their ids, newest last): a settle retried after its write landed (a lost answer,
   * a Lambda retry) finds its id here and changes nothing, so an estimate is never given back twice.
   */
  readonly settled?: readonly string[];
}

/** Settled admissions an item remembers: retries of a settle come within seconds, long before 64 others settle. */
const MAX_SETTLED = 64;

/** Where an admission's `tats` carry the item version it wrote (not a dimension: dimensions start with a letter). */
export const VERSION_KEY = '_v';

/** An admission's id: what it wrote per dimension and the item version it wrote (unique per item). */
export function admissionId(tats: Readonly<Record<string, number>>): string | undefined {
  const entries = Object.entries(tats).sort(([a], [b]) => a.localeCompare(b));
  return entries.length === 0 ? undefined : entries.map(([d, t]) => `${d}:${t}`).join(',');
}

export type MultiWrite = { readonly ok: true } | { readonly ok: false; readonly current: MultiItem | undefined | 'unknown' };

/** Where multi-limit items live: one read, one conditional write. */
export interface MultiStore {
  read(pk: string): Promise<MultiItem | undefined>;
  /** Writes `state` (and `settled`) as version `ver + 1` if the item is still at `ver` (undefined: if there is no item). */
  write(pk: string, state: MultiState, ver: number | undefined, expS: number, settled?: readonly string[]): Promise<MultiWrite>;
}

export interface MultiLimiterConfig {
  readonly limiterName: string;
  readonly limits: readonly DimensionLimit[];
  readonly maxWaitMs: number;
}

export type MultiOutcome =
  | {
    readonly admitted: true;
    readonly key: string;
    readonly nowUs: number;
    readonly atUs: number;
    readonly waitUs: number;
    readonly dynamoCalls: number;
    /** What the admission wrote per dimension: its place in each bucket, which a settle needs to give anything back. */
    readonly tats: Readonly<Record<string, number>>;
  }
  | { readonly admitted: false; readonly key: string; readonly retryAfterUs: number; readonly binding: string; readonly dynamoCalls: number };

export function multiItemKey(limiterName: string, key: string): string {
  return `${limiterName}#multi#${key}`;
}

/**
 * The limits of a multi-limit limiter, from the environment (`[{ dimension, ratePerSecond, burst }]` as JSON).
 */
export function multiLimitsFromJson(json: string | undefined): DimensionLimit[] | undefined {
  if (json === undefined || json === '') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw new LimiterUnavailable(`the limits in the environment are not JSON: ${json.slice(0, 80)}`);
  }
  if (!Array.isArray(parsed) || parsed.length === 0) throw new LimiterUnavailable(`the limits in the environment must be a non-empty list, got ${json.slice(0, 80)}`);
  return parsed.map((l: any) => {
    if (typeof l?.dimension !== 'string' || !(l.ratePerSecond >= 0.001) || !Number.isInteger(l.burst) || l.burst < 1) {
      throw new LimiterUnavailable(`invalid limit in the environment: ${JSON.stringify(l).slice(0, 80)}`);
    }
    return { dimension: l.dimension, intervalUs: intervalUs(l.ratePerSecond), burst: l.burst };
  });
}

/**
 * Checks what an acquire takes: a non-negative integer per dimension of the limiter, at most its burst, something
 * taken. Anything else is the caller's error, never a default that admits.
 */
export function checkConsume(consume: unknown, limits: readonly DimensionLimit[]): Record<string, number> {
  if (consume === null || typeof consume !== 'object' || Array.isArray(consume)) {
    throw new InvalidAcquireRequest(`consume must be an object of amounts per dimension (${limits.map((l) => l.dimension).join(', ')}), got ${JSON.stringify(consume)}`);
  }
  const out: Record<string, number> = {};
  for (const [dimension, amount] of Object.entries(consume as Record<string, unknown>)) {
    const limit = limits.find((l) => l.dimension === dimension);
    if (!limit) throw new InvalidAcquireRequest(`consume names ${JSON.stringify(dimension)}, which is not a dimension of this limiter (${limits.map((l) => l.dimension).join(', ')})`);
    if (typeof amount !== 'number' || !Number.isInteger(amount) || amount < 0) {
      throw new InvalidAcquireRequest(`consume.${dimension} must be an integer >= 0, got ${JSON.stringify(amount)}`);
    }
    if (amount > limit.burst) {
      throw new InvalidAcquireRequest(`consume.${dimension} must be at most the limit's burst (${limit.burst}): more can never be admitted, got ${amount}`);
    }
    out[dimension] = amount;
  }
  if (Object.values(out).every((a) => a === 0)) throw new InvalidAcquireRequest(`consume must take something of a dimension, got ${JSON.stringify(consume)}`);
  return out;
}

/** Checks what a settle reports used: a non-negative integer per dimension of the limiter. */
export function checkUsed(used: unknown, limits: readonly DimensionLimit[]): Record<string, number> {
  if (used === null || typeof used !== 'object' || Array.isArray(used)) throw new InvalidAcquireRequest(`used must be an object of amounts per dimension, got ${JSON.stringify(used)}`);
  const out: Record<string, number> = {};
  for (const [dimension, amount] of Object.entries(used as Record<string, unknown>)) {
    if (!limits.some((l) => l.dimension === dimension)) throw new InvalidAcquireRequest(`used names ${JSON.stringify(dimension)}, which is not a dimension of this limiter`);
    if (typeof amount !== 'number' || !Number.isFinite(amount) || amount < 0) throw new InvalidAcquireRequest(`used.${dimension} must be a number >= 0, got ${JSON.stringify(amount)}`);
    out[dimension] = Math.ceil(amount);
  }
  return out;
}

/**
 * Takes from several limits of a key at once, and settles what was used. One instance per container.
 */
export class MultiLimiter {
  private readonly cache = new Map<string, MultiItem>();
  readonly roundTrip: RoundTrip;

  constructor(readonly config: MultiLimiterConfig, private readonly deps: { store: MultiStore; clockUs: () => number; initialLookaheadUs?: number }) {
    this.roundTrip = new RoundTrip(deps.initialLookaheadUs ?? 100_000);
  }

  /**
   * Admits `consume` when every limit admits it within `maxWait` (RESERVE) or at once (TRY), at the latest of the
   * per-limit slots, counted from when the answer is expected back (now + the round-trip estimate).
   */
  async acquire(key: string, consume: Readonly<Record<string, number>>, mode: 'RESERVE' | 'TRY', options: { maxWaitMs?: number } = {}): Promise<MultiOutcome> {
    const pk = multiItemKey(this.config.limiterName, key);
    const counter = { calls: 0 };
    const configured = this.config.maxWaitMs * 1000;
    const maxWaitUs = mode === 'TRY' ? 0 : options.maxWaitMs === undefined ? configured
      : Math.floor(Math.max(0, Math.min(configured, options.maxWaitMs * 1000 - this.roundTrip.lookaheadUs())));
    let current = this.cache.get(pk);
    let fresh = false;
    for (let writes = 0; writes < MAX_WRITES;) {
      const now = this.deps.clockUs();
      const arrival = now + this.roundTrip.lookaheadUs();
      const out = takeAll(current?.state ?? {}, arrival, consume, this.config.limits, maxWaitUs);
      if (!out.admitted) {
        // a remembered item may be older than a give-back: refuse only on what the table holds
        if (!fresh) {
          current = await this.timed(counter, () => this.deps.store.read(pk));
          this.remember(pk, current);
          fresh = true;
          continue;
        }
        return { admitted: false, key, retryAfterUs: out.retryAfterUs, binding: out.binding, dynamoCalls: counter.calls };
      }
      writes++;
      const base = current;
      const res = await this.timed(counter, () => this.deps.store.write(pk, out.state, base?.ver, expiry(out.state), base?.settled));
      if (res.ok) {
        this.remember(pk, { state: out.state, ver: (base?.ver ?? 0) + 1, settled: base?.settled });
        // the item version this admission wrote makes its id unique (tats alone can repeat after a give-back to now)
        const tats = { ...out.tats, [VERSION_KEY]: (base?.ver ?? 0) + 1 };
        return { admitted: true, key, nowUs: now, atUs: out.slotUs, waitUs: out.slotUs - now, dynamoCalls: counter.calls, tats };
      }
      current = res.current === 'unknown' ? await this.timed(counter, () => this.deps.store.read(pk)) : res.current;
      this.remember(pk, current);
      fresh = true;
      await jitteredPause(writes, 200);
    }
    throw new LimiterUnavailable(`${pk}: ${MAX_WRITES} conditional writes lost to contention; nothing taken`);
  }

  /**
   * Settles an admitted acquire: `taken` was taken, `used` was used (a dimension left out: as taken), `tats` is what
   * the acquire wrote (without it an overrun is still taken, but nothing is given back). One write.
   */
  async settle(key: string, taken: Readonly<Record<string, number>>, used: Readonly<Record<string, number>>,
    tats: Readonly<Record<string, number>> = {}): Promise<{ dynamoCalls: number; changed: boolean }> {
    const pk = multiItemKey(this.config.limiterName, key);
    const counter = { calls: 0 };
    let current = this.cache.get(pk);
    for (let writes = 0; writes < MAX_WRITES; writes++) {
      if (!current) {
        current = await this.timed(counter, () => this.deps.store.read(pk));
        if (!current) return { dynamoCalls: counter.calls, changed: false }; // expired: nothing to settle against
      }
      const id = admissionId(tats);
      if (id !== undefined && current.settled?.includes(id)) return { dynamoCalls: counter.calls, changed: false };
      const next = settleAll(current.state, this.deps.clockUs(), taken, used, this.config.limits, tats);
      if (JSON.stringify(next) === JSON.stringify(current.state)) return { dynamoCalls: counter.calls, changed: false };
      const base = current;
      const settled = id === undefined ? base.settled : [...(base.settled ?? []).slice(-(MAX_SETTLED - 1)), id];
      const res = await this.timed(counter, () => this.deps.store.write(pk, next, base.ver, expiry(next), settled));
      if (res.ok) {
        this.remember(pk, { state: next, ver: base.ver + 1, settled });
        return { dynamoCalls: counter.calls, changed: true };
      }
      current = res.current === 'unknown' ? await this.timed(counter, () => this.deps.store.read(pk)) : res.current;
      this.remember(pk, current);
      await jitteredPause(writes, 200);
    }
    throw new LimiterUnavailable(`${pk}: ${MAX_WRITES} conditional writes lost to contention while settling`);
  }

  private remember(pk: string, item: MultiItem | undefined): void {
    if (!item) {
      this.cache.delete(pk);
      return;
    }
    if (this.cache.size >= MAX_CACHED_KEYS && !this.cache.has(pk)) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(pk, item);
  }

  private timed<T>(counter: { calls: number }, call: () => Promise<T>): Promise<T> {
    return this.roundTrip.timed(counter, this.deps.clockUs, call);
  }
}

function expiry(state: MultiState): number {
  const last = Math.max(0, ...Object.values(state).map((b) => b.tat));
  return Math.ceil(last / 1_000_000) + TTL_SLACK_S;
}

/**
 * Multi-limit items in DynamoDB: `ms` (S, the buckets as JSON), `sd` (S, the last settled admissions as JSON), `ver`
 * (N), `v` (N), TTL `exp` (N, s).
 */
export class DynamoDbMultiStore implements MultiStore {
  constructor(private readonly client: DynamoDBClient, private readonly tableName: string) {}

  async read(pk: string): Promise<MultiItem | undefined> {
    try {
      const res = await this.client.send(new GetItemCommand({ TableName: this.tableName, Key: { pk: { S: pk } }, ConsistentRead: true }));
      return res.Item ? decode(pk, res.Item) : undefined;
    } catch (err) {
      throw unavailable(err);
    }
  }

  async write(pk: string, state: MultiState, ver: number | undefined, expS: number, settled: readonly string[] = []): Promise<MultiWrite> {
    try {
      await this.client.send(new PutItemCommand({
        TableName: this.tableName,
        Item: {
          pk: { S: pk },
          ms: { S: JSON.stringify(state) },
          ver: { N: String((ver ?? 0) + 1) },
          v: { N: String(MULTI_ITEM_VERSION) },
          exp: { N: String(expS) },
          ...(settled.length > 0 ? { sd: { S: JSON.stringify(settled) } } : {}),
        },
        ConditionExpression: ver === undefined ? 'attribute_not_exists(pk)' : 'ver = :ver AND v = :v',
        ExpressionAttributeValues: ver === undefined ? undefined : { ':ver': { N: String(ver) }, ':v': { N: String(MULTI_ITEM_VERSION) } },
        ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      }));
      return { ok: true };
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException || (err as Error)?.name === 'ConditionalCheckFailedException') {
        const old = (err as ConditionalCheckFailedException).Item;
        return { ok: false, current: old && Object.keys(old).length > 0 ? decode(pk, old) : 'unknown' };
      }
      throw unavailable(err);
    }
  }
}

function decode(pk: string, item: Record<string, AttributeValue>): MultiItem {
  const v = Number(item.v?.N);
  if (v !== MULTI_ITEM_VERSION) throw new LimiterUnavailable(`item ${pk} has format version ${item.v?.N ?? 'none'}, this handler reads ${MULTI_ITEM_VERSION}`);
  let state: MultiState;
  let settled: string[];
  try {
    state = JSON.parse(item.ms?.S ?? '{}');
    settled = JSON.parse(item.sd?.S ?? '[]');
  } catch {
    throw new LimiterUnavailable(`item ${pk} holds buckets that are not JSON`);
  }
  return { state, ver: Number(item.ver?.N ?? 0), settled };
}

function unavailable(err: unknown): Error {
  if (err instanceof LimiterUnavailable) return err;
  return new LimiterUnavailable(`DynamoDB call failed (${(err as Error)?.name ?? 'Error'}): ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
