import { ChildProcess, fork } from 'child_process';
import type { AddressInfo } from 'net';
import * as path from 'path';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';

/** A running local DynamoDB (dynalite). */
export interface LocalDynamoDb {
  /** e.g. http://127.0.0.1:4567 — give it to the SDK as AWS_ENDPOINT_URL_DYNAMODB. */
  readonly endpoint: string;
  readonly client: DynamoDBClient;
  /**
   * In-process emulator only: drops every open connection and every new one (an outage), keeping the data;
   * `resume()` serves again.
   */
  pause?(): Promise<void>;
  resume?(): Promise<void>;
  /** Creates a table with a string partition key (default `pk`), usable at once. */
  createTable(name: string, partitionKey?: string): Promise<void>;
  /** Stops the emulator; every later call fails with a connection error. */
  stop(): Promise<void>;
  /** In-process emulator only: DynamoDB API requests served so far, by operation (e.g. `GetItem`). */
  requests?(): Record<string, number>;
}

function clientFor(endpoint: string): DynamoDBClient {
  return new DynamoDBClient({
    endpoint,
    region: process.env.AWS_REGION ?? 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    maxAttempts: 1,
  });
}

async function createTable(client: DynamoDBClient, name: string, partitionKey = 'pk'): Promise<void> {
  await client.send(new CreateTableCommand({
    TableName: name,
    KeySchema: [{ AttributeName: partitionKey, KeyType: 'HASH' }],
    AttributeDefinitions: [{ AttributeName: partitionKey, AttributeType: 'S' }],
    BillingMode: 'PAY_PER_REQUEST',
  }));
}

/** Options for a local DynamoDB. */
export interface LocalDynamoDbOptions {
  /**
   * Return the old item with a ConditionalCheckFailedException when the request asks for it
   * (`ReturnValuesOnConditionCheckFailure: ALL_OLD`), as DynamoDB does. Stock dynalite ignores it.
   * Applies to every dynalite server in the process.
   *
   * @default true
   */
  readonly returnOldItemOnConditionFailure?: boolean;
  /**
   * Milliseconds every request waits before it is served, drawn uniformly from [min, max]: DynamoDB's latency from
   * Lambda (5–20 ms, tails of tens of ms) instead of the emulator's ~1 ms, to judge a guarantee under it. In-process
   * dynalite only.
   *
   * @default none
   */
  readonly latencyMs?: readonly [number, number];
}

/**
 * Starts dynalite in this process on a free loopback port (in memory, tables ready at once).
 */
export async function startDynalite(options: LocalDynamoDbOptions = {}): Promise<LocalDynamoDb> {
  if (options.latencyMs && !(options.latencyMs[0] >= 0 && options.latencyMs[1] >= options.latencyMs[0])) {
    throw new Error(`dynamoDb.latencyMs must be [min, max] with 0 <= min <= max, got [${options.latencyMs.join(', ')}]`);
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  if (options.returnOldItemOnConditionFailure ?? true) require('./dynalite-patch')();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const dynalite = require('dynalite');
  const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = clientFor(endpoint);
  if (options.latencyMs) {
    const [min, max] = options.latencyMs;
    // dynalite's handler runs after the delay; the request body waits in the paused stream meanwhile
    const serve = server.listeners('request');
    server.removeAllListeners('request');
    server.on('request', (req: unknown, res: unknown) => {
      setTimeout(() => serve.forEach((h: (...a: unknown[]) => void) => h.call(server, req, res)), min + Math.random() * (max - min));
    });
  }
  let stopped = false;
  let paused = false;
  server.prependListener('connection', (socket: { destroy(): void }) => {
    if (paused) socket.destroy();
  });
  const requests: Record<string, number> = {};
  server.prependListener('request', (req: { headers: Record<string, string | undefined> }) => {
    const op = String(req.headers['x-amz-target'] ?? '').split('.')[1];
    if (op) requests[op] = (requests[op] ?? 0) + 1;
  });
  return {
    endpoint,
    client,
    requests: () => ({ ...requests }),
    createTable: (name, pk) => createTable(client, name, pk),
    // Closing the server would close dynalite's store: an outage drops every connection instead.
    pause: async () => {
      paused = true;
      server.closeAllConnections?.();
    },
    resume: async () => {
      paused = false;
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      client.destroy();
      // Sockets kept alive by other clients would hold close() open: end them.
      server.closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Starts dynalite in a child process, so the emulator gets a core of its own (for benchmarks where the
 * emulator, not the code under test, would otherwise be the bottleneck).
 */
export async function startDynaliteProcess(options: LocalDynamoDbOptions = {}): Promise<LocalDynamoDb> {
  const child: ChildProcess = fork(path.join(__dirname, 'dynalite-child.js'), [], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    env: { ...process.env, DYNALITE_RETURN_OLD_ITEM: String(options.returnOldItemOnConditionFailure ?? true) },
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: any) => resolve(m.port));
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`dynalite child exited with ${code}`)));
  });
  const endpoint = `http://127.0.0.1:${port}`;
  const client = clientFor(endpoint);
  return {
    endpoint,
    client,
    createTable: (name, pk) => createTable(client, name, pk),
    stop: async () => {
      client.destroy();
      if (child.exitCode === null) {
        await new Promise<void>((resolve) => {
          child.once('exit', () => resolve());
          child.kill();
        });
      }
    },
  };
}
