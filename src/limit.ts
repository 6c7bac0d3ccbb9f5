import { IConstruct } from 'constructs';
import { checkRange, fail } from './private/validation';

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
 * A limit a `RateLimiter` enforces: a sustained rate and a burst, of one dimension (requests by default).
 *
 * `Limit.perSecond(5)` is the same limit as `ratePerSecond: 5`; the two forms are exclusive on a limiter.
 */
export class Limit {
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

  private constructor(
    /** Sustained rate, units per second. */
    public readonly ratePerSecond: number,
    /** Units that may be taken at once after idleness. */
    public readonly burst: number,
    /** What the limit counts. */
    public readonly dimension: string,
    /** How the limit was stated, for messages and the throttle plan. */
    public readonly description: string,
  ) {}

  /**
   * Checks the limit where it is used: errors name the construct `scope` and the prop.
   *
   * @internal
   */
  public _check(scope: IConstruct, prop: string): void {
    // The handler's own floor (lambda/rate-limiter/limiter.ts MIN_RATE_PER_SECOND): one unit per 1,000 s.
    checkRange(scope, `${prop}ratePerSecond`, this.ratePerSecond, { min: 0.001, max: 1_000_000 });
    checkRange(scope, `${prop}burst`, this.burst, { min: 1, max: 1_000_000, integer: true });
    if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(this.dimension)) {
      fail(scope, `${prop}dimension must be 1 to 32 letters, digits or '_', starting with a letter, got ${JSON.stringify(this.dimension)}`);
    }
  }
}
