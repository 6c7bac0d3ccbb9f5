// The pure core of the concurrency limiter: one key's slots, its leases and its waiters, and what each operation
// does to them. No I/O: the store reads a key's state, applies one operation and writes the result with a condition
// on the version it read, so every operation is atomic per key.
//
// What it promises, checked by the property test over random interleavings:
// - in use never exceeds the limit and is never negative; it always equals the sum of the leases' slots;
// - a lease is granted once and released once (releasing an unknown lease changes nothing: releases are idempotent,
//   and so is an acquire that repeats a lease id already held or waiting);
// - FIFO per key: a waiter is granted before anyone who came after it; no waiter is left waiting while its slots
//   are free (every operation that frees slots hands them to the waiters in order);
// - an expired lease is reclaimed by the next operation on the key; an expired waiter is dropped.

/** A held lease. */
export interface Lease {
  /** Slots it holds. */
  readonly s: number;
  /** When it expires, epoch ms: reclaimed by the next operation after this instant. */
  readonly exp: number;
  /** The execution holding it (its ARN), for the reaper. */
  readonly ex: string;
}

/** A waiting acquirer: its task token is sent success when it is granted. */
export interface Waiter {
  /** Its lease id. */
  readonly id: string;
  readonly s: number;
  /** Its task token. */
  readonly t: string;
  readonly ex: string;
  /** Its deadline (maxWait), epoch ms: dropped after it (its task times out with the named error). */
  readonly exp: number;
  /** When it started waiting, epoch ms. */
  readonly at: number;
}

/** One key's state. */
export interface KeyState {
  readonly used: number;
  readonly leases: Readonly<Record<string, Lease>>;
  readonly waiters: readonly Waiter[];
}

export const EMPTY: KeyState = { used: 0, leases: {}, waiters: [] };

/** A waiter granted a slot: its token is to be sent success. */
export interface Grant {
  readonly id: string;
  readonly t: string;
  readonly s: number;
  /** How long it waited, ms. */
  readonly waitedMs: number;
}

/** What an operation did. */
export interface Outcome {
  readonly state: KeyState;
  /** Waiters granted (their tokens get SendTaskSuccess). */
  readonly grants: readonly Grant[];
  /** Expired leases reclaimed. */
  readonly reclaimed: number;
  /** Expired waiters dropped. */
  readonly expired: number;
}

/** Settings of a key: its limit, how long a lease lasts. */
export interface Settings {
  readonly limit: number;
  readonly leaseMs: number;
}

export interface AcquireRequest {
  readonly id: string;
  readonly slots: number;
  readonly execution: string;
  /** The task token to wait with when no slot is free; without one the acquire is refused instead. */
  readonly token?: string;
  /** How long the acquirer may wait, ms. */
  readonly maxWaitMs: number;
}

export type AcquireResult = 'granted' | 'waiting' | 'refused';

/** Expired leases and waiters out, then free slots to the waiters in order. */
function settle(state: KeyState, nowMs: number, settings: Settings): Outcome {
  let used = state.used;
  let reclaimed = 0;
  const leases: Record<string, Lease> = {};
  for (const [id, lease] of Object.entries(state.leases)) {
    if (lease.exp <= nowMs) {
      used -= lease.s;
      reclaimed++;
    } else {
      leases[id] = lease;
    }
  }
  const live = state.waiters.filter((w) => w.exp > nowMs);
  const expired = state.waiters.length - live.length;
  const grants: Grant[] = [];
  const waiters = [...live];
  // FIFO: the head is granted first; nobody behind it passes it.
  while (waiters.length > 0 && used + waiters[0].s <= settings.limit) {
    const w = waiters.shift()!;
    leases[w.id] = { s: w.s, exp: nowMs + settings.leaseMs, ex: w.ex };
    used += w.s;
    grants.push({ id: w.id, t: w.t, s: w.s, waitedMs: nowMs - w.at });
  }
  return { state: { used, leases, waiters }, grants, reclaimed, expired };
}

/** Takes `slots` for lease `id`, or queues the acquirer (with a token), or refuses it. */
export function acquire(state: KeyState, req: AcquireRequest, nowMs: number, settings: Settings): Outcome & { result: AcquireResult } {
  const settled = settle(state, nowMs, settings);
  let s = settled.state;
  // Idempotent: a lease already held (a repeated call after a lost answer) or already waiting.
  if (s.leases[req.id]) return { ...settled, result: 'granted' };
  if (s.waiters.some((w) => w.id === req.id)) return { ...settled, result: 'waiting' };
  if (s.waiters.length === 0 && s.used + req.slots <= settings.limit) {
    s = { ...s, used: s.used + req.slots, leases: { ...s.leases, [req.id]: { s: req.slots, exp: nowMs + settings.leaseMs, ex: req.execution } } };
    return { ...settled, state: s, result: 'granted' };
  }
  if (req.token === undefined) return { ...settled, result: 'refused' };
  const waiter: Waiter = { id: req.id, s: req.slots, t: req.token, ex: req.execution, exp: nowMs + req.maxWaitMs, at: nowMs };
  return { ...settled, state: { ...s, waiters: [...s.waiters, waiter] }, result: 'waiting' };
}

/** Releases lease `id` (nothing if it is not held) and hands the freed slots to the waiters. */
export function release(state: KeyState, id: string, nowMs: number, settings: Settings): Outcome & { released: boolean } {
  const lease = state.leases[id];
  const leases = { ...state.leases };
  delete leases[id];
  const waiters = state.waiters.filter((w) => w.id !== id);
  const freed: KeyState = { used: state.used - (lease?.s ?? 0), leases, waiters };
  return { ...settle(freed, nowMs, settings), released: lease !== undefined };
}

/** Releases every lease and drops every waiter of `execution` (it failed, timed out or was stopped). */
export function reap(state: KeyState, execution: string, nowMs: number, settings: Settings): Outcome & { leases: number; waiters: number } {
  let used = state.used;
  const leases: Record<string, Lease> = {};
  let dropped = 0;
  for (const [id, lease] of Object.entries(state.leases)) {
    if (lease.ex === execution) {
      used -= lease.s;
      dropped++;
    } else {
      leases[id] = lease;
    }
  }
  const waiters = state.waiters.filter((w) => w.ex !== execution);
  return { ...settle({ used, leases, waiters }, nowMs, settings), leases: dropped, waiters: state.waiters.length - waiters.length };
}

/** The slots the leases hold: what `used` must equal. */
export function held(state: KeyState): number {
  return Object.values(state.leases).reduce((n, l) => n + l.s, 0);
}
