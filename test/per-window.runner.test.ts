import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { App, Aspects } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { quiet } from './support/quiet';
import { ShippingApiStack, SHIPPING_API_LIMIT, SHIPPING_API_RATE, SHIPPING_API_REQUESTS } from '../examples/shipping-api/stack';
import { LocalRunner } from '../local/runner';
import { type Admission, maxInWindow, nowUs } from '../local/timing';
import { ThrottleChecks } from '../src';

// The guide's Scenario 2 as the guide states it — a shipping API that accepts 5 requests in any second, no burst —
// given to the limiter as the provider's rule (Limit.perWindow), 200 orders through the local runner, judged by the
// provider's own counter: at each arrival, the calls in the second up to it.

const ENV = { env: { account: '123456789012', region: 'us-east-1' } };
const ORDERS = 200;

describe('Limit.perWindow: the shipping provider\'s rule (local runner)', () => {
  test('the limiter gets the derived limit; the throttle plan shows the rule beside it', () => {
    const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'plan-'));
    const app = new App({ outdir });
    Aspects.of(app).add(new ThrottleChecks({ writePlan: true }));
    const stack = new ShippingApiStack(app, 'ShippingApiExample', ENV);
    const env = (Object.values(Template.fromStack(stack).findResources('AWS::Lambda::Function')) as any[])
      .map((f) => f.Properties.Environment?.Variables).find((v) => v?.LIMITER_NAME === 'shipping-api');
    expect(Number(env.RATE_PER_SECOND)).toBeCloseTo(5 / 1.1, 6);
    expect(env.BURST).toBe('1');
    app.synth();
    const plan = JSON.parse(fs.readFileSync(path.join(outdir, 'throttle-plan.json'), 'utf8'));
    const entry = plan.entries.find((e: any) => e.kind === 'limiter' && e.path === 'ShippingApiExample/ShippingApiLimit');
    expect(JSON.stringify(entry)).toContain('Limit.perWindow(5 per 1000 ms, burst 0, start jitter 100 ms)');
    expect(entry.ratePerSecond).toBeCloseTo(4.545, 3);
  });

  test(`${ORDERS} orders at once: the provider's counter never above ${SHIPPING_API_REQUESTS}, throughput within 3 % of the derived rate`, async () => {
    const stack = new ShippingApiStack(new App(), 'ShippingApiExample', ENV);
    const calls: Admission[] = [];
    const runner = await LocalRunner.start(stack, stack.machine, {
      dynamoDbProcess: true,
      taskHandlers: {
        'Create Shipping Label': (input: any) => {
          calls.push({ atUs: nowUs(), tokens: 1 });
          return { ResponseBody: { trackingNumber: `TRK-${input.RequestBody.orderId}` }, StatusCode: 200 };
        },
      },
    });
    try {
      const results = await quiet(() => Promise.all(Array.from({ length: ORDERS }, (_, i) => runner.run({ orderId: `order-${i}`, address: {} }))));
      expect(results.filter((r) => r.status !== 'SUCCEEDED').map((r) => [r.error, r.cause])).toEqual([]);
      expect(calls).toHaveLength(ORDERS);
      // How late calls reached the provider after their slots (i-th arrival against the i-th slot: slots are 220 ms
      // apart, arrivals keep their order), for the record.
      const slots = runner.grants.map((g) => g.atUs).sort((a, b) => a - b);
      const arrivals = calls.map((c) => c.atUs).sort((a, b) => a - b);
      const lateMs = arrivals.map((a, i) => (a - slots[i]) / 1000);
      const providerMax = maxInWindow(calls, 999_999);
      const spanS = (arrivals[arrivals.length - 1] - arrivals[0]) / 1e6;
      const rate = (ORDERS - 1) / spanS;
      // eslint-disable-next-line no-console
      console.log(`perWindow runner: provider counter max ${providerMax}, closed 1 s max ${maxInWindow(calls, 1_000_000)}, `
        + `lateness max ${Math.max(...lateMs).toFixed(1)} ms p50 ${[...lateMs].sort((a, b) => a - b)[Math.floor(lateMs.length / 2)].toFixed(1)} ms, `
        + `throughput ${rate.toFixed(3)}/s vs derived ${SHIPPING_API_RATE.toFixed(3)}/s`);
      // THEN the provider's counter (a half-open second at each arrival) never saw more than 5
      expect(providerMax).toBeLessThanOrEqual(SHIPPING_API_REQUESTS);
      // AND the calls came at the derived rate (within 3 %), the slots exactly at it
      expect(Math.abs(rate / SHIPPING_API_RATE - 1)).toBeLessThanOrEqual(0.03);
      expect(SHIPPING_API_LIMIT.windowRule?.requests).toBe(5);
    } finally {
      await runner.stop();
    }
  });
});
