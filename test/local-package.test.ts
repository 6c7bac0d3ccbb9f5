import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { blockAfter, LOCAL_RUN_MARKER, pack, QUICK_START_MARKER, toCommonJs, typeErrorsOf } from './support/readme';

// The runner as users get it: `npm pack` of cdk-sfn-throttle-local (local/, built by `npx projen compile:local`,
// which `npm test` runs before jest) and of the library, both laid out in an empty project as npm would install
// them, beside aws-cdk-lib, constructs and the runner's own dependencies (linked from this repo's node_modules: CI has
// no registry to install from). Then, in that project: a user's jest test that builds a throttled workflow and runs
// it with the runner; and the CLI over a user's CDK app, with its progress bar and chart.

const ROOT = path.join(__dirname, '..');
const LOCAL = path.join(ROOT, 'local');
const JEST = path.join(ROOT, 'node_modules', 'jest', 'bin', 'jest.js');


/** jest in a user's project (plain JavaScript tests, no transform), as the user would run it there. */
function runJest(project: string) {
  return spawnSync(process.execPath, [JEST, '--rootDir', project, '--ci', '--colors=false', '--config', JSON.stringify({ testEnvironment: 'node', transform: {}, testMatch: ['**/*.test.js'] })], {
    cwd: project,
    encoding: 'utf8',
    env: { ...process.env, JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION: '1' },
    timeout: 300_000,
  });
}

/** Lays a tarball out as `node_modules/<name>` and links its bins into node_modules/.bin, as npm install does. */
function install(tarball: string, modules: string): void {
  const tmp = fs.mkdtempSync(path.join(modules, '.unpack-'));
  execFileSync('tar', ['-xzf', tarball, '-C', tmp]);
  const manifest = JSON.parse(fs.readFileSync(path.join(tmp, 'package', 'package.json'), 'utf8'));
  fs.renameSync(path.join(tmp, 'package'), path.join(modules, manifest.name));
  fs.rmSync(tmp, { recursive: true });
  fs.mkdirSync(path.join(modules, '.bin'), { recursive: true });
  for (const [bin, file] of Object.entries<string>(manifest.bin ?? {})) {
    fs.chmodSync(path.join(modules, manifest.name, file), 0o755);
    fs.symlinkSync(path.join('..', manifest.name, file), path.join(modules, '.bin', bin));
  }
}

/** A package of this repo's node_modules, linked in (scoped names keep their scope directory). */
function link(name: string, modules: string): void {
  const target = path.join(modules, name);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.symlinkSync(path.join(ROOT, 'node_modules', name), target, 'dir');
}

const USER_APP = `
const { App, SecretValue, Stack } = require('aws-cdk-lib');
const events = require('aws-cdk-lib/aws-events');
const sfn = require('aws-cdk-lib/aws-stepfunctions');
const tasks = require('aws-cdk-lib/aws-stepfunctions-tasks');
const { RateLimitedTask, RateLimiter, RetryPolicy } = require('cdk-sfn-throttle');

exports.build = (app) => {
  const stack = new Stack(app, 'Orders', { env: { account: '123456789012', region: 'eu-west-1' } });
  const limiter = new RateLimiter(stack, 'Carrier', { ratePerSecond: 5, burst: 1 });
  const createLabel = new tasks.HttpInvoke(stack, 'Create Label', {
    connection: new events.Connection(stack, 'Api', { authorization: events.Authorization.apiKey('x-api-key', SecretValue.unsafePlainText('k')) }),
    apiRoot: 'https://api.carrier.example.com',
    apiEndpoint: sfn.TaskInput.fromText('v1/labels'),
    method: sfn.TaskInput.fromText('POST'),
    body: sfn.TaskInput.fromObject({ 'orderId.$': '$.orderId' }),
  });
  const label = new RateLimitedTask(stack, 'Label', { limiter, task: createLabel, retry: RetryPolicy.custom({ errors: ['States.Http.StatusCode.429'] }) });
  new sfn.StateMachine(stack, 'Shipping', { definitionBody: sfn.DefinitionBody.fromChainable(label) });
  return stack;
};
if (require.main === module) { const app = new App(); exports.build(app); app.synth(); }
`;

