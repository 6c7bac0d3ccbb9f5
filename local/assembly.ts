// Finding a state machine (or function) of a synthesized app: by construct path, as `cdk synth` records it in the
// cloud assembly's metadata (`aws:cdk:logicalId` entries, always written), or by logical id.
import * as cxapi from 'aws-cdk-lib/cx-api';
import type { Template } from './template';

/** Construct path (no leading slash) → logical id, for every resource of a stack artifact. */
export function constructPaths(artifact: cxapi.CloudFormationStackArtifact): Map<string, string> {
  const paths = new Map<string, string>();
  // findMetadataByType reads the manifest's entries and the additional metadata file newer CDK versions write
  for (const e of artifact.findMetadataByType('aws:cdk:logicalId')) {
    if (typeof e.data === 'string') paths.set(e.path.replace(/^\//, ''), e.data);
  }
  return paths;
}

/** A state machine or function was not found, or found more than once. */
export class ResourceNotFound extends Error {
  public readonly name = 'ResourceNotFound';
}

/**
 * The logical id of a resource of `type`: `ref` is its logical id, its construct path (`Stack/Machine`), or that
 * path without the stack's (`Machine`); the construct may be the L2 (its `Resource` child is the one in the template).
 */
export function logicalIdOf(template: Template, paths: ReadonlyMap<string, string>, ref: string, type: string, stackName: string): string {
  if (template.Resources[ref]?.Type === type) return ref;
  const bare = ref.replace(/^\//, '');
  const stackPrefixes = new Set([...paths.keys()].map((p) => p.split('/')[0]));
  const candidates = [bare, `${bare}/Resource`, ...[...stackPrefixes].flatMap((s) => [`${s}/${bare}`, `${s}/${bare}/Resource`])];
  for (const c of candidates) {
    const id = paths.get(c);
    if (id && template.Resources[id]?.Type === type) return id;
  }
  const known = [...paths.entries()].filter(([, id]) => template.Resources[id]?.Type === type).map(([p, id]) => `${p.replace(/\/Resource$/, '')} (${id})`);
  throw new ResourceNotFound(`no ${type} "${ref}" in stack ${stackName}; it has: ${known.join(', ') || 'none'}`);
}

/** A state machine found: its stack and logical id. */
export interface Found {
  readonly artifact: cxapi.CloudFormationStackArtifact;
  readonly logicalId: string;
}

/** The stack artifact holding the state machine `ref` (a construct path, or a logical id within `stack`). */
export function findInAssembly(assembly: cxapi.CloudAssembly, ref: string, stack?: string): Found {
  const stacks = assembly.stacksRecursively.filter((s) => stack === undefined
    || [s.stackName, s.id, s.hierarchicalId, s.displayName].includes(stack));
  if (stacks.length === 0) {
    throw new ResourceNotFound(`no stack ${stack} in ${assembly.directory}; it has: ${assembly.stacksRecursively.map((s) => s.hierarchicalId).join(', ')}`);
  }
  const found: Found[] = [];
  const misses: string[] = [];
  for (const artifact of stacks) {
    try {
      found.push({ artifact, logicalId: logicalIdOf(artifact.template as Template, constructPaths(artifact), ref, 'AWS::StepFunctions::StateMachine', artifact.stackName) });
    } catch (err) {
      if (!(err instanceof ResourceNotFound)) throw err;
      misses.push(err.message);
    }
  }
  if (found.length === 1) return found[0];
  if (found.length > 1) throw new ResourceNotFound(`state machine "${ref}" is in ${found.length} stacks (${found.map((f) => f.artifact.hierarchicalId).join(', ')}): name one with the stack option`);
  throw new ResourceNotFound(misses.join('\n'));
}
