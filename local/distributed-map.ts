// Distributed Map emulation for the local runner.
//
// aws-local-stepfunctions runs a Distributed Map as an inline one and ignores ItemBatcher, ItemReader and
// ToleratedFailure*. The runner replaces each such Map state with a Task state of its own resource; the handler
// below reads the items, applies ItemSelector, batches, runs the item processor as child executions with at most
// MaxConcurrency at once, counts failed children against the tolerated thresholds and returns the results.
import type * as Alsf from 'aws-local-stepfunctions' with { 'resolution-mode': 'import' };

/** The Resource of the Task state that stands in for a Map state the runner emulates. */
export const EMULATED_MAP_RESOURCE = 'arn:aws:states:::local-runner:map';

/** A Map state the runner emulates, by state name. */
export interface EmulatedMap {
  readonly name: string;
  /** The original Map state definition (its ItemProcessor already rewritten). */
  readonly state: any;
}

/** Reads the items of a Map state with an ItemReader (S3 cannot be reached locally): gets the state input. */
export type ItemReaderHandler = (input: any) => unknown[] | Promise<unknown[]>;

/** Whether aws-local-stepfunctions cannot run this Map state faithfully. */
function needsEmulation(state: any): boolean {
  return state.ItemProcessor?.ProcessorConfig?.Mode === 'DISTRIBUTED'
    || state.ItemBatcher !== undefined
    || state.ItemReader !== undefined
    || state.ToleratedFailurePercentage !== undefined || state.ToleratedFailurePercentagePath !== undefined
    || state.ToleratedFailureCount !== undefined || state.ToleratedFailureCountPath !== undefined;
}

const CARRIED_FIELDS = ['Comment', 'InputPath', 'ResultSelector', 'ResultPath', 'OutputPath', 'Retry', 'Catch', 'Next', 'End'];

/**
 * Replaces (in place, at any depth) every Map state that needs emulation with a Task state that keeps its
 * input/output processing, Retry, Catch and transition; returns the replaced maps, innermost first.
 */
export function rewriteMaps(states: Record<string, any>): EmulatedMap[] {
  const found: EmulatedMap[] = [];
  for (const [name, s] of Object.entries(states)) {
    if (s.Type === 'Map') {
      const processor = s.ItemProcessor ?? s.Iterator;
      if (processor?.States) found.push(...rewriteMaps(processor.States));
      if (needsEmulation(s)) {
        found.push({ name, state: s });
        const task: Record<string, unknown> = { Type: 'Task', Resource: EMULATED_MAP_RESOURCE };
        for (const f of CARRIED_FIELDS) if (s[f] !== undefined) task[f] = s[f];
        states[name] = task;
      }
    }
    if (s.Type === 'Parallel') for (const b of s.Branches ?? []) found.push(...rewriteMaps(b.States));
  }
  return found;
}

export interface MapRunOptions {
  readonly alsf: typeof Alsf;
  readonly itemReader?: ItemReaderHandler;
}

/** The execution an emulated Map state runs in. */
export interface MapParent {
  /** Its run options (task handlers, overrides, context object): the child executions run with them. */
  readonly runOptions: { readonly context?: Record<string, any>; readonly [option: string]: unknown };
  /** Aborts when the execution stops: no child starts after, and running ones are aborted. */
  readonly signal?: AbortSignal;
}

/** A failure of a child execution, as the emulated map reports it in place of its result. */
interface ChildFailure { readonly Error: string; readonly Cause: string }

/**
 * The handler of an emulated Map state: gets the state's effective input (after InputPath) and the execution it
 * runs in. ItemSelector and the `…Path` fields see that execution's context object, with `$$.Map.Item.Index` and
 * `$$.Map.Item.Value`. The children are executions of their own, as a Distributed Map's are: aws-local-stepfunctions
 * gives each its own `$$.Execution.Input` and `StartTime`; they keep the parent's `Id` and `Name`, with
 * `RedriveCount` 0.
 */
