import { Token } from 'aws-cdk-lib';

export interface RangeRule {
  readonly min: number;
  readonly max: number;
  readonly minExclusive?: boolean;
  readonly integer?: boolean;
  readonly why?: string;
}

/** The one place numeric props are range-checked (tokens are skipped). */
export function checkRange(prop: string, value: number, rule: RangeRule): void {
  if (Token.isUnresolved(value)) return;
  const low = rule.minExclusive ? value > rule.min : value >= rule.min;
  if (!Number.isFinite(value) || !low || value > rule.max || (rule.integer && !Number.isInteger(value))) {
    const range = `${rule.minExclusive ? 'greater than' : 'from'} ${rule.min} ${rule.minExclusive ? 'and at most' : 'to'} ${rule.max}`;
    throw new Error(`${prop} must be ${rule.integer ? 'an integer ' : ''}${range}${rule.why ? ` (${rule.why})` : ''}, got ${value}`);
  }
}

