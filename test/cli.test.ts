import { execFile } from 'child_process';
import * as path from 'path';
import { promisify } from 'util';
import { GetItemCommand, PutItemCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { run } from '../cli/limits';
import { type LocalDynamoDb, startDynalite } from '../local/dynalite';

// The operators' CLI against a local DynamoDB: every subcommand, bad input exits non-zero and writes nothing, and the
// built bin (the esbuild bundle with the SDK inside) runs as users run it.

const TABLE = 'limits';
let db: LocalDynamoDb;

beforeAll(async () => {
  db = await startDynalite();
  await db.createTable(TABLE);
  // a limiter that has admitted something: its bucket item
  await db.client.send(new PutItemCommand({ TableName: TABLE, Item: { pk: { S: 'api#bucket#default#0' }, tat: { N: '1' } } }));
});
afterAll(async () => db.stop());

async function cli(...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run(args, { out: (l) => out.push(l), err: (l) => err.push(l), client: db.client, now: () => Date.parse('2026-12-02T12:00:00Z'), user: 'cli:test' });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

async function items(prefix: string) {
  const res = await db.client.send(new ScanCommand({ TableName: TABLE }));
  return (res.Items ?? []).filter((i) => i.pk.S!.startsWith(prefix));
}

describe('cdk-sfn-throttle limits', () => {
  test('set, get, list, clear: the limit in force before and after each', async () => {
    expect(await cli('limits', 'get', '--table', TABLE, '--limiter', 'api')).toMatchObject({ code: 0, out: 'api key default: the deployed limit (no override)' });
    const set = await cli('limits', 'set', '--table', TABLE, '--limiter', 'api', '--key', 'acme', '--rate', '2', '--burst', '4', '--until', '2026-12-03T06:00:00Z');
    expect(set).toMatchObject({ code: 0 });
    expect(set.out).toBe('before: the deployed limit (no override)\nafter:  2/s, burst 4, until 2026-12-03T06:00:00.000Z (set by cli:test) (each container reads it within 10 s)');
    const item = await db.client.send(new GetItemCommand({ TableName: TABLE, Key: { pk: { S: 'api#config#acme' } } }));
    expect(item.Item).toMatchObject({ ratePerSecond: { N: '2' }, burst: { N: '4' }, until: { S: '2026-12-03T06:00:00.000Z' }, ver: { S: expect.any(String) }, by: { S: 'cli:test' } });
    expect((await cli('limits', 'get', '--table', TABLE, '--limiter', 'api', '--key', 'acme')).out).toBe('api key acme: 2/s, burst 4, until 2026-12-03T06:00:00.000Z (set by cli:test)');
    // set again with only a rate: the burst and until in force are kept (a new unique version)
    expect((await cli('limits', 'set', '--table', TABLE, '--limiter', 'api', '--key', 'acme', '--rate', '3')).code).toBe(0);
    const again = (await db.client.send(new GetItemCommand({ TableName: TABLE, Key: { pk: { S: 'api#config#acme' } } }))).Item!;
    expect(again).toMatchObject({ ratePerSecond: { N: '3' }, burst: { N: '4' }, until: { S: '2026-12-03T06:00:00.000Z' } });
    expect(again.ver).not.toEqual(item.Item!.ver);
    // and removed on purpose
    expect((await cli('limits', 'set', '--table', TABLE, '--limiter', 'api', '--key', 'acme', '--rate', '3', '--burst', 'deployed', '--until', 'none')).code).toBe(0);
    expect((await cli('limits', 'list', '--table', TABLE, '--limiter', 'api')).out).toBe('acme: 3/s, burst as deployed (set by cli:test)');
    const cleared = await cli('limits', 'clear', '--table', TABLE, '--limiter', 'api', '--key', 'acme');
    expect(cleared.out).toBe('before: 3/s, burst as deployed (set by cli:test)\nafter:  the deployed limit (no override; each container reads it within 10 s)');
    expect(await items('api#config#')).toEqual([]);
  });

  test('an expired override reads as the deployed limit', async () => {
    await db.client.send(new PutItemCommand({ TableName: TABLE, Item: { pk: { S: 'api#config#old' }, ratePerSecond: { N: '1' }, until: { S: '2026-12-01T00:00:00Z' }, ver: { N: '1' } } }));
    expect((await cli('limits', 'get', '--table', TABLE, '--limiter', 'api', '--key', 'old')).out).toBe('api key old: the deployed limit (the override of 1/s expired at 2026-12-01T00:00:00Z)');
    await cli('limits', 'clear', '--table', TABLE, '--limiter', 'api', '--key', 'old');
  });

  test.each([
    ['a negative rate', ['--rate', '-1'], /--rate must be from 0.001/],
    ['a fractional burst', ['--rate', '1', '--burst', '1.5'], /--burst must be an integer/],
    ['a malformed time', ['--rate', '1', '--until', 'tomorrow'], /--until must be an ISO 8601 time .*got "tomorrow"/],
    ['a time without its zone', ['--rate', '1', '--until', '2026-12-03T06:00:00'], /--until must be an ISO 8601 time with its zone/],
    ['a burst below the limiter\'s shards', ['--rate', '5', '--burst', '2', '--shards', '4'], /--burst must be an integer from shards \(4\)/],
    ['a time that has passed', ['--rate', '1', '--until', '2026-01-01T00:00:00Z'], /--until 2026-01-01T00:00:00Z has passed/],
    ['no rate', [], /set needs --rate/],
    ['an unknown option', ['--rate', '1', '--rat', '2'], /unknown option --rat/],
  ])('set with %s: exit 2, a clear message, nothing written', async (_n, extra, message) => {
    const r = await cli('limits', 'set', '--table', TABLE, '--limiter', 'api', '--key', 'bad', ...extra);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
    expect(await items('api#config#')).toEqual([]);
  });

  test('an empty key, an override the limiter would ignore (shown as such), a workflow\'s write in between (refused)', async () => {
    expect(await cli('limits', 'set', '--table', TABLE, '--limiter', 'api', '--key', '', '--rate', '1')).toMatchObject({ code: 2, err: expect.stringMatching(/--key must be 1 to 512 characters/) });
    await db.client.send(new PutItemCommand({ TableName: TABLE, Item: { pk: { S: 'api#config#odd' }, ratePerSecond: { N: '1' }, until: { S: '1767225600000' } } }));
    expect((await cli('limits', 'get', '--table', TABLE, '--limiter', 'api', '--key', 'odd')).out).toMatch(/the deployed limit \(the limiter ignores this override: until "1767225600000" is not an ISO 8601 time\)/);
    await db.client.send(new PutItemCommand({ TableName: TABLE, Item: { pk: { S: 'api#config#odd' }, ratePerSecond: { N: '5' }, by: { S: 'schedule:Day' } } }));
    // a workflow writes (no version) after the CLI read: the CLI's write is refused
    const code = await run(['limits', 'set', '--table', TABLE, '--limiter', 'api', '--key', 'odd', '--rate', '500'], {
      out: () => undefined,
      err: () => undefined,
      client: {
        send: async (c: any) => {
          const res = await db.client.send(c);
          if (c instanceof GetItemCommand) {
            await db.client.send(new PutItemCommand({ TableName: TABLE, Item: { pk: { S: 'api#config#odd' }, ratePerSecond: { N: '1' }, by: { S: 'arn:aws:states:execution' } } }));
          }
          return res;
        },
      } as any,
      now: () => Date.parse('2026-12-02T12:00:00Z'),
      user: 'cli:slow',
    });
    expect(code).toBe(3);
    expect((await db.client.send(new GetItemCommand({ TableName: TABLE, Key: { pk: { S: 'api#config#odd' } } }))).Item?.ratePerSecond).toEqual({ N: '1' });
    await cli('limits', 'clear', '--table', TABLE, '--limiter', 'api', '--key', 'odd');
  });

  test('an unknown limiter, a missing table option, an unknown command: non-zero, nothing written', async () => {
    expect(await cli('limits', 'get', '--table', TABLE, '--limiter', 'nope')).toMatchObject({ code: 2, err: expect.stringMatching(/limiter "nope" has no items in table limits/) });
    expect(await cli('limits', 'list', '--limiter', 'api')).toMatchObject({ code: 2, err: expect.stringMatching(/--table is required/) });
    expect(await cli('limits', 'drop', '--table', TABLE, '--limiter', 'api')).toMatchObject({ code: 2, err: expect.stringMatching(/unknown command "drop"/) });
    expect(await cli('limits', 'get', '--table', 'missing', '--limiter', 'api')).toMatchObject({ code: 1, err: expect.stringMatching(/ResourceNotFoundException/) });
    expect(await items('nope#')).toEqual([]);
  });

  test('two operators: a write based on a stale read is refused (exit 3), nothing half-changed', async () => {
    await cli('limits', 'set', '--table', TABLE, '--limiter', 'api', '--key', 'race', '--rate', '5');
    // another operator changed it after this one read it: simulate by bumping the version between read and write
    const slow = run(['limits', 'set', '--table', TABLE, '--limiter', 'api', '--key', 'race', '--rate', '7'], {
      out: () => undefined,
      err: () => undefined,
      client: {
        send: async (cmd: any) => {
          const res = await db.client.send(cmd);
          if (cmd instanceof GetItemCommand) {
            await db.client.send(new PutItemCommand({ TableName: TABLE, Item: { pk: { S: 'api#config#race' }, ratePerSecond: { N: '6' }, ver: { N: '9' } } }));
          }
          return res;
        },
      } as any,
      now: () => Date.parse('2026-12-02T12:00:00Z'),
      user: 'cli:slow',
    });
    expect(await slow).toBe(3);
    expect((await db.client.send(new GetItemCommand({ TableName: TABLE, Key: { pk: { S: 'api#config#race' } } }))).Item?.ratePerSecond).toEqual({ N: '6' });
    await cli('limits', 'clear', '--table', TABLE, '--limiter', 'api', '--key', 'race');
  });

  test('the built bin (the bundle, SDK inside) against the emulator through AWS_ENDPOINT_URL_DYNAMODB', async () => {
    const bin = path.join(__dirname, '..', 'bin', 'cdk-sfn-throttle');
    const env = { ...process.env, AWS_ENDPOINT_URL_DYNAMODB: db.endpoint, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'local', AWS_SECRET_ACCESS_KEY: 'local' };
    const { stdout } = await promisify(execFile)(process.execPath, [bin, 'limits', 'set', '--table', TABLE, '--limiter', 'api', '--key', 'bin', '--rate', '9'], { env });
    expect(stdout).toContain('after:  9/s');
    const failed = await promisify(execFile)(process.execPath, [bin, 'limits', 'set', '--table', TABLE, '--limiter', 'api', '--rate', '-3'], { env }).catch((e) => e);
    expect(failed.code).toBe(2);
    expect(failed.stderr).toMatch(/--rate must be from 0.001/);
    await cli('limits', 'clear', '--table', TABLE, '--limiter', 'api', '--key', 'bin');
  });
});
