import {
  ConditionalCheckFailedException,
  DynamoDBClient,
  GetItemCommand,
  UpdateItemCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { LimiterUnavailable } from './errors';
import { ITEM_VERSION, UNKNOWN, type AdaptiveDecrease, type AdaptiveWrite, type BucketStore, type StoredBucket, type WriteResult } from './store';

/**
 * Bucket state in a DynamoDB table with partition key `pk` (S): `tat` (N, µs), `iv` (N, the emission interval the
 * tat is counted in, µs), `v` (N, format version) and TTL attribute `exp` (N, s). One conditional UpdateItem per
 * take; a failed condition returns the old item (ALL_OLD) where DynamoDB supports it, and `UNKNOWN` where it does
 * not (the caller then reads the item).
 */
export class DynamoDbBucketStore implements BucketStore {
  constructor(private readonly client: DynamoDBClient, private readonly tableName: string) {}

  takeBusy(pk: string, incUs: number, lowerUs: number, upperUs: number, expS: number, ivUs: number, tolUs: number, adapt?: AdaptiveWrite):
  Promise<WriteResult> {
    // The right-hand `tat` is the value before the update: hz = old tat + inc − tolerance = new tat − tolerance.
    return this.update(pk, tolUs, `SET tat = tat + :inc, #hz = tat + :hzoff, #exp = :exp, #iv = :iv, #tol = :tol, #v = :v${adaptSet(adapt)}`,
      `tat BETWEEN :lo AND :hi AND #iv = ${adapt ? ':oldiv' : ':iv'} AND #v = :v${acCondition(adapt)}`,
      { ':inc': num(incUs), ':hzoff': num(incUs - tolUs), ':lo': num(lowerUs), ':hi': num(upperUs), ':exp': num(expS), ':iv': num(ivUs), ...adaptValues(adapt) });
  }

  takeIdle(pk: string, nowUs: number, newTatUs: number, expS: number, ivUs: number, tolUs: number, adapt?: AdaptiveWrite): Promise<WriteResult> {
    // an adaptive limiter's idle bucket keeps its rate: the write names the interval it believes is stored
    return this.update(pk, tolUs, `SET tat = :tat, #hz = :now, #exp = :exp, #iv = :iv, #tol = :tol, #v = :v${adaptSet(adapt)}`,
      `(attribute_not_exists(tat) AND attribute_not_exists(#v) AND attribute_not_exists(#iv)) OR (tat <= :now AND #v = :v${adapt ? ` AND #iv = :oldiv${acCondition(adapt)}` : ''})`,
      { ':tat': num(newTatUs), ':now': num(nowUs), ':exp': num(expS), ':iv': num(ivUs), ...adaptValues(adapt) });
  }

  adapt(pk: string, d: AdaptiveDecrease): Promise<WriteResult> {
    if (d.oldTatUs === undefined) {
      return this.update(pk, d.tolUs, 'SET tat = :at, #exp = :exp, #iv = :iv, #tol = :tol, #v = :v, #ac = :at, #ad = :at', 'attribute_not_exists(pk)',
        { ':exp': num(d.expS), ':iv': num(d.ivUs), ':at': num(d.atUs) });
    }
    const adapt = { oldIvUs: d.oldIvUs, oldAcUs: d.oldAcUs };
    return this.update(pk, d.tolUs, 'SET tat = tat + :delta, #exp = :exp, #iv = :iv, #tol = :tol, #v = :v, #ac = :at, #ad = :at',
      `tat BETWEEN :old AND :oldhi AND #iv = :oldiv AND #v = :v${acCondition(adapt)}`,
      {
        ':delta': num(d.deltaUs),
        ':old': num(d.oldTatUs),
        ':oldhi': num(d.oldTatUs + d.slackUs),
        ':exp': num(d.expS),
        ':iv': num(d.ivUs),
        ':at': num(d.atUs),
        ...adaptValues(adapt),
      });
  }

  rescale(pk: string, oldTatUs: number, oldIvUs: number | undefined, newTatUs: number, ivUs: number, expS: number, tolUs: number):
  Promise<WriteResult> {
    return oldIvUs === undefined
      ? this.update(pk, tolUs, 'SET tat = :tat, #exp = :exp, #iv = :iv, #tol = :tol, #v = :v',
        'tat = :old AND attribute_not_exists(#iv) AND attribute_not_exists(#v)',
        { ':tat': num(newTatUs), ':old': num(oldTatUs), ':exp': num(expS), ':iv': num(ivUs) })
      : this.update(pk, tolUs, 'SET tat = :tat, #exp = :exp, #iv = :iv, #tol = :tol, #v = :v',
        'tat = :old AND #iv = :oldiv AND #v = :v',
        { ':tat': num(newTatUs), ':old': num(oldTatUs), ':oldiv': num(oldIvUs), ':exp': num(expS), ':iv': num(ivUs) });
  }

  async readBucket(pk: string): Promise<StoredBucket | undefined> {
    const item = await this.get(pk);
    return item && bucketOf(item);
  }

  async readOverride(pk: string): Promise<Record<string, unknown> | undefined> {
    const item = await this.get(pk);
    if (!item) return undefined;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(item)) out[k] = plain(v);
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

  private async update(pk: string, tolUs: number, update: string, condition: string, values: Record<string, AttributeValue>): Promise<WriteResult> {
    try {
      const res = await this.client.send(new UpdateItemCommand({
        TableName: this.tableName,
        Key: { pk: { S: pk } },
        UpdateExpression: update,
        ConditionExpression: condition,
        ExpressionAttributeNames: {
          '#exp': 'exp',
          '#iv': 'iv',
          '#tol': 'tol',
          '#v': 'v',
          ...(update.includes('#hz') ? { '#hz': 'hz' } : {}),
          ...(update.includes('#ac') || condition.includes('#ac') ? { '#ac': 'ac' } : {}),
          ...(update.includes('#ad') ? { '#ad': 'ad' } : {}),
        },
        ExpressionAttributeValues: { ...values, ':tol': num(tolUs), ':v': num(ITEM_VERSION) },
        ReturnValues: 'UPDATED_NEW',
        ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      }));
      const tat = numberOf(res.Attributes?.tat);
      if (tat === undefined) {
        throw new LimiterUnavailable(`UpdateItem on ${pk} returned no numeric tat`);
      }
      return { ok: true, tat };
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException || (err as Error)?.name === 'ConditionalCheckFailedException') {
        // ALL_OLD: a bucket item that fails a condition exists. No Item means the old item was not returned
        // (emulators ignore ReturnValuesOnConditionCheckFailure and the SDK may still hand back an empty Item).
        const old = (err as ConditionalCheckFailedException).Item;
        return { ok: false, item: old && Object.keys(old).length > 0 ? bucketOf(old) : UNKNOWN };
      }
      throw unavailable(err);
    }
  }
}

