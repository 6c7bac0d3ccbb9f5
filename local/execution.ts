// One local execution: runs the machine with a context object, collects its history, can be aborted, ends with
// SUCCEEDED, FAILED, TIMED_OUT or ABORTED, and tells listeners each status change the way EventBridge tells a
// rule ("Step Functions Execution Status Change" events from aws.states).
import { randomUUID } from 'crypto';
import type * as Alsf from 'aws-local-stepfunctions' with { 'resolution-mode': 'import' };
import { executionContext, type ExecutionIdentity } from './context';
import type { ExecutionScope, LocalTaskHandler } from './integrations';

/** One entry of the execution history, with its time (epoch ms). */
export interface LocalEvent {
  readonly type: string;
  readonly timestamp: number;
  readonly stateName?: string;
  readonly index?: number;
  readonly error?: string;
  readonly cause?: unknown;
}

export type LocalExecutionStatus = 'SUCCEEDED' | 'FAILED' | 'TIMED_OUT' | 'ABORTED';

export interface LocalExecution {
  readonly status: LocalExecutionStatus;
  readonly output?: any;
  readonly error?: string;
  readonly cause?: unknown;
  readonly events: LocalEvent[];
  /** `$$.Execution.Id`. */
  readonly executionArn: string;
  /** `$$.Execution.Name`. */
  readonly name: string;
}

/** A running execution. */
export interface LocalExecutionHandle {
  readonly executionArn: string;
  readonly name: string;
  /** The history so far (complete once `result` settles). */
  readonly events: readonly LocalEvent[];
  /** Settles when the execution ends, after the listeners got its final status. */
  readonly result: Promise<LocalExecution>;
  /**
   * Stops the execution, as StopExecution does: it ends ABORTED (with this error and cause, if given); nothing
   * after the state it is in runs, a Wait ends at once, a task token it waits for is withdrawn. No effect once
   * it ended.
   */
  abort(error?: string, cause?: string): void;
}

export type ExecutionStatus = 'RUNNING' | LocalExecutionStatus;

/** The event EventBridge delivers for a status change of a Step Functions execution. */
export interface ExecutionStatusChangeEvent {
  readonly 'version': '0';
  readonly 'id': string;
  readonly 'detail-type': 'Step Functions Execution Status Change';
  readonly 'source': 'aws.states';
  readonly 'account': string;
  /** ISO 8601, to the second. */
  readonly 'time': string;
  readonly 'region': string;
  /** The execution ARN. */
  readonly 'resources': string[];
  readonly 'detail': {
    readonly executionArn: string;
    readonly stateMachineArn: string;
    readonly name: string;
    readonly status: ExecutionStatus;
    /** Epoch ms. */
    readonly startDate: number;
    /** Epoch ms; null while RUNNING. */
    readonly stopDate: number | null;
    /** The input, as a JSON string. */
    readonly input: string;
    readonly inputDetails: { readonly included: boolean };
    /** The output of a SUCCEEDED execution, as a JSON string; else null. */
    readonly output: string | null;
    readonly outputDetails: { readonly included: boolean } | null;
    readonly error: string | null;
    readonly cause: string | null;
    readonly redriveCount: number;
  };
}

export type ExecutionStatusListener = (event: ExecutionStatusChangeEvent) => void;

/** What one execution needs from the runner. */
export interface StartExecutionOptions {
  readonly machine: Alsf.StateMachine;
  readonly input: unknown;
  readonly name: string;
  readonly redriveCount: number;
  readonly stateMachineArn: string;
  readonly stateMachineName: string;
  readonly roleArn?: string;
  readonly region: string;
  readonly account: string;
  /** Task handlers, by state name: bound to this execution. */
  readonly handlers: Record<string, LocalTaskHandler>;
  readonly waitTimeOverrides?: Record<string, number>;
  readonly retryIntervalOverrides?: Record<string, number | number[]>;
  /**
   * Gets every status change, as a function that builds the event (not built when no one listens). If it throws
   * on RUNNING, the execution does not start (`startExecution` throws); on the final status, `result` rejects.
   */
  readonly emit: (event: () => ExecutionStatusChangeEvent) => void;
}

