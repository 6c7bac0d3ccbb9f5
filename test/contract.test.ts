import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { App, Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import * as esbuild from 'esbuild';
import { AcquireMode, Limit, MapMode, RateLimitedTask, RateLimiter, RetryPolicy, ThrottledMap } from '../src';
import { aslOf } from './support/asl';
import { ACQUIRE_MODES, AcquireField, LimiterEnv } from '../src/private/contract';

// The contract between constructs and handlers (src/private/contract.ts): the handler bundles carry no construct
// code, and what the constructs render uses the contract's names only.

const ROOT = path.join(__dirname, '..');
const ALLOWED_FROM_SRC = new Set(['src/errors.ts', 'src/private/contract.ts']);

/** The source modules esbuild put in a (non-minified) bundle: its `// <path>` module markers. */
function modulesOf(bundle: string): string[] {
  return [...new Set([...bundle.matchAll(/^\/\/ ((?:node_modules|src|lambda|local|test)\/[^\s]+)$/gm)].map((m) => m[1]))];
}

/** What a bundle must not hold: construct code, CDK libraries, any src/ module but the contract and the errors. */
function forbiddenIn(bundle: string): string[] {
  const modules = modulesOf(bundle).filter((m) => /^node_modules\/(aws-cdk-lib|constructs)\//.test(m) || (m.startsWith('src/') && !ALLOWED_FROM_SRC.has(m)));
  const requires = [...bundle.matchAll(/require\("(aws-cdk-lib[^"]*|constructs)"\)/g)].map((m) => `require(${m[1]})`);
  return [...modules, ...requires];
}

function bundles(): string[] {
  const dir = path.join(ROOT, 'assets', 'lambda');
  if (!fs.existsSync(dir)) throw new Error('assets/lambda is missing: run `npx projen bundle` (npm test does, first)');
  const found: string[] = [];
  const walk = (d: string) => fs.readdirSync(d, { withFileTypes: true }).forEach((e) => {
    const p = path.join(d, e.name);
    if (e.isDirectory()) walk(p); else if (e.name === 'index.js') found.push(p);
  });
  walk(dir);
  return found;
}

describe('contract between constructs and handlers', () => {
  test('the handler bundles hold no aws-cdk-lib, constructs or construct code', () => {
    const files = bundles();
    expect(files.map((f) => path.relative(ROOT, f)).sort()).toEqual([
      'assets/lambda/circuit-breaker/breaker.lambda/index.js',
      'assets/lambda/concurrency-limiter/concurrency.lambda/index.js',
      'assets/lambda/dead-letter-reporter/report.lambda/index.js',
      'assets/lambda/dispatcher/dispatch.lambda/index.js',
      'assets/lambda/rate-limiter/acquire.lambda/index.js',
    ]);
    for (const f of files) {
      const text = fs.readFileSync(f, 'utf8');
      // the markers are there to read (a bundle without them would pass unchecked)
      expect(modulesOf(text)).toContain('src/private/contract.ts');
      expect({ bundle: path.relative(ROOT, f), forbidden: forbiddenIn(text) }).toEqual({ bundle: path.relative(ROOT, f), forbidden: [] });
    }
  });

  test('the bundle check catches a handler that imports construct code', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'contract-'));
    const entry = path.join(dir, 'probe.ts');
    fs.writeFileSync(entry, `import { checkRange } from ${JSON.stringify(path.join(ROOT, 'src', 'private', 'validation'))};\nexport const handler = () => checkRange;\n`);
    try {
      await esbuild.build({ entryPoints: [entry], bundle: true, platform: 'node', outfile: path.join(dir, 'index.js'), logLevel: 'silent' });
      const text = fs.readFileSync(path.join(dir, 'index.js'), 'utf8');
      expect(forbiddenIn(text)).toEqual(expect.arrayContaining(['src/private/validation.ts']));
      expect(forbiddenIn(text).some((m) => m.startsWith('node_modules/aws-cdk-lib/'))).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('AcquireMode (public) and the wire modes are the same values', () => {
    expect(Object.values(AcquireMode).sort()).toEqual([...ACQUIRE_MODES].sort());
  });

  test('what the constructs render uses the contract\'s names: acquire fields and the limiter environment', () => {
    const stack = new Stack(new App(), 'Stack');
    const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: 10, burst: 10 });
    const limited = new RateLimitedTask(stack, 'Limited', {
      limiter,
      task: new tasks.CallAwsService(stack, 'Call', { service: 'sts', action: 'getCallerIdentity', iamResources: ['*'] }),
      acquire: { key: '$.tenant', mode: AcquireMode.TRY },
      retry: RetryPolicy.throttling({ errors: ['Api.Throttled'] }),
      resultPath: '$.acquired',
    });
    const map = new ThrottledMap(stack, 'Map', {
      mode: MapMode.distributed({ batch: { maxItems: 2 } }), limiter, itemProcessor: new sfn.Pass(stack, 'Work'), retry: RetryPolicy.throttling({ errors: ['E'] }),
    });
    new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(limited.next(map)) });
    const template = Template.fromStack(stack);
    const fields = new Set(Object.values(AcquireField).flatMap((f) => [f, `${f}.$`]));
    const params: string[] = [];
    const visit = (states: Record<string, any>) => Object.values(states).forEach((st) => {
      if (st.Type === 'Task' && st.Parameters) params.push(...Object.keys(st.Parameters));
      for (const b of [...(st.Branches ?? []), ...(st.ItemProcessor ? [st.ItemProcessor] : [])]) visit(b.States);
    });
    visit(aslOf(template).States);
    expect(params.length).toBeGreaterThan(10);
    expect(params.filter((p) => !fields.has(p))).toEqual([]);
    const env = Object.values(template.findResources('AWS::Lambda::Function'))
      .map((fn: any) => Object.keys(fn.Properties.Environment?.Variables ?? {}).filter((k) => k !== 'AWS_NODEJS_CONNECTION_REUSE_ENABLED').sort());
    // one limit: every name but LIMITS and KEY_LIMITS (present only with several limits and with keyLimits, below), and
    // ADAPTIVE and PRIORITY_RESERVE (only when given, below)
    const optional: string[] = [LimiterEnv.ADAPTIVE, LimiterEnv.PRIORITY_RESERVE, LimiterEnv.START_JITTER_MS];
    const oneLimit = Object.values(LimiterEnv).filter((n) => n !== LimiterEnv.LIMITS && n !== LimiterEnv.KEY_LIMITS && !optional.includes(n));
    expect(env).toContainEqual(oneLimit.sort());
    const other = new Stack(new App(), 'Other');
    const two = new RateLimiter(other, 'Model', { limits: [Limit.perMinute(60), Limit.perMinute(6_000, { dimension: 'tokens' })] });
    const tenants = new RateLimiter(other, 'Tenants', { limits: [Limit.perSecond(100)], keyLimits: [Limit.perSecond(20)] });
    const varsOf = (l: RateLimiter) => Object.keys((Template.fromStack(other).findResources('AWS::Lambda::Function')[other.getLogicalId(l.acquireFunction.node.defaultChild as any)] as any)
      .Properties.Environment.Variables).filter((k) => k !== 'AWS_NODEJS_CONNECTION_REUSE_ENABLED').sort();
    const adaptive = new RateLimiter(other, 'Adaptive', { ratePerSecond: 10, adaptive: { minRatePerSecond: 1 }, priorityReserve: 0.1 });
    expect(varsOf(two)).toEqual(Object.values(LimiterEnv).filter((n) => n !== LimiterEnv.KEY_LIMITS && !optional.includes(n)).sort());
    expect(varsOf(tenants)).toEqual(Object.values(LimiterEnv).filter((n) => !optional.includes(n)).sort());
    const notAdaptive: string[] = [LimiterEnv.KEY_LIMITS, LimiterEnv.LIMITS, LimiterEnv.START_JITTER_MS];
    expect(varsOf(adaptive)).toEqual(Object.values(LimiterEnv).filter((n) => !notAdaptive.includes(n)).sort());
    const third = new Stack(new App(), 'Third');
    const provider = new RateLimiter(third, 'Provider', { limits: [Limit.perWindow({ requests: 5, window: Duration.seconds(1), burst: 0 })] });
    const providerVars = (Template.fromStack(third).findResources('AWS::Lambda::Function')[third.getLogicalId(provider.acquireFunction.node.defaultChild as any)] as any)
      .Properties.Environment.Variables;
    expect(providerVars[LimiterEnv.START_JITTER_MS]).toBe('100');
  });
});
