import { Template } from 'aws-cdk-lib/assertions';

export interface Statement {
  readonly Action: string | string[];
  readonly Effect: string;
  readonly Resource: unknown;
}

/** Every IAM statement attached (inline) to the role with the given logical id. */
export function statementsOfRole(template: Template, roleLogicalId: string): Statement[] {
  const policies = template.findResources('AWS::IAM::Policy');
  const statements: Statement[] = [];
  for (const p of Object.values(policies)) {
    const roles = (p.Properties.Roles ?? []) as { Ref: string }[];
    if (roles.some((r) => r.Ref === roleLogicalId)) {
      statements.push(...p.Properties.PolicyDocument.Statement);
    }
  }
  const role = template.findResources('AWS::IAM::Role')[roleLogicalId];
  for (const inline of (role?.Properties?.Policies ?? []) as { PolicyDocument: { Statement: Statement[] } }[]) {
    statements.push(...inline.PolicyDocument.Statement);
  }
  return statements;
}

/** All actions granted by a set of statements, sorted. */
export function actionsOf(statements: Statement[]): string[] {
  return statements.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action])).sort();
}

export function logicalIdOf(template: Template, type: string, predicate: (props: any) => boolean = () => true): string {
  const found = Object.entries(template.findResources(type)).filter(([, r]) => predicate(r.Properties ?? {}));
  if (found.length !== 1) throw new Error(`expected one ${type}, found ${found.length}`);
  return found[0][0];
}
