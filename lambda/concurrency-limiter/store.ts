import {
  type AttributeValue,
  ConditionalCheckFailedException,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  ScanCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { EMPTY, type KeyState, type Lease, type Waiter } from './core';
import { LimiterUnavailable } from '../rate-limiter/errors';
import { jitteredPause } from '../shared/backoff';

/** A fast-path write: done (slots in use after it), or refused with the item as it was. */
export type FastResult = { ok: true; used: number; state?: KeyState } | { ok: false; state?: KeyState };

/** Format version of a concurrency key item; an item with another `v` fails closed. */
export const KEY_ITEM_VERSION = 1;

/** Conditional writes one slow-path operation may try before it fails closed (contention on one key). */
const MAX_WRITES = 50;

/**
 * One key's state in a DynamoDB item: `used` (N, slots held), `L` (M, the leases by id: `{ s, exp, ex }`), `W` (L,
 * the waiters in order: `{ id, s, t, ex, exp, at }`), `WI` (M, the waiters' ids: a fast write can check one is not
 * queued yet), `ver` (N, a write counter), `v` (N, the format version) and the TTL `exp`.
 *
 * Fast paths, one conditional UpdateItem each, for what most calls are: taking a free slot when nobody waits,
 * queueing behind a full key, giving a slot back when nobody waits. Everything else (the key's first use, an expired
 * lease to reclaim, a release that hands slots to waiters) is the slow path: a strongly consistent read, the pure core,
 * and a write conditioned on the `ver` read — atomic per key, retried with jitter on a lost race.
 */
export class ConcurrencyKeyStore {
  constructor(private readonly client: DynamoDBClient, private readonly tableName: string) {}

  /**
   * Takes `lease` for `id` if the key exists, holds at most `limit − slots`, has no waiters and no such lease.
   * Fails with the item as it was (where DynamoDB returns it), or undefined when the key does not exist yet.
   */
  async acquireFast(pk: string, id: string, lease: Lease, limit: number): Promise<FastResult> {
    return this.conditional(pk, {
      UpdateExpression: 'SET used = used + :s, ver = ver + :one, L.#id = :lease',
      ConditionExpression: 'v = :v AND used <= :max AND size(W) = :zero AND attribute_not_exists(L.#id)',
      ExpressionAttributeNames: { '#id': id },
      ExpressionAttributeValues: { ':s': n(lease.s), ':one': n(1), ':lease': leaseAttr(lease), ':v': n(KEY_ITEM_VERSION), ':max': n(limit - lease.s), ':zero': n(0) },
    });
  }

  /** Queues `waiter` if the key is still full or already has waiters (else a slot came free: acquire again). */
  async registerFast(pk: string, waiter: Waiter, limit: number): Promise<FastResult> {
    return this.conditional(pk, {
      // WI indexes the waiters by id: the same acquire delivered twice queues once (and never beside its own lease)
      UpdateExpression: 'SET W = list_append(W, :w), WI.#id = :t, ver = ver + :one',
      ConditionExpression: 'v = :v AND (used > :max OR size(W) > :zero) AND attribute_exists(WI) AND attribute_not_exists(WI.#id) '
        + 'AND attribute_not_exists(L.#id)',
      ExpressionAttributeNames: { '#id': waiter.id },
      ExpressionAttributeValues: {
        ':w': { L: [waiterAttr(waiter)] }, ':t': { BOOL: true }, ':one': n(1), ':v': n(KEY_ITEM_VERSION), ':max': n(limit - waiter.s), ':zero': n(0),
      },
    });
  }

  /** Gives lease `id` (of `slots`) back if it is held and nobody waits (else the slow path hands the slots on). */
  async releaseFast(pk: string, id: string, slots: number): Promise<FastResult> {
    return this.conditional(pk, {
      UpdateExpression: 'REMOVE L.#id SET used = used - :s, ver = ver + :one',
      ConditionExpression: 'v = :v AND attribute_exists(L.#id) AND L.#id.s = :s AND size(W) = :zero',
      ExpressionAttributeNames: { '#id': id },
      ExpressionAttributeValues: { ':s': n(slots), ':one': n(1), ':v': n(KEY_ITEM_VERSION), ':zero': n(0) },
    });
  }

  /**
   * Gives lease `id` (of `slots`) back whoever waits, and returns the item as written: a write no other release makes
   * fail (it names only its own lease), for when releases race to hand their slots to the same head waiter. The
   * caller then grants the waiters that fit, all in one read-and-write.
   */
  async releaseOnly(pk: string, id: string, slots: number): Promise<FastResult> {
    return this.conditional(pk, {
      UpdateExpression: 'REMOVE L.#id SET used = used - :s, ver = ver + :one',
      ConditionExpression: 'v = :v AND attribute_exists(L.#id) AND L.#id.s = :s',
      ExpressionAttributeNames: { '#id': id },
      ExpressionAttributeValues: { ':s': n(slots), ':one': n(1), ':v': n(KEY_ITEM_VERSION) },
    }, true);
  }

  /**
   * Gives lease `id` (of `slots`) to the head waiter `head` (same slots) in one write: the release that finds
   * waiters hands its slot on without a read-modify-write. Fails with the item as it was when the lease is gone, the
   * head changed, or the slot would not fit.
   */
  async handOverFast(pk: string, id: string, slots: number, head: Waiter, lease: Lease, limit: number): Promise<FastResult> {
    return this.conditional(pk, {
      UpdateExpression: 'SET L.#wid = :wlease, used = used + :delta, ver = ver + :one REMOVE L.#id, W[0], WI.#wid',
      ConditionExpression: 'v = :v AND attribute_exists(L.#id) AND L.#id.s = :s AND W[0].id = :widv AND used <= :max',
      ExpressionAttributeNames: { '#id': id, '#wid': head.id },
      ExpressionAttributeValues: {
        ':wlease': leaseAttr(lease),
        ':delta': n(head.s - slots),
        ':one': n(1),
        ':v': n(KEY_ITEM_VERSION),
        ':s': n(slots),
        ':widv': { S: head.id },
        ':max': n(limit - (head.s - slots)),
      },
    });
  }

  /** Creates the key's item, empty, unless it exists (the fast paths need it). */
  async ensure(pk: string): Promise<void> {
    await this.write(pk, EMPTY, undefined);
  }

  /** Applies `op` to the key's state atomically (the slow path); returns what `op` returned for the state written. */
  async update<T extends { readonly state: KeyState }>(pk: string, op: (state: KeyState) => T): Promise<T> {
    for (let attempt = 0; attempt < MAX_WRITES; attempt++) {
      const read = await this.read(pk);
      const out = op(read?.state ?? EMPTY);
      if (read && JSON.stringify(out.state) === JSON.stringify(read.state)) return out;
      if (await this.write(pk, out.state, read?.ver)) return out;
      // lost the race: back off with full jitter so a herd on one key spreads out
      await jitteredPause(attempt, 200);
    }
    throw new LimiterUnavailable(`${MAX_WRITES} conditional writes on ${pk} lost to contention: nothing taken`);
  }

  /** The keys whose partition key starts with `prefix` (a paginated Scan: the reaper's way to find an execution's leases). */
  async keys(prefix: string): Promise<string[]> {
    const found: string[] = [];
    let start: Record<string, AttributeValue> | undefined;
    do {
      const page = await this.client.send(new ScanCommand({
        TableName: this.tableName,
        ProjectionExpression: 'pk',
        FilterExpression: 'begins_with(pk, :p)',
        ExpressionAttributeValues: { ':p': { S: prefix } },
        ExclusiveStartKey: start,
      }));
      for (const item of page.Items ?? []) if (item.pk?.S) found.push(item.pk.S);
      start = page.LastEvaluatedKey;
    } while (start);
    return found;
  }

  async read(pk: string): Promise<{ state: KeyState; ver: number } | undefined> {
    let item;
    try {
      item = (await this.client.send(new GetItemCommand({ TableName: this.tableName, Key: { pk: { S: pk } }, ConsistentRead: true }))).Item;
    } catch (err) {
      throw new LimiterUnavailable(`reading ${pk}: ${(err as Error).message}`);
    }
    return item ? { state: decode(pk, item), ver: Number(item.ver?.N ?? 0) } : undefined;
  }

  private async conditional(pk: string, update: {
    UpdateExpression: string;
    ConditionExpression: string;
    ExpressionAttributeNames?: Record<string, string>;
    ExpressionAttributeValues: Record<string, AttributeValue>;
  }, returnState = false): Promise<FastResult> {
    try {
      const res = await this.client.send(new UpdateItemCommand({
        TableName: this.tableName,
        Key: { pk: { S: pk } },
        ...update,
        ConditionExpression: `attribute_exists(pk) AND ${update.ConditionExpression}`,
        ReturnValues: returnState ? 'ALL_NEW' : 'UPDATED_NEW',
        ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      }));
      const state = returnState && res.Attributes ? { state: decode(pk, res.Attributes) } : {};
      return { ok: true, used: Number(res.Attributes?.used?.N ?? 0), ...state };
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException || (err as Error).name === 'ConditionalCheckFailedException') {
        const item = (err as { Item?: Record<string, AttributeValue> }).Item;
        return { ok: false, state: item ? decode(pk, item) : undefined };
      }
      throw new LimiterUnavailable(`writing ${pk}: ${(err as Error).message}`);
    }
  }

  private async write(pk: string, state: KeyState, ver: number | undefined): Promise<boolean> {
    const until = Math.max(0, ...Object.values(state.leases).map((l) => l.exp), ...state.waiters.map((w) => w.exp));
    try {
      await this.client.send(new PutItemCommand({
        TableName: this.tableName,
        Item: {
          pk: { S: pk },
          used: n(state.used),
          L: { M: Object.fromEntries(Object.entries(state.leases).map(([id, l]) => [id, leaseAttr(l)])) },
          W: { L: state.waiters.map(waiterAttr) },
          WI: { M: Object.fromEntries(state.waiters.map((w) => [w.id, { BOOL: true }])) },
          ver: n((ver ?? 0) + 1),
          v: n(KEY_ITEM_VERSION),
          // idle keys expire a day after their last lease or waiter would have
          exp: n(Math.ceil(until / 1000) + 86_400),
        },
        ConditionExpression: ver === undefined ? 'attribute_not_exists(pk)' : 'ver = :ver AND v = :v',
        ExpressionAttributeValues: ver === undefined ? undefined : { ':ver': n(ver), ':v': n(KEY_ITEM_VERSION) },
      }));
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException || (err as Error).name === 'ConditionalCheckFailedException') return false;
      throw new LimiterUnavailable(`writing ${pk}: ${(err as Error).message}`);
    }
  }
}

