import * as fs from 'fs';
import * as path from 'path';

// The public API as users of every language get it: the jsii assembly that `npm test` builds (`npx projen compile`
// runs before jest). Checked against the names table of shared/DESIGN.md §7 and aws-cdk-lib's habits.

const ROOT = path.join(__dirname, '..');

interface JsiiProperty {
  readonly name: string;
  readonly optional?: boolean;
  readonly static?: boolean;
  readonly docs?: { readonly default?: string; readonly summary?: string };
}
interface JsiiType {
  readonly fqn: string;
  readonly name: string;
  readonly kind: 'class' | 'interface' | 'enum';
  readonly datatype?: boolean;
  readonly properties?: JsiiProperty[];
  readonly methods?: { readonly name: string; readonly static?: boolean }[];
  readonly members?: { readonly name: string }[];
}

function assembly(): Record<string, JsiiType> {
  const file = path.join(ROOT, '.jsii');
  if (!fs.existsSync(file)) {
    throw new Error('.jsii is missing: run `npx projen compile` first (npm test does, before jest)');
  }
  const built = fs.statSync(file).mtimeMs;
  const newest = sourceFiles().reduce((m, f) => Math.max(m, fs.statSync(f).mtimeMs), 0);
  if (newest > built) throw new Error('.jsii is older than src/: run `npx projen compile` again');
  return JSON.parse(fs.readFileSync(file, 'utf8')).types;
}

