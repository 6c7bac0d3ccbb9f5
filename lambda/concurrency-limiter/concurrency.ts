// The concurrency function's logic, with its dependencies passed in (the handler wires DynamoDB, Step Functions and
// the clock; tests pass their own). One function does every operation: acquire (take slots now, or wait for them
// with the task token), release (give them back and hand them on), expire (a waiter's maxWait passed) and reap (an
// EventBridge execution status change: the execution failed, timed out or was stopped).
import { acquire, type Grant, type KeyState, type Lease, reap, release, type Settings, type Waiter } from './core';
import type { FastResult } from './store';
import { ThrottleErrors } from '../../src/errors';
import { ConcurrencyField as F, ConcurrencyMetricNames, ConcurrencyOp, METRIC_NAMESPACE } from '../../src/private/contract';
import { InvalidAcquireRequest, LimiterUnavailable } from '../rate-limiter/errors';
import { jitteredPause } from '../shared/backoff';

/** What the function needs from the world. */
export interface ConcurrencyDeps {
  readonly store: {
    update<T extends { readonly state: KeyState }>(pk: string, op: (state: KeyState) => T): Promise<T>;
    acquireFast(pk: string, id: string, lease: Lease, limit: number): Promise<FastResult>;
    registerFast(pk: string, waiter: Waiter, limit: number): Promise<FastResult>;
    releaseFast(pk: string, id: string, slots: number): Promise<FastResult>;
    ensure(pk: string): Promise<void>;
    handOverFast(pk: string, id: string, slots: number, head: Waiter, lease: Lease, limit: number): Promise<FastResult>;
    releaseOnly(pk: string, id: string, slots: number): Promise<FastResult>;
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

/** Fast-path writes an acquire tries before the slow path (each failed one means another call's write landed). */
const FAST_ATTEMPTS = 12;

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
    const execution = String(event[F.EXECUTION] ?? '');
    const granted = () => deps.sendSuccess(token, { leaseId, key, slots });
    // Fast paths: one conditional write takes a free slot, or queues behind a full key; a write that fails returns
    // the item as it was, and that item says which of the two to try next (each failure means another call's write
    // landed in between). The slow path (a read, the core, a conditional write) takes the key's first use, a repeated
    // call, expired leases or waiters to clear, and an acquire that lost FAST_ATTEMPTS races in a row.
    // The waiter expires when Step Functions times its task out: maxWait after the state was entered (the lease id
    // carries that time), not after this call, which a cold start or a slow invoke can make later. The expire op
    // that follows the timeout names no lease, so it finds the waiter only if it has expired by then.
    const deadline = waitDeadline(leaseId, now, deps.maxWaitMs);
    const waiter: Waiter = { id: leaseId, s: slots, t: token, ex: execution, exp: deadline, at: now };
    let seen: KeyState | undefined;
    let created = false;
    for (let attempt = 0; attempt < FAST_ATTEMPTS; attempt++) {
      const free = !seen || (seen.waiters.length === 0 && seen.used + slots <= deps.settings.limit);
      if (free) {
        const fast = await deps.store.acquireFast(pk, leaseId, { s: slots, exp: now + deps.settings.leaseMs, ex: execution }, deps.settings.limit);
        if (fast.ok) {
          metrics(deps, { used: fast.used });
          await granted();
          return { result: 'granted' };
        }
        seen = fast.state;
        if (!seen) {
          if (created) break;
          // the key's first use: create its item (one writer wins, the rest find it), then take the fast path
          await deps.store.ensure(pk);
          created = true;
          continue;
        }
      } else {
        const queued = await deps.store.registerFast(pk, waiter, deps.settings.limit);
        if (queued.ok) {
          metrics(deps, { used: queued.used, waiting: seen!.waiters.length + 1 });
          return { result: 'waiting' };
        }
        // a slot came free between the two writes: the item returned says whether to take it
        seen = queued.state;
        if (!seen) break;
      }
      if (seen.leases[leaseId] || seen.waiters.some((w) => w.id === leaseId) || stale(seen, now) || stranded(seen, deps.settings.limit)) break;
    }
    const req = { id: leaseId, slots, execution, token, maxWaitMs: Math.max(0, deadline - now) };
    const out = await deps.store.update(pk, (s) => acquire(s, req, now, deps.settings));
    metrics(deps, { used: out.state.used, waiting: out.state.waiters.length, reclaimed: out.reclaimed, expired: out.expired });
    if (out.result === 'granted') await granted();
    await deliver(pk, key, out.grants.filter((g) => g.id !== leaseId), deps);
    return { result: out.result };
  }
  if (op === ConcurrencyOp.RELEASE || op === ConcurrencyOp.EXPIRE) {
    const error = event[F.ERROR];
    const slots = event[F.SLOTS];
    if (op === ConcurrencyOp.RELEASE && Number.isInteger(slots)) {
      // Fast paths: give the slots back when nobody waits, or hand them to the head waiter (same slots): one
      // conditional write each. When that hand-over loses a race (releases at once all aim at the same head), give
      // the slots back in a write no other release can make fail, then grant every waiter that fits in one
      // read-and-write: of several releases at once, one such write grants for all, the others find nothing to do.
      let fast = await deps.store.releaseFast(pk, leaseId, slots);
      const seen = fast.ok ? undefined : fast.state;
      const head = seen?.waiters[0];
      const handable = seen !== undefined && seen.leases[leaseId] !== undefined && !stale(seen, deps.nowMs());
      if (handable && head && head.s === slots) {
        const at = deps.nowMs();
        const lease = { s: head.s, exp: at + deps.settings.leaseMs, ex: head.ex };
        const handed = await deps.store.handOverFast(pk, leaseId, slots, head, lease, deps.settings.limit);
        if (handed.ok) {
          metrics(deps, { used: handed.used, waiting: seen.waiters.length - 1 });
          await deliver(pk, key, [{ id: head.id, t: head.t, s: head.s, waitedMs: at - head.at }], deps);
          fast = handed;
        }
      }
      if (!fast.ok && handable) {
        const back = await deps.store.releaseOnly(pk, leaseId, slots);
        if (back.ok) {
          fast = back;
          const after = back.state;
          if (after && after.waiters.length > 0 && after.used + after.waiters[0].s <= deps.settings.limit) {
            const out = await deps.store.update(pk, (s) => release(s, leaseId, deps.nowMs(), deps.settings));
            metrics(deps, { used: out.state.used, waiting: out.state.waiters.length, reclaimed: out.reclaimed, expired: out.expired });
            await deliver(pk, key, out.grants, deps);
          } else {
            metrics(deps, { used: back.used });
          }
        }
      }
      if (fast.ok) {
        if (error && typeof error === 'object') throw new TaskError(String(error.Error ?? 'States.TaskFailed'), String(error.Cause ?? ''));
        return { released: true };
      }
    }
    const out = await deps.store.update(pk, (s) => release(s, leaseId, now, deps.settings));
    const expired = out.expired + (op === ConcurrencyOp.EXPIRE ? 1 : 0);
    metrics(deps, { used: out.state.used, waiting: out.state.waiters.length, reclaimed: out.reclaimed, expired });
    await deliver(pk, key, out.grants, deps);
    if (op === ConcurrencyOp.EXPIRE) {
      throw new ConcurrencyWaitExpired(`no slot of ${key} within maxWait (${deps.maxWaitMs} ms); the registration was removed${out.released ? ' (a slot granted at the deadline was given back)' : ''}`);
    }
    if (error && typeof error === 'object') throw new TaskError(String(error.Error ?? 'States.TaskFailed'), String(error.Cause ?? ''));
    return { released: out.released };
  }
  throw new InvalidAcquireRequest(`op must be ${Object.values(ConcurrencyOp).join(', ')}, got ${JSON.stringify(op)}`);
}