const USER_TEST = `
const { App } = require('aws-cdk-lib');
const { LocalRunner, maxInWindow, perSecond, perSecondChart, stateTimeline } = require('cdk-sfn-throttle-local');
const { build } = require('./app');

test('20 orders at once never get more than the carrier allows', async () => {
  const stack = build(new App());
  const calls = [];
  const runner = await LocalRunner.start(stack, 'Orders/Shipping', {
    httpHandlers: { 'https://api.carrier.example.com': (req) => { calls.push(req.body.orderId); return { status: 200, body: { tracking: 'T' } }; } },
  });
  try {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => runner.run({ orderId: 'o-' + i })));
    expect(results.map((r) => r.status)).toEqual(Array(20).fill('SUCCEEDED'));
    expect(calls).toHaveLength(20);
    expect(runner.grants).toHaveLength(20);
    // judged at the limiter's decisions: any 1 s holds at most burst + rate × 1 s
    expect(maxInWindow(runner.grants, 1000000)).toBeLessThanOrEqual(1 + 5);
    expect(stateTimeline(results[0]).map((v) => v.stateName)).toContain('Create Label');
    process.stderr.write('USER-CHART\\n' + perSecondChart(perSecond(runner.grants.map((g) => g.atUs)), 5));
  } finally {
    await runner.stop();
  }
}, 120000);
`;

