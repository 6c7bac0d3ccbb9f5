import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { BufferedQueueConsumer, ConcurrencyLimitedTask, ConcurrencyLimiter, MapConcurrency, MapMode, QueueTarget, RateLimitedTask, RateLimiter, RetryPolicy, ThrottledMap } from '../src';
import { definitionOf, languageProblems, validateTemplate } from './support/asl-validate';
import { jsonataStates, LocalRunner } from '../local/runner';
import { expectValidationError } from './support/validation';

// Every construct renders each state in its state machine's query language. The matrix builds each construct in a
// JSONPath and a JSONata machine around a task made with `.jsonPath()` and with `.jsonata()`; every template is
// validated by asl-validator and the language checks (test/setup-validation.ts) when it is built.

type Lang = 'JSONPath' | 'JSONata';
type Factory = 'jsonPath' | 'jsonata';

const QL = { JSONPath: sfn.QueryLanguage.JSON_PATH, JSONata: sfn.QueryLanguage.JSONATA };

function pieces(lang: Lang) {
  const app = new App();
  const stack = new Stack(app, 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const fn = lambda.Function.fromFunctionArn(stack, 'Api', 'arn:aws:lambda:us-east-1:123456789012:function:api');
  const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: 10, burst: 10, limiterName: 'api' });
  const key = lang === 'JSONata' ? '{% $states.input.tenant %}' : '$.tenant';
  const task = (factory: Factory, id = 'Call') => (factory === 'jsonata'
    ? tasks.LambdaInvoke.jsonata(stack, id, { lambdaFunction: fn, retryOnServiceExceptions: false })
    : tasks.LambdaInvoke.jsonPath(stack, id, { lambdaFunction: fn, retryOnServiceExceptions: false }));
  const machine = (chain: sfn.IChainable) => new sfn.StateMachine(stack, 'Machine', {
    queryLanguage: QL[lang], definitionBody: sfn.DefinitionBody.fromChainable(chain),
  });
  return { app, stack, fn, limiter, key, task, machine };
}

export const SHAPES: Record<string, (lang: Lang, factory: Factory) => Stack> = {
  'acquire fragment': (lang, factory) => {
    const p = pieces(lang);
    p.machine(p.limiter.acquire(p.stack, 'Throttle', { key: p.key, resultPath: '$.acquired' }).next(p.task(factory)));
    return p.stack;
  },
  'RateLimitedTask': (lang, factory) => {
    const p = pieces(lang);
    const limited = new RateLimitedTask(p.stack, 'Limited', {
      limiter: p.limiter, task: p.task(factory), acquire: { key: p.key }, retry: RetryPolicy.throttling({ maxAttempts: 3 }), resultPath: '$.acquired',
    });
    limited.addCatch(new sfn.Pass(p.stack, 'Failed'), { resultPath: '$.error' });
    p.machine(limited);
    return p.stack;
  },
  'ThrottledMap inline with a limiter': (lang, factory) => {
    const p = pieces(lang);
    p.machine(new ThrottledMap(p.stack, 'Orders', {
      itemsPath: lang === 'JSONata' ? '{% $states.input.orders %}' : '$.orders',
      limiter: p.limiter,
      acquire: { key: p.key },
      itemProcessor: p.task(factory),
      retry: RetryPolicy.throttling(),
      catchItemFailures: true,
      resultPath: '$.results',
    }));
    return p.stack;
  },
  'ThrottledMap distributed with a limiter, batched': (lang, factory) => {
    const p = pieces(lang);
    p.machine(new ThrottledMap(p.stack, 'Orders', {
      mode: MapMode.distributed({ batch: { maxItems: 5 } }),
      itemsPath: lang === 'JSONata' ? '{% $states.input.orders %}' : '$.orders',
      limiter: p.limiter,
      itemProcessor: p.task(factory),
      retry: RetryPolicy.throttling(),
      catchItemFailures: true,
    }));
    return p.stack;
  },
  'ConcurrencyLimitedTask': (lang, factory) => {
    const p = pieces(lang);
    const limiter = new ConcurrencyLimiter(p.stack, 'Db', { limit: 5, limiterName: 'db' });
    const limited = new ConcurrencyLimitedTask(p.stack, 'Limited', { limiter, task: p.task(factory), key: p.key });
    limited.addCatch(new sfn.Pass(p.stack, 'Failed'), { resultPath: '$.error' });
    p.machine(limited);
    return p.stack;
  },
  'ThrottledMap inline with a concurrency limit': (lang, factory) => {
    const p = pieces(lang);
    const limiter = new ConcurrencyLimiter(p.stack, 'Db', { limit: 5, limiterName: 'db' });
    p.machine(new ThrottledMap(p.stack, 'Orders', {
      itemsPath: lang === 'JSONata' ? '{% $states.input.orders %}' : '$.orders',
      concurrencyLimit: { limiter, key: p.key },
      itemProcessor: p.task(factory),
      retry: RetryPolicy.throttling(),
      catchItemFailures: true,
    }));
    return p.stack;
  },
  'sendMessageTask with waitForResult': (lang, factory) => {
    const p = pieces(lang);
    const target = lambda.Function.fromFunctionAttributes(p.stack, 'Target', { functionArn: 'arn:aws:lambda:us-east-1:123456789012:function:t', sameEnvironment: true });
    const buffer = new BufferedQueueConsumer(p.stack, 'Buffer', { target: QueueTarget.dispatch(target) });
    const body = lang === 'JSONata' ? sfn.TaskInput.fromText('{% $states.input %}') : sfn.TaskInput.fromJsonPathAt('$');
    const send = buffer.sendMessageTask(p.stack, 'Hand Off', { messageBody: body, waitForResult: true, resultPath: lang === 'JSONata' ? undefined : '$.result' });
    buffer.allowResultsFrom(p.machine(send.next(p.task(factory))));
    return p.stack;
  },
};

