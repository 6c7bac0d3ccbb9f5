import { dispatchBatch, type DispatchDeps, limiterAcquire, parseBody, type QueueRecord, TASK_TOKEN_FIELD } from '../../lambda/dispatcher/dispatcher';
import { Limiter } from '../../lambda/rate-limiter/limiter';
import { MemoryBucketStore } from '../../lambda/rate-limiter/store';

const record = (id: string, body: unknown, group?: string): QueueRecord => ({
  messageId: id,
  body: typeof body === 'string' ? body : JSON.stringify(body),
  attributes: group ? { MessageGroupId: group } : {},
});
const envelope = (token: string, input: unknown) => ({ [TASK_TOKEN_FIELD]: token, input });

/** An error as the AWS SDK throws it when the Lambda service answers an Invoke with 429. */
const tooManyRequests = () => Object.assign(new Error('Rate Exceeded.'), { name: 'TooManyRequestsException', $metadata: { httpStatusCode: 429 } });

function deps(overrides: Partial<DispatchDeps> = {}) {
  const log: string[] = [];
  const d: DispatchDeps = {
    invoke: async (payload: any) => {
      log.push(`invoke ${JSON.stringify(payload)}`);
      return payload?.fail ? { ok: false, error: 'Boom', cause: '{"errorMessage":"boom"}' } : { ok: true, output: { echoed: payload } };
    },
    sendTaskSuccess: async (token, output) => { log.push(`success ${token} ${output}`); },
    sendTaskFailure: async (token, error, cause) => { log.push(`failure ${token} ${error} ${cause}`); },
    warn: (m) => log.push(`warn ${m}`),
    ...overrides,
  };
  return { d, log };
}
const invokes = (log: string[]) => log.filter((l) => l.startsWith('invoke'));

