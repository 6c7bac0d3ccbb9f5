// The partial batch response of an SQS consumer (ReportBatchItemFailures), with FIFO ordering: once a message of a
// group fails, the group's later messages are failed unprocessed so they keep their order on redelivery.

/** An SQS record as far as its fate in the batch response goes. */
export interface BatchRecord {
  readonly messageId: string;
  readonly attributes?: { readonly MessageGroupId?: string };
}

export class BatchFailures {
  /** The `batchItemFailures` of the response. */
  readonly items: { itemIdentifier: string }[] = [];
  private readonly failedGroups = new Set<string>();

  /** Whether `record` waits behind a failed message of its FIFO group; if so it is failed unprocessed. */
  blocked(record: BatchRecord): boolean {
    const group = record.attributes?.MessageGroupId;
    if (group === undefined || !this.failedGroups.has(group)) return false;
    this.items.push({ itemIdentifier: record.messageId });
    return true;
  }

  /** Fails `record` (it is redelivered), and with it the rest of its FIFO group in this batch. */
  fail(record: BatchRecord): void {
    this.items.push({ itemIdentifier: record.messageId });
    const group = record.attributes?.MessageGroupId;
    if (group !== undefined) this.failedGroups.add(group);
  }
}
