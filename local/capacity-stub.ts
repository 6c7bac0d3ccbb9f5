// A downstream whose hidden capacity changes with time, as a partner API or an AWS service under load does: a token
// bucket counted at each call's arrival, refilled at the rate of the schedule's phase in force (burst `burst`). A call
// that finds no token is rejected with an error named `ThrottlingException` (as the SDK names a throttled call) and
// takes nothing. Used by the adaptive limiter's bench and runner test as a Task's local handler.
import { nowUs, sleep } from './timing';

/** One phase of the capacity schedule: from `fromMs` after `start()` on, `ratePerSecond` calls per second. */
export interface CapacityPhase {
  readonly fromMs: number;
  readonly ratePerSecond: number;
}

/** One call as the downstream saw it: ms after `start()`, and whether it was served. */
export interface CapacityCall {
  readonly atMs: number;
  readonly accepted: boolean;
}

export class CapacityStub {
  readonly calls: CapacityCall[] = [];
  private t0Us?: number;
  private tokens = 0;
  private lastMs = 0;

  /**
   * @param schedule phases in time order, the first from 0
   * @param burst the bucket's size (a full bucket at `start()`)
   * @param latencyMs how long a served call takes after it is counted
   */
  constructor(readonly schedule: readonly CapacityPhase[], readonly burst: number, private readonly latencyMs = 0) {
    if (schedule.length === 0 || schedule[0].fromMs !== 0) throw new Error('the capacity schedule must start at 0 ms');
  }

  /** Sets the schedule's origin (now) with a full bucket. A call before it is a test error. */
  start(): void {
    this.t0Us = nowUs();
    this.tokens = this.burst;
    this.lastMs = 0;
  }

  /** Milliseconds since `start()`. */
  elapsedMs(): number {
    if (this.t0Us === undefined) throw new Error('CapacityStub.start() was not called');
    return (nowUs() - this.t0Us) / 1000;
  }

  /** The capacity in force at `ms` after the start, calls per second. */
  capacityAt(ms: number): number {
    let rate = this.schedule[0].ratePerSecond;
    for (const p of this.schedule) if (p.fromMs <= ms) rate = p.ratePerSecond;
    return rate;
  }

  /** One call: counted at arrival; served (after `latencyMs`) or rejected with a `ThrottlingException`. */
  async invoke(): Promise<{ ok: true }> {
    const at = this.elapsedMs();
    this.refill(at);
    const accepted = this.tokens >= 1;
    this.calls.push({ atMs: at, accepted });
    if (!accepted) throw Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' });
    this.tokens -= 1;
    if (this.latencyMs > 0) await sleep(this.latencyMs);
    return { ok: true };
  }

  get accepted(): number {
    return this.calls.filter((c) => c.accepted).length;
  }

  get rejected(): number {
    return this.calls.filter((c) => !c.accepted).length;
  }

  /** The calls (all, or only the served ones) in [fromMs, toMs). */
  count(fromMs: number, toMs: number, which: 'all' | 'accepted' = 'all'): number {
    return this.calls.filter((c) => c.atMs >= fromMs && c.atMs < toMs && (which === 'all' || c.accepted)).length;
  }

  /** Refills the bucket up to `toMs`, phase by phase. */
  private refill(toMs: number): void {
    while (this.lastMs < toMs) {
      const next = this.schedule.find((p) => p.fromMs > this.lastMs);
      const end = next === undefined ? toMs : Math.min(toMs, next.fromMs);
      this.tokens = Math.min(this.burst, this.tokens + (this.capacityAt(this.lastMs) * (end - this.lastMs)) / 1000);
      this.lastMs = end;
    }
  }
}
