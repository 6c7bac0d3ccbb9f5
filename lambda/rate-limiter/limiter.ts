import { type AdaptiveConfig, adaptiveBounds, adaptiveFromJson, decreasedIv, effectiveIv, rateOf, signalCounts } from './adaptive';
import { LimiterUnavailable, InvalidAcquireRequest } from './errors';
import { bucketParams, busyCeiling, plan, admittedAt, type BucketParams, type Plan, type Take } from './gcra';
import type { AcquireRequest } from './request';
import { ITEM_VERSION, UNKNOWN, type BucketStore, type KeyOverride, type StoredBucket } from './store';
import { DEFAULT_PRIORITY_RESERVE, LimiterEnv, OverrideAttr } from '../../src/private/contract';

/** The deployed limit, from the function's environment. */
export interface LimiterConfig {
  /** Prefix of every item this limiter writes, so limiters can share a table. */
  readonly limiterName: string;
  readonly ratePerSecond: number;
  readonly burst: number;
  readonly shards: number;
  readonly maxWaitMs: number;
  /** An adaptive limit (AIMD): the deployed rate (or an override's) is its ceiling. */
  readonly adaptive?: AdaptiveConfig;
  /** Share of the tolerance each priority class below HIGH leaves to the classes above it (default 0.2). */
  readonly priorityReserve?: number;
  /** A limit derived from a provider's window rule: the start jitter it assumes, ms. */
  readonly startJitterMs?: number;
}

/** Priority classes of an acquire; an acquire without one ranks with HIGH and may reserve as before. */
export type PriorityName = 'HIGH' | 'NORMAL' | 'LOW';

/** How many reserves a class leaves free: HIGH none, NORMAL one (for HIGH), LOW two (for NORMAL and HIGH). */
const CLASS_RANK: Record<PriorityName, number> = { HIGH: 0, NORMAL: 1, LOW: 2 };

export interface LimiterDeps {
  readonly store: BucketStore;
  /** Wall clock in integer microseconds since the epoch. */
  readonly clockUs: () => number;
  /** Uniform in [0, 1), for shard choice. */
  readonly random: () => number;
  /** How long an override (or its absence) is cached. At most 10 s. */
  readonly overrideTtlMs?: number;
  /**
   * How far ahead of its clock a container reserves before it has measured a round trip to the store, µs: the
   * first call of a cold container (TLS handshake, credentials) is its slowest.
   * @default 1 s
   */
  readonly initialLookaheadUs?: number;
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
    /** The key's rate in force (override or deployed), tokens per second. */
    readonly limitPerSecond?: number;
    /** Tokens of earlier slots given up by this call because their answer came back too late (a window rule). */
    readonly lateTokens?: number;
  }
  | {
    readonly admitted: false;
    readonly key: string;
    readonly tokens: number;
    readonly retryAfterUs: number;
    readonly dynamoCalls: number;
    readonly limitPerSecond?: number;
  };

/**
 * Most conditional writes one take may make. Against a fixed arrival time the branch only moves idle → busy →
 * full, so busy, idle, busy always reaches an answer (DESIGN §3: usually 1, at most 3); a limit change adds one
 * rescale write, and a rescale that races another container's adds one more.
 */
const MAX_WRITES = 6;
/** Item lifetime past the last possible tat: an expired bucket is idle anyway. */
const TTL_SLACK_S = 3600;
const MAX_OVERRIDE_TTL_MS = 10_000;
/** Lookahead before the first measured round trip, and its bounds (a store that slows to seconds is an outage). */
const INITIAL_LOOKAHEAD_US = 1_000_000;
const MAX_LOOKAHEAD_US = 2_000_000;
/** Slowest limit an item can hold: one token per 1,000 s (0.001/s); T × burst stays a safe integer. */
export const MIN_RATE_PER_SECOND = 0.001;
/** Bound on the per-container caches (keys are caller-controlled). */
const MAX_CACHED_KEYS = 10_000;

export function bucketItemKey(limiterName: string, key: string, shard: number): string {
  return `${limiterName}#bucket#${key}#${shard}`;
}

/**
 * When an override stops applying (epoch µs), from its `until` (ISO 8601): undefined for none. An `until` that is not a
 * time makes the override invalid (the deployed limit applies, as for any invalid override).
 */
