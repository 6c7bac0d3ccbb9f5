import { enteredState, executionContext, pinExecutionPaths, readsStateContext, RUNNER_CONTEXT_KEY, withStateContext } from '../../local/context';

const K = RUNNER_CONTEXT_KEY;

describe('context object', () => {
  test('executionContext gives $$.Execution, $$.StateMachine and the runner\'s copy of $$.Execution', () => {
    const ctx = executionContext({
      executionArn: 'arn:aws:states:us-east-1:1:execution:M:e',
      name: 'e',
      startTime: '2024-01-01T00:00:00.000Z',
      input: { a: 1 },
      redriveCount: 1,
      stateMachineArn: 'arn:aws:states:us-east-1:1:stateMachine:M',
      stateMachineName: 'M',
    });
    expect(ctx).toEqual({
      Execution: { Id: 'arn:aws:states:us-east-1:1:execution:M:e', Name: 'e', StartTime: '2024-01-01T00:00:00.000Z', Input: { a: 1 }, RedriveCount: 1 },
      StateMachine: { Id: 'arn:aws:states:us-east-1:1:stateMachine:M', Name: 'M' },
      [K]: { Execution: ctx.Execution },
    });
  });

  test('pinExecutionPaths points $$.Execution paths, in templates, intrinsics and path fields, at the runner\'s copy; literals stay', () => {
    const def = {
      States: {
        A: {
          Type: 'Pass',
          InputPath: '$$.Execution.Input',
          Parameters: { 'start.$': '$$.Execution.StartTime', 'f.$': "States.Format('{}', $$.Execution.Name)", 'note': '$$.Execution.Id', 'x.$': '$$.ExecutionX' },
        },
        B: { Type: 'Choice', Choices: [{ Variable: '$$.Execution.RedriveCount', NumericEquals: 0, Next: 'A' }] },
        M: { Type: 'Map', ItemsPath: '$$.Execution.Input.items', ItemProcessor: { States: { I: { Type: 'Pass', Parameters: { 'id.$': '$$.Execution.Id' } } } } },
      },
    };
    const own = JSON.parse(JSON.stringify(def.States.M));
    pinExecutionPaths(def);
    expect(def.States.A).toEqual({
      Type: 'Pass',
      InputPath: `$$.${K}.Execution.Input`,
      Parameters: { 'start.$': `$$.${K}.Execution.StartTime`, 'f.$': `States.Format('{}', $$.${K}.Execution.Name)`, 'note': '$$.Execution.Id', 'x.$': '$$.ExecutionX' },
    });
    expect(def.States.B.Choices[0].Variable).toBe(`$$.${K}.Execution.RedriveCount`);
    expect(def.States.M.ItemProcessor.States.I.Parameters['id.$']).toBe(`$$.${K}.Execution.Id`);
    // own fields only: not the item processor (a Distributed Map's children are executions of their own)
    pinExecutionPaths(own, true);
    expect([own.ItemsPath, own.ItemProcessor.States.I.Parameters['id.$']]).toEqual([`$$.${K}.Execution.Input.items`, '$$.Execution.Id']);
  });

  test('readsStateContext accepts $$.State.Name/EnteredTime in payload templates and intrinsics, ignores literals and nested machines', () => {
    expect(readsStateContext('S', { Type: 'Pass', Parameters: { 'n.$': '$$.State.Name', 'f.$': "States.Format('{}', $$.State.EnteredTime)" } })).toBe(true);
    expect(readsStateContext('S', { Type: 'Pass', Comment: 'reads $$.State.Name', Result: { text: '$$.State.RetryCount' } })).toBe(false);
    expect(readsStateContext('S', { Type: 'Map', ItemProcessor: { States: { I: { Type: 'Pass', Parameters: { 'n.$': '$$.State.Name' } } } } })).toBe(false);
  });

  test('readsStateContext refuses, naming the state and field, what the runner cannot give', () => {
    expect(() => readsStateContext('Count', { Type: 'Pass', Parameters: { 'n.$': '$$.State.RetryCount' } })).toThrow(/state "Count" reads n\.\$: .*RetryCount is not available/);
    expect(() => readsStateContext('Whole', { Type: 'Pass', Parameters: { 's.$': '$$.State' } })).toThrow(/state "Whole" reads s\.\$: .*only \$\$\.State\.Name and \$\$\.State\.EnteredTime/);
    expect(() => readsStateContext('Out', { Type: 'Pass', OutputPath: '$$.State.Name' })).toThrow(/state "Out" reads OutputPath: .*in payload templates only/);
    expect(() => readsStateContext("It's", { Type: 'Pass', Parameters: { 'f.$': "States.Format('{}', $$.State.Name)" } })).toThrow(/cannot be written into an intrinsic/);
  });

  test('enteredState writes the name and entered time in as literals, in a copy, leaving nested machines as they are', () => {
    const processor = { States: {} };
    const state = {
      Type: 'Map',
      ItemSelector: { 'n.$': '$$.State.Name', 'nested': { 't.$': '$$.State.EnteredTime' }, 'f.$': "States.Format('{} at {}', $$.State.Name, $$.State.EnteredTime)", 'i.$': '$$.Map.Item.Index' },
      ItemProcessor: processor,
    };
    const copy = enteredState(state, 'Each', '2024-01-01T00:00:00.000Z');
    expect(copy).toEqual({
      Type: 'Map',
      ItemSelector: { 'n': 'Each', 'nested': { t: '2024-01-01T00:00:00.000Z' }, 'f.$': "States.Format('{} at {}', 'Each', '2024-01-01T00:00:00.000Z')", 'i.$': '$$.Map.Item.Index' },
      ItemProcessor: processor,
    });
    expect(copy.ItemProcessor).toBe(processor);
    expect(state.ItemSelector['n.$']).toBe('$$.State.Name');
  });

  test('withStateContext: a state that reads $$.State is a fresh copy at each read, at any depth; others are as defined', () => {
    const def = {
      StartAt: 'A',
      States: {
        A: { Type: 'Pass', Parameters: { 't.$': '$$.State.EnteredTime' }, Next: 'P' },
        P: { Type: 'Parallel', Branches: [{ StartAt: 'B', States: { B: { Type: 'Pass', Parameters: { 'n.$': '$$.State.Name' }, End: true } } }], End: true },
      },
    };
    const view = withStateContext(def);
    const first = view.States.A;
    const second = view.States.A;
    expect(first).not.toBe(second);
    expect(first.Parameters.t).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(view.States.P.Branches[0].States.B.Parameters).toEqual({ n: 'B' });
    expect(Object.keys(view.States)).toEqual(['A', 'P']);
    expect(def.States.A.Parameters).toEqual({ 't.$': '$$.State.EnteredTime' }); // the definition itself is unchanged
  });
});
