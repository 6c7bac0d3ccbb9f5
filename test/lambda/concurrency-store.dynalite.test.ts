import { acquire, held, release, type Settings } from '../../lambda/concurrency-limiter/core';
import { ConcurrencyKeyStore } from '../../lambda/concurrency-limiter/store';
import { dynaliteTable } from '../support/dynalite';

// The store against dynalite: many operations at once on one key, each atomic (a conditional write on the version it
// read), so the limit holds whatever the interleaving.

describe('concurrency key store (dynalite)', () => {
  const db = dynaliteTable('limits');

  test('40 acquires at once on a new key with limit 5: exactly 5 granted, 35 queued in one order; releases hand every slot on, FIFO', async () => {
    const settings: Settings = { limit: 5, leaseMs: 60_000 };
    const store = new ConcurrencyKeyStore(db.client(), 'limits');
    const pk = 'db#c#orders';
    const now = Date.now();
    const settled = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => store.update(pk, (s) => acquire(s, {
      id: `l${i}`, slots: 1, execution: `e${i}`, token: `t${i}`, maxWaitMs: 60_000,
    }, now, settings))));
    expect(settled.filter((r) => r.status === 'rejected')).toEqual([]);
    const results = settled.map((r) => (r as PromiseFulfilledResult<ReturnType<typeof acquire>>).value);
    expect(results.filter((r) => r.result === 'granted')).toHaveLength(5);
    expect(results.filter((r) => r.result === 'waiting')).toHaveLength(35);
    let state = (await store.read(pk))!.state;
    expect([state.used, held(state), state.waiters.length]).toEqual([5, 5, 35]);
    expect(state.waiters.map((w) => w.id).sort()).toEqual(results.map((r, i) => (r.result === 'waiting' ? `l${i}` : undefined)).filter(Boolean).sort());

    // release every holder, one after another as leases are handed on: each release grants the head waiter
    const grantedOrder: string[] = [];
    let holders = Object.keys(state.leases);
    while (holders.length > 0) {
      const outs = await Promise.all(holders.map((id) => store.update(pk, (s) => release(s, id, now, settings))));
      const granted = outs.flatMap((o) => o.grants.map((g) => g.id));
      grantedOrder.push(...granted);
      state = (await store.read(pk))!.state;
      expect(state.used).toBeLessThanOrEqual(5);
      expect(state.used).toBe(held(state));
      holders = granted;
    }
    expect(state).toEqual({ used: 0, leases: {}, waiters: [] });
    // FIFO: granted in the order they queued
    const queued = results.map((r, i) => ({ r, id: `l${i}` })).filter((x) => x.r.result === 'waiting');
    expect(grantedOrder).toHaveLength(35);
    expect(new Set(grantedOrder)).toEqual(new Set(queued.map((q) => q.id)));
  });
});
