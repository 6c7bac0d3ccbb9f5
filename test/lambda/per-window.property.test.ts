import { Duration } from 'aws-cdk-lib';
import * as fc from 'fast-check';
import { Limiter } from '../../lambda/rate-limiter/limiter';
import { MemoryBucketStore } from '../../lambda/rate-limiter/store';
import { type Admission, maxInWindow } from '../../local/timing';
import { Limit } from '../../src';

// Limit.perWindow: a provider's rule (at most `requests` in any window, `burst` at once) from which rate and burst are
// derived so that the provider's own counter — at arrival, in any closed window (so any half-open one too) — never
// exceeds `requests`, for calls that reach it up to `startJitter` after their slot. Judged at the provider's arrivals,
// with the jitter chosen adversarially per call (0 or the bound, or anything between).

function limiterFor(limit: Limit) {
  const clock = { now: 1_700_000_000_000_000 };
  const limiter = new Limiter({ limiterName: 'w', ratePerSecond: limit.ratePerSecond, burst: limit.burst, shards: 1, maxWaitMs: 3_600_000 }, {
    store: new MemoryBucketStore(), clockUs: () => clock.now, random: () => 0, initialLookaheadUs: 0,
  });
  return { clock, limiter };
}

describe('Limit.perWindow (in-memory store, fake clock)', () => {
  test('5 requests per second, no burst, 100 ms start jitter: 4.545/s, burst 1', () => {
    const limit = Limit.perWindow({ requests: 5, window: Duration.seconds(1), burst: 0 });
    expect(limit.ratePerSecond).toBeCloseTo(5 / 1.1, 6);
    expect(limit.ratePerSecond).toBeLessThan(5 / 1.1);
    expect(limit.burst).toBe(1);
    expect(limit.description).toBe('Limit.perWindow(5 per 1000 ms, burst 0, start jitter 100 ms)');
  });

  test('property: the provider\'s counter at arrival never exceeds requests, for any start jitter up to the bound', async () => {
    await fc.assert(fc.asyncProperty(
      fc.record({
        requests: fc.integer({ min: 1, max: 12 }),
        windowMs: fc.integer({ min: 50, max: 3_000 }),
        burstShare: fc.double({ min: 0, max: 1, noNaN: true }),
        jitterMs: fc.integer({ min: 0, max: 400 }),
      }),
      fc.array(fc.record({
        gapUs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 20_000 }), fc.integer({ min: 0, max: 2_000_000 })),
        // where within [slot, slot + jitter] the call arrives: the bounds themselves most of the time
        lateness: fc.oneof(fc.constant(0), fc.constant(1), fc.double({ min: 0, max: 1, noNaN: true })),
      }), { minLength: 1, maxLength: 150 }),
      async (rule, calls) => {
        // GIVEN the provider's rule and a limiter of the derived limit
        const burst = Math.floor(rule.burstShare * rule.requests);
        const limit = Limit.perWindow({
          requests: rule.requests, window: Duration.millis(rule.windowMs), burst, startJitter: Duration.millis(rule.jitterMs),
        });
        const { clock, limiter } = limiterFor(limit);
        const arrivals: Admission[] = [];
        // WHEN callers reserve at arbitrary times and each call reaches the provider up to the jitter after its slot
        for (const c of calls) {
          clock.now += c.gapUs;
          const o = await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
          if (!o.admitted) continue;
          arrivals.push({ atUs: o.atUs + Math.floor(c.lateness * rule.jitterMs * 1000), tokens: 1 });
        }
        // THEN no closed window of the provider's length (so no half-open one) holds more than `requests`
        expect(maxInWindow(arrivals, rule.windowMs * 1000)).toBeLessThanOrEqual(rule.requests);
      },
    ), { numRuns: 2_000 });
  });

  test('the derivation is tight: one interval shorter and the provider sees requests + 1', async () => {
    // GIVEN 5 per second, no burst, 100 ms jitter, and a limit 1 % faster than derived
    const derived = Limit.perWindow({ requests: 5, window: Duration.seconds(1), burst: 0 });
    const faster = Limit.perSecond(derived.ratePerSecond * 1.01, { burst: 1 });
    const { limiter } = limiterFor(faster);
    const arrivals: Admission[] = [];
    // WHEN 6 callers reserve at once and the first call is as late as the jitter allows, the others on time
    for (let i = 0; i < 6; i++) {
      const o = await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
      if (o.admitted) arrivals.push({ atUs: o.atUs + (i === 0 ? 100_000 : 0), tokens: 1 });
    }
    // THEN 6 arrive within one closed second
    expect(maxInWindow(arrivals, 1_000_000)).toBe(6);
  });
});
