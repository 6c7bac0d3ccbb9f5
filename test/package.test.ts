import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { blockAfter, pack, QUICK_START_MARKER, toCommonJs, typeErrorsOf } from './support/readme';

// The package as users get it: `npm pack`, installed into an empty app that has only aws-cdk-lib and constructs
// beside it, then README's quick start (extracted from README, not copied) and a stack using every construct are
// synthesized there by plain node — no Docker on the PATH, no esbuild or TypeScript in the app, no network call made
// by synth (the handlers are prebuilt assets in the tarball). `npx projen compile` runs before jest in `npm test`.

const ROOT = path.join(__dirname, '..');
/** The README block after the quick-start marker. */
export function quickStartOf(readme: string): string {
  return blockAfter(readme, QUICK_START_MARKER);
}

interface Packed { readonly tarball: string; readonly files: string[] }


/** An empty app with the packed library installed (as npm lays a tarball out) and aws-cdk-lib + constructs beside it. */
function appWith(packed: Packed, dir: string): string {
  const modules = path.join(dir, 'node_modules');
  fs.mkdirSync(modules, { recursive: true });
  execFileSync('tar', ['-xzf', packed.tarball, '-C', modules]);
  fs.renameSync(path.join(modules, 'package'), path.join(modules, 'cdk-sfn-throttle'));
  for (const peer of ['aws-cdk-lib', 'constructs']) fs.symlinkSync(path.join(ROOT, 'node_modules', peer), path.join(modules, peer), 'dir');
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'user-app', private: true }));
  return dir;
}

/** Type-checks a program against the installed package's declarations (strict), as a user's `tsc` would. */
function typeErrors(app: string, name: string, source: string): string[] {
  const file = path.join(app, `${name}.ts`);
  fs.writeFileSync(file, source);
  return typeErrorsOf([file]);
}

