import { LimiterUnavailable, InvalidAcquireRequest } from './errors';
import { bucketParams, busyCeiling, plan, admittedAt, type Plan, type Take } from './gcra';
import type { AcquireRequest } from './request';
import { UNKNOWN, type BucketStore, type KeyOverride } from './store';

/** The deployed limit, from the function's environment. */
export interface LimiterConfig {
  /** Prefix of every item this limiter writes, so limiters can share a table. */
  readonly limiterName: string;
  readonly ratePerSecond: number;
  readonly burst: number;
  readonly shards: number;
  readonly maxWaitMs: number;
}

export interface LimiterDeps {
  readonly store: BucketStore;
  /** Wall clock in integer microseconds since the epoch. */
  readonly clockUs: () => number;
  /** Uniform in [0, 1), for shard choice. */
  readonly random: () => number;
  /** How long an override (or its absence) is cached. At most 10 s. */
  readonly overrideTtlMs?: number;
}

export type AcquireOutcome =
  | {
    readonly admitted: true;
    readonly key: string;
    readonly tokens: number;
    readonly shard: number;
    /** Limiter clock at the admitting write, µs. */
    readonly nowUs: number;
    /** Earliest time the caller may start, µs; equal to nowUs when no wait is needed. */
    readonly atUs: number;
    readonly waitUs: number;
    readonly dynamoCalls: number;
  }
  | {
    readonly admitted: false;
    readonly key: string;
    readonly tokens: number;
    readonly retryAfterUs: number;
    readonly dynamoCalls: number;
  };

/**
 * Most conditional writes one take may make (DESIGN §3: usually 1, at most 3). Against a fixed `now` the branch
 * only moves idle → busy → full, so busy, idle, busy always reaches an answer.
 */
const MAX_WRITES = 3;
/** Item lifetime past the last possible tat: an expired bucket is idle anyway. */
const TTL_SLACK_S = 3600;
const MAX_OVERRIDE_TTL_MS = 10_000;
/** Most slots one acquire discards for having arrived too late (bounded waste). */
const MAX_STALE_RETAKES = 3;
/** Bound on the per-container caches (keys are caller-controlled). */
const MAX_CACHED_KEYS = 10_000;

export function bucketItemKey(limiterName: string, key: string, shard: number): string {
  return `${limiterName}#bucket#${key}#${shard}`;
}

export function overrideItemKey(limiterName: string, key: string): string {
  return `${limiterName}#config#${key}`;
}

/**
 * Reads and validates the deployed limit from the environment the construct sets.
 */
export function configFromEnv(env: Record<string, string | undefined>): LimiterConfig {
  const num = (name: string): number => {
    const v = Number(env[name]);
    if (env[name] === undefined || env[name] === '' || !Number.isFinite(v)) {
      throw new LimiterUnavailable(`environment variable ${name} must be a number, got ${JSON.stringify(env[name])}`);
    }
    return v;
  };
  const limiterName = env.LIMITER_NAME;
  if (!limiterName || limiterName.includes('#')) {
    throw new LimiterUnavailable(`environment variable LIMITER_NAME must be a non-empty string without '#', got ${JSON.stringify(limiterName)}`);
  }
  const config = {
    limiterName,
    ratePerSecond: num('RATE_PER_SECOND'),
    burst: num('BURST'),
    shards: num('SHARDS'),
    maxWaitMs: num('MAX_WAIT_MS'),
  };
  const problem = checkLimit(config.ratePerSecond, config.burst, config.shards);
  if (problem || config.maxWaitMs < 0) {
    throw new LimiterUnavailable(`invalid limiter configuration: ${problem ?? `maxWaitMs ${config.maxWaitMs} < 0`}`);
  }
  return config;
}

/** Returns why (rate, burst, shards) cannot be a limit, or undefined when it can. */
function checkLimit(rate: number, burst: number, shards: number): string | undefined {
  if (!Number.isInteger(shards) || shards < 1) return `shards must be a positive integer, got ${shards}`;
  // T must be at least 1 µs per shard.
  if (!(rate > 0) || rate > 1_000_000 * shards) return `ratePerSecond must be > 0 and <= ${1_000_000 * shards}, got ${rate}`;
  if (!Number.isInteger(burst) || burst < shards) return `burst must be an integer >= shards (${shards}), got ${burst}`;
  return undefined;
}

/**
 * The acquire algorithm (DESIGN §3) over an injectable store and clock. One instance per container: it keeps
 * the last tat seen per bucket (to guess the branch) and the override cache.
 */
