// A stand-in for a ThrottledApiProxy in the local runner: serves the optimized API Gateway integration
// (`arn:aws:states:::apigateway:invoke`) from local route handlers, behind a token bucket per route with the proxy's
// throttle (its own, or the stage's default — API Gateway applies the stage throttle to each method, not to their sum).
// A request above the bucket is answered 429, raised as `ApiGateway.429`, as Step Functions names a failed call
// `ApiGateway.<status>`.
import type { ServiceIntegration } from './integrations';
import { nowUs } from './timing';

/** What a route handler gets. */
export interface ApiRequest {
  readonly method: string;
  /** The path called (`/labels/42`). */
  readonly path: string;
  /** The route's parameters (`{ id: '42' }`). */
  readonly pathParameters: Record<string, string>;
  readonly body?: unknown;
  readonly query?: Record<string, string[]>;
  readonly headers?: Record<string, string[]>;
}

/** What a route handler answers: a body (200), or a status with a body. */
export type ApiResponse = { readonly status: number; readonly body?: unknown } | unknown;

export type ApiHandler = (request: ApiRequest) => ApiResponse | Promise<ApiResponse>;

/** The proxy as the stand-in reads it (a ThrottledApiProxy). */
export interface ThrottledRoutes {
  readonly routeKeys: string[];
  throttleOf(method: string, path: string): { readonly rateLimit: number; readonly burstLimit: number };
}

/** A request the stand-in answered. */
export interface ApiCall {
  readonly atUs: number;
  readonly route: string;
  readonly status: number;
}

/** The integration, with every request it answered (429s included). */
export interface ApiGatewayStandIn {
  readonly integration: ServiceIntegration;
  readonly calls: ApiCall[];
}

/** Serves the proxy's routes with `handlers` (by `METHOD /path`), each behind the proxy's throttle. */
export function apiGatewayStandIn(proxy: ThrottledRoutes, handlers: Record<string, ApiHandler>): ApiGatewayStandIn {
  const routes = proxy.routeKeys.map((key) => {
    const [method, path] = key.split(' ');
    const names: string[] = [];
    const pattern = new RegExp(`^${path.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, n) => { names.push(n); return '([^/]+)'; })}$`);
    const t = proxy.throttleOf(method, path);
    return { key, method, pattern, names, rate: t.rateLimit, burst: t.burstLimit, tokens: t.burstLimit, atUs: nowUs() };
  })
    // API Gateway prefers a literal path part to a variable one: /labels/latest before /labels/{id}
    .sort((a, b) => a.names.length - b.names.length);
  const missing = routes.filter((r) => !handlers[r.key]).map((r) => r.key);
  if (missing.length > 0) throw new Error(`apiGatewayStandIn: no handler for route ${missing.join(', ')}`);
  const calls: ApiCall[] = [];
  const integration: ServiceIntegration = {
    name: 'API Gateway (ThrottledApiProxy stand-in)',
    resource: /:states:::apigateway:invoke$/,
    handler: () => async (input: any) => {
      const method = String(input.Method).toUpperCase();
      const path = String(input.Path ?? '/').split('?')[0];
      const route = routes.find((r) => r.method === method && r.pattern.test(path));
      if (!route) {
        calls.push({ atUs: nowUs(), route: `${method} ${path}`, status: 403 });
        throw Object.assign(new Error(JSON.stringify({ message: 'Missing Authentication Token' })), { name: 'ApiGateway.403' });
      }
      let pathParameters: Record<string, string>;
      try {
        const values = route.pattern.exec(path)!.slice(1);
        pathParameters = Object.fromEntries(route.names.map((n, i) => [n, decodeURIComponent(values[i])]));
      } catch {
        calls.push({ atUs: nowUs(), route: route.key, status: 400 });
        throw Object.assign(new Error(JSON.stringify({ message: 'malformed path' })), { name: 'ApiGateway.400' });
      }
      // the route's token bucket, refilled continuously
      const now = nowUs();
      route.tokens = Math.min(route.burst, route.tokens + ((now - route.atUs) / 1e6) * route.rate);
      route.atUs = now;
      if (route.tokens < 1) {
        calls.push({ atUs: now, route: route.key, status: 429 });
        throw Object.assign(new Error(JSON.stringify({ message: 'too many requests: the proxy throttles this route' })), { name: 'ApiGateway.429' });
      }
      route.tokens -= 1;
      const answer = await handlers[route.key]({
        method,
        path,
        pathParameters,
        body: input.RequestBody,
        query: input.QueryParameters,
        headers: input.Headers,
      });
      const shaped = answer !== null && typeof answer === 'object' && typeof (answer as { status?: unknown }).status === 'number'
        ? answer as { status: number; body?: unknown } : { status: 200, body: answer };
      calls.push({ atUs: now, route: route.key, status: shaped.status });
      if (shaped.status >= 300) {
        throw Object.assign(new Error(JSON.stringify(shaped.body ?? {})), { name: `ApiGateway.${shaped.status}` });
      }
      return { StatusCode: shaped.status, StatusText: 'OK', ResponseBody: shaped.body ?? {}, Headers: {} };
    },
  };
  return { integration, calls };
}
