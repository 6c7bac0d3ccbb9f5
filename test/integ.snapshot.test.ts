import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { validateTemplate } from './support/asl-validate';

// The integration tests (test/integ/integ.*.ts, aws-cdk's form: an IntegTest with assertions for a deployed run,
// ready for `npx integ-runner --directory test/integ` in an account) checked offline, as integ-runner's snapshot mode
// does: each app is synthesized and every template of its assembly (the stack under test and the assertions stack)
// compared with the committed snapshot. A change to what they deploy shows in the diff. Definitions are validated.

const INTEG_DIR = path.join(__dirname, 'integ');
const files = fs.readdirSync(INTEG_DIR).filter((f) => /^integ\..+\.ts$/.test(f)).sort();

function synthesize(file: string): Record<string, unknown> {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'integ-'));
  const before = process.env.CDK_OUTDIR;
  process.env.CDK_OUTDIR = outdir;
  try {
    jest.isolateModules(() => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      require(path.join(INTEG_DIR, file));
    });
  } finally {
    if (before === undefined) delete process.env.CDK_OUTDIR;
    else process.env.CDK_OUTDIR = before;
  }
  const templates = Object.fromEntries(fs.readdirSync(outdir).filter((f) => f.endsWith('.template.json')).sort()
    .map((f) => [f, JSON.parse(fs.readFileSync(path.join(outdir, f), 'utf8'))]));
  fs.rmSync(outdir, { recursive: true, force: true });
  return templates;
}

describe('integration tests, snapshot-checked offline', () => {
  test('there are integration tests for the main constructs', () => {
    expect(files).toEqual(expect.arrayContaining(['integ.rate-limited-task.ts', 'integ.buffered-queue-consumer.ts']));
  });

  test.each(files)('%s: its assembly matches the snapshot; it has assertions for a deployed run', (file) => {
    const templates = synthesize(file);
    const names = Object.keys(templates);
    // the stack under test and the assertions stack (DeployAssert)
    expect(names.some((n) => n.includes('DeployAssert'))).toBe(true);
    expect(names.length).toBeGreaterThanOrEqual(2);
    for (const t of Object.values(templates)) validateTemplate(t as any);
    const assertions = JSON.stringify(templates[names.find((n) => n.includes('DeployAssert'))!]);
    expect(assertions).toContain('Custom::DeployAssert@SdkCall');
    // the assertions' custom resources carry a time-based salt (so they run on every deploy): not part of the comparison
    expect(JSON.parse(JSON.stringify(templates).replace(/"salt":"\d+"/g, '"salt":"<time>"'))).toMatchSnapshot();
  });
});
