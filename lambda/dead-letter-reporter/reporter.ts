// The dead-letter reporter's core. BufferedQueueConsumer re-points its queue's redrive policy at an internal
// queue this function consumes, so every message that leaves the buffer unprocessed — whatever the reason: each
// receive failed, the dispatcher crashed or timed out — passes here first. For a message a workflow waits on
// (`waitForResult`), it fails the waiting task with `DispatchFailed` (the dispatcher cannot: a crashed dispatcher
// never sees its last attempt); then it forwards the message, body unchanged, to the consumer's dead-letter
// queue, with attributes saying why, so the DLQ keeps every dead message and the DLQ-depth alarm still sees it.
import { ThrottleErrors } from '../../src/errors';
import { DeadLetterAttributes, MAX_SQS_MESSAGE_BYTES } from '../../src/private/contract';
import { GONE, parseBody } from '../dispatcher/dispatcher';
import { BatchFailures } from '../shared/batch-failures';

/** A message attribute as the SQS event source hands it to Lambda. */
export interface RecordAttribute {
  readonly dataType: string;
  readonly stringValue?: string;
  readonly binaryValue?: string;
}

export interface DeadLetterRecord {
  readonly messageId: string;
  readonly body: string;
  readonly attributes?: { readonly MessageGroupId?: string; readonly ApproximateReceiveCount?: string };
  readonly messageAttributes?: Record<string, RecordAttribute>;
}

/** A message attribute as SendMessage takes it. */
export interface ForwardAttribute {
  readonly DataType: string;
  readonly StringValue?: string;
  readonly BinaryValue?: Uint8Array;
}

export interface ReporterDeps {
  readonly sendTaskFailure: (token: string, error: string, cause: string) => Promise<void>;
  /** Sends the message to the dead-letter queue (FIFO: in its group, deduplicated by its message id). */
  readonly forward: (record: DeadLetterRecord, attributes: Record<string, ForwardAttribute>) => Promise<void>;
  readonly warn: (message: string) => void;
  /** The buffer's maxReceiveCount, quoted in the cause. */
  readonly maxReceiveCount?: number;
}

export interface ReportSummary {
  readonly batchItemFailures: { itemIdentifier: string }[];
  /** Waiting executions failed with DispatchFailed. */
  readonly reported: number;
  /** Messages forwarded to the dead-letter queue. */
  readonly forwarded: number;
}

/** SQS takes at most 10 message attributes. */
const MAX_ATTRIBUTES = 10;

/** Why a message was dead-lettered, as the waiting execution and the DLQ see it. */
export function deadLetterCause(record: DeadLetterRecord, maxReceiveCount?: number): string {
  const receives = maxReceiveCount === undefined ? 'its receives' : `${maxReceiveCount} receive(s)`;
  const count = record.attributes?.ApproximateReceiveCount;
  return `message ${record.messageId} was not dispatched within ${receives} (every delivery failed, or the dispatcher crashed or timed out) `
    + `and was moved to the dead-letter queue${count ? ` (ApproximateReceiveCount ${count} at the reporter)` : ''}`;
}

/**
 * The attributes a forwarded message carries: its own, then the error and cause — as long as SQS takes them
 * (10 attributes, 256 KiB with the body). The body is never changed.
 */
export function forwardedAttributes(record: DeadLetterRecord, error: string | undefined, cause: string): Record<string, ForwardAttribute> {
  const out: Record<string, ForwardAttribute> = {};
  let bytes = Buffer.byteLength(record.body, 'utf8');
  const size = (name: string, a: ForwardAttribute) => Buffer.byteLength(name) + Buffer.byteLength(a.DataType)
    + (a.StringValue !== undefined ? Buffer.byteLength(a.StringValue) : a.BinaryValue?.length ?? 0);
  for (const [name, a] of Object.entries(record.messageAttributes ?? {})) {
    const converted: ForwardAttribute = a.binaryValue !== undefined
      ? { DataType: a.dataType, BinaryValue: Buffer.from(a.binaryValue, 'base64') }
      : { DataType: a.dataType, StringValue: a.stringValue ?? '' };
    out[name] = converted;
    bytes += size(name, converted);
  }
  const ours: [string, string | undefined][] = [[DeadLetterAttributes.ERROR, error], [DeadLetterAttributes.CAUSE, cause]];
  for (const [name, value] of ours) {
    if (value === undefined || name in out) continue;
    const a = { DataType: 'String', StringValue: value };
    if (Object.keys(out).length >= MAX_ATTRIBUTES || bytes + size(name, a) > MAX_SQS_MESSAGE_BYTES) continue;
    out[name] = a;
    bytes += size(name, a);
  }
  return out;
}

/**
 * Reports and forwards one batch. A message whose report fails (other than "nobody waits any more") or whose
 * forward fails is a batch item failure, tried again; FIFO: the rest of its group waits behind it.
 */
export async function reportBatch(records: readonly DeadLetterRecord[], deps: ReporterDeps): Promise<ReportSummary> {
  const failures = new BatchFailures();
  let reported = 0;
  let forwarded = 0;
  for (const record of records) {
    if (failures.blocked(record)) continue;
    const fail = () => failures.fail(record);
    const cause = deadLetterCause(record, deps.maxReceiveCount);
    const { taskToken } = parseBody(record.body);
    let error: string | undefined;
    if (taskToken !== undefined) {
      error = ThrottleErrors.DISPATCH_FAILED;
      try {
        await deps.sendTaskFailure(taskToken, error, cause);
        reported++;
      } catch (err) {
        const name = (err as Error)?.name;
        if (!GONE.has(name)) {
          deps.warn(`message ${record.messageId}: could not fail its waiting execution (${name}: ${(err as Error)?.message}); it will be tried again`);
          fail();
          continue;
        }
        // Already failed (an earlier try of this message), timed out, or stopped: nobody waits any more.
      }
    }
    try {
      await deps.forward(record, forwardedAttributes(record, error, cause));
      forwarded++;
    } catch (err) {
      deps.warn(`message ${record.messageId}: could not forward it to the dead-letter queue (${(err as Error)?.name}: ${(err as Error)?.message}); it will be tried again`);
      fail();
    }
  }
  return { batchItemFailures: failures.items, reported, forwarded };
}
