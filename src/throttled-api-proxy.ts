import { Annotations, Aspects, Duration, Lazy, Names, RemovalPolicy, Stack, Token, Validations } from 'aws-cdk-lib';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { proxyCalls } from './private/proxy-calls';
import { expr, isJsonataExpression, jsonataCatches, jsonataOf, mergeAt, pathOfToken, rendering } from './private/query-language';
import { checkRange, fail } from './private/validation';

/**
 * A throttle of API Gateway: a token bucket refilled at `rateLimit` requests per second holding `burstLimit`.
 */
export interface ProxyThrottle {
  /** Requests per second. Valid range: more than 0, up to 10,000 (the account's default Region quota). */
  readonly rateLimit: number;
  /** Requests at once (the bucket). Valid range: an integer from 1 to 5,000. */
  readonly burstLimit: number;
}

/** How many requests a usage plan's key may make per period. */
export interface ProxyQuota {
  /** Requests per period. Valid range: an integer from 1. */
  readonly limit: number;
  /** The period the quota counts over. */
  readonly period: apigateway.Period;
}

/** A consumer of the proxy: an API key in a usage plan of its own. */
export interface ProxyUsagePlan {
  /** The plan's name (and its key's). Letters, digits, `-` and `_`, 1 to 64 characters; unique per proxy. */
  readonly name: string;
  /**
   * A throttle for this consumer's key, at most the stage's.
   *
   * @default - the stage's throttle
   */
  readonly throttle?: ProxyThrottle;
  /**
   * A quota for this consumer's key.
   *
   * @default - none
   */
  readonly quota?: ProxyQuota;
}

/** What the proxy forwards to. */
export abstract class ProxyTarget {
  /**
   * An external HTTPS API: each route's path is appended to `baseUrl` (e.g. `https://api.shipping.example.com/v1`).
   */
  public static http(baseUrl: string): ProxyTarget {
    return new HttpTarget(baseUrl);
  }

  /** A Lambda function (a proxy integration: it gets the request as the API Gateway event). */
  public static lambda(fn: lambda.IFunction): ProxyTarget {
    return new LambdaTarget(fn);
  }

  /** What it forwards to, for the dashboard and the plan. */
  public abstract readonly description: string;
  /** @internal */
  public abstract _integration(scope: Construct, method: string, path: string, options: RouteOptions): apigateway.Integration;
  /** @internal */
  public abstract _check(scope: Construct): void;
}

class HttpTarget extends ProxyTarget {
  public readonly description: string;
  constructor(private readonly baseUrl: string) {
    super();
    this.description = baseUrl;
  }

  public _check(scope: Construct): void {
    if (Token.isUnresolved(this.baseUrl)) return;
    if (!/^https:\/\/[^\s/?#]+(\/[^\s?#]*)?$/.test(this.baseUrl)) {
      fail(scope, `target (ProxyTarget.http) must be an https:// URL without query or fragment, got ${JSON.stringify(this.baseUrl)}`);
    }
  }

  public _integration(_scope: Construct, method: string, path: string, options: RouteOptions): apigateway.Integration {
    const params = pathParameters(path);
    const requestParameters = Object.fromEntries(params.map((p) => [`integration.request.path.${p}`, `method.request.path.${p}`]));
    const url = `${this.baseUrl.replace(/\/$/, '')}${path === '/' ? '' : path}`;
    const templates = options.requestTemplates !== undefined || options.responseTemplates !== undefined;
    return new apigateway.HttpIntegration(url, {
      httpMethod: method,
      proxy: !templates,
      options: {
        requestParameters,
        ...(templates ? {
          requestTemplates: options.requestTemplates,
          passthroughBehavior: apigateway.PassthroughBehavior.WHEN_NO_TEMPLATES,
          integrationResponses: [
            { statusCode: '200', responseTemplates: options.responseTemplates },
            // the upstream's refusals keep their meaning: a 429 stays a 429 (retried with a token by RetryPolicy)
            { selectionPattern: '429', statusCode: '429' },
            { selectionPattern: '4\\d{2}', statusCode: '400' },
            { selectionPattern: '5\\d{2}', statusCode: '502' },
          ],
        } : {}),
      },
    });
  }
}

class LambdaTarget extends ProxyTarget {
  public readonly description: string;
  constructor(private readonly fn: lambda.IFunction) {
    super();
    this.description = `Lambda ${fn.node.path}`;
  }