export function overrideUntilUs(item: Record<string, unknown>): number | undefined | 'invalid' {
  if (item[OverrideAttr.UNTIL] === undefined) return undefined;
  const ms = typeof item[OverrideAttr.UNTIL] === 'string' ? Date.parse(item[OverrideAttr.UNTIL] as string) : NaN;
  return Number.isFinite(ms) ? ms * 1000 : 'invalid';
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
  const limiterName = env[LimiterEnv.LIMITER_NAME];
  if (!limiterName || limiterName.includes('#')) {
    throw new LimiterUnavailable(`environment variable ${LimiterEnv.LIMITER_NAME} must be a non-empty string without '#', got ${JSON.stringify(limiterName)}`);
  }
  const config = {
    limiterName,
    ratePerSecond: num(LimiterEnv.RATE_PER_SECOND),
    burst: num(LimiterEnv.BURST),
    shards: num(LimiterEnv.SHARDS),
    maxWaitMs: num(LimiterEnv.MAX_WAIT_MS),
    adaptive: adaptiveConfig(env[LimiterEnv.ADAPTIVE]),
    priorityReserve: env[LimiterEnv.PRIORITY_RESERVE] === undefined ? undefined : num(LimiterEnv.PRIORITY_RESERVE),
    startJitterMs: env[LimiterEnv.START_JITTER_MS] === undefined ? undefined : num(LimiterEnv.START_JITTER_MS),
  };
  if (config.priorityReserve !== undefined && !(config.priorityReserve >= 0 && config.priorityReserve < 0.5)) {
    throw new LimiterUnavailable(`environment variable ${LimiterEnv.PRIORITY_RESERVE} must be from 0 to below 0.5, got ${config.priorityReserve}`);
  }
  const problem = checkLimit(config.ratePerSecond, config.burst, config.shards);
  if (problem || config.maxWaitMs < 0) {
    throw new LimiterUnavailable(`invalid limiter configuration: ${problem ?? `maxWaitMs ${config.maxWaitMs} < 0`}`);
  }
  return config;
}

function adaptiveConfig(json: string | undefined): AdaptiveConfig | undefined {
  try {
    return adaptiveFromJson(json);
  } catch (err) {
    throw new LimiterUnavailable(`environment variable ${LimiterEnv.ADAPTIVE}: ${(err as Error).message}`);
  }
}

/** Returns why (rate, burst, shards) cannot be a limit, or undefined when it can. */
export function checkLimit(rate: number, burst: number, shards: number): string | undefined {
  if (!Number.isInteger(shards) || shards < 1) return `shards must be a positive integer, got ${shards}`;
  // T must be at least 1 µs per shard.
  if (!(rate >= MIN_RATE_PER_SECOND) || rate > 1_000_000 * shards) {
    return `ratePerSecond must be from ${MIN_RATE_PER_SECOND} to ${1_000_000 * shards}, got ${rate}`;
  }
  if (!Number.isInteger(burst) || burst < shards || burst > 1_000_000) return `burst must be an integer from shards (${shards}) to 1000000, got ${burst}`;
  const { toleranceUs } = bucketParams(rate, burst, shards);
  if (!Number.isSafeInteger(toleranceUs * 4)) return `burst ${burst} at ${rate}/s spans ${toleranceUs} µs, more than the limiter can count`;
  return undefined;
}

/**
 * A container's estimate of a store round trip (Jacobson/Karels, as TCP estimates its RTO): smoothed mean plus
 * four mean deviations, so an answer rarely arrives after the slot it was reserved for.
 */
export class RoundTrip {
  private srttUs: number | undefined;
  private rttvarUs = 0;

  constructor(private initialUs: number) {}

  /**
   * A round trip seen before any write was measured (a cold container's override read): the first writes reserve
   * at least 1.5 times as far ahead. A herd of cold callers queues at the store, and its first reads show how long.
   */
  seed(us: number): void {
    if (this.srttUs === undefined) this.initialUs = Math.min(MAX_LOOKAHEAD_US, Math.max(this.initialUs, Math.round(1.5 * us)));
  }

  sample(us: number): void {
    const r = Math.max(0, us);
    if (this.srttUs === undefined) {
      this.srttUs = r;
      this.rttvarUs = r / 2;
    } else {
      this.rttvarUs = 0.75 * this.rttvarUs + 0.25 * Math.abs(this.srttUs - r);
      this.srttUs = 0.875 * this.srttUs + 0.125 * r;
    }
  }

  /** Runs one store call: counted in `counter`, its round trip (on `clockUs`) fed to the estimate. */
  async timed<T>(counter: { calls: number }, clockUs: () => number, call: () => Promise<T>): Promise<T> {
    counter.calls++;
    const t0 = clockUs();
    const out = await call();
    this.sample(clockUs() - t0);
    return out;
  }

  /** How far ahead of its clock the next take reserves, µs. */
  lookaheadUs(): number {
    if (this.srttUs === undefined) return this.initialUs;
    return Math.round(Math.min(MAX_LOOKAHEAD_US, this.srttUs + 4 * this.rttvarUs));
  }
}

/**
 * The acquire algorithm (DESIGN §3) over an injectable store and clock. One instance per container: it keeps
 * the last tat seen per bucket (to guess the branch), the override cache and its round-trip estimate.
 *
 * Latency: a take reserves for the moment its answer is expected back, `now + lookahead` (the round-trip
 * estimate), not for the moment it was sent. The caller's slot is then usually still ahead when the answer
 * arrives, so it starts on its slot, and a slot is never thrown away for being late: a token taken is a token
 * spent. An answer later than the estimate (a tail latency) starts its caller late by that much.
 */
