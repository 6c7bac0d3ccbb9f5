// An in-memory SQS for the local runner, with the semantics BufferedQueueConsumer relies on: visibility timeout,
// receive count, redrive to a dead-letter queue after maxReceiveCount receives, batch receives, deletes by
// receipt handle, and FIFO message-group order (a group with a message in flight delivers nothing else).
//
// No maintained SQS emulator installs from npm, so this is the runner's own; test/local/sqs.test.ts checks it
// against those semantics.

export interface LocalQueueOptions {
  readonly name: string;
  readonly fifo?: boolean;
  /** Milliseconds a received message stays invisible. */
  readonly visibilityTimeoutMs: number;
  /** The dead-letter queue and how many receives a message gets before it moves there. */
  readonly redrive?: { readonly deadLetterQueue: LocalQueue; readonly maxReceiveCount: number };
}

/** A message attribute, as SendMessage takes it. */
export interface LocalMessageAttribute {
  readonly DataType: string;
  readonly StringValue?: string;
  readonly BinaryValue?: Uint8Array;
}

export interface LocalMessage {
  readonly messageId: string;
  readonly body: string;
  readonly groupId?: string;
  readonly attributes?: Record<string, LocalMessageAttribute>;
  readonly sentAtMs: number;
  receiveCount: number;
  /** Epoch ms before which the message is not delivered. */
  visibleAtMs: number;
  receiptHandle?: string;
}

/** A message attribute as the SQS event source passes it to Lambda. */
export interface ReceivedAttribute {
  readonly dataType: string;
  readonly stringValue?: string;
  readonly binaryValue?: string;
  readonly stringListValues: [];
  readonly binaryListValues: [];
}

/** What a receive hands out: the message as the SQS event source passes it to Lambda. */
export interface ReceivedMessage {
  readonly messageId: string;
  readonly receiptHandle: string;
  readonly body: string;
  readonly attributes: { ApproximateReceiveCount: string; SentTimestamp: string; MessageGroupId?: string };
  readonly messageAttributes: Record<string, ReceivedAttribute>;
  readonly eventSource: 'aws:sqs';
  readonly eventSourceARN: string;
}

let sequence = 0;

export class LocalQueue {
  /** Messages in arrival order (FIFO order for a FIFO queue). */
  private readonly messages: LocalMessage[] = [];
  /** Called whenever a message may have become available. */
  private readonly waiters = new Set<() => void>();
  public readonly arn: string;

  constructor(public readonly options: LocalQueueOptions, region = 'us-east-1', account = '123456789012') {
    this.arn = `arn:aws:sqs:${region}:${account}:${options.name}`;
  }

  /** Sets where messages go after `maxReceiveCount` receives. */
  public setRedrive(deadLetterQueue: LocalQueue, maxReceiveCount: number): void {
    (this as { options: LocalQueueOptions }).options = { ...this.options, redrive: { deadLetterQueue, maxReceiveCount } };
  }

  public get name(): string {
    return this.options.name;
  }

  /** Messages stored (visible or in flight). */
  public get depth(): number {
    return this.messages.length;
  }

  /** A snapshot of the stored messages' bodies, in order. */
  public bodies(): string[] {
    return this.messages.map((m) => m.body);
  }

  /** A snapshot of the stored messages (id, body, group, message attributes), in order. */
  public stored(): { messageId: string; body: string; groupId?: string; attributes?: Record<string, LocalMessageAttribute> }[] {
    return this.messages.map(({ messageId, body, groupId, attributes }) => ({ messageId, body, groupId, attributes }));
  }

  public send(body: string, groupId?: string, attributes?: Record<string, LocalMessageAttribute>): string {
    if (this.options.fifo && groupId === undefined) throw Object.assign(new Error(`queue ${this.name} is FIFO: MessageGroupId is required`), { name: 'MissingParameter' });
    if (!this.options.fifo && groupId !== undefined) throw Object.assign(new Error(`queue ${this.name} is not FIFO: MessageGroupId is not allowed`), { name: 'InvalidParameterValue' });
    const messageId = `local-${++sequence}`;
    this.messages.push({ messageId, body, groupId, attributes, sentAtMs: Date.now(), receiveCount: 0, visibleAtMs: 0 });
    this.notify();
    return messageId;
  }

