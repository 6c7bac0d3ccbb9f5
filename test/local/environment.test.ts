import { App, Stack } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { holdPromiseWithResolvers, LocalEnvironment } from '../../local/environment';
import { LocalRunner } from '../../local/runner';

describe('LocalEnvironment', () => {
  test('restore() deletes the variables it added and gives changed ones their original values', () => {
    const env: Record<string, string | undefined> = { KEEP: 'k', CHANGE: 'before' };
    const layer = new LocalEnvironment(env);
    layer.set({ CHANGE: 'during', ADD: 'new' });
    expect(env).toEqual({ KEEP: 'k', CHANGE: 'during', ADD: 'new' });
    layer.restore();
    expect(env).toEqual({ KEEP: 'k', CHANGE: 'before' });
    expect(Object.keys(env)).toEqual(['KEEP', 'CHANGE']);
  });

  test('a variable set twice by one layer is restored to the value before the first set', () => {
    const env: Record<string, string | undefined> = { X: '0' };
    const layer = new LocalEnvironment(env);
    layer.set({ X: '1' });
    layer.set({ X: '2' });
    layer.restore();
    expect(env).toEqual({ X: '0' });
  });

  test('layers: the newest wins; restoring an older one first keeps the newer values; the last restore gives the originals', () => {
    const env: Record<string, string | undefined> = { SHARED: 'orig' };
    const first = new LocalEnvironment(env);
    first.set({ SHARED: 'first', ONLY_FIRST: '1' });
    const second = new LocalEnvironment(env);
    second.set({ SHARED: 'second', ONLY_SECOND: '2' });
    expect(env).toEqual({ SHARED: 'second', ONLY_FIRST: '1', ONLY_SECOND: '2' });
    first.restore();
    expect(env).toEqual({ SHARED: 'second', ONLY_SECOND: '2' });
    second.restore();
    expect(env).toEqual({ SHARED: 'orig' });
  });

  test('restoring the newer layer first falls back to the older one', () => {
    const env: Record<string, string | undefined> = {};
    const first = new LocalEnvironment(env);
    first.set({ V: 'first' });
    const second = new LocalEnvironment(env);
    second.set({ V: 'second' });
    second.restore();
    expect(env).toEqual({ V: 'first' });
    first.restore();
    expect(env).toEqual({});
  });

  test('restore() twice is harmless; set() after restore() throws', () => {
    const env: Record<string, string | undefined> = { A: 'a' };
    const layer = new LocalEnvironment(env);
    layer.set({ A: 'b' });
    layer.restore();
    env.A = 'changed later';
    layer.restore();
    expect(env).toEqual({ A: 'changed later' });
    expect(() => layer.set({ A: 'c' })).toThrow(/restored already/);
  });
});

describe('holdPromiseWithResolvers', () => {
  test('gives a working Promise.withResolvers while held and leaves Promise as it found it after the last release', async () => {
    const before = Object.getOwnPropertyDescriptor(Promise, 'withResolvers');
    const releaseA = holdPromiseWithResolvers();
    const releaseB = holdPromiseWithResolvers();
    const { promise, resolve } = (Promise as any).withResolvers();
    resolve(42);
    await expect(promise).resolves.toBe(42);
    releaseA();
    releaseA(); // a second release of the same hold does not count
    expect(typeof (Promise as any).withResolvers).toBe('function'); // B still holds it
    releaseB();
    expect(Object.getOwnPropertyDescriptor(Promise, 'withResolvers')).toEqual(before);
  });
});

function machineWithATask() {
  const app = new App();
  const stack = new Stack(app, 'Env', { env: { account: '123456789012', region: 'us-east-1' } });
  const call = new tasks.CallAwsService(stack, 'Call', { service: 'sts', action: 'getCallerIdentity', iamResources: ['*'], resultPath: '$.called' });
  const machine = new sfn.StateMachine(stack, 'Machine', { definitionBody: sfn.DefinitionBody.fromChainable(call) });
  return { stack, machine };
}

describe('LocalRunner and the process', () => {
  const globals = () => ({ env: { ...process.env }, withResolvers: Object.getOwnPropertyDescriptor(Promise, 'withResolvers') });

  test('no global is left changed after stop(): process.env exactly as before, Promise.withResolvers as before', async () => {
    // GIVEN a variable the runner changes that was set before, and one it adds that was not
    process.env.AWS_ENDPOINT_URL_SQS = 'http://sqs.before.invalid';
    delete process.env.AWS_ENDPOINT_URL_DYNAMODB;
    try {
      const before = globals();
      const { stack, machine } = machineWithATask();
      const runner = await LocalRunner.start(stack, machine, { taskHandlers: { Call: () => ({ ok: true }) } });
      try {
        // WHEN it runs (a Task state: aws-local-stepfunctions calls Promise.withResolvers)
        expect(process.env.AWS_ENDPOINT_URL_DYNAMODB).toBe(runner.db.endpoint);
        expect(process.env.AWS_ENDPOINT_URL_SQS).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
        expect(typeof (Promise as any).withResolvers).toBe('function');
        expect(await runner.run({})).toMatchObject({ status: 'SUCCEEDED', output: { called: { ok: true } } });
      } finally {
        await runner.stop();
      }
      // THEN
      const after = globals();
      expect(after.env).toEqual(before.env);
      expect(after.withResolvers).toEqual(before.withResolvers);
      expect(process.env.AWS_ENDPOINT_URL_SQS).toBe('http://sqs.before.invalid');
      expect('AWS_ENDPOINT_URL_DYNAMODB' in process.env).toBe(false);
    } finally {
      delete process.env.AWS_ENDPOINT_URL_SQS;
    }
  });

  test('two runners at once: stopping the first leaves the second its endpoints; stopping both restores everything', async () => {
    const before = globals();
    const a = machineWithATask();
    const b = machineWithATask();
    const first = await LocalRunner.start(a.stack, a.machine, { taskHandlers: { Call: () => 'a' } });
    let second: LocalRunner | undefined;
    try {
      second = await LocalRunner.start(b.stack, b.machine, { taskHandlers: { Call: () => 'b' } });
      expect(process.env.AWS_ENDPOINT_URL_DYNAMODB).toBe(second.db.endpoint);
      await first.stop();
      expect(process.env.AWS_ENDPOINT_URL_DYNAMODB).toBe(second.db.endpoint);
      expect(typeof (Promise as any).withResolvers).toBe('function');
      expect(await second.run({})).toMatchObject({ status: 'SUCCEEDED', output: { called: 'b' } });
    } finally {
      await first.stop();
      await second?.stop();
    }
    expect(globals()).toEqual(before);
  });

  test('a start that fails restores the process too', async () => {
    const before = globals();
    const { stack, machine } = machineWithATask();
    await expect(LocalRunner.start(stack, machine)).rejects.toThrow(/no handler for Task state "Call"/);
    expect(globals()).toEqual(before);
  });
});
