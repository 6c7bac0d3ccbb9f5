// An adaptive limit (AIMD) kept with the bucket. Pure: no clock, no I/O.
//
// The rate in force is the bucket item's emission interval `iv`: every take names the interval it believes is
// stored, so a container that has not seen a change fails its write, reads the item and takes at the rate in force.
// A throttling signal lowers the rate multiplicatively (at most once per MIN_SIGNAL_GAP_US: a burst of throttling
// errors is one signal); between signals it rises additively with time, one step per INCREASE_STEP_US at most,
// never above the ceiling (the deployed rate, or an override's) nor below the floor.

import { MICROS_PER_SECOND } from './gcra';

/** The adaptive options as the function's environment gives them (`LimiterEnv.ADAPTIVE`, JSON). */
export interface AdaptiveConfig {
  readonly minRatePerSecond: number;
  readonly decreaseFactor: number;
  readonly increasePerSecond: number;
  readonly maxReservationMs: number;
}

/** Signals closer than this to the last decrease are the same congestion: one decrease. */
export const MIN_SIGNAL_GAP_US = 1_000_000;
/** The rate rises at most once per second per item (each raise is a write the take makes anyway). */
export const INCREASE_STEP_US = 1_000_000;

/** Emission interval per shard, µs, of a rate over `shards` (rounded up: never faster than the rate). */
export function intervalOf(ratePerSecond: number, shards: number): number {
  return Math.ceil((MICROS_PER_SECOND * shards) / ratePerSecond);
}

/** The rate (all shards together) of a per-shard interval. */
export function rateOf(ivUs: number, shards: number): number {
  return (MICROS_PER_SECOND * shards) / ivUs;
}

/** The bounds of an adaptive rate, as intervals: `fastIv` the ceiling's (smallest), `slowIv` the floor's. */
export interface AdaptiveBounds {
  readonly fastIv: number;
  readonly slowIv: number;
  readonly shards: number;
}

export function adaptiveBounds(ceilingRate: number, config: AdaptiveConfig, shards: number): AdaptiveBounds {
  const fastIv = intervalOf(ceilingRate, shards);
  return { fastIv, slowIv: Math.max(fastIv, intervalOf(Math.min(config.minRatePerSecond, ceilingRate), shards)), shards };
}

/**
 * The interval in force at `nowUs` for an item holding `iv`, last changed at `ac`: clamped into the bounds, then
 * raised by `increasePerSecond` for every second since `ac` (when a whole step has passed). An item never adapted
 * (no `ac`) runs at the ceiling.
 */
export function effectiveIv(iv: number | undefined, ac: number | undefined, nowUs: number, b: AdaptiveBounds, config: AdaptiveConfig): number {
  if (iv === undefined || ac === undefined) return b.fastIv;
  const clamped = Math.min(b.slowIv, Math.max(b.fastIv, iv));
  const elapsed = nowUs - ac;
  if (clamped === b.fastIv || elapsed < INCREASE_STEP_US) return clamped;
  const raised = rateOf(clamped, b.shards) + (config.increasePerSecond * elapsed) / MICROS_PER_SECOND;
  return Math.min(clamped, Math.max(b.fastIv, intervalOf(raised, b.shards)));
}

/** The interval after a decrease from `iv` (the interval in force): the rate × decreaseFactor, never below the floor. */
export function decreasedIv(iv: number, b: AdaptiveBounds, config: AdaptiveConfig): number {
  const lowered = rateOf(iv, b.shards) * config.decreaseFactor;
  return Math.min(b.slowIv, Math.max(iv, intervalOf(lowered, b.shards)));
}

/** Whether a throttling signal at `nowUs` is news: no decrease within the signal gap before it. */
export function signalCounts(ad: number | undefined, nowUs: number): boolean {
  return ad === undefined || nowUs - ad >= MIN_SIGNAL_GAP_US;
}

/** Parses `LimiterEnv.ADAPTIVE`; undefined when absent. Anything malformed is a configuration error. */
export function adaptiveFromJson(json: string | undefined): AdaptiveConfig | undefined {
  if (json === undefined || json === '') return undefined;
  const v = JSON.parse(json) as Partial<AdaptiveConfig>;
  const ok = (x: unknown, min: number, max: number) => typeof x === 'number' && Number.isFinite(x) && x >= min && x <= max;
  if (!ok(v.minRatePerSecond, 0.001, 1_000_000) || !ok(v.decreaseFactor, 0.01, 0.99) || !ok(v.increasePerSecond, 0, 1_000_000)
    || !ok(v.maxReservationMs, 0, 86_400_000)) {
    throw new Error(`invalid adaptive configuration ${json}`);
  }
  return v as AdaptiveConfig;
}
