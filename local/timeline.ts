// The per-state timeline of an execution, from its timestamped history: when each state was entered and left.
import type { LocalExecution } from './execution';

/** One state's visit: entered and exited (epoch ms); a state still running or failed in has no exit. */
export interface StateVisit {
  readonly stateName: string;
  readonly enteredAt: number;
  readonly exitedAt?: number;
  /** Milliseconds between entering and leaving the state. */
  readonly durationMs?: number;
}

/**
 * Every state the execution entered, in order, with when it left it (a state entered again, e.g. an acquire retried,
 * appears once per visit). States inside an emulated Map's items run as executions of their own and are not listed.
 */
export function stateTimeline(execution: Pick<LocalExecution, 'events'>): StateVisit[] {
  const visits: { stateName: string; enteredAt: number; exitedAt?: number }[] = [];
  const open = new Map<string, number[]>();
  for (const e of execution.events) {
    if (!e.stateName) continue;
    if (e.type === 'StateEntered') {
      visits.push({ stateName: e.stateName, enteredAt: e.timestamp });
      open.set(e.stateName, [...(open.get(e.stateName) ?? []), visits.length - 1]);
    } else if (e.type === 'StateExited') {
      const i = open.get(e.stateName)?.shift();
      if (i !== undefined) visits[i].exitedAt = e.timestamp;
    }
  }
  return visits.map((v) => (v.exitedAt === undefined ? v : { ...v, durationMs: v.exitedAt - v.enteredAt }));
}
