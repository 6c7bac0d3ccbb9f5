import * as fc from 'fast-check';
import { bucketParams } from '../../lambda/rate-limiter/gcra';
import { Limiter, type LimiterConfig } from '../../lambda/rate-limiter/limiter';
import type { AcquireMode } from '../../lambda/rate-limiter/request';
import { MemoryBucketStore } from '../../lambda/rate-limiter/store';
import { type Admission, maxInWindow, windowViolations } from '../../local/timing';

function limiterWith(config: Omit<LimiterConfig, 'limiterName'>, seed = 1) {
  const clock = { now: 1_700_000_000_000_000 };
  // A deterministic PRNG so a failing case replays.
  let s = (Math.abs(seed) % 2147483646) + 1;
  const random = () => {
    s = (s * 48271) % 2147483647; // Park–Miller
    return (s - 1) / 2147483646;
  };
  const store = new MemoryBucketStore();
  // No lookahead: the fake clock does not move during a store call, so these tests see the algorithm at `now`.
  const limiter = new Limiter({ limiterName: 'prop', ...config }, { store, clockUs: () => clock.now, random, initialLookaheadUs: 0 });
  return { clock, store, limiter };
}

const limitArb = fc.record({
  ratePerSecond: fc.oneof(fc.double({ min: 0.2, max: 5000, noNaN: true }), fc.integer({ min: 1, max: 2000 })),
  shards: fc.integer({ min: 1, max: 4 }),
  extraBurst: fc.integer({ min: 0, max: 40 }),
});

