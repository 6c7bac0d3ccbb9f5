import { ConditionalCheckFailedException, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDbBucketStore } from '../../lambda/rate-limiter/dynamodb-store';
import { Limiter } from '../../lambda/rate-limiter/limiter';
import { UNKNOWN } from '../../lambda/rate-limiter/store';

function fakeClient(send: (cmd: any) => Promise<any>): DynamoDBClient {
  return { send: jest.fn(send) } as unknown as DynamoDBClient;
}

const conditionFailed = (item?: Record<string, any>) => new ConditionalCheckFailedException({ message: 'The conditional request failed', $metadata: {}, Item: item });

describe('DynamoDbBucketStore', () => {
  test('busy write: one conditional UpdateItem adding inc, bounded by the ceiling', async () => {
    const client = fakeClient(async () => ({ Attributes: { tat: { N: '1200' } } }));
    const store = new DynamoDbBucketStore(client, 'limits');
    await expect(store.takeBusy('pk1', 100, 1000, 1900, 42, 100, 1000)).resolves.toEqual({ ok: true, tat: 1200 });
    const input = (client.send as jest.Mock).mock.calls[0][0].input;
    expect(input).toMatchObject({
      TableName: 'limits',
      Key: { pk: { S: 'pk1' } },
      UpdateExpression: 'SET tat = tat + :inc, #hz = tat + :hzoff, #exp = :exp, #iv = :iv, #tol = :tol, #v = :v',
      ConditionExpression: 'tat BETWEEN :lo AND :hi AND #iv = :iv AND #v = :v',
      ExpressionAttributeNames: { '#exp': 'exp', '#iv': 'iv', '#tol': 'tol', '#v': 'v', '#hz': 'hz' },
      ExpressionAttributeValues: {
        ':inc': { N: '100' }, ':hzoff': { N: '-900' }, ':lo': { N: '1000' }, ':hi': { N: '1900' }, ':exp': { N: '42' }, ':iv': { N: '100' }, ':tol': { N: '1000' }, ':v': { N: '1' },
      },
      ReturnValues: 'UPDATED_NEW',
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    });
  });

  test('idle write: SET tat = now + inc if the bucket is empty or past', async () => {
    const client = fakeClient(async () => ({ Attributes: { tat: { N: '1100' } } }));
    const store = new DynamoDbBucketStore(client, 'limits');
    await store.takeIdle('pk1', 1000, 1100, 42, 100, 1000);
    expect((client.send as jest.Mock).mock.calls[0][0].input).toMatchObject({
      UpdateExpression: 'SET tat = :tat, #hz = :now, #exp = :exp, #iv = :iv, #tol = :tol, #v = :v',
      ConditionExpression: '(attribute_not_exists(tat) AND attribute_not_exists(#v) AND attribute_not_exists(#iv)) OR (tat <= :now AND #v = :v)',
    });
  });

  test('rescale: the debt re-counted under a new interval, only if nobody moved the bucket meanwhile', async () => {
    const client = fakeClient(async () => ({ Attributes: { tat: { N: '9000' } } }));
    const store = new DynamoDbBucketStore(client, 'limits');
    await expect(store.rescale('pk1', 2000, 10, 9000, 100, 42, 1000)).resolves.toEqual({ ok: true, tat: 9000 });
    expect((client.send as jest.Mock).mock.calls[0][0].input).toMatchObject({
      UpdateExpression: 'SET tat = :tat, #exp = :exp, #iv = :iv, #tol = :tol, #v = :v',
      ConditionExpression: 'tat = :old AND #iv = :oldiv AND #v = :v',
      ExpressionAttributeValues: { ':tat': { N: '9000' }, ':old': { N: '2000' }, ':oldiv': { N: '10' }, ':iv': { N: '100' } },
    });
    // an item written before versions (no iv, no v) is given them, its tat unchanged
    await store.rescale('pk1', 2000, undefined, 2000, 100, 42, 1000);
    expect((client.send as jest.Mock).mock.calls[1][0].input).toMatchObject({
      ConditionExpression: 'tat = :old AND attribute_not_exists(#iv) AND attribute_not_exists(#v)',
    });
  });

  test('a failed condition returns the old item when DynamoDB sends it (ALL_OLD) and UNKNOWN when not', async () => {
    const withItem = new DynamoDbBucketStore(fakeClient(async () => { throw conditionFailed({ pk: { S: 'p' }, tat: { N: '5000' }, iv: { N: '20' }, v: { N: '1' } }); }), 't');
    await expect(withItem.takeBusy('p', 1, 0, 1, 1, 20, 20)).resolves.toEqual({ ok: false, item: { tat: 5000, iv: 20, v: 1, hz: undefined, tol: undefined } });
    // a malformed attribute comes back as it is stored, for the limiter to reject
    const malformed = new DynamoDbBucketStore(fakeClient(async () => { throw conditionFailed({ pk: { S: 'p' }, tat: { S: 'soon' } }); }), 't');
    await expect(malformed.takeBusy('p', 1, 0, 1, 1, 20, 20)).resolves.toEqual({ ok: false, item: { tat: 'soon', iv: undefined, v: undefined, hz: undefined, tol: undefined } });
    const withoutItem = new DynamoDbBucketStore(fakeClient(async () => { throw conditionFailed(); }), 't');
    await expect(withoutItem.takeBusy('p', 1, 0, 1, 1, 20, 20)).resolves.toEqual({ ok: false, item: UNKNOWN });
    const emptyItem = new DynamoDbBucketStore(fakeClient(async () => { throw conditionFailed({}); }), 't');
    await expect(emptyItem.takeIdle('p', 1, 2, 1, 20, 20)).resolves.toEqual({ ok: false, item: UNKNOWN });
  });

  test('with ALL_OLD a denial costs one call: no read', async () => {
    // GIVEN a full bucket whose old item comes back with the failed condition
    const client = fakeClient(async (cmd) => {
      if (cmd.constructor.name === 'GetItemCommand') return {};
      throw conditionFailed({ tat: { N: String(10_000_000) }, iv: { N: '1000000' }, v: { N: '1' } });
    });
    const limiter = new Limiter(
      { limiterName: 'l', ratePerSecond: 1, burst: 1, shards: 1, maxWaitMs: 0 },
      { store: new DynamoDbBucketStore(client, 't'), clockUs: () => 1_000_000, random: () => 0, overrideTtlMs: 10_000, initialLookaheadUs: 0 },
    );
    // WHEN (after the override lookup, which is one GetItem)
    const r = await limiter.acquire({ key: 'k', tokens: 1, mode: 'TRY' });
    // THEN: one GetItem for the override, one UpdateItem, denial from the returned item
    expect(r).toMatchObject({ admitted: false, dynamoCalls: 2 });
    const names = (client.send as jest.Mock).mock.calls.map((c) => c[0].constructor.name);
    expect(names).toEqual(['GetItemCommand', 'UpdateItemCommand']);
  });

  test.each([
    ['ProvisionedThroughputExceededException'],
    ['ThrottlingException'],
    ['RequestLimitExceeded'],
    ['InternalServerError'],
    ['ECONNREFUSED'],
  ])('%s is LimiterUnavailable, never an admission', async (name) => {
    const err = Object.assign(new Error(`simulated ${name}`), { name });
    const store = new DynamoDbBucketStore(fakeClient(async () => { throw err; }), 't');
    await expect(store.takeBusy('p', 1, 0, 1, 1, 1, 1)).rejects.toMatchObject({ name: 'LimiterUnavailable' });
    await expect(store.takeIdle('p', 1, 2, 1, 1, 1)).rejects.toMatchObject({ name: 'LimiterUnavailable' });
    await expect(store.rescale('p', 1, 1, 2, 1, 1, 1)).rejects.toMatchObject({ name: 'LimiterUnavailable' });
    await expect(store.readBucket('p')).rejects.toMatchObject({ name: 'LimiterUnavailable', message: expect.stringContaining(name) });
  });
});