export class Limiter {
  private readonly lastTat = new Map<string, { readonly tat: number; readonly iv: number }>();
  /** Buckets whose last sight (a busy write, or a failed idle one) showed them busy. */
  private readonly seenBusy = new Set<string>();
  private readonly overrides = new Map<string, { readonly value: KeyOverride | undefined; readonly untilUs: number; readonly readUs: number }>();
  private readonly overrideTtlUs: number;
  /** Adaptive limiters: the last state seen of each bucket item (its rate in force is its interval). */
  private readonly views = new Map<string, AdaptiveView>();
  /** This container's round trip to the store. */
  readonly roundTrip: RoundTrip;

  constructor(readonly config: LimiterConfig, private readonly deps: LimiterDeps) {
    this.overrideTtlUs = Math.min(deps.overrideTtlMs ?? MAX_OVERRIDE_TTL_MS, MAX_OVERRIDE_TTL_MS) * 1000;
    this.roundTrip = new RoundTrip(deps.initialLookaheadUs ?? INITIAL_LOOKAHEAD_US);
  }

  /**
   * Takes `req.tokens` from the key's bucket (one of its shards). `options.maxWaitMs` narrows the configured
   * maxWait for this call (RESERVE), counted from now: a caller with a deadline asks only for a slot it can still
   * use, so no token is spent on one it would have to give up. (The take reserves from now + lookahead, so the
   * lookahead comes off the wait it may add.)
   */
  async acquire(req: AcquireRequest, options: { readonly maxWaitMs?: number } = {}): Promise<AcquireOutcome> {
    // A limit derived from a provider's window rule assumes its calls reach the provider within the start jitter of
    // their slots: a slot whose answer came back later than half of it (the other half is the way from the caller to
    // the provider) is given up — no call is made for it, so the provider sees fewer, never more — and a new one is
    // taken, within the caller's deadline. Three late answers in a row: LimiterUnavailable (retried by the caller).
    const budgetUs = this.config.startJitterMs === undefined ? undefined : (this.config.startJitterMs * 1000) / 2;
    const startUs = this.deps.clockUs();
    let lateTokens = 0;
    let dynamoCalls = 0;
    for (let late = 0; ; late++) {
      const elapsedMs = (this.deps.clockUs() - startUs) / 1000;
      const outcome = await this.acquireOnce(req, options.maxWaitMs === undefined ? {} : { maxWaitMs: Math.max(0, options.maxWaitMs - elapsedMs) });
      dynamoCalls += outcome.dynamoCalls;
      if (!outcome.admitted || budgetUs === undefined || this.deps.clockUs() <= outcome.atUs + budgetUs) {
        return lateTokens === 0 ? outcome : { ...outcome, dynamoCalls, ...(outcome.admitted ? { lateTokens } : {}) };
      }
      lateTokens += outcome.tokens;
      if (late >= 2) {
        throw new LimiterUnavailable(`three answers in a row came back more than ${budgetUs / 1000} ms after their slots (the limit was derived for `
          + `calls within ${this.config.startJitterMs} ms of them): DynamoDB is answering slowly; retry`);
      }
    }
  }

  /** One take (no late-slot rule). */
  private async acquireOnce(req: AcquireRequest, options: { readonly maxWaitMs?: number }): Promise<AcquireOutcome> {
    const counter = { calls: 0 };
    let refresh = false;
    for (;;) {
      const limit = await this.limitFor(req.key, counter, refresh);
      const params = bucketParams(limit.ratePerSecond, limit.burst, this.config.shards);
      if (req.tokens > params.shardBurst) {
        if (limit.overridden) {
          // Valid against the deployed limit, not against the override in force: retryable, the override may go.
          throw new LimiterUnavailable(`the override of key ${JSON.stringify(req.key)} (burst ${limit.burst} over ${this.config.shards} shards) `
            + `holds at most ${params.shardBurst} tokens per acquire, got ${req.tokens}: raise the override's burst or clear it`);
        }
        throw new InvalidAcquireRequest(
          `tokens must be at most the burst per shard (${params.shardBurst} = floor(burst ${limit.burst} / shards ${this.config.shards})), got ${req.tokens}`);
      }
      // A class below HIGH leaves its reserve free for the classes above it and never reserves ahead: a caller of a
      // higher class then finds room at once instead of queueing behind lower reservations.
      const rank = req.priority === undefined ? 0 : CLASS_RANK[req.priority];
      const reserveShare = rank * (this.config.priorityReserve ?? DEFAULT_PRIORITY_RESERVE);
      const adaptive = this.config.adaptive;
      let maxWaitUs = req.mode === 'RESERVE' && rank === 0 ? this.maxWaitUs(options.maxWaitMs) : 0;
      // an adaptive limit caps how far ahead of now a caller reserves (its lookahead included), so a decrease shows
      // within that time
      if (adaptive) maxWaitUs = Math.min(maxWaitUs, Math.max(0, adaptive.maxReservationMs * 1000 - this.roundTrip.lookaheadUs()));
      const makeTake = (ivUs: number): Take => {
        const incUs = req.tokens * ivUs;
        const toleranceUs = params.shardBurst * ivUs;
        return {
          incUs,
          toleranceUs,
          maxWaitUs,
          reserveUs: Math.max(0, Math.min(Math.floor(toleranceUs * reserveShare), toleranceUs - incUs)),
          // a class below HIGH reserves at most one interval ahead for its answer's round trip (a cold container's
          // estimate is a second): a HIGH caller never queues behind more than that
          lookaheadCapUs: rank > 0 ? params.intervalUs : undefined,
        };
      };
      const out = await this.takeOnce(req, makeTake, params, counter, !refresh, limit.ratePerSecond);
      // the rate in force for the key (the adaptive rate, its override's, or the deployed one), for LimitInForce
      if (out !== FOREIGN_LIMIT) return { ...out, limitPerSecond: out.limitPerSecond ?? limit.ratePerSecond };
      // The bucket is counted under another limit than the one this container holds: the override may have
      // changed since it was cached. Read it again before re-counting anyone's debt (containers that disagree
      // would otherwise re-count the same item back and forth for up to the cache's 10 s).
      refresh = true;
    }
  }

