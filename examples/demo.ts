// npm run demo: synthesizes the shipping-API example and runs it on this machine — 100 orders, each its own
// execution, through the provider's rule as the guide's Scenario 2 states it (5 requests per second, no burst:
// Limit.perWindow) shared by all of them — then charts the calls the (stub) shipping API received per second and
// judges them with the provider's own counter: at each arrival, the calls in the second before it (a sliding,
// half-open window). Exits non-zero if that counter ever exceeded 5.
import { App } from 'aws-cdk-lib';
import { adaptiveDemo } from './adaptive-demo';
import { ShippingApiStack, SHIPPING_API_BURST, SHIPPING_API_LIMIT, SHIPPING_API_RATE, SHIPPING_API_REQUESTS } from './shipping-api/stack';
import { perSecond, perSecondChart, progressBar } from '../local/chart';
import { LocalRunner } from '../local/runner';
import { type Admission, maxInWindow, nowUs, windowViolations } from '../local/timing';

const ORDERS = Number(process.env.DEMO_ORDERS ?? 100);
const out = process.stdout;
const tty = out.isTTY === true;

async function main(): Promise<number> {
  const started = nowUs();
  const app = new App();
  const stack = new ShippingApiStack(app, 'ShippingApiExample', { env: { account: '123456789012', region: 'us-east-1' } });
  out.write(`cdk-sfn-throttle demo: ${ORDERS} orders → a shipping API that accepts ${SHIPPING_API_REQUESTS} requests in any second, no burst `
    + `(${SHIPPING_API_LIMIT.description}: ${SHIPPING_API_RATE.toFixed(3)}/s, burst ${SHIPPING_API_BURST}), all executions at once\n`);

  const calls: Admission[] = [];
  let failed = 0;
  const runner = await LocalRunner.start(stack, stack.machine, {
    dynamoDbProcess: true,
    taskHandlers: {
      // The provider: records when each request arrives and answers with a tracking number.
      'Create Shipping Label': (input: any) => {
        calls.push({ atUs: nowUs(), tokens: 1 });
        return { ResponseBody: { trackingNumber: `TRK-${input.RequestBody.orderId}` }, StatusCode: 200 };
      },
    },
  });
  out.write(`synthesized and started locally in ${((nowUs() - started) / 1e6).toFixed(1)} s (dynalite, the acquire Lambda from its bundle)\n`);

  const write = process.stdout.write.bind(process.stdout);
  const bar = progressBar({ write, isTTY: tty }, ORDERS, 'orders shipped', () => `${calls.length} API calls`);
  // The acquire Lambda logs one EMF line per call: keep the terminal for the progress bar.
  (process.stdout as any).write = () => true;
  let results;
  try {
    results = await Promise.all(Array.from({ length: ORDERS }, async (_, i) => {
      const r = await runner.run({ orderId: `order-${i + 1}`, address: { city: 'Lisbon' } });
      if (r.status !== 'SUCCEEDED') {
        failed++;
        if (failed === 1) process.stderr.write(`first failure: ${r.error}: ${String(r.cause).slice(0, 400)}\n`);
      }
      bar.tick(r.status !== 'SUCCEEDED');
      return r;
    }));
  } finally {
    (process.stdout as any).write = write;
    await runner.stop();
  }
  bar.end();

  // Calls per second, from the first call.
  const t0 = Math.min(...calls.map((c) => c.atUs));
  out.write(`\nAPI calls per second (the provider's ${SHIPPING_API_REQUESTS} per second marked │):\n`);
  out.write(perSecondChart(perSecond(calls.map((c) => c.atUs)), SHIPPING_API_REQUESTS));

  // The provider's own counter: at each arrival, the calls in the second that ends with it (a half-open window
  // (t − 1 s, t]); and the stricter closed window [t, t + 1 s].
  const providerMax = maxInWindow(calls, 999_999);
  const closedMax = maxInWindow(calls, 1_000_000);
  // How late each call reached the provider after its slot (the start jitter the derivation assumes at most
  // 100 ms): the i-th arrival against the i-th slot (slots are 220 ms apart, so arrivals keep their slots' order).
  const slots = runner.grants.map((g) => g.atUs).sort((a, b) => a - b);
  const arrivals = calls.map((c) => c.atUs).sort((a, b) => a - b);
  const lateness = arrivals.map((a, i) => a - slots[i]);
  const maxLateMs = Math.max(...lateness) / 1000;
  const violations = [100_000, 1_000_000, 5_000_000].reduce((n, w) => n + windowViolations(calls, SHIPPING_API_RATE, SHIPPING_API_BURST, w), 0);
  const elapsed = (nowUs() - started) / 1e6;
  const ideal = (ORDERS - SHIPPING_API_BURST) / SHIPPING_API_RATE;
  const spread = (Math.max(...calls.map((c) => c.atUs)) - t0) / 1e6;
  out.write(`\n${results.length - failed} of ${ORDERS} orders shipped, ${calls.length} API calls in ${spread.toFixed(1)} s (ideal ${ideal.toFixed(1)} s), demo took ${elapsed.toFixed(1)} s\n`);
  const ok = providerMax <= SHIPPING_API_REQUESTS && failed === 0;
  out.write(`${ok ? 'PASS' : 'FAIL'}: the provider's counter (calls in the second up to each arrival) saw at most ${providerMax}, its limit ${SHIPPING_API_REQUESTS}; `
    + `a closed 1 s window at most ${closedMax}; calls reached it at most ${maxLateMs.toFixed(1)} ms after their slots (derivation: ${SHIPPING_API_LIMIT.windowRule!.startJitter!.toMilliseconds()} ms); `
    + `${violations} windows over the limiter's own bound (0.1 s, 1 s, 5 s)${failed ? `; ${failed} orders failed` : ''}\n`);
  return ok ? 0 : 1;
}

(process.argv[2] === 'adaptive' ? adaptiveDemo() : main()).then((code) => process.exit(code), (err) => {
  process.stderr.write(`demo failed: ${err?.stack ?? err}\n`);
  process.exit(2);
});
