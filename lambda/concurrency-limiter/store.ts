import {
  ConditionalCheckFailedException,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  ScanCommand,
} from '@aws-sdk/client-dynamodb';
import { EMPTY, type KeyState } from './core';
import { LimiterUnavailable } from '../rate-limiter/errors';

/** Format version of a concurrency key item; an item with another `v` fails closed. */
export const KEY_ITEM_VERSION = 1;

/** Conditional writes one operation may try before it fails closed (contention on one key). */
const MAX_WRITES = 25;

/**
 * One key's state in a DynamoDB item (`pk`; the state as JSON in `st`; `ver`, the write counter every write is
 * conditioned on; `v`, the format version; `exp`, the TTL, after the last lease and waiter). An operation reads the
 * item (strongly consistent), applies the pure core and writes the result on condition that `ver` is still what it
 * read: every operation is atomic per key, and a lost race is retried on the new state.
 */
export class ConcurrencyKeyStore {
  /** DynamoDB calls made, for metrics and the bench. */
  public calls = 0;

  constructor(private readonly client: DynamoDBClient, private readonly tableName: string) {}

  /** Applies `op` to the key's state atomically; returns what `op` returned for the state that was written. */
  async update<T extends { readonly state: KeyState }>(pk: string, op: (state: KeyState) => T): Promise<T> {
    for (let attempt = 0; attempt < MAX_WRITES; attempt++) {
      const read = await this.read(pk);
      const out = op(read?.state ?? EMPTY);
      if (read && JSON.stringify(out.state) === JSON.stringify(read.state)) return out;
      if (await this.write(pk, out.state, read?.ver)) return out;
      // lost the race: back off with full jitter so a herd on one key spreads out
      await new Promise((r) => setTimeout(r, Math.random() * Math.min(100, 5 * 2 ** attempt)));
    }
    throw new LimiterUnavailable(`${MAX_WRITES} conditional writes on ${pk} lost to contention: nothing taken`);
  }

  /** The keys whose partition key starts with `prefix` (a paginated Scan: the reaper's way to find an execution's leases). */
  async keys(prefix: string): Promise<string[]> {
    const found: string[] = [];
    let start: Record<string, any> | undefined;
    do {
      this.calls++;
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
    this.calls++;
    let item;
    try {
      item = (await this.client.send(new GetItemCommand({ TableName: this.tableName, Key: { pk: { S: pk } }, ConsistentRead: true }))).Item;
    } catch (err) {
      throw new LimiterUnavailable(`reading ${pk}: ${(err as Error).message}`);
    }
    if (!item) return undefined;
    const v = Number(item.v?.N);
    if (v !== KEY_ITEM_VERSION) throw new LimiterUnavailable(`item ${pk} has format version ${item.v?.N ?? 'none'}, this handler reads ${KEY_ITEM_VERSION}`);
    return { state: JSON.parse(item.st?.S ?? 'null') ?? EMPTY, ver: Number(item.ver?.N ?? 0) };
  }

  private async write(pk: string, state: KeyState, ver: number | undefined): Promise<boolean> {
    this.calls++;
    const until = Math.max(0, ...Object.values(state.leases).map((l) => l.exp), ...state.waiters.map((w) => w.exp));
    try {
      await this.client.send(new PutItemCommand({
        TableName: this.tableName,
        Item: {
          pk: { S: pk },
          st: { S: JSON.stringify(state) },
          ver: { N: String((ver ?? 0) + 1) },
          v: { N: String(KEY_ITEM_VERSION) },
          // idle keys expire a day after their last lease or waiter would have
          exp: { N: String(Math.ceil(until / 1000) + 86_400) },
        },
        ConditionExpression: ver === undefined ? 'attribute_not_exists(pk)' : 'ver = :ver AND v = :v',
        ExpressionAttributeValues: ver === undefined ? undefined : { ':ver': { N: String(ver) }, ':v': { N: String(KEY_ITEM_VERSION) } },
      }));
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException || (err as Error).name === 'ConditionalCheckFailedException') return false;
      throw new LimiterUnavailable(`writing ${pk}: ${(err as Error).message}`);
    }
  }
}