  /** The wait a RESERVE take may add beyond its arrival: the configured maxWait, or less for a caller's deadline. */
  private maxWaitUs(fromNowMs: number | undefined): number {
    const configured = this.config.maxWaitMs * 1000;
    if (fromNowMs === undefined) return configured;
    return Math.floor(Math.max(0, Math.min(configured, fromNowMs * 1000 - this.roundTrip.lookaheadUs())));
  }

  /** One take on one or two shards. */
  private async takeOnce(req: AcquireRequest, makeTake: (ivUs: number) => Take, params: BucketParams, counter: { calls: number },
    mayRefresh: boolean, ceilingRate: number): Promise<AcquireOutcome | typeof FOREIGN_LIMIT> {
    const take = makeTake(params.intervalUs);
    const ivUs = params.intervalUs;
    const shards = this.config.shards;
    const first = Math.floor(this.deps.random() * shards);
    const order = shards === 1 ? [first] : [first, (first + 1 + Math.floor(this.deps.random() * (shards - 1))) % shards];

    let retryAfterUs = Number.POSITIVE_INFINITY;
    let lastRate: number | undefined;
    const callsBefore = counter.calls;
    for (const shard of order) {
      // TRY spends at most one contended write per attempt: when the first shard's write found it full, the other
      // shard (its cache said it had room, or it is unknown) is left for the retry, which the retry-after points at.
      if (req.mode === 'TRY' && shard !== first && counter.calls > callsBefore) break;
      const pk = bucketItemKey(this.config.limiterName, req.key, shard);
      const r = this.config.adaptive
        ? await this.takeAdaptiveShard(pk, makeTake, ceilingRate, counter)
        : await this.takeFromShard(pk, take, ivUs, counter, mayRefresh);
      if (r === FOREIGN_LIMIT) return r;
      const limitPerSecond = 'ivUs' in r ? rateOf(r.ivUs as number, shards) : undefined;
      if (r.admitted) {
        return {
          admitted: true,
          key: req.key,
          tokens: req.tokens,
          shard,
          nowUs: r.nowUs,
          atUs: r.atUs,
          waitUs: r.atUs - r.nowUs,
          dynamoCalls: counter.calls,
          limitPerSecond,
        };
      }
      retryAfterUs = Math.min(retryAfterUs, r.retryAfterUs);
      lastRate = limitPerSecond ?? lastRate;
    }
    return { admitted: false, key: req.key, tokens: req.tokens, retryAfterUs, dynamoCalls: counter.calls, limitPerSecond: lastRate };
  }

