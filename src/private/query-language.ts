import { Stack, Token } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { IConstruct } from 'constructs';
import { fail } from './validation';

// Every state this library renders is rendered in its state machine's query language, decided at render time
// (shared/DESIGN.md §7). aws-cdk-lib passes the machine's language to top-level states only (`toStateJson(topLevel)`);
// states in a Parallel branch or a Map processor get none. So the library's own containers (the item unit, the
// throttled map) render their nested graphs with the language they resolved, and push it as the render context for
// anything deeper. A state of ours nested in a container of the user's, in a JSONata machine, cannot learn the
// language: the construct's `queryLanguage` prop says it (as a `.jsonata()` factory does for aws-cdk-lib's states),
// and the construct's validation fails the synth when a JSONPath rendering landed in a JSONata machine.

const JSONATA = sfn.QueryLanguage.JSONATA;
const JSON_PATH = sfn.QueryLanguage.JSON_PATH;

/** The languages of the containers being rendered, innermost last. */
const context: sfn.QueryLanguage[] = [];

/** How one of our states renders. */
export interface Rendering {
  /** The language to render in. */
  readonly lang: sfn.QueryLanguage;
  /** Whether the language was determined (given, or passed down) rather than assumed. */
  readonly known: boolean;
  /** `{ QueryLanguage: 'JSONata' }` when a JSONata state sits where the surrounding language is not (known to be) JSONata. */
  readonly marker: { QueryLanguage?: string };
}

/**
 * The language a state of ours renders in: the construct's `queryLanguage` prop, else the machine's language passed at
 * render time, else the language of the library container being rendered, else JSONPath (assumed).
 */
export function rendering(scope: IConstruct, topLevel: sfn.QueryLanguage | undefined, hint: sfn.QueryLanguage | undefined): Rendering {
  const surrounding = topLevel ?? context[context.length - 1];
  if (hint === JSON_PATH && surrounding === JSONATA) {
    fail(scope, 'queryLanguage is JSONPath but the state machine is JSONata: Step Functions rejects JSONPath states in a JSONata machine. '
      + 'Leave queryLanguage unset, or set it to JSONata');
  }
  const lang = hint ?? surrounding ?? JSON_PATH;
  if (hint === undefined && surrounding === undefined) assumed.add(scope);
  else known.add(scope);
  return {
    lang,
    known: hint !== undefined || surrounding !== undefined,
    marker: lang === JSONATA && surrounding !== JSONATA ? { QueryLanguage: 'JSONata' } : {},
  };
}

/**
 * States that rendered without knowing their machine's language (JSONPath assumed), and states that rendered knowing
 * it. aws-cdk-lib also renders a Distributed Map without a language to find its policies; a state that rendered with
 * its language at least once was rendered into its machine with it.
 */
const assumed = new WeakSet<IConstruct>();
const known = new WeakSet<IConstruct>();

/** Whether `state` rendered only without knowing its machine's language. */
export function renderedAssumingJsonPath(state: IConstruct): boolean {
  return assumed.has(state) && !known.has(state);
}

/**
 * The language an aws-cdk-lib task renders its own fields in: its explicit one (the construct's hint, passed as the
 * task's `queryLanguage`), else the one passed at render time, else JSONPath (assumed, and noted for validation).
 */
export function taskLanguage(task: IConstruct, topLevel: sfn.QueryLanguage | undefined, explicit: sfn.QueryLanguage | undefined): sfn.QueryLanguage {
  if (explicit === undefined && topLevel === undefined) assumed.add(task);
  else known.add(task);
  return explicit ?? topLevel ?? JSON_PATH;
}

/** Runs `render` with `lang` as the render context of the states it renders. */
export function withLanguage<T>(r: Rendering, render: () => T): T {
  // An assumed language is not passed down: what renders inside stays undetermined too.
  if (!r.known) return render();
  const lang = r.lang;
  context.push(lang);
  try {
    return render();
  } finally {
    context.pop();
  }
}

/** A JSONata expression string. */
export const expr = (body: string): string => `{% ${body} %}`;

/** Whether a user-given value is a JSONata expression (`{% ... %}`). */
export function isJsonataExpression(v: unknown): boolean {
  return typeof v === 'string' && /^\{%[\s\S]*%\}$/.test(v.trim());
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const field = (name: string) => (IDENTIFIER.test(name) ? name : `\`${name.replace(/`/g, '')}\``);

/**
 * The JSONata equivalent of a simple JSONPath: `$`, `$.a.b`, `$$.Context.Field`, `$[0]`, and the intrinsic this library
 * writes (`States.ArrayLength(<path>)`). Undefined for anything else.
 */
