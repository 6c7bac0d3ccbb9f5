import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { App, CfnResource, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { aslOf } from './support/asl';
import { definitionOf, validateDefinition } from './support/asl-validate';
import { adaptiveBounds, effectiveIv, rateOf } from '../lambda/rate-limiter/adaptive';
import { CapacityStub, type CapacityPhase } from '../local/capacity-stub';
import { type LocalExecution, LocalRunner } from '../local/runner';
import { nowUs } from '../local/timing';
import { MapConcurrency, RateLimitedTask, RateLimiter, RetryPolicy, ThrottledMap } from '../src';

// The adaptive limit (AIMD) in the local runner, against a downstream whose hidden capacity drops from 10/s to 4/s and
// comes back (a token bucket counted at arrival, burst 2, rejecting the excess with a ThrottlingException). An adaptive
// limiter and a fixed one side by side: one state machine whose Choice sends an execution to either ThrottledMap, two
// executions at once in one runner and one emulator, each with its own downstream. Only bounds with wide margins are
// asserted (the figures are the bench's: npm run bench -- adaptive); the timing of a busy 2-core machine moves every
// figure here, not these bounds.

const LOW_FROM_MS = 3_000;
const HIGH_AGAIN_MS = 18_000;
const CAPACITY: CapacityPhase[] = [
  { fromMs: 0, ratePerSecond: 10 }, { fromMs: LOW_FROM_MS, ratePerSecond: 4 }, { fromMs: HIGH_AGAIN_MS, ratePerSecond: 10 },
];
const ITEMS = 160;
const RATE = 10;
// The default increase (rate / 20 = 0.5/s) takes 8 s or more to climb back from the low phase; 1/s keeps the run short.
const INCREASE = 1;
type Row = 'adaptive' | 'fixed';
const ROWS: Row[] = ['adaptive', 'fixed'];
const P = { adaptive: 'Adaptive', fixed: 'Fixed' } as const;

function build() {
  const app = new App();
  const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiters = {} as Record<Row, RateLimiter>;
  const maps = {} as Record<Row, ThrottledMap>;
  for (const row of ROWS) {
    const limiter = new RateLimiter(stack, `${P[row]}Limiter`, {
      limiterName: row,
      ratePerSecond: RATE,
      burst: 2,
      adaptive: row === 'adaptive' ? { minRatePerSecond: 1, increasePerSecond: INCREASE } : undefined,
    });
    const fn = lambda.Function.fromFunctionArn(stack, `${P[row]}Downstream`, `arn:aws:lambda:us-east-1:123456789012:function:downstream-${row}`);
    const call = new RateLimitedTask(stack, `${P[row]} Call`, {
      limiter,
      task: tasks.LambdaInvoke.jsonPath(stack, `${P[row]} Invoke`, { lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result' }),
      acquire: { key: '$.partner' },
      retry: RetryPolicy.throttling({ errors: ['ThrottlingException'], maxAttempts: 20 }),
    });
    limiters[row] = limiter;
    maps[row] = new ThrottledMap(stack, `${P[row]} Items`, {
      itemsPath: '$.items', concurrency: MapConcurrency.fixed(30), itemProcessor: call, resultPath: sfn.JsonPath.DISCARD,
    });
  }
  const which = new sfn.Choice(stack, 'Which Limiter').when(sfn.Condition.stringEquals('$.limiter', 'adaptive'), maps.adaptive).otherwise(maps.fixed);
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(which) });
  return { stack, machine, limiters };
}

describe('adaptive limit against a downstream whose capacity changes (local runner)', () => {
  test('the definition is valid; the adaptive backoff step reports ThrottlingException for the item\'s key, the fixed one reports nothing', () => {
    const { stack } = build();
    // Template.fromStack validates every definition (test/setup-validation.ts); validated here again, explicitly
    const template = Template.fromStack(stack);
    const machines = Object.values(template.findResources('AWS::StepFunctions::StateMachine')) as any[];
    expect(machines).toHaveLength(1);
    validateDefinition(definitionOf(machines[0].Properties.DefinitionString));
    const asl = aslOf(template);
    const adaptive = asl.States['Adaptive Items'].ItemProcessor.States;
    const fixed = asl.States['Fixed Items'].ItemProcessor.States;
    // the adaptive limiter's backoff step: the retried error is a throttling signal for the key the acquire takes from
    expect(adaptive['Adaptive Call Backoff'].Parameters).toMatchObject({ 'phase': 'backoff', 'signals': ['ThrottlingException'], 'key.$': '$.partner' });
    expect(adaptive['Adaptive Call Acquire'].Parameters).toMatchObject({ 'key.$': '$.partner' });
    expect(adaptive['Adaptive Invoke'].Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.cdkSfnThrottleError', Next: 'Adaptive Call Backoff' }]);
    // a refused acquire (a reservation beyond maxReservation) is retried about a second later by the acquire state
    expect(adaptive['Adaptive Call Acquire'].Retry).toContainEqual(expect.objectContaining({ ErrorEquals: ['RateLimitExceeded'], IntervalSeconds: 1, BackoffRate: 1, JitterStrategy: 'FULL' }));
    // a fixed limiter has nothing to report
    expect(fixed['Fixed Call Backoff'].Parameters.signals).toBeUndefined();
    expect(fixed['Fixed Call Backoff'].Parameters).toMatchObject({ phase: 'backoff', retry: { errors: ['ThrottlingException'], maxAttempts: 20 } });
    // the function is told the adaptive options
    const env = (Object.values(template.findResources('AWS::Lambda::Function')) as any[])
      .map((f) => f.Properties.Environment.Variables).find((v) => v.LIMITER_NAME === 'adaptive');
    expect(JSON.parse(env.ADAPTIVE)).toEqual({ minRatePerSecond: 1, decreaseFactor: 0.7, increasePerSecond: INCREASE, maxReservationMs: 2_000 });
  });

  test(`10/s → 4/s at ${LOW_FROM_MS / 1000} s → 10/s at ${HIGH_AGAIN_MS / 1000} s, ${ITEMS} items each: the adaptive limiter follows the capacity and is rejected far less`, async () => {
    const { stack, machine, limiters } = build();
    const stubs: Record<Row, CapacityStub> = { adaptive: new CapacityStub(CAPACITY, 2), fixed: new CapacityStub(CAPACITY, 2) };
    const runner = await LocalRunner.start(stack, machine, {
      taskHandlers: { 'Adaptive Invoke': () => stubs.adaptive.invoke(), 'Fixed Invoke': () => stubs.fixed.invoke() },
      dynamoDbProcess: true,
    });
    const write = process.stdout.write;
    process.stdout.write = (() => true) as any; // the handlers' EMF lines
    let timer: NodeJS.Timeout | undefined;
    try {
      // Both functions loaded before the clock starts (their first call imports the SDK): one acquire each, on a key of
      // their own.
      const lambdaClient = new LambdaClient({ endpoint: process.env.AWS_ENDPOINT_URL_LAMBDA });
      for (const row of ROWS) {
        const name = runner.nameOf(stack.getLogicalId(limiters[row].acquireFunction.node.defaultChild as CfnResource));
        await lambdaClient.send(new InvokeCommand({ FunctionName: name, Payload: Buffer.from(JSON.stringify({ key: 'warm-up', mode: 'TRY' })) }));
      }
      lambdaClient.destroy();

      // The rate in force, read from the bucket item every 250 ms as the limiter reads it: its interval, raised by the
      // time since its last change.
      const tableName = runner.nameOf(stack.getLogicalId(limiters.adaptive.table.node.defaultChild as CfnResource));
      const config = { minRatePerSecond: 1, decreaseFactor: 0.7, increasePerSecond: INCREASE, maxReservationMs: 2_000 };
      const bounds = adaptiveBounds(RATE, config, 1);
      const samples: { atMs: number; rate: number }[] = [];
      const t0 = nowUs();
      let reading = false;
      timer = setInterval(() => {
        if (reading) return;
        reading = true;
        const atUs = nowUs();
        runner.db.client.send(new GetItemCommand({ TableName: tableName, Key: { pk: { S: 'adaptive#bucket#partner-1#0' } }, ConsistentRead: true }))
          .then((out) => {
            const n = (a: string) => (out.Item?.[a]?.N === undefined ? undefined : Number(out.Item[a].N));
            samples.push({ atMs: (atUs - t0) / 1000, rate: rateOf(effectiveIv(n('iv'), n('ac'), atUs, bounds, config), 1) });
          })
          .catch(() => undefined)
          .finally(() => { reading = false; });
      }, 250);

      const items = Array.from({ length: ITEMS }, (_, i) => ({ i, partner: 'partner-1' }));
      for (const row of ROWS) stubs[row].start();
      const results = await Promise.all(ROWS.map((row) => runner.startExecution({ limiter: row, items }).result));
      const wallS = (nowUs() - t0) / 1e6;
      clearInterval(timer);
      timer = undefined;
      const byRow = { adaptive: results[0], fixed: results[1] } as Record<Row, LocalExecution>;
      const low = samples.filter((x) => x.atMs >= LOW_FROM_MS && x.atMs < HIGH_AGAIN_MS);
      const after = samples.filter((x) => x.atMs >= HIGH_AGAIN_MS);
      const minLow = Math.min(...low.map((x) => x.rate));
      const maxAfter = Math.max(...after.map((x) => x.rate));
      process.stdout.write = write;
      // eslint-disable-next-line no-console
      const perPhase = (row: Row) => CAPACITY.map((p, i) => stubs[row].calls
        .filter((c) => !c.accepted && c.atMs >= p.fromMs && (i + 1 === CAPACITY.length || c.atMs < CAPACITY[i + 1].fromMs)).length).join('+');
      console.log(`${ITEMS} items each, ${wallS.toFixed(1)} s: rejected adaptive ${stubs.adaptive.rejected} (${perPhase('adaptive')} by phase) / fixed ${stubs.fixed.rejected} (${perPhase('fixed')}); `
        + `rate in force: lowest ${minLow.toFixed(2)}/s in the low phase, highest ${maxAfter.toFixed(2)}/s after it (${samples.length} readings)`);

      // every item completes, through either limiter
      for (const row of ROWS) {
        expect(byRow[row].status).toBe('SUCCEEDED');
        expect(stubs[row].accepted).toBe(ITEMS);
      }
      // The rejections from the capacity drop on: what each limiter does about it. (The first seconds are the runner's
      // start-up: 60 iterations start at once on one event loop, answers come back late and their calls bunch. The fixed
      // limiter's reservations are far ahead, so a late answer costs it nothing; the adaptive one's are at most 2 s ahead,
      // and a few of its calls can be rejected by a downstream of exactly its rate and burst. Counted in the total only.)
      const fromDrop = (row: Row) => stubs[row].calls.filter((c) => !c.accepted && c.atMs >= LOW_FROM_MS).length;
      // the scenario did throttle: a fixed 10/s limiter sends about 6 calls/s too many for the 15 s of the low phase
      expect(fromDrop('fixed')).toBeGreaterThanOrEqual(30);
      // the adaptive limiter is rejected far less (the bench shows about a sixth; here about 2 s of reservations made at
      // 10/s before the first decrease are most of it)
      expect(fromDrop('adaptive')).toBeLessThanOrEqual(0.5 * fromDrop('fixed'));
      expect(stubs.adaptive.rejected).toBeLessThan(stubs.fixed.rejected);
      // its rate in force fell well below the deployed 10/s while the capacity was 4/s (at least two decreases: 10 × 0.7² = 4.9)
      expect(low.length).toBeGreaterThan(10);
      expect(minLow).toBeLessThan(6);
      // and rose back once the capacity returned
      expect(after.length).toBeGreaterThan(4);
      expect(maxAfter).toBeGreaterThan(8);
    } finally {
      if (timer) clearInterval(timer);
      process.stdout.write = write;
      await runner.stop();
    }
  }, 120_000);
});