/** Runs a TypeScript program in the app with node only: no Docker, no esbuild on the PATH or in node_modules. */
function synth(app: string, name: string, source: string): { status: number | null; stderr: string; outdir: string } {
  const js = toCommonJs(source);
  fs.writeFileSync(path.join(app, `${name}.js`), js);
  const outdir = path.join(app, `cdk.out.${name}`);
  const bin = path.join(app, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  const r = spawnSync(path.join(bin, 'node'), [`${name}.js`], {
    cwd: app,
    encoding: 'utf8',
    env: { PATH: bin, HOME: app, CDK_OUTDIR: outdir, CDK_DISABLE_VERSION_CHECK: '1', JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION: '1' },
    timeout: 120_000,
  });
  fs.rmSync(bin, { recursive: true });
  return { status: r.status, stderr: r.stderr, outdir };
}

const EVERY_CONSTRUCT = `
import { App, Aspects, Duration, Stack } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import {
  BufferedQueueConsumer, CircuitBreaker, ConcurrencyLimitedTask, ConcurrencyLimiter, Limit, MapConcurrency, Priority, ProxyTarget, QueueTarget,
  RateLimitedTask, RateLimiter, RetryPolicy, ThrottleChecks, ThrottleDashboard, ThrottledApiProxy, ThrottledMap,
} from 'cdk-sfn-throttle';

const app = new App();
Aspects.of(app).add(new ThrottleChecks({ writePlan: true }));
const stack = new Stack(app, 'Everything', { env: { account: '123456789012', region: 'us-east-1' } });
const fn = lambda.Function.fromFunctionArn(stack, 'Partner', 'arn:aws:lambda:us-east-1:123456789012:function:partner');
const invoke = (id: string) => tasks.LambdaInvoke.jsonPath(stack, id, {
  lambdaFunction: fn, payloadResponseOnly: true, retryOnServiceExceptions: false, resultPath: '$.result',
});

const limiter = new RateLimiter(stack, 'Api', { ratePerSecond: 20, adaptive: { minRatePerSecond: 2 } });
const provider = new RateLimiter(stack, 'Provider', { limits: [Limit.perWindow({ requests: 5, window: Duration.seconds(1), burst: 0 })] });
const call = new RateLimitedTask(stack, 'Call', {
  limiter, task: invoke('Invoke'), acquire: { priority: Priority.HIGH }, retry: RetryPolicy.throttling({ errors: ['ThrottlingException'] }),
});
const map = new ThrottledMap(stack, 'Items', { itemsPath: '$.items', concurrency: MapConcurrency.fixed(5), limiter: provider, itemProcessor: invoke('Item') });
const db = new ConcurrencyLimiter(stack, 'Db', { limit: 10 });
const job = new ConcurrencyLimitedTask(stack, 'Job', { limiter: db, task: invoke('Query') });
const breaker = new CircuitBreaker(stack, 'Breaker', { failureThreshold: 5, window: Duration.seconds(30), cooldown: Duration.seconds(10) });
const guarded = breaker.protect(stack, 'Guard', { task: invoke('Guarded') });
const proxy = new ThrottledApiProxy(stack, 'Proxy', { target: ProxyTarget.http('https://api.example.com/v1'), stageThrottle: { rateLimit: 5, burstLimit: 2 } });
proxy.addRoute('POST', '/labels');
const machine = new sfn.StateMachine(stack, 'Machine', {
  definitionBody: sfn.DefinitionBody.fromChainable(call.next(map).next(job).next(guarded)),
});
const buffer = new BufferedQueueConsumer(stack, 'Buffer', { target: QueueTarget.dispatch(fn, { limiter }) });
new ThrottleDashboard(stack, 'Dashboard').addLimiter(limiter).addStateMachine(machine).addConsumer(buffer).addApiProxy(proxy)
  .addConcurrencyLimiter(db).addCircuitBreaker(breaker);
app.synth();
`;

describe('the packed package in an empty app', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cdk-sfn-throttle-pack-'));
  let packed: Packed;
  let app: string;
  beforeAll(() => {
    packed = pack(ROOT, work);
    app = appWith(packed, path.join(work, 'app'));
  });
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  test('the tarball holds the library, its assembly, the handler bundles and the CLI — and nothing of test/, bench/, local/, lambda/ or src/', () => {
    const files = packed.files;
    for (const f of ['package.json', '.jsii', 'lib/index.js', 'lib/index.d.ts', 'bin/cdk-sfn-throttle', 'assets/cli/limits/index.js',
      'assets/lambda/rate-limiter/acquire.lambda/index.js', 'assets/lambda/dispatcher/dispatch.lambda/index.js',
      'assets/lambda/concurrency-limiter/concurrency.lambda/index.js', 'assets/lambda/circuit-breaker/breaker.lambda/index.js',
      'assets/lambda/dead-letter-reporter/report.lambda/index.js']) {
      expect(files).toContain(f);
    }
    const foreign = files.filter((f) => /^(test|bench|local|lambda|src|examples|cli|\.projen|projenrc)\//.test(f));
    expect(foreign).toEqual([]);
  });

  test('README\'s quick start, as written there, synthesizes in the app with node alone', () => {
    const source = quickStartOf(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
    expect(source).toContain("from 'cdk-sfn-throttle'");
    expect(typeErrors(app, 'quick-start', source)).toEqual([]);
    const r = synth(app, 'quick-start', source);
    expect({ status: r.status, stderr: r.stderr.split('\n').filter((l) => /Error|error/.test(l)).slice(0, 5) }).toEqual({ status: 0, stderr: [] });
    const template = JSON.parse(fs.readFileSync(path.join(r.outdir, 'Orders.template.json'), 'utf8'));
    const types = Object.values(template.Resources).map((x: any) => x.Type);
    expect(types).toEqual(expect.arrayContaining(['AWS::StepFunctions::StateMachine', 'AWS::DynamoDB::Table', 'AWS::Lambda::Function']));
    // the acquire function's code is the prebuilt bundle, copied into the assembly (no bundling at synth)
    const assets = fs.readdirSync(r.outdir).filter((d) => d.startsWith('asset.'));
    expect(assets.some((d) => fs.existsSync(path.join(r.outdir, d, 'index.js')))).toBe(true);
  });

  test('a stack using every construct synthesizes in the app with node alone, its throttle plan written', () => {
    expect(typeErrors(app, 'everything', EVERY_CONSTRUCT)).toEqual([]);
    const r = synth(app, 'everything', EVERY_CONSTRUCT);
    expect({ status: r.status, stderr: r.stderr.split('\n').filter((l) => /Error|error/.test(l)).slice(0, 5) }).toEqual({ status: 0, stderr: [] });
    const template = JSON.parse(fs.readFileSync(path.join(r.outdir, 'Everything.template.json'), 'utf8'));
    const types = new Set(Object.values(template.Resources).map((x: any) => x.Type));
    for (const t of ['AWS::StepFunctions::StateMachine', 'AWS::SQS::Queue', 'AWS::ApiGateway::RestApi', 'AWS::CloudWatch::Dashboard', 'AWS::Events::Rule']) {
      expect(types).toContain(t);
    }
    expect(fs.existsSync(path.join(r.outdir, 'throttle-plan.json'))).toBe(true);
  });

  test('the gates can fail: a README without the marked block, a quick start that no longer type-checks', () => {
    expect(() => quickStartOf('# no quick start here')).toThrow(/README has no/);
    const rotten = quickStartOf(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')).replace('ratePerSecond', 'tps').replace('limits:', 'limitz:');
    expect(typeErrors(app, 'rotten', rotten).join('\n')).toMatch(/limitz/);
  });
});
