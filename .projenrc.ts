import { awscdk, javascript, JsonFile } from 'projen';
import { UpdateSnapshot } from 'projen/lib/javascript';

const quietEnv = {
  JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION: '20',
  JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION: '1',
  NODE_NO_WARNINGS: '1',
};

const project = new awscdk.AwsCdkConstructLibrary({
  author: 'cdk-sfn-throttle maintainers',
  authorAddress: 'maintainers@users.noreply.r-seed-e250caf4.example',
  cdkVersion: '2.276.0',
  constructsVersion: '10.5.1',
  jsiiVersion: '~6.0.0',
  name: 'cdk-sfn-throttle',
  description: 'AWS CDK constructs that throttle Step Functions workflows: a DynamoDB GCRA rate limiter, rate-limited tasks, throttled maps and buffered queue consumers.',
  keywords: ['cdk', 'awscdk', 'aws-cdk', 'stepfunctions', 'rate-limit', 'throttle', 'token-bucket', 'gcra', 'dynamodb'],
  packageManager: javascript.NodePackageManager.NPM,
  projenrcTs: true,
  defaultReleaseBranch: 'main',
  repositoryUrl: 'https://github.com/maintainers/cdk-sfn-throttle.git',
  license: 'Apache-2.0',

  // No GitHub workflows: CI is .ci/run.
  github: false,
  release: false,

  // The jsii targets (Construct Hub shows all four). Building their packages needs PyPI, Maven Central, NuGet and the Go
  // proxy, which this project's CI cannot reach: `npm test` checks the assembly they are generated from
  // (test/public-api.test.ts) instead; `npx projen package-all` builds them where the registries are reachable.
  publishToPypi: { distName: 'cdk-sfn-throttle', module: 'cdk_sfn_throttle' },
  publishToMaven: { javaPackage: 'io.github.cdksfnthrottle', mavenGroupId: 'io.github.cdk-sfn-throttle', mavenArtifactId: 'cdk-sfn-throttle' },
  publishToNuget: { dotNetNamespace: 'CdkSfnThrottle', packageId: 'CdkSfnThrottle' },
  publishToGo: { moduleName: 'github.com/cdk-sfn-throttle/cdk-sfn-throttle-go', packageName: 'cdksfnthrottle' },
  // Lambda handlers are declared explicitly below (they live in lambda/, not src/).
  lambdaAutoDiscover: false,

  devDeps: [
    'cdk-nag@^3.0.2',
    '@aws-sdk/client-dynamodb@^3',
    '@aws-sdk/client-lambda@^3',
    '@aws-sdk/client-sfn@^3',
    '@aws-sdk/client-sqs@^3',
    'cdk-monitoring-constructs@^10',
    'esbuild@^0.28.2',
    'fast-check@^4',
    'dynalite@4.0.0',
    '@types/aws-lambda',
    'aws-local-stepfunctions@3.0.0',
    // every synthesized definition in the tests is validated; JSONata renderings are evaluated offline (Step Functions
    // implements JSONata 2.0.6)
    'asl-validator@^4.0.0',
    'jsonata@2.0.6',
    // integ.*.ts tests (IntegTest + assertions for a deployed run); their snapshots are checked offline by jest
    '@aws-cdk/integ-tests-alpha@2.245.0-alpha.0',
    // the peer construct the ConcurrencyLimiter is measured against (bench/concurrency.bench.ts, same runner, same emulator)
    '@dontirun/state-machine-semaphore@0.1.583',
  ],

  jestOptions: {
    updateSnapshot: UpdateSnapshot.NEVER,
    jestConfig: {
      setupFiles: ['<rootDir>/test/setup-env.ts', '<rootDir>/test/setup-validation.ts'],
      testMatch: ['<rootDir>/test/**/*.test.ts'],
      // Behaviour tests start emulators and measure real clocks: one test file at a time, so no file loads the
      // cores another is timing.
      maxWorkers: 1,
      testTimeout: 120_000,
      coveragePathIgnorePatterns: ['/node_modules/', '/test/'],
    },
  },
  eslintOptions: {
    dirs: ['src'],
    devdirs: ['test', 'lambda', 'local', 'bench', 'examples', 'cli', 'projenrc', '.projenrc.ts'],
  },
  gitignore: ['/bench/results/', '*.cdk.out', 'cdk.out', '.jsii.tabl.json'],
});

// The direction of the contract: a handler bundle may pull in only the contract module and the error names, never
// construct code (test/contract.test.ts checks the built bundles too). And no import cycles anywhere.
project.eslint?.addOverride({
  files: ['lambda/**/*.ts'],
  rules: {
    'no-restricted-imports': ['error', {
      patterns: [
        {
          regex: '(^|/)src/(?!errors$|private/contract$)',
          message: 'lambda/** may import only src/private/contract.ts and src/errors.ts from src/: handler bundles carry no construct code',
        },
        { group: ['aws-cdk-lib', 'aws-cdk-lib/**', 'constructs'], message: 'handlers run in Lambda: no CDK code in a bundle' },
      ],
    }],
  },
});
project.eslint?.addRules({ 'import/no-cycle': ['error', { ignoreExternal: true }] });
project.eslint?.addIgnorePattern('/local/lib/');