  private async takeFromShard(pk: string, take: Take, ivUs: number, counter: { calls: number }, mayRefresh: boolean):
  Promise<{ admitted: true; nowUs: number; atUs: number } | { admitted: false; retryAfterUs: number } | typeof FOREIGN_LIMIT> {
    const store = this.deps.store;
    const now = this.deps.clockUs();
    // The arrival time of this take: when its answer is expected back. Every write of the take uses it.
    const arrival = now + Math.min(this.roundTrip.lookaheadUs(), take.lookaheadCapUs ?? Infinity);
    // tat never decreases under one limit (both writes move it forward), so the last tat this container saw is
    // a lower bound of the stored one: when even that leaves no room, the answer is a denial without a call.
    // A tat seen under another limit (another emission interval) says nothing: guess again.
    const seen = this.lastTat.get(pk);
    const cached = seen && seen.iv === ivUs ? seen.tat : undefined;
    // Guess the write shape. A container that has not seen this bucket guesses busy (new containers appear when
    // load rises), and so does one that last saw it busy, unless a whole tolerance has passed since: its cached
    // tat is older than the other containers' writes, which keep a loaded bucket ahead of now.
    let branch: Plan = cached === undefined ? { kind: 'busy' } : plan(cached, arrival, take);
    if (branch.kind === 'idle' && this.seenBusy.has(pk) && arrival - cached! < take.toleranceUs) {
      branch = { kind: 'busy' };
    }
    if (branch.kind === 'deny') {
      return { admitted: false, retryAfterUs: branch.retryAfterUs };
    }

    const expS = Math.ceil((arrival + take.toleranceUs + take.maxWaitUs) / 1_000_000) + TTL_SLACK_S;
    let writes = 0;
    while (writes < MAX_WRITES) {
      writes++;
      const b = branch;
      const res = await this.timed(counter, () => (b.kind === 'idle'
        ? store.takeIdle(pk, arrival, arrival + take.incUs, expS, ivUs, take.toleranceUs)
        : store.takeBusy(pk, take.incUs, arrival, busyCeiling(arrival, take), expS, ivUs, take.toleranceUs)));
      if (res.ok) {
        this.remember(pk, res.tat, ivUs);
        if (branch.kind === 'busy') this.seenBusy.add(pk);
        else this.seenBusy.delete(pk);
        return { admitted: true, nowUs: now, atUs: admittedAt(res.tat, arrival, take.toleranceUs) };
      }
      if (branch.kind === 'idle') this.seenBusy.add(pk);
      if (res.item === UNKNOWN && branch.kind === 'idle') {
        // A failed idle write usually means tat was past the arrival time: the bucket is busy, so try that branch
        // rather than spend a read to learn it (a malformed or foreign item fails that write too, and is read then).
        branch = { kind: 'busy' };
        continue;
      }
      let state = await this.learn(pk, res.item, counter);
      // A debt counted under another limit (the limit changed: an override, or a redeploy) is re-counted in this
      // limit's interval before anything is taken: the same number of tokens stays owed, so the new limit
      // applies to new admissions at once. Reservations already handed out keep their slots. An item of the
      // format before versions (no iv, no v) is given them, its debt unchanged.
      const stale = (st: { tat?: number; iv?: number; hz?: number; tol?: number }) =>
        st.tat !== undefined && (st.iv === undefined || (st.iv !== ivUs && st.tat > arrival));
      if (stale(state) && state.iv !== undefined && mayRefresh) return FOREIGN_LIMIT;
      while (stale(state) && writes < MAX_WRITES) {
        writes++;
        const old = state;
        const tat = rescaledTat(old.tat!, old.iv, old.hz, ivUs, take.toleranceUs, arrival, old.tol);
        const r = await this.timed(counter, () => store.rescale(pk, old.tat!, old.iv, tat, ivUs, expS, take.toleranceUs));
        state = r.ok ? { tat: r.tat, iv: ivUs, hz: old.hz, tol: take.toleranceUs } : await this.learn(pk, r.item, counter);
      }
      if (stale(state)) break;
      if (state.tat !== undefined) this.remember(pk, state.tat, ivUs);
      branch = plan(state.tat, arrival, take);
      if (branch.kind === 'deny') {
        // The wait is counted from the current time: a slot that has freed up since makes it shorter.
        return { admitted: false, retryAfterUs: Math.max(0, branch.retryAfterUs - (this.deps.clockUs() - now)) };
      }
    }

    // Only when containers holding different limits keep re-counting the same item (a limit change, for at most the
    // override cache's 10 s, or a redeploy while old containers drain): nothing was admitted, and a retry settles.
    throw new LimiterUnavailable(`bucket item ${pk}: ${MAX_WRITES} writes without an answer (containers disagree on the limit while it changes); retry`);
  }

