import { SFNClient, SendTaskFailureCommand } from '@aws-sdk/client-sfn';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { type DeadLetterRecord, reportBatch } from './reporter';
import { ReporterEnv } from '../../src/private/contract';

// Built once per container, with the default SDK configuration (AWS_ENDPOINT_URL_* can point the clients at
// local emulators).
const deadLetterQueueUrl = requiredEnv(ReporterEnv.DEAD_LETTER_QUEUE_URL);
const fifo = process.env[ReporterEnv.FIFO] === 'true';
const maxReceiveCount = process.env[ReporterEnv.MAX_RECEIVE_COUNT] ? Number(process.env[ReporterEnv.MAX_RECEIVE_COUNT]) : undefined;
// The queue is in this function's region and account, so the regional endpoint is the queue's: do not let the
// client switch to the QueueUrl's host, which would bypass an endpoint configured with AWS_ENDPOINT_URL_SQS.
const sqs = new SQSClient({ useQueueUrlAsEndpoint: false });
const sfn = new SFNClient({});

/** An SQS event source batch from the internal dead-letter reports queue, with partial batch failures. */
export const handler = async (event: { Records: DeadLetterRecord[] }) => {
  const summary = await reportBatch(event.Records ?? [], {
    sendTaskFailure: async (taskToken, error, cause) => {
      await sfn.send(new SendTaskFailureCommand({ taskToken, error: error.slice(0, 256), cause: cause.slice(0, 32_768) }));
    },
    forward: async (record, attributes) => {
      await sqs.send(new SendMessageCommand({
        QueueUrl: deadLetterQueueUrl,
        MessageBody: record.body,
        MessageAttributes: Object.keys(attributes).length > 0 ? attributes : undefined,
        // FIFO: the message keeps its group; its id deduplicates a forward tried again within 5 minutes.
        ...(fifo ? { MessageGroupId: record.attributes?.MessageGroupId ?? 'default', MessageDeduplicationId: record.messageId } : {}),
      }));
    },
    warn: (message) => process.stderr.write(`${JSON.stringify({ level: 'WARN', message })}\n`),
    maxReceiveCount: Number.isFinite(maxReceiveCount) ? maxReceiveCount : undefined,
  });
  return { batchItemFailures: summary.batchItemFailures };
};

function requiredEnv(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is required`);
  return v;
}
