import * as fc from 'fast-check';
import { adaptiveBounds, decreasedIv, effectiveIv, intervalOf, rateOf, type AdaptiveConfig } from '../../lambda/rate-limiter/adaptive';
import { Limiter, type LimiterConfig } from '../../lambda/rate-limiter/limiter';
import type { AcquireRequest } from '../../lambda/rate-limiter/request';
import { MemoryBucketStore } from '../../lambda/rate-limiter/store';
import { type Admission, windowViolations } from '../../local/timing';

const T0 = 1_700_000_000_000_000;
const ADAPTIVE: AdaptiveConfig = { minRatePerSecond: 1, decreaseFactor: 0.7, increasePerSecond: 0.5, maxReservationMs: 2000 };

function limiters(config: Partial<LimiterConfig>, n = 1, store = new MemoryBucketStore()) {
  const clock = { now: T0 };
  let s = 7;
  const random = () => {
    s = (s * 48271) % 2147483647;
    return (s - 1) / 2147483646;
  };
  const all = Array.from({ length: n }, () => new Limiter({
    limiterName: 'ad', ratePerSecond: 10, burst: 5, shards: 1, maxWaitMs: 60_000, ...config,
  }, { store, clockUs: () => clock.now, random, initialLookaheadUs: 0 }));
  return { clock, store, all, limiter: all[0] };
}

const req = (r: Partial<AcquireRequest> = {}): AcquireRequest => ({ key: 'k', tokens: 1, mode: 'RESERVE', ...r });

describe('adaptive rate: the pure steps', () => {
  const b = adaptiveBounds(10, ADAPTIVE, 1);

  test('a decrease multiplies the rate by the factor and stops at the floor', () => {
    // GIVEN the ceiling's interval (10/s: 100 ms)
    expect(b.fastIv).toBe(100_000);
    // WHEN decreased, THEN 7/s; decreased again and again, never below 1/s
    expect(rateOf(decreasedIv(b.fastIv, b, ADAPTIVE), 1)).toBeCloseTo(7, 3);
    let iv = b.fastIv;
    for (let i = 0; i < 20; i++) iv = decreasedIv(iv, b, ADAPTIVE);
    expect(iv).toBe(intervalOf(1, 1));
  });

  test('the rate rises additively with whole steps of time, never above the ceiling; an item never adapted runs at the ceiling', () => {
    const slow = intervalOf(4, 1);
    expect(effectiveIv(slow, T0, T0 + 999_999, b, ADAPTIVE)).toBe(slow);
    expect(rateOf(effectiveIv(slow, T0, T0 + 2_000_000, b, ADAPTIVE), 1)).toBeCloseTo(5, 3);
    expect(effectiveIv(slow, T0, T0 + 60_000_000, b, ADAPTIVE)).toBe(b.fastIv);
    expect(effectiveIv(slow, undefined, T0, b, ADAPTIVE)).toBe(b.fastIv);
  });
});

