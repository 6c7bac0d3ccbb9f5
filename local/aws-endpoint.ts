// A local stand-in for the two AWS APIs handlers call besides DynamoDB: Lambda Invoke (REST) and the Step
// Functions task-token callbacks (JSON 1.0). The runner points AWS_ENDPOINT_URL_LAMBDA and AWS_ENDPOINT_URL_SFN
// at it, so bundled handlers use their real SDK clients, unchanged.
import * as http from 'http';
import type { AddressInfo } from 'net';

export interface LocalEndpointHandlers {
  /** Runs a function by name or ARN; throws (name, message) when it fails. Undefined when there is no such function. */
  readonly invoke: (functionName: string, payload: unknown) => Promise<unknown> | undefined;
  /** Settles a waiting task; false when no task waits for the token. */
  readonly taskSuccess: (token: string, output: unknown) => boolean;
  readonly taskFailure: (token: string, error: string, cause: string) => boolean;
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
      case 'AWSStepFunctions.SendTaskSuccess':
        found = h.taskSuccess(input.taskToken, JSON.parse(input.output ?? 'null'));
        break;
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
  return json(400, { message: `the local endpoint does not serve ${req.method} ${req.url} (${target})` });
}