  public _check(): void {}

  public _integration(scope: Construct, _method: string, _path: string, options: RouteOptions): apigateway.Integration {
    if (options.requestTemplates !== undefined || options.responseTemplates !== undefined) {
      fail(scope, 'requestTemplates and responseTemplates need ProxyTarget.http(): a Lambda target is a proxy integration (the function shapes its response)');
    }
    return new apigateway.LambdaIntegration(this.fn, { proxy: true });
  }
}

/** How the proxy's callers are authorized. */
export enum ProxyAuthorization {
  /** AWS IAM (Signature Version 4): only principals granted `execute-api:Invoke` on a route may call it. */
  IAM = 'IAM',
  /** IAM and an API key of a usage plan (`x-api-key`): each consumer's key has its own throttle and quota. */
  IAM_AND_API_KEY = 'IAM_AND_API_KEY',
}

/** Options of `ThrottledApiProxy.addRoute()`. */
export interface RouteOptions {
  /**
   * A throttle for this method: it replaces the stage's default for it (a warning when it is above it).
   *
   * @default - the stage's throttle
   */
  readonly throttle?: ProxyThrottle;
  /**
   * Request mapping templates by content type (Velocity), for an HTTP target: the integration is then not a proxy.
   *
   * @default - none: the request is passed as it is
   */
  readonly requestTemplates?: { [contentType: string]: string };
  /**
   * Response mapping templates by content type for the upstream's 200, for an HTTP target.
   *
   * @default - none: the response is passed as it is
   */
  readonly responseTemplates?: { [contentType: string]: string };
  /**
   * A model the request body must match (validated by API Gateway before it is forwarded: 400 otherwise).
   *
   * @default - no request validation
   */
  readonly requestModel?: apigateway.JsonSchema;
}

/** Options of `ThrottledApiProxy.callTask()`. */
export interface ProxyCallOptions {
  /** The route's method, as added. */
  readonly method: string;
  /** The route's path, as added (`/labels/{id}`). */
  readonly path: string;
  /**
   * Values of the path's parameters: literals or JSONPath strings (`JsonPath.stringAt('$.id')`).
   *
   * @default - none (the path has none)
   */
  readonly pathParameters?: { [name: string]: string };
  /**
   * The request body.
   *
   * @default - none
   */
  readonly body?: sfn.TaskInput;
  /**
   * Query parameters (`{ name: [values] }`).
   *
   * @default - none
   */
  readonly query?: sfn.TaskInput;
  /**
   * Request headers (`{ name: [values] }`); with `ProxyAuthorization.IAM_AND_API_KEY`, `x-api-key` goes here.
   *
   * @default - none
   */
  readonly headers?: sfn.TaskInput;
  /**
   * Where the response (`StatusCode`, `ResponseBody`, `Headers`) is put in the task's input (in a JSONata machine:
   * merged there by the task's Output).
   *
   * @default '$.response'
   */
  readonly resultPath?: string;
  /**
   * The query language of the state machine, needed only when the task is nested in a Parallel or Map of yours in a
   * JSONata machine (aws-cdk-lib renders nested states without the machine's language).
   *
   * @default - the state machine's, decided when it is rendered
   */
  readonly queryLanguage?: sfn.QueryLanguage;
}

/** Properties of a `ThrottledApiProxy`. */
export interface ThrottledApiProxyProps {
  /** What the proxy forwards to. */
  readonly target: ProxyTarget;
  /**
   * The stage's throttle: API Gateway applies it to each method that has none of its own — per method, not to their
   * sum (`proxyAboveUpstream` warns when the routes together may exceed `upstreamLimit`).
   */
  readonly stageThrottle: ProxyThrottle;
  /**
   * The limit the upstream API documents: a warning (`proxyAboveUpstream`) when the stage's or a route's throttle is
   * above it.
   *
   * @default - unknown: not checked
   */
  readonly upstreamLimit?: ProxyThrottle;
  /**
   * The stage's name.
   *
   * @default 'prod'
   */
  readonly stageName?: string;
  /**
   * How callers are authorized.
   *
   * @default ProxyAuthorization.IAM
   */
  readonly authorization?: ProxyAuthorization;
  /**
   * Consumers, each with an API key in its own usage plan (throttle, quota). Needs
   * `ProxyAuthorization.IAM_AND_API_KEY`.
   *
   * @default - none
   */
  readonly usagePlans?: ProxyUsagePlan[];
  /**
   * How long access logs are kept.
   *
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly accessLogRetention?: logs.RetentionDays;
  /**
   * X-Ray tracing of the stage.
   *
   * @default true
   */
  readonly tracing?: boolean;
  /**
   * Create the account-level role API Gateway writes logs with (`AWS::ApiGateway::Account`, one per account and
   * Region: access and execution logs need it). Set false where the account already has one.
   *
   * @default true
   */
  readonly cloudWatchRole?: boolean;
}

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];
const PATH = /^\/$|^(\/([A-Za-z0-9._-]+|\{[A-Za-z_][A-Za-z0-9_]*\}))+$/;

