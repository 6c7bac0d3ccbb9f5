import { ConditionalCheckFailedException, GetItemCommand, PutItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { startDynalite } from '../../local/dynalite';

describe('local dynalite', () => {
  test('latencyMs: every request waits at least the minimum before it is served (a lower bound: a busy machine only adds)', async () => {
    const db = await startDynalite({ latencyMs: [25, 40] });
    try {
      await db.createTable('tab');
      await db.client.send(new PutItemCommand({ TableName: 'tab', Item: { pk: { S: 'a' }, n: { N: '1' } } }));
      const t0 = performance.now();
      const got = await db.client.send(new GetItemCommand({ TableName: 'tab', Key: { pk: { S: 'a' } }, ConsistentRead: true }));
      expect(performance.now() - t0).toBeGreaterThanOrEqual(24);
      expect(got.Item).toEqual({ pk: { S: 'a' }, n: { N: '1' } });
    } finally {
      await db.stop();
    }
    await expect(startDynalite({ latencyMs: [10, 5] })).rejects.toThrow('dynamoDb.latencyMs must be [min, max] with 0 <= min <= max, got [10, 5]');
  });

  test('returns the old item on a failed condition when asked (ALL_OLD), like DynamoDB', async () => {
    // GIVEN an item
    const db = await startDynalite();
    try {
      await db.createTable('tab');
      await db.client.send(new PutItemCommand({ TableName: 'tab', Item: { pk: { S: 'a' }, tat: { N: '5' } } }));
      // WHEN a conditional update fails with ReturnValuesOnConditionCheckFailure ALL_OLD
      const failingUpdate = (extra: Record<string, unknown>) => db.client.send(new UpdateItemCommand({
        TableName: 'tab',
        Key: { pk: { S: 'a' } },
        UpdateExpression: 'SET tat = :v',
        ConditionExpression: 'tat < :v',
        ExpressionAttributeValues: { ':v': { N: '1' } },
        ...extra,
      })).catch((e) => e);
      const err = await failingUpdate({ ReturnValuesOnConditionCheckFailure: 'ALL_OLD' });
      // THEN the exception carries the old item
      expect(err).toBeInstanceOf(ConditionalCheckFailedException);
      expect(err.Item).toEqual({ pk: { S: 'a' }, tat: { N: '5' } });
      // and without the option it does not
      const plain = await failingUpdate({});
      expect(plain.Item).toBeUndefined();
    } finally {
      await db.stop();
    }
  });
});
