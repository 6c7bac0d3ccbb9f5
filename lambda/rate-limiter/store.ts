/** The format version every item this limiter writes carries (`v`). A handler meeting another fails closed. */
export const ITEM_VERSION = 1;

/** A bucket item as stored: raw attribute values, checked by the limiter before it trusts them. */
export interface StoredBucket {
  /** Theoretical arrival time, µs (a number on a well-formed item). */
  readonly tat?: unknown;
  /** The emission interval, µs per token, the tat was counted in (absent on items of older handlers). */
  readonly iv?: unknown;
  /** Format version (absent on items of older handlers: version 1). */
  readonly v?: unknown;
  /**
   * The latest slot handed out, µs, as the writes can record it: exact for an idle write and a queued busy one
   * (tat − tolerance), below the true slot by less than one tolerance for a busy write that did not queue.
   */
  readonly hz?: unknown;
  /** The tolerance (burst × interval, µs) the tat is counted with. */
  readonly tol?: unknown;
  /** Adaptive limiters: when the rate in force (`iv`) last changed, µs. */
  readonly ac?: unknown;
  /** Adaptive limiters: when the rate was last lowered on a throttling signal, µs. */
  readonly ad?: unknown;
}

/**
 * An adaptive limiter's take: the interval the container believes is stored (`oldIvUs`, required by the write's
 * condition, idle or busy) and, when the take raises the rate (a new `ivUs`), the time of that change (`acUs`).
 */
export interface AdaptiveWrite {
  readonly oldIvUs: number;
  /**
   * When the rate the container believes is stored was set (`ac`; undefined: never adapted, no `ac`): also required
   * by the condition, so a container whose view predates a decrease that wrote the same interval again fails (no ABA).
   */
  readonly oldAcUs?: number;
  readonly acUs?: number;
}

/** An adaptive decrease: what it read (the condition) and what it writes. */
export interface AdaptiveDecrease {
  /** The interval and the change time read (the condition: neither changed since). */
  readonly oldIvUs: number;
  readonly oldAcUs?: number;
  /**
   * The tat read: the write requires tat still within [oldTatUs, oldTatUs + slackUs] and adds `deltaUs` to it.
   * Undefined: no item was read, the write creates it (idle at `atUs`) if there still is none.
   */
  readonly oldTatUs?: number;
  readonly slackUs: number;
  readonly deltaUs: number;
  readonly ivUs: number;
  readonly tolUs: number;
  readonly atUs: number;
  readonly expS: number;
}

/** Outcome of one conditional write. */
export type WriteResult =
  | { readonly ok: true; readonly tat: number }
  /**
   * The condition failed. `item` is the stored item when the store returned it (undefined: no item), `UNKNOWN`
   * when it did not (DynamoDB emulators ignore ReturnValuesOnConditionCheckFailure): the caller reads it.
   */
  | { readonly ok: false; readonly item: StoredBucket | undefined | typeof UNKNOWN };

export const UNKNOWN = Symbol('unknown');

/** A run-time override of one key's limit, read from the table (burst defaulted when the item omits it). */
export interface KeyOverride {
  readonly ratePerSecond: number;
  readonly burst: number;
}

/**
 * Where bucket state lives. Every method is one round trip; a DynamoDB failure other than a failed condition
 * rejects with `LimiterUnavailable`. Every write sets `v` and `iv` and requires the stored `v` to be `ITEM_VERSION`
 * (conditions with no OR of attribute checks: one comparison each, cheap for DynamoDB and for emulators).
 */
export interface BucketStore {
  /**
   * Branch A: SET tat = tat + inc IF tat BETWEEN lower AND upper AND iv = ivUs AND v = ITEM_VERSION. With `adapt`, the
   * condition names `adapt.oldIvUs` and the write sets `iv = ivUs` (and `ac` when given): an adaptive raise.
   */
  takeBusy(pk: string, incUs: number, lowerUs: number, upperUs: number, expS: number, ivUs: number, tolUs: number, adapt?: AdaptiveWrite):
  Promise<WriteResult>;
  /**
   * Branch B: SET tat = newTat IF (no tat and no v) OR (tat <= now AND v = ITEM_VERSION): an idle bucket holds no
   * debt, so any iv; an item not written by this format is read and checked first.
   */
  takeIdle(pk: string, nowUs: number, newTatUs: number, expS: number, ivUs: number, tolUs: number, adapt?: AdaptiveWrite): Promise<WriteResult>;
  /**
   * An adaptive limiter's decrease: SET tat = tat + delta, iv, tol, ac = ad = atUs IF iv and ac are as read, v = ITEM_VERSION
   * and tat BETWEEN old AND old + slack (admissions in between are counted as before the decrease: additive, so a busy
   * bucket's decrease is not lost to the admissions racing it).
   */
  adapt(pk: string, d: AdaptiveDecrease): Promise<WriteResult>;
  /**
   * A limit change: SET tat = newTat, iv = ivUs IF tat = oldTat AND iv = oldIv (the debt, re-counted). With
   * `oldIvUs` undefined, an item of the format before versions (no `iv`, no `v`) is given them.
   */
  rescale(pk: string, oldTatUs: number, oldIvUs: number | undefined, newTatUs: number, ivUs: number, expS: number, tolUs: number):
  Promise<WriteResult>;
  /** Strongly consistent read of a bucket item. */
  readBucket(pk: string): Promise<StoredBucket | undefined>;
  /** Reads a key's override item, if any. */
  readOverride(pk: string): Promise<Record<string, unknown> | undefined>;
}