/** Sends each granted waiter its lease; a waiter that is gone gives its lease back, which may grant the next one. */
async function deliver(pk: string, key: string, grants: readonly Grant[], deps: ConcurrencyDeps): Promise<void> {
  const queue = [...grants];
  const undelivered: string[] = [];
  while (queue.length > 0) {
    const g = queue.shift()!;
    try {
      await sendWithRetries(g.t, { leaseId: g.id, key, slots: g.s }, deps);
      deps.emit?.(emf(deps.limiterName, { [ConcurrencyMetricNames.WAIT_TIME]: g.waitedMs }));
    } catch (err) {
      if (!GONE.has((err as Error).name)) {
        // Step Functions did not take the token (throttled, unavailable) even after retries: the other grants still
        // go out; this waiter's slot comes back when its wait expires (its expire op gives back a late grant)
        undelivered.push(`${g.id}: ${(err as Error).name}`);
        continue;
      }
      // nobody waits for it any more: the slot goes back (and on to the next waiter)
      const out = await deps.store.update(pk, (s) => release(s, g.id, deps.nowMs(), deps.settings));
      queue.push(...out.grants);
    }
  }
  if (undelivered.length > 0) {
    throw new LimiterUnavailable(`granted but not delivered (SendTaskSuccess failed after retries): ${undelivered.join('; ')}`);
  }
}

