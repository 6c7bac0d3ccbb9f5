// Every state machine definition the tests synthesize is checked here: asl-validator 4 (the ASL schema, JSONPath and
// JSONata), plus what it misses (shared/TOOLCHAIN.md): a state marked JSONPath in a JSONata machine, JSONPath-only
// fields in a JSONata state and JSONata-only fields in a JSONPath state, catchers included.
// test/setup-validation.ts applies it to every template a test builds (Template.fromStack / fromJSON).

// eslint-disable-next-line @typescript-eslint/no-require-imports
const validator: (definition: unknown) => { isValid: boolean; errorsText: (sep?: string) => string } = require('asl-validator');

/** A definition string as CloudFormation holds it (string or Fn::Join), with tokens as placeholders, parsed. */
export function definitionOf(def: unknown): any {
  const parts: unknown[] = typeof def === 'string' ? [def] : (def as any)['Fn::Join'][1];
  const text = parts.map((p) => {
    if (typeof p === 'string') return p;
    const o = p as Record<string, any>;
    // A token is usually an ARN (a function, a queue's ARN) or a name or URL: an ARN-shaped placeholder fits all.
    if (o['Fn::GetAtt']) return `arn:aws:lambda:us-east-1:123456789012:function:${o['Fn::GetAtt'].join('-')}`;
    if (o.Ref) return o.Ref.startsWith('AWS::') ? 'aws' : `arn:aws:lambda:us-east-1:123456789012:function:${o.Ref}`;
    return 'token';
  }).join('');
  return JSON.parse(text);
}

const JSONPATH_ONLY = ['Parameters', 'ResultPath', 'InputPath', 'OutputPath', 'ResultSelector', 'ItemsPath', 'SecondsPath', 'TimestampPath',
  'MaxConcurrencyPath', 'ToleratedFailureCountPath', 'ToleratedFailurePercentagePath', 'TimeoutSecondsPath', 'HeartbeatSecondsPath', 'Iterator'];
const JSONATA_ONLY = ['Arguments', 'Output', 'Items'];

/** Problems the validator does not report, for each state (and catcher) in the machine's language. */
export function languageProblems(definition: any): string[] {
  const problems: string[] = [];
  const top = definition.QueryLanguage ?? 'JSONPath';
  const visit = (graph: any, inherited: string, where: string) => {
    for (const [name, state] of Object.entries<any>(graph.States ?? {})) {
      const at = `${where}${name}`;
      if (top === 'JSONata' && state.QueryLanguage === 'JSONPath') problems.push(`${at}: marked JSONPath in a JSONata machine`);
      const lang = state.QueryLanguage ?? inherited;
      const forbidden = lang === 'JSONata' ? JSONPATH_ONLY : JSONATA_ONLY;
      for (const f of forbidden) if (f in state) problems.push(`${at}: ${f} in a ${lang} state`);
      for (const [i, c] of (state.Catch ?? []).entries()) {
        const catchForbidden = lang === 'JSONata' ? ['ResultPath'] : ['Output'];
        for (const f of catchForbidden) if (f in c) problems.push(`${at}: Catch[${i}].${f} in a ${lang} state`);
      }
      for (const [i, b] of (state.Branches ?? []).entries()) visit(b, lang, `${at}/Branches[${i}]/`);
      if (state.ItemProcessor) visit(state.ItemProcessor, lang, `${at}/ItemProcessor/`);
      if (state.Iterator) visit(state.Iterator, lang, `${at}/Iterator/`);
    }
  };
  visit(definition, top, '');
  return problems;
}

/** Throws naming the machine when a definition is invalid. */
export function validateDefinition(definition: any, name = 'state machine'): void {
  const result = validator(definition);
  const problems = languageProblems(definition);
  if (!result.isValid || problems.length > 0) {
    throw new Error(`invalid definition of ${name}: ${[result.isValid ? '' : result.errorsText('; '), ...problems].filter(Boolean).join('; ')}`);
  }
}

/** Every state machine in a synthesized template. */
export function validateTemplate(template: { Resources?: Record<string, any> }): number {
  let n = 0;
  for (const [id, r] of Object.entries(template.Resources ?? {})) {
    if (r.Type !== 'AWS::StepFunctions::StateMachine' || r.Properties?.DefinitionString === undefined) continue;
    validateDefinition(definitionOf(r.Properties.DefinitionString), id);
    n++;
  }
  return n;
}
