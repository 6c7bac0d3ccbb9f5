import {
  ConditionalCheckFailedException,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { type BreakerSettings, type BreakerState, CLOSED, elect, recordFailure, recordSuccess, releaseProbe, type Transition } from './core';
import { BreakerField, BreakerItem, BreakerMetricNames, BreakerOp } from '../../src/private/contract';
import { jitteredPause } from '../shared/backoff';

// The breaker function: elects probes and records failures and probe successes, each a read and a conditional write
// of the key's item (the rare path: the state machine reads the item itself and calls this only when the breaker is
// not closed, or after a counted failure, or after a probe).

/** Format version of a breaker item (`v`); an item of another version fails closed. */
export const BREAKER_ITEM_VERSION = 1;
const MAX_WRITES = 20;
const MAX_PK_BYTES = 2048;
/** A breaker item outlives its last change by a day (then it is closed: no item). */
const TTL_S = 86_400;

export interface StoredBreaker {
  readonly state: BreakerState;
  readonly ver: number;
}

export interface BreakerStore {
  read(pk: string): Promise<StoredBreaker | undefined>;
  /** Writes `state` as version `ver + 1` if the item is still at `ver` (undefined: absent); `windowMs` dates its window's end. */
  write(pk: string, state: BreakerState, ver: number | undefined, windowMs?: number): Promise<boolean>;
}

export function breakerItemKey(breakerName: string, key: string): string {
  return `${breakerName}#breaker#${key}`;
}

export class BreakerUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LimiterUnavailable';
  }
}

export interface BreakerDeps {
  readonly store: BreakerStore;
  readonly nowMs: () => number;
  readonly breakerName: string;
  readonly settings: BreakerSettings;
  readonly emit: (line: string) => void;
}

export type BreakerAnswer = { call: boolean; probe: boolean; until: string; openedAt: string; period?: number } | { transition: Transition };

export async function handle(event: unknown, deps: BreakerDeps): Promise<BreakerAnswer> {
  const e = (event ?? {}) as Record<string, unknown>;
  const op = e[BreakerField.OP];
  const key = e[BreakerField.KEY];
  // The state machine formats every key as a string; the item key must fit DynamoDB's 2,048 bytes.
  if (typeof key !== 'string' || Buffer.byteLength(breakerItemKey(deps.breakerName, key)) > MAX_PK_BYTES) {
    throw invalid(`key must be a string whose item key fits ${MAX_PK_BYTES} bytes, got ${JSON.stringify(key)?.slice(0, 100)}`);
  }
  const ops: string[] = Object.values(BreakerOp);
  if (typeof op !== 'string' || !ops.includes(op)) throw invalid(`op must be one of ${ops.join(', ')}, got ${JSON.stringify(op)}`);
  const probe = e[BreakerField.PROBE] === true;
  // the period a probe was elected in (the until of its election): a probe of an earlier period is not this one's
  const period = typeof e[BreakerField.PERIOD] === 'number' ? e[BreakerField.PERIOD] as number : undefined;
  // the state machine's time when it asked (its clock may be ahead of this one)
  const askedAt = typeof e[BreakerField.AT] === 'string' ? Date.parse(e[BreakerField.AT] as string) : NaN;
  const pk = breakerItemKey(deps.breakerName, key);
  for (let writes = 0; writes < MAX_WRITES; writes++) {
    const stored = await deps.store.read(pk);
    const state = stored?.state ?? CLOSED;
    const now = deps.nowMs();
    let next: BreakerState;
    let answer: BreakerAnswer;
    if (op === BreakerOp.ELECT) {
      const r = elect(state, now, deps.settings);
      next = r.state;
      // not elected: retry after the period ends, in whole seconds (a Wait on a timestamp ignores milliseconds) and at
      // least a second from now (a Step Functions clock ahead of this one would otherwise loop Wait → elect at once)
      const latest = Number.isFinite(askedAt) ? Math.max(now, askedAt) : now;
      const retryAfter = r.call ? wholeSecond(r.state.until) : Math.max(wholeSecond(r.state.until), wholeSecond(latest + 1000));
      answer = {
        call: r.call, probe: r.probe, until: iso(retryAfter), openedAt: iso(r.state.openedAt), ...(r.probe ? { period: r.state.until } : {}),
      };
    } else if (op === BreakerOp.FAILURE) {
      const r = recordFailure(state, now, deps.settings, probe, period);
      next = r.state;
      answer = { transition: r.transition };
    } else if (op === BreakerOp.RELEASE) {
      const r = releaseProbe(state, probe, period);
      next = r.state;
      answer = { transition: r.transition };
    } else {
      const r = recordSuccess(state, probe, now, deps.settings, period);
      next = r.state;
      answer = { transition: r.transition };
    }
    if (next === state) return done(deps, key, answer);
    if (await deps.store.write(pk, next, stored?.ver, deps.settings.windowMs)) return done(deps, key, answer);
    await jitteredPause(writes, 100);
  }
  throw new BreakerUnavailable(`${pk}: ${MAX_WRITES} conditional writes lost to contention`);
}

