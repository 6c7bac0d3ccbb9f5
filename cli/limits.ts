// npx cdk-sfn-throttle limits get|set|clear|list --table <name> --limiter <name> [--key k] [--rate R] [--burst B]
// [--until <ISO time>]: reads and writes a limiter's override items (`<limiter>#config#<key>`) with the default AWS
// credential chain (AWS_ENDPOINT_URL_DYNAMODB points it at a local emulator). An esbuild bundle with the SDK inside:
// the construct package gains no runtime dependency. Writes are conditioned on the item as read, so two operators
// cannot interleave a half change; every command prints the limit in force before and after.
import { randomUUID } from 'crypto';
import {
  ConditionalCheckFailedException, DeleteItemCommand, DynamoDBClient, GetItemCommand, PutItemCommand, ScanCommand, type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { checkLimit, overrideItemKey, overrideUntilUs } from '../lambda/rate-limiter/limiter';
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

const USAGE = `usage: cdk-sfn-throttle limits <get|set|clear|list> --table <name> --limiter <name> [--key <key>] [--shards <n>]
  set:   --rate <per second> [--burst <n>] [--until <ISO 8601 time with zone>]  (burst and until kept from the
         override in force unless given; --burst deployed / --until none remove them)
  --shards: the limiter's shards (default 1): a burst below them is one the limiter would ignore
  the key defaults to "default"; AWS credentials and Region from the default chain`;

interface Override { ratePerSecond: number; burst?: number; until?: string; by?: string }

function parse(args: string[]): { cmd: string; opts: Record<string, string> } {
  const [group, cmd, ...rest] = args;
  if (group !== 'limits' || !cmd) throw new UsageError(USAGE);
  const opts: Record<string, string> = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument ${JSON.stringify(a)}\n${USAGE}`);
    const name = a.slice(2);
    if (!['table', 'limiter', 'key', 'rate', 'burst', 'until', 'shards'].includes(name)) throw new UsageError(`unknown option --${name}\n${USAGE}`);
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
    by: item[OverrideAttr.BY]?.S,
  };
}

function describe(o: Override | undefined, now: number, shards = 1): string {
  if (!o) return 'the deployed limit (no override)';
  // as the limiter reads it: an override it would ignore is not in force
  const problem = checkLimit(o.ratePerSecond, o.burst ?? shards, shards);
  const untilUs = o.until === undefined ? undefined : overrideUntilUs({ [OverrideAttr.UNTIL]: o.until });
  if (problem || untilUs === 'invalid') {
    return `the deployed limit (the limiter ignores this override: ${problem ?? `until ${JSON.stringify(o.until)} is not an ISO 8601 time`})`;
  }
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
    // the handler's own key rule (lambda/rate-limiter/request.ts): an override under any other key is never read
    if (key.length < 1 || key.length > 512) throw new UsageError(`--key must be 1 to 512 characters, got ${key.length}`);
    const shards = opts.shards === undefined ? 1 : Number(opts.shards);
    if (!Number.isInteger(shards) || shards < 1 || shards > 100) throw new UsageError(`--shards must be an integer from 1 to 100, got ${JSON.stringify(opts.shards)}`);
    const pk = overrideItemKey(limiter, key);
    // an unknown limiter: nothing of it in the table (no bucket, no override) — every page until the first item
    const known = await anyItem(io.client, table, `${limiter}#`);
    if (cmd === 'list') {
      if (!known) throw new UsageError(`limiter ${JSON.stringify(limiter)} has no items in table ${table}: is the name right?`);
      const all = await scanAll(io.client, table, `${limiter}#config#`);
      if (all.length === 0) io.out(`${limiter}: no overrides — every key at the deployed limit`);
      for (const item of all) io.out(`${item.pk.S!.slice(`${limiter}#config#`.length)}: ${describe(decode(item), io.now(), shards)}`);
      return 0;
    }
    if (!known && cmd !== 'set') throw new UsageError(`limiter ${JSON.stringify(limiter)} has no items in table ${table}: is the name right?`);
    if (!known) io.err(`warning: limiter ${JSON.stringify(limiter)} has no items in table ${table} yet (a new limiter, or a wrong name?)`);
    const read = await io.client.send(new GetItemCommand({ TableName: table, Key: { pk: { S: pk } }, ConsistentRead: true }));
    const before = decode(read.Item);
    if (cmd === 'get') {
      io.out(`${limiter} key ${key}: ${describe(before, io.now(), shards)}`);
      return 0;
    }
    if (cmd === 'set') {
      const rate = Number(opts.rate);
      if (opts.rate === undefined) throw new UsageError('set needs --rate');
      // kept from the override in force unless given (a set replaces the whole item)
      const burst = opts.burst === 'deployed' ? undefined : opts.burst !== undefined ? Number(opts.burst) : before?.burst;
      const problem = checkLimit(rate, burst ?? shards, shards);
      if (problem) throw new UsageError(`${problem.replace('ratePerSecond', '--rate').replace('burst', '--burst')}`);
      let until: string | undefined = opts.until === 'none' ? undefined : opts.until === undefined ? before?.until : undefined;
      if (opts.until !== undefined && opts.until !== 'none') {
        const t = Date.parse(opts.until);
        if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(opts.until) || !Number.isFinite(t)) {
          throw new UsageError(`--until must be an ISO 8601 time with its zone (2026-12-03T06:00:00Z), got ${JSON.stringify(opts.until)}`);
        }
        if (t <= io.now()) throw new UsageError(`--until ${opts.until} has passed`);
        until = new Date(t).toISOString();
      }
      io.out(`before: ${describe(before, io.now(), shards)}`);
      await io.client.send(new PutItemCommand({
        TableName: table,
        Item: {
          pk: { S: pk },
          [OverrideAttr.RATE_PER_SECOND]: { N: String(rate) },
          ...(burst !== undefined ? { [OverrideAttr.BURST]: { N: String(burst) } } : {}),
          ...(until ? { [OverrideAttr.UNTIL]: { S: until } } : {}),
          // a unique version: no writer can take a later item for the one it read (no ABA through a clear)
          [OverrideAttr.VERSION]: { S: randomUUID() },
          [OverrideAttr.BY]: { S: io.user },
        },
        ...conditionOn(read.Item),
      }));
      io.out(`after:  ${describe({ ratePerSecond: rate, burst, until, by: io.user }, io.now(), shards)} (each container reads it within 10 s)`);
      return 0;
    }
    if (cmd === 'clear') {
      io.out(`before: ${describe(before, io.now(), shards)}`);
      if (before) await io.client.send(new DeleteItemCommand({ TableName: table, Key: { pk: { S: pk } }, ...conditionOn(read.Item) }));
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

/**
 * Write only if the item is still exactly as read: absent, or every attribute equal (a workflow's or a schedule's
 * write in between — even one without a version — changes some attribute, a CLI's always its unique version).
 */
function conditionOn(item: Record<string, AttributeValue> | undefined) {
  if (!item) return { ConditionExpression: 'attribute_not_exists(pk)' };
  const names: Record<string, string> = {};
  const values: Record<string, AttributeValue> = {};
  const parts: string[] = [];
  const known = [OverrideAttr.RATE_PER_SECOND, OverrideAttr.BURST, OverrideAttr.UNTIL, OverrideAttr.VERSION, OverrideAttr.BY];
  known.forEach((attr, i) => {
    names[`#a${i}`] = attr;
    if (item[attr] === undefined) {
      parts.push(`attribute_not_exists(#a${i})`);
    } else {
      values[`:v${i}`] = item[attr];
      parts.push(`#a${i} = :v${i}`);
    }
  });
  return { ConditionExpression: parts.join(' AND '), ExpressionAttributeNames: names, ...(Object.keys(values).length > 0 ? { ExpressionAttributeValues: values } : {}) };
}

/** Whether any item's key starts with `prefix`: scanned page by page until the first. */
async function anyItem(client: DynamoDBClient, table: string, prefix: string): Promise<boolean> {
  let start: Record<string, AttributeValue> | undefined;
  do {
    const res = await client.send(new ScanCommand({
      TableName: table, FilterExpression: 'begins_with(pk, :p)', ExpressionAttributeValues: { ':p': { S: prefix } }, ProjectionExpression: 'pk', ExclusiveStartKey: start,
    }));
    if ((res.Items ?? []).length > 0) return true;
    start = res.LastEvaluatedKey;
  } while (start);
  return false;
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
