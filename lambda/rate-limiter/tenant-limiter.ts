import {
  ConditionalCheckFailedException,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { InvalidAcquireRequest, LimiterUnavailable } from './errors';
import { overrideItemKey, overrideUntilUs, RoundTrip } from './limiter';
import { type DimensionLimit, intervalUs } from './multi';
import { type MultiOutcome } from './multi-limiter';
import { applyPlan, type BucketLimit, planTenant, type TenantPlan } from './tenant-write';
import { jitteredPause } from '../shared/backoff';

// Tenants within a shared quota (`keyLimits`): the shared bucket and every key's on one item, each admission one
// UpdateItem planned by tenant-write.ts — additive on the shared tat (no version check: admissions of different keys
// do not make each other's writes fail), exact on the key's own entry.

/** Reads a key's override item (the single-limit limiter's format: `ratePerSecond`, `burst`). */
export interface OverrideReader {
  readOverride(pk: string): Promise<Record<string, unknown> | undefined>;
}

/** The one item of a limiter with `keyLimits`: the shared bucket and every active key's. */
export function tenantsItemKey(limiterName: string): string {
  return `${limiterName}#tenants`;
}

/** Format version of a tenants item (`v`); an item of another version fails closed. */
export const TENANTS_ITEM_VERSION = 1;

/** Most writes one acquire tries before it fails closed. */
const MAX_WRITES = 50;
/** Idle keys a write removes from the item at most (each on its exact tat: a key back in use is not removed). */
const MAX_PRUNED = 2;
/** How long a key has been idle before a write removes it. */
const PRUNE_IDLE_US = 1_000_000;
const OVERRIDE_TTL_US = 10_000_000;
const MAX_CACHED_OVERRIDES = 10_000;

export interface TenantItem {
  /** The shared tat. */
  readonly s: number;
  /** Each key's own tat. */
  readonly kt: Readonly<Record<string, number>>;
  /** Each key's share tat. */
  readonly kf: Readonly<Record<string, number>>;
}

export type TenantWrite = { readonly ok: true; readonly s: number } | { readonly ok: false; readonly current: TenantItem | undefined | 'unknown' };

export interface TenantStore {
  read(pk: string): Promise<TenantItem | undefined>;
  /** Creates the item (shared tat 0, no keys) unless it exists. */
  create(pk: string): Promise<void>;
  /** One conditional UpdateItem: the plan for `key`, removing `prune` (idle keys, each on its exact tat). */
  write(pk: string, key: string, plan: TenantPlan, prune: ReadonlyArray<readonly [string, number]>): Promise<TenantWrite>;
}

export interface TenantLimiterConfig {
  readonly limiterName: string;
  /** The shared limit (one). */
  readonly shared: DimensionLimit;
  /** Each key's own limit (one, of the same dimension). */
  readonly perKey: DimensionLimit;
  readonly maxWaitMs: number;
}

export class TenantLimiter {
  private readonly cache = new Map<string, TenantItem>();
  private readonly overrides = new Map<string, { readonly limit: DimensionLimit; readonly untilUs: number }>();
  readonly roundTrip: RoundTrip;

  constructor(readonly config: TenantLimiterConfig,
    private readonly deps: { store: TenantStore; clockUs: () => number; initialLookaheadUs?: number; overrides?: OverrideReader }) {
    this.roundTrip = new RoundTrip(deps.initialLookaheadUs ?? 100_000);
  }

  /** The key's own limit: its override item (`ratePerSecond`, `burst`) when valid, cached 10 s; else the deployed one. */
  async keyLimitFor(key: string, counter: { calls: number }): Promise<DimensionLimit> {
    const deployed = this.config.perKey;
    if (!this.deps.overrides) return deployed;
    const now = this.deps.clockUs();
    const cached = this.overrides.get(key);
    if (cached && cached.untilUs > now) return cached.limit;
    const item = await this.timed(counter, () => this.deps.overrides!.readOverride(overrideItemKey(this.config.limiterName, key)));
    let limit = deployed;
    const until = item ? overrideUntilUs(item) : undefined;
    if (item && until !== undefined && (until === 'invalid' || until <= now)) {
      // expired (or an until that is not a time): the deployed limit applies
    } else if (item) {
      const rate = item.ratePerSecond;
      const burst = item.burst ?? deployed.burst;
      if (typeof rate === 'number' && rate >= 0.001 && rate <= 1_000_000 && Number.isInteger(burst) && (burst as number) >= 1) {
        limit = { dimension: deployed.dimension, intervalUs: intervalUs(rate), burst: burst as number };
      } else {
        // a bad override must not take the limiter down: the deployed limit stands, and the logs say so
        process.stderr.write(`${JSON.stringify({ level: 'WARN', message: `ignoring override for key ${JSON.stringify(key)}: ratePerSecond ${JSON.stringify(rate)}, burst ${JSON.stringify(burst)}` })}\n`);
      }
    }
    if (this.overrides.size >= MAX_CACHED_OVERRIDES) this.overrides.clear();
    this.overrides.set(key, { limit, untilUs: Math.min(now + OVERRIDE_TTL_US, typeof until === 'number' && until > now ? until : Infinity) });
    return limit;
  }

  /**
   * Takes `amount` for `key` from its own limit and the shared one, in one write, within `maxWait` (RESERVE) or at once
   * (TRY). Refused, without a write, when the key is over its own limit or (while the shared limit binds) its share.
   */
  async acquire(key: string, amount: number, mode: 'RESERVE' | 'TRY', options: { maxWaitMs?: number } = {}): Promise<MultiOutcome> {
    const pk = tenantsItemKey(this.config.limiterName);
    const counter = { calls: 0 };
    const own = await this.keyLimitFor(key, counter);
    const burst = Math.min(own.burst, this.config.shared.burst);
    if (Number.isInteger(amount) && amount >= 1 && amount <= Math.min(this.config.perKey.burst, this.config.shared.burst) && amount > burst) {
      // valid against the deployed limit, not against the key's override in force: retryable, the override may go
      throw new LimiterUnavailable(`the override of key ${JSON.stringify(key)} (burst ${own.burst}) holds at most ${burst} per acquire, got ${amount}: `
        + 'raise the override\'s burst or clear it');
    }
    if (!Number.isInteger(amount) || amount < 1 || amount > burst) {
      throw new InvalidAcquireRequest(`consume.${own.dimension} must be an integer from 1 to key ${JSON.stringify(key)}'s burst (${own.burst}) and the shared burst `
        + `(${this.config.shared.burst}): more can never be admitted, got ${amount}`);
    }
    const configured = this.config.maxWaitMs * 1000;
    const maxWaitUs = mode === 'TRY' ? 0 : options.maxWaitMs === undefined ? configured
      : Math.floor(Math.max(0, Math.min(configured, options.maxWaitMs * 1000 - this.roundTrip.lookaheadUs())));
    let current = this.cache.get(pk);
    let fresh = false;
    for (let writes = 0; writes < MAX_WRITES;) {
      if (!current) {
        current = await this.timed(counter, () => this.deps.store.read(pk));
        fresh = true;
        if (!current) {
          await this.timed(counter, () => this.deps.store.create(pk));
          current = { s: 0, kt: {}, kf: {} };
        }
        this.cache.set(pk, current);
      }
      const now = this.deps.clockUs();
      const arrival = now + this.roundTrip.lookaheadUs();
      const active = Object.keys(current.kt).filter((k) => (ownValue(current!.kt, k) ?? 0) > now || (ownValue(current!.kf, k) ?? 0) > now);
      const tenants = active.length + (active.includes(key) ? 0 : 1);
      // own properties only: a key named like an Object.prototype member ("constructor") is a key like any other
      const snap = { s: current.s, k: ownValue(current.kt, key), f: ownValue(current.kf, key), tenants };
      const d = planTenant(snap, arrival, amount, asBucket(this.config.shared), asBucket(own), maxWaitUs);
      if (!d.admitted) {
        // a remembered item may be older than what the table holds: refuse only on a fresh one
        if (!fresh) {
          current = undefined;
          continue;
        }
        return { admitted: false, key, retryAfterUs: d.retryAfterUs, binding: d.binding, dynamoCalls: counter.calls };
      }
      // keys idle for a second or more (one just idle may be back at once, and its write would fail this one)
      const idleSince = now - PRUNE_IDLE_US;
      const prune = Object.keys(current.kt).filter((k) => k !== key && current!.kt[k] <= idleSince && (ownValue(current!.kf, k) ?? 0) <= idleSince)
        .slice(0, MAX_PRUNED).map((k) => [k, current!.kt[k]] as const);
      writes++;
      const res = await this.timed(counter, () => this.deps.store.write(pk, key, d.plan, prune));
      if (res.ok) {
        // the shared tat before this write, from the one after it: the slot the write gave
        const before = 'sharedPlus' in d.plan.s ? res.s - d.plan.s.sharedPlus : current.s;
        const got = applyPlan(d.plan, before);
        const kt = { ...current.kt, [key]: got.k };
        const kf = { ...current.kf, [key]: got.f };
        for (const [p] of prune) delete kt[p], delete kf[p];
        this.cache.set(pk, { s: res.s, kt, kf });
        return { admitted: true, key, nowUs: now, atUs: got.slot, waitUs: got.slot - now, dynamoCalls: counter.calls, tats: {} };
      }
      current = res.current === 'unknown' ? await this.timed(counter, () => this.deps.store.read(pk)) : res.current;
      if (current) this.cache.set(pk, current);
      fresh = true;
      // the failed write returned the item as it is: the next try computes from it; a key's own herd spreads out
      if (writes > 2) await jitteredPause(writes - 2, 200);
    }
    throw new LimiterUnavailable(`${pk}: ${MAX_WRITES} conditional writes lost to contention; nothing taken`);
  }

  private timed<T>(counter: { calls: number }, call: () => Promise<T>): Promise<T> {
    return this.roundTrip.timed(counter, this.deps.clockUs, call);
  }
}

/** A map's own value for `k` (never an Object.prototype member). */
function ownValue(m: Readonly<Record<string, number>>, k: string): number | undefined {
  return Object.prototype.hasOwnProperty.call(m, k) ? m[k] : undefined;
}

function asBucket(l: DimensionLimit): BucketLimit {
  return { intervalUs: l.intervalUs, burst: l.burst };
}

/** Tenants items in DynamoDB: `s` (N), `kt` and `kf` (M of N), `v` (N); no TTL (one item per limiter). */
export class DynamoDbTenantStore implements TenantStore {
  constructor(private readonly client: DynamoDBClient, private readonly tableName: string) {}

  async read(pk: string): Promise<TenantItem | undefined> {
    try {
      const res = await this.client.send(new GetItemCommand({ TableName: this.tableName, Key: { pk: { S: pk } }, ConsistentRead: true }));
      return res.Item ? decode(pk, res.Item) : undefined;
    } catch (err) {
      throw unavailable(err);
    }
  }

  async create(pk: string): Promise<void> {
    try {
      await this.client.send(new PutItemCommand({
        TableName: this.tableName,
        // no TTL: one item per limiter, and an expiry computed from one key's tats could drop another key's state
        // while its tat is still ahead (found by review: a key with burst × interval above the slack)
        Item: { pk: { S: pk }, s: { N: '0' }, kt: { M: {} }, kf: { M: {} }, v: { N: String(TENANTS_ITEM_VERSION) } },
        ConditionExpression: 'attribute_not_exists(pk)',
      }));
    } catch (err) {
      if (isConditionFailure(err)) return; // another caller created it
      throw unavailable(err);
    }
  }

  async write(pk: string, key: string, plan: TenantPlan, prune: ReadonlyArray<readonly [string, number]>): Promise<TenantWrite> {
    const names: Record<string, string> = { '#k': key };
    const values: Record<string, AttributeValue> = { ':v': { N: String(TENANTS_ITEM_VERSION) }, ':f': num(plan.f) };
    const expr = (w: TenantPlan['s'], name: string) => {
      if ('set' in w) {
        values[name] = num(w.set);
        return name;
      }
      values[name] = num(w.sharedPlus);
      return `s + ${name}`;
    };
    const sets = [`s = ${expr(plan.s, ':s')}`, `kt.#k = ${expr(plan.k, ':k')}`, 'kf.#k = :f'];
    const conditions = ['v = :v'];
    if (Number.isFinite(plan.lo)) {
      values[':lo'] = num(plan.lo);
      values[':hi'] = num(plan.hi);
      conditions.push('s BETWEEN :lo AND :hi');
    } else {
      values[':hi'] = num(plan.hi);
      conditions.push('s <= :hi');
    }
    if (plan.kBefore === undefined) {
      conditions.push('attribute_not_exists(kt.#k)');
    } else {
      values[':kb'] = num(plan.kBefore);
      conditions.push('kt.#k = :kb');
    }
    const removes: string[] = [];
    prune.forEach(([p, tat], i) => {
      names[`#p${i}`] = p;
      values[`:p${i}`] = num(tat);
      conditions.push(`kt.#p${i} = :p${i}`);
      removes.push(`kt.#p${i}`, `kf.#p${i}`);
    });
    try {
      const res = await this.client.send(new UpdateItemCommand({
        TableName: this.tableName,
        Key: { pk: { S: pk } },
        UpdateExpression: `SET ${sets.join(', ')}${removes.length > 0 ? ` REMOVE ${removes.join(', ')}` : ''}`,
        ConditionExpression: conditions.join(' AND '),
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: values,
        ReturnValues: 'UPDATED_NEW',
        ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      }));
      return { ok: true, s: Number(res.Attributes?.s?.N) };
    } catch (err) {
      if (isConditionFailure(err)) {
        const old = (err as ConditionalCheckFailedException).Item;
        return { ok: false, current: old && Object.keys(old).length > 0 ? decode(pk, old) : 'unknown' };
      }
      throw unavailable(err);
    }
  }
}

function num(n: number): AttributeValue {
  return { N: String(n) };
}

function isConditionFailure(err: unknown): boolean {
  return err instanceof ConditionalCheckFailedException || (err as Error)?.name === 'ConditionalCheckFailedException';
}

function decode(pk: string, item: Record<string, AttributeValue>): TenantItem {
  const v = Number(item.v?.N);
  if (v !== TENANTS_ITEM_VERSION) throw new LimiterUnavailable(`item ${pk} has format version ${item.v?.N ?? 'none'}, this handler reads ${TENANTS_ITEM_VERSION}`);
  // null-prototype maps: a key named like an Object.prototype member reads as absent until written
  const map = (m: AttributeValue | undefined) =>
    Object.assign(Object.create(null), Object.fromEntries(Object.entries(m?.M ?? {}).map(([k, x]) => [k, Number(x.N)])));
  const s = Number(item.s?.N);
  if (!Number.isFinite(s)) throw new LimiterUnavailable(`item ${pk} holds a shared tat that is not a number`);
  return { s, kt: map(item.kt), kf: map(item.kf) };
}

function unavailable(err: unknown): Error {
  if (err instanceof LimiterUnavailable) return err;
  return new LimiterUnavailable(`DynamoDB call failed (${(err as Error)?.name ?? 'Error'}): ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
