/** Outcome of one conditional write. */
export type WriteResult =
  | { readonly ok: true; readonly tat: number }
  /** The condition failed. `tat` is the stored value when the store returned it, `unknown` otherwise. */
  | { readonly ok: false; readonly tat: number | undefined | typeof UNKNOWN };

export const UNKNOWN = Symbol('unknown');

/** A run-time override of one key's limit, read from the table (burst defaulted when the item omits it). */
export interface KeyOverride {
  readonly ratePerSecond: number;
  readonly burst: number;
}

/**
 * Where bucket state lives. Every method is one round trip; a DynamoDB failure other than a failed condition
 * rejects with `LimiterUnavailable`.
 */
export interface BucketStore {
  /** Branch A: SET tat = tat + inc IF tat BETWEEN lower AND upper. */
  takeBusy(pk: string, incUs: number, lowerUs: number, upperUs: number, expS: number): Promise<WriteResult>;
  /** Branch B: SET tat = newTat IF attribute_not_exists(tat) OR tat <= now. */
  takeIdle(pk: string, nowUs: number, newTatUs: number, expS: number): Promise<WriteResult>;
  /** Strongly consistent read of a bucket's tat. */
  readTat(pk: string): Promise<number | undefined>;
  /** Reads a key's override item, if any. */
  readOverride(pk: string): Promise<Record<string, unknown> | undefined>;
}

/** An in-memory store with the same conditional semantics; for tests and the bench baseline. */
export class MemoryBucketStore implements BucketStore {
  readonly items = new Map<string, Record<string, unknown>>();
  calls = 0;

  async takeBusy(pk: string, incUs: number, lowerUs: number, upperUs: number): Promise<WriteResult> {
    this.calls++;
    const tat = this.items.get(pk)?.tat as number | undefined;
    if (tat !== undefined && tat >= lowerUs && tat <= upperUs) {
      this.items.set(pk, { ...this.items.get(pk), tat: tat + incUs });
      return { ok: true, tat: tat + incUs };
    }
    return { ok: false, tat };
  }

  async takeIdle(pk: string, nowUs: number, newTatUs: number): Promise<WriteResult> {
    this.calls++;
    const tat = this.items.get(pk)?.tat as number | undefined;
    if (tat === undefined || tat <= nowUs) {
      this.items.set(pk, { ...this.items.get(pk), tat: newTatUs });
      return { ok: true, tat: newTatUs };
    }
    return { ok: false, tat };
  }

  async readTat(pk: string): Promise<number | undefined> {
    this.calls++;
    return this.items.get(pk)?.tat as number | undefined;
  }

  async readOverride(pk: string): Promise<Record<string, unknown> | undefined> {
    this.calls++;
    return this.items.get(pk);
  }
}