function pathParameters(path: string): string[] {
  return [...path.matchAll(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((m) => m[1]);
}

interface Route { readonly method: string; readonly path: string; readonly throttle?: ProxyThrottle }

/**
 * An API Gateway REST API in front of a rate-limited API: a Regional endpoint (the only kind the Step Functions
 * REST API integration calls), IAM authorization, a stage throttle and per-method throttles, usage plans with API
 * keys, JSON access logs, X-Ray, and JSON 429 and 5xx gateway responses. `callTask()` builds the Step Functions task
 * that calls a route, signed with the state machine's role and granted exactly that route; its throttling error
 * (`ApiGateway.429`) is what `RetryPolicy.throttling()` retries by default, so it fits a `RateLimitedTask`.
 *
 * API Gateway's throttling is a best-effort token bucket per Region, not an exact limit: pace the calls with a
 * RateLimiter and keep the gateway as the guard.
 */
export class ThrottledApiProxy extends Construct {
  /** The REST API. */
  public readonly api: apigateway.RestApi;
  /** The stage the throttles apply to. */
  public readonly stageName: string;
  /** The stage's throttle. */
  public readonly stageThrottle: ProxyThrottle;
  /** The upstream's documented limit, when given. */
  public readonly upstreamLimit?: ProxyThrottle;
  /** The access log group. */
  public readonly accessLogGroup: logs.LogGroup;
  /** The API keys of `usagePlans`, by plan name. */
  public readonly apiKeys: { [name: string]: apigateway.IApiKey } = {};
  private readonly routes: Route[] = [];
  private requestValidator?: apigateway.IRequestValidator;
  private readonly target: ProxyTarget;
  private readonly authorization: ProxyAuthorization;

  constructor(scope: Construct, id: string, props: ThrottledApiProxyProps) {
    super(scope, id);
    this.target = props.target;
    this.target._check(this);
    this.stageThrottle = checkedThrottle(this, 'stageThrottle', props.stageThrottle);
    this.upstreamLimit = props.upstreamLimit && checkedThrottle(this, 'upstreamLimit', props.upstreamLimit, { rate: Number.MAX_SAFE_INTEGER, burst: Number.MAX_SAFE_INTEGER });
    this.stageName = props.stageName ?? 'prod';
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(this.stageName)) fail(this, `stageName must be 1 to 128 letters, digits, - or _, got ${JSON.stringify(this.stageName)}`);
    this.authorization = props.authorization ?? ProxyAuthorization.IAM;
    if (this.authorization === ProxyAuthorization.IAM_AND_API_KEY && !props.usagePlans?.length) {
      fail(this, 'authorization ProxyAuthorization.IAM_AND_API_KEY needs usagePlans (every method requires a key: without a plan and its key, every call is refused), got none');
    }
    if (props.usagePlans?.length && this.authorization !== ProxyAuthorization.IAM_AND_API_KEY) {
      fail(this, `usagePlans need authorization ProxyAuthorization.IAM_AND_API_KEY (a plan's throttle and quota apply to its API key), got ${this.authorization}`);
    }
    this.accessLogGroup = new logs.LogGroup(this, 'AccessLogs', {
      retention: props.accessLogRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.api = new apigateway.RestApi(this, 'Api', {
      restApiName: Names.uniqueResourceName(this, { maxLength: 64 }),
      description: `cdk-sfn-throttle proxy ${this.node.path} to ${this.target.description}`,
      // the Step Functions REST API integration calls Regional endpoints only (not edge-optimized, not private)
      endpointConfiguration: { types: [apigateway.EndpointType.REGIONAL] },
      cloudWatchRole: props.cloudWatchRole ?? true,
      cloudWatchRoleRemovalPolicy: RemovalPolicy.DESTROY,
      deployOptions: {
        stageName: this.stageName,
        throttlingRateLimit: this.stageThrottle.rateLimit,
        throttlingBurstLimit: this.stageThrottle.burstLimit,
        tracingEnabled: props.tracing ?? true,
        loggingLevel: apigateway.MethodLoggingLevel.ERROR,
        metricsEnabled: true,
        accessLogDestination: new apigateway.LogGroupLogDestination(this.accessLogGroup),
        // JSON lines, with the API id the throttled-requests metric is dimensioned by
        accessLogFormat: apigateway.AccessLogFormat.custom(JSON.stringify({
          requestId: '$context.requestId',
          apiId: '$context.apiId',
          stage: '$context.stage',
          caller: '$context.identity.caller',
          user: '$context.identity.user',
          requestTime: '$context.requestTime',
          httpMethod: '$context.httpMethod',
          resourcePath: '$context.resourcePath',
          status: '$context.status',
          protocol: '$context.protocol',
          responseLength: '$context.responseLength',
          errorType: '$context.error.responseType',
          integrationStatus: '$context.integration.status',
          latencyMs: '$context.responseLatency',
        })),
      },
      defaultMethodOptions: {
        authorizationType: apigateway.AuthorizationType.IAM,
        apiKeyRequired: this.authorization === ProxyAuthorization.IAM_AND_API_KEY,
      },
    });
    // method throttles: the stage's settings plus one per route that has its own, resolved once every route is added
    const stage = this.api.deploymentStage.node.defaultChild as apigateway.CfnStage;
    stage.addPropertyOverride('MethodSettings', Lazy.any({
      produce: () => [
        {
          HttpMethod: '*',
          ResourcePath: '/*',
          ThrottlingRateLimit: this.stageThrottle.rateLimit,
          ThrottlingBurstLimit: this.stageThrottle.burstLimit,
          LoggingLevel: 'ERROR',
          MetricsEnabled: true,
          DataTraceEnabled: false,
        },
        ...this.routes.filter((r) => r.throttle).map((r) => ({
          HttpMethod: r.method,
          // API Gateway's method setting path: the resource path with its slashes escaped as ~1
          ResourcePath: r.path === '/' ? '/' : `/${r.path.replace(/\//g, '~1')}`,
          ThrottlingRateLimit: r.throttle!.rateLimit,
          ThrottlingBurstLimit: r.throttle!.burstLimit,
          LoggingLevel: 'ERROR',
          MetricsEnabled: true,
          DataTraceEnabled: false,
        })),
      ],
    }));
    Validations.of(this.api).acknowledge(
      { id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]', reason: 'the account-level role API Gateway writes logs with: AWS\'s service-role policy AmazonAPIGatewayPushToCloudWatchLogs is the documented one' },
      { id: 'AwsSolutions-APIG3', reason: 'every caller is a state machine or an AWS principal signing with IAM; per-IP WAF rules do not apply, and the stage and method throttles guard the upstream' },
    );
    const json = (message: string) => ({ 'application/json': JSON.stringify({ message, error: '$context.error.responseType', requestId: '$context.requestId' }) });
    this.api.addGatewayResponse('Throttled', { type: apigateway.ResponseType.THROTTLED, statusCode: '429', templates: json('too many requests: the proxy throttles this route') });
    this.api.addGatewayResponse('QuotaExceeded', { type: apigateway.ResponseType.QUOTA_EXCEEDED, statusCode: '429', templates: json('the usage plan quota is used up') });
    this.api.addGatewayResponse('Default5xx', { type: apigateway.ResponseType.DEFAULT_5XX, templates: json('the proxy or its upstream failed') });
    this.api.addGatewayResponse('Default4xx', { type: apigateway.ResponseType.DEFAULT_4XX, templates: json('the request was refused') });
    const names = (props.usagePlans ?? []).map((p) => p.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup) fail(this, `usagePlans names must be unique, got ${JSON.stringify(dup)} twice`);
    for (const plan of props.usagePlans ?? []) this.addUsagePlan(plan);
    // throttled requests, from the access log (API Gateway's 429s are counted in 4XXError with the rest)
    new logs.MetricFilter(this, 'ThrottledFilter', {
      logGroup: this.accessLogGroup,
      // the proxy's own refusals (throttle, quota), not an upstream's 429 passed through
      filterPattern: logs.FilterPattern.any(
        logs.FilterPattern.stringValue('$.errorType', '=', 'THROTTLED'), logs.FilterPattern.stringValue('$.errorType', '=', 'QUOTA_EXCEEDED')),
      metricNamespace: 'CdkSfnThrottle',
      metricName: 'ProxyThrottled',
      metricValue: '1',
      dimensions: { ApiId: '$.apiId' },
    });
    this.warnAboveUpstream('stage', undefined);
    this.node.addValidation({ validate: () => (this.routes.length === 0 ? [`ThrottledApiProxy ${this.node.path} has no route: add one with addRoute(method, path)`] : []) });
    // the stage throttle applies per method: all routes together may send the upstream more than it allows
    Aspects.of(this).add({
      visit: (node) => {
        if (node !== this || !this.upstreamLimit) return;
        const total = this.routes.reduce((n, r) => n + this.throttleOf(r.method, r.path).rateLimit, 0);
        if (this.routes.length > 1 && total > this.upstreamLimit.rateLimit) {
          Annotations.of(this).addWarningV2('cdk-sfn-throttle:proxyAboveUpstream',
            `the routes together may send ${round(total)}/s (each method has its own bucket: ${this.routes.map((r) => `${r.method} ${r.path} ${this.throttleOf(r.method, r.path).rateLimit}/s`).join(', ')}), `
            + `above the upstream's documented ${this.upstreamLimit.rateLimit}/s: pace every route with one RateLimiter key, or lower the route throttles`);
        }
      },
    });
  }

  /** Adds a route: `method` on `path` (`/labels`, `/labels/{id}`), forwarded to the target's same path. */
  public addRoute(method: string, path: string, options: RouteOptions = {}): ThrottledApiProxy {
    const m = method.toUpperCase();
    if (!METHODS.includes(m)) fail(this, `method must be one of ${METHODS.join(', ')}, got ${JSON.stringify(method)}`);
    if (!PATH.test(path)) fail(this, `path must start with / and hold segments of letters, digits, ._- or {parameter}, got ${JSON.stringify(path)}`);
    // API Gateway allows one variable path part per parent: /labels/{id} and /labels/{labelId}/items cannot both exist
    const segs = path.split('/');
    for (const r of this.routes) {
      const other = r.path.split('/');
      for (let i = 1; i < Math.min(segs.length, other.length); i++) {
        if (segs[i] !== other[i]) {
          if (segs[i].startsWith('{') && other[i].startsWith('{')) {
            fail(this, `path ${path} names its parameter ${segs[i]} where ${r.path} names it ${other[i]}: API Gateway allows one variable path part per parent — use one name`);
          }
          break;
        }
      }
    }
    if (options.requestModel !== undefined && !['POST', 'PUT', 'PATCH'].includes(m)) {
      fail(this, `addRoute(${m} ${path}) requestModel validates a body, which Step Functions sends with POST, PUT and PATCH only`);
    }
    if (this.routes.some((r) => r.method === m && r.path === path)) fail(this, `route ${m} ${path} was added twice`);
    const throttle = options.throttle && checkedThrottle(this, `addRoute(${m} ${path}) throttle`, options.throttle);
    if (throttle && (throttle.rateLimit > this.stageThrottle.rateLimit || throttle.burstLimit > this.stageThrottle.burstLimit)) {
      Annotations.of(this).addWarningV2('cdk-sfn-throttle:routeAboveStage',
        `route ${m} ${path} throttle (${throttle.rateLimit}/s, burst ${throttle.burstLimit}) is above the stage's (${this.stageThrottle.rateLimit}/s, burst `
        + `${this.stageThrottle.burstLimit}): a method's setting overrides the stage default, so this route lets more through than the stage's`);
    }
    this.warnAboveUpstream(`route ${m} ${path}`, throttle);
    const resource = path === '/' ? this.api.root : this.api.root.resourceForPath(path);
    const params = pathParameters(path);
    const withModel = options.requestModel !== undefined;
    const added = resource.addMethod(m, this.target._integration(this, m, path, options), {
      requestParameters: Object.fromEntries(params.map((p) => [`method.request.path.${p}`, true])),
      // every request is validated before it is forwarded: its parameters, and its body where a model is given
      requestValidator: this.validator(),
      ...(withModel ? {
        requestModels: { 'application/json': this.api.addModel(`Model${this.routes.length}`, { contentType: 'application/json', schema: options.requestModel! }) },
      } : {}),
      ...(options.requestTemplates !== undefined || options.responseTemplates !== undefined ? {
        methodResponses: ['200', '400', '429', '502'].map((statusCode) => ({ statusCode })),
      } : {}),
    });
    Validations.of(added).acknowledge({ id: 'AwsSolutions-COG4', reason: 'IAM authorization (SigV4): the callers are state machines and other AWS principals, not Cognito users' });
    this.routes.push({ method: m, path, throttle });
    return this;
  }

  /**
   * A task that calls a route, signed with the state machine's role (IAM) and granted exactly that route and stage.
   * Its errors are named `ApiGateway.<status>` (`ApiGateway.429` when throttled), which `RetryPolicy.throttling()`
   * retries by default.
   */
  public callTask(scope: Construct, id: string, options: ProxyCallOptions): tasks.CallApiGatewayRestApiEndpoint {
    const m = options.method.toUpperCase();
    const route = this.routes.find((r) => r.method === m && r.path === options.path);
    if (!route) {
      fail(this, `callTask needs a route added with addRoute, got ${m} ${options.path} (routes: ${this.routes.map((r) => `${r.method} ${r.path}`).join(', ') || 'none'})`);
    }
    const params = pathParameters(options.path);
    const given = Object.keys(options.pathParameters ?? {});
    if (params.some((p) => !given.includes(p)) || given.some((g) => !params.includes(g))) {
      fail(this, `callTask pathParameters must name exactly the path's parameters (${params.join(', ') || 'none'}), got ${JSON.stringify(given)}`);
    }
    const values = params.map((p) => options.pathParameters![p]);
    // in JSONPath, States.Format (a JSONata rendering builds the path itself)
    const apiPath = params.length === 0 ? options.path
      : sfn.JsonPath.format(options.path.replace(/\{[A-Za-z_][A-Za-z0-9_]*\}/g, '{}'), ...values);
    if (!['POST', 'PUT', 'PATCH'].includes(m) && options.body !== undefined) {
      fail(this, `callTask body is sent with POST, PUT and PATCH only (Step Functions' API Gateway integration), got ${m} ${options.path} with a body`);
    }
    const resultPath = options.resultPath ?? '$.response';
    const task = new ProxyCallTask(scope, id, {
      api: this.api,
      stageName: this.stageName,
      method: m as tasks.HttpMethod,
      apiPath,
      requestBody: options.body,
      queryParameters: options.query,
      headers: options.headers,
      authType: tasks.AuthType.IAM_ROLE,
      resultPath,
    }, this.api.arnForExecuteApi(m, options.path.replace(/\{[A-Za-z_][A-Za-z0-9_]*\}/g, '*'), this.stageName),
    { template: options.path, params, values, resultPath, queryLanguage: options.queryLanguage });
    proxyCalls.set(task, { proxyPath: this.node.path, route: `${m} ${options.path}`, throttle: this.throttleOf(m, options.path) });
    return task;
  }

  /** Grants `execute-api:Invoke` on every route of the stage (each route's ARN, resolved once all are added). */
  public grantInvoke(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['execute-api:Invoke'],
      resourceArns: Lazy.list({ produce: () => this.routeArns() }),
    });
  }

  /** The routes added, as `METHOD /path`. */
  public get routeKeys(): string[] {
    return this.routes.map((r) => `${r.method} ${r.path}`);
  }

  /** The throttle in force on a route: its own, or the stage's. */
  public throttleOf(method: string, path: string): ProxyThrottle {
    return this.routes.find((r) => r.method === method.toUpperCase() && r.path === path)?.throttle ?? this.stageThrottle;
  }

  /** An API Gateway metric of this API's stage (namespace `AWS/ApiGateway`, dimensions ApiName and Stage). */
  public metric(metricName: string, props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace: 'AWS/ApiGateway',
      metricName,
      dimensionsMap: { ApiName: this.api.restApiName, Stage: this.stageName },
      statistic: 'Sum',
      period: Duration.minutes(1),
      ...props,
    });
  }

  /** Requests. */
  public metricCount(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric('Count', props);
  }

  /** Client errors, the proxy's own 429s included. */
  public metric4XXError(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric('4XXError', props);
  }

  /** Server errors (the upstream's 5xx arrive as 502 through templates, as they are through a proxy integration). */
  public metric5XXError(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric('5XXError', props);
  }

  /** Latency, p99 by default. */
  public metricLatency(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.metric('Latency', { statistic: 'p99', ...props });
  }

  /** Requests the proxy answered 429 (throttle or quota), from its access log. */
  public metricThrottled(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace: 'CdkSfnThrottle',
      metricName: 'ProxyThrottled',
      dimensionsMap: { ApiId: this.api.restApiId },
      statistic: 'Sum',
      period: Duration.minutes(1),
      ...props,
    });
  }

  /** One validator for every method: parameters always, the body against the method's model where one is given. */
  private validator(): apigateway.IRequestValidator {
    this.requestValidator ??= this.api.addRequestValidator('Validator', { validateRequestParameters: true, validateRequestBody: true });
    return this.requestValidator;
  }

  private routeArns(): string[] {
    return this.routes.map((r) => this.api.arnForExecuteApi(r.method, r.path.replace(/\{[A-Za-z_][A-Za-z0-9_]*\}/g, '*'), this.stageName));
  }

  private addUsagePlan(plan: ProxyUsagePlan): void {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(plan.name)) fail(this, `usagePlans name must be 1 to 64 letters, digits, - or _, got ${JSON.stringify(plan.name)}`);
    const throttle = plan.throttle && checkedThrottle(this, `usagePlans ${plan.name} throttle`, plan.throttle);
    if (throttle && (throttle.rateLimit > this.stageThrottle.rateLimit || throttle.burstLimit > this.stageThrottle.burstLimit)) {
      Annotations.of(this).addWarningV2('cdk-sfn-throttle:planAboveStage',
        `usagePlans ${plan.name} throttle (${throttle.rateLimit}/s, burst ${throttle.burstLimit}) is above the stage's (${this.stageThrottle.rateLimit}/s, `
        + `burst ${this.stageThrottle.burstLimit}): the key is held to the method settings first, so the plan's throttle never binds`);
    }
    if (plan.quota) {
      checkRange(this, `usagePlans ${plan.name} quota.limit`, plan.quota.limit, { min: 1, max: 2_147_483_647, integer: true });
      if (plan.quota.period === undefined) fail(this, `usagePlans ${plan.name} quota needs a period (Period.DAY, WEEK or MONTH), got none`);
    }
    const key = this.api.addApiKey(`Key${plan.name}`, { description: `cdk-sfn-throttle proxy ${this.node.path}: consumer ${plan.name}` });
    const usage = this.api.addUsagePlan(`Plan${plan.name}`, {
      name: `${Stack.of(this).stackName}-${this.node.id}-${plan.name}`,
      throttle: throttle && { rateLimit: throttle.rateLimit, burstLimit: throttle.burstLimit },
      quota: plan.quota && { limit: plan.quota.limit, period: plan.quota.period },
    });
    usage.addApiStage({ stage: this.api.deploymentStage });
    usage.addApiKey(key);
    this.apiKeys[plan.name] = key;
  }

  private warnAboveUpstream(what: string, throttle: ProxyThrottle | undefined): void {
    const up = this.upstreamLimit;
    const t = throttle ?? (what === 'stage' ? this.stageThrottle : undefined);
    if (!up || !t) return;
    if (t.rateLimit > up.rateLimit || t.burstLimit > up.burstLimit) {
      Annotations.of(this).addWarningV2('cdk-sfn-throttle:proxyAboveUpstream',
        `${what} throttle (${t.rateLimit}/s, burst ${t.burstLimit}) is above the upstream's documented limit (${up.rateLimit}/s, burst ${up.burstLimit}): the upstream will refuse what the proxy lets through`);
    }
  }
}

