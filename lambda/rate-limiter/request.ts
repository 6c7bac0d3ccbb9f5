import { InvalidAcquireRequest } from './errors';
import {
  ACQUIRE_MODES, AcquireField as F, type AcquireModeName, BACKOFF_PHASE, DECREASE_PHASE, DEFAULT_KEY, DEFAULT_MODE, MAX_COUNT, MAX_KEY_LENGTH,
  PRIORITY_CLASSES, type RetryPayload, SETTLE_PHASE,
} from '../../src/private/contract';

export type AcquireMode = AcquireModeName;
export { DEFAULT_KEY };

/** How a RateLimitedTask retries: the acquire call computes the backoff (full jitter) before it reserves. */
export type RetryConfig = RetryPayload;

/** A validated acquire request. */
export interface AcquireRequest {
  readonly key: string;
  readonly tokens: number;
  readonly mode: AcquireMode;
  readonly retry?: RetryConfig;
  /** Dotted path in the echoed input where the result is also put (a RateLimitedTask's resultPath). */
  readonly resultField?: string;
  /**
   * `backoff`: a RateLimitedTask's retry step — count the attempt and draw the backoff, take no token. `settle`: give
   * back or add the difference of what was used. `decrease`: an adaptive limiter's throttling signal (an alarm).
   */
  readonly phase?: typeof BACKOFF_PHASE | typeof SETTLE_PHASE | typeof DECREASE_PHASE;
  /** The RateLimitedTask the attempt count belongs to (its backoff state's name). */
  readonly task?: string;
  /** `$$.Execution.RedriveCount`: a redriven execution starts a fresh retry budget. */
  readonly redriveCount?: number;
  /** The acquire's priority class (absent: unclassed, ranks with HIGH). */
  readonly priority?: 'HIGH' | 'NORMAL' | 'LOW';
  /** Backoff of an adaptive limiter: the task errors that lower the rate. */
  readonly signals?: string[];
}


/**
 * Validates an acquire event: `{ key?, tokens?, mode? }`. Anything malformed is an `InvalidAcquireRequest`,
 * never a default that admits.
 */
export function parseRequest(event: unknown): AcquireRequest {
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    throw new InvalidAcquireRequest(`acquire event must be an object, got ${describe(event)}`);
  }
  const e = event as Record<string, unknown>;

  let key = DEFAULT_KEY;
  const k = e[F.KEY];
  if (k !== undefined) {
    if (typeof k === 'number' && Number.isFinite(k)) {
      key = String(k);
    } else if (typeof k === 'string' && k.length >= 1 && k.length <= MAX_KEY_LENGTH) {
      key = k;
    } else {
      throw new InvalidAcquireRequest(`key must be a string of 1 to ${MAX_KEY_LENGTH} characters, got ${describe(k)}`);
    }
  }

  let tokens = 1;
  const t = e[F.TOKENS];
  if (t !== undefined) {
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 1) {
      throw new InvalidAcquireRequest(`tokens must be a positive integer, got ${describe(t)}`);
    }
    tokens = t;
  }
  const count = e[F.COUNT];
  if (count !== undefined) {
    // A batch acquires `tokens` per item: `count` is its number of items (States.ArrayLength of the batch).
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > MAX_COUNT) {
      throw new InvalidAcquireRequest(`count must be an integer from 1 to ${MAX_COUNT}, got ${describe(count)}`);
    }
    tokens *= count;
  }

  let mode: AcquireMode = DEFAULT_MODE;
  const m = e[F.MODE];
  if (m !== undefined) {
    if (!ACQUIRE_MODES.includes(m as AcquireMode)) {
      throw new InvalidAcquireRequest(`mode must be ${ACQUIRE_MODES.join(' or ')}, got ${describe(m)}`);
    }
    mode = m as AcquireMode;
  }

  let retry: RetryConfig | undefined;
  if (e[F.RETRY] !== undefined) {
    const r = e[F.RETRY] as Record<string, unknown>;
    const num = (name: string, min: number) => {
      const v = r?.[name];
      if (typeof v !== 'number' || !Number.isFinite(v) || v < min) {
        throw new InvalidAcquireRequest(`retry.${name} must be a number >= ${min}, got ${describe(v)}`);
      }
      return v;
    };
    retry = {
      maxAttempts: num('maxAttempts', 1),
      intervalMs: num('intervalMs', 0),
      backoffRate: num('backoffRate', 1),
      maxDelayMs: num('maxDelayMs', 0),
      jitter: r.jitter !== false,
      errors: errorList(r.errors, 'retry.errors'),
    };
  }

  let resultField: string | undefined;
  const rf = e[F.RESULT_FIELD];
  if (rf !== undefined) {
    if (typeof rf !== 'string' || !/^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/.test(rf)) {
      throw new InvalidAcquireRequest(`resultField must be a dotted path of letters, digits and _, got ${describe(rf)}`);
    }
    resultField = rf;
  }

  const phase = e[F.PHASE];
  if (phase !== undefined && phase !== BACKOFF_PHASE && phase !== SETTLE_PHASE && phase !== DECREASE_PHASE) {
    throw new InvalidAcquireRequest(`phase must be ${BACKOFF_PHASE}, ${SETTLE_PHASE} or ${DECREASE_PHASE} when given, got ${describe(phase)}`);
  }

  const pr = e[F.PRIORITY];
  if (pr !== undefined && !PRIORITY_CLASSES.includes(pr as typeof PRIORITY_CLASSES[number])) {
    throw new InvalidAcquireRequest(`priority must be ${PRIORITY_CLASSES.join(', ')} when given, got ${describe(pr)}`);
  }
  const signals = e[F.SIGNALS] === undefined ? undefined : errorList(e[F.SIGNALS], 'signals');

  let task: string | undefined;
  const tk = e[F.TASK];
  if (tk !== undefined) {
    if (typeof tk !== 'string' || tk.length < 1 || tk.length > 80) {
      throw new InvalidAcquireRequest(`task must be a state name of 1 to 80 characters, got ${describe(tk)}`);
    }
    task = tk;
  }

  let redriveCount: number | undefined;
  const rc = e[F.REDRIVE_COUNT];
  if (rc !== undefined) {
    if (typeof rc !== 'number' || !Number.isInteger(rc) || rc < 0) {
      throw new InvalidAcquireRequest(`redriveCount must be an integer >= 0, got ${describe(rc)}`);
    }
    redriveCount = rc;
  }

  return {
    key,
    tokens,
    mode,
    retry,
    resultField,
    phase: phase as AcquireRequest['phase'],
    task,
    redriveCount,
    priority: pr as AcquireRequest['priority'],
    signals,
  };
}

function errorList(v: unknown, name: string): string[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x.length === 0)) {
    throw new InvalidAcquireRequest(`${name} must be a list of error names, got ${describe(v)}`);
  }
  return v;
}


function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v);
  if (v === undefined) return 'undefined';
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 64 ? `${s.slice(0, 64)}…` : s;
  } catch {
    return typeof v;
  }
}
