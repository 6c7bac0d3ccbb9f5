import { GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { type LocalDynamoDb, type LocalDynamoDbOptions, startDynalite } from '../../local/dynalite';
import { type Admission, windowViolations } from '../../local/timing';
import { LimiterMetricNames, METRIC_NAMESPACE } from '../../src/private/contract';
import { loadAcquireHandler, nowUs, sleep } from '../support/handler';

const RATE = 50;
const BURST = 10;

/** The acquire handler's behaviour tests, run against one flavour of local DynamoDB. */
export function acquireHandlerSuite(emulator: string, options: LocalDynamoDbOptions) {
  describe(`acquire handler against ${emulator} (real conditional writes, real clock)`, () => {
    let db: LocalDynamoDb;
    let handler: (event: unknown) => Promise<any>;
    let stdout: jest.SpyInstance;
    const emfLines: any[] = [];

    beforeAll(async () => {
      db = await startDynalite(options);
      await db.createTable('limits');
      handler = loadAcquireHandler({
        AWS_ENDPOINT_URL_DYNAMODB: db.endpoint,
        TABLE_NAME: 'limits',
        LIMITER_NAME: 'test',
        RATE_PER_SECOND: String(RATE),
        BURST: String(BURST),
        SHARDS: '1',
        MAX_WAIT_MS: '60000',
      });
      stdout = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: any) => {
        for (const line of String(chunk).split('\n').filter(Boolean)) emfLines.push(JSON.parse(line));
        return true;
      });
    });

    afterAll(async () => {
      stdout.mockRestore();
      await db.stop();
    });

    test.each([
      ['100 concurrent callers on one key', 100, ['a']],
      ['40 concurrent callers on two keys', 40, ['b', 'c']],
    ])('TRY: %s for 3 s stay within burst + rate·w per key', async (_name, callers, keys) => {
    // GIVEN callers spread over the keys, retrying as soon as they are told
      const admitted: Record<string, Admission[]> = Object.fromEntries(keys.map((k) => [k, []]));
      const end = nowUs() + 3_000_000;
      let denials = 0;
      const unexpected: string[] = [];
      const caller = async (key: string) => {
        while (nowUs() < end) {
          try {
            const r = await handler({ key, mode: 'TRY' });
            // TRY reserves only as far ahead as the answer takes to come back (the round-trip estimate, at most 2 s)
            if (r.waitSeconds > 2 || r.waitMs > 2000) unexpected.push(`TRY admission with a wait beyond the lookahead: ${JSON.stringify(r)}`);
            admitted[key].push({ atUs: r.notBeforeUs, tokens: 1 });
          } catch (err: any) {
            if (err.name !== 'RateLimitExceeded') {
              unexpected.push(`${err.name}: ${err.message}`);
              return;
            }
            denials++;
            const retryAfterMs = Number(/retry after (\d+) ms/.exec(err.message)![1]);
            await sleep(retryAfterMs + Math.random() * 5);
          }
        }
      };
      // WHEN
      await Promise.all(Array.from({ length: callers }, (_, i) => caller(keys[i % keys.length])));
      expect(unexpected).toEqual([]);

      // THEN no window of 0.1 s, 1 s or the whole run exceeds the bound, for either key
      for (const key of keys) {
        for (const w of [0, 100_000, 1_000_000, 3_000_000]) {
          expect(windowViolations(admitted[key], RATE, BURST, w)).toBe(0);
        }
        // and the limit is used: at least the initial burst (utilization depends on this machine's load, so the
        // bench measures it, not this test)
        expect(admitted[key].length).toBeGreaterThanOrEqual(BURST);
      }
      expect(denials).toBeGreaterThan(0);
    });

    test('RESERVE: 100 concurrent callers for 3 s: reservations within the bound, never started early', async () => {
    // GIVEN 100 callers that reserve, then wait out their reservation, then reserve again
      const admitted: Admission[] = [];
      const early: string[] = [];
      const end = nowUs() + 3_000_000;
      const caller = async () => {
        while (nowUs() < end) {
          const r = await handler({ key: 'reserve', mode: 'RESERVE' });
          const returnedAt = nowUs();
          // The sub-second part was slept in the handler; only whole seconds remain for a Wait state.
          if (!Number.isInteger(r.waitSeconds) || returnedAt + r.waitSeconds * 1e6 < r.notBeforeUs) {
            early.push(JSON.stringify({ returnedAt, ...r }));
          }
          admitted.push({ atUs: r.notBeforeUs, tokens: 1 });
          await sleep(r.waitSeconds * 1000);
        }
      };
      // WHEN
      const settled = await Promise.allSettled(Array.from({ length: 100 }, caller));

      expect(settled.filter((x) => x.status === 'rejected')).toEqual([]);
      expect(early).toEqual([]);

      // THEN
      for (const w of [0, 100_000, 1_000_000, 3_000_000]) {
        expect(windowViolations(admitted, RATE, BURST, w)).toBe(0);
      }
      // 100 callers reserved ahead of a 50/s limit: some waits cross whole seconds
      expect(admitted.length).toBeGreaterThanOrEqual(100);
    });

    test('tokens > 1 take several slots; the input is echoed back', async () => {
      // A key refilling at one token per 100 s, so nothing refills between the two calls.
      await db.client.send(new PutItemCommand({
        TableName: 'limits',
        Item: { pk: { S: 'test#config#multi' }, ratePerSecond: { N: '0.01' }, burst: { N: '10' } },
      }));
      const r = await handler({ key: 'multi', tokens: 5, mode: 'TRY', input: { orderId: 7 } });
      expect(r).toMatchObject({ admitted: true, tokens: 5, input: { orderId: 7 } });
      await expect(handler({ key: 'multi', tokens: 6, mode: 'TRY' })).rejects.toMatchObject({ name: 'RateLimitExceeded' });
    });

    test('a batch takes tokens × count (count = its item count)', async () => {
      const r = await handler({ key: 'batch', tokens: 2, count: 3, mode: 'TRY' });
      expect(r).toMatchObject({ admitted: true, tokens: 6 });
    });

    test('a run-time override in the table changes one key\'s limit', async () => {
    // GIVEN an override giving key "vip" a burst of 30
      await db.client.send(new PutItemCommand({
        TableName: 'limits',
        Item: { pk: { S: 'test#config#vip' }, ratePerSecond: { N: '1' }, burst: { N: '30' } },
      }));
      // WHEN vip takes 30 at once
      const r = await handler({ key: 'vip', tokens: 30, mode: 'TRY' });
      // THEN
      expect(r.admitted).toBe(true);
      await expect(handler({ key: 'other', tokens: 30, mode: 'TRY' })).rejects.toMatchObject({ name: 'InvalidAcquireRequest' });
    });

    test.each([
      ['null', null],
      ['a string', 'acquire'],
      ['an array', [1]],
      ['tokens 0', { tokens: 0 }],
      ['tokens -1', { tokens: -1 }],
      ['tokens 1.5', { tokens: 1.5 }],
      ['tokens "2"', { tokens: '2' }],
      ['tokens above burst', { tokens: BURST + 1 }],
      ['an unknown mode', { mode: 'FAST' }],
      ['a lowercase mode', { mode: 'try' }],
      ['an empty key', { key: '' }],
      ['an object key', { key: { a: 1 } }],
      ['count 0', { count: 0 }],
      ['count 1.5', { count: 1.5 }],
      ['tokens × count above burst', { tokens: 1, count: BURST + 1 }],
    ])('malformed event (%s) is InvalidAcquireRequest and admits nothing', async (_name, event) => {
      await expect(handler(event)).rejects.toMatchObject({ name: 'InvalidAcquireRequest' });
      const item = await db.client.send(new GetItemCommand({ TableName: 'limits', Key: { pk: { S: 'test#bucket#default#0' } }, ConsistentRead: true }));
      expect(item.Item).toBeUndefined();
    });

    test('every call logs one EMF line with the shared metric names', () => {
      const line = emfLines.find((l) => l.Admitted === 1);
      expect(line._aws.CloudWatchMetrics[0].Namespace).toBe(METRIC_NAMESPACE);
      expect(line._aws.CloudWatchMetrics[0].Dimensions).toEqual([['LimiterName']]);
      expect(line.LimiterName).toBe('test');
      const names = line._aws.CloudWatchMetrics[0].Metrics.map((m: any) => m.Name);
      // every metric but the adaptive limiters' signals (test/lambda/adaptive-handler.test.ts)
      const adaptiveOnly: string[] = [LimiterMetricNames.THROTTLE_SIGNALS, LimiterMetricNames.RATE_DECREASES, LimiterMetricNames.LATE_SLOTS];
      expect(names).toEqual(expect.arrayContaining(Object.values(LimiterMetricNames).filter((n) => !adaptiveOnly.includes(n))));
      for (const n of names) expect(typeof line[n]).toBe('number');
      // the rate in force also by limiter and key (LimitInForce: the deployed rate here, no override)
      expect(line._aws.CloudWatchMetrics[1]).toEqual({ Namespace: METRIC_NAMESPACE, Dimensions: [['LimiterName', 'Key']], Metrics: [{ Name: 'LimitInForce', Unit: 'Count/Second' }] });
      expect(line.LimitInForce).toBeGreaterThan(0);
      expect(typeof line.Key).toBe('string');
      expect(emfLines.some((l) => l.Rejected === 1)).toBe(true);
      expect(emfLines.some((l) => l.Delayed === 1 && l.WaitTime > 0)).toBe(true);
    });

    test.each([
      ['tat stored as a string', { tat: { S: '1700000000000000' } }, /bucket item test#bucket#bad1#0: attribute tat is "1700000000000000"/],
      ['an unknown format version', { tat: { N: '1' }, v: { N: '9' } }, /bucket item test#bucket#bad2#0 has format version v=9/],
    ])('a bucket item with %s fails closed (LimiterUnavailable naming it), never an endless RateLimitExceeded', async (_name, attrs, message) => {
      const key = (message.source.match(/bucket#(bad\d)#/) ?? [])[1]!;
      await db.client.send(new PutItemCommand({ TableName: 'limits', Item: { pk: { S: `test#bucket#${key}#0` }, ...attrs } }));
      for (const mode of ['TRY', 'RESERVE']) {
        await expect(handler({ key, mode })).rejects.toMatchObject({ name: 'LimiterUnavailable', message: expect.stringMatching(message) });
      }
    });

    test('every written bucket item carries its format version and interval', async () => {
      await handler({ key: 'versioned', mode: 'TRY' });
      const item = await db.client.send(new GetItemCommand({ TableName: 'limits', Key: { pk: { S: 'test#bucket#versioned#0' } }, ConsistentRead: true }));
      expect(item.Item).toMatchObject({ v: { N: '1' }, iv: { N: String(1e6 / RATE) } });
    });

    test('a stopped DynamoDB is LimiterUnavailable, never an admission', async () => {
    // GIVEN the emulator is gone
      await db.stop();
      // WHEN / THEN
      for (const mode of ['TRY', 'RESERVE']) {
        await expect(handler({ key: 'down', mode })).rejects.toMatchObject({ name: 'LimiterUnavailable' });
      }
      expect(emfLines.some((l) => l.Unavailable === 1)).toBe(true);
    });
  });
}