/** Starts one execution. */
export function startExecution(o: StartExecutionOptions): LocalExecutionHandle {
  const controller = new AbortController();
  const startDate = Date.now();
  const executionArn = `${o.stateMachineArn.replace(':stateMachine:', ':execution:')}:${o.name}`;
  const identity: ExecutionIdentity = {
    executionArn,
    name: o.name,
    startTime: new Date(startDate).toISOString(),
    input: o.input,
    redriveCount: o.redriveCount,
    stateMachineArn: o.stateMachineArn,
    stateMachineName: o.stateMachineName,
    roleArn: o.roleArn,
  };
  const context = executionContext(identity);
  const taskResourceLocalHandlers: Record<string, (input: any) => unknown> = {};
  const runOptions = {
    context,
    overrides: { taskResourceLocalHandlers, waitTimeOverrides: o.waitTimeOverrides, retryIntervalOverrides: o.retryIntervalOverrides },
  };
  const scope: ExecutionScope = { executionArn, context, signal: controller.signal, runOptions };
  const stopped = () => Object.assign(new Error(`execution ${executionArn} has stopped`), { name: 'States.Runtime' });
  for (const [name, handler] of Object.entries(o.handlers)) {
    // aws-local-stepfunctions may still retry a task after the execution stopped: nothing more reaches a handler.
    taskResourceLocalHandlers[name] = (input) => {
      if (controller.signal.aborted) throw stopped();
      return handler(input, scope);
    };
  }

  const status = (s: ExecutionStatus, end?: { stopDate: number; output?: unknown; error?: string; cause?: unknown }): ExecutionStatusChangeEvent => ({
    'version': '0',
    'id': randomUUID(),
    'detail-type': 'Step Functions Execution Status Change',
    'source': 'aws.states',
    'account': o.account,
    'time': new Date(end?.stopDate ?? startDate).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    'region': o.region,
    'resources': [executionArn],
    'detail': {
      executionArn,
      stateMachineArn: o.stateMachineArn,
      name: o.name,
      status: s,
      startDate,
      stopDate: end?.stopDate ?? null,
      input: JSON.stringify(o.input ?? null),
      inputDetails: { included: true },
      output: s === 'SUCCEEDED' ? JSON.stringify(end?.output ?? null) : null,
      outputDetails: s === 'SUCCEEDED' ? { included: true } : null,
      error: end?.error ?? null,
      cause: end?.cause === undefined ? null : typeof end.cause === 'string' ? end.cause : JSON.stringify(end.cause),
      redriveCount: o.redriveCount,
    },
  });

  o.emit(() => status('RUNNING'));
  const execution = o.machine.run(o.input as any, runOptions as any);
  const events: LocalEvent[] = [];
  const collecting = (async () => {
    for await (const e of execution.eventLogs as AsyncGenerator<any>) {
      events.push({ type: e.type, timestamp: e.timestamp, stateName: e.state?.name, index: e.index, error: e.Error, cause: e.Cause });
    }
  })();
  let stopRequest: { error?: string; cause?: string } | undefined;

  const result = (async (): Promise<LocalExecution> => {
    let output: any;
    let failure: unknown;
    try {
      output = await execution.result;
    } catch (err) {
      failure = err;
    }
    controller.abort(); // the execution has ended: withdraw whatever still waits for it
    await collecting;
    const stopDate = Date.now();
    const base = { events, executionArn, name: o.name };
    let out: LocalExecution;
    const name = (failure as Error | undefined)?.name;
    if (failure === undefined) {
      out = { ...base, status: 'SUCCEEDED', output };
    } else if (name === 'ExecutionAbortedError') {
      out = { ...base, status: 'ABORTED', error: stopRequest?.error, cause: stopRequest?.cause };
    } else if (name === 'ExecutionTimeoutError') {
      out = { ...base, status: 'TIMED_OUT', error: 'States.Timeout', cause: 'The execution ran longer than its TimeoutSeconds' };
    } else {
      const failed = [...events].reverse().find((e) => e.type === 'ExecutionFailed');
      const cause = (failure as { cause?: { name?: string } }).cause;
      out = { ...base, status: 'FAILED', error: failed?.error ?? cause?.name ?? name, cause: failed?.cause ?? (failure as Error).message };
    }
    o.emit(() => status(out.status, { stopDate, output: out.output, error: out.error, cause: out.cause }));
    return out;
  })();

  return {
    executionArn,
    name: o.name,
    events,
    result,
    abort: (error?: string, cause?: string) => {
      if (controller.signal.aborted) return;
      stopRequest = { error, cause };
      execution.abort();
      controller.abort();
    },
  };
}