function done(deps: BreakerDeps, key: string, answer: BreakerAnswer): BreakerAnswer {
  const metrics: Record<string, number> = {};
  if ('call' in answer) {
    if (answer.probe) metrics[BreakerMetricNames.PROBES] = 1;
    if (!answer.call) metrics[BreakerMetricNames.SHORT_CIRCUITED] = 1;
  } else if (answer.transition === 'opened' || answer.transition === 'reopened') {
    metrics[BreakerMetricNames.OPENED] = 1;
  } else if (answer.transition === 'closed') {
    metrics[BreakerMetricNames.CLOSED] = 1;
  }
  if (Object.keys(metrics).length > 0) {
    deps.emit(JSON.stringify({
      _aws: {
        Timestamp: deps.nowMs(),
        CloudWatchMetrics: [{ Namespace: 'CdkSfnThrottle', Dimensions: [['BreakerName']], Metrics: Object.keys(metrics).map((Name) => ({ Name, Unit: 'Count' })) }],
      },
      BreakerName: deps.breakerName,
      Key: key,
      ...metrics,
    }));
  }
  return answer;
}

/** `ms` rounded up to a whole second. */
export function wholeSecond(ms: number): number {
  return Math.ceil(ms / 1000) * 1000;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function invalid(message: string): Error {
  return Object.assign(new Error(message), { name: 'InvalidAcquireRequest' });
}

/**
 * Breaker items in DynamoDB: the state as JSON (`bs`) with the attributes the state machine reads (`st`, `until` as
 * ISO 8601, `pr`), a write counter `ver`, `v`, TTL `exp`.
 */
export class DynamoDbBreakerStore implements BreakerStore {
  constructor(private readonly client: DynamoDBClient, private readonly tableName: string) {}

  async read(pk: string): Promise<StoredBreaker | undefined> {
    try {
      const res = await this.client.send(new GetItemCommand({ TableName: this.tableName, Key: { pk: { S: pk } }, ConsistentRead: true }));
      if (!res.Item) return undefined;
      return decode(pk, res.Item);
    } catch (err) {
      if (err instanceof BreakerUnavailable) throw err;
      throw new BreakerUnavailable(`DynamoDB call failed (${(err as Error)?.name}): ${(err as Error)?.message}`, { cause: err });
    }
  }

  async write(pk: string, state: BreakerState, ver: number | undefined, windowMs = 0): Promise<boolean> {
    try {
      await this.client.send(new PutItemCommand({
        TableName: this.tableName,
        Item: {
          pk: { S: pk },
          bs: { S: JSON.stringify(state) },
          [BreakerItem.STATUS]: { S: state.st },
          [BreakerItem.UNTIL]: { S: iso(state.until) },
          // the retry-after an execution turned away waits for: whole seconds, rounded up (a Wait on a timestamp
          // ignores milliseconds: waiting for `until` itself would end just before it and come back at once)
          [BreakerItem.RETRY_AFTER]: { S: iso(wholeSecond(state.until)) },
          [BreakerItem.PROBES]: { N: String(state.pr) },
          [BreakerItem.OPENED_AT]: { S: iso(state.openedAt) },
          // while a window runs (closed, a failure counted): its end, so the state machine records successes in it
          ...(state.st === 'closed' && state.f > 0 ? { [BreakerItem.WINDOW_END]: { S: iso(state.ws + windowMs) } } : {}),
          ver: { N: String((ver ?? 0) + 1) },
          v: { N: String(BREAKER_ITEM_VERSION) },
          exp: { N: String(Math.ceil(Math.max(state.until, state.ws) / 1000) + TTL_S) },
        },
        ConditionExpression: ver === undefined ? 'attribute_not_exists(pk)' : 'ver = :ver',
        ExpressionAttributeValues: ver === undefined ? undefined : { ':ver': { N: String(ver) } },
      }));
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException || (err as Error)?.name === 'ConditionalCheckFailedException') return false;
      throw new BreakerUnavailable(`DynamoDB call failed (${(err as Error)?.name}): ${(err as Error)?.message}`, { cause: err });
    }
  }
}

function decode(pk: string, item: Record<string, AttributeValue>): StoredBreaker {
  if (Number(item.v?.N) !== BREAKER_ITEM_VERSION) throw new BreakerUnavailable(`item ${pk} has format version ${item.v?.N ?? 'none'}, this handler reads ${BREAKER_ITEM_VERSION}`);
  try {
    return { state: JSON.parse(item.bs?.S ?? ''), ver: Number(item.ver?.N ?? 0) };
  } catch {
    throw new BreakerUnavailable(`item ${pk} holds a state that is not JSON`);
  }
}