function num(n: number): AttributeValue {
  return { N: String(n) };
}

function bucketOf(item: Record<string, AttributeValue>): StoredBucket {
  return {
    tat: item.tat && plain(item.tat),
    iv: item.iv && plain(item.iv),
    v: item.v && plain(item.v),
    hz: item.hz && plain(item.hz),
    tol: item.tol && plain(item.tol),
    ac: item.ac && plain(item.ac),
    ad: item.ad && plain(item.ad),
  };
}

/** An adaptive take's extra SET: the time of a raise. */
function adaptSet(adapt: AdaptiveWrite | undefined): string {
  return adapt?.acUs !== undefined ? ', #ac = :ac' : '';
}

function adaptValues(adapt: AdaptiveWrite | undefined): Record<string, AttributeValue> {
  if (!adapt) return {};
  return {
    ':oldiv': num(adapt.oldIvUs),
    ...(adapt.acUs !== undefined ? { ':ac': num(adapt.acUs) } : {}),
    ...(adapt.oldAcUs !== undefined ? { ':oldac': num(adapt.oldAcUs) } : {}),
  };
}

/** The `ac` an adaptive write requires: the one the container saw, or none (never adapted). */
function acCondition(adapt: AdaptiveWrite | undefined): string {
  if (!adapt) return '';
  return adapt.oldAcUs === undefined ? ' AND attribute_not_exists(#ac)' : ' AND #ac = :oldac';
}

/** An attribute value as plain data: numbers as numbers, anything else as it is (for the limiter to reject). */
function plain(v: AttributeValue): unknown {
  if (v.N !== undefined) return Number(v.N);
  if (v.S !== undefined) return v.S;
  if (v.BOOL !== undefined) return v.BOOL;
  return v;
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
