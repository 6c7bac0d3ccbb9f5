import { ConditionalCheckFailedException, PutItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { startDynalite } from '../../local/dynalite';

describe('local dynalite', () => {
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
