// The local runner: executes a synthesized state machine on this machine, offline.
//
// It synthesizes the stack's app, resolves the state machine's definition, creates the template's DynamoDB
// tables in dynalite, loads every Lambda function of the template from its asset with its template environment,
// serves DynamoDB service integrations from dynalite, and runs the ASL with aws-local-stepfunctions. A Task it
// has no handler for stops the run before it starts: nothing ever reaches AWS.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ddb from '@aws-sdk/client-dynamodb';
import { App, CfnResource, Stack, Stage } from 'aws-cdk-lib';
import * as cxapi from 'aws-cdk-lib/cx-api';
import type * as Alsf from 'aws-local-stepfunctions' with { 'resolution-mode': 'import' };
import type { IConstruct } from 'constructs';
import { type LocalEndpoint, serviceErrorStatus, startLocalEndpoint } from './aws-endpoint';
import { type EmulatedMap, emulatedMapHandler, type ItemReaderHandler, rewriteMaps } from './distributed-map';
import { type LocalDynamoDb, type LocalDynamoDbOptions, startDynalite, startDynaliteProcess } from './dynalite';
import { LocalEventSource, LocalQueue } from './sqs';
import { nowUs as clockUs } from './timing';

// aws-local-stepfunctions uses Promise.withResolvers (Node >= 22).
const P = Promise as any;
if (typeof P.withResolvers !== 'function') {
  P.withResolvers = () => {
    let resolve!: (v: unknown) => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const alsf: typeof Alsf = require('aws-local-stepfunctions');

export const LOCAL_ACCOUNT = '123456789012';

/** A handler for a Task state: gets the state's effective input (after Parameters), returns its result. */
export type TaskHandler = (input: any) => unknown;

export interface LocalRunnerOptions {
  /** Handlers for Task states, by state name. They take precedence over the runner's own. */
  readonly taskHandlers?: Record<string, TaskHandler>;
  /**
   * Local stand-ins for Lambda functions of the template, by logical id: run instead of the function's code,
   * wherever it is invoked (Task states, event sources, other handlers' Lambda clients).
   */
  readonly functionHandlers?: Record<string, (event: any) => unknown>;
  /** Milliseconds to wait instead of what a Wait state says, by state name. */
  readonly waitTimeOverrides?: Record<string, number>;
  /** Milliseconds a retrier waits instead of what its Retry says, by state name. */
  readonly retryIntervalOverrides?: Record<string, number | number[]>;
  /**
   * Items of Map states that read them with an ItemReader (S3 cannot be reached locally), by state name: gets
   * the state input, returns the items.
   */
  readonly itemReaders?: Record<string, ItemReaderHandler>;
  /**
   * Milliseconds every queue keeps a received message invisible, instead of its template VisibilityTimeout
   * (which is minutes for a consumer with a long timeout): lets redelivery and dead-lettering run in a test.
   */
  readonly queueVisibilityTimeoutMs?: number;
  /** Options of the local DynamoDB. */
  readonly dynamoDb?: LocalDynamoDbOptions;
  /**
   * Run dynalite in a child process (its own core) instead of in this one: lower, steadier latency when many
   * executions run at once.
   *
   * @default false
   */
  readonly dynamoDbProcess?: boolean;
}

/** One entry of the execution history, with its time (epoch ms). */
export interface LocalEvent {
  readonly type: string;
  readonly timestamp: number;
  readonly stateName?: string;
  readonly index?: number;
  readonly error?: string;
  readonly cause?: unknown;
}

/** One admission granted by a limiter's acquire function during a run. */
export interface LocalGrant {
  readonly functionLogicalId: string;
  readonly key: string;
  /** The slot: the caller may start at this instant (epoch µs) and not before. */
  readonly atUs: number;
  readonly tokens: number;
  /** When the function returned (epoch µs). */
  readonly returnedAtUs: number;
}

/** Options of one `LocalRunner.run()`. */
export interface LocalRunOptions {
  /** Start at this top-level state instead of StartAt (a redrive restarts at the state that failed). */
  readonly startAt?: string;
  /** `$$.Execution.RedriveCount` for this run. @default 0 */
  readonly redriveCount?: number;
}

export interface LocalExecution {
  readonly status: 'SUCCEEDED' | 'FAILED';
  readonly output?: any;
  readonly error?: string;
  readonly cause?: unknown;
  readonly events: LocalEvent[];
}

interface LocalFunction {
  readonly logicalId: string;
  readonly name: string;
  readonly arn: string;
  /** The template's Timeout (Lambda's default 3 s when unset): what `getRemainingTimeInMillis()` counts down from. */
  readonly timeoutMs: number;
  readonly handler: (event: unknown, context: unknown) => Promise<unknown>;
}

/**
 * Runs one state machine of a stack locally. `start()` prepares everything; `run()` may be called many times,
 * concurrently; `stop()` shuts the local DynamoDB down.
 */
export class LocalRunner {
  /**
   * Synthesizes the stack's app and prepares a run of `stateMachine` (the construct, or its logical id).
   */
  public static async start(stack: Stack, stateMachine: IConstruct | string, options: LocalRunnerOptions = {}): Promise<LocalRunner> {
    const stage = Stage.of(stack) ?? (stack.node.root as App);
    const assembly = stage.synth();
    const artifact = assembly.getStackArtifact(stack.artifactId);
    const template = artifact.template as { Resources: Record<string, any> };
    const region = stack.resolve(stack.region).toString().startsWith('${') || typeof stack.resolve(stack.region) !== 'string'
      ? 'us-east-1' : stack.resolve(stack.region);
    const smId = typeof stateMachine === 'string' ? stateMachine : stack.getLogicalId(stateMachine.node.defaultChild as CfnResource);
    const db = options.dynamoDbProcess ? await startDynaliteProcess(options.dynamoDb) : await startDynalite(options.dynamoDb);
    let runner: LocalRunner;
    try {
      runner = new LocalRunner(template, artifact, db, region, smId, options);
    } catch (err) {
      await db.stop();
      throw err;
    }
    try {
      await runner.prepare();
      return runner;
    } catch (err) {
      await runner.stop();
      throw err;
    }
  }

  /** Every admission the template's limiter functions granted, in the order they returned. */
  public readonly grants: LocalGrant[] = [];
  /** The ASL that runs, with every intrinsic resolved to its local value. */
  public readonly definition: any;
  private readonly functions = new Map<string, LocalFunction>();
  private readonly names = new Map<string, { ref: string; arn: string }>();
  private readonly handlers: Record<string, TaskHandler> = {};
  private readonly machine: Alsf.StateMachine;
  /** The template's SQS queues, by logical id. */
  public readonly queues = new Map<string, LocalQueue>();
  private readonly eventSources: LocalEventSource[] = [];
  private endpoint?: LocalEndpoint;
  /** Tasks waiting for a token (`.waitForTaskToken`), by token. */
  private readonly waiting = new Map<string, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  /** Map states the runner runs itself (distributed mode, batching, item readers, tolerated failures). */
  private readonly emulatedMaps: EmulatedMap[];

  private constructor(
    private readonly template: { Resources: Record<string, any> },
    private readonly artifact: cxapi.CloudFormationStackArtifact,
    public readonly db: LocalDynamoDb,
    private readonly region: string,
    stateMachineId: string,
    private readonly options: LocalRunnerOptions,
  ) {
    for (const [id, r] of Object.entries(template.Resources)) {
      this.names.set(id, this.localNames(id, r));
    }
    const sm = template.Resources[stateMachineId];
    if (!sm || sm.Type !== 'AWS::StepFunctions::StateMachine') {
      throw new Error(`no state machine with logical id ${stateMachineId} in ${artifact.stackName}`);
    }
    const def = this.resolve(sm.Properties.DefinitionString ?? sm.Properties.Definition);
    this.definition = typeof def === 'string' ? JSON.parse(def) : def;
    this.emulatedMaps = rewriteMaps(this.definition.States);
    replaceTaskTokenPaths(this.definition);
    this.machine = new alsf.StateMachine(this.definition, { validationOptions: { checkArn: false } });
  }

  /** The local name of a table or function of the template (its Ref), by logical id. */
  public nameOf(logicalId: string): string {
    const n = this.names.get(logicalId);
    if (!n) throw new Error(`no resource ${logicalId} in the template`);
    return n.ref;
  }

  /**
   * Runs one execution to its end. `startAt` and `redriveCount` stand in for a redrive: Step Functions restarts a
   * redriven execution at the state that failed, with that state's input, and `$$.Execution.RedriveCount` counts
   * the redrives.
   */
  public async run(input: unknown = {}, options: LocalRunOptions = {}): Promise<LocalExecution> {
    const machine = options.startAt === undefined ? this.machine : this.machineStartingAt(options.startAt);
    const execution = machine.run(input as any, this.runOptions(options.redriveCount ?? 0));
    const events: LocalEvent[] = [];
    const collecting = (async () => {
      for await (const e of execution.eventLogs as AsyncGenerator<any>) {
        events.push({
          type: e.type,
          timestamp: e.timestamp,
          stateName: e.state?.name,
          index: e.index,
          error: e.Error,
          cause: e.Cause,
        });
      }
    })();
    let output: any;
    let failure: unknown;
    try {
      output = await execution.result;
    } catch (err) {
      failure = err;
    }
    await collecting;
    if (failure === undefined) return { status: 'SUCCEEDED', output, events };
    const failed = [...events].reverse().find((e) => e.type === 'ExecutionFailed');
    const cause = (failure as { cause?: { name?: string } }).cause;
    return {
      status: 'FAILED',
      error: failed?.error ?? cause?.name ?? (failure as Error).name,
      cause: failed?.cause ?? (failure as Error).message,
      events,
    };
  }

  private machineStartingAt(state: string): Alsf.StateMachine {
    if (!this.definition.States[state]) throw new Error(`no top-level state "${state}" to start at`);
    return new alsf.StateMachine({ ...this.definition, StartAt: state }, { validationOptions: { checkArn: false } });
  }

  private runOptions(redriveCount = 0) {
    return {
      context: { Execution: { RedriveCount: redriveCount } },
      overrides: {
        taskResourceLocalHandlers: this.handlers as any,
        waitTimeOverrides: this.options.waitTimeOverrides,
        retryIntervalOverrides: this.options.retryIntervalOverrides,
      },
    };
  }

  /** The queue of the template with this logical id. */
  public queue(logicalId: string): LocalQueue {
    const q = this.queues.get(logicalId);
    if (!q) throw new Error(`no SQS queue ${logicalId} in the template`);
    return q;
  }

  /** Event source mappings running (one per SQS mapping of the template). */
  public get consumers(): readonly LocalEventSource[] {
    return this.eventSources;
  }

  /** Stops the event source pollers, the local endpoint and the local DynamoDB. */
  public async stop(): Promise<void> {
    await Promise.all(this.eventSources.map((e) => e.stop()));
    await this.endpoint?.stop();
    await this.db.stop();
  }

  private async prepare(): Promise<void> {
    // Every SDK client a handler builds talks to the local DynamoDB.
    process.env.AWS_ENDPOINT_URL_DYNAMODB = this.db.endpoint;
    process.env.AWS_REGION = process.env.AWS_REGION ?? this.region;
    process.env.AWS_ACCESS_KEY_ID = process.env.AWS_ACCESS_KEY_ID ?? 'local';
    process.env.AWS_SECRET_ACCESS_KEY = process.env.AWS_SECRET_ACCESS_KEY ?? 'local';

    for (const [id, r] of Object.entries(this.template.Resources)) {
      if (r.Type === 'AWS::DynamoDB::Table' || r.Type === 'AWS::DynamoDB::GlobalTable') await this.createTable(id, r.Properties);
    }
    for (const [id, r] of Object.entries(this.template.Resources)) {
      if (r.Type === 'AWS::Lambda::Function') this.loadFunction(id, r.Properties);
    }
    this.createQueues();
    // Lambda Invoke and the task-token callbacks, for handlers' own SDK clients.
    this.endpoint = await startLocalEndpoint({
      invoke: (name, payload) => {
        const fn = this.functionByArn(name);
        return fn ? fn.handler(payload, lambdaContext(fn)) : undefined;
      },
      taskSuccess: (token, output) => this.settle(token, (w) => w.resolve(output)),
      taskFailure: (token, error, cause) => this.settle(token, (w) => w.reject(Object.assign(new Error(cause), { name: error }))),
      sendMessage: (queueUrl, body, groupId, attributes) => this.queueByUrl(queueUrl)?.send(body, groupId, attributes),
    });
    process.env.AWS_ENDPOINT_URL_LAMBDA = this.endpoint.url;
    process.env.AWS_ENDPOINT_URL_SFN = this.endpoint.url;
    process.env.AWS_ENDPOINT_URL_SQS = this.endpoint.url;

    const emulated = new Map(this.emulatedMaps.map((m) => [m.name, emulatedMapHandler(m, {
      alsf,
      runOptions: () => this.runOptions(),
      itemReader: this.options.itemReaders?.[m.name],
    })]));
    const missing: string[] = [];
    const tasks = [
      ...taskStates(this.definition),
      ...this.emulatedMaps.flatMap((m) => taskStates(m.state.ItemProcessor ?? m.state.Iterator)),
    ];
    for (const [name, state] of tasks) {
      const handler = this.options.taskHandlers?.[name] ?? emulated.get(name) ?? this.handlerFor(state);
      if (handler) this.handlers[name] = handler;
      else missing.push(`"${name}" (Resource ${state.Resource})`);
    }
    const unread = this.emulatedMaps.filter((m) => m.state.ItemReader && !this.options.itemReaders?.[m.name]);
    if (unread.length > 0) {
      throw new Error(`the local runner cannot read the items of Map state ${unread.map((m) => `"${m.name}" (ItemReader ${m.state.ItemReader.Resource})`).join(', ')}: give it one in itemReaders (nothing is read from S3)`);
    }
    if (missing.length > 0) {
      throw new Error(`the local runner has no handler for Task state ${missing.join(', ')}: give it one in taskHandlers (nothing is sent to AWS)`);
    }
    this.startEventSources();
  }

  private handlerFor(state: any): TaskHandler | undefined {
    const resource: string = state.Resource;
    const sqsSend = /^arn:aws:states:::sqs:sendMessage(\.waitForTaskToken)?$/.exec(resource);
    if (sqsSend) {
      return (input) => {
        const queue = this.queueByUrl(input.QueueUrl);
        if (!queue) throw Object.assign(new Error(`queue ${input.QueueUrl} is not in the template`), { name: 'SQS.QueueDoesNotExistException' });
        if (!sqsSend[1]) {
          const messageId = queue.send(typeof input.MessageBody === 'string' ? input.MessageBody : JSON.stringify(input.MessageBody), input.MessageGroupId);
          return { MessageId: messageId };
        }
        // Wait for the token: SendTaskSuccess/Failure (from a handler, through the local endpoint) settles it.
        const token = `local-token-${Math.random().toString(36).slice(2)}-${Date.now()}`;
        const body = withToken(input.MessageBody, token);
        return new Promise((resolve, reject) => {
          this.waiting.set(token, { resolve, reject });
          queue.send(typeof body === 'string' ? body : JSON.stringify(body), input.MessageGroupId);
        });
      };
    }
    const direct = this.functionByArn(resource);
    if (direct) return (input) => direct.handler(input, lambdaContext(direct));
    if (resource === 'arn:aws:states:::lambda:invoke') {
      return async (input) => {
        const fn = this.functionByArn(input.FunctionName);
        if (!fn) throw Object.assign(new Error(`function ${input.FunctionName} is not in the template`), { name: 'Lambda.ResourceNotFoundException' });
        try {
          return { StatusCode: 200, ExecutedVersion: '$LATEST', Payload: await fn.handler(input.Payload, lambdaContext(fn)) };
        } catch (err) {
          // Step Functions names the Lambda service's own errors Lambda.<Exception>.
          if (serviceErrorStatus(err) !== undefined) throw Object.assign(new Error((err as Error).message), { name: `Lambda.${(err as Error).name}` });
          throw err;
        }
      };
    }
    const m = /^arn:aws:states:::(?:aws-sdk:)?dynamodb:([a-zA-Z]+)$/.exec(resource);
    if (m) {
      const command = (ddb as any)[`${m[1][0].toUpperCase()}${m[1].slice(1)}Command`];
      if (!command) return undefined;
      return async (input) => {
        try {
          const { $metadata, ...out } = await this.db.client.send(new command(input));
          void $metadata;
          return out;
        } catch (err) {
          // Step Functions names service errors DynamoDB.<Exception>.
          throw Object.assign(new Error((err as Error).message), { name: `DynamoDB.${(err as Error).name}` });
        }
      };
    }
    return undefined;
  }

  /** The queue of the template with this URL (its Ref). */
  private queueByUrl(url: unknown): LocalQueue | undefined {
    return [...this.queues.values()].find((q) => this.names.get(q.name)?.ref === url);
  }

  private settle(token: string, how: (w: { resolve: (v: unknown) => void; reject: (e: unknown) => void }) => void): boolean {
    const w = this.waiting.get(token);
    if (!w) return false;
    this.waiting.delete(token);
    how(w);
    return true;
  }

  /** Every AWS::SQS::Queue as an in-memory queue, with its redrive policy. */
  private createQueues(): void {
    const props = (id: string) => this.template.Resources[id].Properties ?? {};
    for (const [id, r] of Object.entries(this.template.Resources)) {
      if (r.Type !== 'AWS::SQS::Queue') continue;
      const p = props(id);
      this.queues.set(id, new LocalQueue({
        name: id,
        fifo: p.FifoQueue === true || p.FifoQueue === 'true',
        visibilityTimeoutMs: this.options.queueVisibilityTimeoutMs ?? Number(p.VisibilityTimeout ?? 30) * 1000,
      }, this.region, LOCAL_ACCOUNT));
    }
    for (const [id, q] of this.queues) {
      const redrive = this.resolve(props(id).RedrivePolicy);
      if (!redrive) continue;
      const dlq = [...this.queues.values()].find((x) => this.names.get(x.name)?.arn === redrive.deadLetterTargetArn);
      if (!dlq) throw new Error(`queue ${id}: dead-letter queue ${redrive.deadLetterTargetArn} is not in the template`);
      q.setRedrive(dlq, Number(redrive.maxReceiveCount));
    }
  }

  /** Every SQS event source mapping: pollers feeding its function, as Lambda's would. */
  private startEventSources(): void {
    for (const r of Object.values(this.template.Resources)) {
      if (r.Type !== 'AWS::Lambda::EventSourceMapping') continue;
      const p = this.resolve(r.Properties);
      const queue = [...this.queues.values()].find((q) => this.names.get(q.name)?.arn === p.EventSourceArn);
      if (!queue) continue;
      const fn = this.functionByArn(p.FunctionName);
      if (!fn) throw new Error(`event source mapping of ${p.EventSourceArn}: function ${p.FunctionName} is not in the template`);
      this.eventSources.push(new LocalEventSource(queue, (event) => fn.handler(event, lambdaContext(fn)), {
        batchSize: Number(p.BatchSize ?? 10),
        maxBatchingWindowMs: Number(p.MaximumBatchingWindowInSeconds ?? 0) * 1000,
        maxConcurrency: Number(p.ScalingConfig?.MaximumConcurrency ?? 2),
        reportBatchItemFailures: (p.FunctionResponseTypes ?? []).includes('ReportBatchItemFailures'),
      }));
    }
  }

  private functionByArn(arnOrName: unknown): LocalFunction | undefined {
    if (typeof arnOrName !== 'string') return undefined;
    const bare = arnOrName.replace(/:(\$LATEST|\d+)$/, '');
    for (const fn of this.functions.values()) {
      if (fn.arn === bare || fn.name === bare) return fn;
    }
    return undefined;
  }

  private async createTable(id: string, props: any): Promise<void> {
    await this.db.client.send(new ddb.CreateTableCommand({
      TableName: this.nameOf(id),
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

  private loadFunction(id: string, props: any): void {
    const standIn = this.options.functionHandlers?.[id];
    const timeoutMs = Number(this.resolve(props.Timeout) ?? 3) * 1000;
    if (standIn) {
      const n = this.names.get(id)!;
      this.functions.set(id, { logicalId: id, name: n.ref, arn: n.arn, timeoutMs, handler: this.asLambda(async (e) => standIn(e)) });
      return;
    }
    const [file, exportName] = splitHandler(props.Handler ?? 'index.handler');
    let filename: string;
    if (props.Code?.ZipFile !== undefined) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'local-fn-'));
      filename = path.join(dir, `${file}.js`);
      fs.writeFileSync(filename, this.resolve(props.Code.ZipFile));
    } else {
      filename = path.join(this.assetDirOf(id, props.Code), `${file}.js`);
      if (!fs.existsSync(filename)) filename = path.join(path.dirname(filename), `${file}.mjs`);
    }
    const env = this.resolve(props.Environment?.Variables ?? {}) as Record<string, string>;
    const exported = loadIsolated(filename, { ...env, AWS_LAMBDA_FUNCTION_NAME: this.nameOf(id) });
    const handler = exported[exportName];
    if (typeof handler !== 'function') throw new Error(`${filename} exports no function ${exportName} (function ${id})`);
    const n = this.names.get(id)!;
    // Every admission a limiter function grants is recorded: tests judge the limit at these decisions, which a
    // loaded machine cannot move (the downstream's own clock can be late by any scheduling delay).
    const recording = async (e: unknown, c: unknown) => {
      const out: any = await handler(e, c);
      if (out && out.admitted === true && typeof out.notBeforeUs === 'number') {
        this.grants.push({ functionLogicalId: id, key: String(out.key), atUs: out.notBeforeUs, tokens: Number(out.tokens), returnedAtUs: clockUs() });
      }
      return out;
    };
    this.functions.set(id, {
      logicalId: id,
      name: n.ref,
      arn: n.arn,
      timeoutMs,
      handler: this.asLambda(recording),
    });
  }

  /** A handler whose failures reach callers as Lambda reports them: Error = errorType, Cause = the JSON envelope. */
  private asLambda(handler: (e: unknown, c: unknown) => Promise<unknown>): LocalFunction['handler'] {
    return async (e, c) => {
      try {
        return await handler(e, c);
      } catch (err) {
        if (serviceErrorStatus(err) !== undefined) throw err; // the Lambda service's answer, not the function's error
        const name = (err as Error)?.name ?? 'Error';
        const cause = JSON.stringify({ errorType: name, errorMessage: (err as Error)?.message ?? String(err), trace: [] });
        throw Object.assign(new Error(cause), { name });
      }
    };
  }

  private assetDirOf(id: string, code: any): string {
    const key = this.resolve(code?.S3Key);
    const hash = typeof key === 'string' ? key.replace(/\.zip$/, '') : undefined;
    const manifest = this.artifact.dependencies.find((d) => d instanceof cxapi.AssetManifestArtifact) as cxapi.AssetManifestArtifact | undefined;
    const files = manifest ? JSON.parse(fs.readFileSync(manifest.file, 'utf8')).files ?? {} : {};
    const source = hash ? files[hash]?.source : undefined;
    if (!source?.path) throw new Error(`function ${id}: no local asset for code ${JSON.stringify(code)}`);
    return path.resolve(path.dirname(manifest!.file), source.path);
  }

  private localNames(id: string, r: any): { ref: string; arn: string } {
    const acct = LOCAL_ACCOUNT;
    switch (r.Type) {
      case 'AWS::DynamoDB::Table':
      case 'AWS::DynamoDB::GlobalTable': {
        const name = typeof r.Properties?.TableName === 'string' ? r.Properties.TableName : id;
        return { ref: name, arn: `arn:aws:dynamodb:${this.region}:${acct}:table/${name}` };
      }
      case 'AWS::Lambda::Function': {
        const name = typeof r.Properties?.FunctionName === 'string' ? r.Properties.FunctionName : id;
        return { ref: name, arn: `arn:aws:lambda:${this.region}:${acct}:function:${name}` };
      }
      case 'AWS::SQS::Queue':
        return { ref: `https://sqs.${this.region}.amazonaws.com/${acct}/${id}`, arn: `arn:aws:sqs:${this.region}:${acct}:${id}` };
      default:
        return { ref: id, arn: `arn:aws:local:${this.region}:${acct}:${id}` };
    }
  }

  /** Resolves CloudFormation intrinsics to local values. */
  private resolve(v: any): any {
    if (Array.isArray(v)) return v.map((x) => this.resolve(x));
    if (v === null || typeof v !== 'object') return v;
    const keys = Object.keys(v);
    if (keys.length === 1) {
      const [k] = keys;
      const a = v[k];
      switch (k) {
        case 'Ref': return this.ref(a);
        case 'Fn::GetAtt': return this.getAtt(...(Array.isArray(a) ? a : String(a).split('.')) as [string, string]);
        case 'Fn::Join': return (this.resolve(a[1]) as unknown[]).join(a[0]);
        case 'Fn::Select': return this.resolve(a[1])[Number(this.resolve(a[0]))];
        case 'Fn::Split': return String(this.resolve(a[1])).split(a[0]);
        case 'Fn::Sub': {
          const [text, vars] = Array.isArray(a) ? a : [a, {}];
          return String(text).replace(/\$\{([^}]+)\}/g, (_m, name: string) => {
            if (vars[name] !== undefined) return String(this.resolve(vars[name]));
            const [res, attr] = name.split('.');
            return String(attr ? this.getAtt(res, attr) : this.ref(res));
          });
        }
        default:
          if (k.startsWith('Fn::')) throw new Error(`the local runner cannot resolve ${k}`);
      }
    }
    return Object.fromEntries(keys.map((k) => [k, this.resolve(v[k])]));
  }

  private ref(name: string): string {
    switch (name) {
      case 'AWS::Region': return this.region;
      case 'AWS::AccountId': return LOCAL_ACCOUNT;
      case 'AWS::Partition': return 'aws';
      case 'AWS::URLSuffix': return 'amazonaws.com';
      case 'AWS::StackName': return this.artifact.stackName;
      case 'AWS::NoValue': return '';
      default: return this.nameOf(name);
    }
  }

  private getAtt(id: string, attr: string): string {
    const n = this.names.get(id);
    if (!n) throw new Error(`no resource ${id} in the template`);
    if (attr === 'Arn' || attr.endsWith('Arn')) return n.arn;
    if (attr === 'QueueName') return id;
    return `${n.ref}.${attr}`;
  }
}

/** Every Task state of a definition, nested Map and Parallel states included. */
export function taskStates(definition: any): [string, any][] {
  const out: [string, any][] = [];
  const visit = (states: Record<string, any> | undefined) => {
    for (const [name, s] of Object.entries(states ?? {})) {
      if (s.Type === 'Task') out.push([name, s]);
      if (s.Type === 'Map') visit((s.ItemProcessor ?? s.Iterator)?.States);
      if (s.Type === 'Parallel') for (const b of s.Branches ?? []) visit(b.States);
    }
  };
  visit(definition.States);
  return out;
}

/** Stands in for `$$.Task.Token` in the definition; the runner puts a real token in its place when it sends. */
const TASK_TOKEN_PLACEHOLDER = '__local_task_token__';

/** aws-local-stepfunctions has no task tokens: every `"x.$": "$$.Task.Token"` becomes a placeholder literal. */
function replaceTaskTokenPaths(node: any): void {
  if (Array.isArray(node)) {
    node.forEach(replaceTaskTokenPaths);
    return;
  }
  if (node === null || typeof node !== 'object') return;
  for (const key of Object.keys(node)) {
    if (key.endsWith('.$') && node[key] === '$$.Task.Token') {
      delete node[key];
      node[key.slice(0, -2)] = TASK_TOKEN_PLACEHOLDER;
    } else {
      replaceTaskTokenPaths(node[key]);
    }
  }
}

function withToken(v: any, token: string): any {
  if (v === TASK_TOKEN_PLACEHOLDER) return token;
  if (Array.isArray(v)) return v.map((x) => withToken(x, token));
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, withToken(x, token)]));
  return v;
}

