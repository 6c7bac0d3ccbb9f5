// A circuit breaker whose state every execution and container shares: the pure state machine. No clock, no I/O;
// times in epoch milliseconds.
//
// closed ──(failureThreshold failures within window)──▶ open ──(cooldown passed; an execution is elected)──▶ half
// half ──(a probe succeeds)──▶ closed;  half ──(a probe fails)──▶ open (a new cooldown)
// half ──(no probe reported within the cooldown: its execution stopped)──▶ probes elected again
//
// While open (and while half, beyond the elected probes) callers are short-circuited without calling the task: the
// state machine compares the time with `until` itself (no Lambda), and only once `until` has passed asks the function
// to elect probes (a conditional write: at most `halfOpenProbes` per cooldown).

export interface BreakerSettings {
  /** Failures within `windowMs` that open the breaker. */
  readonly failureThreshold: number;
  readonly windowMs: number;
  /** How long it stays open before probes are let through; also how long a probe may take before others are elected. */
  readonly cooldownMs: number;
  /** Executions let through per half-open period. */
  readonly halfOpenProbes: number;
}

export type BreakerStatus = 'closed' | 'open' | 'half';

export interface BreakerState {
  readonly st: BreakerStatus;
  /** Failures counted in the current window (closed). */
  readonly f: number;
  /** The current window's start. */
  readonly ws: number;
  /** Open: until when; half: until when the elected probes may report before others are elected. */
  readonly until: number;
  /** Probes elected in this half-open period. */
  readonly pr: number;
  /** When it last opened (for the error's cause). */
  readonly openedAt: number;
}

export const CLOSED: BreakerState = { st: 'closed', f: 0, ws: 0, until: 0, pr: 0, openedAt: 0 };

export type Transition = 'opened' | 'reopened' | 'closed' | 'none';

/** A failure the breaker counts (the task failed with one of its failure errors). `probe`: the call was a probe. */
export function recordFailure(state: BreakerState, nowMs: number, s: BreakerSettings, probe: boolean):
{ state: BreakerState; transition: Transition } {
  if (state.st === 'half' && probe) {
    return { state: { ...state, st: 'open', until: nowMs + s.cooldownMs, pr: 0, f: 0, openedAt: nowMs }, transition: 'reopened' };
  }
  if (state.st !== 'closed') return { state, transition: 'none' }; // a call that started before it opened
  const fresh = nowMs - state.ws >= s.windowMs;
  const f = fresh ? 1 : state.f + 1;
  const ws = fresh ? nowMs : state.ws;
  if (f >= s.failureThreshold) {
    return { state: { st: 'open', f: 0, ws: nowMs, until: nowMs + s.cooldownMs, pr: 0, openedAt: nowMs }, transition: 'opened' };
  }
  return { state: { ...state, f, ws }, transition: 'none' };
}

/** A probe's call succeeded: the downstream is back. (A success while closed changes nothing and is not written.) */
export function recordSuccess(state: BreakerState, probe: boolean): { state: BreakerState; transition: Transition } {
  if (state.st === 'half' && probe) return { state: CLOSED, transition: 'closed' };
  return { state, transition: 'none' };
}

/**
 * An execution found the breaker open or half-open past `until`: is it a probe? At most `halfOpenProbes` are elected
 * per period; a period whose probes did not report within the cooldown (their executions stopped) starts again.
 */
export function elect(state: BreakerState, nowMs: number, s: BreakerSettings): { call: boolean; probe: boolean; state: BreakerState } {
  if (state.st === 'closed') return { call: true, probe: false, state }; // closed meanwhile: a call as usual
  if (nowMs < state.until) {
    if (state.st === 'half' && state.pr < s.halfOpenProbes) return { call: true, probe: true, state: { ...state, pr: state.pr + 1 } };
    return { call: false, probe: false, state };
  }
  // open past its cooldown, or half-open whose probes never reported: a new half-open period
  return { call: true, probe: true, state: { ...state, st: 'half', pr: 1, until: nowMs + s.cooldownMs } };
}