/** Errors of SendTaskSuccess worth another try: throttling and the service's own failures. */
const TRANSIENT = new Set(['ThrottlingException', 'TooManyRequestsException', 'ServiceUnavailable', 'ServiceUnavailableException', 'InternalServerError', 'InternalServerException']);

/** SendTaskSuccess, tried up to 4 times with jittered backoff (50–400 ms) on a transient error. */
async function sendWithRetries(token: string, output: unknown, deps: ConcurrencyDeps): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await deps.sendSuccess(token, output);
      return;
    } catch (err) {
      if (!TRANSIENT.has((err as Error).name) || attempt >= 3) throw err;
      await jitteredPause(attempt, 400, 50);
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

/**
 * When a waiter's task times out: `maxWaitMs` after the state was entered, read from the lease id
 * (`<execution>#<entered time>#<uuid>`); from `nowMs` when the id carries no time (or one in the future).
 */
export function waitDeadline(leaseId: string, nowMs: number, maxWaitMs: number): number {
  const entered = Date.parse(leaseId.split('#')[1] ?? '');
  return Number.isFinite(entered) && entered <= nowMs ? entered + maxWaitMs : nowMs + maxWaitMs;
}

/**
 * Whether a slot is free while someone waits (a release gave its slot back and its grant did not follow, e.g. its
 * function stopped between the two writes): the slow path grants the waiters first.
 */
function stranded(state: KeyState, limit: number): boolean {
  return state.waiters.length > 0 && state.used + state.waiters[0].s <= limit;
}

/** Whether a key holds an expired lease or waiter (the slow path clears them). */
function stale(state: KeyState, nowMs: number): boolean {
  return Object.values(state.leases).some((l) => l.exp <= nowMs) || state.waiters.some((w) => w.exp <= nowMs);
}

function metrics(deps: ConcurrencyDeps, m: { used: number; waiting?: number; reclaimed?: number; expired?: number }): void {
  deps.emit?.(emf(deps.limiterName, {
    [ConcurrencyMetricNames.IN_USE]: m.used,
    ...(m.waiting !== undefined ? { [ConcurrencyMetricNames.WAITING]: m.waiting } : {}),
    ...(m.reclaimed ? { [ConcurrencyMetricNames.RECLAIMED]: m.reclaimed } : {}),
    ...(m.expired ? { [ConcurrencyMetricNames.EXPIRED]: m.expired } : {}),
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
