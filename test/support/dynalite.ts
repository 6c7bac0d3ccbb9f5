import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { type LocalDynamoDb, startDynalite } from '../../local/dynalite';
import { sleep } from '../../local/timing';

/**
 * An in-process dynalite with one table for the tests of a describe block: started before them, stopped after.
 * `client()` is the SDK client on it.
 */
export function dynaliteTable(table: string): { client: () => DynamoDBClient } {
  let db: LocalDynamoDb;
  let client: DynamoDBClient;
  beforeAll(async () => {
    db = await startDynalite();
    await db.createTable(table);
    client = new DynamoDBClient({ endpoint: db.endpoint, region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } });
  });
  afterAll(async () => {
    client.destroy();
    await db.stop();
  });
  return { client: () => client };
}

/**
 * A client whose every call waits 5–20 ms first (DynamoDB's latency from Lambda, put back in front of an emulator
 * that answers in a millisecond), and counts its calls.
 */
export function slowClient(client: DynamoDBClient): { client: DynamoDBClient; calls: () => number } {
  let calls = 0;
  const send = client.send.bind(client);
  const slow = { send: async (cmd: any) => { calls++; await sleep(5 + Math.random() * 15); return send(cmd); } };
  return { client: slow as unknown as DynamoDBClient, calls: () => calls };
}
