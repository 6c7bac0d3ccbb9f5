import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SendTaskSuccessCommand, SFNClient } from '@aws-sdk/client-sfn';
import { handle } from './concurrency';
import { ConcurrencyKeyStore } from './store';
import { ConcurrencyEnv } from '../../src/private/contract';

// Built once per container; AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL_SFN can point the clients at local stand-ins.
const store = new ConcurrencyKeyStore(new DynamoDBClient({}), required(ConcurrencyEnv.TABLE_NAME));
const sfn = new SFNClient({});

export const handler = async (event: unknown) => handle(event, {
  store,
  sendSuccess: async (token, output) => {
    await sfn.send(new SendTaskSuccessCommand({ taskToken: token, output: JSON.stringify(output) }));
  },
  nowMs: () => Date.now(),
  limiterName: required(ConcurrencyEnv.LIMITER_NAME),
  settings: { limit: num(ConcurrencyEnv.LIMIT), leaseMs: num(ConcurrencyEnv.LEASE_MS) },
  maxWaitMs: num(ConcurrencyEnv.MAX_WAIT_MS),
  emit: (line) => process.stdout.write(`${line}\n`),
});

function required(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is required`);
  return v;
}

function num(name: string): number {
  const v = Number(required(name));
  if (!Number.isFinite(v) || v <= 0) throw new Error(`environment variable ${name} must be a positive number, got ${process.env[name]}`);
  return v;
}
