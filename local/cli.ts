// `npx cdk-sfn-throttle-local run`: synthesizes a CDK app (or reads a cloud assembly), runs N executions of one of its
// state machines locally at once, draws a progress bar, then charts per second the admissions its limiters granted
// (or the entries into a state you name) and ends non-zero if an execution did not succeed.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { perSecond, perSecondChart, progressBar, type TextOut } from './chart';
import { LocalRunner, type LocalRunnerOptions } from './runner';
import { nowUs } from './timing';

const USAGE = `usage: cdk-sfn-throttle-local run (--app "<cdk app command>" | --assembly <cdk.out>) --state-machine <construct path or logical id>
         [--stack <name>] [--input <file.json> | --input-json '<json>'] [--executions N] [--handlers <module.js>]
         [--chart-state <state name>] [--limit <per second, marked on the chart>] [--json]

  --app            the command that synthesizes your app (as in cdk.json), run with CDK_OUTDIR set to a temporary directory
  --assembly       a directory \`cdk synth\` wrote, instead of --app
  --state-machine  e.g. "Orders/Shipping Workflow" (its construct path) or its logical id (with --stack)
  --input          the execution input, a JSON file (each execution gets it; "$index" in a string becomes the execution's number)
  --executions     how many executions run at once (default 1)
  --handlers       a CommonJS module exporting any of taskHandlers, httpHandlers, functionHandlers, itemReaders (LocalRunnerOptions)
  --chart-state    chart the entries into this state per second instead of the limiters' admissions
  --json           print one JSON line per execution (status, output, error) after the chart`;

export interface CliArgs {
  readonly app?: string;
  readonly assembly?: string;
  readonly stateMachine: string;
  readonly stack?: string;
  readonly input: unknown;
  readonly executions: number;
  readonly handlers?: string;
  readonly chartState?: string;
  readonly limit?: number;
  readonly json: boolean;
}

/** A command line the CLI cannot run: exit 2 with the usage. */
export class UsageError extends Error {
  public readonly name = 'UsageError';
}