describe('GCRA core (in-memory store, fake clock)', () => {
  test('admitted tokens in every window of length w stay within burst + rate·w', async () => {
    await fc.assert(fc.asyncProperty(
      limitArb,
      fc.array(fc.record({
        gapUs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 2_000 }), fc.integer({ min: 0, max: 3_000_000 })),
        tokens: fc.integer({ min: 1, max: 8 }),
        mode: fc.constantFrom<AcquireMode>('RESERVE', 'TRY'),
        key: fc.constantFrom('a', 'b'),
      }), { minLength: 1, maxLength: 300, size: 'max' }),
      fc.integer({ min: 1, max: 2 ** 31 - 1 }),
      async (limit, arrivals, seed) => {
        // GIVEN a limiter and an arbitrary arrival sequence over two keys
        const burst = limit.shards + limit.extraBurst;
        const { clock, limiter } = limiterWith({ ratePerSecond: limit.ratePerSecond, burst, shards: limit.shards, maxWaitMs: 2_000 }, seed);
        const shardBurst = bucketParams(limit.ratePerSecond, burst, limit.shards).shardBurst;
        const admitted: Record<string, Admission[]> = { a: [], b: [] };

        // WHEN each arrival acquires
        for (const a of arrivals) {
          clock.now += a.gapUs;
          const tokens = Math.min(a.tokens, shardBurst);
          const r = await limiter.acquire({ key: a.key, tokens, mode: a.mode });
          if (r.admitted) {
            expect(r.atUs).toBeGreaterThanOrEqual(r.nowUs);
            expect(r.waitUs).toBeLessThanOrEqual(2_000_000);
            if (a.mode === 'TRY') expect(r.waitUs).toBe(0);
            admitted[a.key].push({ atUs: r.atUs, tokens });
          } else {
            expect(r.retryAfterUs).toBeGreaterThan(0);
          }
        }

        // THEN no window of any length holds more than burst + rate·w, per key
        for (const key of ['a', 'b']) {
          for (const w of [0, 1_000, 100_000, 1_000_000, 10_000_000]) {
            expect(windowViolations(admitted[key], limit.ratePerSecond, burst, w)).toBe(0);
          }
        }
      }), { numRuns: 300 });
  });

  // T is rounded up to a whole microsecond, which costs up to rate/1e6 of the rate: below 0.1 % for the
  // per-item rates a DynamoDB item can take (the construct warns above 700/s per shard).
  test('concurrent acquires with stale clocks, lookaheads and interleaved writes stay within the bound; RESERVE is never refused', async () => {
    await fc.assert(fc.asyncProperty(
      limitArb,
      fc.array(fc.record({
        clockStepUs: fc.integer({ min: 0, max: 30_000 }),
        delays: fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 8, maxLength: 8 }),
        mode: fc.constantFrom<AcquireMode>('RESERVE', 'TRY'),
        fresh: fc.boolean(),
        // a fresh container reserves this far ahead of its clock (its round-trip estimate)
        lookaheadUs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 200_000 })),
      }), { minLength: 2, maxLength: 60, size: 'max' }),
      async (limit, calls) => {
        // GIVEN a store whose every call yields a random number of turns, so writes of concurrent acquires
        // interleave and run long after the clock reading they were computed from
        const burst = limit.shards + limit.extraBurst;
        const config = { limiterName: 'c', ratePerSecond: limit.ratePerSecond, burst, shards: limit.shards, maxWaitMs: 3_600_000 };
        const clock = { now: 1_700_000_000_000_000 };
        const memory = new MemoryBucketStore();
        const shared = new Limiter(config, { store: memory, clockUs: () => clock.now, random: Math.random });
        const admitted: Admission[] = [];
        const refusedReservations: string[] = [];

        // WHEN the calls run concurrently, some on a shared container (warm cache), some on fresh ones
        await Promise.all(calls.map(async (c) => {
          let turn = 0;
          const pause = async () => {
            for (let i = 0; i < c.delays[turn++ % c.delays.length]; i++) await new Promise((r) => setImmediate(r));
          };
          const store = {
            takeBusy: async (...a: Parameters<MemoryBucketStore['takeBusy']>) => { await pause(); return memory.takeBusy(...a); },
            takeIdle: async (...a: Parameters<MemoryBucketStore['takeIdle']>) => { await pause(); return memory.takeIdle(...a); },
            rescale: async (...a: Parameters<MemoryBucketStore['rescale']>) => { await pause(); return memory.rescale(...a); },
            readBucket: async (pk: string) => { await pause(); return memory.readBucket(pk); },
            adapt: async (...a: Parameters<MemoryBucketStore['adapt']>) => { await pause(); return memory.adapt(...a); },
            readOverride: async (pk: string) => memory.readOverride(pk),
          };
          const limiter = c.fresh
            ? new Limiter(config, { store, clockUs: () => clock.now, random: Math.random, initialLookaheadUs: c.lookaheadUs })
            : shared;
          await pause();
          clock.now += c.clockStepUs;
          const r = await limiter.acquire({ key: 'k', tokens: 1, mode: c.mode });
          if (r.admitted) admitted.push({ atUs: r.atUs, tokens: 1 });
          else if (c.mode === 'RESERVE') refusedReservations.push(JSON.stringify(r));
        }));

        // THEN
        for (const w of [0, 1_000, 100_000, 1_000_000]) {
          expect(windowViolations(admitted, limit.ratePerSecond, burst, w)).toBe(0);
        }
        expect(refusedReservations).toEqual([]);
      }), { numRuns: 200 });
  });

  test('utilization under sustained overload is between 0.999·ideal and ideal + 1', async () => {
    await fc.assert(fc.asyncProperty(
      fc.double({ min: 0.5, max: 700, noNaN: true }),
      fc.integer({ min: 1, max: 50 }),
      fc.constantFrom<AcquireMode>('RESERVE', 'TRY'),
      async (rate, burst, mode) => {
        // GIVEN a caller that always wants more than the limit: it comes back as soon as it is told to
        const { clock, limiter } = limiterWith({ ratePerSecond: rate, burst, shards: 1, maxWaitMs: 0 });
        const start = clock.now;
        const durationUs = Math.ceil((3000 / rate) * 1e6); // ~3,000 tokens' worth of time
        let admittedTokens = 0;

        // WHEN it acquires for the whole duration
        while (clock.now <= start + durationUs) {
          const r = await limiter.acquire({ key: 'k', tokens: 1, mode });
          if (r.admitted) {
            admittedTokens++;
          } else {
            clock.now += r.retryAfterUs;
          }
        }

        // THEN it gets the ideal amount of tokens: burst + rate·elapsed, minus at most 0.1 %
        const ideal = burst + (rate * durationUs) / 1e6;
        expect(admittedTokens).toBeLessThanOrEqual(ideal + 1);
        expect(admittedTokens).toBeGreaterThanOrEqual(0.999 * ideal - 1e-9);
      }), { numRuns: 60 });
  });

  test('15 simultaneous callers with burst 5 admit exactly 5', async () => {
    for (const mode of ['TRY', 'RESERVE'] as const) {
      // GIVEN an idle bucket of burst 5 (RESERVE with no patience behaves as TRY)
      const { limiter } = limiterWith({ ratePerSecond: 1, burst: 5, shards: 1, maxWaitMs: 0 });
      // WHEN 15 callers arrive at the same instant
      const results = await Promise.all(Array.from({ length: 15 }, () => limiter.acquire({ key: 'k', tokens: 1, mode })));
      // THEN exactly 5 are admitted, with no wait
      expect(results.filter((r) => r.admitted)).toHaveLength(5);
      expect(results.filter((r) => r.admitted && r.waitUs > 0)).toHaveLength(0);
    }
  });

  test('RESERVE hands out consecutive slots T apart up to maxWait, then refuses', async () => {
    // GIVEN 10/s, burst 1, maxWait 1 s
    const { limiter } = limiterWith({ ratePerSecond: 10, burst: 1, shards: 1, maxWaitMs: 1000 });
    // WHEN 15 callers reserve at the same instant
    const results = [];
    for (let i = 0; i < 15; i++) results.push(await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' }));
    // THEN the first 11 get waits 0, 100, …, 1000 ms and the rest are refused
    const waits = results.filter((r) => r.admitted).map((r) => (r.admitted ? r.waitUs / 1000 : -1));
    expect(waits).toEqual([0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);
    expect(results.slice(11).every((r) => !r.admitted)).toBe(true);
  });

  test.each(['RESERVE', 'TRY'] as const)('%s never throws a slot away: an answer later than the estimate is used, one write, one token', async (mode) => {
    // GIVEN 10/s, burst 1 (T = 100 ms), no lookahead yet, and a store whose next write is answered 80 ms after it was made
    const clock = { now: 1_700_000_000_000_000 };
    const memory = new MemoryBucketStore();
    let slowWrites = 1;
    const slow = async <T>(write: () => Promise<T>) => {
      const r = await write();
      if (slowWrites-- > 0) clock.now += 80_000;
      return r;
    };
    const store = {
      takeBusy: (...a: Parameters<MemoryBucketStore['takeBusy']>) => slow(() => memory.takeBusy(...a)),
      takeIdle: (...a: Parameters<MemoryBucketStore['takeIdle']>) => slow(() => memory.takeIdle(...a)),
      rescale: (...a: Parameters<MemoryBucketStore['rescale']>) => memory.rescale(...a),
      readBucket: (pk: string) => memory.readBucket(pk),
      adapt: (...a: Parameters<MemoryBucketStore['adapt']>) => memory.adapt(...a),
      readOverride: (pk: string) => memory.readOverride(pk),
    };
    const limiter = new Limiter({ limiterName: 'late', ratePerSecond: 10, burst: 1, shards: 1, maxWaitMs: 60_000 },
      { store, clockUs: () => clock.now, random: () => 0, initialLookaheadUs: 0 });
    const start = clock.now;
    memory.items.set('late#bucket#k#0', { tat: start - 1_000_000 }); // idle, seen by nobody yet: the cold guess (busy) fails first

    // WHEN one caller acquires
    const r = await limiter.acquire({ key: 'k', tokens: 1, mode });

    // THEN it is admitted at its slot (the answer came 80 ms after it): no second slot, no second token
    expect(r).toMatchObject({ admitted: true, atUs: start });
    expect(memory.items.get('late#bucket#k#0')!.tat).toBe(start + 100_000);
  });

  test('reserving ahead by the measured round trip: with an 8 ms store the answer arrives before its slot', async () => {
    // GIVEN a store that takes 8 ms per call on the container's clock, and an idle bucket
    const clock = { now: 1_700_000_000_000_000 };
    const memory = new MemoryBucketStore();
    const rtt = async <T>(call: () => Promise<T>) => {
      clock.now += 4_000;
      const r = await call();
      clock.now += 4_000;
      return r;
    };
    const store = {
      takeBusy: (...a: Parameters<MemoryBucketStore['takeBusy']>) => rtt(() => memory.takeBusy(...a)),
      takeIdle: (...a: Parameters<MemoryBucketStore['takeIdle']>) => rtt(() => memory.takeIdle(...a)),
      rescale: (...a: Parameters<MemoryBucketStore['rescale']>) => rtt(() => memory.rescale(...a)),
      readBucket: (pk: string) => rtt(() => memory.readBucket(pk)),
      adapt: (...a: Parameters<MemoryBucketStore['adapt']>) => rtt(() => memory.adapt(...a)),
      readOverride: (pk: string) => rtt(() => memory.readOverride(pk)),
    };
    const limiter = new Limiter({ limiterName: 'rtt', ratePerSecond: 50, burst: 1, shards: 1, maxWaitMs: 60_000 },
      { store, clockUs: () => clock.now, random: () => 0, initialLookaheadUs: 20_000 });
    const lateness: number[] = [];
    let calls = 0;
    // WHEN a caller acquires every 100 ms (the bucket idle each time), 20 times
    for (let i = 0; i < 20; i++) {
      const r = await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
      if (!r.admitted) throw new Error('refused');
      calls += r.dynamoCalls;
      lateness.push(clock.now - r.atUs);
      clock.now += 100_000;
    }
    // THEN no answer came after its slot, and a warm container spends one write per admission (plus the
    // override read, cached 10 s)
    expect(lateness.filter((l) => l > 0)).toEqual([]);
    expect(limiter.roundTrip.lookaheadUs()).toBeGreaterThanOrEqual(8_000);
    expect(calls).toBeLessThanOrEqual(20 + 1 + 1);
  });

  test('a live limit change: the stored debt is re-counted, so 100/s → 1/s admits no burst of 99 more', async () => {
    // GIVEN 100/s, burst 100, 100 admissions at once, overrides read on every call
    const clock = { now: 1_700_000_000_000_000 };
    const store = new MemoryBucketStore();
    const limiter = new Limiter({ limiterName: 'chg', ratePerSecond: 100, burst: 100, shards: 1, maxWaitMs: 0 },
      { store, clockUs: () => clock.now, random: () => 0, overrideTtlMs: 0, initialLookaheadUs: 0 });
    let admitted = 0;
    for (let i = 0; i < 100; i++) if ((await limiter.acquire({ key: 'k', tokens: 1, mode: 'TRY' })).admitted) admitted++;
    expect(admitted).toBe(100);
    // WHEN an operator lowers the key to 1/s (same burst) and callers keep coming for 10 ms
    store.items.set('chg#config#k', { ratePerSecond: 1, burst: 100 });
    for (let i = 0; i < 100; i++) {
      clock.now += 100;
      if ((await limiter.acquire({ key: 'k', tokens: 1, mode: 'TRY' })).admitted) admitted++;
    }
    // THEN nothing more: the 100 tokens owed at 100/s are owed at 1/s too (before: 199 in 10 ms)
    expect(admitted).toBe(100);
    expect(store.items.get('chg#bucket#k#0')).toMatchObject({ iv: 1_000_000, v: 1 });
  });

  test('an override with until: in force until then, the deployed limit after it, with no second write', async () => {
    // GIVEN 1/s burst 1 deployed, an override of 100/s burst 10 until t0 + 2 s (read at most every 10 s)
    const clock = { now: 1_700_000_000_000_000 };
    const store = new MemoryBucketStore();
    const limiter = new Limiter({ limiterName: 'exp', ratePerSecond: 1, burst: 1, shards: 1, maxWaitMs: 0 },
      { store, clockUs: () => clock.now, random: () => 0, initialLookaheadUs: 0 });
    store.items.set('exp#config#k', { ratePerSecond: 100, burst: 10, until: new Date(clock.now / 1000 + 2_000).toISOString() });
    const admittedIn = async (ms: number) => {
      let n = 0;
      for (let t = 0; t < ms; t += 10) {
        clock.now += 10_000;
        if ((await limiter.acquire({ key: 'k', tokens: 1, mode: 'TRY' })).admitted) n++;
      }
      return n;
    };
    // THEN 100/s for the first second, then, past until (the cache ends with it), 1/s again
    expect(await admittedIn(1_000)).toBeGreaterThanOrEqual(99);
    await admittedIn(1_000);
    expect(await admittedIn(3_000)).toBeLessThanOrEqual(3 + 1);
    // AND an until that is not a time: ignored, the deployed limit applies
    store.items.set('exp#config#j', { ratePerSecond: 100, burst: 10, until: 'tomorrow' });
    let j = 0;
    for (let i = 0; i < 50; i++) {
      clock.now += 10_000;
      if ((await limiter.acquire({ key: 'j', tokens: 1, mode: 'TRY' })).admitted) j++;
    }
    expect(j).toBeLessThanOrEqual(1);
  });

  test('a raised limit does not squeeze new slots between reservations already handed out', async () => {
    // GIVEN 1/s, burst 1, and 100 reservations: slots t0 … t0 + 99 s
    const clock = { now: 1_700_000_000_000_000 };
    const store = new MemoryBucketStore();
    const limiter = new Limiter({ limiterName: 'up', ratePerSecond: 1, burst: 1, shards: 1, maxWaitMs: 300_000 },
      { store, clockUs: () => clock.now, random: () => 0, overrideTtlMs: 0, initialLookaheadUs: 0 });
    const slots: number[] = [];
    for (let i = 0; i < 100; i++) {
      const r = await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
      if (r.admitted) slots.push(r.atUs);
    }
    // WHEN the key is raised to 2/s and 20 more reserve
    store.items.set('up#config#k', { ratePerSecond: 2, burst: 1 });
    const raised: number[] = [];
    for (let i = 0; i < 20; i++) {
      const r = await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
      if (r.admitted) raised.push(r.atUs);
    }
    // THEN the new slots follow the old ones at the new rate (before: they started at t0 + 49.5 s, among them)
    expect(Math.min(...raised)).toBeGreaterThan(Math.max(...slots));
    const all = [...slots, ...raised].map((atUs) => ({ atUs, tokens: 1 }));
    for (const w of [0, 1_000_000, 10_000_000, 50_000_000]) expect(windowViolations(all, 2, 1, w)).toBe(0);
  });

  test('containers holding different limits while an override changes: the one that meets a foreign limit re-reads it', async () => {
    // GIVEN two containers that cached the deployed 100/s, then an override of 25/s
    const clock = { now: 1_700_000_000_000_000 };
    const store = new MemoryBucketStore();
    let rescales = 0;
    const rescale = store.rescale.bind(store);
    store.rescale = (...a) => { rescales++; return rescale(...a); };
    const config = { limiterName: 'mix', ratePerSecond: 100, burst: 10, shards: 1, maxWaitMs: 3_600_000 };
    const [a, b] = [0, 1].map(() => new Limiter(config, { store, clockUs: () => clock.now, random: () => 0, initialLookaheadUs: 0 }));
    await a.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
    clock.now += 1_500_000;
    await b.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
    clock.now += 500_000;
    store.items.set('mix#config#k', { ratePerSecond: 25, burst: 10 });
    // WHEN a's cache has expired (it reads 25/s) and b's has not (it holds 100/s), and both keep reserving
    clock.now += 8_200_000;
    await a.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
    const outcomes = [];
    for (let i = 0; i < 40; i++) outcomes.push(await (i % 2 ? a : b).acquire({ key: 'k', tokens: 1, mode: 'RESERVE' }));
    // THEN b adopts the new limit on its first conflict: at most one re-count in all (not one per turn), no refusal, and
    // the item stays counted at 25/s
    expect(outcomes.filter((o) => !o.admitted)).toEqual([]);
    expect(rescales).toBeLessThanOrEqual(1);
    expect(store.items.get('mix#bucket#k#0')).toMatchObject({ iv: 40_000 });
  });

  test('a lowered limit reverted a second later leaves the bucket where it was', async () => {
    // GIVEN 100/s burst 10 and 1,000 reservations (10 at t0, then every 10 ms: the last at t0 + 9.90 s)
    const clock = { now: 1_700_000_000_000_000 };
    const t0 = clock.now;
    const store = new MemoryBucketStore();
    const limiter = new Limiter({ limiterName: 'rev', ratePerSecond: 100, burst: 10, shards: 1, maxWaitMs: 60_000 },
      { store, clockUs: () => clock.now, random: () => 0, overrideTtlMs: 0, initialLookaheadUs: 0 });
    for (let i = 0; i < 1000; i++) await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
    // WHEN an override of 1/s is set at t0 + 1 s, then removed at t0 + 2 s
    clock.now = t0 + 1_000_000;
    store.items.set('rev#config#k', { ratePerSecond: 1, burst: 10 });
    const lowered = await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
    clock.now = t0 + 2_000_000;
    store.items.delete('rev#config#k');
    const after = await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
    // THEN under 1/s the next slot followed the last reservation by a second, and after the revert the bucket is
    // back at 100/s behind it (before: the 1/s debt stood, refusing for 14 minutes)
    expect(lowered).toMatchObject({ admitted: true });
    expect(lowered.admitted && (lowered.atUs - t0) / 1e6).toBeCloseTo(10.90, 2);
    expect(after).toMatchObject({ admitted: true });
    expect(after.admitted && (after.atUs - t0) / 1e6).toBeLessThan(11);
  });

  test('containers of two deployments (100/s and 50/s) taking in turn do not inflate the debt', async () => {
    const clock = { now: 1_700_000_000_000_000 };
    const store = new MemoryBucketStore();
    const make = (rate: number) => new Limiter({ limiterName: 'dep', ratePerSecond: rate, burst: 10, shards: 1, maxWaitMs: 60_000 },
      { store, clockUs: () => clock.now, random: () => 0, initialLookaheadUs: 0 });
    const [fast, slow] = [make(100), make(50)];
    let refused = 0;
    let maxAheadS = 0;
    // 80/s offered for 2 s, alternating containers
    for (let i = 0; i < 160; i++) {
      clock.now += 12_500;
      const r = await (i % 2 ? fast : slow).acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
      if (!r.admitted) refused++;
      maxAheadS = Math.max(maxAheadS, ((store.items.get('dep#bucket#k#0')!.tat as number) - clock.now) / 1e6);
    }
    // at most 2 s of demand at 50/s is owed: the debt stays within a few seconds (before: 405 s, then refusals)
    expect(refused).toBe(0);
    expect(maxAheadS).toBeLessThan(2);
  });

  test('a warm container whose cache says idle still refuses an item not written in this format', async () => {
    const { clock, store, limiter } = limiterWith({ ratePerSecond: 10, burst: 1, shards: 1, maxWaitMs: 1000 });
    await limiter.acquire({ key: 'k', tokens: 1, mode: 'TRY' });
    clock.now += 10_000_000;
    for (const bad of [{ tat: 1, iv: -5 }, { tat: -7 }, { tat: 2.5 }, { iv: -1 }]) {
      store.items.set('prop#bucket#k#0', bad);
      await expect(limiter.acquire({ key: 'k', tokens: 1, mode: 'TRY' })).rejects.toMatchObject({ name: 'LimiterUnavailable' });
      expect(store.items.get('prop#bucket#k#0')).toEqual(bad);
    }
  });

  test('random limit changes mid-stream: every window stays within the larger of the limits in force', async () => {
    const limitOf = fc.record({
      ratePerSecond: fc.oneof(fc.double({ min: 0.5, max: 2000, noNaN: true }), fc.integer({ min: 1, max: 500 })),
      burst: fc.integer({ min: 1, max: 40 }),
    });
    await fc.assert(fc.asyncProperty(
      limitOf,
      limitOf,
      fc.array(fc.record({
        gapUs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 5_000 }), fc.integer({ min: 0, max: 2_000_000 })),
        mode: fc.constantFrom<AcquireMode>('RESERVE', 'TRY'),
        change: fc.oneof({ arbitrary: fc.constant('none' as const), weight: 8 }, { arbitrary: fc.constant('clear' as const), weight: 1 }, { arbitrary: limitOf, weight: 2 }),
        container: fc.integer({ min: 0, max: 2 }),
        // simultaneous callers: bursts are where a limit change could let too many through
        count: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 60 })),
      }), { minLength: 1, maxLength: 120, size: 'max' }),
      async (deployed, firstChange, rest) => {
        // GIVEN three containers of one limiter, each with its own caches, overrides read on every call; the run
        // opens with the bucket drained at once and the limit changed right after, then goes on at random
        const opening = [
          { gapUs: 0, mode: 'TRY' as const, change: 'none' as const, container: 0, count: deployed.burst },
          { gapUs: 0, mode: 'TRY' as const, change: firstChange, container: 1, count: 60 },
        ];
        const arrivals = [...opening, ...rest];
        const clock = { now: 1_700_000_000_000_000 };
        const store = new MemoryBucketStore();
        const config = { limiterName: 'live', ratePerSecond: deployed.ratePerSecond, burst: deployed.burst, shards: 1, maxWaitMs: 2_000 };
        const containers = [0, 1, 2].map(() => new Limiter(config, {
          store, clockUs: () => clock.now, random: () => 0, overrideTtlMs: 0, initialLookaheadUs: 0,
        }));
        const inForce = [deployed];
        const admitted: Admission[] = [];
        // WHEN arrivals come, and now and then the limit changes (an override set, or cleared)
        for (const a of arrivals) {
          clock.now += a.gapUs;
          if (a.change === 'clear') {
            store.items.delete('live#config#k');
          } else if (a.change !== 'none') {
            store.items.set('live#config#k', { ...a.change });
            inForce.push(a.change);
          }
          for (let i = 0; i < a.count; i++) {
            const r = await containers[(a.container + i) % 3].acquire({ key: 'k', tokens: 1, mode: a.mode });
            if (r.admitted) admitted.push({ atUs: r.atUs, tokens: 1 });
          }
        }
        // THEN in any window, no more than the larger of the limits: max burst + max rate × w
        const rate = Math.max(...inForce.map((l) => l.ratePerSecond));
        const burst = Math.max(...inForce.map((l) => l.burst));
        expect([Number.isFinite(rate), Number.isFinite(burst), admitted.length > 0]).toEqual([true, true, true]);
        for (const w of [0, 1_000, 100_000, 1_000_000, 10_000_000]) {
          expect(windowViolations(admitted, rate, burst, w)).toBe(0);
        }
      }), { numRuns: 300 });
  });

  test.each([
    ['an unknown format version', { tat: 1, v: 2 }, /bucket item fmt#bucket#k#0 has format version v=2; this handler reads v=1/],
    ['tat stored as a string', { tat: '1700000000000000' }, /bucket item fmt#bucket#k#0: attribute tat is "1700000000000000", expected a whole number of microseconds/],
    ['a negative interval', { tat: 1, iv: -5 }, /attribute iv is -5/],
  ])('a bucket item with %s fails closed with LimiterUnavailable naming it, in both modes', async (_name, item, message) => {
    for (const mode of ['TRY', 'RESERVE'] as const) {
      const { store, limiter } = limiterWith({ ratePerSecond: 10, burst: 1, shards: 1, maxWaitMs: 1000 });
      store.items.set('fmt#bucket#k#0'.replace('fmt', 'prop'), item);
      const err = await limiter.acquire({ key: 'k', tokens: 1, mode }).then(() => undefined, (e) => e);
      expect(err).toMatchObject({ name: 'LimiterUnavailable', message: expect.stringMatching(new RegExp(message.source.replace('fmt', 'prop'))) });
    }
  });

  test('a bucket item written before versions (no iv, no v) is given them, its debt unchanged', async () => {
    // GIVEN 10/s burst 1 and a legacy item 300 ms in the future (3 tokens owed)
    const { clock, store, limiter } = limiterWith({ ratePerSecond: 10, burst: 1, shards: 1, maxWaitMs: 60_000 });
    store.items.set('prop#bucket#k#0', { tat: clock.now + 300_000 });
    // WHEN one reserves
    const r = await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
    // THEN its slot follows the owed tokens, and the item now carries its interval and version
    expect(r).toMatchObject({ admitted: true, atUs: clock.now + 300_000 });
    expect(store.items.get('prop#bucket#k#0')).toMatchObject({ tat: clock.now + 400_000, iv: 100_000, v: 1 });
  });

  test('an override item of another format version fails closed', async () => {
    const { store, limiter } = limiterWith({ ratePerSecond: 10, burst: 1, shards: 1, maxWaitMs: 1000 });
    store.items.set('prop#config#k', { ratePerSecond: 1000, burst: 1000, v: 7 });
    await expect(limiter.acquire({ key: 'k', tokens: 1, mode: 'TRY' })).rejects.toMatchObject({ name: 'LimiterUnavailable', message: expect.stringContaining('override item prop#config#k has format version v=7') });
  });

  test('an override without burst keeps the deployed burst: requests valid at synth stay valid', async () => {
    const { store, limiter } = limiterWith({ ratePerSecond: 10, burst: 5, shards: 1, maxWaitMs: 1000 });
    store.items.set('prop#config#k', { ratePerSecond: 2 });
    await expect(limiter.acquire({ key: 'k', tokens: 5, mode: 'TRY' })).resolves.toMatchObject({ admitted: true });
    // an override with a smaller burst than a request needs: retryable LimiterUnavailable, not InvalidAcquireRequest
    store.items.set('prop#config#j', { ratePerSecond: 2, burst: 2 });
    await expect(limiter.acquire({ key: 'j', tokens: 5, mode: 'TRY' })).rejects.toMatchObject({ name: 'LimiterUnavailable', message: expect.stringContaining('raise the override\'s burst or clear it') });
  });

  test('one write per admission when the container guesses the branch right', async () => {
    // GIVEN a busy key
    const { clock, store, limiter } = limiterWith({ ratePerSecond: 100, burst: 10, shards: 1, maxWaitMs: 60_000 });
    await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
    store.calls = 0;
    // WHEN 100 reservations follow
    for (let i = 0; i < 100; i++) {
      clock.now += 1000;
      await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
    }
    // THEN each took exactly one DynamoDB call
    expect(store.calls).toBe(100);
  });

  test('a run-time override changes the key rate within the cache lifetime', async () => {
    // GIVEN a 1/s limiter and an override item raising key "vip" to 100/s, burst 100
    const { clock, store, limiter } = limiterWith({ ratePerSecond: 1, burst: 1, shards: 1, maxWaitMs: 0 });
    store.items.set('prop#config#vip', { pk: 'prop#config#vip', ratePerSecond: 100, burst: 100 });
    const burstOf = async (key: string) => {
      let n = 0;
      while ((await limiter.acquire({ key, tokens: 1, mode: 'TRY' })).admitted) n++;
      return n;
    };
    // THEN vip gets 100 at once, others 1
    expect(await burstOf('vip')).toBe(100);
    expect(await burstOf('other')).toBe(1);
    // WHEN the override is removed, it still applies until the cache (≤ 10 s) expires
    store.items.delete('prop#config#vip');
    clock.now += 5_000_000;
    expect(await burstOf('vip')).toBeGreaterThan(1);
    clock.now += 10_000_001;
    expect(await burstOf('vip')).toBe(1);
  });

  test.each([
    ['a rate that is not a number', { ratePerSecond: 'lots' }],
    ['an absurdly small rate', { ratePerSecond: 1e-121 }],
    ['a rate above a microsecond per token', { ratePerSecond: 5e6 }],
    ['a fractional burst', { ratePerSecond: 1, burst: 2.5 }],
  ])('an override with %s is ignored (logged), never admits more', async (_name, override) => {
    const { store, limiter } = limiterWith({ ratePerSecond: 1, burst: 2, shards: 1, maxWaitMs: 0 });
    const stderr = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    store.items.set('prop#config#k', { pk: 'prop#config#k', ...override });
    let n = 0;
    while ((await limiter.acquire({ key: 'k', tokens: 1, mode: 'TRY' })).admitted) n++;
    expect(n).toBe(2);
    expect(stderr).toHaveBeenCalledWith(expect.stringContaining('ignoring override'));
    stderr.mockRestore();
  });

  test('tokens above the burst per shard are refused as invalid', async () => {
    const { limiter } = limiterWith({ ratePerSecond: 10, burst: 8, shards: 2, maxWaitMs: 0 });
    await expect(limiter.acquire({ key: 'k', tokens: 5, mode: 'TRY' })).rejects.toMatchObject({ name: 'InvalidAcquireRequest' });
    await expect(limiter.acquire({ key: 'k', tokens: 4, mode: 'TRY' })).resolves.toMatchObject({ admitted: true });
  });

  test('maxInWindow helper counts a closed window', () => {
    expect(maxInWindow([{ atUs: 0, tokens: 1 }, { atUs: 10, tokens: 2 }, { atUs: 11, tokens: 1 }], 10)).toBe(3);
    expect(windowViolations([{ atUs: 0, tokens: 2 }, { atUs: 5, tokens: 1 }], 0, 2, 10)).toBe(1);
  });
});