describe('dispatcher core', () => {
  test('bodies: JSON is parsed, other text passed as is, the workflow envelope unwrapped', () => {
    expect(parseBody('{"a":1}')).toEqual({ payload: { a: 1 } });
    expect(parseBody('plain text')).toEqual({ payload: 'plain text' });
    expect(parseBody(JSON.stringify(envelope('t-1', { a: 1 })))).toEqual({ payload: { a: 1 }, taskToken: 't-1' });
  });

  test('a failed invocation is a batch item failure; successes are not', async () => {
    const { d } = deps();
    const r = await dispatchBatch([record('1', { n: 1 }), record('2', { fail: true }), record('3', { n: 3 })], d);
    expect(r).toEqual({ batchItemFailures: [{ itemIdentifier: '2' }], invoked: 3, reported: 0, unreached: 0 });
  });

  test('the Lambda service answers message 2 with 429: 1 and 3 are invoked once each, only 2 is returned', async () => {
    // Today's failure: the rejected invoke rejected the whole batch, so SQS delivered 1 (already run) again and 3
    // was not processed in that delivery.
    const { d, log } = deps({
      invoke: async (payload: any) => {
        log.push(`invoke ${JSON.stringify(payload)}`);
        if (payload.n === 2) throw tooManyRequests();
        return { ok: true, output: null };
      },
    });
    const r = await dispatchBatch([record('1', { n: 1 }), record('2', { n: 2 }), record('3', { n: 3 })], d);
    expect(r.batchItemFailures).toEqual([{ itemIdentifier: '2' }]);
    expect(invokes(log)).toEqual(['invoke {"n":1}', 'invoke {"n":2}', 'invoke {"n":3}']);
    expect(log.filter((l) => l.startsWith('warn'))).toEqual([expect.stringMatching(/message 2: the invoke failed \(TooManyRequestsException: Rate Exceeded\.\); it will be redelivered/)]);
  });

  test('every other error of a message fails that message only: acquire (any error), invoke, reporting', async () => {
    let acquires = 0;
    const { d, log } = deps({
      acquire: async () => {
        if (++acquires === 1) throw Object.assign(new Error('table throttled'), { name: 'LimiterUnavailable' });
      },
      invoke: async (payload: any) => {
        log.push(`invoke ${JSON.stringify(payload)}`);
        if (payload.n === 2) throw new TypeError('socket hang up');
        return { ok: true, output: payload };
      },
      sendTaskSuccess: async (token) => {
        if (token === 't-3') throw Object.assign(new Error('throttled'), { name: 'ThrottlingException' });
      },
    });
    const r = await dispatchBatch([
      record('1', { n: 1 }), record('2', { n: 2 }), record('3', envelope('t-3', { n: 3 })), record('4', envelope('t-4', { n: 4 })),
    ], d);
    expect(r).toEqual({ batchItemFailures: [{ itemIdentifier: '1' }, { itemIdentifier: '2' }, { itemIdentifier: '3' }], invoked: 3, reported: 1, unreached: 0 });
    expect(invokes(log)).toEqual(['invoke {"n":2}', 'invoke {"n":3}', 'invoke {"n":4}']);
  });

  test('FIFO: after a failure, the group\'s later messages fail unprocessed; other groups go on', async () => {
    const { d, log } = deps();
    const r = await dispatchBatch([
      record('1', { n: 1 }, 'a'), record('2', { fail: true }, 'a'), record('3', { n: 3 }, 'a'), record('4', { n: 4 }, 'b'),
    ], d);
    expect(r.batchItemFailures).toEqual([{ itemIdentifier: '2' }, { itemIdentifier: '3' }]);
    expect(invokes(log)).toEqual(['invoke {"n":1}', 'invoke {"fail":true}', 'invoke {"n":4}']);
  });

  test('FIFO: a 429 on a group\'s message stops that group (it and every later message of it returned); other groups go on', async () => {
    const { d, log } = deps({
      invoke: async (payload: any) => {
        log.push(`invoke ${JSON.stringify(payload)}`);
        if (payload.n === 2) throw tooManyRequests();
        return { ok: true, output: null };
      },
    });
    const r = await dispatchBatch([
      record('1', { n: 1 }, 'a'), record('2', { n: 2 }, 'a'), record('5', { n: 5 }, 'b'), record('3', { n: 3 }, 'a'), record('6', { n: 6 }, 'b'),
    ], d);
    expect(r.batchItemFailures).toEqual([{ itemIdentifier: '2' }, { itemIdentifier: '3' }]);
    expect(invokes(log)).toEqual(['invoke {"n":1}', 'invoke {"n":2}', 'invoke {"n":5}', 'invoke {"n":6}']);
  });

  test('waiting workflows get the output or the error, and the message is settled either way', async () => {
    const { d, log } = deps();
    const r = await dispatchBatch([record('1', envelope('t-1', { n: 1 })), record('2', envelope('t-2', { fail: true }))], d);
    expect(r).toEqual({ batchItemFailures: [], invoked: 2, reported: 2, unreached: 0 });
    expect(log).toContain('success t-1 {"echoed":{"n":1}}');
    expect(log).toContain('failure t-2 Boom {"errorMessage":"boom"}');
  });

  test('a result over 256 KiB: SendTaskFailure DispatchFailed with the size, the message settled, the target invoked once', async () => {
    const { d, log } = deps({
      invoke: async (payload: any) => {
        log.push(`invoke ${JSON.stringify(payload)}`);
        return { ok: true, output: { blob: 'x'.repeat(300_000) } };
      },
    });
    const r = await dispatchBatch([record('m-1', envelope('t-1', { n: 1 }))], d);
    expect(log.some((l) => l.startsWith('success'))).toBe(false);
    expect(invokes(log)).toHaveLength(1);
    expect(r.batchItemFailures).toEqual([]);
    expect(log.filter((l) => l.startsWith('failure'))).toEqual([
      'failure t-1 DispatchFailed message m-1: the target succeeded but its result cannot be reported: it is 300011 bytes of JSON, over Step Functions\' limit of 262144 bytes '
      + 'for a task\'s output. The target is not run again for this message.',
    ]);
  });

  test('a result Step Functions refuses (InvalidOutput) or that is not JSON-serializable: DispatchFailed, settled', async () => {
    const circular: any = {};
    circular.self = circular;
    const { d, log } = deps({
      invoke: async (payload: any) => ({ ok: true, output: payload.n === 1 ? { n: 1 } : circular }),
      sendTaskSuccess: async () => { throw Object.assign(new Error('The provided JSON output data is invalid'), { name: 'InvalidOutput' }); },
    });
    const r = await dispatchBatch([record('1', envelope('t-1', { n: 1 })), record('2', envelope('t-2', { n: 2 }))], d);
    expect(r).toEqual({ batchItemFailures: [], invoked: 2, reported: 2, unreached: 0 });
    const failures = log.filter((l) => l.startsWith('failure'));
    expect(failures[0]).toMatch(/^failure t-1 DispatchFailed message 1: .*Step Functions refused it \(InvalidOutput: The provided JSON output data is invalid\)/);
    expect(failures[1]).toMatch(/^failure t-2 DispatchFailed message 2: .*it is not JSON-serializable \(TypeError: /);
  });

  test('a token the workflow no longer waits for drops the message; a failed report redelivers it', async () => {
    const gone = deps({ sendTaskSuccess: async () => { throw Object.assign(new Error('timed out'), { name: 'TaskTimedOut' }); } });
    const r1 = await dispatchBatch([record('1', envelope('t', {}))], gone.d);
    expect(r1.batchItemFailures).toEqual([]);
    const down = deps({ sendTaskSuccess: async () => { throw Object.assign(new Error('throttled'), { name: 'ThrottlingException' }); } });
    const r2 = await dispatchBatch([record('1', envelope('t', {}))], down.d);
    expect(r2.batchItemFailures).toEqual([{ itemIdentifier: '1' }]);
  });

  test('no token (refused beyond maxWait): the message is not invoked and comes back later', async () => {
    const { d, log } = deps({ acquire: async () => { throw Object.assign(new Error('retry after 900 ms'), { name: 'RateLimitExceeded' }); } });
    const r = await dispatchBatch([record('1', { n: 1 })], d);
    expect(r).toEqual({ batchItemFailures: [{ itemIdentifier: '1' }], invoked: 0, reported: 0, unreached: 0 });
    expect(invokes(log)).toEqual([]);
  });

  describe('deadline (a fake clock: the limiter, its waits, the target calls and the time left all read it)', () => {
    /**
     * A dispatcher run of `timeoutMs` with the real Limiter (RESERVE, in-memory store) at `ratePerSecond`, burst 1,
     * maxWait 5 min; each target call takes `callMs`. Sleeping for a slot moves the clock to it.
     */
    function deadlineRun(opts: { timeoutMs: number; ratePerSecond: number; callMs: number; targetTimeoutMs: number; marginMs: number }) {
      const startUs = 1_000_000_000_000;
      let nowUs = startUs;
      const store = new MemoryBucketStore();
      const limiter = new Limiter({ limiterName: 'l', ratePerSecond: opts.ratePerSecond, burst: 1, shards: 1, maxWaitMs: 300_000 }, {
        store, clockUs: () => nowUs, random: () => 0, initialLookaheadUs: 100_000,
      });
      const remainingMs = () => opts.timeoutMs - (nowUs - startUs) / 1000;
      const tokens: { maxWaitMs: number; slotS: number }[] = [];
      const calls: { n: number; remainingMs: number }[] = [];
      const refused: number[] = [];
      let asked = 0;
      // the handler's acquire, over the fake clock: sleeping until the slot moves the clock there
      const take = limiterAcquire(limiter, 'k', 1, {
        sleepUntilUs: async (atUs) => { nowUs = Math.max(nowUs, atUs); },
        onOutcome: (outcome) => {
          if (outcome.admitted) tokens.push({ maxWaitMs: asked, slotS: (outcome.atUs - startUs) / 1e6 });
          else refused.push(asked);
        },
      });
      const d: DispatchDeps = {
        acquire: async (maxWaitMs) => {
          asked = maxWaitMs;
          await take(maxWaitMs);
        },
        invoke: async (payload: any) => {
          calls.push({ n: payload.n, remainingMs: remainingMs() });
          nowUs += opts.callMs * 1000;
          return { ok: true, output: null };
        },
        sendTaskSuccess: async () => {},
        sendTaskFailure: async () => {},
        warn: () => {},
        remainingMs,
        targetTimeoutMs: opts.targetTimeoutMs,
        marginMs: opts.marginMs,
      };
      const tat = () => ((store.items.get('l#bucket#k#0')?.tat as number) - startUs) / 1e6;
      return { d, tokens, calls, refused, tat };
    }
    const batch = (n: number) => Array.from({ length: n }, (_, i) => record(String(i + 1), { n: i + 1 }));

    test('the handler\'s acquire: a slot is taken only if it comes within maxWaitMs of now, the limiter\'s lookahead included', async () => {
      // Two containers on one bucket (1/s, burst 1). The first takes the token of second 0 (it reserves 100 ms
      // ahead: tat 1.1 s). The second reserves 400 ms ahead: its slot would be 1.1 s from now.
      const nowUs = 5_000_000_000_000;
      const store = new MemoryBucketStore();
      const config = { limiterName: 'l', ratePerSecond: 1, burst: 1, shards: 1, maxWaitMs: 300_000 };
      const first = new Limiter(config, { store, clockUs: () => nowUs, random: () => 0, initialLookaheadUs: 100_000 });
      const second = new Limiter(config, { store, clockUs: () => nowUs, random: () => 0, initialLookaheadUs: 400_000 });
      const slots: number[] = [];
      const hooks = { sleepUntilUs: async (atUs: number) => { slots.push((atUs - nowUs) / 1000); } };
      await limiterAcquire(first, 'k', 1, hooks)(60_000);
      await expect(limiterAcquire(second, 'k', 1, hooks)(1_000)).rejects.toMatchObject({ name: 'RateLimitExceeded' });
      await limiterAcquire(second, 'k', 1, hooks)(1_200);
      expect(slots).toEqual([100, 1_100]);
    });

    test('a dispatcher of a class below HIGH never reserves: refused, it sleeps its retry-after and takes the token then, within its deadline', async () => {
      // GIVEN a bucket of 1/s, burst 1 whose token of second 0 is taken (by a HIGH caller)
      let nowUs = 5_000_000_000_000;
      const store = new MemoryBucketStore();
      const config = { limiterName: 'l', ratePerSecond: 1, burst: 1, shards: 1, maxWaitMs: 300_000 };
      const limiter = new Limiter(config, { store, clockUs: () => nowUs, random: () => 0, initialLookaheadUs: 0 });
      await limiter.acquire({ key: 'k', tokens: 1, mode: 'RESERVE', priority: 'HIGH' });
      const start = nowUs;
      const outcomes: boolean[] = [];
      const hooks = {
        sleepUntilUs: async (atUs: number) => { nowUs = Math.max(nowUs, atUs); },
        onOutcome: (o: { admitted: boolean }) => outcomes.push(o.admitted),
        clockUs: () => nowUs,
      };
      // WHEN a LOW dispatcher acquires with 5 s left, and another with 0.5 s left
      await limiterAcquire(limiter, 'k', 1, hooks, 'LOW')(5_000);
      // THEN the first was refused, slept until the bucket emptied (1 s, + up to 20 ms) and was admitted at once then
      expect(outcomes).toEqual([false, true]);
      expect((nowUs - start) / 1000).toBeGreaterThanOrEqual(1_000);
      expect((nowUs - start) / 1000).toBeLessThanOrEqual(1_020);
      await expect(limiterAcquire(limiter, 'k', 1, hooks, 'LOW')(500)).rejects.toMatchObject({ name: 'RateLimitExceeded' });
    });

    test('a limit derived from a provider\'s window rule: a slot answered later than half the start jitter is given up and another taken', async () => {
      // GIVEN a bucket of 4.545/s (5 per second, 100 ms jitter) whose first answer comes back 300 ms after its slot
      let nowUs = 5_000_000_000_000;
      const store = new MemoryBucketStore();
      let slowCalls = 1;
      const takeIdle = store.takeIdle.bind(store);
      store.takeIdle = async (...a: Parameters<MemoryBucketStore['takeIdle']>) => {
        const r = await takeIdle(...a);
        if (slowCalls-- > 0) nowUs += 300_000;
        return r;
      };
      const config = { limiterName: 'l', ratePerSecond: 5 / 1.1, burst: 1, shards: 1, maxWaitMs: 300_000 };
      const limiter = new Limiter({ ...config, startJitterMs: 100 }, { store, clockUs: () => nowUs, random: () => 0, initialLookaheadUs: 0 });
      const outcomes: { admitted: boolean; atUs?: number; lateTokens?: number }[] = [];
      const slept: number[] = [];
      const hooks = {
        sleepUntilUs: async (atUs: number) => { slept.push(atUs); nowUs = Math.max(nowUs, atUs); },
        onOutcome: (o: any) => outcomes.push({ admitted: o.admitted, atUs: o.atUs, lateTokens: o.lateTokens }),
        clockUs: () => nowUs,
      };
      // WHEN the dispatcher acquires with the window rule's 100 ms jitter (the late slot would be at `firstSlot`)
      const firstSlot = nowUs;
      await limiterAcquire(limiter, 'k', 1, hooks)(60_000);
      // THEN the late slot was given up by the limiter (never slept to, no call: its one token reported as late) and
      // the call went at the next one, 220 ms later
      expect(outcomes).toEqual([{ admitted: true, atUs: expect.any(Number), lateTokens: 1 }]);
      expect(slept).toEqual([outcomes[0].atUs]);
      expect(outcomes[0].atUs! - firstSlot).toBeGreaterThanOrEqual(220_000);
      // AND without the rule the late slot is used
      slowCalls = 1;
      const plain: number[] = [];
      await limiterAcquire(new Limiter({ ...config, limiterName: 'm' }, { store, clockUs: () => nowUs, random: () => 0, initialLookaheadUs: 0 }), 'k', 1,
        { ...hooks, sleepUntilUs: async (atUs: number) => { plain.push(atUs); } })(60_000);
      expect(plain).toHaveLength(1);
    });

    test('a batch that cannot finish in time: what is not reached is returned, no token taken for it, every call started with the target\'s timeout + margin left', async () => {
      // 60 s dispatcher, one token per 10 s, a 9 s call, a 10 s target timeout and a 3 s margin: slots at 0.1 (the
      // limiter reserves 100 ms ahead before it has measured its store), 10.1, 20.1, 30.1, 40.1 s; at 49.1 s 10.9 s
      // are left, less than 10 + 3 (+ 0.5 for the acquire call): messages 6 to 10 are not reached.
      const run = deadlineRun({ timeoutMs: 60_000, ratePerSecond: 0.1, callMs: 9_000, targetTimeoutMs: 10_000, marginMs: 3_000 });
      const r = await dispatchBatch(batch(10), run.d);
      expect(r).toEqual({
        batchItemFailures: ['6', '7', '8', '9', '10'].map((itemIdentifier) => ({ itemIdentifier })), invoked: 5, reported: 0, unreached: 5,
      });
      expect(run.tokens.map((t) => t.slotS)).toEqual([0.1, 10.1, 20.1, 30.1, 40.1]);
      // the wait each acquire was allowed: what the deadline left after the call's needs
      expect(run.tokens.map((t) => t.maxWaitMs)).toEqual([46_500, 37_400, 27_400, 17_400, 7_400]);
      expect(run.tat()).toBeCloseTo(50.1, 6); // five tokens in the bucket, none for messages 6 to 10
      expect(run.calls.map((c) => c.n)).toEqual([1, 2, 3, 4, 5]);
      for (const c of run.calls) expect(c.remainingMs).toBeGreaterThanOrEqual(13_000);
    });

    test('a slot later than the deadline allows is not taken (RESERVE capped by the time left), and the message is returned', async () => {
      // 5 s calls: slots at 0.1, 10.1, 20.1, 30.1, 40.1 s; at 45.1 s the next slot (50.1 s) is 5 s away, but only
      // 14.9 − 13.5 = 1.4 s may be waited: refused without a token, as is every later message of the batch.
      const run = deadlineRun({ timeoutMs: 60_000, ratePerSecond: 0.1, callMs: 5_000, targetTimeoutMs: 10_000, marginMs: 3_000 });
      const r = await dispatchBatch(batch(7), run.d);
      expect(r.batchItemFailures).toEqual([{ itemIdentifier: '6' }, { itemIdentifier: '7' }]);
      expect(r.invoked).toBe(5);
      expect(run.tokens.map((t) => t.slotS)).toEqual([0.1, 10.1, 20.1, 30.1, 40.1]);
      expect(run.refused).toEqual([1_400, 1_400]);
      expect(run.tat()).toBeCloseTo(50.1, 6);
    });

    test('without a limiter: no invoke starts with less than the target\'s timeout + margin left', async () => {
      let left = 20_000;
      const { d, log } = deps({
        invoke: async (payload: any) => {
          log.push(`invoke ${JSON.stringify(payload)}`);
          left -= 6_000;
          return { ok: true, output: null };
        },
        remainingMs: () => left,
        targetTimeoutMs: 6_000,
        marginMs: 3_000,
      });
      const r = await dispatchBatch(batch(4), d);
      // 20 s, 14 s ≥ 9 s: invoked; 8 s < 9 s: messages 3 and 4 returned
      expect(r).toEqual({ batchItemFailures: [{ itemIdentifier: '3' }, { itemIdentifier: '4' }], invoked: 2, reported: 0, unreached: 2 });
      expect(invokes(log)).toEqual(['invoke {"n":1}', 'invoke {"n":2}']);
    });
  });
});
