import { Annotations, Duration } from 'aws-cdk-lib';
import { IConstruct } from 'constructs';
import { checkRange, fail } from './private/validation';

/** Below this start jitter a window rule's limit gives up most slots as late (a synth warning). */
const MIN_USEFUL_JITTER_MS = 20;

/** The dimension a limit counts when none is named: requests (one per acquire by default). */
export const REQUESTS_DIMENSION = 'requests';

/**
 * Options of `Limit.perSecond()` and `Limit.perMinute()`.
 */
export interface LimitOptions {
  /**
   * Units that may be taken at once after idleness (the bucket size). In any window of length w the limit admits at
   * most `burst + rate × w`. Valid range: an integer from the limiter's `shards` to 1,000,000.
   *
   * @default - one second's worth: max(1, ceil(rate per second))
   */
  readonly burst?: number;

  /**
   * What the limit counts: acquires take `consume[dimension]` of it (`AcquireOptions.consume`). Letters, digits
   * and `_`, starting with a letter.
   *
   * @default 'requests'
   */
  readonly dimension?: string;
}

/**
 * A provider's own rule, as it counts: at most `requests` in any window of length `window` (`Limit.perWindow()`).
 */
export interface WindowLimitOptions {
  /**
   * The most the provider accepts in any window of length `window`, counted at arrival (its own counter: sliding,
   * closed or half-open windows alike). An integer from 1 to 1,000,000.
   */
  readonly requests: number;

  /**
   * The provider's window. From 1 ms to 24 hours.
   */
  readonly window: Duration;

  /**
   * How many of `requests` may arrive at once: 0 when the provider allows no burst (calls one at a time, evenly
   * spaced). The limiter hands out max(1, burst) at once. An integer from 0 to `requests`.
   */
  readonly burst: number;

  /**
   * The latest a call reaches the provider after the slot the limiter gave it: the acquire function's return, the
   * state transitions to the call, the call's own connection. Calls never start before their slot, so this is the
   * only slack the derivation needs. From 0 to 1 minute.
   *
   * @default Duration.millis(Limit.DEFAULT_START_JITTER_MS) - 100 ms: Lambda's return and Step Functions' transitions
   * to the call (the local runner measures up to ~30 ms; see README "Limit.perWindow")
   */
  readonly startJitter?: Duration;

  /**
   * What the rule counts (`AcquireOptions.consume`).
   *
   * @default 'requests'
   */
  readonly dimension?: string;
}

/**
 * A limit a `RateLimiter` enforces: a sustained rate and a burst, of one dimension (requests by default).
 *
 * `Limit.perSecond(5)` is the same limit as `ratePerSecond: 5`; the two forms are exclusive on a limiter.
 */
export class Limit {
  /** `Limit.perWindow()`'s default `startJitter`, milliseconds. */
  public static readonly DEFAULT_START_JITTER_MS = 100;

  /**
   * `rate` units per second (0.001 to 1,000,000), with `options.burst` at once after idleness.
   */
  public static perSecond(rate: number, options: LimitOptions = {}): Limit {
    return new Limit(rate, options.burst ?? Math.max(1, Math.ceil(rate)), options.dimension ?? REQUESTS_DIMENSION, `Limit.perSecond(${rate})`);
  }

  /**
   * `amount` units per minute (a model API's requests or tokens per minute), as a rate of amount / 60 per second
   * with `options.burst` at once after idleness: in any 60 s at most burst + amount (2 × burst + amount when
   * callers settle below their estimate: see `SettleOptions`). To hold a provider's quota Q per minute, state
   * Q − burst (or Q − 2 × burst with settling).
   */
  public static perMinute(amount: number, options: LimitOptions = {}): Limit {
    const rate = amount / 60;
    return new Limit(rate, options.burst ?? Math.max(1, Math.ceil(rate)), options.dimension ?? REQUESTS_DIMENSION, `Limit.perMinute(${amount})`);
  }

