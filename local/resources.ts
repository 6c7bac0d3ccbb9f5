// The template's stateful resources, made local: DynamoDB tables in dynalite, SQS queues in memory (with their
// redrive policies), and SQS event source mappings as pollers feeding their functions.
import * as ddb from '@aws-sdk/client-dynamodb';
import type { LocalDynamoDb } from './dynalite';
import type { LocalFunctions } from './functions';
import { LocalEventSource, LocalQueue } from './sqs';
import type { TemplateResolver } from './template';

/** Creates every AWS::DynamoDB::Table (and GlobalTable) of the template, on demand billing. */
export async function createTables(resolver: TemplateResolver, db: LocalDynamoDb): Promise<void> {
  for (const [id, r] of resolver.resourcesOfType('AWS::DynamoDB::Table', 'AWS::DynamoDB::GlobalTable')) {
    const props = r.Properties;
    await db.client.send(new ddb.CreateTableCommand({
      TableName: resolver.nameOf(id),
      KeySchema: props.KeySchema,
      AttributeDefinitions: props.AttributeDefinitions,
      BillingMode: 'PAY_PER_REQUEST',
      GlobalSecondaryIndexes: props.GlobalSecondaryIndexes?.map((g: any) => ({
        IndexName: g.IndexName,
        KeySchema: g.KeySchema,
        Projection: g.Projection,
      })),
    }));
  }
}

/** The template's queues, by logical id. */
export class LocalQueues {
  /** Every AWS::SQS::Queue as an in-memory queue, with its redrive policy. */
  public static create(resolver: TemplateResolver, options: { readonly visibilityTimeoutMs?: number } = {}): LocalQueues {
    const queues = new Map<string, LocalQueue>();
    const resources = resolver.resourcesOfType('AWS::SQS::Queue');
    for (const [id, r] of resources) {
      const p = r.Properties ?? {};
      queues.set(id, new LocalQueue({
        name: id,
        fifo: p.FifoQueue === true || p.FifoQueue === 'true',
        visibilityTimeoutMs: options.visibilityTimeoutMs ?? Number(p.VisibilityTimeout ?? 30) * 1000,
      }, resolver.region, resolver.account));
    }
    const local = new LocalQueues(resolver, queues);
    for (const [id, r] of resources) {
      const redrive = resolver.resolve(r.Properties?.RedrivePolicy);
      if (!redrive) continue;
      const dlq = local.byArn(redrive.deadLetterTargetArn);
      if (!dlq) throw new Error(`queue ${id}: dead-letter queue ${redrive.deadLetterTargetArn} is not in the template`);
      queues.get(id)!.setRedrive(dlq, Number(redrive.maxReceiveCount));
    }
    return local;
  }

  private constructor(private readonly resolver: TemplateResolver, public readonly byId: Map<string, LocalQueue>) {}

  /** The queue with this URL (its Ref), if any. */
  public byUrl(url: unknown): LocalQueue | undefined {
    return [...this.byId.entries()].find(([id]) => this.resolver.nameOf(id) === url)?.[1];
  }

  /** The queue with this ARN, if any. */
  public byArn(arn: unknown): LocalQueue | undefined {
    return [...this.byId.entries()].find(([id]) => this.resolver.arnOf(id) === arn)?.[1];
  }
}

/** Every SQS event source mapping of the template: pollers feeding its function, as Lambda's would. */
export function startEventSources(resolver: TemplateResolver, queues: LocalQueues, functions: LocalFunctions): LocalEventSource[] {
  const sources: LocalEventSource[] = [];
  for (const [, r] of resolver.resourcesOfType('AWS::Lambda::EventSourceMapping')) {
    const p = resolver.resolve(r.Properties);
    const queue = queues.byArn(p.EventSourceArn);
    if (!queue) continue;
    const fn = functions.byArn(p.FunctionName);
    if (!fn) {
      void Promise.all(sources.map((s) => s.stop()));
      throw new Error(`event source mapping of ${p.EventSourceArn}: function ${p.FunctionName} is not in the template`);
    }
    sources.push(new LocalEventSource(queue, (event) => functions.invoke(fn, event), {
      batchSize: Number(p.BatchSize ?? 10),
      maxBatchingWindowMs: Number(p.MaximumBatchingWindowInSeconds ?? 0) * 1000,
      maxConcurrency: Number(p.ScalingConfig?.MaximumConcurrency ?? 2),
      reportBatchItemFailures: (p.FunctionResponseTypes ?? []).includes('ReportBatchItemFailures'),
    }));
  }
  return sources;
}
