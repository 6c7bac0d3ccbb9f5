import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { js } from './breaker-states';
import { OverrideAttr } from './contract';
import { expr, JSONATA, jsonataCatches, rendering } from './query-language';
import { LanguageHint } from './states';
import { retryDynamoDbCall } from './task-kind';
import { fail } from './validation';

// The states that change a limiter's limit from inside a workflow: one DynamoDB PutItem (set) or DeleteItem (clear)
// of the key's override item through the service integration (no Lambda), granted exactly those items.

export interface OverrideTarget {
  readonly limiterName: string;
  readonly table: dynamodb.ITable;
}

export interface OverrideWriteOptions {
  /** A literal key or a simple JSONPath. */
  readonly key: string;
  /** Set: the limit; absent: clear. */
  readonly limit?: { ratePerSecond: number; burst: number };
  /** Set: until when (a literal ISO 8601 time or a simple JSONPath). */
  readonly until?: string;
  readonly hint: LanguageHint;
}

const PATH = /^\$(\.[A-Za-z_][A-Za-z0-9_-]*)+$/;
/** An ISO 8601 time with its zone: read the same by the limiter (UTC) and by an operator's CLI (any zone). */
const ISO_WITH_ZONE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/;


/** PutItem (set) or DeleteItem (clear) of `<limiterName>#config#<key>`; the task's output is its input. */
export class OverrideWrite extends sfn.TaskStateBase {
  protected readonly taskMetrics?: sfn.TaskMetricsConfig;
  protected readonly taskPolicies?: iam.PolicyStatement[];

  constructor(scope: Construct, id: string, private readonly target: OverrideTarget, private readonly o: OverrideWriteOptions) {
    super(scope, id, { resultPath: sfn.JsonPath.DISCARD });
    if (o.key.startsWith('$') && !PATH.test(o.key)) fail(this, `key must be a literal or a simple JSONPath like $.tenant, got ${JSON.stringify(o.key)}`);
    if (!o.key.startsWith('$') && (o.key.length < 1 || o.key.length > 512)) fail(this, `key must be 1 to 512 characters, got ${JSON.stringify(o.key)}`);
    if (o.until !== undefined && !o.until.startsWith('$') && (!ISO_WITH_ZONE.test(o.until) || !Number.isFinite(Date.parse(o.until)))) {
      fail(this, `until must be an ISO 8601 time with its zone (Z or ±hh:mm) or a JSONPath, got ${JSON.stringify(o.until)}`);
    }
    if (o.until?.startsWith('$') && !PATH.test(o.until)) fail(this, `until must be a literal time or a simple JSONPath like $.until, got ${JSON.stringify(o.until)}`);
    const prefix = `${target.limiterName}#config#`;
    // a literal key: exactly its item; a key read at run time: this limiter's override items only
    this.taskPolicies = [new iam.PolicyStatement({
      actions: [o.limit ? 'dynamodb:PutItem' : 'dynamodb:DeleteItem'],
      resources: [target.table.tableArn],
      conditions: o.key.startsWith('$')
        ? { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${prefix}*`] } }
        : { 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': [`${prefix}${o.key}`] } },
    })];
    retryDynamoDbCall(this);
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const r = rendering(this, topLevelQueryLanguage, this.o.hint.queryLanguage);
    const json = super.toStateJson(sfn.QueryLanguage.JSON_PATH) as Record<string, any>;
    if (r.lang !== JSONATA) return json;
    const { Parameters, ResultPath, ...rest } = json;
    return { ...jsonataCatches(this, rest), ...r.marker, Arguments: this.request(true), Output: expr('$states.input') };
  }

  /** @internal */
  protected _renderTask(): any {
    return {
      Resource: `arn:aws:states:::dynamodb:${this.o.limit ? 'putItem' : 'deleteItem'}`,
      Parameters: this.request(false),
    };
  }

  private request(jsonata: boolean): Record<string, unknown> {
    const prefix = `${this.target.limiterName}#config#`;
    const string = (v: string, name: string): Record<string, unknown> => {
      if (!v.startsWith('$')) return { [name]: { S: v } };
      return jsonata
        ? { [name]: { S: expr(`$string(${js(v)})`) } }
        : { [name]: { 'S.$': `States.Format('{}', ${v})` } };
    };
    const key = this.o.key.startsWith('$')
      ? (jsonata ? { pk: { S: expr(`${JSON.stringify(prefix)} & $string(${js(this.o.key)})`) } } : { pk: { 'S.$': `States.Format('${prefix}{}', ${this.o.key})` } })
      : { pk: { S: `${prefix}${this.o.key}` } };
    if (!this.o.limit) return { TableName: this.target.table.tableName, Key: key };
    const by = jsonata ? { [OverrideAttr.BY]: { S: expr('$states.context.Execution.Id') } } : { [OverrideAttr.BY]: { 'S.$': '$$.Execution.Id' } };
    // a unique version: an operator's CLI that read the item before this write cannot overwrite it unknowingly
    const ver = jsonata ? { [OverrideAttr.VERSION]: { S: expr('$uuid()') } } : { [OverrideAttr.VERSION]: { 'S.$': 'States.UUID()' } };
    return {
      TableName: this.target.table.tableName,
      Item: {
        ...key,
        [OverrideAttr.RATE_PER_SECOND]: { N: String(this.o.limit.ratePerSecond) },
        [OverrideAttr.BURST]: { N: String(this.o.limit.burst) },
        ...(this.o.until !== undefined ? string(this.o.until, OverrideAttr.UNTIL) : {}),
        ...by,
        ...ver,
      },
    };
  }
}
