import { LocalEventSource, LocalQueue } from '../../local/sqs';

const queue = (opts: { fifo?: boolean; visibilityTimeoutMs?: number; maxReceiveCount?: number } = {}) => {
  const dlq = new LocalQueue({ name: 'dlq', fifo: opts.fifo, visibilityTimeoutMs: 1000 });
  const q = new LocalQueue({ name: 'q', fifo: opts.fifo, visibilityTimeoutMs: opts.visibilityTimeoutMs ?? 1000 });
  if (opts.maxReceiveCount) q.setRedrive(dlq, opts.maxReceiveCount);
  return { q, dlq };
};

describe('in-memory SQS', () => {
  test('a received message is invisible until its visibility timeout ends, then comes back with a higher receive count', () => {
    const { q } = queue({ visibilityTimeoutMs: 1000 });
    q.send('a');
    const t = Date.now();
    const [first] = q.receive(10, t);
    expect(first).toMatchObject({ body: 'a', attributes: { ApproximateReceiveCount: '1' } });
    expect(q.receive(10, t + 999)).toEqual([]);
    expect(q.receive(10, t + 1000)[0]).toMatchObject({ body: 'a', attributes: { ApproximateReceiveCount: '2' } });
  });

  test('delete removes the message; a stale receipt handle does not', () => {
    const { q } = queue({ visibilityTimeoutMs: 10 });
    q.send('a');
    const t = Date.now();
    const stale = q.receive(1, t)[0].receiptHandle;
    const fresh = q.receive(1, t + 10)[0].receiptHandle;
    q.delete(stale);
    expect(q.depth).toBe(1);
    q.delete(fresh);
    expect(q.depth).toBe(0);
  });

  test('batches hold at most the asked number, in order', () => {
    const { q } = queue();
    for (let i = 0; i < 25; i++) q.send(String(i));
    const t = Date.now();
    expect(q.receive(10, t).map((m) => m.body)).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    expect(q.receive(10, t)).toHaveLength(10);
    expect(q.receive(10, t)).toHaveLength(5);
  });

  test('after maxReceiveCount receives the next receive moves the message to the DLQ', () => {
    const { q, dlq } = queue({ visibilityTimeoutMs: 1, maxReceiveCount: 3 });
    q.send('poison');
    let t = Date.now();
    for (let i = 1; i <= 3; i++) {
      expect(q.receive(1, t)[0].attributes.ApproximateReceiveCount).toBe(String(i));
      t += 1;
    }
    expect(q.receive(1, t)).toEqual([]);
    expect(q.depth).toBe(0);
    expect(dlq.bodies()).toEqual(['poison']);
  });

  test('FIFO: one message group in flight at a time, in order; other groups go on', () => {
    const { q } = queue({ fifo: true });
    q.send('a1', 'a');
    q.send('a2', 'a');
    q.send('b1', 'b');
    const t = Date.now();
    // a batch may take several messages of a group, in order
    const first = q.receive(2, t);
    expect(first.map((m) => m.body)).toEqual(['a1', 'a2']);
    // while group a is in flight nothing more of it is delivered, b is
    q.send('a3', 'a');
    expect(q.receive(10, t).map((m) => m.body)).toEqual(['b1']);
    q.delete(first[0].receiptHandle);
    expect(q.receive(10, t)).toEqual([]);
    q.delete(first[1].receiptHandle);
    expect(q.receive(10, t).map((m) => m.body)).toEqual(['a3']);
    expect(() => q.send('x')).toThrow(/MessageGroupId is required/);
  });

  test('the event source deletes what succeeded and redelivers the reported failures', async () => {
    const { q, dlq } = queue({ visibilityTimeoutMs: 20, maxReceiveCount: 2 });
    for (let i = 0; i < 30; i++) q.send(JSON.stringify({ i, bad: i % 10 === 0 }));
    const seen: number[] = [];
    const source = new LocalEventSource(q, async (event) => {
      const failures = [];
      for (const r of event.Records) {
        const body = JSON.parse(r.body);
        seen.push(body.i);
        if (body.bad) failures.push({ itemIdentifier: r.messageId });
      }
      return { batchItemFailures: failures };
    }, { batchSize: 10, maxBatchingWindowMs: 0, maxConcurrency: 3, reportBatchItemFailures: true });
    for (let waited = 0; (q.depth > 0 || dlq.depth < 3) && waited < 5000; waited += 10) await new Promise((r) => setTimeout(r, 10));
    await source.stop();
    expect(q.depth).toBe(0);
    expect(dlq.bodies().map((b) => JSON.parse(b).i).sort((a, b) => a - b)).toEqual([0, 10, 20]);
    // good messages once each, bad ones twice (maxReceiveCount)
    expect(seen.filter((i) => i % 10 !== 0)).toHaveLength(27);
    expect(seen.filter((i) => i % 10 === 0)).toHaveLength(6);
    expect(source.maxInFlight).toBeLessThanOrEqual(3);
  });
});