  /**
   * An adaptive limiter's take on one shard. The rate in force is the item's interval: the write names the interval
   * this container believes is stored (a container that missed a change fails, reads the item and takes again at the
   * rate in force), and raises it when a whole step has passed since the last change. A raise keeps the tat: the
   * debt drains as before, so the bound holds against the new rate from the raise on.
   */
  private async takeAdaptiveShard(pk: string, makeTake: (ivUs: number) => Take, ceilingRate: number, counter: { calls: number }):
  Promise<{ admitted: true; nowUs: number; atUs: number; ivUs: number } | { admitted: false; retryAfterUs: number; ivUs: number }> {
    const store = this.deps.store;
    const config = this.config.adaptive!;
    const now = this.deps.clockUs();
    const bounds = adaptiveBounds(ceilingRate, config, this.config.shards);
    const arrival = now + Math.min(this.roundTrip.lookaheadUs(), makeTake(bounds.fastIv).lookaheadCapUs ?? Infinity);
    let view = this.views.get(pk);
    for (let writes = 0; writes < MAX_WRITES; writes++) {
      const oldIv = view?.iv ?? bounds.fastIv;
      if (view?.tat !== undefined && view.iv === undefined) {
        // an item of the format before versions (no iv, no v): given them at the ceiling, its tat kept
        const old = view;
        const tol = makeTake(bounds.fastIv).toleranceUs;
        const expS = Math.ceil((Math.max(old.tat!, arrival) + tol) / 1_000_000) + TTL_SLACK_S;
        const r = await this.timed(counter, () => store.rescale(pk, old.tat!, undefined, old.tat!, bounds.fastIv, expS, tol));
        view = r.ok ? { ...old, iv: bounds.fastIv, tol } : await this.learnView(pk, r.item, counter);
        continue;
      }
      if (view?.iv !== undefined && view.iv < bounds.fastIv && view.tat !== undefined && view.tat > arrival) {
        // the stored rate is above the ceiling (an override lowered it): re-count the debt at the ceiling first
        const old = view;
        const tol = makeTake(bounds.fastIv).toleranceUs;
        const tat = rescaledTat(old.tat!, old.iv, old.hz, bounds.fastIv, tol, arrival, old.tol);
        const expS = Math.ceil((tat + tol) / 1_000_000) + TTL_SLACK_S;
        const r = await this.timed(counter, () => store.rescale(pk, old.tat!, old.iv!, tat, bounds.fastIv, expS, tol));
        view = r.ok ? { ...old, tat: r.tat, iv: bounds.fastIv, tol } : await this.learnView(pk, r.item, counter);
        continue;
      }
      const iv = effectiveIv(view?.iv, view?.ac, arrival, bounds, config);
      const raised = iv !== oldIv;
      const take = makeTake(iv);
      // tat never decreases (a raise keeps it, a decrease re-counts it upwards): the last one seen is a lower bound
      // (a container that has not seen the item guesses busy; a seen item without a tat does not exist yet: idle)
      const branch: Plan = view === undefined ? { kind: 'busy' } : plan(view.tat, arrival, take);
      if (branch.kind === 'deny') return { admitted: false, retryAfterUs: branch.retryAfterUs, ivUs: iv };
      const expS = Math.ceil((arrival + take.toleranceUs + take.maxWaitUs) / 1_000_000) + TTL_SLACK_S;
      const adapt = { oldIvUs: oldIv, oldAcUs: view?.ac, acUs: raised ? arrival : undefined };
      const res = await this.timed(counter, () => (branch.kind === 'idle'
        ? store.takeIdle(pk, arrival, arrival + take.incUs, expS, iv, take.toleranceUs, adapt)
        : store.takeBusy(pk, take.incUs, arrival, busyCeiling(arrival, take), expS, iv, take.toleranceUs, adapt)));
      if (res.ok) {
        this.rememberView(pk, { ...view, tat: res.tat, iv, tol: take.toleranceUs, ac: raised ? arrival : view?.ac });
        return { admitted: true, nowUs: now, atUs: admittedAt(res.tat, arrival, take.toleranceUs), ivUs: iv };
      }
      view = await this.learnView(pk, res.item, counter);
      const known = view.tat !== undefined && view.iv !== undefined && view.iv >= bounds.fastIv;
      if (known && view.iv === effectiveIv(view.iv, view.ac, arrival, bounds, config)) {
        // the rate in force is known now: a full bucket is a denial without another write
        const p = plan(view.tat, arrival, makeTake(view.iv!));
        if (p.kind === 'deny') {
          return { admitted: false, retryAfterUs: Math.max(0, p.retryAfterUs - (this.deps.clockUs() - now)), ivUs: view.iv! };
        }
      }
    }
    throw new LimiterUnavailable(`bucket item ${pk}: ${MAX_WRITES} writes without an answer (its adaptive rate changed on every one); retry`);
  }

  /**
   * A throttling signal of the downstream (a RateLimitedTask's throttling error, or an alarm): lowers the key's
   * rate by `decreaseFactor` on every shard, never below `minRatePerSecond`. A signal within a second of the last
   * decrease is the same congestion and changes nothing. Reservations already handed out keep their slots; the debt
   * beyond them is re-counted at the lower rate.
   */
  async decrease(key: string): Promise<{ readonly decreased: boolean; readonly ratePerSecond: number; readonly dynamoCalls: number }> {
    const config = this.config.adaptive;
    if (!config) throw new InvalidAcquireRequest(`limiter ${this.config.limiterName} is not adaptive: a decrease applies to adaptive limiters only`);
    const counter = { calls: 0 };
    const limit = await this.limitFor(key, counter);
    const shards = this.config.shards;
    const bounds = adaptiveBounds(limit.ratePerSecond, config, shards);
    const { shardBurst } = bucketParams(limit.ratePerSecond, limit.burst, shards);
    let decreased = false;
    // the rate in force after the signal: the sum of the shards' rates
    let rate = 0;
    for (let shard = 0; shard < shards; shard++) {
      const pk = bucketItemKey(this.config.limiterName, key, shard);
      let known: StoredBucket | undefined | typeof UNKNOWN = UNKNOWN;
      let shardIv = bounds.fastIv;
      for (let tries = 0; tries < MAX_WRITES; tries++) {
        const now = this.deps.clockUs();
        const st = await this.learnView(pk, known, counter);
        const inForce = effectiveIv(st.iv, st.ac, now, bounds, config);
        const iv = decreasedIv(inForce, bounds, config);
        shardIv = inForce;
        // the same congestion as the last decrease, an item of the format before versions (its next take gives it
        // one), or already at the floor
        if (!signalCounts(st.ad, now) || (st.tat !== undefined && st.iv === undefined) || (iv === st.iv && st.ac !== undefined)) break;
        const tol = shardBurst * iv;
        // Additive: the debt beyond the reservations handed out is re-counted at the lower rate (for a busy bucket
        // that adds the difference of the tolerances), and admissions that land between the read and this write
        // (at most a tolerance's worth) are counted as made before it. An idle bucket keeps its tat.
        const delta = st.tat !== undefined && st.tat > now ? rescaledTat(st.tat, st.iv, st.hz, iv, tol, now, st.tol) - st.tat : 0;
        const expS = Math.ceil((Math.max(st.tat ?? now, now) + delta + tol) / 1_000_000) + TTL_SLACK_S;
        const r = await this.timed(counter, () => this.deps.store.adapt(pk, {
          oldIvUs: st.iv ?? bounds.fastIv,
          oldAcUs: st.ac,
          oldTatUs: st.tat,
          slackUs: st.tol ?? tol,
          deltaUs: delta,
          ivUs: iv,
          tolUs: tol,
          atUs: now,
          expS,
        }));
        if (r.ok) {
          this.rememberView(pk, { ...st, tat: r.tat, iv, tol, ac: now, ad: now });
          decreased = true;
          shardIv = iv;
          break;
        }
        // the item as the failed write found it (DynamoDB returns it), else a read
        known = r.item;
      }
      rate += rateOf(shardIv, 1);
    }
    return { decreased, ratePerSecond: rate, dynamoCalls: counter.calls };
  }

