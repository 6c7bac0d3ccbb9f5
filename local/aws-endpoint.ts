// A local stand-in for the AWS APIs handlers call besides DynamoDB: Lambda Invoke (REST), the Step Functions
// task-token callbacks (JSON 1.0) and SQS SendMessage (JSON 1.0). The runner points AWS_ENDPOINT_URL_LAMBDA,
// AWS_ENDPOINT_URL_SFN and AWS_ENDPOINT_URL_SQS at it, so bundled handlers use their real SDK clients, unchanged.
import { createHash } from 'crypto';
import * as http from 'http';
import type { AddressInfo } from 'net';
import type { LocalMessageAttribute } from './sqs';

export interface LocalEndpointHandlers {
  /**
   * Runs a function by name or ARN; throws (name, message) when it fails, or a `localServiceError` for an
   * error of the Lambda service itself. Undefined when there is no such function.
   */
  readonly invoke: (functionName: string, payload: unknown) => Promise<unknown> | undefined;
  /** Settles a waiting task; false when no task waits for the token. */
  readonly taskSuccess: (token: string, output: unknown) => boolean;
  readonly taskFailure: (token: string, error: string, cause: string) => boolean;
  /** Sends a message to a queue of the template, by URL; undefined when there is no such queue. */
  readonly sendMessage?: (queueUrl: string, body: string, groupId?: string, attributes?: Record<string, LocalMessageAttribute>) => string | undefined;
}

/** Step Functions' limit on a task's output (SendTaskSuccess), UTF-8 bytes. */
const MAX_TASK_OUTPUT_BYTES = 262_144;

/** Marks an error as one of an AWS service's API (not of a function's code), with its HTTP status. */
const SERVICE_ERROR = Symbol.for('cdk-sfn-throttle.localServiceError');

/**
 * An error the Lambda service answers an Invoke with, instead of running the function: a stand-in throws it to
 * play, e.g., a throttled target — `localServiceError('TooManyRequestsException', 429, 'Rate exceeded')`. The
 * local endpoint answers the call with that HTTP status and `x-amzn-errortype`, as Lambda does; a Step Functions
 * `lambda:invoke` task fails with `Lambda.<name>`.
 */
export function localServiceError(name: string, statusCode: number, message: string): Error {
  return Object.assign(new Error(message), { name, [SERVICE_ERROR]: statusCode });
}

/** The HTTP status of a `localServiceError`, or undefined for any other error. */
export function serviceErrorStatus(err: unknown): number | undefined {
  return err !== null && typeof err === 'object' ? (err as any)[SERVICE_ERROR] : undefined;
}

export interface LocalEndpoint {
  readonly url: string;
  stop(): Promise<void>;
}

export async function startLocalEndpoint(handlers: LocalEndpointHandlers): Promise<LocalEndpoint> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      void route(req, Buffer.concat(chunks).toString('utf8'), handlers).then(({ status, headers, body }) => {
        res.writeHead(status, headers);
        res.end(body);
      });
    });
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

interface Reply { status: number; headers: Record<string, string>; body: string }

const json = (status: number, body: unknown, type = 'application/json', extra: Record<string, string> = {}): Reply =>
  ({ status, headers: { 'content-type': type, ...extra }, body: JSON.stringify(body) });

async function route(req: http.IncomingMessage, body: string, h: LocalEndpointHandlers): Promise<Reply> {
  const invoke = /^\/2015-03-31\/functions\/([^/]+)\/invocations/.exec(req.url ?? '');
  if (req.method === 'POST' && invoke) {
    const name = decodeURIComponent(invoke[1]);
    const payload = body === '' ? null : JSON.parse(body);
    const run = h.invoke(name, payload);
    if (!run) return json(404, { Type: 'User', Message: `Function not found: ${name}` }, 'application/json', { 'x-amzn-errortype': 'ResourceNotFoundException' });
    try {
      const out = await run;
      return json(200, out ?? null, 'application/json', { 'x-amz-executed-version': '$LATEST' });
    } catch (err) {
      const e = err as Error;
      const status = serviceErrorStatus(err);
      if (status !== undefined) {
        return json(status, { Type: 'Service', message: e.message, Message: e.message }, 'application/json', { 'x-amzn-errortype': e.name });
      }
      let errorType = e.name ?? 'Error';
      let errorMessage = e.message;
      // The runner's functions report failures the way Lambda does: the message is the JSON error envelope.
      try {
        const envelope = JSON.parse(e.message);
        errorType = envelope.errorType ?? errorType;
        errorMessage = envelope.errorMessage ?? errorMessage;
      } catch { /* a plain message */ }
      return json(200, { errorType, errorMessage, trace: [] }, 'application/json', { 'x-amz-function-error': 'Unhandled' });
    }
  }
  const target = String(req.headers['x-amz-target'] ?? '');
  const sfnType = 'application/x-amz-json-1.0';
  if (target.startsWith('AWSStepFunctions.')) {
    const input = JSON.parse(body || '{}');
    let found: boolean;
    switch (target) {
      case 'AWSStepFunctions.SendTaskSuccess': {
        const output = String(input.output ?? 'null');
        if (Buffer.byteLength(output, 'utf8') > MAX_TASK_OUTPUT_BYTES) {
          return json(400, { __type: 'ValidationException', message: `1 validation error detected: Value at 'output' failed to satisfy constraint: Member must have length less than or equal to ${MAX_TASK_OUTPUT_BYTES}` }, sfnType);
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(output);
        } catch {
          return json(400, { __type: 'InvalidOutput', message: 'The provided JSON output data is invalid' }, sfnType);
        }
        found = h.taskSuccess(input.taskToken, parsed);
        break;
      }
      case 'AWSStepFunctions.SendTaskFailure':
        found = h.taskFailure(input.taskToken, input.error ?? '', input.cause ?? '');
        break;
      case 'AWSStepFunctions.SendTaskHeartbeat':
        found = true;
        break;
      default:
        return json(400, { __type: 'UnknownOperationException', message: `${target} is not served locally` }, sfnType);
    }
    return found ? json(200, {}, sfnType) : json(400, { __type: 'TaskDoesNotExist', message: 'no task waits for this token' }, sfnType);
  }
  if (target === 'AmazonSQS.SendMessage' && h.sendMessage) {
    const input = JSON.parse(body || '{}');
    const attributes = input.MessageAttributes
      ? Object.fromEntries(Object.entries(input.MessageAttributes as Record<string, any>).map(([k, a]) => [k, {
        DataType: a.DataType,
        ...(a.BinaryValue !== undefined ? { BinaryValue: Buffer.from(a.BinaryValue, 'base64') } : { StringValue: a.StringValue }),
      }]))
      : undefined;
    let messageId: string | undefined;
    try {
      messageId = h.sendMessage(input.QueueUrl, input.MessageBody, input.MessageGroupId, attributes);
    } catch (err) {
      return json(400, { __type: `com.amazonaws.sqs#${(err as Error).name}`, message: (err as Error).message }, sfnType);
    }
    if (messageId === undefined) {
      return json(400, { __type: 'com.amazonaws.sqs#QueueDoesNotExist', message: `The specified queue does not exist: ${input.QueueUrl}` }, sfnType);
    }
    return json(200, { MessageId: messageId, MD5OfMessageBody: createHash('md5').update(String(input.MessageBody ?? '')).digest('hex') }, sfnType);
  }
  return json(400, { message: `the local endpoint does not serve ${req.method} ${req.url} (${target})` });
}
