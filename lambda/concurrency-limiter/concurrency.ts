// The concurrency function's logic, with its dependencies passed in (the handler wires DynamoDB, Step Functions and
// the clock; tests pass their own). One function does every operation: acquire (take slots now, or wait for them
// with the task token), release (give them back and hand them on), expire (a waiter's maxWait passed) and reap (an
// EventBridge execution status change: the execution failed, timed out or was stopped).
import { acquire, type Grant, type KeyState, reap, release, type Settings } from './core';
import { ThrottleErrors } from '../../src/errors';
import { ConcurrencyField as F, ConcurrencyMetricNames, ConcurrencyOp, METRIC_NAMESPACE } from '../../src/private/contract';
import { InvalidAcquireRequest } from '../rate-limiter/errors';

/** What the function needs from the world. */
export interface ConcurrencyDeps {
  readonly store: {
    update<T extends { readonly state: KeyState }>(pk: string, op: (state: KeyState) => T): Promise<T>;
    /** Keys of this limiter (for the reaper). */
    keys(prefix: string): Promise<string[]>;
  };
  /** SendTaskSuccess; rejects with the service's error (`TaskDoesNotExist`, `TaskTimedOut`, `InvalidToken` when gone). */
  readonly sendSuccess: (token: string, output: unknown) => Promise<void>;
  readonly nowMs: () => number;
  readonly limiterName: string;
  readonly settings: Settings;
  readonly maxWaitMs: number;
  readonly emit?: (line: string) => void;
}

/** Errors of a task-token callback that mean nobody waits for the token any more. */
const GONE = new Set(['TaskDoesNotExist', 'TaskTimedOut', 'InvalidToken']);

/** A waiter's maxWait passed with no slot: its registration is gone, nothing is held. */
export class ConcurrencyWaitExpired extends Error {
  constructor(message: string) {
    super(message);
    this.name = ThrottleErrors.CONCURRENCY_WAIT_EXPIRED;
  }
}

/** The task's own error, raised again after its lease was released (the caller sees the real error). */
class TaskError extends Error {
  constructor(name: string, cause: string) {
    super(cause);
    this.name = name;
  }
}

export async function handle(event: any, deps: ConcurrencyDeps): Promise<unknown> {
  if (event?.source === 'aws.states' && event?.['detail-type'] === 'Step Functions Execution Status Change') {
    return reapExecution(String(event.detail?.executionArn ?? ''), deps);
  }
  const op = event?.[F.OP];
  const key = event?.[F.KEY];
  const leaseId = event?.[F.LEASE];
  if (typeof key !== 'string' || key.length < 1 || key.length > 512) throw new InvalidAcquireRequest(`key must be a string of 1 to 512 characters, got ${JSON.stringify(key)}`);
  if (typeof leaseId !== 'string' || leaseId.length < 1) throw new InvalidAcquireRequest(`leaseId must be a non-empty string, got ${JSON.stringify(leaseId)}`);
  const pk = `${deps.limiterName}#c#${key}`;
  const now = deps.nowMs();
  if (op === ConcurrencyOp.ACQUIRE) {
    const slots = event[F.SLOTS] ?? 1;
    if (!Number.isInteger(slots) || slots < 1 || slots > deps.settings.limit) {
      throw new InvalidAcquireRequest(`slots must be an integer from 1 to the limit ${deps.settings.limit}, got ${JSON.stringify(slots)}`);
    }
    const token = event[F.TOKEN];
    if (typeof token !== 'string' || token.length === 0) throw new InvalidAcquireRequest('token must be the task token ($$.Task.Token)');
    const out = await deps.store.update(pk, (s) => acquire(s, {
      id: leaseId, slots, execution: String(event[F.EXECUTION] ?? ''), token, maxWaitMs: deps.maxWaitMs,
    }, now, deps.settings));
    metrics(deps, out.state, { reclaimed: out.reclaimed, expired: out.expired });
    if (out.result === 'granted') await deps.sendSuccess(token, { leaseId, key, slots });
    await deliver(pk, key, out.grants.filter((g) => g.id !== leaseId), deps);
    return { result: out.result };
  }
  if (op === ConcurrencyOp.RELEASE || op === ConcurrencyOp.EXPIRE) {
    const out = await deps.store.update(pk, (s) => release(s, leaseId, now, deps.settings));
    metrics(deps, out.state, { reclaimed: out.reclaimed, expired: out.expired + (op === ConcurrencyOp.EXPIRE ? 1 : 0) });
    await deliver(pk, key, out.grants, deps);
    if (op === ConcurrencyOp.EXPIRE) {
      throw new ConcurrencyWaitExpired(`no slot of ${key} within maxWait (${deps.maxWaitMs} ms); the registration was removed${out.released ? ' (a slot granted at the deadline was given back)' : ''}`);
    }
    const error = event[F.ERROR];
    if (error && typeof error === 'object') throw new TaskError(String(error.Error ?? 'States.TaskFailed'), String(error.Cause ?? ''));
    return { released: out.released };
  }
  throw new InvalidAcquireRequest(`op must be ${Object.values(ConcurrencyOp).join(', ')}, got ${JSON.stringify(op)}`);
}

/** Sends each granted waiter its lease; a waiter that is gone gives its lease back, which may grant the next one. */
async function deliver(pk: string, key: string, grants: readonly Grant[], deps: ConcurrencyDeps): Promise<void> {
  const queue = [...grants];
  while (queue.length > 0) {
    const g = queue.shift()!;
    try {
      await deps.sendSuccess(g.t, { leaseId: g.id, key, slots: g.s });
      deps.emit?.(emf(deps.limiterName, { [ConcurrencyMetricNames.WAIT_TIME]: g.waitedMs }));
    } catch (err) {
      if (!GONE.has((err as Error).name)) throw err;
      const out = await deps.store.update(pk, (s) => release(s, g.id, deps.nowMs(), deps.settings));
      queue.push(...out.grants);
    }
  }
}

/** Every lease and waiter of an execution that ended without releasing (failed, timed out, stopped). */
async function reapExecution(executionArn: string, deps: ConcurrencyDeps): Promise<unknown> {
  if (!executionArn) return { reaped: 0 };
  let reaped = 0;
  for (const pk of await deps.store.keys(`${deps.limiterName}#c#`)) {
    const out = await deps.store.update(pk, (s) => reap(s, executionArn, deps.nowMs(), deps.settings));
    reaped += out.leases + out.waiters;
    await deliver(pk, pk.slice(`${deps.limiterName}#c#`.length), out.grants, deps);
  }
  return { reaped };
}

function metrics(deps: ConcurrencyDeps, state: KeyState, counts: { reclaimed: number; expired: number }): void {
  deps.emit?.(emf(deps.limiterName, {
    [ConcurrencyMetricNames.IN_USE]: state.used,
    [ConcurrencyMetricNames.WAITING]: state.waiters.length,
    [ConcurrencyMetricNames.RECLAIMED]: counts.reclaimed,
    [ConcurrencyMetricNames.EXPIRED]: counts.expired,
  }));
}

/** One CloudWatch embedded-metric-format line. */
function emf(limiterName: string, values: Record<string, number>): string {
  return JSON.stringify({
    _aws: {
      Timestamp: Date.now(),
      CloudWatchMetrics: [{
        Namespace: METRIC_NAMESPACE,
        Dimensions: [['LimiterName']],
        Metrics: Object.keys(values).map((Name) => ({ Name, Unit: Name === ConcurrencyMetricNames.WAIT_TIME ? 'Milliseconds' : 'Count' })),
      }],
    },
    LimiterName: limiterName,
    ...values,
  });
}