/** States entered, counted from an execution's history. */
export function statesEntered(execution: LocalExecution, stateName?: string): number {
  return execution.events.filter((e) => e.type === 'StateEntered' && (stateName === undefined || e.stateName === stateName)).length;
}

/**
 * Loads a bundled handler as a fresh module with its own view of `process.env` (the function's template
 * environment over this process's), the way a Lambda container has its own. Packages it requires (the AWS SDK,
 * which the Lambda runtime provides) come from this project's node_modules through the ambient `require`, so
 * under jest they share jest's sandbox and its environment.
 */
function loadIsolated(filename: string, env: Record<string, string>): any {
  const code = fs.readFileSync(filename, 'utf8');
  const fnEnv = { ...process.env, ...env };
  const fnProcess = new Proxy(process, { get: (target, key) => (key === 'env' ? fnEnv : Reflect.get(target, key)) });
  const dir = path.dirname(filename);
  const fnRequire = (id: string) => {
    if (id.startsWith('.') || id.startsWith('/')) return loadIsolated(require.resolve(path.resolve(dir, id)), env);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(id);
  };
  const module = { exports: {} as any };
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  new Function('exports', 'require', 'module', '__filename', '__dirname', 'process', code)(module.exports, fnRequire, module, filename, dir, fnProcess);
  return module.exports;
}

function splitHandler(handler: string): [string, string] {
  const i = handler.lastIndexOf('.');
  return [handler.slice(0, i), handler.slice(i + 1)];
}

/** The context of one invocation: the time left counts down from the function's timeout, as Lambda's does. */
function lambdaContext(fn: LocalFunction) {
  const deadline = Date.now() + fn.timeoutMs;
  return {
    functionName: fn.name,
    invokedFunctionArn: fn.arn,
    awsRequestId: `local-${Math.random().toString(16).slice(2)}`,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}
