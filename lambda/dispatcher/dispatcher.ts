// The dispatcher's core: takes an SQS batch, and for each message (in order) acquires a token when a limiter is
// configured, waits for its slot, invokes the target once, synchronously, and settles the message — deleted on
// success, left for redelivery (a batch item failure) on error, or reported back to a waiting workflow.

/** The envelope `BufferedQueueConsumer.sendMessageTask({ waitForResult: true })` sends. */
export const TASK_TOKEN_FIELD = 'cdkSfnThrottleTaskToken';

export interface QueueRecord {
  readonly messageId: string;
  readonly body: string;
  readonly attributes?: { readonly MessageGroupId?: string };
}

export type InvokeResult =
  | { readonly ok: true; readonly output: unknown }
  | { readonly ok: false; readonly error: string; readonly cause: string };

export interface DispatchDeps {
  /** Takes one token and resolves at its slot; rejects (the message is retried later) when refused. */
  readonly acquire?: () => Promise<void>;
  /** Invokes the target with one message's payload. */
  readonly invoke: (payload: unknown) => Promise<InvokeResult>;
  readonly sendTaskSuccess: (token: string, output: unknown) => Promise<void>;
  readonly sendTaskFailure: (token: string, error: string, cause: string) => Promise<void>;
  /** Logs a problem that does not change a message's fate. */
  readonly warn: (message: string) => void;
}

export interface DispatchSummary {
  readonly batchItemFailures: { itemIdentifier: string }[];
  /** Target invocations made. */
  readonly invoked: number;
  /** Messages answered to a waiting workflow (success or failure). */
  readonly reported: number;
}

/** A message body: the workflow envelope, or the payload itself (JSON when it parses, else the raw string). */
export function parseBody(body: string): { payload: unknown; taskToken?: string } {
  let parsed: unknown = body;
  try {
    parsed = JSON.parse(body);
  } catch {
    return { payload: body };
  }
  if (parsed !== null && typeof parsed === 'object' && typeof (parsed as any)[TASK_TOKEN_FIELD] === 'string') {
    return { payload: (parsed as any).input, taskToken: (parsed as any)[TASK_TOKEN_FIELD] };
  }
  return { payload: parsed };
}

/**
 * Dispatches one batch. Messages run one after another; with FIFO, once a message of a group fails, the group's
 * later messages are failed unprocessed so they keep their order on redelivery.
 */
export async function dispatchBatch(records: readonly QueueRecord[], deps: DispatchDeps): Promise<DispatchSummary> {
  const failures: { itemIdentifier: string }[] = [];
  const failedGroups = new Set<string>();
  let invoked = 0;
  let reported = 0;
  for (const record of records) {
    const group = record.attributes?.MessageGroupId;
    if (group !== undefined && failedGroups.has(group)) {
      failures.push({ itemIdentifier: record.messageId });
      continue;
    }
    const fail = () => {
      failures.push({ itemIdentifier: record.messageId });
      if (group !== undefined) failedGroups.add(group);
    };
    const { payload, taskToken } = parseBody(record.body);
    try {
      if (deps.acquire) await deps.acquire();
    } catch (err) {
      deps.warn(`message ${record.messageId}: no token (${(err as Error).name}: ${(err as Error).message}); it will be redelivered`);
      fail();
      continue;
    }
    invoked++;
    const result = await deps.invoke(payload);
    if (taskToken === undefined) {
      if (!result.ok) fail();
      continue;
    }
    // A waiting workflow gets the outcome, success or failure: the message is settled either way.
    try {
      if (result.ok) await deps.sendTaskSuccess(taskToken, result.output);
      else await deps.sendTaskFailure(taskToken, result.error, result.cause);
      reported++;
    } catch (err) {
      const name = (err as Error).name;
      if (name === 'TaskTimedOut' || name === 'TaskDoesNotExist' || name === 'InvalidToken') {
        // The workflow stopped waiting: nobody is left to tell, and retrying the target would not change that.
        deps.warn(`message ${record.messageId}: the waiting task is gone (${name}); the message is dropped`);
      } else {
        deps.warn(`message ${record.messageId}: could not report to the workflow (${name}); it will be redelivered`);
        fail();
      }
    }
  }
  return { batchItemFailures: failures, invoked, reported };
}
