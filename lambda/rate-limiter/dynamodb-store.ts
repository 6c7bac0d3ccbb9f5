import {
  ConditionalCheckFailedException,
  DynamoDBClient,
  GetItemCommand,
  UpdateItemCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { LimiterUnavailable } from './errors';
import { UNKNOWN, type BucketStore, type WriteResult } from './store';

/**
 * Bucket state in a DynamoDB table with partition key `pk` (S), `tat` (N, µs) and TTL attribute `exp` (N, s).
 * One conditional UpdateItem per take; a failed condition returns the old item (ALL_OLD) where DynamoDB
 * supports it, and `UNKNOWN` where it does not (the caller then reads the item).
 */
export class DynamoDbBucketStore implements BucketStore {
  constructor(private readonly client: DynamoDBClient, private readonly tableName: string) {}

  takeBusy(pk: string, incUs: number, lowerUs: number, upperUs: number, expS: number): Promise<WriteResult> {
    return this.update(new UpdateItemCommand({
      TableName: this.tableName,
      Key: { pk: { S: pk } },
      UpdateExpression: 'SET tat = tat + :inc, #exp = :exp',
      ConditionExpression: 'tat BETWEEN :lo AND :hi',
      ExpressionAttributeNames: { '#exp': 'exp' },
      ExpressionAttributeValues: {
        ':inc': { N: String(incUs) },
        ':lo': { N: String(lowerUs) },
        ':hi': { N: String(upperUs) },
        ':exp': { N: String(expS) },
      },
      ReturnValues: 'UPDATED_NEW',
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    }));
  }

  takeIdle(pk: string, nowUs: number, newTatUs: number, expS: number): Promise<WriteResult> {
    return this.update(new UpdateItemCommand({
      TableName: this.tableName,
      Key: { pk: { S: pk } },
      UpdateExpression: 'SET tat = :tat, #exp = :exp',
      ConditionExpression: 'attribute_not_exists(tat) OR tat <= :now',
      ExpressionAttributeNames: { '#exp': 'exp' },
      ExpressionAttributeValues: {
        ':tat': { N: String(newTatUs) },
        ':now': { N: String(nowUs) },
        ':exp': { N: String(expS) },
      },
      ReturnValues: 'UPDATED_NEW',
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    }));
  }

  async readTat(pk: string): Promise<number | undefined> {
    const item = await this.get(pk);
    return numberOf(item?.tat);
  }

  async readOverride(pk: string): Promise<Record<string, unknown> | undefined> {
    const item = await this.get(pk);
    if (!item) return undefined;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(item)) {
      out[k] = v.N !== undefined ? Number(v.N) : v.S ?? v.BOOL ?? v;
    }
    return out;
  }

  private async get(pk: string): Promise<Record<string, AttributeValue> | undefined> {
    try {
      const res = await this.client.send(new GetItemCommand({
        TableName: this.tableName,
        Key: { pk: { S: pk } },
        ConsistentRead: true,
      }));
      return res.Item;
    } catch (err) {
      throw unavailable(err);
    }
  }

  private async update(cmd: UpdateItemCommand): Promise<WriteResult> {
    try {
      const res = await this.client.send(cmd);
      const tat = numberOf(res.Attributes?.tat);
      if (tat === undefined) {
        throw new LimiterUnavailable('UpdateItem returned no tat');
      }
      return { ok: true, tat };
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException || (err as Error)?.name === 'ConditionalCheckFailedException') {
        // ALL_OLD: a bucket item always has tat. No tat means the old item was not returned (emulators ignore
        // ReturnValuesOnConditionCheckFailure and the SDK may still hand back an empty Item): the caller reads.
        const oldTat = numberOf((err as ConditionalCheckFailedException).Item?.tat);
        return { ok: false, tat: oldTat ?? UNKNOWN };
      }
      throw unavailable(err);
    }
  }
}

function numberOf(v: AttributeValue | undefined): number | undefined {
  if (v?.N === undefined) return undefined;
  const n = Number(v.N);
  return Number.isFinite(n) ? n : undefined;
}

function unavailable(err: unknown): Error {
  if (err instanceof LimiterUnavailable) return err;
  const name = (err as Error)?.name ?? 'Error';
  return new LimiterUnavailable(`DynamoDB call failed (${name}): ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
