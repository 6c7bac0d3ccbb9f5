import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { buildSync } from 'esbuild';
import { percentile } from './stats';
import type { LocalDynamoDb } from '../local/dynalite';

const ENTRY = path.join(__dirname, '..', 'lambda', 'rate-limiter', 'acquire.lambda.ts');
const CHILD = path.join(__dirname, 'handler-child.js');

interface Variant {
  readonly name: string;
  readonly file: string;
  readonly bytes: number;
}

/** Bundles the handler twice: AWS SDK v3 taken from the runtime (what ships) and bundled in. */
export function buildVariants(dir: string): Variant[] {
  const variants: Variant[] = [];
  for (const [name, external] of [['SDK from runtime (shipped)', ['@aws-sdk/*']], ['SDK bundled', []]] as const) {
    const file = path.join(dir, `${external.length ? 'external' : 'bundled'}.js`);
    buildSync({ entryPoints: [ENTRY], bundle: true, platform: 'node', target: 'node24', outfile: file, external: [...external], logLevel: 'error' });
    variants.push({ name, file, bytes: fs.statSync(file).size });
  }
  return variants;
}

export function measureVariants(db: LocalDynamoDb, table: string): Record<string, string | number>[] {
  const env = {
    ...process.env,
    AWS_ENDPOINT_URL_DYNAMODB: db.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'bench',
    AWS_SECRET_ACCESS_KEY: 'bench',
    TABLE_NAME: table,
    LIMITER_NAME: 'bundle-bench',
    RATE_PER_SECOND: '100000',
    BURST: '100000',
    SHARDS: '1',
    MAX_WAIT_MS: '0',
    NODE_NO_WARNINGS: '1',
  };
  const rows: Record<string, string | number>[] = [];
  // Inside the project so a runtime-provided SDK resolves from node_modules, as it does on Lambda.
  const dir = fs.mkdtempSync(path.join(__dirname, '..', 'node_modules', '.bench-bundles-'));
  for (const v of buildVariants(dir)) {
    const loads: number[] = [];
    for (let i = 0; i < 7; i++) {
      const out = execFileSync(process.execPath, [CHILD, v.file], { env: { ...env, CALLS: '0' }, encoding: 'utf8' });
      loads.push(JSON.parse(out.trim().split('\n').pop()!).loadMs);
    }
    const serve = (flags: string[]) =>
      JSON.parse(execFileSync(process.execPath, [...flags, CHILD, v.file], { env: { ...env, CALLS: '2000' }, encoding: 'utf8' }).trim().split('\n').pop()!);
    const free = serve([]);
    // V8 heap limits scaled to a 128 MB function (semi-space ~5 %, old space ~90 % of memory), as Lambda's
    // Node.js bootstrap sizes them; without them V8 on a 24 GB machine lets garbage pile up.
    const lambdaLike = serve(['--max-semi-space-size=6', '--max-old-space-size=115']);
    rows.push({
      'handler': v.name,
      'bundle KiB': v.bytes / 1024,
      'module load ms (median of 7)': percentile(loads, 50),
      'peak RSS MB, 2,000 acquires (default V8)': free.peakRssMb,
      'peak RSS MB (128 MB heap limits)': lambdaLike.peakRssMb,
      'admitted': free.admitted + lambdaLike.admitted,
    });
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return rows;
}
