import { execFileSync } from 'child_process';
import * as path from 'path';
import * as ts from 'typescript';

/** The fenced block after a marker comment of README (`<!-- quick-start: ... -->`, `<!-- local-run: ... -->`). */
export function blockAfter(readme: string, marker: string): string {
  const at = readme.indexOf(marker);
  if (at < 0) throw new Error(`README has no ${marker}`);
  const m = /```[a-z]*[^\n]*\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!m) throw new Error(`no fenced block after ${marker}`);
  return m[1];
}

export const QUICK_START_MARKER = '<!-- quick-start: the block below is run by test/package.test.ts -->';
export const LOCAL_RUN_MARKER = '<!-- local-run: the block below is run by test/local-package.test.ts -->';

/** Type-checks files strictly as a user's `tsc` would, resolving packages from the node_modules beside them. */
export function typeErrorsOf(files: string[], types: string[] = []): string[] {
  const options: ts.CompilerOptions = {
    noEmit: true,
    strict: true,
    module: ts.ModuleKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    esModuleInterop: true,
    skipLibCheck: true,
    types,
  };
  const program = ts.createProgram(files, options);
  return ts.getPreEmitDiagnostics(program).map((d) => `${d.file?.fileName ?? ''}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
}

/** TypeScript to CommonJS, as ts-jest or ts-node would run it (no type-check). */
export function toCommonJs(source: string): string {
  const compilerOptions = { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true };
  return ts.transpileModule(source, { compilerOptions }).outputText;
}

/** `npm pack` of the package in `dir` into `dest`: the tarball and the files it holds. */
export function pack(dir: string, dest: string): { tarball: string; files: string[] } {
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const info = JSON.parse(out)[0];
  return { tarball: path.join(dest, info.filename), files: info.files.map((f: { path: string }) => f.path) };
}