export class Limiter {
  private readonly lastTat = new Map<string, number>();
  /** Buckets whose last sight (a busy write, or a failed idle one) showed them busy. */
  private readonly seenBusy = new Set<string>();
  private readonly overrides = new Map<string, { readonly value: KeyOverride | undefined; readonly untilUs: number }>();
  private readonly overrideTtlUs: number;

  constructor(readonly config: LimiterConfig, private readonly deps: LimiterDeps) {
    this.overrideTtlUs = Math.min(deps.overrideTtlMs ?? MAX_OVERRIDE_TTL_MS, MAX_OVERRIDE_TTL_MS) * 1000;
  }

  /** Takes `req.tokens` from the key's bucket (one of its shards). */
  async acquire(req: AcquireRequest): Promise<AcquireOutcome> {
    const counter = { calls: 0 };
    const limit = await this.limitFor(req.key, counter);
    const params = bucketParams(limit.ratePerSecond, limit.burst, this.config.shards);
    if (req.tokens > params.shardBurst) {
      throw new InvalidAcquireRequest(
        `tokens must be at most the burst per shard (${params.shardBurst} = floor(burst ${limit.burst} / shards ${this.config.shards})), got ${req.tokens}`);
    }
    const take: Take = {
      incUs: req.tokens * params.intervalUs,
      toleranceUs: params.toleranceUs,
      maxWaitUs: req.mode === 'RESERVE' ? this.config.maxWaitMs * 1000 : 0,
    };

    // A slot that is already well in the past when the answer arrives (the write sat in a queue, or a cold
    // client was slow) would start its caller late, closer to the next caller than the rate allows. RESERVE
    // discards it and takes another (at most three times): never more calls than the bound, at the cost of an
    // unused token. Lateness up to half the key's emission interval (at least 5 ms) is accepted, so callers start
    // within that margin of their slots. TRY discards a late slot only when the container wrote blind (it had not
    // seen the bucket: a cold start, typically in a herd of them), and the new take is then usually refused: at
    // most one token per container and bucket is spent that way. Discarding every late TRY slot starves TRY
    // callers when the store is slower than the margin (tried: 0.4 % of the limit admitted at 50/s, 100 callers).
    const maxLateUs = Math.max(5_000, params.intervalUs / this.config.shards / 2);
    for (let take_ = 0; ; take_++) {
      const { outcome, blind } = await this.takeOnce(req, take, counter);
      const late = outcome.admitted && this.deps.clockUs() - outcome.atUs > maxLateUs;
      if (!late || take_ >= MAX_STALE_RETAKES || (req.mode === 'TRY' && !blind)) return outcome;
    }
  }

  /** One take on one or two shards; `blind` when the admitting write was made with no cached tat. */
  private async takeOnce(req: AcquireRequest, take: Take, counter: { calls: number }): Promise<{ outcome: AcquireOutcome; blind: boolean }> {
    const shards = this.config.shards;
    const first = Math.floor(this.deps.random() * shards);
    const order = shards === 1 ? [first] : [first, (first + 1 + Math.floor(this.deps.random() * (shards - 1))) % shards];

    let retryAfterUs = Number.POSITIVE_INFINITY;
    for (const shard of order) {
      const r = await this.takeFromShard(bucketItemKey(this.config.limiterName, req.key, shard), take, counter);
      if (r.admitted) {
        const outcome: AcquireOutcome = {
          admitted: true,
          key: req.key,
          tokens: req.tokens,
          shard,
          nowUs: r.nowUs,
          atUs: r.atUs,
          waitUs: r.atUs - r.nowUs,
          dynamoCalls: counter.calls,
        };
        return { outcome, blind: r.blind };
      }
      retryAfterUs = Math.min(retryAfterUs, r.retryAfterUs);
    }
    return { outcome: { admitted: false, key: req.key, tokens: req.tokens, retryAfterUs, dynamoCalls: counter.calls }, blind: false };
  }