  private async learnView(pk: string, item: StoredBucket | undefined | typeof UNKNOWN, counter: { calls: number }): Promise<AdaptiveView> {
    const stored = item === UNKNOWN ? await this.timed(counter, () => this.deps.store.readBucket(pk)) : item;
    const view = checkBucket(pk, stored);
    this.rememberView(pk, view);
    return view;
  }

  private rememberView(pk: string, view: AdaptiveView): void {
    if (this.views.size >= MAX_CACHED_KEYS && !this.views.has(pk)) this.views.clear();
    this.views.set(pk, view);
  }

  /** One store call, counted, its round trip fed to the estimate. */
  private timed<T>(counter: { calls: number }, call: () => Promise<T>): Promise<T> {
    return this.roundTrip.timed(counter, this.deps.clockUs, call);
  }

  /** The stored state after a failed write: the returned old item, or a consistent read; checked before use. */
  private async learn(pk: string, item: StoredBucket | undefined | typeof UNKNOWN, counter: { calls: number }):
  Promise<{ tat?: number; iv?: number; hz?: number; tol?: number }> {
    const stored = item === UNKNOWN ? await this.timed(counter, () => this.deps.store.readBucket(pk)) : item;
    return checkBucket(pk, stored);
  }

  private remember(pk: string, tat: number, iv: number): void {
    if (this.lastTat.size >= MAX_CACHED_KEYS && !this.lastTat.has(pk)) {
      this.lastTat.clear();
      this.seenBusy.clear();
    }
    const prev = this.lastTat.get(pk);
    this.lastTat.set(pk, { tat: prev && prev.iv === iv ? Math.max(tat, prev.tat) : tat, iv });
  }

  /** The key's limit: its override item when valid (cached ≤ 10 s), else the deployed limit. */
  private async limitFor(key: string, counter: { calls: number }, refresh = false):
  Promise<{ ratePerSecond: number; burst: number; overridden: boolean }> {
    const deployed = { ratePerSecond: this.config.ratePerSecond, burst: this.config.burst, overridden: false };
    const now = this.deps.clockUs();
    let cached = this.overrides.get(key);
    // A refresh re-reads an override older than a second (at most one read per second per key and container).
    if (!cached || cached.untilUs <= now || (refresh && cached.readUs < now - 1_000_000)) {
      // Not a sample of the estimate (on a cold container it also sets up the connection), but it raises a cold
      // container's first lookahead when the store answers slowly, as it does to a herd of cold callers.
      counter.calls++;
      const t0 = this.deps.clockUs();
      const item = await this.deps.store.readOverride(overrideItemKey(this.config.limiterName, key));
      this.roundTrip.seed(this.deps.clockUs() - t0);
      const value = this.parseOverride(key, item, now);
      // an override that expires (`until`) is cached no longer than until then
      const expires = item && value ? overrideUntilUs(item) : undefined;
      cached = { value, untilUs: Math.min(now + this.overrideTtlUs, typeof expires === 'number' ? expires : Infinity), readUs: now };
      if (this.overrides.size >= MAX_CACHED_KEYS) this.overrides.clear();
      this.overrides.set(key, cached);
    }
    return cached.value ? { ...cached.value, overridden: true } : deployed;
  }

