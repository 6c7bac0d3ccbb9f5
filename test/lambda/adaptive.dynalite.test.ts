import { GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import type { AdaptiveConfig } from '../../lambda/rate-limiter/adaptive';
import { DynamoDbBucketStore } from '../../lambda/rate-limiter/dynamodb-store';
import { bucketItemKey, Limiter } from '../../lambda/rate-limiter/limiter';
import { type Admission, nowUs, windowViolations } from '../../local/timing';
import { dynaliteTable, slowClient } from '../support/dynalite';

// The adaptive limit and the priority classes through the real DynamoDB expressions (dynalite), with DynamoDB's
// latency from Lambda put back in (5–20 ms a call). Bounds are asserted at the slots the limiter hands out.

const ADAPTIVE: AdaptiveConfig = { minRatePerSecond: 2, decreaseFactor: 0.5, increasePerSecond: 0.001, maxReservationMs: 2000 };

describe('adaptive limiter and priorities (dynalite, 5–20 ms a call)', () => {
  const db = dynaliteTable('adaptive');
  const container = (limiterName: string, extra: Record<string, unknown> = {}) => new Limiter({
    limiterName, ratePerSecond: 40, burst: 4, shards: 2, maxWaitMs: 60_000, adaptive: ADAPTIVE, ...extra,
  }, { store: new DynamoDbBucketStore(slowClient(db.client()).client, 'adaptive'), clockUs: nowUs, random: Math.random });

  test('a decrease from one container holds every container to the lower rate; the item records it on every shard', async () => {
    // GIVEN 4 containers that have taken at 40/s
    const containers = Array.from({ length: 4 }, () => container('api'));
    await Promise.all(containers.map((c) => c.acquire({ key: 'k', tokens: 1, mode: 'RESERVE' })));
    // WHEN one container gets a throttling signal (and a second one 100 ms later: the same congestion)
    const d = await containers[0].decrease('k');
    const again = await containers[1].decrease('k');
    // THEN 40/s → 20/s once, on both shards' items
    expect(d).toMatchObject({ decreased: true, ratePerSecond: 20 });
    expect(again.decreased).toBe(false);
    for (const shard of [0, 1]) {
      const item = (await db.client().send(new GetItemCommand({ TableName: 'adaptive', Key: { pk: { S: bucketItemKey('api', 'k', shard) } } }))).Item!;
      expect(Number(item.iv.N)).toBe(100_000); // 10/s per shard
      expect(Number(item.ad.N)).toBe(Number(item.ac.N));
    }
    // AND 60 callers from the 4 containers (each retries a refusal after its retry-after) are admitted at 20/s
    const admitted: Admission[] = [];
    const rates = new Set<number>();
    const caller = async (i: number) => {
      for (;;) {
        const out = await containers[i % 4].acquire({ key: 'k', tokens: 1, mode: 'RESERVE' });
        if (out.limitPerSecond !== undefined) rates.add(out.limitPerSecond);
        if (out.admitted) return admitted.push({ atUs: out.atUs, tokens: 1 });
        await new Promise((r) => setTimeout(r, out.retryAfterUs / 1000));
      }
    };
    await Promise.all(Array.from({ length: 60 }, (_, i) => caller(i)));
    // (20/s, and after a second without a signal the 0.001/s rise)
    for (const r of rates) expect(r).toBeGreaterThanOrEqual(20);
    for (const r of rates) expect(r).toBeLessThan(20.01);
    for (const w of [100_000, 1_000_000, 2_000_000]) expect(windowViolations(admitted, 20, 4, w)).toBe(0);
  });

  test('a decrease before any take creates the item at the lower rate; an item of the format before versions is given one and adapts', async () => {
    const c = container('fresh');
    // GIVEN no item: the signal still lowers the rate (40/s → 20/s), and the next take runs at it
    expect(await c.decrease('new')).toMatchObject({ decreased: true, ratePerSecond: 20 });
    expect((await container('fresh').acquire({ key: 'new', tokens: 1, mode: 'RESERVE' })).limitPerSecond).toBeCloseTo(20, 1);
    // GIVEN an item written before items had a format (a tat, no iv, no v)
    for (const shard of [0, 1]) {
      await db.client().send(new PutItemCommand({ TableName: 'adaptive', Item: { pk: { S: bucketItemKey('fresh', 'old', shard) }, tat: { N: String(nowUs() - 1_000_000) } } }));
    }
    // THEN a take gives it the format (at the ceiling) and is admitted, and a signal lowers it
    expect(await c.acquire({ key: 'old', tokens: 1, mode: 'RESERVE' })).toMatchObject({ admitted: true, limitPerSecond: 40 });
    expect(await c.acquire({ key: 'old', tokens: 1, mode: 'RESERVE' })).toMatchObject({ admitted: true });
    expect((await c.decrease('old')).decreased).toBe(true);
  });

  test('a LOW caller never reserves and leaves room: a HIGH caller after 20 LOW ones is admitted at once', async () => {
    const c = container('prio', { adaptive: undefined, shards: 1, burst: 10, ratePerSecond: 10 });
    // (a warm container: its slots are at the time its answers are expected back, a measured round trip ahead)
    for (let i = 0; i < 5; i++) await c.acquire({ key: 'warm', tokens: 1, mode: 'RESERVE' });
    const low = await Promise.all(Array.from({ length: 20 }, () => c.acquire({ key: 'k', tokens: 1, mode: 'RESERVE', priority: 'LOW' })));
    const admittedLow = low.filter((o) => o.admitted);
    // LOW fills 60 % of the burst (6 tokens, + the few the rate adds while the calls run), none with a wait beyond its
    // answer's round trip
    expect(admittedLow.length).toBeGreaterThanOrEqual(6);
    expect(admittedLow.length).toBeLessThanOrEqual(8);
    const lookahead = c.roundTrip.lookaheadUs();
    for (const o of admittedLow) expect(o.admitted && o.waitUs).toBeLessThanOrEqual(lookahead);
    const before = c.roundTrip.lookaheadUs();
    const high = await c.acquire({ key: 'k', tokens: 1, mode: 'RESERVE', priority: 'HIGH' });
    expect(high.admitted).toBe(true);
    expect(high.admitted && high.waitUs).toBeLessThanOrEqual(before);
  });
});