  private async takeFromShard(pk: string, take: Take, counter: { calls: number }):
  Promise<{ admitted: true; nowUs: number; atUs: number; blind: boolean } | { admitted: false; retryAfterUs: number }> {
    const store = this.deps.store;
    const now = this.deps.clockUs();
    // tat never decreases (both writes move it forward), so the last tat this container saw is a lower bound
    // of the stored one: when even that leaves no room, the answer is a denial without a DynamoDB call.
    const cached = this.lastTat.get(pk);
    // Guess the write shape. A container that has not seen this bucket guesses busy (new containers appear when
    // load rises), and so does one that last saw it busy, unless a whole tolerance has passed since: its cached
    // tat is older than the other containers' writes, which keep a loaded bucket ahead of now.
    let branch: Plan = cached === undefined ? { kind: 'busy' } : plan(cached, now, take);
    if (branch.kind === 'idle' && this.seenBusy.has(pk) && now - cached! < take.toleranceUs) {
      branch = { kind: 'busy' };
    }
    if (branch.kind === 'deny') {
      return { admitted: false, retryAfterUs: branch.retryAfterUs };
    }

    for (let write = 0; write < MAX_WRITES; write++) {
      const expS = Math.ceil((now + take.toleranceUs + take.maxWaitUs) / 1_000_000) + TTL_SLACK_S;
      counter.calls++;
      const res = branch.kind === 'idle'
        ? await store.takeIdle(pk, now, now + take.incUs, expS)
        : await store.takeBusy(pk, take.incUs, now, busyCeiling(now, take), expS);
      if (res.ok) {
        this.remember(pk, res.tat);
        if (branch.kind === 'busy') this.seenBusy.add(pk);
        else this.seenBusy.delete(pk);
        return { admitted: true, nowUs: now, atUs: admittedAt(res.tat, now, take.toleranceUs), blind: cached === undefined };
      }
      // `now` stays the same for every write of this take: tat only grows, so against a fixed `now` the bucket can
      // only move from idle to busy to full, never back, and three writes always reach an answer. (A fresh clock
      // per write would let a bucket a few ms ahead look idle again and flip-flop under latency.) Any fixed
      // arrival time keeps the bound: each write is a GCRA step for its own `now`.
      if (branch.kind === 'idle') this.seenBusy.add(pk);
      let old = res.tat;
      if (old === UNKNOWN && branch.kind === 'idle') {
        // A failed idle write means tat was past `now` when it ran: the bucket is busy, so try that branch
        // rather than spend a read to learn it.
        branch = { kind: 'busy' };
        continue;
      }
      if (old === UNKNOWN) {
        counter.calls++;
        old = await store.readTat(pk);
      }
      if (old !== undefined) this.remember(pk, old);
      branch = plan(old, now, take);
      if (branch.kind === 'deny') {
        // The wait is counted from the current time: a slot that has freed up since makes it shorter.
        return { admitted: false, retryAfterUs: Math.max(0, branch.retryAfterUs - (this.deps.clockUs() - now)) };
      }
    }

    // Unreachable with a consistent store (see MAX_WRITES); refusing is the safe answer if it ever happens.
    return { admitted: false, retryAfterUs: take.incUs };
  }

  private remember(pk: string, tat: number): void {
    if (this.lastTat.size >= MAX_CACHED_KEYS && !this.lastTat.has(pk)) {
      this.lastTat.clear();
      this.seenBusy.clear();
    }
    this.lastTat.set(pk, Math.max(tat, this.lastTat.get(pk) ?? tat));
  }

  /** The key's limit: its override item when valid (cached ≤ 10 s), else the deployed limit. */
  private async limitFor(key: string, counter: { calls: number }): Promise<{ ratePerSecond: number; burst: number }> {
    const deployed = { ratePerSecond: this.config.ratePerSecond, burst: this.config.burst };
    const now = this.deps.clockUs();
    let cached = this.overrides.get(key);
    if (!cached || cached.untilUs <= now) {
      counter.calls++;
      const item = await this.deps.store.readOverride(overrideItemKey(this.config.limiterName, key));
      cached = { value: this.parseOverride(key, item), untilUs: now + this.overrideTtlUs };
      if (this.overrides.size >= MAX_CACHED_KEYS) this.overrides.clear();
      this.overrides.set(key, cached);
    }
    return cached.value ?? deployed;
  }

  private parseOverride(key: string, item: Record<string, unknown> | undefined): KeyOverride | undefined {
    if (!item) return undefined;
    const rate = item.ratePerSecond;
    const burst = item.burst ?? Math.max(this.config.shards, Math.ceil(Number(rate)));
    const problem = typeof rate !== 'number' ? `ratePerSecond must be a number, got ${JSON.stringify(rate)}`
      : typeof burst !== 'number' ? `burst must be a number, got ${JSON.stringify(burst)}`
        : checkLimit(rate, burst, this.config.shards);
    if (problem) {
      // A bad override must not take the limiter down: keep the deployed limit and say so in the logs.
      process.stderr.write(`${JSON.stringify({ level: 'WARN', message: `ignoring override for key ${JSON.stringify(key)}: ${problem}` })}\n`);
      return undefined;
    }
    return { ratePerSecond: rate as number, burst: burst as number };
  }
}
