// npm run demo: synthesizes the shipping-API example and runs it on this machine — 100 orders, each its own
// execution, through a 5 requests/s limit shared by all of them — then charts the calls the (stub) shipping API
// received per second against the limit. Exits non-zero if the limiter's bound was violated at the API.
import { App } from 'aws-cdk-lib';
import { adaptiveDemo } from './adaptive-demo';
import { ShippingApiStack, SHIPPING_API_BURST, SHIPPING_API_RATE } from './shipping-api/stack';
import { LocalRunner } from '../local/runner';
import { type Admission, maxInWindow, nowUs, windowViolations } from '../local/timing';

const ORDERS = Number(process.env.DEMO_ORDERS ?? 100);
const out = process.stdout;
const tty = out.isTTY === true;

async function main(): Promise<number> {
  const started = nowUs();
  const app = new App();
  const stack = new ShippingApiStack(app, 'ShippingApiExample', { env: { account: '123456789012', region: 'us-east-1' } });
  out.write(`cdk-sfn-throttle demo: ${ORDERS} orders → a shipping API limited to ${SHIPPING_API_RATE} requests/s (burst ${SHIPPING_API_BURST}), all executions at once\n`);

  const calls: Admission[] = [];
  let done = 0;
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
  const progress = () => {
    const width = 40;
    const filled = Math.round((done / ORDERS) * width);
    const line = `[${'█'.repeat(filled)}${'░'.repeat(width - filled)}] ${done}/${ORDERS} orders shipped, ${calls.length} API calls`;
    if (tty) write(`\r${line}`);
    else if (done % 20 === 0 || done === ORDERS) write(`${line}\n`);
  };
  // The acquire Lambda logs one EMF line per call: keep the terminal for the progress bar.
  (process.stdout as any).write = () => true;
  let results;
  try {
    results = await Promise.all(Array.from({ length: ORDERS }, async (_, i) => {
      const r = await runner.run({ orderId: `order-${i + 1}`, address: { city: 'Lisbon' } });
      done++;
      if (r.status !== 'SUCCEEDED') {
        failed++;
        if (failed === 1) process.stderr.write(`first failure: ${r.error}: ${String(r.cause).slice(0, 400)}\n`);
      }
      progress();
      return r;
    }));
  } finally {
    (process.stdout as any).write = write;
    await runner.stop();
  }
  if (tty) out.write('\n');

  // Calls per second, from the first call.
  const t0 = Math.min(...calls.map((c) => c.atUs));
  const seconds = Math.floor((Math.max(...calls.map((c) => c.atUs)) - t0) / 1e6) + 1;
  const perSecond = Array.from({ length: seconds }, (_, s) => calls.filter((c) => Math.floor((c.atUs - t0) / 1e6) === s).length);
  const scale = Math.max(SHIPPING_API_RATE + SHIPPING_API_BURST, ...perSecond);
  out.write(`\nAPI calls per second (limit ${SHIPPING_API_RATE}/s marked │):\n`);
  perSecond.forEach((n, s) => {
    const bar = Array.from({ length: scale }, (_, k) => (k < n ? '█' : k === SHIPPING_API_RATE ? '│' : ' ')).join('');
    out.write(`  ${String(s).padStart(3)} s  ${bar} ${n}\n`);
  });

  const bound = SHIPPING_API_BURST + SHIPPING_API_RATE; // burst + rate × 1 s
  const max1s = maxInWindow(calls, 1_000_000);
  // A sliding per-second counter (a window that holds t but not t + 1 s), as many APIs count.
  const maxOpen1s = maxInWindow(calls, 999_999);
  const violations = [100_000, 1_000_000, 5_000_000].reduce((n, w) => n + windowViolations(calls, SHIPPING_API_RATE, SHIPPING_API_BURST, w), 0);
  const elapsed = (nowUs() - started) / 1e6;
  const ideal = (ORDERS - SHIPPING_API_BURST) / SHIPPING_API_RATE;
  const spread = (Math.max(...calls.map((c) => c.atUs)) - t0) / 1e6;
  out.write(`\n${results.length - failed} of ${ORDERS} orders shipped, ${calls.length} API calls in ${spread.toFixed(1)} s (ideal ${ideal.toFixed(1)} s), demo took ${elapsed.toFixed(1)} s\n`);
  const ok = violations === 0 && failed === 0 && max1s <= bound;
  out.write(`${ok ? 'PASS' : 'FAIL'}: max ${max1s} calls in any 1 s window, bound ${bound} (burst ${SHIPPING_API_BURST} + ${SHIPPING_API_RATE}/s × 1 s); `
    + `${violations} windows over the bound (0.1 s, 1 s, 5 s); a sliding 1 s counter that excludes its end saw at most ${maxOpen1s}`
    + `${failed ? `; ${failed} orders failed` : ''}\n`);
  return ok ? 0 : 1;
}

(process.argv[2] === 'adaptive' ? adaptiveDemo() : main()).then((code) => process.exit(code), (err) => {
  process.stderr.write(`demo failed: ${err?.stack ?? err}\n`);
  process.exit(2);
});
