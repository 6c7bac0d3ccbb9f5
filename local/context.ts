// The context object (`$$`) of local executions.
//
// aws-local-stepfunctions 3.0.0 takes a context object per run (`run(input, { context })`) and evaluates `$$.…`
// paths against it, but:
// - it overwrites `Execution.Input` and `Execution.StartTime` in every execution it starts, the nested ones of Map
//   iterations and Parallel branches included: there they would be the iteration's input and start. The runner
//   gives the whole `Execution` object again under its own key and points every `$$.Execution…` path of the
//   definition at it (`pinExecutionPaths`), so all states of an execution see the same values;
// - it has no `$$.State`. A state entered is read from its machine's `States` at that instant, so the runner
//   runs a view of the definition whose `States` give, for a state that reads `$$.State.Name` or
//   `$$.State.EnteredTime`, a copy with those values written in as literals (`withStateContext`). A retry runs
//   the same copy: EnteredTime stays the time the state was entered, as in Step Functions. `$$.State.RetryCount`
//   is not available (the library keeps retry attempts to itself), nor `$$.State` outside payload templates;
//   the runner refuses such definitions before running;
// - `$$.Map.Item.Index` and `$$.Map.Item.Value` it gives natively in a Map's ItemSelector (Parameters); the
//   runner's own Distributed Map emulation gives them too (distributed-map.ts).

/** The key under which the runner puts its copy of `$$.Execution` into the context object. */
export const RUNNER_CONTEXT_KEY = 'LocalRunner';

/** The identity of one execution. */
export interface ExecutionIdentity {
  readonly executionArn: string;
  readonly name: string;
  /** ISO 8601. */
  readonly startTime: string;
  readonly input: unknown;
  readonly redriveCount: number;
  readonly stateMachineArn: string;
  readonly stateMachineName: string;
  readonly roleArn?: string;
}

/** The context object of an execution, as aws-local-stepfunctions takes it. */
export function executionContext(e: ExecutionIdentity): Record<string, any> {
  const execution = {
    Id: e.executionArn,
    Input: e.input,
    Name: e.name,
    ...(e.roleArn !== undefined ? { RoleArn: e.roleArn } : {}),
    StartTime: e.startTime,
    RedriveCount: e.redriveCount,
  };
  return {
    Execution: execution,
    StateMachine: { Id: e.stateMachineArn, Name: e.stateMachineName },
    [RUNNER_CONTEXT_KEY]: { Execution: execution },
  };
}

const EXECUTION_PATH = /\$\$\.Execution(?![A-Za-z0-9_])/g;
const NESTED_MACHINES = ['ItemProcessor', 'Iterator', 'Branches'];

/** Whether a field holds a path (or a payload template entry that may hold one): `x.$`, `Variable`, `*Path`. */
function isPathField(key: string): boolean {
  return key.endsWith('.$') || key === 'Variable' || (key.endsWith('Path') && key !== 'ResultPath');
}

/**
 * Points every `$$.Execution…` path (in payload templates, intrinsic functions, InputPath, OutputPath,
 * ItemsPath, Choice variables, `…Path` fields) at the runner's copy of `$$.Execution`. In place, at any depth;
 * with `ownFieldsOnly`, not inside ItemProcessor/Iterator/Branches.
 */
export function pinExecutionPaths(node: any, ownFieldsOnly = false): void {
  if (Array.isArray(node)) {
    node.forEach((x) => pinExecutionPaths(x));
    return;
  }
  if (node === null || typeof node !== 'object') return;
  for (const key of Object.keys(node)) {
    const v = node[key];
    if (ownFieldsOnly && NESTED_MACHINES.includes(key)) continue;
    if (typeof v === 'string' && isPathField(key)) node[key] = v.replace(EXECUTION_PATH, () => `$$.${RUNNER_CONTEXT_KEY}.Execution`);
    else pinExecutionPaths(v);
  }
}

