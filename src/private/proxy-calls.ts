import * as sfn from 'aws-cdk-lib/aws-stepfunctions';

// Which route of a ThrottledApiProxy a task calls, for the checks that compare a limiter with the proxy's throttle.
// A registry rather than a public type: the task is aws-cdk-lib's CallApiGatewayRestApiEndpoint.

export interface ProxyCall {
  /** The proxy's construct path. */
  readonly proxyPath: string;
  /** `METHOD /path`. */
  readonly route: string;
  /** The throttle in force on the route (its own, or the stage's). */
  readonly throttle: { readonly rateLimit: number; readonly burstLimit: number };
}

export const proxyCalls = new WeakMap<sfn.State, ProxyCall>();