  /**
   * The provider's rule as it counts — at most `requests` in any window of length `window`, `burst` of them at once
   * — from which the rate and burst are derived so that its counter never exceeds `requests`, even for calls that
   * reach it up to `startJitter` after their slot.
   *
   * With B = max(1, burst) handed out at once and interval T between the rest, k calls that arrive within one window
   * W left their slots within W + J (J = startJitter), so k ≤ B + (W + J) / T. The rule holds when
   * (requests + 1 − B) × T > W + J: the rate is just below (requests + 1 − B) / (W + J) per second. 5 requests per
   * second, no burst, 100 ms jitter: 5 / 1.1 s = 4.545/s, burst 1 (the cost of the jitter: 9 %).
   */
  public static perWindow(options: WindowLimitOptions): Limit {
    const jitterMs = (options.startJitter ?? Duration.millis(Limit.DEFAULT_START_JITTER_MS)).toMilliseconds();
    const windowMs = options.window.toMilliseconds();
    const burst = Math.max(1, options.burst);
    const spanS = (windowMs + jitterMs) / 1000;
    // strictly below (requests + 1 − B) / (W + J): the emission interval the handler derives (rounded up) then stays
    // strictly above (W + J) / (requests + 1 − B)
    const rate = ((options.requests + 1 - burst) / spanS) * (1 - 1e-9);
    const description = `Limit.perWindow(${options.requests} per ${windowMs} ms, burst ${options.burst}, start jitter ${jitterMs} ms)`;
    return new Limit(rate, burst, options.dimension ?? REQUESTS_DIMENSION, description, { ...options, startJitter: Duration.millis(jitterMs) });
  }

  private constructor(
    /** Sustained rate, units per second. */
    public readonly ratePerSecond: number,
    /** Units that may be taken at once after idleness. */
    public readonly burst: number,
    /** What the limit counts. */
    public readonly dimension: string,
    /** How the limit was stated, for messages and the throttle plan. */
    public readonly description: string,
    /** The provider's rule the rate and burst were derived from (`Limit.perWindow()`), with its start jitter. */
    public readonly windowRule?: WindowLimitOptions,
  ) {}

  /**
   * Checks the limit where it is used: errors name the construct `scope` and the prop.
   *
   * @internal
   */
  public _check(scope: IConstruct, prop: string): void {
    const rule = this.windowRule;
    if (rule) {
      // the provider's rule first: its figures are what the user wrote
      checkRange(scope, `${prop}requests`, rule.requests, { min: 1, max: 1_000_000, integer: true });
      checkRange(scope, `${prop}window (ms)`, rule.window.toMilliseconds(), { min: 1, max: 86_400_000, integer: true });
      checkRange(scope, `${prop}burst`, rule.burst, { min: 0, max: rule.requests, integer: true, why: 'requests' });
      checkRange(scope, `${prop}startJitter (ms)`, rule.startJitter!.toMilliseconds(), { min: 0, max: 60_000, integer: true });
      if (rule.startJitter!.toMilliseconds() < MIN_USEFUL_JITTER_MS) {
        Annotations.of(scope).addWarningV2('cdk-sfn-throttle:startJitterTooSmall',
          `${prop}startJitter ${rule.startJitter!.toMilliseconds()} ms: the acquire function keeps half of it for DynamoDB's answer and the call gets the other `
          + `half to reach the provider (Lambda's return, Step Functions' transitions): below ${MIN_USEFUL_JITTER_MS} ms most slots are given up as late, and `
          + 'calls later than it are outside the guarantee. Keep the default (100 ms) or measure your path.');
      }
      if (this.ratePerSecond < 0.001) {
        fail(scope, `${prop}perWindow: ${rule.requests} per ${rule.window.toMilliseconds()} ms derives ${this.ratePerSecond}/s, below the limiter's floor of 0.001/s (one per 1,000 s)`);
      }
    }
    // The handler's own floor (lambda/rate-limiter/limiter.ts MIN_RATE_PER_SECOND): one unit per 1,000 s.
    checkRange(scope, `${prop}ratePerSecond`, this.ratePerSecond, { min: 0.001, max: 1_000_000 });
    checkRange(scope, `${prop}burst`, this.burst, { min: 1, max: 1_000_000, integer: true });
    if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(this.dimension)) {
      fail(scope, `${prop}dimension must be 1 to 32 letters, digits or '_', starting with a letter, got ${JSON.stringify(this.dimension)}`);
    }
  }
}