describe('cdk-sfn-throttle-local, packed and installed in a user\'s project', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cdk-sfn-throttle-local-'));
  const project = path.join(work, 'project');
  const modules = path.join(project, 'node_modules');
  let runnerFiles: string[];
  beforeAll(() => {
    if (!fs.existsSync(path.join(LOCAL, 'lib', 'local', 'index.js'))) throw new Error('local/lib is not built: run `npx projen compile:local` (npm test does)');
    fs.mkdirSync(modules, { recursive: true });
    const runner = pack(LOCAL, work);
    runnerFiles = runner.files;
    install(runner.tarball, modules);
    install(pack(ROOT, work).tarball, modules);
    const runnerManifest = JSON.parse(fs.readFileSync(path.join(modules, 'cdk-sfn-throttle-local', 'package.json'), 'utf8'));
    for (const dep of ['aws-cdk-lib', 'constructs', ...Object.keys(runnerManifest.dependencies)]) link(dep, modules);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'user-project', private: true }));
    fs.writeFileSync(path.join(project, 'app.js'), USER_APP);
    fs.writeFileSync(path.join(project, 'shipping.test.js'), USER_TEST);
  }, 300_000);
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  test('the runner\'s tarball: its build, CLI and README, none of the repo\'s test doubles or sources; its dependencies are not the library\'s', () => {
    for (const f of ['package.json', 'README.md', 'bin/cdk-sfn-throttle-local', 'lib/local/index.js', 'lib/local/index.d.ts', 'lib/local/runner.js', 'lib/local/cli.js', 'lib/local/dynalite-child.js']) {
      expect(runnerFiles).toContain(f);
    }
    expect(runnerFiles.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
    expect(runnerFiles.filter((f) => /stub/.test(f))).toEqual([]);
    const library = JSON.parse(fs.readFileSync(path.join(modules, 'cdk-sfn-throttle', 'package.json'), 'utf8'));
    expect(Object.keys(library.dependencies ?? {})).toEqual([]);
  });

  test('a user\'s jest test runs a throttled workflow with the installed runner and library', () => {
    const r = runJest(project);
    const output = `${r.stdout}\n${r.stderr}`;
    if (r.status !== 0) throw new Error(`the user's jest run failed (exit ${r.status}):\n${output.slice(-5000)}`);
    expect(output).toMatch(/Tests: +1 passed, 1 total/);
    expect(output).toMatch(/USER-CHART\n {4}0 s {2}█/);
  });

  test('README\'s "Run it locally" block, with README\'s quick start as bin/app.ts, type-checks and passes under jest in the user\'s project', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const readmeProject = path.join(work, 'readme-project');
    fs.mkdirSync(path.join(readmeProject, 'bin'), { recursive: true });
    fs.mkdirSync(path.join(readmeProject, 'test'), { recursive: true });
    fs.symlinkSync(modules, path.join(readmeProject, 'node_modules'), 'dir');
    fs.writeFileSync(path.join(readmeProject, 'package.json'), JSON.stringify({ name: 'readme-project', private: true }));
    const app = blockAfter(readme, QUICK_START_MARKER);
    const testSource = blockAfter(readme, LOCAL_RUN_MARKER);
    fs.writeFileSync(path.join(readmeProject, 'bin', 'app.ts'), app);
    // jest's globals, declared as @types/jest would (this project has no @types of its own)
    fs.writeFileSync(path.join(readmeProject, 'test', 'jest-globals.d.ts'),
      'declare function test(name: string, fn: () => Promise<void>, timeout?: number): void;\ndeclare function expect(v: unknown): any;\n');
    fs.writeFileSync(path.join(readmeProject, 'test', 'shipping.test.ts'), testSource);
    expect(typeErrorsOf([path.join(readmeProject, 'test', 'shipping.test.ts'), path.join(readmeProject, 'test', 'jest-globals.d.ts')])).toEqual([]);
    fs.writeFileSync(path.join(readmeProject, 'bin', 'app.js'), toCommonJs(app));
    fs.writeFileSync(path.join(readmeProject, 'test', 'shipping.test.js'), toCommonJs(testSource));
    const r = runJest(readmeProject);
    const output = `${r.stdout}\n${r.stderr}`;
    if (r.status !== 0) throw new Error(`README's local-run block failed under jest (exit ${r.status}):\n${output.slice(-5000)}`);
    expect(output).toMatch(/Tests: +1 passed, 1 total/);
  });

  test('the CLI over the user\'s app: synthesizes it, runs 15 executions at once, draws the progress bar and the per-second chart', () => {
    fs.writeFileSync(path.join(project, 'handlers.js'), "exports.httpHandlers = { 'https://api.carrier.example.com': () => ({ status: 200, body: {} }) };\n");
    fs.writeFileSync(path.join(project, 'input.json'), JSON.stringify({ orderId: 'order-$index' }));
    const r = spawnSync(path.join(modules, '.bin', 'cdk-sfn-throttle-local'), ['run', '--app', `"${process.execPath}" app.js`, '--state-machine', 'Orders/Shipping',
      '--input', 'input.json', '--executions', '15', '--handlers', 'handlers.js', '--limit', '5'], {
      cwd: project,
      encoding: 'utf8',
      env: { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH}` },
      timeout: 300_000,
    });
    if (r.status !== 0) throw new Error(`the CLI failed (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
    expect(r.stdout).toContain('Orders/Shipping: 15 executions at once, locally');
    expect(r.stdout).toContain('] 15/15 executions');
    expect(r.stdout).toContain('admissions granted by the limiters per second (5 per second marked │):');
    expect(r.stdout).toContain('15 SUCCEEDED');
    const bars = r.stdout.split('\n').filter((l) => /^ +\d+ s {2}/.test(l)).map((l) => Number(l.trim().split(' ').at(-1)));
    expect(bars.reduce((a, b) => a + b, 0)).toBe(15);
  });

  test('the CLI names what it cannot run before running anything (exit 2)', () => {
    const r = spawnSync(path.join(modules, '.bin', 'cdk-sfn-throttle-local'), ['run', '--app', `"${process.execPath}" app.js`, '--state-machine', 'Orders/Shipping'], {
      cwd: project,
      encoding: 'utf8',
      timeout: 300_000,
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('UnsupportedTaskStates: the local runner has no handler for Task state "Create Label" (Resource arn:aws:states:::http:invoke)');
  });
});