function checkedThrottle(scope: Construct, prop: string, t: ProxyThrottle, max = { rate: 10_000, burst: 5_000 }): ProxyThrottle {
  if (!(t.rateLimit > 0) || t.rateLimit > max.rate) fail(scope, `${prop}.rateLimit must be greater than 0 and at most ${max.rate}, got ${t.rateLimit}`);
  checkRange(scope, `${prop}.burstLimit`, t.burstLimit, { min: 1, max: max.burst, integer: true });
  return t;
}

/**
 * CallApiGatewayRestApiEndpoint granted exactly its route (a path with parameters: `*` for each), rendered in its
 * machine's language: in JSONata the result is merged with Output (no ResultPath) and the path is built with `&`.
 */
class ProxyCallTask extends tasks.CallApiGatewayRestApiEndpoint {
  constructor(scope: Construct, id: string, props: tasks.CallApiGatewayRestApiEndpointProps, routeArn: string,
    private readonly call: { template: string; params: string[]; values: string[]; resultPath: string; queryLanguage?: sfn.QueryLanguage }) {
    super(scope, id, props);
    // the base grants the ARN of its apiPath, which for a path built at run time is not the route's
    (this as unknown as { taskPolicies: iam.PolicyStatement[] }).taskPolicies = [new iam.PolicyStatement({ actions: ['execute-api:Invoke'], resources: [routeArn] })];
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const r = rendering(this, topLevelQueryLanguage, this.call.queryLanguage);
    const json = super.toStateJson(r.lang) as Record<string, any>;
    if (r.lang !== sfn.QueryLanguage.JSONATA) return json;
    const { ResultPath, ...rest } = json;
    const args = { ...rest.Arguments };
    if (this.call.params.length > 0) {
      // '/labels/{id}' with id from $.id: {% '/labels/' & $string($states.input.id) %}
      const pieces = this.call.template.split(/\{[A-Za-z_][A-Za-z0-9_]*\}/);
      const parts = pieces.flatMap((piece, i) => [
        ...(piece ? [JSON.stringify(piece)] : []),
        ...(i < this.call.values.length ? [`$string(${jsonataValue(this, this.call.params[i], this.call.values[i])})`] : []),
      ]);
      args.Path = expr(parts.join(' & '));
    }
    return { ...jsonataCatches(this, rest), ...r.marker, Arguments: args, Output: expr(mergeAt(this, this.call.resultPath, '$states.result')) };
  }
}

/** A path parameter's value as a JSONata expression: a JSONata expression, a JSONPath, or a literal. */
function jsonataValue(scope: Construct, name: string, value: string): string {
  if (isJsonataExpression(value)) return value.trim().slice(2, -2).trim();
  const path = Token.isUnresolved(value) ? pathOfToken(value) : value;
  if (path.startsWith('$')) {
    const body = jsonataOf(path);
    if (!body) fail(scope, `callTask pathParameters.${name} ${path} has no JSONata equivalent: give a JSONata expression ({% ... %})`);
    return body;
  }
  return JSON.stringify(path);
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
