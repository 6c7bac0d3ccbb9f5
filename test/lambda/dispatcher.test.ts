import { dispatchBatch, type DispatchDeps, parseBody, type QueueRecord, TASK_TOKEN_FIELD } from '../../lambda/dispatcher/dispatcher';

const record = (id: string, body: unknown, group?: string): QueueRecord => ({
  messageId: id,
  body: typeof body === 'string' ? body : JSON.stringify(body),
  attributes: group ? { MessageGroupId: group } : {},
});

function deps(overrides: Partial<DispatchDeps> = {}) {
  const log: string[] = [];
  const d: DispatchDeps = {
    invoke: async (payload: any) => {
      log.push(`invoke ${JSON.stringify(payload)}`);
      return payload?.fail ? { ok: false, error: 'Boom', cause: '{"errorMessage":"boom"}' } : { ok: true, output: { echoed: payload } };
    },
    sendTaskSuccess: async (token, output) => { log.push(`success ${token} ${JSON.stringify(output)}`); },
    sendTaskFailure: async (token, error) => { log.push(`failure ${token} ${error}`); },
    warn: (m) => log.push(`warn ${m}`),
    ...overrides,
  };
  return { d, log };
}

describe('dispatcher core', () => {
  test('bodies: JSON is parsed, other text passed as is, the workflow envelope unwrapped', () => {
    expect(parseBody('{"a":1}')).toEqual({ payload: { a: 1 } });
    expect(parseBody('plain text')).toEqual({ payload: 'plain text' });
    expect(parseBody(JSON.stringify({ [TASK_TOKEN_FIELD]: 't-1', input: { a: 1 } }))).toEqual({ payload: { a: 1 }, taskToken: 't-1' });
  });

  test('a failed invocation is a batch item failure; successes are not', async () => {
    const { d } = deps();
    const r = await dispatchBatch([record('1', { n: 1 }), record('2', { fail: true }), record('3', { n: 3 })], d);
    expect(r).toEqual({ batchItemFailures: [{ itemIdentifier: '2' }], invoked: 3, reported: 0 });
  });

  test('FIFO: after a failure, the group\'s later messages fail unprocessed; other groups go on', async () => {
    const { d, log } = deps();
    const r = await dispatchBatch([
      record('1', { n: 1 }, 'a'), record('2', { fail: true }, 'a'), record('3', { n: 3 }, 'a'), record('4', { n: 4 }, 'b'),
    ], d);
    expect(r.batchItemFailures).toEqual([{ itemIdentifier: '2' }, { itemIdentifier: '3' }]);
    expect(log.filter((l) => l.startsWith('invoke'))).toEqual(['invoke {"n":1}', 'invoke {"fail":true}', 'invoke {"n":4}']);
  });

  test('waiting workflows get the output or the error, and the message is settled either way', async () => {
    const { d, log } = deps();
    const env = (token: string, input: unknown) => ({ [TASK_TOKEN_FIELD]: token, input });
    const r = await dispatchBatch([record('1', env('t-1', { n: 1 })), record('2', env('t-2', { fail: true }))], d);
    expect(r).toEqual({ batchItemFailures: [], invoked: 2, reported: 2 });
    expect(log).toContain('success t-1 {"echoed":{"n":1}}');
    expect(log).toContain('failure t-2 Boom');
  });

  test('a token the workflow no longer waits for drops the message; a failed report redelivers it', async () => {
    const gone = deps({ sendTaskSuccess: async () => { throw Object.assign(new Error('timed out'), { name: 'TaskTimedOut' }); } });
    const r1 = await dispatchBatch([record('1', { [TASK_TOKEN_FIELD]: 't', input: {} })], gone.d);
    expect(r1.batchItemFailures).toEqual([]);
    const down = deps({ sendTaskSuccess: async () => { throw Object.assign(new Error('throttled'), { name: 'ThrottlingException' }); } });
    const r2 = await dispatchBatch([record('1', { [TASK_TOKEN_FIELD]: 't', input: {} })], down.d);
    expect(r2.batchItemFailures).toEqual([{ itemIdentifier: '1' }]);
  });

  test('no token (refused beyond maxWait): the message is not invoked and comes back later', async () => {
    const { d, log } = deps({ acquire: async () => { throw Object.assign(new Error('retry after 900 ms'), { name: 'RateLimitExceeded' }); } });
    const r = await dispatchBatch([record('1', { n: 1 })], d);
    expect(r).toEqual({ batchItemFailures: [{ itemIdentifier: '1' }], invoked: 0, reported: 0 });
    expect(log.some((l) => l.startsWith('invoke'))).toBe(false);
  });
});
