import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { startDynalite } from '../local/dynalite';
import { DynamoDbBucketStore } from '../lambda/rate-limiter/dynamodb-store';
import { Limiter } from '../lambda/rate-limiter/limiter';
(async () => {
  const db = await startDynalite();
  await db.createTable('limits');
  const inner = new DynamoDbBucketStore(new DynamoDBClient({ endpoint: db.endpoint, region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } }), 'limits');
  const clock = () => Math.floor((performance.timeOrigin + performance.now()) * 1000);
  let fails = 0;
  await Promise.all(Array.from({ length: 100 }, async () => {
    let log: string[] = [];
    const store: any = {
      takeBusy: async (pk: string, inc: number, lo: number, hi: number, e: number) => { const r = await inner.takeBusy(pk, inc, lo, hi, e); log.push(`busy lo=${lo % 1e7} hi=${hi % 1e7} at=${clock() % 1e7} -> ${r.ok} ${typeof r.tat === 'number' ? r.tat % 1e7 : String(r.tat)}`); return r; },
      takeIdle: async (pk: string, now: number, nt: number, e: number) => { const r = await inner.takeIdle(pk, now, nt, e); log.push(`idle now=${now % 1e7} at=${clock() % 1e7} -> ${r.ok} ${typeof r.tat === 'number' ? r.tat % 1e7 : String(r.tat)}`); return r; },
      readTat: async (pk: string) => { const t = await inner.readTat(pk); log.push(`read ${t! % 1e7} at=${clock() % 1e7}`); return t; },
      readOverride: (pk: string) => inner.readOverride(pk),
    };
    const limiter = new Limiter({ limiterName: 't', ratePerSecond: 50, burst: 10, shards: 1, maxWaitMs: 0 }, { store, clockUs: clock, random: Math.random });
    for (let i = 0; i < 3; i++) {
      log = [];
      try { await limiter.acquire({ key: 'a', tokens: 1, mode: 'TRY' }); } catch (e: any) { fails++; if (fails < 3) console.log(log.join('\n') + '\n---'); }
      await new Promise((r) => setTimeout(r, 20));
    }
  }));
  console.log('fails', fails);
  await db.stop();
})();
