import { App, Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
// eslint-disable-next-line @typescript-eslint/no-require-imports
import jsonata = require('jsonata');
import { CircuitBreaker, RateLimitedTask, RateLimiter, RetryPolicy, ThrottledMap, ThrottleErrors } from '../src';
import { aslOf } from './support/asl';
import { expectValidationError } from './support/validation';

// The breaker's states in JSONata machines: every state in JSONata (no JSONPath field anywhere), the definitions valid
// (asl-validator, through the Template hook), and the JSONata expressions giving what the JSONPath rendering gives —
// the local runner runs no JSONata, so they are evaluated with the jsonata package (Step Functions runs 2.0.6).

const JSONPATH_FIELDS = ['Parameters', 'ResultPath', 'ResultSelector', 'InputPath', 'OutputPath', 'ItemsPath', 'Variable', 'ErrorPath', 'CausePath', 'TimestampPath', 'SecondsPath'];

/** Every state of a definition, nested ones included: [name, state]. */
function allStates(def: any): [string, any][] {
  return Object.entries(def.States as Record<string, any>).flatMap(([name, st]) => [
    [name, st] as [string, any],
    ...(st.Branches ?? []).flatMap(allStates),
    ...(st.ItemProcessor ? allStates(st.ItemProcessor) : []),
  ]);
}

function expectAllJsonata(def: any): void {
  const offending = allStates(def).flatMap(([name, st]) => [
    ...Object.keys(st).filter((k) => JSONPATH_FIELDS.includes(k)).map((k) => `${name}.${k}`),
    ...(st.Choices ?? []).filter((c: any) => c.Condition === undefined).map(() => `${name}.Choices`),
    ...(st.Catch ?? []).filter((c: any) => 'ResultPath' in c).map(() => `${name}.Catch`),
  ]);
  expect(offending).toEqual([]);
}

function setup() {
  const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const breaker = new CircuitBreaker(stack, 'Partner', { breakerName: 'partner', failureThreshold: 3, cooldown: Duration.seconds(30), failureErrors: ['DownstreamUnavailable', 'States.Timeout'] });
  const fn = lambda.Function.fromFunctionArn(stack, 'Fn', 'arn:aws:lambda:us-east-1:123456789012:function:partner');
  const call = (id: string, keep = true) => tasks.LambdaInvoke.jsonata(stack, id, {
    lambdaFunction: fn,
    retryOnServiceExceptions: false,
    ...(keep ? { outputs: '{% $merge([$states.input, {"result": $states.result.Payload}]) %}' } : {}),
  });
  return { stack, breaker, call };
}

function machine(stack: Stack, body: sfn.IChainable) {
  new sfn.StateMachine(stack, 'Machine', { queryLanguage: sfn.QueryLanguage.JSONATA, definitionBody: sfn.DefinitionBody.fromChainable(body) });
  return aslOf(Template.fromStack(stack));
}

async function ev(expression: string, states: Record<string, unknown>): Promise<any> {
  const m = /^\{%([\s\S]*)%\}$/.exec(expression.trim());
  if (!m) return expression;
  return jsonata(m[1]).evaluate({}, { states });
}

/** The Next a JSONata Choice takes on `input`. */
async function choose(choice: any, input: unknown): Promise<string> {
  for (const rule of choice.Choices) if (await ev(rule.Condition, { input })) return rule.Next;
  return choice.Default;
}

describe('CircuitBreaker in JSONata machines', () => {
  test('protect(): every state in JSONata; the expressions decide as the JSONPath rendering does', async () => {
    const { stack, breaker, call } = setup();
    const def = machine(stack, breaker.protect(stack, 'Guard', { task: call('Call Partner'), key: '$.partner' }));
    expectAllJsonata(def);
    const s = def.States;
    // the check: the item key from a number, the data kept with the read and the time
    expect(await ev(s['Guard Check'].Arguments.Key.pk.S, { input: { partner: 42 } })).toBe('partner#breaker#42');
    const read = { Item: { st: { S: 'open' }, until: { S: '2026-12-02T10:00:30.250Z' }, ra: { S: '2026-12-02T10:00:31.000Z' }, at: { S: '2026-12-02T10:00:00.250Z' }, pr: { N: '0' } } };
    const checked = await ev(s['Guard Check'].Output, { input: { partner: 'acme' }, result: read, context: { State: { EnteredTime: '2026-12-02T10:00:10.000Z' } } });
    expect(checked).toEqual({ partner: 'acme', circuit: { read, now: '2026-12-02T10:00:10.000Z' } });
    // the route, on the items the JSONPath tests see
    const at = (now: string, item?: object) => ({ partner: 'acme', circuit: { read: item ? { Item: item } : {}, now } });
    expect(await choose(s['Guard Closed'], at('2026-12-02T10:00:10.000Z'))).toBe('Call Partner');
    expect(await choose(s['Guard Closed'], at('2026-12-02T10:00:10.000Z', { ...read.Item, st: { S: 'closed' } }))).toBe('Call Partner');
    expect(await choose(s['Guard Closed'], at('2026-12-02T10:00:10.000Z', read.Item))).toBe('Guard Open');
    expect(await choose(s['Guard Closed'], at('2026-12-02T10:00:30.251Z', read.Item))).toBe('Guard Elect');
    expect(await choose(s['Guard Closed'], at('2026-12-02T10:00:10.000Z', { ...read.Item, st: { S: 'half' }, pr: { N: '0' } }))).toBe('Guard Elect');
    expect(await choose(s['Guard Closed'], at('2026-12-02T10:00:10.000Z', { ...read.Item, st: { S: 'half' }, pr: { N: '1' } }))).toBe('Guard Open');
    // the open data: the cause as the JSONPath rendering words it
    const opened = await ev(s['Guard Open'].Output, { input: at('2026-12-02T10:00:10.000Z', read.Item) });
    expect(opened.circuit.open).toEqual({
      cause: 'circuit breaker partner is open for key acme (opened 2026-12-02T10:00:00.250Z): not called, retry after 2026-12-02T10:00:31.000Z',
      openedAt: '2026-12-02T10:00:00.250Z',
      retryAfter: '2026-12-02T10:00:31.000Z',
    });
    expect(await ev(s['Guard Circuit Open'].Cause, { input: opened })).toBe(opened.circuit.open.cause);
    expect(s['Guard Circuit Open'].Error).toBe('CircuitOpen');
    // the election and the calls of the function: the key as a string
    expect(await ev(s['Guard Elect'].Arguments.key, { input: { partner: 42 } })).toBe('42');
    expect(await choose(s['Guard Elected'], { circuit: { elected: { call: true } } })).toBe('Call Partner');
    expect(await choose(s['Guard Elected'], { circuit: { elected: { call: false } } })).toBe('Guard Not Elected');
    // after a failure: the task's catch keeps the data; counted, a probe's, other errors
    const caught = await ev(s['Call Partner'].Catch[0].Output, { input: { partner: 'acme', circuit: { elected: { probe: true } } }, errorOutput: { Error: 'States.Timeout' } });
    expect(caught.circuit.error).toEqual({ Error: 'States.Timeout' });
    expect(await choose(s['Guard Counts'], caught)).toBe('Guard Failed Probe');
    expect(await choose(s['Guard Failed Probe'], caught)).toBe('Guard Probe Failed');
    expect(await choose(s['Guard Counts'], { circuit: { error: { Error: 'BadRequest' }, elected: { probe: true } } })).toBe('Guard Release Probe');
    expect(await choose(s['Guard Counts'], { circuit: { error: { Error: 'BadRequest' } } })).toBe('Guard Has Cause');
    expect(await choose(s['Guard Has Cause'], caught)).toBe('Guard Failed Without Cause');
    expect(await ev(s['Guard Failed Without Cause'].Error, { input: caught })).toBe('States.Timeout');
    expect(await choose(s['Guard Was Probe'], { circuit: { elected: { probe: true } } })).toBe('Guard Probe Succeeded');
    expect(await choose(s['Guard Was Probe'], { circuit: {} })).toBe('Guard Done');
    expect(Template.fromStack(stack).toJSON()).toMatchSnapshot();
  });

  test('RateLimitedTask circuitBreaker (waiting while open) and ThrottledMap circuitBreaker: every state in JSONata', async () => {
    const { stack, breaker, call } = setup();
    const limiter = new RateLimiter(stack, 'Api', { limiterName: 'api', ratePerSecond: 5 });
    const limited = new RateLimitedTask(stack, 'Limited', {
      limiter,
      task: call('Call Partner'),
      retry: RetryPolicy.throttling({ errors: ['Lambda.TooManyRequestsException', ThrottleErrors.CIRCUIT_OPEN] }),
      circuitBreaker: { breaker, key: 'acme' },
    });
    const map = new ThrottledMap(stack, 'Orders', {
      itemsPath: '{% $states.input.orders %}',
      limiter,
      catchItemFailures: true,
      circuitBreaker: { breaker },
      itemProcessor: call('Call Per Item'),
    });
    const def = machine(stack, limited.next(map));
    expectAllJsonata(def);
    expect(def.States['Limited Wait While Open']).toMatchObject({ Timestamp: '{% $states.input.circuit.open.retryAfter %}', Next: 'Limited Check' });
    expect(await ev(def.States['Limited Check'].Arguments.Key.pk.S, { input: {} })).toBe('partner#breaker#acme');
    const item = def.States.Orders.ItemProcessor.States;
    const failed = await ev(item['Orders Item Circuit Open'].Output, { input: { order: 1, circuit: { open: { cause: 'why' } } } });
    expect(failed.cdkSfnThrottleItemError).toEqual({ Error: 'CircuitOpen', Cause: 'why' });
  });

  test('nested in a JSONata Parallel of the user\'s: fails at synth naming queryLanguage; with it, JSONata', () => {
    const { stack, breaker, call } = setup();
    const nested = new sfn.Parallel(stack, 'Fan Out', { queryLanguage: sfn.QueryLanguage.JSONATA }).branch(breaker.protect(stack, 'Guard', { task: call('Call Partner') }));
    expect(() => machine(stack, nested)).toThrow(/states of Stack\/Guard \(.*Guard Check.*\) are nested in a Parallel or Map of yours that is JSONata.*Give the construct queryLanguage/);
    const again = setup();
    const fixed = new sfn.Parallel(again.stack, 'Fan Out', { queryLanguage: sfn.QueryLanguage.JSONATA })
      .branch(again.breaker.protect(again.stack, 'Guard', { task: again.call('Call Partner'), queryLanguage: sfn.QueryLanguage.JSONATA }));
    expectAllJsonata(machine(again.stack, fixed));
  });

  test('a JSONata Parallel as the task: its catch in JSONata; the key: a missing field fails, a literal is never evaluated', async () => {
    const { stack, breaker, call } = setup();
    const parallel = sfn.Parallel.jsonata(stack, 'Both', { outputs: '{% $merge([$states.input, {"results": $states.result}]) %}' }).branch(call('Call A'));
    const def = machine(stack, breaker.protect(stack, 'Guard', { task: parallel, key: '$.partner' }));
    expectAllJsonata(def);
    await expect(ev(def.States['Guard Check'].Arguments.Key.pk.S, { input: {} })).rejects.toMatchObject({ message: expect.stringContaining('the circuit breaker key $.partner is not in the input') });
    const lit = setup();
    const def2 = machine(lit.stack, lit.breaker.protect(lit.stack, 'Guard', { task: lit.call('Call'), key: '{% 1 + 1 %}' }));
    expect(await ev(def2.States['Guard Check'].Arguments.Key.pk.S, { input: {} })).toBe('partner#breaker#{% 1 + 1 %}');
    expect(await ev(def2.States['Guard Elect'].Arguments.key, { input: {} })).toBe('{% 1 + 1 %}');
  });

  test.each([
    ['an Output that nests the input', '{% {"original": $states.input, "result": $states.result.Payload} %}'],
    ['an Output that writes over the breaker\'s data', '{% $merge([$states.input, {"circuit": $states.result.Payload}]) %}'],
  ])('fails at synth: %s', (_n, outputs) => {
    const { stack, breaker } = setup();
    const fn = lambda.Function.fromFunctionArn(stack, 'Fn2', 'arn:aws:lambda:us-east-1:123456789012:function:x');
    const task = tasks.LambdaInvoke.jsonata(stack, 'Call', { lambdaFunction: fn, retryOnServiceExceptions: false, outputs });
    expectValidationError(() => machine(stack, breaker.protect(stack, 'Guard', { task })), /must keep its input .*not writing "circuit"/);
  });

  test('fails at synth: a JSONata task that does not keep its input', () => {
    const { stack, breaker, call } = setup();
    expectValidationError(() => machine(stack, breaker.protect(stack, 'Guard', { task: call('Call Partner', false) })),
      /in a JSONata state machine the protected task Stack\/Call Partner must keep its input .*got no Output/);
  });
});
