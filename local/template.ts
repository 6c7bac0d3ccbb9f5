// The template resolver of the local runner: gives every resource of a synthesized CloudFormation template a local
// name and ARN, and resolves the intrinsics CDK writes (Ref, Fn::GetAtt, Fn::Join, Fn::Select, Fn::Split, Fn::Sub)
// to those local values. Pure: a template in, values out; no I/O, nothing global.

/** The account every local ARN names. */
export const LOCAL_ACCOUNT = '123456789012';

/** A resource of a synthesized template. */
export interface TemplateResource {
  readonly Type: string;
  readonly Properties?: any;
}

/** The parts of a synthesized template the runner reads. */
export interface Template {
  readonly Resources: Record<string, TemplateResource>;
}

/** The local identity of one resource: what `Ref` gives, and its ARN. */
export interface LocalNames {
  readonly ref: string;
  readonly arn: string;
}

export interface TemplateResolverOptions {
  readonly region: string;
  /** @default LOCAL_ACCOUNT */
  readonly account?: string;
  /** What `Ref AWS::StackName` gives. */
  readonly stackName: string;
}

/**
 * The local name and ARN of one resource, by type: a table or function is named by its explicit name or its
 * logical id; a queue's Ref is its URL; a state machine's Ref is its ARN, as in CloudFormation.
 */
export function localNames(logicalId: string, resource: TemplateResource, region: string, account: string = LOCAL_ACCOUNT): LocalNames {
  const explicit = (prop: string) => (typeof resource.Properties?.[prop] === 'string' ? resource.Properties[prop] as string : logicalId);
  switch (resource.Type) {
    case 'AWS::DynamoDB::Table':
    case 'AWS::DynamoDB::GlobalTable': {
      const name = explicit('TableName');
      return { ref: name, arn: `arn:aws:dynamodb:${region}:${account}:table/${name}` };
    }
    case 'AWS::Lambda::Function': {
      const name = explicit('FunctionName');
      return { ref: name, arn: `arn:aws:lambda:${region}:${account}:function:${name}` };
    }
    case 'AWS::SQS::Queue':
      return { ref: `https://sqs.${region}.amazonaws.com/${account}/${logicalId}`, arn: `arn:aws:sqs:${region}:${account}:${logicalId}` };
    case 'AWS::StepFunctions::StateMachine': {
      const arn = `arn:aws:states:${region}:${account}:stateMachine:${explicit('StateMachineName')}`;
      return { ref: arn, arn };
    }
    default:
      return { ref: logicalId, arn: `arn:aws:local:${region}:${account}:${logicalId}` };
  }
}

/** Resolves CloudFormation intrinsics over one template to local values. */
export class TemplateResolver {
  public readonly region: string;
  public readonly account: string;
  private readonly names = new Map<string, LocalNames>();

  constructor(public readonly template: Template, private readonly options: TemplateResolverOptions) {
    this.region = options.region;
    this.account = options.account ?? LOCAL_ACCOUNT;
    for (const [id, r] of Object.entries(template.Resources)) this.names.set(id, localNames(id, r, this.region, this.account));
  }

  /** The resource with this logical id; throws naming it when there is none. */
  public resource(logicalId: string): TemplateResource {
    const r = this.template.Resources[logicalId];
    if (!r) throw new Error(`no resource ${logicalId} in the template`);
    return r;
  }

  /** Every resource of one of these types, with its logical id, in template order. */
  public resourcesOfType(...types: string[]): [string, TemplateResource][] {
    return Object.entries(this.template.Resources).filter(([, r]) => types.includes(r.Type));
  }

  /** The local name (Ref) of a resource, by logical id. */
  public nameOf(logicalId: string): string {
    return this.localNamesOf(logicalId).ref;
  }

  /** The local ARN of a resource, by logical id. */
  public arnOf(logicalId: string): string {
    return this.localNamesOf(logicalId).arn;
  }

