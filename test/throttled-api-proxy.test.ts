import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { App, Aspects, Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Limit, ProxyAuthorization, ProxyTarget, RateLimitedTask, RateLimiter, ThrottleChecks, ThrottleDashboard, ThrottledApiProxy } from '../src';
import { aslOf } from './support/asl';
import { apiGatewayStandIn } from '../local/api-gateway';
import { nagFindings } from './support/nag';
import { expectValidationError } from './support/validation';

// ThrottledApiProxy: the throttles land on the stage and its methods exactly as given; only the workflows may call.

function build(extra: Partial<ConstructorParameters<typeof ThrottledApiProxy>[2]> = {}) {
  const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const proxy = new ThrottledApiProxy(stack, 'Shipping', {
    target: ProxyTarget.http('https://api.shipping.example.com/v1'),
    stageThrottle: { rateLimit: 5, burstLimit: 2 },
    upstreamLimit: { rateLimit: 5, burstLimit: 2 },
    ...extra,
  });
  proxy.addRoute('POST', '/labels', { throttle: { rateLimit: 4, burstLimit: 1 } });
  proxy.addRoute('GET', '/labels/{id}');
  return { stack, proxy };
}

describe('ThrottledApiProxy', () => {
  test('a Regional REST API: stage and method throttles as given, IAM on every method, JSON access logs, X-Ray, JSON 429/5xx responses', () => {
    const { stack } = build();
    const t = Template.fromStack(stack);
    t.hasResourceProperties('AWS::ApiGateway::RestApi', { EndpointConfiguration: { Types: ['REGIONAL'] } });
    const stage = Object.values(t.findResources('AWS::ApiGateway::Stage'))[0].Properties;
    expect(stage.TracingEnabled).toBe(true);
    expect(stage.MethodSettings).toEqual([
      expect.objectContaining({ HttpMethod: '*', ResourcePath: '/*', ThrottlingRateLimit: 5, ThrottlingBurstLimit: 2 }),
      expect.objectContaining({ HttpMethod: 'POST', ResourcePath: '/~1labels', ThrottlingRateLimit: 4, ThrottlingBurstLimit: 1 }),
    ]);
    expect(JSON.parse(stage.AccessLogSetting.Format)).toMatchObject({ status: '$context.status', apiId: '$context.apiId' });
    const methods = Object.values(t.findResources('AWS::ApiGateway::Method')).map((m: any) => m.Properties);
    expect(methods.map((m) => [m.HttpMethod, m.AuthorizationType, m.Integration.Type])).toEqual([['POST', 'AWS_IAM', 'HTTP_PROXY'], ['GET', 'AWS_IAM', 'HTTP_PROXY']]);
    expect(methods[1].Integration).toMatchObject({
      Uri: 'https://api.shipping.example.com/v1/labels/{id}',
      RequestParameters: { 'integration.request.path.id': 'method.request.path.id' },
    });
    const responses = Object.values(t.findResources('AWS::ApiGateway::GatewayResponse')).map((r: any) => [r.Properties.ResponseType, r.Properties.StatusCode]);
    expect(responses).toEqual(expect.arrayContaining([['THROTTLED', '429'], ['QUOTA_EXCEEDED', '429'], ['DEFAULT_5XX', undefined]]));
    t.hasResourceProperties('AWS::Logs::MetricFilter', { FilterPattern: '{ ($.errorType = "THROTTLED") || ($.errorType = "QUOTA_EXCEEDED") }', MetricTransformations: [Match.objectLike({ MetricName: 'ProxyThrottled', Dimensions: [{ Key: 'ApiId', Value: '$.apiId' }] })] });
    expect(t.toJSON()).toMatchSnapshot();
  });

  test('callTask: the API Gateway task signed with the role, granted exactly its route; RateLimitedTask retries ApiGateway.429 with a token', () => {
    const { stack, proxy } = build();
    const limiter = new RateLimiter(stack, 'Limit', { limiterName: 'shipping', ratePerSecond: 4, burst: 1 });
    const limited = new RateLimitedTask(stack, 'Label', {
      limiter,
      task: proxy.callTask(stack, 'Create Label', { method: 'POST', path: '/labels', body: sfn.TaskInput.fromJsonPathAt('$.order') }),
    });
    const read = proxy.callTask(stack, 'Read Label', { method: 'GET', path: '/labels/{id}', pathParameters: { id: sfn.JsonPath.stringAt('$.response.ResponseBody.id') } });
    new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited.next(read)) });
    const t = Template.fromStack(stack);
    const asl = aslOf(t);
    expect(asl.States['Create Label']).toMatchObject({ Resource: 'arn:<AWS::Partition>:states:::apigateway:invoke', Parameters: { Method: 'POST', Path: '/labels', AuthType: 'IAM_ROLE', Stage: 'prod' } });
    expect(asl.States['Read Label'].Parameters['Path.$']).toBe("States.Format('/labels/{}', $.response.ResponseBody.id)");
    expect(limited.retryErrors).toEqual(['ApiGateway.429', 'ApiGateway.503']);
    const invoke = Object.values(t.findResources('AWS::IAM::Policy')).flatMap((p: any) => p.Properties.PolicyDocument.Statement)
      .filter((s: any) => s.Action === 'execute-api:Invoke');
    const arns = JSON.stringify(invoke.map((s: any) => s.Resource));
    expect(arns).toContain('/prod/POST/labels');
    expect(arns).toContain('/prod/GET/labels/*');
    expect(arns).not.toMatch(/"\*"/);
  });

  test('a Lambda target: a proxy integration to the function, API Gateway allowed to invoke it; templates refused', () => {
    const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
    const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:labels');
    const proxy = new ThrottledApiProxy(stack, 'Labels', { target: ProxyTarget.lambda(fn), stageThrottle: { rateLimit: 10, burstLimit: 5 } });
    proxy.addRoute('POST', '/labels');
    const t = Template.fromStack(stack);
    const method = Object.values(t.findResources('AWS::ApiGateway::Method')).map((m: any) => m.Properties)[0];
    expect(method.Integration.Type).toBe('AWS_PROXY');
    expect(JSON.stringify(method.Integration.Uri)).toContain('function:labels');
    expectValidationError(() => proxy.addRoute('GET', '/labels', { responseTemplates: { 'application/json': '$input.body' } }), /requestTemplates and responseTemplates need ProxyTarget.http\(\)/);
  });

  test('request and response templates: a non-proxy HTTP integration that keeps the upstream\'s 429', () => {
    const { stack, proxy } = build();
    proxy.addRoute('PUT', '/labels/{id}', { requestTemplates: { 'application/json': '{"label": $input.json(\'$\')}' }, responseTemplates: { 'application/json': '$input.json(\'$.data\')' } });
    const methods = Object.values(Template.fromStack(stack).findResources('AWS::ApiGateway::Method')).map((m: any) => m.Properties);
    const put = methods.find((m) => m.HttpMethod === 'PUT');
    expect(put.Integration.Type).toBe('HTTP');
    expect(put.Integration.IntegrationResponses.map((r: any) => [r.SelectionPattern, r.StatusCode])).toEqual([[undefined, '200'], ['429', '429'], ['4\\d{2}', '400'], ['5\\d{2}', '502']]);
    expect(put.MethodResponses.map((r: any) => r.StatusCode)).toEqual(['200', '400', '429', '502']);
  });

  test('callTask in a JSONata machine: Arguments, the path built with &, the response merged by Output', async () => {
    const { stack, proxy } = build();
    const read = proxy.callTask(stack, 'Read Label', { method: 'GET', path: '/labels/{id}', pathParameters: { id: '{% $states.input.order.id %}' } });
    const create = proxy.callTask(stack, 'Create Label', { method: 'POST', path: '/labels', body: sfn.TaskInput.fromObject({ order: '{% $states.input.order %}' }) });
    new sfn.StateMachine(stack, 'Machine', { queryLanguage: sfn.QueryLanguage.JSONATA, definitionBody: sfn.DefinitionBody.fromChainable(create.next(read)) });
    const asl = aslOf(Template.fromStack(stack));
    const state = asl.States['Read Label'];
    expect(state.ResultPath).toBeUndefined();
    expect(state.Parameters).toBeUndefined();
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const jsonata = require('jsonata');
    const ev = (e: string, states: object) => jsonata(/^\{%([\s\S]*)%\}$/.exec(e)![1]).evaluate({}, { states });
    expect(await ev(state.Arguments.Path, { input: { order: { id: 42 } } })).toBe('/labels/42');
    expect(await ev(state.Output, { input: { order: { id: 42 } }, result: { StatusCode: 200 } }))
      .toEqual({ order: { id: 42 }, response: { StatusCode: 200 } });
  });

  test('the root route\'s method setting is "/"', () => {
    const stack = new Stack();
    const proxy = new ThrottledApiProxy(stack, 'P', { target: ProxyTarget.http('https://api.example.com'), stageThrottle: { rateLimit: 5, burstLimit: 1 } });
    proxy.addRoute('GET', '/', { throttle: { rateLimit: 2, burstLimit: 1 } });
    const stage = Object.values(Template.fromStack(stack).findResources('AWS::ApiGateway::Stage'))[0].Properties;
    expect(stage.MethodSettings[1]).toMatchObject({ HttpMethod: 'GET', ResourcePath: '/', ThrottlingRateLimit: 2 });
  });

  test('grantInvoke: every route of the stage, by its ARN', () => {
    const { stack, proxy } = build();
    const role = new iam.Role(stack, 'Caller', { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com') });
    proxy.grantInvoke(role);
    const statements = Object.values(Template.fromStack(stack).findResources('AWS::IAM::Policy')).flatMap((p: any) => p.Properties.PolicyDocument.Statement);
    const text = JSON.stringify(statements.find((s: any) => s.Action === 'execute-api:Invoke').Resource);
    expect(text).toContain('/prod/POST/labels');
    expect(text).toContain('/prod/GET/labels/*');
  });

  test('usage plans: a key per consumer with its throttle and quota, the methods requiring keys', () => {
    const { stack } = build({
      authorization: ProxyAuthorization.IAM_AND_API_KEY,
      usagePlans: [{ name: 'orders', throttle: { rateLimit: 2, burstLimit: 1 }, quota: { limit: 10_000, period: apigateway.Period.DAY } }],
    });
    const t = Template.fromStack(stack);
    t.hasResourceProperties('AWS::ApiGateway::UsagePlan', { Throttle: { RateLimit: 2, BurstLimit: 1 }, Quota: { Limit: 10000, Period: 'DAY' } });
    t.resourceCountIs('AWS::ApiGateway::ApiKey', 1);
    t.hasResourceProperties('AWS::ApiGateway::Method', { ApiKeyRequired: true });
  });

  test('warnings: a route above the stage, the proxy above the upstream\'s documented limit', () => {
    const { stack, proxy } = build({ upstreamLimit: { rateLimit: 3, burstLimit: 1 } });
    proxy.addRoute('PUT', '/labels/{id}', { throttle: { rateLimit: 8, burstLimit: 2 } });
    const ids = Annotations.fromStack(stack).findWarning('*', Match.anyValue()).map((w) => String(w.entry.data));
    // the stage, PUT /labels/{id}, and the routes together (each method has its own bucket)
    expect(ids.filter((w) => w.includes('proxyAboveUpstream'))).toEqual([
      expect.stringContaining('stage throttle (5/s, burst 2) is above the upstream\'s documented limit (3/s, burst 1)'),
      expect.stringContaining('route POST /labels throttle (4/s, burst 1)'),
      expect.stringContaining('route PUT /labels/{id} throttle (8/s, burst 2)'),
      expect.stringContaining('the routes together may send 17/s'),
    ]);
    expect(ids.filter((w) => w.includes('routeAboveStage'))).toEqual([expect.stringContaining('route PUT /labels/{id} throttle (8/s, burst 2) is above the stage\'s (5/s, burst 2): a method\'s setting overrides the stage default')]);
  });

  test('ThrottleChecks: a limiter above the route\'s throttle warns; the proxy is in the throttle plan', () => {
    const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'proxy-plan-'));
    const app = new App({ outdir });
    const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
    Aspects.of(app).add(new ThrottleChecks());
    const proxy = new ThrottledApiProxy(stack, 'Shipping', { target: ProxyTarget.http('https://api.shipping.example.com'), stageThrottle: { rateLimit: 5, burstLimit: 2 } });
    proxy.addRoute('POST', '/labels', { throttle: { rateLimit: 4, burstLimit: 1 } });
    proxy.addRoute('GET', '/labels');
    const fast = new RateLimitedTask(stack, 'Fast', {
      limiter: new RateLimiter(stack, 'FastLimit', { limiterName: 'fast', ratePerSecond: 5, burst: 1 }),
      task: proxy.callTask(stack, 'Create', { method: 'POST', path: '/labels' }),
    });
    const fitting = new RateLimitedTask(stack, 'Fitting', {
      limiter: new RateLimiter(stack, 'FitLimit', { limiterName: 'fit', ratePerSecond: 5, burst: 2 }),
      task: proxy.callTask(stack, 'List', { method: 'GET', path: '/labels' }),
    });
    new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(fast.next(fitting)) });
    app.synth();
    const warned = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('.*limiterAboveProxy.*')).map((w) => [w.id, String(w.entry.data)]);
    expect(warned).toEqual([['/Stack/Fast', expect.stringContaining('limiter fast lets 5 calls/s (burst 1) through to POST /labels of Stack/Shipping, whose throttle is 4/s (burst 1)')]]);
    const plan = JSON.parse(fs.readFileSync(path.join(outdir, 'throttle-plan.json'), 'utf8'));
    expect(plan.entries.find((e: any) => e.kind === 'apiProxy')).toEqual({
      kind: 'apiProxy',
      path: 'Stack/Shipping',
      stage: 'prod',
      stageThrottle: { rateLimit: 5, burstLimit: 2 },
      routes: [{ route: 'POST /labels', rateLimit: 4, burstLimit: 1 }, { route: 'GET /labels', rateLimit: 5, burstLimit: 2 }],
    });
  });

  test('ThrottleChecks limiterAboveProxy: limiters feeding one route are summed; a limiter per key warns; a slow dimension binds', () => {
    const app = new App();
    const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
    Aspects.of(app).add(new ThrottleChecks({ writePlan: false }));
    const proxy = new ThrottledApiProxy(stack, 'P', { target: ProxyTarget.http('https://api.example.com'), stageThrottle: { rateLimit: 5, burstLimit: 2 } });
    proxy.addRoute('POST', '/a').addRoute('POST', '/b').addRoute('POST', '/c');
    const a1 = new RateLimitedTask(stack, 'A1', { limiter: new RateLimiter(stack, 'L1', { limiterName: 'l1', ratePerSecond: 3, burst: 1 }), task: proxy.callTask(stack, 'CA1', { method: 'POST', path: '/a' }) });
    const a2 = new RateLimitedTask(stack, 'A2', { limiter: new RateLimiter(stack, 'L2', { limiterName: 'l2', ratePerSecond: 3, burst: 1 }), task: proxy.callTask(stack, 'CA2', { method: 'POST', path: '/a' }) });
    const b = new RateLimitedTask(stack, 'B', {
      limiter: new RateLimiter(stack, 'L3', { limiterName: 'l3', ratePerSecond: 4, burst: 1 }), task: proxy.callTask(stack, 'CB', { method: 'POST', path: '/b' }), acquire: { key: '$.tenant' },
    });
    const c = new RateLimitedTask(stack, 'C', {
      limiter: new RateLimiter(stack, 'L4', { limiterName: 'l4', limits: [Limit.perSecond(10), Limit.perSecond(1000, { dimension: 'tokens', burst: 1000 })] }),
      task: proxy.callTask(stack, 'CC', { method: 'POST', path: '/c' }),
      acquire: { consume: { requests: 1, tokens: 1000 } },
    });
    new sfn.StateMachine(stack, 'M', { definitionBody: sfn.DefinitionBody.fromChainable(sfn.Chain.start(a1).next(a2).next(b).next(c)) });
    app.synth();
    const warned = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('.*limiterAboveProxy.*')).map((w) => [w.id, String(w.entry.data)]);
    expect(warned.filter(([id]) => id === '/Stack/A1' || id === '/Stack/A2').map(([, t]) => t)).toEqual([
      expect.stringContaining('limiters l1/default, l2/default together let 6 calls/s'), expect.stringContaining('limiters l1/default, l2/default together let 6 calls/s'),
    ]);
    expect(warned.filter(([id]) => id === '/Stack/B').map(([, t]) => t)).toEqual([expect.stringContaining('limiter l3 is taken per key ($.tenant)')]);
    expect(warned.filter(([id]) => id === '/Stack/C')).toEqual([]); // 1 call/s: the tokens dimension binds
  });

  test('dashboard row: requests against the throttle, 429s, 4XX/5XX, latency; alarms on 429s, 5xx and p99', () => {
    const { stack, proxy } = build();
    const dashboard = new ThrottleDashboard(stack, 'Throttles').addApiProxy(proxy);
    const t = Template.fromStack(stack);
    const body = JSON.stringify(t.findResources('AWS::CloudWatch::Dashboard'));
    for (const m of ['Count', '4XXError', '5XXError', 'Latency', 'ProxyThrottled']) expect(body).toContain(m);
    expect(dashboard.alarms).toHaveLength(3);
    const alarms = Object.values(t.findResources('AWS::CloudWatch::Alarm')).map((a: any) => a.Properties);
    expect(alarms.find((a) => a.MetricName === 'Latency')).toMatchObject({ ExtendedStatistic: 'p99', Threshold: 5000, Namespace: 'AWS/ApiGateway' });
    expect(alarms.find((a) => a.MetricName === 'ProxyThrottled')).toMatchObject({ Namespace: 'CdkSfnThrottle', Threshold: 1, EvaluationPeriods: 3 });
  });

  test('the local stand-in answers as the proxy would: a token bucket per route with its throttle, 429 as ApiGateway.429', async () => {
    const { proxy } = build();
    proxy.addRoute('GET', '/labels/latest');
    const api = apiGatewayStandIn(proxy, {
      'POST /labels': () => ({ status: 201, body: { ok: true } }),
      'GET /labels/{id}': (req) => ({ id: req.pathParameters.id }),
      'GET /labels/latest': () => ({ id: 'the latest' }),
    });
    const call = api.integration.handler({ name: 'T', resource: 'arn:aws:states:::apigateway:invoke', state: {} }, [] as any, {} as any)!;
    // POST /labels: its own throttle, burst 1 — three at once: one through, two refused
    const posts = await Promise.allSettled([0, 1, 2].map(() => call({ Method: 'POST', Path: '/labels', RequestBody: {} }, {} as any)));
    expect(posts.map((p) => (p.status === 'fulfilled' ? (p.value as any).StatusCode : (p.reason as Error).name))).toEqual([201, 'ApiGateway.429', 'ApiGateway.429']);
    // GET /labels/{id}: the stage's throttle (burst 2), its own bucket
    const gets = await Promise.allSettled([0, 1, 2].map((i) => call({ Method: 'GET', Path: `/labels/${i}` }, {} as any)));
    expect(gets.map((p) => (p.status === 'fulfilled' ? (p.value as any).ResponseBody.id : (p.reason as Error).name))).toEqual(['0', '1', 'ApiGateway.429']);
    await expect(Promise.resolve(call({ Method: 'DELETE', Path: '/labels/1' }, {} as any))).rejects.toMatchObject({ name: 'ApiGateway.403' });
    // a literal path part wins over a variable one; a query string is not part of the path
    expect(await call({ Method: 'GET', Path: '/labels/latest?x=1' }, {} as any)).toMatchObject({ ResponseBody: { id: 'the latest' } });
  });

  test('cdk-nag: no unacknowledged finding on the proxy', () => {
    const { stack } = build();
    expect(nagFindings(stack).filter((f) => f.includes('Stack/Shipping'))).toEqual([]);
  });

  const target = ProxyTarget.http('https://api.example.com');
  test.each<[string, () => unknown, RegExp]>([
    ['a negative stage rate', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: -1, burstLimit: 1 } }), /stageThrottle.rateLimit must be greater than 0 and at most 10000, got -1/],
    ['a stage rate above the account quota', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 20_000, burstLimit: 1 } }), /stageThrottle.rateLimit must be .*10000.*got 20000/],
    ['a burst of 0', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 0 } }), /stageThrottle.burstLimit must be an integer from 1 to 5000, got 0/],
    ['a fractional burst', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1.5 } }), /stageThrottle.burstLimit must be an integer/],
    ['an http:// target', () => new ThrottledApiProxy(new Stack(), 'P', { target: ProxyTarget.http('http://api.example.com'), stageThrottle: { rateLimit: 5, burstLimit: 1 } }),
      /target \(ProxyTarget.http\) must be an https:\/\/ URL .*got "http:\/\/api.example.com"/],
    ['usage plans with IAM alone', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1 }, usagePlans: [{ name: 'a' }] }),
      /usagePlans need authorization ProxyAuthorization.IAM_AND_API_KEY/],
    ['a quota without a period', () => new ThrottledApiProxy(new Stack(), 'P', {
      target, stageThrottle: { rateLimit: 5, burstLimit: 1 }, authorization: ProxyAuthorization.IAM_AND_API_KEY, usagePlans: [{ name: 'a', quota: { limit: 5 } as any }],
    }), /usagePlans a quota needs a period/],
    ['a malformed path', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1 } }).addRoute('GET', 'labels'), /path must start with \/ .*got "labels"/],
    ['an unknown method', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1 } }).addRoute('FETCH', '/x'), /method must be one of .*got "FETCH"/],
    ['a route twice', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1 } }).addRoute('GET', '/x').addRoute('get', '/x'), /route GET \/x was added twice/],
    ['a negative route rate', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1 } }).addRoute('GET', '/x', { throttle: { rateLimit: 0, burstLimit: 1 } }),
      /addRoute\(GET \/x\) throttle.rateLimit must be/],
    ['callTask on a route not added', () => {
      const p = new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1 } }).addRoute('GET', '/x');
      return p.callTask(p, 'T', { method: 'POST', path: '/x' });
    }, /callTask needs a route added with addRoute, got POST \/x \(routes: GET \/x\)/],
    ['callTask without the path\'s parameters', () => {
      const p = new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1 } }).addRoute('GET', '/x/{id}');
      return p.callTask(p, 'T', { method: 'GET', path: '/x/{id}' });
    }, /callTask pathParameters must name exactly the path's parameters \(id\), got \[\]/],
    ['sibling path parameters with different names', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1 } })
      .addRoute('GET', '/labels/{id}').addRoute('GET', '/labels/{labelId}/items'), /path \/labels\/\{labelId\}\/items names its parameter \{labelId\} where \/labels\/\{id\} names it \{id\}/],
    ['a request model on GET', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1 } })
      .addRoute('GET', '/x', { requestModel: {} }), /addRoute\(GET \/x\) requestModel validates a body, which Step Functions sends with POST, PUT and PATCH only/],
    ['a body on a GET call', () => {
      const p = new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1 } }).addRoute('GET', '/x');
      return p.callTask(p, 'T', { method: 'GET', path: '/x', body: sfn.TaskInput.fromObject({ a: 1 }) });
    }, /callTask body is sent with POST, PUT and PATCH only .*got GET \/x/],
    ['API keys without a usage plan', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1 }, authorization: ProxyAuthorization.IAM_AND_API_KEY }),
      /IAM_AND_API_KEY needs usagePlans/],
    ['a ~ in a path', () => new ThrottledApiProxy(new Stack(), 'P', { target, stageThrottle: { rateLimit: 5, burstLimit: 1 } }).addRoute('GET', '/a~b'), /path must start with \/ .*got "\/a~b"/],
    ['duplicate plan names', () => new ThrottledApiProxy(new Stack(), 'P', {
      target, stageThrottle: { rateLimit: 5, burstLimit: 1 }, authorization: ProxyAuthorization.IAM_AND_API_KEY, usagePlans: [{ name: 'a' }, { name: 'a' }],
    }), /usagePlans names must be unique, got "a" twice/],
  ])('fails at synth: %s', (_n, make, message) => expectValidationError(make, message));
});
