/* eslint-disable no-console */
// Runs the 50-connection example offline: 150 executions at once, each holding a connection for 200–600 ms; the
// database counts how many it serves at once. `npx ts-node --transpile-only --project examples/tsconfig.json
// examples/orders-database/run.ts` (after `npx projen bundle`).
import { App } from 'aws-cdk-lib';
import { CONNECTIONS, OrdersDatabaseStack } from './stack';
import { LocalRunner } from '../../local/runner';
import { sleep } from '../../local/timing';

async function main() {
  const stack = new OrdersDatabaseStack(new App(), 'OrdersDatabase', { env: { account: '123456789012', region: 'us-east-1' } });
  let open = 0;
  let most = 0;
  let served = 0;
  const runner = await LocalRunner.start(stack, stack.machine, {
    taskHandlers: {
      'Run Report Query': async (input: { n: number }) => {
        open++;
        most = Math.max(most, open);
        try {
          await sleep(200 + ((input.n * 37) % 400));
          served++;
          return { rows: input.n };
        } finally {
          open--;
        }
      },
    },
  });
  try {
    const t0 = Date.now();
    const results = await Promise.all(Array.from({ length: 150 }, (_, n) => runner.run({ n })));
    const failed = results.filter((r) => r.status !== 'SUCCEEDED').length;
    const calls = (runner as any).db.requests?.() ?? {};
    const total = Object.values(calls).reduce((a: number, b) => a + (b as number), 0);
    console.log(`150 executions, ${CONNECTIONS} connections: ${served} queries served, ${failed} failed, most at once ${most} (limit ${CONNECTIONS}), `
      + `${((Date.now() - t0) / 1000).toFixed(1)} s; DynamoDB calls ${JSON.stringify(calls)} (${(total / 150).toFixed(1)} per execution)`);
    if (most > CONNECTIONS || failed > 0) process.exitCode = 1;
  } finally {
    await runner.stop();
  }
}

void main();