describe('adaptive limiter (in-memory store, fake clock)', () => {
  test('a decrease lowers the rate every container takes at; a second signal within a second is the same congestion', async () => {
    // GIVEN two containers of one adaptive limiter that have both taken at 10/s
    const { clock, all: [a, b] } = limiters({ adaptive: ADAPTIVE }, 2);
    expect((await a.acquire(req())).limitPerSecond).toBe(10);
    expect((await b.acquire(req())).limitPerSecond).toBe(10);
    // WHEN container a gets a throttling signal, and another 0.5 s later
    const first = await a.decrease('k');
    clock.now += 500_000;
    const second = await a.decrease('k');
    // THEN one decrease to 7/s, and container b (which saw 10/s) takes at 7/s
    expect(first).toMatchObject({ decreased: true });
    expect(first.ratePerSecond).toBeCloseTo(7, 3);
    expect(second.decreased).toBe(false);
    const next = await b.acquire(req());
    expect(next.limitPerSecond).toBeCloseTo(7, 3);
  });

  test('a container whose view predates a second decrease to the same interval does not undo it (the write names the change time too)', async () => {
    // GIVEN containers a and b; a last saw the item just after a first decrease (10/s → 5/s)
    const config = { ...ADAPTIVE, decreaseFactor: 0.5, increasePerSecond: 1 };
    const { clock, all: [a, b] } = limiters({ adaptive: config }, 2);
    await b.acquire(req());
    await b.decrease('k');
    clock.now += 100_000;
    expect((await a.acquire(req())).limitPerSecond).toBeCloseTo(5, 6);
    // WHEN the rate recovers (b takes a minute later: back at 10/s), b decreases again to 5/s (the same interval), and
    // a takes 20 ms later with its minute-old view (an idle bucket)
    clock.now += 60_000_000;
    expect((await b.acquire(req())).limitPerSecond).toBe(10);
    clock.now += 100_000;
    expect(await b.decrease('k')).toMatchObject({ decreased: true });
    clock.now += 20_000;
    const stale = await a.acquire(req());
    // THEN a takes at 5/s (its write failed on the change time, it read the item), and so does b after it
    expect(stale.limitPerSecond).toBeCloseTo(5, 6);
    expect((await b.acquire(req())).limitPerSecond).toBeCloseTo(5, 6);
  });

  test('a decrease on a busy shard is not lost to the admissions racing it (additive on tat), and reports the shards\' sum', async () => {
    // GIVEN 2 shards at 400/s and a store where an admission lands between every read and write of the decrease
    const store = new MemoryBucketStore();
    const { all: [taker] } = limiters({ adaptive: ADAPTIVE, ratePerSecond: 400, burst: 40, shards: 2 }, 1, store);
    const { all: [signaller] } = limiters({ adaptive: ADAPTIVE, ratePerSecond: 400, burst: 40, shards: 2 }, 1, store);
    for (let i = 0; i < 30; i++) await taker.acquire(req());
    const read = store.readBucket.bind(store);
    store.readBucket = async (pk: string) => {
      const item = await read(pk);
      await taker.acquire(req());
      return item;
    };
    // WHEN the signal comes
    const d = await signaller.decrease('k');
    // THEN both shards were lowered (400 × 0.7 = 280/s in all)
    expect(d.decreased).toBe(true);
    expect(d.ratePerSecond).toBeCloseTo(280, 0);
    for (const shard of [0, 1]) expect(store.items.get(`ad#bucket#k#${shard}`)!.iv).toBe(Math.ceil(1e6 * 2 / 280));
  });

  test('after a decrease the rate climbs back by increasePerSecond, up to the deployed rate', async () => {
    const { clock, limiter } = limiters({ adaptive: ADAPTIVE });
    await limiter.acquire(req());
    await limiter.decrease('k');
    clock.now += 1_500_000;
    await limiter.decrease('k');
    // 10 → 7, risen 1.5 s × 0.5/s to 7.75 when the second signal lowers it to 5.425; 4 s later 7.425
    clock.now += 4_000_000;
    const r = await limiter.acquire(req());
    expect(r.limitPerSecond).toBeCloseTo((7 + 0.75) * 0.7 + 0.5 * 4, 2);
    clock.now += 60_000_000;
    expect((await limiter.acquire(req())).limitPerSecond).toBe(10);
  });

  test('a RESERVE slot is never more than maxReservation ahead: a caller beyond it is refused', async () => {
    const { limiter } = limiters({ adaptive: ADAPTIVE, burst: 1 });
    const outcomes = [];
    for (let i = 0; i < 40; i++) outcomes.push(await limiter.acquire(req()));
    const admitted = outcomes.filter((o) => o.admitted);
    for (const o of admitted) expect(o.admitted && o.waitUs).toBeLessThanOrEqual(2_000_000);
    // 10/s, burst 1: the slots 0, 0.1 … 2.0 s
    expect(admitted).toHaveLength(21);
    expect(outcomes[39].admitted).toBe(false);
  });

  test('property: never above the deployed limit, and after a decrease every container keeps to the decreased rate', async () => {
    const event = fc.record({
      gapUs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 60_000 }), fc.integer({ min: 0, max: 1_500_000 })),
      container: fc.integer({ min: 0, max: 2 }),
      signal: fc.boolean(),
      tokens: fc.integer({ min: 1, max: 2 }),
    });
    await fc.assert(fc.asyncProperty(
      fc.array(event, { minLength: 1, maxLength: 120 }),
      fc.integer({ min: 0, max: 2 }),
      fc.array(fc.record({ gapUs: fc.integer({ min: 0, max: 60_000 }), container: fc.integer({ min: 0, max: 2 }) }),
        { minLength: 60, maxLength: 150 }),
      fc.integer({ min: 1, max: 3 }),
      async (before, signaller, after, shards) => {
        // GIVEN three containers of a limiter of 20/s burst 6 that adapts between 2/s and 20/s and barely rises again
        const config: AdaptiveConfig = { ...ADAPTIVE, minRatePerSecond: 2, increasePerSecond: 0.001 };
        const { clock, all } = limiters({ adaptive: config, ratePerSecond: 20, burst: 6, shards }, 3);
        const admissions: Admission[] = [];
        const take = async (container: number, tokens: number) => {
          const o = await all[container].acquire(req({ tokens }));
          if (o.admitted) admissions.push({ atUs: o.atUs, tokens });
        };
        // WHEN takes and throttling signals come from any container, then a last signal, then takes only
        for (const e of before) {
          clock.now += e.gapUs;
          if (e.signal) await all[e.container].decrease('k');
          else await take(e.container, e.tokens);
        }
        clock.now += 1_000_000;
        const last = await all[signaller].decrease('k');
        const decreasedAt = clock.now;
        const later: Admission[] = [];
        for (const e of after) {
          clock.now += e.gapUs;
          const o = await all[e.container].acquire(req());
          if (o.admitted) {
            admissions.push({ atUs: o.atUs, tokens: 1 });
            later.push({ atUs: o.atUs, tokens: 1 });
          }
        }
        // THEN every window holds at most burst + 20·w; the slots after the reservations standing at the last decrease
        // (maxReservation + the burst's tolerance) hold to the decreased rate
        expect(windowViolations(admissions, 20, 6, 1_000_000)).toBe(0);
        expect(last.decreased).toBe(true);
        const settled = later.filter((a) => a.atUs >= decreasedAt + 2_000_000 + (6 / last.ratePerSecond) * 1_000_000);
        expect(windowViolations(settled, last.ratePerSecond * 1.001 + 0.01, 6, 1_000_000)).toBe(0);
      },
    ), { numRuns: 200 });
  });
});