/** The `ac` condition of an adaptive write: the stored `ac` is the one the container saw (none: never adapted). */
function acMatches(item: Record<string, unknown>, adapt: AdaptiveWrite | undefined): boolean {
  if (adapt === undefined) return true;
  return adapt.oldAcUs === undefined ? item.ac === undefined : item.ac === adapt.oldAcUs;
}

/** An in-memory store with the same conditional semantics; for tests and the bench baseline. */
export class MemoryBucketStore implements BucketStore {
  readonly items = new Map<string, Record<string, unknown>>();
  calls = 0;

  async takeBusy(pk: string, incUs: number, lowerUs: number, upperUs: number, expS: number, ivUs: number, tolUs: number, adapt?: AdaptiveWrite):
  Promise<WriteResult> {
    this.calls++;
    const item = this.items.get(pk);
    const tat = item?.tat;
    if (item?.v === ITEM_VERSION && typeof tat === 'number' && tat >= lowerUs && tat <= upperUs && item.iv === (adapt?.oldIvUs ?? ivUs) && acMatches(item, adapt)) {
      const ac = adapt?.acUs !== undefined ? { ac: adapt.acUs } : {};
      this.items.set(pk, { ...item, ...ac, tat: tat + incUs, hz: tat + incUs - tolUs, tol: tolUs, exp: expS, iv: ivUs, v: ITEM_VERSION });
      return { ok: true, tat: tat + incUs };
    }
    return { ok: false, item: item && { ...item } };
  }

  async takeIdle(pk: string, nowUs: number, newTatUs: number, expS: number, ivUs: number, tolUs: number, adapt?: AdaptiveWrite):
  Promise<WriteResult> {
    this.calls++;
    const item = this.items.get(pk);
    const tat = item?.tat;
    if ((tat === undefined && item?.v === undefined && item?.iv === undefined)
      || (typeof tat === 'number' && tat <= nowUs && item?.v === ITEM_VERSION && (adapt === undefined || (item.iv === adapt.oldIvUs && acMatches(item, adapt))))) {
      const ac = adapt?.acUs !== undefined ? { ac: adapt.acUs } : {};
      this.items.set(pk, { ...item, ...ac, tat: newTatUs, hz: nowUs, tol: tolUs, exp: expS, iv: ivUs, v: ITEM_VERSION });
      return { ok: true, tat: newTatUs };
    }
    return { ok: false, item: item && { ...item } };
  }

  async rescale(pk: string, oldTatUs: number, oldIvUs: number | undefined, newTatUs: number, ivUs: number, expS: number, tolUs: number):
  Promise<WriteResult> {
    this.calls++;
    const item = this.items.get(pk);
    const sameFormat = oldIvUs === undefined ? item?.iv === undefined && item?.v === undefined : item?.iv === oldIvUs && item?.v === ITEM_VERSION;
    if (item?.tat === oldTatUs && sameFormat) {
      this.items.set(pk, { ...item, tat: newTatUs, tol: tolUs, exp: expS, iv: ivUs, v: ITEM_VERSION });
      return { ok: true, tat: newTatUs };
    }
    return { ok: false, item: item && { ...item } };
  }

  async adapt(pk: string, d: AdaptiveDecrease): Promise<WriteResult> {
    this.calls++;
    const item = this.items.get(pk);
    const tat = item?.tat;
    if (d.oldTatUs === undefined) {
      if (item !== undefined) return { ok: false, item: { ...item } };
      this.items.set(pk, { tat: d.atUs, iv: d.ivUs, tol: d.tolUs, ac: d.atUs, ad: d.atUs, exp: d.expS, v: ITEM_VERSION });
      return { ok: true, tat: d.atUs };
    }
    if (item?.v === ITEM_VERSION && item.iv === d.oldIvUs && acMatches(item, { oldIvUs: d.oldIvUs, oldAcUs: d.oldAcUs })
      && typeof tat === 'number' && tat >= d.oldTatUs && tat <= d.oldTatUs + d.slackUs) {
      this.items.set(pk, { ...item, tat: tat + d.deltaUs, iv: d.ivUs, tol: d.tolUs, ac: d.atUs, ad: d.atUs, exp: d.expS, v: ITEM_VERSION });
      return { ok: true, tat: tat + d.deltaUs };
    }
    return { ok: false, item: item && { ...item } };
  }

  async readBucket(pk: string): Promise<StoredBucket | undefined> {
    this.calls++;
    const item = this.items.get(pk);
    return item && { ...item };
  }

  async readOverride(pk: string): Promise<Record<string, unknown> | undefined> {
    this.calls++;
    return this.items.get(pk);
  }
}