const MATRIX = Object.keys(SHAPES).flatMap((shape) => (['JSONPath', 'JSONata'] as Lang[]).flatMap((lang) => (['jsonPath', 'jsonata'] as Factory[]).map((factory) => [shape, lang, factory] as const)));

describe('every state in its machine\'s query language', () => {
  test.each(MATRIX)('%s in a %s machine around a .%s() task', (shape, lang, factory) => {
    const stack = SHAPES[shape](lang, factory);
    // validated by asl-validator and the language checks as it is built
    const template = Template.fromStack(stack);
    const machine = Object.values(template.findResources('AWS::StepFunctions::StateMachine'))[0];
    const definition = definitionOf(machine.Properties.DefinitionString);
    expect(languageProblems(definition)).toEqual([]);
  });
});

describe('user-given paths and expressions in the machine\'s language', () => {
  const jsonataMachine = (build: (p: ReturnType<typeof pieces>) => sfn.IChainable) => () => {
    const p = pieces('JSONata');
    p.machine(build(p));
  };
  const jsonPathMachine = (build: (p: ReturnType<typeof pieces>) => sfn.IChainable) => () => {
    const p = pieces('JSONPath');
    p.machine(build(p));
  };
  test.each<[string, () => void, RegExp]>([
    ['a JSONPath key in a JSONata machine', jsonataMachine((p) => new RateLimitedTask(p.stack, 'Limited', { limiter: p.limiter, task: p.task('jsonata'), acquire: { key: '$.tenant' } })),
      /^\[Stack\/Limited\] acquire.key is a JSONPath \(\$.tenant\) but the state machine's query language is JSONata: write a JSONata expression, e.g. '\{% \$states.input.tenant %\}'/],
    ['a JSONata key in a JSONPath machine', jsonPathMachine((p) => p.limiter.acquire(p.stack, 'Throttle', { key: '{% $states.input.tenant %}' }).next(p.task('jsonPath'))),
      /^\[Stack\/Throttle\] key is a JSONata expression .* but the state machine's query language is JSONPath: write a JSONPath such as '\$.field'/],
    ['a JSONPath itemsPath in a JSONata machine', jsonataMachine((p) => new ThrottledMap(p.stack, 'Orders', { itemsPath: '$.orders', itemProcessor: p.task('jsonata') })),
      /^\[Stack\/Orders\] itemsPath is a JSONPath \(\$.orders\) .* e.g. '\{% \$states.input.orders %\}'/],
    ['a JSONPath itemSelector in a JSONata machine', jsonataMachine((p) => new ThrottledMap(p.stack, 'Orders', { itemSelector: { 'order.$': '$$.Map.Item.Value' }, itemProcessor: p.task('jsonata') })),
      /itemSelector has JSONPath fields \(order.\$\) .* e.g. order: '\{% \$states.context.Map.Item.Value %\}'/],
    ['a JSONata itemSelector in a JSONPath machine', jsonPathMachine((p) => new ThrottledMap(p.stack, 'Orders', { itemSelector: { order: '{% $states.context.Map.Item.Value %}' }, itemProcessor: p.task('jsonPath') })),
      /itemSelector has JSONata expressions \(order\) but the state machine's query language is JSONPath/],
    ['a JSONPath concurrency path in a JSONata machine', jsonataMachine((p) => new ThrottledMap(p.stack, 'Orders', { concurrency: MapConcurrency.fromPath('$.concurrency'), itemProcessor: p.task('jsonata') })),
      /concurrency \(MapConcurrency.fromPath\) is a JSONPath \(\$.concurrency\) .* '\{% \$states.input.concurrency %\}'/],
    ['a JSONPath message body in a JSONata machine', jsonataMachine((p) => {
      const target = lambda.Function.fromFunctionAttributes(p.stack, 'Target', { functionArn: 'arn:aws:lambda:us-east-1:123456789012:function:t', sameEnvironment: true });
      const buffer = new BufferedQueueConsumer(p.stack, 'Buffer', { target: QueueTarget.dispatch(target) });
      return buffer.sendMessageTask(p.stack, 'Hand Off', { messageBody: sfn.TaskInput.fromJsonPathAt('$') });
    }), /^\[Stack\/Hand Off\] messageBody reads JSONPath but the state machine's query language is JSONata/],
  ])('fails at synth: %s', (_name, make, message) => {
    expectValidationError(make, message);
  });

  test('the same props in the other language render', () => {
    const p = pieces('JSONata');
    p.machine(new ThrottledMap(p.stack, 'Orders', {
      itemSelector: { order: '{% $states.context.Map.Item.Value %}' }, concurrency: MapConcurrency.fromPath('{% $states.input.concurrency %}'), itemProcessor: p.task('jsonata'),
    }));
    const state = definitionOf(Object.values(Template.fromStack(p.stack).findResources('AWS::StepFunctions::StateMachine'))[0].Properties.DefinitionString).States.Orders;
    expect(state).toMatchObject({ ItemSelector: { order: '{% $states.context.Map.Item.Value %}' }, MaxConcurrency: '{% $states.input.concurrency %}' });
    expect(state.MaxConcurrencyPath).toBeUndefined();
  });
});

describe('nested in a Parallel of the user\'s', () => {
  test('in a JSONata machine, synth fails naming the states and the prop to set; with queryLanguage they render JSONata', () => {
    const build = (queryLanguage?: sfn.QueryLanguage) => {
      const p = pieces('JSONata');
      const limited = new RateLimitedTask(p.stack, 'Limited', { limiter: p.limiter, task: p.task('jsonata'), queryLanguage });
      p.machine(new sfn.Parallel(p.stack, 'Fan Out').branch(limited));
      return p;
    };
    const bad = build();
    expect(() => bad.app.synth()).toThrow(/states of Stack\/Limited \(.*Limited Acquire.*\) are nested in a Parallel or Map of yours that is JSONata \(or in the JSONata state machine\) Stack\/Machine.*Give the construct queryLanguage: QueryLanguage.JSONATA/);
    const good = build(sfn.QueryLanguage.JSONATA);
    const definition = definitionOf(Object.values(Template.fromStack(good.stack).findResources('AWS::StepFunctions::StateMachine'))[0].Properties.DefinitionString);
    const branch = definition.States['Fan Out'].Branches[0].States;
    expect(branch['Limited Acquire'].Arguments).toBeDefined();
    expect(branch['Limited Wait'].Seconds).toBe('{% $states.input.waitSeconds %}');
  });

  test('in a user\'s JSONata Parallel inside a JSONPath machine: the synth fails too (review finding 7)', () => {
    const p = pieces('JSONPath');
    p.machine(sfn.Parallel.jsonata(p.stack, 'UP').branch(new RateLimitedTask(p.stack, 'Limited', { limiter: p.limiter, task: p.task('jsonata') })));
    expect(() => p.app.synth()).toThrow(/states of Stack\/Limited .* are nested in a Parallel or Map of yours that is JSONata/);
  });

  test('in a JSONPath machine no queryLanguage is needed', () => {
    const p = pieces('JSONPath');
    p.machine(new sfn.Parallel(p.stack, 'Fan Out').branch(new RateLimitedTask(p.stack, 'Limited', { limiter: p.limiter, task: p.task('jsonPath') })));
    expect(() => Template.fromStack(p.stack)).not.toThrow();
  });
});

describe('the definition checks can fail', () => {
  test('a JSONPath Wait in a JSONata machine, a ResultPath in a JSONata catch, a state marked JSONPath in a JSONata machine', () => {
    const resource = (definition: object) => ({ Resources: { M: { Type: 'AWS::StepFunctions::StateMachine', Properties: { DefinitionString: JSON.stringify(definition) } } } });
    expect(() => validateTemplate(resource({ QueryLanguage: 'JSONata', StartAt: 'W', States: { W: { Type: 'Wait', SecondsPath: '$.s', End: true } } })))
      .toThrow(/invalid definition of M: .*W: SecondsPath in a JSONata state/);
    expect(languageProblems({
      QueryLanguage: 'JSONata',
      StartAt: 'T',
      States: { T: { Type: 'Task', Resource: 'arn:aws:states:::lambda:invoke', Arguments: {}, Catch: [{ ErrorEquals: ['States.ALL'], ResultPath: '$.e', Next: 'P' }], End: true }, P: { Type: 'Pass', QueryLanguage: 'JSONPath', End: true } },
    })).toEqual(['T: Catch[0].ResultPath in a JSONata state', 'P: marked JSONPath in a JSONata machine']);
    expect(languageProblems({ StartAt: 'P', States: { P: { Type: 'Pass', Output: {}, End: true } } })).toEqual(['P: Output in a JSONPath state']);
  });
});

describe('the local runner and JSONata', () => {
  test('refuses a JSONata machine before starting, naming its JSONata states', async () => {
    const stack = SHAPES.RateLimitedTask('JSONata', 'jsonata');
    await expect(LocalRunner.start(stack, stack.node.findChild('Machine'))).rejects.toMatchObject({
      name: 'JsonataNotSupported',
      message: expect.stringMatching(/cannot run JSONata states .*Limited Acquire, .*Call/),
    });
  });

  test('refuses a JSONata state inside a JSONPath machine too, and lists nested ones', () => {
    expect(jsonataStates({
      StartAt: 'A',
      States: {
        A: { Type: 'Pass', Next: 'M' },
        M: { Type: 'Map', End: true, ItemProcessor: { StartAt: 'B', States: { B: { Type: 'Pass', QueryLanguage: 'JSONata', End: true } } } },
      },
    })).toEqual(['M/B']);
  });
});

describe('review findings (adversarial review, fixed)', () => {
  test('sendMessageTask resultPath in a JSONata machine becomes an Output merge', () => {
    const p = pieces('JSONata');
    const target = lambda.Function.fromFunctionAttributes(p.stack, 'Target', { functionArn: 'arn:aws:lambda:us-east-1:123456789012:function:t', sameEnvironment: true });
    const buffer = new BufferedQueueConsumer(p.stack, 'Buffer', { target: QueueTarget.dispatch(target) });
    p.machine(buffer.sendMessageTask(p.stack, 'S', { messageBody: sfn.TaskInput.fromText('{% $states.input %}'), resultPath: '$.r' }));
    const s = definitionOf(Object.values(Template.fromStack(p.stack).findResources('AWS::StepFunctions::StateMachine'))[0].Properties.DefinitionString).States.S;
    expect(s.ResultPath).toBeUndefined();
    expect(s.Output).toBe('{% $merge([$states.input, {"r": $states.result}]) %}');
  });

  test('a JSONPath itemSelector without top-level .$ keys (tokens, nested, literal) still reaches the Map', () => {
    const p = pieces('JSONPath');
    p.machine(new ThrottledMap(p.stack, 'M', {
      itemsPath: '$.orders', itemSelector: { order: sfn.JsonPath.stringAt('$$.Map.Item.Value'), nested: { 'v.$': '$.tenant' }, fixed: 'x' }, itemProcessor: p.task('jsonPath'),
    }));
    const m = definitionOf(Object.values(Template.fromStack(p.stack).findResources('AWS::StepFunctions::StateMachine'))[0].Properties.DefinitionString).States.M;
    expect(m.ItemSelector).toEqual({ 'order.$': '$$.Map.Item.Value', 'nested': { 'v.$': '$.tenant' }, 'fixed': 'x' });
  });

  test.each<[string, () => void, RegExp]>([
    ['a nested JSONPath field in a JSONata machine\'s itemSelector', () => {
      const p = pieces('JSONata');
      p.machine(new ThrottledMap(p.stack, 'M', { itemSelector: { nested: { 'v.$': '$.tenant' } }, itemProcessor: p.task('jsonata') }));
    }, /itemSelector reads JSONPath/],
    ['a literal .$ key in a JSONata machine\'s message body', () => {
      const p = pieces('JSONata');
      const target = lambda.Function.fromFunctionAttributes(p.stack, 'Target', { functionArn: 'arn:aws:lambda:us-east-1:123456789012:function:t', sameEnvironment: true });
      const buffer = new BufferedQueueConsumer(p.stack, 'Buffer', { target: QueueTarget.dispatch(target) });
      p.machine(buffer.sendMessageTask(p.stack, 'S', { messageBody: sfn.TaskInput.fromObject({ 'id.$': '$.id' }) }));
    }, /messageBody reads JSONPath/],
    ['a JsonPath token key in a JSONata machine names the path', () => {
      const p = pieces('JSONata');
      p.machine(new RateLimitedTask(p.stack, 'L', { limiter: p.limiter, task: p.task('jsonata'), acquire: { key: sfn.JsonPath.stringAt('$.tenant') } }));
    }, /acquire.key is a JSONPath \(\$.tenant\)/],
  ])('fails at synth: %s', (_n, make, message) => expectValidationError(make, message));

  test('a JsonPath token key and a "$.tenant" FIFO group id are read from the input in a JSONPath machine', () => {
    const p = pieces('JSONPath');
    const target = lambda.Function.fromFunctionAttributes(p.stack, 'Target', { functionArn: 'arn:aws:lambda:us-east-1:123456789012:function:t', sameEnvironment: true });
    const buffer = new BufferedQueueConsumer(p.stack, 'Buffer', { target: QueueTarget.dispatch(target), fifo: true });
    const limited = new RateLimitedTask(p.stack, 'L', { limiter: p.limiter, task: p.task('jsonPath'), acquire: { key: sfn.JsonPath.stringAt('$.tenant') } });
    p.machine(limited.next(buffer.sendMessageTask(p.stack, 'S', { messageBody: sfn.TaskInput.fromJsonPathAt('$'), messageGroupId: '$.tenant' })));
    const states = definitionOf(Object.values(Template.fromStack(p.stack).findResources('AWS::StepFunctions::StateMachine'))[0].Properties.DefinitionString).States;
    expect(states['L Acquire'].Parameters['key.$']).toBe('$.tenant');
    expect(states.S.Parameters['MessageGroupId.$']).toBe('$.tenant');
  });

  test('a RateLimitedTask around a language-less task in a user\'s Parallel of a JSONata machine: the advice names the task too', () => {
    const p = pieces('JSONata');
    const plain = new tasks.LambdaInvoke(p.stack, 'C', { lambdaFunction: p.fn, retryOnServiceExceptions: false });
    p.machine(sfn.Parallel.jsonata(p.stack, 'UP').branch(new RateLimitedTask(p.stack, 'L', { limiter: p.limiter, task: plain, queryLanguage: sfn.QueryLanguage.JSONATA })));
    expect(() => p.app.synth()).toThrow(/states of Stack\/L \(C\) .*make the wrapped task a JSONata state/);
  });
});