export function parseArgs(argv: readonly string[]): CliArgs {
  const [command, ...rest] = argv;
  if (command !== 'run') throw new UsageError(command === undefined ? 'no command' : `unknown command "${command}"`);
  const flags = new Map<string, string | true>();
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument "${a}"`);
    const [name, inline] = a.slice(2).split(/=(.*)/s, 2);
    if (name === 'json') {flags.set(name, true);} else {
      const value = inline ?? rest[++i];
      if (value === undefined) throw new UsageError(`--${name} needs a value`);
      flags.set(name, value);
    }
  }
  const known = ['app', 'assembly', 'state-machine', 'stack', 'input', 'input-json', 'executions', 'handlers', 'chart-state', 'limit', 'json'];
  const unknown = [...flags.keys()].filter((k) => !known.includes(k));
  if (unknown.length > 0) throw new UsageError(`unknown option --${unknown[0]}`);
  const str = (k: string) => (flags.has(k) ? String(flags.get(k)) : undefined);
  if (!str('app') === !str('assembly')) throw new UsageError('give one of --app and --assembly');
  const stateMachine = str('state-machine');
  if (!stateMachine) throw new UsageError('--state-machine is required');
  const executions = Number(str('executions') ?? 1);
  if (!Number.isInteger(executions) || executions < 1 || executions > 100_000) throw new UsageError(`--executions must be an integer 1 to 100000, got ${str('executions')}`);
  const limit = str('limit') === undefined ? undefined : Number(str('limit'));
  if (limit !== undefined && !(limit > 0)) throw new UsageError(`--limit must be a number above 0, got ${str('limit')}`);
  let input: unknown = {};
  try {
    if (str('input') !== undefined) input = JSON.parse(fs.readFileSync(str('input')!, 'utf8'));
    else if (str('input-json') !== undefined) input = JSON.parse(str('input-json')!);
  } catch (err) {
    throw new UsageError(`the input is not JSON: ${(err as Error).message}`);
  }
  return { app: str('app'), assembly: str('assembly'), stateMachine, stack: str('stack'), input, executions, handlers: str('handlers'), chartState: str('chart-state'), limit, json: flags.has('json') };
}

/** The input of execution `index` (1-based): every "$index" in a string replaced by it. */
export function inputFor(input: unknown, index: number): unknown {
  return JSON.parse(JSON.stringify(input), (_k, v) => (typeof v === 'string' ? v.split('$index').join(String(index)) : v));
}

/** Runs the app command with CDK_OUTDIR set; returns the directory it wrote. */
function synthesize(app: string, cwd: string): string {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'cdk-sfn-throttle-local-'));
  const r = spawnSync(app, { cwd, shell: true, stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, CDK_OUTDIR: outdir } });
  if (r.status !== 0) throw new Error(`the app command "${app}" failed (exit ${r.status ?? r.signal})`);
  if (!fs.existsSync(path.join(outdir, 'manifest.json'))) throw new Error(`the app command "${app}" wrote no cloud assembly (does it call app.synth()?)`);
  return outdir;
}

/** Runs the CLI; returns the exit code (0: every execution succeeded, 1: some did not, 2: bad usage or setup). */
export async function main(argv: readonly string[], out: TextOut = process.stdout, err: TextOut = process.stderr): Promise<number> {
  let args: CliArgs;
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    err.write(`${e.message}\n${USAGE}\n`);
    return 2;
  }
  const started = nowUs();
  const cwd = process.cwd();
  let synthesized: string | undefined;
  let runner: LocalRunner;
  try {
    const assembly = args.assembly ? path.resolve(cwd, args.assembly) : (synthesized = synthesize(args.app!, cwd));
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const handlers: LocalRunnerOptions = args.handlers ? require(path.resolve(cwd, args.handlers)) : {};
    runner = await LocalRunner.fromAssembly(assembly, args.stateMachine, {
      stack: args.stack,
      dynamoDbProcess: true,
      taskHandlers: handlers.taskHandlers,
      httpHandlers: handlers.httpHandlers,
      functionHandlers: handlers.functionHandlers,
      itemReaders: handlers.itemReaders,
    });
  } catch (e) {
    err.write(`cdk-sfn-throttle-local: ${(e as Error).name}: ${(e as Error).message}\n`);
    if (synthesized) fs.rmSync(synthesized, { recursive: true, force: true });
    return 2;
  }
  out.write(`${args.stateMachine}: ${args.executions} execution${args.executions === 1 ? '' : 's'} at once, locally (ready in ${((nowUs() - started) / 1e6).toFixed(1)} s)\n`);
  const entries: number[] = [];
  // Handlers log (the limiter's EMF lines) to stdout: muted while the executions run, the bar keeps the terminal.
  const saved = process.stdout.write;
  const realWrite = out.write.bind(out);
  const bar = progressBar({ write: (s: string) => realWrite(s), isTTY: out.isTTY }, args.executions, 'executions', () => `${runner.grants.length} admissions`);
  (process.stdout as any).write = () => true;
  let results;
  try {
    results = await Promise.all(Array.from({ length: args.executions }, async (_, i) => {
      const r = await runner.run(inputFor(args.input, i + 1));
      if (args.chartState) for (const e of r.events) if (e.type === 'StateEntered' && e.stateName === args.chartState) entries.push(e.timestamp * 1000);
      bar.tick(r.status !== 'SUCCEEDED');
      return r;
    }));
  } finally {
    process.stdout.write = saved;
    await runner.stop();
    if (synthesized) fs.rmSync(synthesized, { recursive: true, force: true });
  }
  bar.end();
  const times = args.chartState ? entries : runner.grants.map((g) => g.atUs);
  const what = args.chartState ? `entries into "${args.chartState}"` : 'admissions granted by the limiters';
  out.write(`\n${what} per second${args.limit !== undefined ? ` (${args.limit} per second marked │)` : ''}:\n`);
  out.write(times.length > 0 ? perSecondChart(perSecond(times), args.limit) : '  none\n');
  const byStatus = new Map<string, number>();
  for (const r of results) byStatus.set(r.status, (byStatus.get(r.status) ?? 0) + 1);
  out.write(`\n${[...byStatus].map(([s, n]) => `${n} ${s}`).join(', ')} in ${((nowUs() - started) / 1e6).toFixed(1)} s\n`);
  const firstFailure = results.find((r) => r.status !== 'SUCCEEDED');
  if (firstFailure) out.write(`first failure: ${firstFailure.error}: ${String(firstFailure.cause).slice(0, 400)}\n`);
  if (args.json) for (const r of results) out.write(`${JSON.stringify({ name: r.name, status: r.status, output: r.output, error: r.error, cause: r.cause })}\n`);
  return firstFailure ? 1 : 0;
}
