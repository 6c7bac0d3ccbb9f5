import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { App, CfnResource, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { aslOf } from './support/asl';
import { expectCallsHoldSlots } from './support/decisions';
import { quiet } from './support/quiet';
import { FanOutStack, CARRIER_RATE, CRM_RATE } from '../examples/fan-out/stack';
import { InferenceBatchStack, BATCH_SIZE, ENDPOINT_CONCURRENCY } from '../examples/inference-batch/stack';
import { OrdersDatabaseStack } from '../examples/orders-database/stack';
import { PartnerOutageStack, PARTNER_FAILURES } from '../examples/partner-outage/stack';
import { ShippingApiStack, SHIPPING_API_BURST, SHIPPING_API_RATE } from '../examples/shipping-api/stack';
import { ShippingApiProxyStack } from '../examples/shipping-api-proxy/stack';
import { apiGatewayStandIn } from '../local/api-gateway';
import { LocalRunner, statesEntered } from '../local/runner';
import { type Admission, nowUs, sleep } from '../local/timing';
import { RateLimiter } from '../src';

const ENV = { env: { account: '123456789012', region: 'us-east-1' } };

describe('examples', () => {
  test.each([
    ['shipping-api', () => new ShippingApiStack(new App(), 'ShippingApiExample', ENV)],
    ['inference-batch', () => new InferenceBatchStack(new App(), 'InferenceBatchExample', ENV)],
    ['fan-out', () => new FanOutStack(new App(), 'FanOutExample', ENV)],
    ['orders-database', () => new OrdersDatabaseStack(new App(), 'OrdersDatabaseExample', ENV)],
    ['partner-outage', () => new PartnerOutageStack(new App(), 'PartnerOutageExample', ENV)],
    ['shipping-api-proxy', () => new ShippingApiProxyStack(new App(), 'ShippingApiProxyExample', ENV)],
  ] as [string, () => Stack][])('%s synthesizes (snapshot)', (_name, make) => {
    expect(Template.fromStack(make()).toJSON()).toMatchSnapshot();
  });

  test('(a) inference batch: batches of 25 from the S3 reader, never more than 4 in flight at the endpoint', async () => {
    const stack = new InferenceBatchStack(new App(), 'InferenceBatchExample', ENV);
    expect(aslOf(Template.fromStack(stack)).States['Score Dataset']).toMatchObject({
      ItemReader: { Resource: 'arn:<AWS::Partition>:states:::s3:getObject', ReaderConfig: { InputType: 'JSON' } },
      ItemBatcher: { MaxItemsPerBatch: BATCH_SIZE },
      MaxConcurrency: ENDPOINT_CONCURRENCY,
      ToleratedFailurePercentage: 1,
    });
    let inFlight = 0;
    let maxInFlight = 0;
    const runner = await LocalRunner.start(stack, stack.machine, {
      itemReaders: { 'Score Dataset': () => Array.from({ length: 210 }, (_, id) => ({ id, text: `record ${id}` })) },
      taskHandlers: {
        'Score Batch': async (input: any) => {
          maxInFlight = Math.max(maxInFlight, ++inFlight);
          await sleep(50);
          inFlight--;
          const records = JSON.parse(input.Body);
          return { Body: JSON.stringify(records.map((r: any) => ({ id: r.id, score: (r.id % 10) / 10 }))) };
        },
      },
    });
    try {
      const r = await runner.run({});
      expect(r.status).toBe('SUCCEEDED');
      // 210 records: 8 batches of 25 and one of 10, each scored
      expect(r.output.map((b: any) => b.scores.length)).toEqual([25, 25, 25, 25, 25, 25, 25, 25, 10]);
      expect(maxInFlight).toBe(ENDPOINT_CONCURRENCY);
    } finally {
      await runner.stop();
    }
  });

  test('(b) shipping API: 20 orders at once, 20 % answered 429 first — 5/s holds at the API, every label saved', async () => {
    const stack = new ShippingApiStack(new App(), 'ShippingApiExample', ENV);
    const calls: Admission[] = [];
    const seen = new Set<string>();
    const runner = await LocalRunner.start(stack, stack.machine, {
      dynamoDbProcess: true,
      taskHandlers: {
        'Create Shipping Label': (input: any) => {
          calls.push({ atUs: nowUs(), tokens: 1 });
          const id: string = input.RequestBody.orderId;
          // every fifth order is refused once with 429, the way a strict provider answers
          if (Number(id.split('-')[1]) % 5 === 0 && !seen.has(id)) {
            seen.add(id);
            throw Object.assign(new Error('Too Many Requests'), { name: 'States.Http.StatusCode.429' });
          }
          return { ResponseBody: { trackingNumber: `TRK-${id}` }, StatusCode: 200 };
        },
      },
    });
    try {
      const results = await quiet(() => Promise.all(Array.from({ length: 20 }, (_, i) => runner.run({ orderId: `order-${i}`, address: {} }))));
      expect(results.filter((r) => r.status !== 'SUCCEEDED').map((r) => [r.error, r.cause])).toEqual([]);
      expect(calls).toHaveLength(24);
      expectCallsHoldSlots(calls.map((c) => c.atUs), runner.grants, SHIPPING_API_RATE, SHIPPING_API_BURST);
      const labels = stack.getLogicalId(stack.labels.node.defaultChild as any);
      const saved = await runner.db.client.send(new GetItemCommand({ TableName: runner.nameOf(labels), Key: { orderId: { S: 'order-5' } } }));
      expect(saved.Item?.trackingNumber).toEqual({ S: 'TRK-order-5' });
    } finally {
      await runner.stop();
    }
  });

  test('(c) fan-out: each branch within its own downstream limit', async () => {
    const stack = new FanOutStack(new App(), 'FanOutExample', ENV);
    const carrier: Admission[] = [];
    const crm: Admission[] = [];
    const runner = await LocalRunner.start(stack, stack.machine, {
      dynamoDbProcess: true,
      taskHandlers: {
        'Notify Carrier': () => carrier.push({ atUs: nowUs(), tokens: 1 }) && { Entries: [{ EventId: 'c' }] },
        'Update CRM': () => crm.push({ atUs: nowUs(), tokens: 1 }) && { Entries: [{ EventId: 'r' }] },
      },
    });
    try {
      const results = await quiet(() => Promise.all(Array.from({ length: 8 }, (_, i) => runner.run({ orderId: `o-${i}` }))));
      expect(results.filter((r) => r.status !== 'SUCCEEDED').map((r) => [r.error, r.cause])).toEqual([]);
      expect([carrier.length, crm.length]).toEqual([8, 8]);
      const limiterId = (id: string) => stack.getLogicalId(
        (stack.node.findChild(id) as RateLimiter).acquireFunction.node.defaultChild as CfnResource);
      const grantsOf = (id: string) => runner.grants.filter((g) => g.functionLogicalId === limiterId(id));
      expectCallsHoldSlots(carrier.map((c) => c.atUs), grantsOf('CarrierLimit'), CARRIER_RATE, 1);
      expectCallsHoldSlots(crm.map((c) => c.atUs), grantsOf('CrmLimit'), CRM_RATE, 2);
      // the CRM branch did not wait for the carrier's slower limit (at the limiter's decisions)
      const last = (xs: { atUs: number }[]) => Math.max(...xs.map((x) => x.atUs));
      expect(last(grantsOf('CrmLimit'))).toBeLessThan(last(grantsOf('CarrierLimit')) - 1_000_000);
    } finally {
      await runner.stop();
    }
  });

  test('(d) partner outage: 5 server errors open the breaker; the next payments are parked without a call or a token', async () => {
    const stack = new PartnerOutageStack(new App(), 'PartnerOutageExample', ENV);
    let calls = 0;
    const runner = await LocalRunner.start(stack, stack.machine, {
      taskHandlers: {
        'Charge Payment': () => {
          calls++;
          throw Object.assign(new Error('Internal Server Error'), { name: 'States.Http.StatusCode.500' });
        },
      },
    });
    try {
      const run = (i: number) => runner.run({ paymentId: `pay-${i}`, amount: 10 });
      // one after another: the first five reach the partner and fail, each counted
      const first = await quiet(async () => { const out = []; for (let i = 0; i < PARTNER_FAILURES; i++) out.push(await run(i)); return out; });
      expect(first.map((r) => r.error)).toEqual(Array.from({ length: PARTNER_FAILURES }, () => 'ChargeFailed'));
      expect(calls).toBe(PARTNER_FAILURES);
      // open: ten more at once are parked, none calls the partner or acquires a token
      const parked = await quiet(() => Promise.all(Array.from({ length: 10 }, (_, i) => run(100 + i))));
      expect(parked.map((r) => r.status)).toEqual(Array.from({ length: 10 }, () => 'SUCCEEDED'));
      expect(calls).toBe(PARTNER_FAILURES);
      expect(parked.map((r) => statesEntered(r, 'Partner Acquire') + statesEntered(r, 'Charge Payment'))).toEqual(Array.from({ length: 10 }, () => 0));
      const table = stack.getLogicalId(stack.parked.node.defaultChild as any);
      const item = await runner.db.client.send(new GetItemCommand({ TableName: runner.nameOf(table), Key: { paymentId: { S: 'pay-105' } } }));
      expect(item.Item?.reason?.S).toMatch(/^circuit breaker payments-partner-breaker is open for key default \(opened 20.*\): not called, retry after 20/);
    } finally {
      await runner.stop();
    }
  });

  test('(e) shipping API behind the proxy: 20 orders at once through a stand-in that enforces the proxy\'s throttle — every label created, every 429 retried with a token', async () => {
    const stack = new ShippingApiProxyStack(new App(), 'ShippingApiProxyExample', ENV);
    const api = apiGatewayStandIn(stack.proxy, {
      'POST /labels': (req) => ({ status: 201, body: { trackingNumber: `TRK-${(req.body as any).orderId}` } }),
    });
    const runner = await LocalRunner.start(stack, stack.machine, { dynamoDbProcess: true, integrations: [api.integration] });
    try {
      const results = await quiet(() => Promise.all(Array.from({ length: 20 }, (_, i) => runner.run({ orderId: `order-${i}`, address: {} }))));
      expect(results.filter((r) => r.status !== 'SUCCEEDED').map((r) => [r.error, r.cause])).toEqual([]);
      expect(results.map((r) => r.output.label.ResponseBody.trackingNumber).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `TRK-order-${i}`).sort());
      const created = api.calls.filter((c) => c.status === 201).length;
      const refused = api.calls.filter((c) => c.status === 429).length;
      expect(created).toBe(20);
      // every call held a token: acquires = calls (each 429 went back through the limiter)
      expect(results.reduce((n, r) => n + statesEntered(r, 'Create Label Acquire'), 0)).toBe(created + refused);
    } finally {
      await runner.stop();
    }
  });
});