// Handler, runner, bench and example sources are type-checked (and linted) with the test settings.
for (const dir of ['lambda', 'local', 'bench', 'examples', 'cli']) {
  new JsonFile(project, `${dir}/tsconfig.json`, {
    // local/lib is the built runner package (compile:local)
    obj: { extends: '../test/tsconfig.json', include: ['**/*.ts'], ...(dir === 'local' ? { exclude: ['lib', 'node_modules'] } : {}) },
    marker: false,
  });
}

for (const pattern of ['/bench/', '/local/', '/examples/', '/lambda/', '/cli/', '/rosetta/']) {
  project.addPackageIgnore(pattern);
}

// The acquire handler: bundled with esbuild at build time into assets/, loaded as an asset at synth.
// The AWS SDK v3 is taken from the Lambda runtime (see bench for the bundled-vs-runtime figures).
new awscdk.LambdaFunction(project, {
  entrypoint: 'lambda/rate-limiter/acquire.lambda.ts',
  constructFile: 'src/private/acquire-function.ts',
  constructName: 'AcquireFunction',
  cdkDeps: project.cdkDeps,
  runtime: awscdk.LambdaRuntime.NODEJS_24_X,
  bundlingOptions: {
    externals: ['@aws-sdk/*'],
    sourcemap: false,
  },
});

// The BufferedQueueConsumer dispatcher: shares the limiter's Limiter and store code (one implementation).
new awscdk.LambdaFunction(project, {
  entrypoint: 'lambda/dispatcher/dispatch.lambda.ts',
  constructFile: 'src/private/dispatch-function.ts',
  constructName: 'DispatchFunction',
  cdkDeps: project.cdkDeps,
  runtime: awscdk.LambdaRuntime.NODEJS_24_X,
  bundlingOptions: {
    externals: ['@aws-sdk/*'],
    sourcemap: false,
  },
});

// The BufferedQueueConsumer dead-letter reporter: fails the waiting executions of dead-lettered messages
// (SendTaskFailure DispatchFailed) and forwards the messages to the consumer's dead-letter queue.
new awscdk.LambdaFunction(project, {
  entrypoint: 'lambda/dead-letter-reporter/report.lambda.ts',
  constructFile: 'src/private/dead-letter-reporter-function.ts',
  constructName: 'DeadLetterReporterFunction',
  cdkDeps: project.cdkDeps,
  runtime: awscdk.LambdaRuntime.NODEJS_24_X,
  bundlingOptions: {
    externals: ['@aws-sdk/*'],
    sourcemap: false,
  },
});

// The ConcurrencyLimiter's function: acquire (or wait with the task token), release and hand on, expire, reap.
new awscdk.LambdaFunction(project, {
  entrypoint: 'lambda/concurrency-limiter/concurrency.lambda.ts',
  constructFile: 'src/private/concurrency-function.ts',
  constructName: 'ConcurrencyFunction',
  cdkDeps: project.cdkDeps,
  runtime: awscdk.LambdaRuntime.NODEJS_24_X,
  bundlingOptions: {
    externals: ['@aws-sdk/*'],
    sourcemap: false,
  },
});

// The CircuitBreaker's function: elect probes, record failures and probe successes (the state machine reads the
// breaker's item itself on the closed path).
new awscdk.LambdaFunction(project, {
  entrypoint: 'lambda/circuit-breaker/breaker.lambda.ts',
  constructFile: 'src/private/breaker-function.ts',
  constructName: 'BreakerFunction',
  cdkDeps: project.cdkDeps,
  runtime: awscdk.LambdaRuntime.NODEJS_24_X,
  bundlingOptions: {
    externals: ['@aws-sdk/*'],
    sourcemap: false,
  },
});

// The operators' CLI (`npx cdk-sfn-throttle limits ...`): one esbuild bundle with the AWS SDK inside, so the jsii
// package gains no runtime dependency.
project.bundler.addBundle('cli/limits.ts', { platform: 'node', target: 'node20', sourcemap: false, externals: [] });
project.addBins({ 'cdk-sfn-throttle': 'bin/cdk-sfn-throttle' });

for (const [k, v] of Object.entries(quietEnv)) {
  project.tasks.addEnvironment(k, v);
}

// Tests: `--ci` so snapshots are never written; a separate task updates them on purpose.
project.testTask.reset();
project.testTask.exec('jest --ci --coverage=false', { receiveArgs: true });
project.testTask.spawn(project.tasks.tryFind('eslint')!);