export function jsonataOf(path: string): string | undefined {
  const arrayLength = /^States\.ArrayLength\((.+)\)$/.exec(path);
  if (arrayLength) {
    const inner = jsonataOf(arrayLength[1].trim());
    return inner && `$count(${inner})`;
  }
  const m = /^(\$\$|\$)((?:\.[A-Za-z0-9_]+|\[\d+\])*)$/.exec(path);
  if (!m) return undefined;
  const root = m[1] === '$$' ? '$states.context' : '$states.input';
  const parts = [...m[2].matchAll(/\.([A-Za-z0-9_]+)|\[(\d+)\]/g)].map((p) => (p[1] !== undefined ? `.${field(p[1])}` : `[${p[2]}]`));
  return root + parts.join('');
}

/** `Parameters` as JSONata `Arguments`: each `key.$` path becomes `key: {% expression %}`; literals stay. */
export function argumentsOf(scope: IConstruct, params: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) {
    if (k.endsWith('.$') && typeof v === 'string') {
      const body = jsonataOf(v);
      if (body === undefined) fail(scope, `cannot render ${k} = ${v} in JSONata: no JSONata equivalent known for this path`);
      out[k.slice(0, -2)] = expr(body);
    } else if (v !== null && typeof v === 'object' && !Array.isArray(v) && !Token.isUnresolved(v)) {
      out[k] = argumentsOf(scope, v as Record<string, unknown>);
    } else {
      out[k] = v;
    }
  }
  return out;
}

/**
 * The JSONata body of "the state input with `value` put at `location`" — what a JSONPath `ResultPath` does: `$` is
 * the value itself, `null` (JsonPath.DISCARD) the input unchanged, `$.a.b` the input merged at that field.
 */
export function mergeAt(scope: IConstruct, location: string | null | undefined, value: string, input = '$states.input'): string {
  if (location === undefined || location === '$') return value;
  if (location === null || location === sfn.JsonPath.DISCARD) return input;
  const m = /^\$((?:\.[A-Za-z0-9_]+)+)$/.exec(location);
  if (!m) fail(scope, `cannot render ResultPath ${location} in JSONata: give a simple path such as $.result`);
  const names = m[1].slice(1).split('.');
  const build = (base: string, rest: string[]): string => {
    const [head, ...tail] = rest;
    const inner = tail.length === 0 ? value : build(`${base}.${field(head)}`, tail);
    return `$merge([${base}, {${JSON.stringify(head)}: ${inner}}])`;
  };
  return build(input, names);
}

/** A rendered state's Catch entries in JSONata: `ResultPath` becomes `Output` (the input with the error merged in). */
export function jsonataCatches(scope: IConstruct, json: Record<string, any>): Record<string, any> {
  if (!Array.isArray(json.Catch)) return json;
  return {
    ...json,
    Catch: json.Catch.map((c: Record<string, any>) => {
      if (!('ResultPath' in c) || c.Output !== undefined) return c;
      const { ResultPath, ...rest } = c;
      return { ...rest, Output: expr(mergeAt(scope, ResultPath, '$states.errorOutput')) };
    }),
  };
}

/**
 * A value the user gave as a path or expression, checked against the language the state renders in: a JSONPath
 * (`$...`) in a JSONPath machine, a JSONata expression (`{% ... %}`) in a JSONata machine. A mismatch fails the synth
 * saying what to write.
 */
export function userExpression(scope: IConstruct, prop: string, value: string, lang: sfn.QueryLanguage): string {
  if (lang === JSONATA && value.startsWith('$')) {
    const body = jsonataOf(value);
    fail(scope, `${prop} is a JSONPath (${value}) but the state machine's query language is JSONata: write a JSONata expression`
      + (body ? `, e.g. '${expr(body)}'` : ' ({% ... %})'));
  }
  if (lang === JSON_PATH && isJsonataExpression(value)) {
    fail(scope, `${prop} is a JSONata expression (${value}) but the state machine's query language is JSONPath: write a JSONPath such as '$.field'`);
  }
  return value;
}

export { JSONATA, JSON_PATH };

/**
 * The catches this library adds to a user's task, rendered in that task's language. aws-cdk-lib renders a task's
 * catches by the task's own `queryLanguage` only (TaskStateBase does not pass the machine's language to them), so a
 * task rendered as JSONata (a `.jsonata()` task, or any task in a JSONata machine) would carry a `ResultPath` in its
 * Catch. The task's rendering is wrapped: its body is aws-cdk-lib's, its catches are translated when the task renders
 * JSONata (the language it renders its own fields in: its own, else the one passed at render time).
 */
export function catchesInTaskLanguage(task: sfn.TaskStateBase | sfn.Parallel): void {
  const own = () => (task as unknown as { queryLanguage?: sfn.QueryLanguage }).queryLanguage;
  wrapRendering(task, (json, topLevel) => (taskLanguage(task, topLevel, own()) === JSONATA ? jsonataCatches(task, json) : json));
}

/**
 * Adds a step to how a user's task renders (the one place the library changes a state it does not own): `transform`
 * gets aws-cdk-lib's rendering and the language passed at render time. Wrappers compose.
 */