function sourceFiles(dir = path.join(ROOT, 'src')): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sourceFiles(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Names §7 (and the one-API issue) replaced, anywhere in the public API. */
const REPLACED_ANYWHERE: Record<string, string> = {
  tokensPerItem: 'acquire.consume',
  limiterKey: 'acquire.key',
  limiterMode: 'acquire.mode',
  grantSend: 'grantSendMessages',
  DEFAULT_THROTTLING_ERRORS: 'RetryPolicy.lambdaThrottlingErrors()',
  LAMBDA_THROTTLING_ERRORS: 'RetryPolicy.lambdaThrottlingErrors() (a copy: no shared mutable array)',
  HTTP_THROTTLING_ERRORS: 'RetryPolicy.httpThrottlingErrors()',
  RETRYABLE: 'ThrottleErrors.retryable()',
};

/** Names replaced on one type. */
const REPLACED_ON: Record<string, Record<string, string>> = {
  RateLimitedTaskProps: { key: 'acquire.key', tokens: 'acquire.consume', mode: 'acquire.mode' },
  AcquireOptions: { tokens: 'consume' },
  ThrottledMapProps: {
    distributed: 'mode: MapMode.distributed()',
    batch: 'MapMode.distributed({ batch })',
    itemReader: 'MapMode.distributed({ itemReader })',
    toleratedFailurePercentage: 'MapMode.distributed({ toleratedFailurePercentage })',
    toleratedFailureCount: 'MapMode.distributed({ toleratedFailureCount })',
    mapExecutionType: 'MapMode.distributed({ executionType })',
  },
  BufferedQueueConsumerProps: {
    consumer: 'target: QueueTarget.batchConsumer(fn)',
    limiter: 'QueueTarget.dispatch(fn, { limiter })',
    targetTimeout: 'QueueTarget.dispatch(fn, { targetTimeout })',
    dispatcherTimeout: 'QueueTarget.dispatch(fn, { dispatcherTimeout })',
  },
  IRateLimiter: { function: 'acquireFunction' },
  RateLimiter: { function: 'acquireFunction' },
  RateLimiterAttributes: { functionArn: 'acquireFunctionArn' },
};

describe('public API (the built .jsii assembly)', () => {
  const types = Object.values(assembly());

  test('the assembly holds the constructs and the §7 names', () => {
    const names = types.map((t) => t.name);
    expect(names).toEqual(expect.arrayContaining([
      'RateLimiter', 'IRateLimiter', 'RateLimiterAttributes', 'Limit', 'AcquireOptions', 'AcquireMode', 'RateLimitedTask', 'ThrottledMap',
      'MapMode', 'DistributedMapOptions', 'BufferedQueueConsumer', 'QueueTarget', 'DispatchOptions', 'ThrottleDashboard', 'ThrottleChecks',
    ]));
    const members = (name: string) => {
      const t = types.find((x) => x.name === name)!;
      return [...(t.properties ?? []), ...(t.methods ?? [])].map((m) => m.name);
    };
    expect(members('IRateLimiter')).toEqual(expect.arrayContaining([
      'acquireFunction', 'table', 'limiterName', 'limits', 'grantAcquire', 'grantTakeTokens', 'acquire',
      'metric', 'metricAdmitted', 'metricDelayed', 'metricRejected', 'metricWaitTime', 'metricDynamoDbCalls', 'metricUnavailable',
    ]));
    expect(members('AcquireOptions').sort()).toEqual(['consume', 'key', 'mode', 'priority']);
    expect(members('AdaptiveOptions').sort()).toEqual(['alarm', 'decreaseFactor', 'increasePerSecond', 'maxReservation', 'minRatePerSecond']);
    expect(types.find((x) => x.name === 'Priority')!.members!.map((m) => m.name).sort()).toEqual(['HIGH', 'LOW', 'NORMAL']);
    expect(members('RateLimiterProps')).toEqual(expect.arrayContaining(['adaptive', 'priorityReserve']));
    expect(members('BufferedQueueConsumer')).toContain('grantSendMessages');
    expect(members('RateLimiter')).toContain('fromRateLimiterAttributes');
    // §7: CircuitBreaker({ failureThreshold, window, cooldown, halfOpenProbes, failureErrors }), protect(scope, id, { task, key?, fallback? })
    expect(members('CircuitBreakerProps')).toEqual(expect.arrayContaining(['failureThreshold', 'window', 'cooldown', 'halfOpenProbes', 'failureErrors']));
    expect(members('ProtectOptions')).toEqual(expect.arrayContaining(['task', 'key', 'fallback']));
    expect(members('CircuitBreaker')).toEqual(expect.arrayContaining(['fromCircuitBreakerAttributes', 'protect', 'metricOpened', 'metricClosed', 'metricProbes']));
    expect(members('RateLimiterProps')).toEqual(expect.arrayContaining(['limits', 'keyLimits']));
  });

  test('every optional prop documents its @default', () => {
    const missing = types.filter((t) => t.datatype)
      .flatMap((t) => (t.properties ?? []).filter((p) => p.optional && !p.docs?.default).map((p) => `${t.name}.${p.name}`));
    expect(missing).toEqual([]);
  });

  test('every public type and member has a summary (what the API reference and the other languages\' docs show)', () => {
    const missing: string[] = [];
    for (const t of types) {
      if (!(t as any).docs?.summary) missing.push(t.name);
      for (const m of [...(t.properties ?? []), ...(t.methods ?? []), ...(t.members ?? [])] as { name: string; docs?: { summary?: string } }[]) {
        if (!m.docs?.summary) missing.push(`${t.name}.${m.name}`);
      }
    }
    expect(missing).toEqual([]);
  });

  test('no public name the §7 table replaced', () => {
    const found: string[] = [];
    for (const t of types) {
      for (const m of [...(t.properties ?? []), ...(t.methods ?? []), ...(t.members ?? [])]) {
        const instead = REPLACED_ANYWHERE[m.name] ?? REPLACED_ON[t.name]?.[m.name];
        if (instead) found.push(`${t.name}.${m.name} → ${instead}`);
      }
    }
    expect(found).toEqual([]);
  });

  test('no mutable array handed out by a static property (one push would edit everyone\'s default)', () => {
    const shared = types.flatMap((t) => (t.properties ?? [])
      .filter((p) => p.static && JSON.stringify((p as any).type ?? {}).includes('"kind":"array"'))
      .map((p) => `${t.name}.${p.name}`));
    expect(shared).toEqual([]);
  });

  test('every validation error carries the construct path: constructs throw only through fail()', () => {
    // fail(scope, message) prefixes `[<construct path>] `; the bad-prop tables of each construct's tests check the
    // prefix on every case (test/support/validation.ts). Here: no other way to throw is left in src/.
    const offenders = sourceFiles().filter((f) => !f.endsWith(path.join('private', 'validation.ts')))
      .flatMap((f) => fs.readFileSync(f, 'utf8').split('\n').map((line, i) => ({ f, i, line })))
      .filter(({ line }) => /\bthrow\b/.test(line) && !line.trim().startsWith('*') && !line.trim().startsWith('//'))
      .map(({ f, i, line }) => `${path.relative(ROOT, f)}:${i + 1}: ${line.trim()}`);
    expect(offenders).toEqual([]);
  });
});
