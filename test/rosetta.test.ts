import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

// jsii-rosetta over the code users read: every ```ts block of README and every example app (examples/*/stack.ts +
// app.ts) is compiled strictly against the built library (lib/ and .jsii; `npx projen compile` runs before jest in
// `npm test`) and translated to Python, Java, C# and Go. `--strict` fails on a compile error and on TypeScript that
// has no translation. README fragments are set in rosetta/default.ts-fixture (imports and the values they assume);
// whole programs are marked `nofixture`.

const ROOT = path.join(__dirname, '..');
const ROSETTA = path.join(ROOT, 'node_modules', '.bin', 'jsii-rosetta');
const LANGUAGES = ['python', 'java', 'csharp', 'go'];

interface Snippet {
  readonly translations: { [language: string]: { source: string } };
  readonly didCompile?: boolean;
  readonly location: { field?: { line?: number } };
}

/** An example app as one program: its stack and app files, importing the package by name as a user would. */
export function exampleProgram(dir: string): string {
  const source = (file: string) => fs.readFileSync(path.join(dir, file), 'utf8');
  const app = source('app.ts').replace(/^import .* from '\.\/stack';\n/m, '');
  return `${source('stack.ts')}\n${app}`
    .replace(/from '\.\.\/\.\.\/src'/g, "from 'cdk-sfn-throttle'")
    .replace(/import type \{/g, 'import {')
    .replace(/\btype (\w+)\b(?=[,\s}])/g, '$1');
}

/** README followed by every example app, as the markdown rosetta reads from the assembly. */
function documentation(): string {
  const examples = fs.readdirSync(path.join(ROOT, 'examples'), { withFileTypes: true })
    .filter((e) => e.isDirectory() && fs.existsSync(path.join(ROOT, 'examples', e.name, 'stack.ts')))
    .map((e) => `## examples/${e.name}\n\n\`\`\`ts nofixture\n${exampleProgram(path.join(ROOT, 'examples', e.name))}\`\`\`\n`);
  return [fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8'), ...examples].join('\n');
}

/**
 * Runs `jsii-rosetta extract --strict` over a copy of the built assembly whose readme is `markdown`, with the
 * package, aws-cdk-lib and constructs resolvable beside it. Nothing is written into the repository.
 */
function extract(markdown: string): { status: number | null; output: string; snippets: Snippet[] } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rosetta-'));
  try {
    const pkg = path.join(dir, 'pkg');
    fs.mkdirSync(path.join(pkg, 'node_modules'), { recursive: true });
    const assembly = JSON.parse(fs.readFileSync(path.join(ROOT, '.jsii'), 'utf8'));
    assembly.readme = { markdown };
    fs.writeFileSync(path.join(pkg, '.jsii'), JSON.stringify(assembly));
    fs.cpSync(path.join(ROOT, 'rosetta'), path.join(pkg, 'rosetta'), { recursive: true });
    fs.symlinkSync(ROOT, path.join(pkg, 'node_modules', 'cdk-sfn-throttle'), 'dir');
    for (const peer of ['aws-cdk-lib', 'constructs']) fs.symlinkSync(path.join(ROOT, 'node_modules', peer), path.join(pkg, 'node_modules', peer), 'dir');
    const tablet = path.join(dir, 'tablet.json');
    const r = spawnSync(ROSETTA, ['extract', '--strict', '--directory', pkg, '--output', tablet, path.join(pkg, '.jsii')], {
      cwd: dir,
      encoding: 'utf8',
      env: { ...process.env, JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION: '1', JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION: '1' },
      timeout: 600_000,
    });
    const snippets = fs.existsSync(tablet) ? Object.values(JSON.parse(fs.readFileSync(tablet, 'utf8')).snippets) as Snippet[] : [];
    return { status: r.status, output: `${r.stdout}\n${r.stderr}`, snippets };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('documented code compiles and translates (jsii-rosetta --strict)', () => {
  test('README blocks and the example apps compile and translate to Python, Java, C# and Go', () => {
    const markdown = documentation();
    const blocks = markdown.match(/^```(ts|typescript)\b/gm) ?? [];
    const r = extract(markdown);
    if (r.status !== 0) throw new Error(`jsii-rosetta extract --strict failed (exit ${r.status}):\n${r.output.slice(-6000)}`);
    expect(blocks.length).toBeGreaterThanOrEqual(20); // README's blocks and six examples
    expect(r.snippets).toHaveLength(blocks.length);
    for (const s of r.snippets) {
      expect(s.didCompile).toBe(true);
      for (const language of LANGUAGES) expect(s.translations[language]?.source.trim().length ?? 0).toBeGreaterThan(0);
    }
    // the quick start as a Python and a Java user read it
    const quickStart = r.snippets.find((s) => s.translations.python.source.includes('Limit.per_window('));
    expect(quickStart?.translations.python.source).toContain('from cdk_sfn_throttle import');
    expect(quickStart?.translations.java.source).toContain('RateLimiter.Builder.create(');
    expect(quickStart?.translations.go.source).toContain('cdksfnthrottle.NewRateLimiter(');
  }, 900_000);

  test('a block that does not compile fails the check, naming the block', () => {
    const rotten = "# rotten\n\n```ts\nnew RateLimiter(this, 'Partner', { ratePerSecnd: 5 });\n```\n";
    const r = extract(rotten);
    expect(r.status).not.toBe(0);
    expect(r.output).toMatch(/README-L3\.ts.*ratePerSecnd/s);
  }, 600_000);

  test('an example app becomes one program importing the package by name', () => {
    const program = exampleProgram(path.join(ROOT, 'examples', 'shipping-api'));
    expect(program).toContain("from 'cdk-sfn-throttle'");
    expect(program).not.toMatch(/\.\.\/\.\.\/src|import type|from '\.\/stack'/);
  });
});
