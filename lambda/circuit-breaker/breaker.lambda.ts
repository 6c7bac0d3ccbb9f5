import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDbBreakerStore, handle } from './breaker';
import { BreakerEnv } from '../../src/private/contract';

// Built once per container; AWS_ENDPOINT_URL_DYNAMODB can point the client at a local emulator.
const store = new DynamoDbBreakerStore(new DynamoDBClient({}), required(BreakerEnv.TABLE_NAME));

export const handler = async (event: unknown) => handle(event, {
  store,
  nowMs: () => Date.now(),
  breakerName: required(BreakerEnv.BREAKER_NAME),
  settings: {
    failureThreshold: num(BreakerEnv.FAILURE_THRESHOLD),
    windowMs: num(BreakerEnv.WINDOW_MS),
    cooldownMs: num(BreakerEnv.COOLDOWN_MS),
    halfOpenProbes: num(BreakerEnv.HALF_OPEN_PROBES),
    ...(process.env[BreakerEnv.FAILURE_RATE] ? { failureRate: num(BreakerEnv.FAILURE_RATE), minimumCalls: num(BreakerEnv.MINIMUM_CALLS) } : {}),
  },
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
