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
  /** Failures within `windowMs` that open the breaker (the count rule). */
  readonly failureThreshold: number;
  /**
   * The rate rule instead of the count rule: the breaker opens when, within a window, at least `minimumCalls` calls
   * were counted and failures ÷ calls ≥ `failureRate` (0 < rate ≤ 1). A window starts at a failure; successes are
   * counted only within one (a healthy downstream costs no write).
   */
  readonly failureRate?: number;
  readonly minimumCalls?: number;
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
  /** Successes counted in the current window (closed, rate rule only). */
  readonly s?: number;
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

/**
 * Whether a call elected as a probe in the period that ends at `period` (the `until` it was elected with) is a probe
 * of the current half-open period: a probe taken for lost (its period ended, another was elected) is not.
 */
export function isCurrentProbe(state: BreakerState, probe: boolean, period: number | undefined): boolean {
  return probe && state.st === 'half' && period !== undefined && state.until === period;
}

/**
 * A failure the breaker counts (the task failed with one of its failure errors). `probe`: the call was elected as a
 * probe, in the period ending at `period`.
 */
export function recordFailure(state: BreakerState, nowMs: number, s: BreakerSettings, probe: boolean, period?: number):
{ state: BreakerState; transition: Transition } {
  if (isCurrentProbe(state, probe, period)) {
    return { state: { ...state, st: 'open', until: nowMs + s.cooldownMs, pr: 0, f: 0, openedAt: nowMs }, transition: 'reopened' };
  }
  if (state.st !== 'closed') return { state, transition: 'none' }; // a call that started before it opened
  const fresh = windowEnded(state, nowMs, s);
  const f = fresh ? 1 : state.f + 1;
  const ok = fresh ? 0 : state.s ?? 0;
  const ws = fresh ? nowMs : state.ws;
  if (trips(f, ok, s)) {
    return { state: { st: 'open', f: 0, s: 0, ws: nowMs, until: nowMs + s.cooldownMs, pr: 0, openedAt: nowMs }, transition: 'opened' };
  }
  return { state: { ...state, f, s: ok, ws }, transition: 'none' };
}

/** Whether the current window has ended (or none began: no failure counted). */
export function windowEnded(state: BreakerState, nowMs: number, s: BreakerSettings): boolean {
  return state.f === 0 || nowMs - state.ws >= s.windowMs;
}

function trips(failures: number, successes: number, s: BreakerSettings): boolean {
  if (s.failureRate === undefined) return failures >= s.failureThreshold;
  const calls = failures + successes;
  return calls >= (s.minimumCalls ?? 1) && failures >= s.failureRate * calls;
}

/**
 * A call succeeded. A probe's success closes a half-open breaker. Under the rate rule, a success while closed within
 * a window (a failure counted less than `windowMs` ago) is counted; any other success changes nothing (no write).
 */
export function recordSuccess(state: BreakerState, probe: boolean, nowMs = 0, s?: BreakerSettings, period?: number):
{ state: BreakerState; transition: Transition } {
  // a probe's success closes it — a probe of an earlier period too: the downstream answered
  if (state.st === 'half' && probe && period !== undefined) return { state: CLOSED, transition: 'closed' };
  if (s?.failureRate !== undefined && state.st === 'closed' && !windowEnded(state, nowMs, s)) {
    return { state: { ...state, s: (state.s ?? 0) + 1 }, transition: 'none' };
  }
  return { state, transition: 'none' };
}

/**
 * A probe ended without a verdict (its task failed with an error the breaker does not count: the caller's own, or
 * throttling): its place is given back, so another execution is elected without waiting out the period.
 */
export function releaseProbe(state: BreakerState, probe: boolean, period?: number): { state: BreakerState; transition: Transition } {
  if (isCurrentProbe(state, probe, period) && state.pr > 0) return { state: { ...state, pr: state.pr - 1 }, transition: 'none' };
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
