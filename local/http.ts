// HTTP Task states (`arn:aws:states:::http:invoke`, CDK's `tasks.HttpInvoke`) served by local handlers, by URL
// prefix: nothing is sent over the network. A status of 400 or more fails the state as Step Functions does, with
// `States.Http.StatusCode.<status>`.
import type { ServiceIntegration } from './integrations';

/** The request an HTTP Task state makes, as the handler sees it. */
export interface LocalHttpRequest {
  readonly method: string;
  /** ApiEndpoint with the query string (QueryParameters) appended. */
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly query: Record<string, string>;
  /** RequestBody as the state rendered it (JSON). */
  readonly body?: any;
}

/** What an HTTP stand-in answers. */
export interface LocalHttpResponse {
  /** @default 200 */
  readonly status?: number;
  readonly headers?: Record<string, string>;
  /** The response body: ResponseBody of the state's result (JSON). */
  readonly body?: unknown;
}

export type HttpHandler = (request: LocalHttpRequest) => LocalHttpResponse | Promise<LocalHttpResponse>;

/** Serves HTTP Task states whose ApiEndpoint starts with one of the prefixes (the longest prefix wins). */
export function httpIntegration(handlers: Record<string, HttpHandler>): ServiceIntegration {
  const prefixes = Object.keys(handlers).sort((a, b) => b.length - a.length);
  return {
    name: 'HTTP endpoints (httpHandlers)',
    resource: /^arn:aws:states:::http:invoke$/,
    handler: () => async (input: any) => {
      const endpoint = String(input.ApiEndpoint ?? '');
      const prefix = prefixes.find((p) => endpoint.startsWith(p));
      if (prefix === undefined) {
        throw Object.assign(new Error(`no httpHandlers entry serves ${endpoint} (prefixes: ${prefixes.join(', ')}); nothing is sent over the network`), { name: 'States.Runtime' });
      }
      const query = Object.fromEntries(Object.entries(input.QueryParameters ?? {}).map(([k, v]) => [k, String(v)]));
      const qs = new URLSearchParams(query).toString();
      const request: LocalHttpRequest = {
        method: String(input.Method ?? 'GET').toUpperCase(),
        url: qs ? `${endpoint}?${qs}` : endpoint,
        headers: Object.fromEntries(Object.entries(input.Headers ?? {}).map(([k, v]) => [k, String(v)])),
        query,
        body: input.RequestBody,
      };
      const response = await handlers[prefix](request);
      const status = response.status ?? 200;
      const result = { StatusCode: status, StatusText: statusText(status), Headers: response.headers ?? {}, ResponseBody: response.body ?? {} };
      if (status >= 400) {
        throw Object.assign(new Error(JSON.stringify(result)), { name: `States.Http.StatusCode.${status}` });
      }
      return result;
    },
  };
}

function statusText(status: number): string {
  return ({
    200: 'OK',
    201: 'Created',
    202: 'Accepted',
    204: 'No Content',
    400: 'Bad Request',
    401: 'Unauthorized',
    403: 'Forbidden',
    404: 'Not Found',
    429: 'Too Many Requests',
    500: 'Internal Server Error',
    502: 'Bad Gateway',
    503: 'Service Unavailable',
    504: 'Gateway Timeout',
  } as Record<number, string>)[status] ?? '';
}