  /** The logical id of the resource with this Ref or ARN, if any. */
  public logicalIdOf(refOrArn: unknown): string | undefined {
    for (const [id, n] of this.names) if (n.ref === refOrArn || n.arn === refOrArn) return id;
    return undefined;
  }

  /** Resolves every intrinsic in `value` (deeply); throws naming what it cannot resolve. */
  public resolve(value: any): any {
    if (Array.isArray(value)) return value.map((x) => this.resolve(x));
    if (value === null || typeof value !== 'object') return value;
    const keys = Object.keys(value);
    if (keys.length === 1 && (keys[0] === 'Ref' || keys[0].startsWith('Fn::'))) return this.intrinsic(keys[0], value[keys[0]]);
    return Object.fromEntries(keys.map((k) => [k, this.resolve(value[k])]));
  }

  /** What `Ref` gives: a pseudo parameter or a resource's local name. */
  public ref(name: string): string {
    switch (name) {
      case 'AWS::Region': return this.region;
      case 'AWS::AccountId': return this.account;
      case 'AWS::Partition': return 'aws';
      case 'AWS::URLSuffix': return 'amazonaws.com';
      case 'AWS::StackName': return this.options.stackName;
      case 'AWS::NoValue': return '';
      default:
        if (!this.names.has(name)) throw new Error(`cannot resolve Ref ${name}: no resource ${name} in the template`);
        return this.nameOf(name);
    }
  }

  /** What `Fn::GetAtt` gives: the ARN for any *Arn attribute, a few known attributes, else `<ref>.<attribute>`. */
  public getAtt(logicalId: string, attribute: string): string {
    if (!this.names.has(logicalId)) throw new Error(`cannot resolve Fn::GetAtt ${logicalId}.${attribute}: no resource ${logicalId} in the template`);
    const n = this.names.get(logicalId)!;
    const type = this.template.Resources[logicalId].Type;
    if (attribute === 'Arn' || attribute.endsWith('Arn')) return n.arn;
    if (type === 'AWS::SQS::Queue' && attribute === 'QueueName') return logicalId;
    if (type === 'AWS::SQS::Queue' && attribute === 'QueueUrl') return n.ref;
    if (type === 'AWS::StepFunctions::StateMachine' && attribute === 'Name') return n.arn.slice(n.arn.lastIndexOf(':') + 1);
    return `${n.ref}.${attribute}`;
  }

  private localNamesOf(logicalId: string): LocalNames {
    const n = this.names.get(logicalId);
    if (!n) throw new Error(`no resource ${logicalId} in the template`);
    return n;
  }

  private intrinsic(fn: string, a: any): any {
    switch (fn) {
      case 'Ref': return this.ref(a);
      case 'Fn::GetAtt': {
        const [id, ...attr] = Array.isArray(a) ? a : String(a).split('.');
        return this.getAtt(id, attr.join('.'));
      }
      case 'Fn::Join': return (this.resolve(a[1]) as unknown[]).join(a[0]);
      // Out of range gives undefined, as before: CDK selects from split ARNs whose local stand-ins may be shorter.
      case 'Fn::Select': return (this.resolve(a[1]) as unknown[] | undefined)?.[Number(this.resolve(a[0]))];
      case 'Fn::Split': return String(this.resolve(a[1])).split(a[0]);
      case 'Fn::Sub': {
        const [text, vars] = Array.isArray(a) ? a : [a, {}];
        return String(text).replace(/\$\{(!?)([^}]+)\}/g, (_m, literal: string, name: string) => {
          if (literal) return `\${${name}}`;
          if (vars[name] !== undefined) return String(this.resolve(vars[name]));
          const dot = name.indexOf('.');
          return dot > 0 && !name.startsWith('AWS::') ? this.getAtt(name.slice(0, dot), name.slice(dot + 1)) : this.ref(name);
        });
      }
      default:
        throw new Error(`the local runner cannot resolve ${fn}`);
    }
  }
}
