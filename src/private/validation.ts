import { Token } from 'aws-cdk-lib';
import { IConstruct } from 'constructs';

export interface RangeRule {
  readonly min: number;
  readonly max: number;
  readonly minExclusive?: boolean;
  readonly integer?: boolean;
  readonly why?: string;
}

/**
 * A synth-time validation error: the message starts with the construct path, `[Stack/Limiter] ratePerSecond must be
 * ...`, as aws-cdk-lib's own validation errors name the construct. Every error a construct of this library throws
 * goes through here (test/public-api.test.ts checks the sources for any other `throw`).
 */
export function fail(scope: IConstruct, message: string): never {
  throw new Error(`[${scope.node.path}] ${message}`);
}

/** The one place numeric props are range-checked (tokens are skipped). */
export function checkRange(scope: IConstruct, prop: string, value: number, rule: RangeRule): void {
  if (Token.isUnresolved(value)) return;
  const low = rule.minExclusive ? value > rule.min : value >= rule.min;
  if (!Number.isFinite(value) || !low || value > rule.max || (rule.integer && !Number.isInteger(value))) {
    const range = `${rule.minExclusive ? 'greater than' : 'from'} ${rule.min} ${rule.minExclusive ? 'and at most' : 'to'} ${rule.max}`;
    fail(scope, `${prop} must be ${rule.integer ? 'an integer ' : ''}${range}${rule.why ? ` (${rule.why})` : ''}, got ${value}`);
  }
}