  private parseOverride(key: string, item: Record<string, unknown> | undefined, nowUs: number): KeyOverride | undefined {
    if (!item) return undefined;
    const until = overrideUntilUs(item);
    if (until === 'invalid') {
      process.stderr.write(`${JSON.stringify({ level: 'WARN', message: `ignoring override for key ${JSON.stringify(key)}: until must be an ISO 8601 time, got ${JSON.stringify(item[OverrideAttr.UNTIL])}` })}\n`);
      return undefined;
    }
    // expired: the deployed limit applies again, without a second command
    if (until !== undefined && until <= nowUs) return undefined;
    if (item.v !== undefined && item.v !== ITEM_VERSION) {
      // Written by a handler of another format: its meaning is unknown here, so admit nothing under it.
      throw new LimiterUnavailable(`override item ${overrideItemKey(this.config.limiterName, key)} has format version v=${JSON.stringify(item.v)}; this handler reads v=${ITEM_VERSION}`);
    }
    const rate = item.ratePerSecond;
    // Without a burst the deployed one stands: requests valid at synth stay valid.
    const burst = item.burst ?? this.config.burst;
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

/** A bucket item as checked: its tat, the interval it is counted in, and (adaptive limiters) when its rate changed. */
export interface AdaptiveView {
  readonly tat?: number;
  readonly iv?: number;
  readonly hz?: number;
  readonly tol?: number;
  readonly ac?: number;
  readonly ad?: number;
}

/** Returned by a take that met a bucket counted under another limit while its container may re-read the override. */
const FOREIGN_LIMIT = Symbol('foreign limit');

/**
 * The tat of a bucket counted in `oldIv` (µs per token), re-counted in `ivUs` with tolerance `toleranceUs`.
 * Reservations already handed out keep their slots: up to `hz`, the latest slot the item records, nothing moves;
 * only the debt beyond it is re-counted (its tokens stay owed), and the next new slot comes at least one new
 * interval after `hz` — so a lower limit applies to new admissions at once, following the last reservation at the
 * new rate, and a higher limit (or burst) does not squeeze new slots between reservations already handed out. With
 * no reservation ahead (`hz` not after the arrival), the whole debt is re-counted from the arrival. Re-counting
 * back and forth (containers that still disagree on the limit) does not inflate the debt: `hz` only moves with real
 * admissions. An item of the format before versions keeps its tat.
 */
export function rescaledTat(
  tat: number, oldIv: number | undefined, hz: number | undefined, ivUs: number, toleranceUs: number, arrival: number, oldTol?: number,
): number {
  if (oldIv === undefined) return tat;
  const reserved = hz !== undefined && hz > arrival ? Math.min(hz, tat) : undefined;
  const base = reserved ?? arrival;
  // No credit is handed out by the change itself: a larger burst than the old one accrues at the new rate.
  const extraBurst = oldTol === undefined ? 0 : Math.max(0, toleranceUs - Math.ceil((oldTol / oldIv) * ivUs));
  const recounted = base + Math.ceil(((tat - base) * ivUs) / oldIv) + extraBurst;
  let floor = reserved === undefined ? recounted : reserved + toleranceUs;
  if (ivUs > oldIv && oldTol !== undefined) {
    // A lower rate: the credit used under the old limit (its tolerance less what is left) stays used.
    floor = Math.max(floor, tat - oldTol + toleranceUs);
  }
  return Math.max(recounted, floor);
}

/**
 * A stored bucket item, checked: an unknown format version or a malformed attribute fails closed (admit nothing,
 * a retryable LimiterUnavailable naming the item and the attribute), never an endless denial.
 */
export function checkBucket(pk: string, item: StoredBucket | undefined): AdaptiveView {
  if (!item) return {};
  if (item.v !== undefined && item.v !== ITEM_VERSION) {
    throw new LimiterUnavailable(`bucket item ${pk} has format version v=${JSON.stringify(item.v)}; this handler reads v=${ITEM_VERSION}`);
  }
  if (item.tat !== undefined && !(typeof item.tat === 'number' && Number.isSafeInteger(item.tat) && item.tat >= 0)) {
    throw new LimiterUnavailable(`bucket item ${pk}: attribute tat is ${JSON.stringify(item.tat)}, expected a whole number of microseconds`);
  }
  if (item.iv !== undefined && !(typeof item.iv === 'number' && Number.isSafeInteger(item.iv) && item.iv >= 1)) {
    throw new LimiterUnavailable(`bucket item ${pk}: attribute iv is ${JSON.stringify(item.iv)}, expected a whole number of microseconds >= 1`);
  }
  if (item.hz !== undefined && !(typeof item.hz === 'number' && Number.isSafeInteger(item.hz))) {
    throw new LimiterUnavailable(`bucket item ${pk}: attribute hz is ${JSON.stringify(item.hz)}, expected a whole number of microseconds`);
  }
  if (item.tol !== undefined && !(typeof item.tol === 'number' && Number.isSafeInteger(item.tol) && item.tol >= 0)) {
    throw new LimiterUnavailable(`bucket item ${pk}: attribute tol is ${JSON.stringify(item.tol)}, expected a whole number of microseconds >= 0`);
  }
  for (const name of ['ac', 'ad'] as const) {
    if (item[name] !== undefined && !(typeof item[name] === 'number' && Number.isSafeInteger(item[name]))) {
      throw new LimiterUnavailable(`bucket item ${pk}: attribute ${name} is ${JSON.stringify(item[name])}, expected a whole number of microseconds`);
    }
  }
  const n = (v: unknown) => v as number | undefined;
  return { tat: n(item.tat), iv: n(item.iv), hz: n(item.hz), tol: n(item.tol), ac: n(item.ac), ad: n(item.ad) };
}