describe('priority classes (in-memory store, fake clock)', () => {
  test('LOW callers saturating the limit leave room for HIGH: HIGH waits at most one interval, LOW never holds a reservation', async () => {
    // GIVEN 10/s, burst 10, LOW callers arriving every 50 ms (2× the limit) and HIGH every 500 ms (20 % of it)
    const { clock, limiter } = limiters({ ratePerSecond: 10, burst: 10 });
    const high: number[] = [];
    let lowAdmitted = 0;
    let highAdmitted = 0;
    for (let i = 0; i < 400; i++) {
      clock.now += 50_000;
      const low = await limiter.acquire(req({ priority: 'LOW' }));
      if (low.admitted) {
        lowAdmitted++;
        expect(low.waitUs).toBe(0);
      }
      if (i % 10 === 0) {
        const h = await limiter.acquire(req({ priority: 'HIGH' }));
        expect(h.admitted).toBe(true);
        if (h.admitted) {
          highAdmitted++;
          high.push(h.waitUs);
        }
      }
    }
    // THEN HIGH waited at most one emission interval (100 ms), and together they used the whole limit (20 s × 10/s + burst)
    expect(Math.max(...high)).toBeLessThanOrEqual(100_000);
    expect(lowAdmitted + highAdmitted).toBeGreaterThanOrEqual(0.97 * 200);
    expect(lowAdmitted + highAdmitted).toBeLessThanOrEqual(200 + 10);
  });

  test('without HIGH traffic LOW gets the whole rate; a NORMAL caller finds room a LOW one does not', async () => {
    const { clock, limiter } = limiters({ ratePerSecond: 10, burst: 10 });
    let low = 0;
    for (let i = 0; i < 400; i++) {
      clock.now += 50_000;
      if ((await limiter.acquire(req({ priority: 'LOW' }))).admitted) low++;
    }
    expect(low).toBeGreaterThanOrEqual(0.97 * 200);
    // the LOW callers filled the bucket to their share (60 % of the burst): NORMAL (80 %) still admits at once
    const lowNow = await limiter.acquire(req({ priority: 'LOW' }));
    const normal = await limiter.acquire(req({ priority: 'NORMAL' }));
    expect(lowNow.admitted).toBe(false);
    expect(normal).toMatchObject({ admitted: true, waitUs: 0 });
  });

  test('property: classes never take the limiter over burst + rate·w, and a class below HIGH never waits', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.record({
        gapUs: fc.integer({ min: 0, max: 300_000 }),
        priority: fc.constantFrom<AcquireRequest['priority']>('HIGH', 'NORMAL', 'LOW', undefined),
        tokens: fc.integer({ min: 1, max: 3 }),
      }), { minLength: 1, maxLength: 200 }),
      fc.double({ min: 0, max: 0.45, noNaN: true }),
      async (events, reserve) => {
        const { clock, limiter } = limiters({ ratePerSecond: 10, burst: 4, priorityReserve: reserve });
        const admissions: Admission[] = [];
        for (const e of events) {
          clock.now += e.gapUs;
          const o = await limiter.acquire(req({ priority: e.priority, tokens: e.tokens }));
          if (!o.admitted) continue;
          admissions.push({ atUs: o.atUs, tokens: e.tokens });
          if (e.priority === 'NORMAL' || e.priority === 'LOW') expect(o.waitUs).toBe(0);
        }
        expect(windowViolations(admissions, 10, 4, 1_000_000)).toBe(0);
      },
    ), { numRuns: 300 });
  });
});
