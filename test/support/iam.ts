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

/** Actions AWS authorizes on no resource ARN: "*" is the only possible resource for them. */
const NO_RESOURCE_ACTIONS = new Set([
  'xray:PutTraceSegments', 'xray:PutTelemetryRecords', 'xray:GetSamplingRules', 'xray:GetSamplingTargets',
]);

/**
 * Every IAM statement of a template: no action wildcard (`service:*` or `*`), and no `*` resource for an action
 * that takes a resource ARN. Throws with every problem found.
 */
export function expectLeastPrivilege(template: Template): void {
  const statements: { where: string; s: Statement }[] = [];
  for (const [id, p] of Object.entries(template.findResources('AWS::IAM::Policy'))) {
    for (const s of p.Properties.PolicyDocument.Statement as Statement[]) statements.push({ where: id, s });
  }
  for (const [id, r] of Object.entries(template.findResources('AWS::IAM::Role'))) {
    for (const inline of (r.Properties?.Policies ?? []) as { PolicyDocument: { Statement: Statement[] } }[]) {
      for (const s of inline.PolicyDocument.Statement) statements.push({ where: id, s });
    }
  }
  const problems: string[] = [];
  for (const { where, s } of statements) {
    if (s.Effect !== 'Allow') continue;
    const actions = Array.isArray(s.Action) ? s.Action : [s.Action];
    const resources = Array.isArray(s.Resource) ? s.Resource : [s.Resource];
    for (const a of actions) {
      if (a.includes('*')) problems.push(`${where}: action wildcard ${a}`);
      if (resources.includes('*') && !NO_RESOURCE_ACTIONS.has(a)) problems.push(`${where}: ${a} on *`);
    }
  }
  if (problems.length > 0) throw new Error(`IAM is not least privilege:\n${problems.join('\n')}`);
}
