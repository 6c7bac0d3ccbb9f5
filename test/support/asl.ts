import { Template } from 'aws-cdk-lib/assertions';

/** The ASL of the only state machine in a template, with intrinsics shown as `<LogicalId.Attr>` / `<Ref>`. */
export function aslOf(template: Template): any {
  const machines = Object.values(template.findResources('AWS::StepFunctions::StateMachine'));
  if (machines.length !== 1) throw new Error(`expected one state machine, found ${machines.length}`);
  const def = machines[0].Properties.DefinitionString;
  const parts: unknown[] = typeof def === 'string' ? [def] : def['Fn::Join'][1];
  const text = parts.map((p) => {
    if (typeof p === 'string') return p;
    const o = p as Record<string, any>;
    if (o['Fn::GetAtt']) return `<${o['Fn::GetAtt'].join('.')}>`;
    if (o.Ref) return `<${o.Ref}>`;
    return '<?>';
  }).join('');
  return JSON.parse(text);
}
