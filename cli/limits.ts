// npx cdk-sfn-throttle limits get|set|clear|list --table <name> --limiter <name> [--key k] [--rate R] [--burst B]
// [--until <ISO time>]: reads and writes a limiter's override items (`<limiter>#config#<key>`) with the default AWS
// credential chain (AWS_ENDPOINT_URL_DYNAMODB points it at a local emulator). An esbuild bundle with the SDK inside:
// the construct package gains no runtime dependency. Writes are conditioned on the item as read, so two operators
// cannot interleave a half change; every command prints the limit in force before and after.
import {
  ConditionalCheckFailedException, DeleteItemCommand, DynamoDBClient, GetItemCommand, PutItemCommand, ScanCommand, type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { checkLimit, overrideItemKey } from '../lambda/rate-limiter/limiter';
import { OverrideAttr } from '../src/private/contract';

export interface CliIo {
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
  readonly client: DynamoDBClient;
  readonly now: () => number;
  /** Who writes (recorded in the item). */
  readonly user: string;
}

class UsageError extends Error {}

const USAGE = `usage: cdk-sfn-throttle limits <get|set|clear|list> --table <name> --limiter <name> [--key <key>]
  set:   --rate <per second> [--burst <n>] [--until <ISO 8601 time>]
  the key defaults to "default"; AWS credentials and Region from the default chain`;

interface Override { ratePerSecond: number; burst?: number; until?: string; ver: number; by?: string }

function parse(args: string[]): { cmd: string; opts: Record<string, string> } {
  const [group, cmd, ...rest] = args;
  if (group !== 'limits' || !cmd) throw new UsageError(USAGE);
  const opts: Record<string, string> = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument ${JSON.stringify(a)}\n${USAGE}`);
    const name = a.slice(2);
    if (!['table', 'limiter', 'key', 'rate', 'burst', 'until'].includes(name)) throw new UsageError(`unknown option --${name}\n${USAGE}`);
    const value = rest[++i];
    if (value === undefined) throw new UsageError(`--${name} needs a value`);
    opts[name] = value;
  }
  for (const required of ['table', 'limiter']) if (!opts[required]) throw new UsageError(`--${required} is required\n${USAGE}`);
  return { cmd, opts };
}

function decode(item: Record<string, AttributeValue> | undefined): Override | undefined {
  if (!item) return undefined;
  return {
    ratePerSecond: Number(item[OverrideAttr.RATE_PER_SECOND]?.N),
    burst: item[OverrideAttr.BURST]?.N !== undefined ? Number(item[OverrideAttr.BURST].N) : undefined,
    until: item[OverrideAttr.UNTIL]?.S,
    ver: Number(item[OverrideAttr.VERSION]?.N ?? 0),
    by: item[OverrideAttr.BY]?.S,
  };
}

function describe(o: Override | undefined, now: number): string {
  if (!o) return 'the deployed limit (no override)';
  const until = o.until ? Date.parse(o.until) : undefined;
  if (until !== undefined && until <= now) return `the deployed limit (the override of ${o.ratePerSecond}/s expired at ${o.until})`;
  return `${o.ratePerSecond}/s, burst ${o.burst ?? 'as deployed'}${o.until ? `, until ${o.until}` : ''}${o.by ? ` (set by ${o.by})` : ''}`;
}

/** Runs one command; returns the exit code. */
export async function run(args: string[], io: CliIo): Promise<number> {
  try {
    const { cmd, opts } = parse(args);
    const table = opts.table;
    const limiter = opts.limiter;
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(limiter)) throw new UsageError(`--limiter must be 1 to 64 letters, digits, ., - or _, got ${JSON.stringify(limiter)}`);
    const key = opts.key ?? 'default';
    const pk = overrideItemKey(limiter, key);
    // an unknown limiter: nothing of it in the table (no bucket, no override)
    const known = await io.client.send(new ScanCommand({
      TableName: table, FilterExpression: 'begins_with(pk, :p)', ExpressionAttributeValues: { ':p': { S: `${limiter}#` } }, ProjectionExpression: 'pk',
    }));
    if (cmd === 'list') {
      const all = await scanAll(io.client, table, `${limiter}#config#`);
      if ((known.Items ?? []).length === 0 && all.length === 0) throw new UsageError(`limiter ${JSON.stringify(limiter)} has no items in table ${table}: is the name right?`);
      if (all.length === 0) io.out(`${limiter}: no overrides — every key at the deployed limit`);
      for (const item of all) io.out(`${item.pk.S!.slice(`${limiter}#config#`.length)}: ${describe(decode(item), io.now())}`);
      return 0;
    }
    if ((known.Items ?? []).length === 0 && cmd !== 'set') {
      throw new UsageError(`limiter ${JSON.stringify(limiter)} has no items in table ${table}: is the name right?`);
    }
    const read = await io.client.send(new GetItemCommand({ TableName: table, Key: { pk: { S: pk } }, ConsistentRead: true }));
    const before = decode(read.Item);
    if (cmd === 'get') {
      io.out(`${limiter} key ${key}: ${describe(before, io.now())}`);
      return 0;
    }
    if (cmd === 'set') {
      const rate = Number(opts.rate);
      if (opts.rate === undefined) throw new UsageError('set needs --rate');
      const burst = opts.burst !== undefined ? Number(opts.burst) : undefined;
      const problem = checkLimit(rate, burst ?? 1, 1);
      if (problem) throw new UsageError(`${problem.replace('ratePerSecond', '--rate').replace('burst', '--burst')}`);
      let until: string | undefined;
      if (opts.until !== undefined) {
        const t = Date.parse(opts.until);
        if (!/^\d{4}-\d{2}-\d{2}T/.test(opts.until) || !Number.isFinite(t)) throw new UsageError(`--until must be an ISO 8601 time (2026-12-03T06:00:00Z), got ${JSON.stringify(opts.until)}`);
        if (t <= io.now()) throw new UsageError(`--until ${opts.until} has passed`);
        until = new Date(t).toISOString();
      }
      io.out(`before: ${describe(before, io.now())}`);
      await io.client.send(new PutItemCommand({
        TableName: table,
        Item: {
          pk: { S: pk },
          [OverrideAttr.RATE_PER_SECOND]: { N: String(rate) },
          ...(burst !== undefined ? { [OverrideAttr.BURST]: { N: String(burst) } } : {}),
          ...(until ? { [OverrideAttr.UNTIL]: { S: until } } : {}),
          [OverrideAttr.VERSION]: { N: String((before?.ver ?? 0) + 1) },
          [OverrideAttr.BY]: { S: io.user },
        },
        ...conditionOn(before),
      }));
      io.out(`after:  ${describe({ ratePerSecond: rate, burst, until, ver: 0, by: io.user }, io.now())} (each container reads it within 10 s)`);
      return 0;
    }
    if (cmd === 'clear') {
      io.out(`before: ${describe(before, io.now())}`);
      if (before) await io.client.send(new DeleteItemCommand({ TableName: table, Key: { pk: { S: pk } }, ...conditionOn(before) }));
      io.out('after:  the deployed limit (no override; each container reads it within 10 s)');
      return 0;
    }
    throw new UsageError(`unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(err.message);
      return 2;
    }
    if (err instanceof ConditionalCheckFailedException || (err as Error)?.name === 'ConditionalCheckFailedException') {
      io.err('the override changed since it was read (another operator?): nothing written — run the command again');
      return 3;
    }
    io.err(`failed: ${(err as Error)?.name}: ${(err as Error)?.message}`);
    return 1;
  }
}

/** Write only if the item is still as read: absent, or at the version read. */
function conditionOn(before: Override | undefined) {
  return before
    ? { ConditionExpression: '#ver = :ver OR (attribute_exists(pk) AND attribute_not_exists(#ver) AND :ver = :zero)', ExpressionAttributeNames: { '#ver': OverrideAttr.VERSION }, ExpressionAttributeValues: { ':ver': { N: String(before.ver) }, ':zero': { N: '0' } } }
    : { ConditionExpression: 'attribute_not_exists(pk)' };
}

async function scanAll(client: DynamoDBClient, table: string, prefix: string): Promise<Record<string, AttributeValue>[]> {
  const items: Record<string, AttributeValue>[] = [];
  let start: Record<string, AttributeValue> | undefined;
  do {
    const res = await client.send(new ScanCommand({ TableName: table, FilterExpression: 'begins_with(pk, :p)', ExpressionAttributeValues: { ':p': { S: prefix } }, ExclusiveStartKey: start }));
    items.push(...(res.Items ?? []));
    start = res.LastEvaluatedKey;
  } while (start);
  return items.sort((a, b) => a.pk.S!.localeCompare(b.pk.S!));
}

/** The command line: `bin/cdk-sfn-throttle` calls it. */
export function main(argv: string[] = process.argv.slice(2)): Promise<void> {
  return run(argv, {
    out: (l) => process.stdout.write(`${l}\n`),
    err: (l) => process.stderr.write(`${l}\n`),
    client: new DynamoDBClient({}),
    now: () => Date.now(),
    user: `cli:${process.env.USER ?? 'unknown'}`,
  }).then((code) => { process.exitCode = code; });
}