  /**
   * Receives up to `max` visible messages. A message already received maxReceiveCount times moves to the
   * dead-letter queue instead of being delivered again.
   */
  public receive(max: number, now = Date.now()): ReceivedMessage[] {
    const out: ReceivedMessage[] = [];
    const busyGroups = new Set(this.messages.filter((m) => m.groupId !== undefined && m.visibleAtMs > now).map((m) => m.groupId!));
    for (let i = 0; i < this.messages.length && out.length < max; i++) {
      const m = this.messages[i];
      if (m.visibleAtMs > now) continue;
      if (this.options.fifo && busyGroups.has(m.groupId!) && !out.some((r) => r.attributes.MessageGroupId === m.groupId)) continue;
      if (this.options.redrive && m.receiveCount >= this.options.redrive.maxReceiveCount) {
        this.messages.splice(i--, 1);
        this.options.redrive.deadLetterQueue.messages.push({ ...m, receiveCount: 0, visibleAtMs: 0, receiptHandle: undefined });
        this.options.redrive.deadLetterQueue.notify();
        continue;
      }
      m.receiveCount++;
      m.visibleAtMs = now + this.options.visibilityTimeoutMs;
      m.receiptHandle = `${m.messageId}#${m.receiveCount}`;
      if (m.groupId !== undefined) busyGroups.add(m.groupId);
      out.push({
        messageId: m.messageId,
        receiptHandle: m.receiptHandle,
        body: m.body,
        attributes: {
          ApproximateReceiveCount: String(m.receiveCount),
          SentTimestamp: String(m.sentAtMs),
          ...(m.groupId !== undefined ? { MessageGroupId: m.groupId } : {}),
        },
        messageAttributes: Object.fromEntries(Object.entries(m.attributes ?? {}).map(([name, a]) => [name, {
          dataType: a.DataType,
          ...(a.BinaryValue !== undefined ? { binaryValue: Buffer.from(a.BinaryValue).toString('base64') } : { stringValue: a.StringValue }),
          stringListValues: [] as [],
          binaryListValues: [] as [],
        }])),
        eventSource: 'aws:sqs',
        eventSourceARN: this.arn,
      });
    }
    return out;
  }

  /** Deletes a received message; a stale receipt handle (the message was received again since) is ignored. */
  public delete(receiptHandle: string): void {
    const i = this.messages.findIndex((m) => m.receiptHandle === receiptHandle);
    if (i >= 0) {
      this.messages.splice(i, 1);
      this.notify();
    }
  }

  /** Makes a received message visible again now (what a failed batch item becomes after its timeout). */
  public release(receiptHandle: string, delayMs = 0): void {
    const m = this.messages.find((x) => x.receiptHandle === receiptHandle);
    if (m) {
      m.visibleAtMs = Date.now() + delayMs;
      this.notify();
    }
  }

  /** When the next message becomes visible, epoch ms (Infinity when empty). */
  public nextVisibleAtMs(): number {
    return this.messages.reduce((t, m) => Math.min(t, m.visibleAtMs), Number.POSITIVE_INFINITY);
  }

  /** Resolves when a message may be available, or after `ms`. */
  public waitForMessages(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.waiters.add(done);
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** What the SQS event source mapping needs from a function. */
export type BatchHandler = (event: { Records: ReceivedMessage[] }) => Promise<unknown>;

export interface EventSourceOptions {
  readonly batchSize: number;
  /** Milliseconds to gather a fuller batch. */
  readonly maxBatchingWindowMs: number;
  /** Concurrent batches (the mapping's MaximumConcurrency). */
  readonly maxConcurrency: number;
  /** Whether the function reports partial batch failures. */
  readonly reportBatchItemFailures: boolean;
}

/**
 * Feeds a queue to a function as the SQS event source mapping does: up to `maxConcurrency` pollers each receive
 * a batch, invoke the function and delete what succeeded. A batch whose invocation fails is retried after the
 * visibility timeout (with partial batch failures, only the failed items).
 */
export class LocalEventSource {
  private running = true;
  private readonly pollers: Promise<void>[] = [];
  /** Invocations made, and the most batches in flight at once. */
  public invocations = 0;
  public maxInFlight = 0;
  private inFlight = 0;

  constructor(private readonly queue: LocalQueue, private readonly handler: BatchHandler, private readonly options: EventSourceOptions) {
    for (let i = 0; i < options.maxConcurrency; i++) this.pollers.push(this.poll());
  }

  public async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.pollers);
  }

  private async poll(): Promise<void> {
    while (this.running) {
      let batch = this.queue.receive(this.options.batchSize);
      if (batch.length > 0 && batch.length < this.options.batchSize && this.options.maxBatchingWindowMs > 0) {
        await this.queue.waitForMessages(this.options.maxBatchingWindowMs);
        batch = batch.concat(this.queue.receive(this.options.batchSize - batch.length));
      }
      if (batch.length === 0) {
        await this.queue.waitForMessages(Math.min(50, Math.max(1, this.queue.nextVisibleAtMs() - Date.now())));
        continue;
      }
      this.invocations++;
      this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
      let failed: Set<string>;
      try {
        const res: any = await this.handler({ Records: batch });
        failed = this.options.reportBatchItemFailures
          ? new Set(((res?.batchItemFailures ?? []) as { itemIdentifier: string }[]).map((f) => f.itemIdentifier))
          : new Set();
      } catch {
        failed = new Set(batch.map((m) => m.messageId));
      } finally {
        this.inFlight--;
      }
      // Failed items stay invisible until their visibility timeout ends, then come back.
      for (const m of batch) if (!failed.has(m.messageId)) this.queue.delete(m.receiptHandle);
    }
  }
}