const n = (v: number): AttributeValue => ({ N: String(v) });

function leaseAttr(l: Lease): AttributeValue {
  return { M: { s: n(l.s), exp: n(l.exp), ex: { S: l.ex || '-' } } };
}

function waiterAttr(w: Waiter): AttributeValue {
  return { M: { id: { S: w.id }, s: n(w.s), t: { S: w.t }, ex: { S: w.ex || '-' }, exp: n(w.exp), at: n(w.at) } };
}

/** A key item as the core's state; an item of another format version fails closed. */
function decode(pk: string, item: Record<string, AttributeValue>): KeyState {
  const v = Number(item.v?.N);
  if (v !== KEY_ITEM_VERSION) throw new LimiterUnavailable(`item ${pk} has format version ${item.v?.N ?? 'none'}, this handler reads ${KEY_ITEM_VERSION}`);
  const leases: Record<string, Lease> = {};
  for (const [id, a] of Object.entries(item.L?.M ?? {})) {
    leases[id] = { s: Number(a.M?.s?.N), exp: Number(a.M?.exp?.N), ex: a.M?.ex?.S === '-' ? '' : a.M?.ex?.S ?? '' };
  }
  const waiters: Waiter[] = (item.W?.L ?? []).map((a) => ({
    id: a.M?.id?.S ?? '', s: Number(a.M?.s?.N), t: a.M?.t?.S ?? '', ex: a.M?.ex?.S === '-' ? '' : a.M?.ex?.S ?? '', exp: Number(a.M?.exp?.N), at: Number(a.M?.at?.N),
  }));
  return { used: Number(item.used?.N ?? 0), leases, waiters };
}