export function emulatedMapHandler(map: EmulatedMap, options: MapRunOptions): (input: any, parent: MapParent) => Promise<unknown> {
  const s = map.state;
  const processor = new options.alsf.StateMachine(s.ItemProcessor ?? s.Iterator, { validationOptions: { noValidate: true, checkArn: false } });
  // Payload templates and paths are evaluated by aws-local-stepfunctions itself, in a one-state machine built
  // once per template (ItemSelector runs for every item).
  const evaluators = new Map<string, Alsf.StateMachine>();
  const evaluate = async (template: unknown, input: unknown, context: Record<string, unknown> = {}): Promise<any> => {
    const key = JSON.stringify(template);
    let pass = evaluators.get(key);
    if (!pass) {
      pass = new options.alsf.StateMachine({ StartAt: 'Evaluate', States: { Evaluate: { Type: 'Pass', Parameters: template, End: true } } } as any,
        { validationOptions: { noValidate: true } });
      evaluators.set(key, pass);
    }
    return pass.run(input as any, { context } as any).result;
  };
  return async (input: any, parent: MapParent) => {
    const context = parent.runOptions.context ?? {};
    const path = (p: string, i: unknown) => evaluate({ 'value.$': p }, i, context).then((r) => r.value);
    const childRunOptions = { ...parent.runOptions, context: { ...context, Execution: { ...context.Execution, RedriveCount: 0 } } };
    let items: unknown;
    if (s.ItemReader) {
      if (!options.itemReader) {
        throw Object.assign(new Error(`Map state "${map.name}" reads its items with an ItemReader (${s.ItemReader.Resource}): give the runner an itemReaders["${map.name}"] handler`), { name: 'States.Runtime' });
      }
      items = await options.itemReader(input);
    } else {
      items = s.ItemsPath ? await path(s.ItemsPath, input) : input;
    }
    if (!Array.isArray(items)) {
      throw Object.assign(new Error(`Map state "${map.name}": the items are not an array`), { name: 'States.Runtime' });
    }

    const selector = s.ItemSelector ?? s.Parameters;
    let inputs: unknown[] = selector
      ? await Promise.all(items.map((value, index) => evaluate(selector, input, { ...context, Map: { Item: { Index: index, Value: value } } })))
      : items;
    if (s.ItemBatcher) inputs = await batches(inputs, s.ItemBatcher, input, (t, i) => evaluate(t, i, context), path);

    let concurrency = s.MaxConcurrency ?? 0;
    if (s.MaxConcurrencyPath) concurrency = await path(s.MaxConcurrencyPath, input);
    const limit = concurrency > 0 ? concurrency : 1000;

    const results: (unknown | ChildFailure)[] = new Array(inputs.length);
    const failed: number[] = [];
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < inputs.length && !parent.signal?.aborted; i = next++) {
        const child = processor.run(inputs[i] as any, childRunOptions as any);
        const abort = () => child.abort();
        parent.signal?.addEventListener('abort', abort, { once: true });
        try {
          results[i] = await child.result;
        } catch (err: any) {
          failed.push(i);
          const cause = err?.cause ?? err;
          results[i] = { Error: cause?.name ?? 'States.TaskFailed', Cause: cause?.message ?? String(cause) };
        } finally {
          parent.signal?.removeEventListener('abort', abort);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(limit, inputs.length) }, worker));

    const toleratedCount = s.ToleratedFailureCountPath ? await path(s.ToleratedFailureCountPath, input) : s.ToleratedFailureCount;
    const toleratedPct = s.ToleratedFailurePercentagePath ? await path(s.ToleratedFailurePercentagePath, input) : s.ToleratedFailurePercentage;
    const pct = inputs.length === 0 ? 0 : (100 * failed.length) / inputs.length;
    // With neither threshold set, no failure is tolerated; with one or both, exceeding any fails the map.
    const exceeded = (toleratedCount === undefined && toleratedPct === undefined)
      ? failed.length > 0
      : (toleratedCount !== undefined && failed.length > toleratedCount) || (toleratedPct !== undefined && pct > toleratedPct);
    if (exceeded) {
      const first = results[failed.sort((a, b) => a - b)[0]] as ChildFailure;
      throw Object.assign(new Error(
        `Map state "${map.name}": ${failed.length} of ${inputs.length} items failed (${pct.toFixed(1)} %), above the tolerated `
        + `${toleratedCount ?? 0} items / ${toleratedPct ?? 0} %; first failure: ${first.Error}: ${first.Cause}`), { name: 'States.ExceedToleratedFailureThreshold' });
    }
    return results;
  };
}

/** Groups items as ItemBatcher does: `{ Items: [...], BatchInput }`, closed at MaxItemsPerBatch or MaxInputBytesPerBatch. */
async function batches(
  items: unknown[],
  batcher: any,
  input: unknown,
  evaluate: (t: unknown, i: unknown) => Promise<any>,
  path: (p: string, i: unknown) => Promise<any>,
): Promise<unknown[]> {
  const maxItems: number | undefined = batcher.MaxItemsPerBatchPath ? await path(batcher.MaxItemsPerBatchPath, input) : batcher.MaxItemsPerBatch;
  const maxBytes: number | undefined = batcher.MaxInputBytesPerBatchPath
    ? await path(batcher.MaxInputBytesPerBatchPath, input)
    : batcher.MaxInputBytesPerBatch;
  const batchInput = batcher.BatchInput !== undefined ? await evaluate(batcher.BatchInput, input) : undefined;
  const out: unknown[] = [];
  let current: unknown[] = [];
  let bytes = 0;
  const close = () => {
    if (current.length === 0) return;
    out.push(batchInput === undefined ? { Items: current } : { BatchInput: batchInput, Items: current });
    current = [];
    bytes = 0;
  };
  for (const item of items) {
    const size = Buffer.byteLength(JSON.stringify(item));
    if (maxBytes !== undefined && current.length > 0 && bytes + size > maxBytes) close();
    current.push(item);
    bytes += size;
    if (maxItems !== undefined && current.length >= maxItems) close();
  }
  close();
  return out;
}
