import { type DeadLetterRecord, forwardedAttributes, type ReporterDeps, reportBatch } from '../../lambda/dead-letter-reporter/reporter';
import { TASK_TOKEN_FIELD } from '../../lambda/dispatcher/dispatcher';
import { DeadLetterAttributes } from '../../src/private/contract';

const record = (id: string, body: unknown, extra: Partial<DeadLetterRecord> & { group?: string } = {}): DeadLetterRecord => ({
  messageId: id,
  body: typeof body === 'string' ? body : JSON.stringify(body),
  attributes: { ApproximateReceiveCount: '1', ...(extra.group ? { MessageGroupId: extra.group } : {}) },
  messageAttributes: extra.messageAttributes,
});
const envelope = (token: string, input: unknown) => ({ [TASK_TOKEN_FIELD]: token, input });

function deps(overrides: Partial<ReporterDeps> = {}) {
  const log: string[] = [];
  const forwarded: { id: string; body: string; attributes: Record<string, any> }[] = [];
  const d: ReporterDeps = {
    sendTaskFailure: async (token, error, cause) => { log.push(`failure ${token} ${error} ${cause}`); },
    forward: async (r, attributes) => { forwarded.push({ id: r.messageId, body: r.body, attributes }); },
    warn: (m) => log.push(`warn ${m}`),
    maxReceiveCount: 3,
    ...overrides,
  };
  return { d, log, forwarded };
}

describe('dead-letter reporter core', () => {
  test('a waiting execution is failed with DispatchFailed (message id, receives); every message is forwarded unchanged, with why', async () => {
    const { d, log, forwarded } = deps();
    const body = JSON.stringify(envelope('t-1', { order: 7 }));
    const r = await reportBatch([record('m-1', body), record('m-2', { plain: true })], d);
    expect(r).toEqual({ batchItemFailures: [], reported: 1, forwarded: 2 });
    const cause = 'message m-1 was not dispatched within 3 receive(s) (every delivery failed, or the dispatcher crashed or timed out) '
      + 'and was moved to the dead-letter queue (ApproximateReceiveCount 1 at the reporter)';
    expect(log).toEqual([`failure t-1 DispatchFailed ${cause}`]);
    expect(forwarded[0]).toEqual({
      id: 'm-1',
      body,
      attributes: {
        [DeadLetterAttributes.ERROR]: { DataType: 'String', StringValue: 'DispatchFailed' },
        [DeadLetterAttributes.CAUSE]: { DataType: 'String', StringValue: cause },
      },
    });
    // no waiting execution: no error attribute, the cause only
    expect(Object.keys(forwarded[1].attributes)).toEqual([DeadLetterAttributes.CAUSE]);
  });

  test('an execution that no longer waits (TaskTimedOut, an earlier try already failed it) does not stop the forward', async () => {
    const { d, forwarded } = deps({ sendTaskFailure: async () => { throw Object.assign(new Error('closed'), { name: 'TaskTimedOut' }); } });
    const r = await reportBatch([record('m-1', envelope('t-1', {}))], d);
    expect(r).toEqual({ batchItemFailures: [], reported: 0, forwarded: 1 });
    expect(forwarded).toHaveLength(1);
  });

  test('a failed report or a failed forward is a batch item failure (tried again); FIFO: the rest of the group waits', async () => {
    const { d, forwarded } = deps({
      sendTaskFailure: async (token) => { if (token === 't-1') throw Object.assign(new Error('slow down'), { name: 'ThrottlingException' }); },
      forward: async (r, attributes) => {
        if (r.messageId === 'm-3') throw Object.assign(new Error('no'), { name: 'AccessDenied' });
        forwarded.push({ id: r.messageId, body: r.body, attributes });
      },
    });
    const r = await reportBatch([
      record('m-1', envelope('t-1', {}), { group: 'a' }), record('m-2', envelope('t-2', {}), { group: 'a' }),
      record('m-3', {}, { group: 'b' }), record('m-4', {}, { group: 'c' }),
    ], d);
    expect(r.batchItemFailures).toEqual([{ itemIdentifier: 'm-1' }, { itemIdentifier: 'm-2' }, { itemIdentifier: 'm-3' }]);
    expect(forwarded.map((f) => f.id)).toEqual(['m-4']);
  });

  test('forwarded attributes: the message\'s own first, ours only while SQS takes them (10 attributes, 256 KiB with the body)', () => {
    const own = Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`a${i}`, { dataType: 'String', stringValue: `v${i}` }]));
    const nine = forwardedAttributes(record('m', 'x', { messageAttributes: own }), 'DispatchFailed', 'why');
    expect(Object.keys(nine)).toHaveLength(10);
    expect(nine[DeadLetterAttributes.ERROR]).toEqual({ DataType: 'String', StringValue: 'DispatchFailed' });
    expect(nine[DeadLetterAttributes.CAUSE]).toBeUndefined();
    const big = forwardedAttributes(record('m', 'x'.repeat(262_100)), 'DispatchFailed', 'y'.repeat(100));
    expect(Object.keys(big)).toEqual([DeadLetterAttributes.ERROR]);
    const binary = forwardedAttributes(record('m', 'x', { messageAttributes: { b: { dataType: 'Binary', binaryValue: Buffer.from('hi').toString('base64') } } }), undefined, 'c');
    expect(Buffer.from(binary.b.BinaryValue!).toString()).toBe('hi');
  });
});