const updateSnapshots = project.addTask('test:update-snapshots', {
  description: 'Re-record jest snapshots (review the diff before committing)',
});
updateSnapshots.spawn(project.tasks.tryFind('bundle')!);
updateSnapshots.exec('jest --ci=false --updateSnapshot --coverage=false', { receiveArgs: true });

// `npm test` on a fresh clone: bundle the handlers, type-check with jsii, then jest + eslint.
// jsii compiles src/; jest type-checks what tests import. This checks the rest (handlers, runner, bench).
const typecheck = project.addTask('typecheck', {
  description: 'Type-check the handler, local runner, bench and example sources',
});
for (const dir of ['lambda', 'local', 'bench', 'examples', 'cli']) {
  typecheck.exec(`tsc --noEmit -p ${dir}/tsconfig.json`);
}

// The local runner for users: its own npm package, cdk-sfn-throttle-local, built from local/ (the runner the tests use),
// so its dependencies (dynalite, aws-local-stepfunctions, the SDK clients the Lambda runtime provides) never become
// dependencies of the jsii package. The manifest and build config are generated here; `compile:local` builds lib/.
const LOCAL_PACKAGE = 'cdk-sfn-throttle-local';
new JsonFile(project, 'local/package.json', {
  obj: {
    name: LOCAL_PACKAGE,
    version: '0.0.0',
    description: 'Runs synthesized Step Functions state machines offline: the real Lambda handler bundles, DynamoDB in dynalite, SQS in memory, task tokens, Distributed Map. For tests of cdk-sfn-throttle workflows (and any other).',
    license: 'Apache-2.0',
    keywords: ['cdk', 'stepfunctions', 'local', 'testing', 'cdk-sfn-throttle'],
    main: 'lib/local/index.js',
    types: 'lib/local/index.d.ts',
    bin: { [LOCAL_PACKAGE]: 'bin/cdk-sfn-throttle-local' },
    files: ['lib/', 'bin/', 'README.md'],
    engines: { node: '>= 20' },
    dependencies: {
      'aws-local-stepfunctions': '3.0.0',
      'dynalite': '4.0.0',
      '@aws-sdk/client-dynamodb': '^3',
      '@aws-sdk/client-lambda': '^3',
      '@aws-sdk/client-sfn': '^3',
      '@aws-sdk/client-sqs': '^3',
    },
    peerDependencies: { 'aws-cdk-lib': '^2.276.0', 'constructs': '^10.5.1' },
  },
});
new JsonFile(project, 'local/tsconfig.build.json', {
  obj: {
    extends: '../tsconfig.json',
    compilerOptions: { rootDir: '..', outDir: 'lib', declaration: true, noEmit: false, allowJs: true, sourceMap: false, inlineSourceMap: false, inlineSources: false },
    // the runner and its clock; the test doubles of this repo's benches (capacity and model-API stubs) stay out
    include: ['*.ts', '*.js', '../lambda/shared/clock.ts'],
    exclude: ['lib', 'capacity-stub.ts', 'model-api-stub.ts', 'package.json'],
  },
});
project.gitignore.exclude('/local/lib/');
const compileLocal = project.addTask('compile:local', {
  description: `Builds the ${LOCAL_PACKAGE} package (local/lib) from the runner sources`,
  exec: 'rm -rf local/lib && tsc -p local/tsconfig.build.json',
});

const ciTest = project.addTask('ci', {
  description: 'Everything CI runs: bundle handlers, compile with jsii, run all tests and lint',
});
ciTest.spawn(project.tasks.tryFind('bundle')!);
ciTest.spawn(project.compileTask);
ciTest.spawn(typecheck);
ciTest.spawn(compileLocal);
ciTest.spawn(project.testTask);

project.addTask('bench', {
  description: 'Benchmarks against a local DynamoDB emulator (prints figures)',
  steps: [
    { spawn: 'bundle' },
    // receiveArgs on the step: projen passes `npm run bench -- <name>` to a step's exec only
    { exec: 'ts-node --transpile-only --project bench/tsconfig.json bench/run.ts', receiveArgs: true },
  ],
});

project.addTask('demo', {
  description: 'Runs the shipping-API example locally: 100 orders through a 5 requests/s limit, charted (`npm run demo -- adaptive`: the adaptive limit)',
  steps: [
    { spawn: 'bundle' },
    { exec: 'ts-node --transpile-only --project examples/tsconfig.json examples/demo.ts', receiveArgs: true },
  ],
});

// README's props tables are generated from the assembly (test/readme.test.ts fails when they differ from it).
project.addTask('readme:props', {
  description: 'Rewrites the props tables of README.md from the built assembly (.jsii): run after `npx projen compile`',
  exec: 'ts-node --project projenrc/tsconfig.json projenrc/readme-props.ts',
});

// `npm test` is the README's test command and what .ci/run runs.
project.package.setScript('test', 'npx projen ci');

project.synth();