export function wrapRendering(
  task: sfn.State, transform: (json: Record<string, any>, topLevel?: sfn.QueryLanguage) => Record<string, any>,
): void {
  const render = task.toStateJson.bind(task);
  Object.defineProperty(task, 'toStateJson', {
    configurable: true,
    writable: true,
    value: (topLevel?: sfn.QueryLanguage) => transform(render(topLevel) as Record<string, any>, topLevel),
  });
}

/**
 * The top-level query language of each state machine in `scope`'s stack whose definition holds a state named in
 * `stateNames`, from the rendered definition.
 */
export function machinesHolding(scope: IConstruct, stateNames: string[]): { path: string; queryLanguage: string }[] {
  const stack = Stack.of(scope);
  const found: { path: string; queryLanguage: string }[] = [];
  for (const m of stack.node.findAll().filter((c): c is sfn.CfnStateMachine => c instanceof sfn.CfnStateMachine)) {
    const text = flatten(stack.resolve(m.definitionString));
    if (!stateNames.some((n) => text.includes(JSON.stringify(n) + ':'))) continue;
    let parsed: any;
    try {
      parsed = JSON.parse(text);
    } catch {
      continue;
    }
    // the language each named state inherits where it sits: the machine's, or a JSONata container's of the user's
    const inherited: string[] = [];
    const visit = (graph: any, lang: string) => {
      for (const [name, st] of Object.entries<any>(graph?.States ?? {})) {
        const own = st.QueryLanguage ?? lang;
        if (stateNames.includes(name)) inherited.push(lang);
        for (const b of st.Branches ?? []) visit(b, own);
        if (st.ItemProcessor) visit(st.ItemProcessor, own);
        if (st.Iterator) visit(st.Iterator, own);
      }
    };
    visit(parsed, parsed.QueryLanguage ?? 'JSONPath');
    found.push({ path: (m.node.scope ?? m).node.path, queryLanguage: inherited.includes('JSONata') ? 'JSONata' : parsed.QueryLanguage ?? 'JSONPath' });
  }
  return found;
}

/** A resolved definition string as plain text (Fn::Join pieces joined, other tokens as placeholders). */
function flatten(v: unknown): string {
  if (typeof v === 'string') return v;
  const o = v as Record<string, any> | undefined;
  if (o && Array.isArray(o['Fn::Join'])) return (o['Fn::Join'][1] as unknown[]).map(flatten).join(o['Fn::Join'][0]);
  return 'TOKEN';
}

/**
 * The validation of a construct whose states may have rendered without their machine's language (nested in a Parallel
 * or Map of the user's): fails when such a state landed in a JSONata machine.
 */
export function languageValidation(construct: IConstruct, states: () => sfn.State[]): { validate(): string[] } {
  return {
    validate: () => {
      const assumedStates = states().filter((s) => renderedAssumingJsonPath(s));
      if (assumedStates.length === 0) return [];
      return machinesHolding(construct, assumedStates.map((s) => s.stateId)).filter((m) => m.queryLanguage === 'JSONata').map((m) =>
        `states of ${construct.node.path} (${assumedStates.map((s) => s.stateId).join(', ')}) are nested in a Parallel or Map of yours that is JSONata (or in the JSONata state machine) ${m.path}: `
        + 'aws-cdk-lib renders nested states without the machine\'s language, so they rendered as JSONPath. Give the construct queryLanguage: QueryLanguage.JSONATA'
        + (assumedStates.some((s) => !s.node.path.startsWith(`${construct.node.path}/`))
          ? ', and make the wrapped task a JSONata state (a .jsonata() factory such as LambdaInvoke.jsonata, or queryLanguage: QueryLanguage.JSONATA on it)' : ''));
    },
  };
}

/** A user value that is a JsonPath token (`JsonPath.stringAt('$.x')`) as its path (`$.x`); other values as they are. */
export function pathOfToken(value: string): string {
  if (!Token.isUnresolved(value)) return value;
  const paths = [...sfn.FieldUtils.findReferencedPaths({ v: value })];
  return paths.length === 1 ? paths[0] : value;
}

/** Whether an object reads JSONPath anywhere: a `key.$` field at any depth, or a JsonPath token. */
export function readsJsonPath(value: unknown): boolean {
  if (typeof value === 'string') return Token.isUnresolved(value) && sfn.FieldUtils.findReferencedPaths({ v: value }).length > 0;
  if (Array.isArray(value)) return value.some(readsJsonPath);
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).some(([k, v]) => k.endsWith('.$') || readsJsonPath(v));
  }
  return false;
}

/** Whether an object holds a JSONata expression anywhere. */
export function holdsJsonata(value: unknown): boolean {
  if (typeof value === 'string') return isJsonataExpression(value);
  if (Array.isArray(value)) return value.some(holdsJsonata);
  if (value !== null && typeof value === 'object') return Object.values(value).some(holdsJsonata);
  return false;
}