const STATE_PATH = /\$\$\.State(?![A-Za-z0-9_])(?:\.([A-Za-z0-9_]+))?/g;
const GIVEN_STATE_FIELDS = ['Name', 'EnteredTime'];
/** Characters an intrinsic function's string literal cannot hold in aws-local-stepfunctions' parser. */
const UNQUOTABLE = /['(){}\\]/;

/**
 * Whether a state reads `$$.State.Name` / `$$.State.EnteredTime` in its own fields; throws, naming the state and
 * the field, for any use of `$$.State` the runner cannot give.
 */
export function readsStateContext(stateName: string, state: any): boolean {
  let reads = false;
  const visit = (node: any, top: boolean) => {
    if (node === null || typeof node !== 'object') return;
    for (const [key, v] of Object.entries(node)) {
      if (top && NESTED_MACHINES.includes(key)) continue;
      if (typeof v !== 'string') {
        visit(v, false);
        continue;
      }
      if (!isPathField(key)) continue; // a literal
      const refs = [...v.matchAll(STATE_PATH)];
      if (refs.length === 0) continue;
      const unsupported = (why: string) => new Error(`state "${stateName}" reads ${key}: ${JSON.stringify(v)}: ${why}`);
      for (const [, field] of refs) {
        if (field === 'RetryCount') throw unsupported('$$.State.RetryCount is not available locally (aws-local-stepfunctions keeps retry attempts to itself)');
        if (!field || !GIVEN_STATE_FIELDS.includes(field)) {
          throw unsupported('the local runner gives only $$.State.Name and $$.State.EnteredTime');
        }
      }
      const exact = refs.length === 1 && refs[0][0] === v;
      if (!key.endsWith('.$') || !(exact || v.startsWith('States.'))) {
        throw unsupported('the local runner gives $$.State.Name and $$.State.EnteredTime in payload templates only ("x.$": "$$.State.Name", or an intrinsic function)');
      }
      if (!exact && UNQUOTABLE.test(stateName)) throw unsupported('the state name cannot be written into an intrinsic function');
      reads = true;
    }
  };
  visit(state, true);
  return reads;
}

/** A copy of a state (not of its nested machines) with `$$.State.Name` / `EnteredTime` written in as literals. */
export function enteredState(state: any, stateName: string, enteredTime: string): any {
  const value = (field: string) => (field === 'Name' ? stateName : enteredTime);
  const copy = (node: any, top: boolean): any => {
    if (Array.isArray(node)) return node.map((x) => copy(x, false));
    if (node === null || typeof node !== 'object') return node;
    const out: Record<string, any> = {};
    for (const [key, v] of Object.entries(node)) {
      if (top && NESTED_MACHINES.includes(key)) {
        out[key] = v;
      } else if (key.endsWith('.$') && typeof v === 'string' && v.includes('$$.State')) {
        const exact = /^\$\$\.State\.([A-Za-z]+)$/.exec(v);
        if (exact) out[key.slice(0, -2)] = value(exact[1]);
        else out[key] = v.replace(STATE_PATH, (_m, field: string) => `'${value(field)}'`);
      } else {
        out[key] = copy(v, false);
      }
    }
    return out;
  };
  return copy(state, true);
}

/**
 * A view of a state machine definition (not changed) whose `States`, at every depth, give a state that reads
 * `$$.State.Name` / `EnteredTime` as a copy with the values of this entry, taken when the state is read — which
 * aws-local-stepfunctions does exactly when it enters it. Other states are given as they are.
 */
export function withStateContext(machine: any): any {
  const states: Record<string, any> = {};
  const reading = new Set<string>();
  for (const [name, s] of Object.entries<any>(machine.States ?? {})) {
    let state = s;
    if (s.Type === 'Map') {
      state = { ...s };
      if (s.ItemProcessor) state.ItemProcessor = withStateContext(s.ItemProcessor);
      if (s.Iterator) state.Iterator = withStateContext(s.Iterator);
    } else if (s.Type === 'Parallel') {
      state = { ...s, Branches: (s.Branches ?? []).map(withStateContext) };
    }
    states[name] = state;
    if (readsStateContext(name, s)) reading.add(name);
  }
  if (reading.size === 0) return { ...machine, States: states };
  return {
    ...machine,
    States: new Proxy(states, {
      get: (target, key, receiver) => {
        const state = Reflect.get(target, key, receiver);
        return typeof key === 'string' && reading.has(key) ? enteredState(state, key, new Date().toISOString()) : state;
      },
    }),
  };
}
