import { InvalidAcquireRequest } from './errors';

export type AcquireMode = 'RESERVE' | 'TRY';

/** A validated acquire request. */
export interface AcquireRequest {
  readonly key: string;
  readonly tokens: number;
  readonly mode: AcquireMode;
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

  let mode: AcquireMode = 'RESERVE';
  if (e.mode !== undefined) {
    if (e.mode !== 'RESERVE' && e.mode !== 'TRY') {
      throw new InvalidAcquireRequest(`mode must be RESERVE or TRY, got ${describe(e.mode)}`);
    }
    mode = e.mode;
  }

  return { key, tokens, mode };
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
