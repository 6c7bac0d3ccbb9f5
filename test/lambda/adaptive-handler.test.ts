import { GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { type LocalDynamoDb, startDynalite } from '../../local/dynalite';
import { loadAcquireHandler } from '../support/handler';

// The acquire handler's adaptive paths against dynalite: the backoff step of a RateLimitedTask reports its retried
// errors named as signals, a decrease event (an alarm's) lowers the default key, and a signal that cannot be applied
// never costs the task its retry.

describe('acquire handler: throttling signals (dynalite)', () => {
  let db: LocalDynamoDb;
  let adaptive: (e: unknown) => Promise<any>;
  let fixed: (e: unknown) => Promise<any>;
  let stdout: jest.SpyInstance;
  let stderr: jest.SpyInstance;
  const lines: any[] = [];
  const iv = async (key: string) => Number((await db.client.send(new GetItemCommand({ TableName: 'limits', Key: { pk: { S: `t#bucket#${key}#0` } } }))).Item?.iv?.N);
  const retry = { maxAttempts: 3, intervalMs: 0, backoffRate: 1, maxDelayMs: 0, jitter: false, errors: ['Partner.Throttled', 'Partner.Flaky'] };
  const backoff = (error: string, key = 'k', signals = ['Partner.Throttled']) => ({
    phase: 'backoff',
    task: 'Call Backoff',
    key,
    retry,
    signals,
    input: { order: 1, cdkSfnThrottleError: { Error: error, Cause: 'c' } },
  });

  beforeAll(async () => {
    db = await startDynalite();
    await db.createTable('limits');
    const env = {
      AWS_ENDPOINT_URL_DYNAMODB: db.endpoint,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'x',
      AWS_SECRET_ACCESS_KEY: 'x',
      TABLE_NAME: 'limits',
      LIMITER_NAME: 't',
      RATE_PER_SECOND: '10',
      BURST: '2',
      SHARDS: '1',
      MAX_WAIT_MS: '1000',
    };
    fixed = loadAcquireHandler(env);
    const config = { minRatePerSecond: 1, decreaseFactor: 0.5, increasePerSecond: 0.1, maxReservationMs: 1000 };
    adaptive = loadAcquireHandler({ ...env, ADAPTIVE: JSON.stringify(config) });
    delete process.env.ADAPTIVE;
    stdout = jest.spyOn(process.stdout, 'write').mockImplementation((c: any) => {
      for (const l of String(c).split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      return true;
    });
    stderr = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  });
  afterAll(async () => {
    stdout.mockRestore();
    stderr.mockRestore();
    await db.stop();
  });

  test('a signal lowers the key\'s rate and the retry goes on; a retried error that is not a signal, or the library\'s own, does not', async () => {
    // GIVEN a key taken at 10/s (interval 100 ms)
    await adaptive({ key: 'k' });
    expect(await iv('k')).toBe(100_000);
    // WHEN a retried error that is not a signal comes back, THEN the rate stays
    expect(await adaptive(backoff('Partner.Flaky'))).toMatchObject({ attempt: 2 });
    expect(await iv('k')).toBe(100_000);
    // WHEN the library's own error comes back (matched by the States.ALL wildcard), THEN the rate stays
    await expect(adaptive(backoff('RateLimitExceeded', 'k', ['States.ALL']))).rejects.toMatchObject({ name: 'RateLimitExceeded' });
    expect(await iv('k')).toBe(100_000);
    // WHEN a signal comes back, THEN 10/s → 5/s, the task is retried, and the EMF line counts the signal and the decrease
    expect(await adaptive(backoff('Partner.Throttled'))).toMatchObject({ attempt: 2, input: { order: 1 } });
    expect(await iv('k')).toBe(200_000);
    const signalLines = lines.filter((l) => l.ThrottleSignals === 1);
    expect(signalLines.map((l) => [l.Key, l.RateDecreases, l.LimitInForce])).toEqual([['k', 1, 5]]);
    // AND an error the policy does not retry is raised under its own name
    await expect(adaptive(backoff('Partner.BadRequest'))).rejects.toMatchObject({ name: 'Partner.BadRequest' });
  });

  test('a decrease event (an alarm) lowers the default key; a fixed limiter refuses it', async () => {
    await adaptive({});
    expect(await adaptive({ phase: 'decrease', key: 'default' })).toMatchObject({ decreased: true, ratePerSecond: 5, key: 'default' });
    // a second within the second: the same congestion
    expect(await adaptive({ phase: 'decrease', key: 'default' })).toMatchObject({ decreased: false, ratePerSecond: 5 });
    await expect(fixed({ phase: 'decrease', key: 'default' })).rejects.toMatchObject({ name: 'InvalidAcquireRequest' });
  });

  test('a signal that cannot be applied (an override item of another format) loses the signal, not the task\'s retry', async () => {
    await db.client.send(new PutItemCommand({ TableName: 'limits', Item: { pk: { S: 't#config#v2' }, ratePerSecond: { N: '5' }, v: { N: '2' } } }));
    expect(await adaptive(backoff('Partner.Throttled', 'v2'))).toMatchObject({ attempt: 2 });
    expect(stderr.mock.calls.map((c) => String(c[0])).join('')).toContain('throttling signal for key \\"v2\\" not applied');
  });
});
