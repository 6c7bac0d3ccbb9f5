// The props tables of README.md, generated from the built jsii assembly (.jsii): one row per prop with its type, its
// default (`@default`, or "required") and its summary. A table sits between `<!-- props: <Type> -->` and
// `<!-- /props -->`; `npx ts-node projenrc/readme-props.ts` rewrites them, and test/readme.test.ts fails when README's
// tables differ from the assembly's (so the documented defaults cannot drift from the code).
import * as fs from 'fs';
import * as path from 'path';

const ROOT = path.join(__dirname, '..');

function typeName(t: any): string {
  if (!t) return '';
  if (t.primitive) return t.primitive;
  if (t.fqn) return String(t.fqn).split('.').at(-1)!;
  if (t.collection) return `${t.collection.kind === 'array' ? '' : 'map of '}${typeName(t.collection.elementtype)}${t.collection.kind === 'array' ? '[]' : ''}`;
  if (t.union) return t.union.types.map(typeName).join(' \\| ');
  return 'any';
}

const cell = (text: string) => text.replace(/\s*\n\s*/g, ' ').replace(/\|/g, '\\|').trim().replace(/;$/, '.');

/** Every prop of a struct, its parents' first (as `extends` lists them), then its own. */
function propsOf(assembly: any, fqn: string): any[] {
  const type = assembly.types[fqn];
  if (!type) throw new Error(`no type ${fqn} in the assembly`);
  const inherited = (type.interfaces ?? []).filter((i: string) => i.startsWith('cdk-sfn-throttle.')).flatMap((i: string) => propsOf(assembly, i));
  return [...inherited, ...(type.properties ?? [])];
}

/** The markdown table of one props struct. */
export function propsTable(assembly: any, typeNameInModule: string): string {
  const rows = propsOf(assembly, `cdk-sfn-throttle.${typeNameInModule}`).map((p: any) => {
    const def = p.optional ? (p.docs?.default ?? '').replace(/^-\s*/, '') : 'required';
    return `| \`${p.name}\` | \`${cell(typeName(p.type))}\` | ${cell(def)} | ${cell(p.docs?.summary ?? '')} |`;
  });
  return ['| prop | type | default | what it is |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

const MARKER = /<!-- props: (\w+) -->\n[\s\S]*?<!-- \/props -->/g;

/** README with every props table regenerated from the assembly. */
export function withPropsTables(readme: string, assembly: any): string {
  return readme.replace(MARKER, (_m, type: string) => `<!-- props: ${type} -->\n${propsTable(assembly, type)}\n<!-- /props -->`);
}

if (require.main === module) {
  const assembly = JSON.parse(fs.readFileSync(path.join(ROOT, '.jsii'), 'utf8'));
  const file = path.join(ROOT, 'README.md');
  fs.writeFileSync(file, withPropsTables(fs.readFileSync(file, 'utf8'), assembly));
}
