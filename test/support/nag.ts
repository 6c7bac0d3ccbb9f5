import { AwsSolutionsChecks, ServerlessChecks } from 'cdk-nag';
import { IConstruct } from 'constructs';

/**
 * Unacknowledged cdk-nag findings in a scope, as "RuleId at path" strings. An empty list means clean.
 * cdk-nag 3 is a validation plugin: Annotations never carry its findings, so we ask the packs directly.
 */
export function nagFindings(scope: IConstruct, packs: ('AwsSolutions' | 'Serverless')[] = ['AwsSolutions']): string[] {
  const out: string[] = [];
  for (const pack of packs) {
    const checks = pack === 'AwsSolutions' ? new AwsSolutionsChecks() : new ServerlessChecks();
    const report = checks.validateScope(scope);
    for (const v of report.violations) {
      for (const r of v.violatingResources) {
        out.push(`${v.ruleName} at ${r.constructPath ?? r.resourceLogicalId}: ${v.description.split('\n')[0]}`);
      }
    }
  }
  return out;
}
