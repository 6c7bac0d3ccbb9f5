import { InvalidAcquireRequest } from './errors';

export type AcquireMode = 'RESERVE' | 'TRY';

/** How a RateLimitedTask retries: the acquire call computes the backoff (full jitter) before it reserves. */
export interface RetryConfig {
  readonly maxAttempts: number;
  readonly intervalMs: number;
  readonly backoffRate: number;
  readonly maxDelayMs: number;
  readonly jitter: boolean;
  /** Error names the policy retries (exact names; `States.ALL` and `States.TaskFailed` as in ErrorEquals). */
  readonly errors?: readonly string[];
}

/** A validated acquire request. */
export interface AcquireRequest {
  readonly key: string;
  readonly tokens: number;
  readonly mode: AcquireMode;
  readonly retry?: RetryConfig;
  /** Dotted path in the echoed input where the result is also put (a RateLimitedTask's resultPath). */
  readonly resultField?: string;
  /** `backoff`: a RateLimitedTask's retry step — count the attempt and draw the backoff, take no token. */
  readonly phase?: 'backoff';
  /** The RateLimitedTask the attempt count belongs to (its backoff state's name). */
  readonly task?: string;
  /** `$$.Execution.RedriveCount`: a redriven execution starts a fresh retry budget. */
  readonly redriveCount?: number;
}

export const DEFAULT_KEY = 'default';
const MAX_KEY_LENGTH = 512;

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
  if (e.key !== undefined) {
    if (typeof e.key === 'number' && Number.isFinite(e.key)) {
      key = String(e.key);
    } else if (typeof e.key === 'string' && e.key.length >= 1 && e.key.length <= MAX_KEY_LENGTH) {
      key = e.key;
    } else {
      throw new InvalidAcquireRequest(`key must be a string of 1 to ${MAX_KEY_LENGTH} characters, got ${describe(e.key)}`);
    }
  }

  let tokens = 1;
  if (e.tokens !== undefined) {
    if (typeof e.tokens !== 'number' || !Number.isInteger(e.tokens) || e.tokens < 1) {
      throw new InvalidAcquireRequest(`tokens must be a positive integer, got ${describe(e.tokens)}`);
    }
    tokens = e.tokens;
  }
  if (e.count !== undefined) {
    // A batch acquires `tokens` per item: `count` is its number of items (States.ArrayLength of the batch).
    if (typeof e.count !== 'number' || !Number.isInteger(e.count) || e.count < 1 || e.count > MAX_COUNT) {
      throw new InvalidAcquireRequest(`count must be an integer from 1 to ${MAX_COUNT}, got ${describe(e.count)}`);
    }
    tokens *= e.count;
  }

  let mode: AcquireMode = 'RESERVE';
  if (e.mode !== undefined) {
    if (e.mode !== 'RESERVE' && e.mode !== 'TRY') {
      throw new InvalidAcquireRequest(`mode must be RESERVE or TRY, got ${describe(e.mode)}`);
    }
    mode = e.mode;
  }

  let retry: RetryConfig | undefined;
  if (e.retry !== undefined) {
    const r = e.retry as Record<string, unknown>;
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
      errors: errorList(r.errors),
    };
  }

  let resultField: string | undefined;
  if (e.resultField !== undefined) {
    if (typeof e.resultField !== 'string' || !/^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/.test(e.resultField)) {
      throw new InvalidAcquireRequest(`resultField must be a dotted path of letters, digits and _, got ${describe(e.resultField)}`);
    }
    resultField = e.resultField;
  }

  if (e.phase !== undefined && e.phase !== 'backoff') {
    throw new InvalidAcquireRequest(`phase must be backoff when given, got ${describe(e.phase)}`);
  }

  let task: string | undefined;
  if (e.task !== undefined) {
    if (typeof e.task !== 'string' || e.task.length < 1 || e.task.length > 80) {
      throw new InvalidAcquireRequest(`task must be a state name of 1 to 80 characters, got ${describe(e.task)}`);
    }
    task = e.task;
  }

  let redriveCount: number | undefined;
  if (e.redriveCount !== undefined) {
    if (typeof e.redriveCount !== 'number' || !Number.isInteger(e.redriveCount) || e.redriveCount < 0) {
      throw new InvalidAcquireRequest(`redriveCount must be an integer >= 0, got ${describe(e.redriveCount)}`);
    }
    redriveCount = e.redriveCount;
  }

  return { key, tokens, mode, retry, resultField, phase: e.phase, task, redriveCount };
}

function errorList(v: unknown): string[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x.length === 0)) {
    throw new InvalidAcquireRequest(`retry.errors must be a list of error names, got ${describe(v)}`);
  }
  return v;
}

/** Most items one acquire may count (a Distributed Map batch holds at most 10,000 items). */
const MAX_COUNT = 10_000;

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
