// The local runner: executes a synthesized state machine on this machine, offline.
//
// It synthesizes the stack's app, resolves the state machine's definition (template.ts), creates the template's
// DynamoDB tables in dynalite and its queues in memory (resources.ts), loads every Lambda function from its asset
// (functions.ts), serves each Task state through a service integration (integrations.ts; task tokens in
// task-tokens.ts) and runs the ASL with aws-local-stepfunctions, with a context object (context.ts), one
// execution at a time or many at once (execution.ts). A Task it has no handler for stops the run before it
// starts: nothing ever reaches AWS. What it changes in the process (environment.ts) `stop()` undoes.
import { randomUUID } from 'crypto';
import { App, CfnResource, Stack, Stage } from 'aws-cdk-lib';
import * as cxapi from 'aws-cdk-lib/cx-api';
import type * as Alsf from 'aws-local-stepfunctions' with { 'resolution-mode': 'import' };
import type { IConstruct } from 'constructs';
import { constructPaths, findInAssembly, logicalIdOf } from './assembly';
import { type LocalEndpoint, startLocalEndpoint } from './aws-endpoint';
import { pinExecutionPaths, readsStateContext, withStateContext } from './context';
import { type EmulatedMap, type ItemReaderHandler, rewriteMaps } from './distributed-map';
import { type LocalDynamoDb, type LocalDynamoDbOptions, startDynalite, startDynaliteProcess } from './dynalite';
import { holdPromiseWithResolvers, LocalEnvironment } from './environment';
import { type ExecutionStatusChangeEvent, type ExecutionStatusListener, type LocalExecution, type LocalExecutionHandle, startExecution } from './execution';
import { assetDirResolver, LocalFunctions } from './functions';
import { httpIntegration, type HttpHandler } from './http';
import {
  builtInIntegrations, dynamoDb, emulatedMapIntegration, type IntegrationEnvironment, IntegrationRegistry, type LocalTaskHandler,
  type ServiceIntegration, taskStates,
} from './integrations';
import { createTables, LocalQueues, startEventSources } from './resources';
import type { LocalEventSource, LocalQueue } from './sqs';
import { replaceTaskTokenPaths, TaskTokens } from './task-tokens';
import { TemplateResolver, type Template } from './template';
import { nowUs as clockUs } from './timing';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const alsf: typeof Alsf = require('aws-local-stepfunctions');

export { LOCAL_ACCOUNT } from './template';
export { taskStates } from './integrations';
export type { ExecutionScope, LocalTaskHandler, ServiceIntegration, TaskStateInfo, IntegrationEnvironment } from './integrations';
export type {
  ExecutionStatus, ExecutionStatusChangeEvent, ExecutionStatusListener, LocalEvent, LocalExecution, LocalExecutionHandle, LocalExecutionStatus,
} from './execution';

/** A handler for a Task state: gets the state's effective input (after Parameters), returns its result. */
export type TaskHandler = (input: any) => unknown;

export interface LocalRunnerOptions {
  /** Handlers for Task states, by state name. They take precedence over the runner's own. */
  readonly taskHandlers?: Record<string, TaskHandler>;
  /**
   * More service integrations (by Resource ARN pattern), over the built-in ones; a later one takes precedence
   * over an earlier one. See integrations.ts.
   */
  readonly integrations?: readonly ServiceIntegration[];
  /**
   * Local stand-ins for Lambda functions of the template, by logical id or construct path: run instead of the
   * function's code, wherever it is invoked (Task states, event sources, other handlers' Lambda clients).
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
  /**
   * Local stand-ins for HTTP endpoints called by HTTP Task states (`arn:aws:states:::http:invoke`, e.g.
   * `tasks.HttpInvoke`), by URL prefix (`'https://api.example.com/v1'`); the longest matching prefix serves a call.
   * A status of 400 or more fails the state with `States.Http.StatusCode.<status>`, as Step Functions does.
   */
  readonly httpHandlers?: Record<string, HttpHandler>;
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

/** Options of `LocalRunner.fromAssembly()`. */
export interface LocalAssemblyRunnerOptions extends LocalRunnerOptions {
  /** The stack (its name, artifact id or path) when the state machine is given by logical id, or a path is ambiguous. */
  readonly stack?: string;
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

/** Options of one `LocalRunner.run()` / `startExecution()`. */
export interface LocalRunOptions {
  /** Start at this top-level state instead of StartAt (a redrive restarts at the state that failed). */
  readonly startAt?: string;
  /** `$$.Execution.RedriveCount` for this run. @default 0 */
  readonly redriveCount?: number;
  /** The execution's name (`$$.Execution.Name`, the end of its ARN). @default a random UUID */
  readonly name?: string;
}

/**
 * Runs one state machine of a stack locally. `start()` prepares everything; `run()` may be called many times,
 * concurrently; `stop()` shuts everything down and restores what the runner changed in the process.
 */
export class LocalRunner {
  /**
   * Synthesizes the stack's app and prepares a run of `stateMachine`: the construct, its construct path
   * (`'Orders/Shipping Workflow'`, or relative to the stack: `'Shipping Workflow'`) or its logical id.
   */
  public static async start(stack: Stack, stateMachine: IConstruct | string, options: LocalRunnerOptions = {}): Promise<LocalRunner> {
    const stage = Stage.of(stack) ?? (stack.node.root as App);
    const artifact = stage.synth().getStackArtifact(stack.artifactId);
    const smId = typeof stateMachine === 'string' ? stateMachine : stack.getLogicalId(stateMachine.node.defaultChild as CfnResource);
    return LocalRunner.startArtifact(artifact, smId, options);
  }

  /**
   * Prepares a run of a state machine of an app already synthesized (`cdk synth`'s output directory, `cdk.out`):
   * `stateMachine` is its construct path (`'Orders/Shipping Workflow'`) or, with `options.stack`, its logical id.
   */
  public static async fromAssembly(directory: string, stateMachine: string, options: LocalAssemblyRunnerOptions = {}): Promise<LocalRunner> {
    const { artifact, logicalId } = findInAssembly(new cxapi.CloudAssembly(directory), stateMachine, options.stack);
    return LocalRunner.startArtifact(artifact, logicalId, options);
  }

  private static async startArtifact(
    artifact: cxapi.CloudFormationStackArtifact, stateMachine: string, options: LocalRunnerOptions,
  ): Promise<LocalRunner> {
    const region = !artifact.environment.region || artifact.environment.region === cxapi.UNKNOWN_REGION ? 'us-east-1' : artifact.environment.region;
    const resolver = new TemplateResolver(artifact.template as Template, { region, stackName: artifact.stackName });
    const paths = constructPaths(artifact);
    const smId = logicalIdOf(resolver.template, paths, stateMachine, 'AWS::StepFunctions::StateMachine', artifact.stackName);
    const functionHandlers = Object.fromEntries(Object.entries(options.functionHandlers ?? {})
      .map(([ref, handler]) => [logicalIdOf(resolver.template, paths, ref, 'AWS::Lambda::Function', artifact.stackName), handler]));
    if (options.dynamoDbProcess && options.dynamoDb?.latencyMs) throw new Error('dynamoDb.latencyMs applies to the in-process dynalite: leave dynamoDbProcess unset');
    const db = options.dynamoDbProcess ? await startDynaliteProcess(options.dynamoDb) : await startDynalite(options.dynamoDb);
    let runner: LocalRunner;
    try {
      runner = new LocalRunner(resolver, smId, db, { ...options, functionHandlers }, assetDirResolver(artifact, resolver), paths);
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
  /** The ASL that runs, with every intrinsic resolved to its local value (before context paths are pinned). */
  public readonly definition: any;
  /** The template's SQS queues, by logical id. */
  public readonly queues = new Map<string, LocalQueue>();
  /** The state machine's local ARN (`$$.StateMachine.Id`). */
  public readonly stateMachineArn: string;

  private readonly stateMachineName: string;
  private readonly roleArn?: string;
  private readonly machine: Alsf.StateMachine;
  /** The running view of the definition (context paths pinned, `$$.State` given). */
  private readonly running: any;
  private readonly machinesByStart = new Map<string, Alsf.StateMachine>();
  /** Map states the runner runs itself (distributed mode, batching, item readers, tolerated failures). */
  private readonly emulatedMaps: EmulatedMap[];
  private readonly environment = new LocalEnvironment();
  private releasePolyfill?: () => void = holdPromiseWithResolvers();
  private readonly tokens = new TaskTokens();
  private readonly listeners = new Set<ExecutionStatusListener>();
  private handlers: Record<string, LocalTaskHandler> = {};
  private functions?: LocalFunctions;
  private localQueues?: LocalQueues;
  private eventSources: LocalEventSource[] = [];
  private endpoint?: LocalEndpoint;
  private stopping?: Promise<void>;

  private constructor(
    private readonly resolver: TemplateResolver,
    stateMachineId: string,
    public readonly db: LocalDynamoDb,
    private readonly options: LocalRunnerOptions,
    private readonly assetDir: (logicalId: string, code: any) => string,
    private readonly paths: ReadonlyMap<string, string> = new Map(),
  ) {
    try {
      const sm = resolver.template.Resources[stateMachineId];
      if (!sm || sm.Type !== 'AWS::StepFunctions::StateMachine') {
        throw new Error(`no state machine with logical id ${stateMachineId} in ${resolver.ref('AWS::StackName')}`);
      }
      this.stateMachineArn = resolver.arnOf(stateMachineId);
      this.stateMachineName = resolver.getAtt(stateMachineId, 'Name');
      const role = resolver.resolve(sm.Properties.RoleArn);
      this.roleArn = typeof role === 'string' ? role : undefined;
      const def = resolver.resolve(sm.Properties.DefinitionString ?? sm.Properties.Definition);
      this.definition = typeof def === 'string' ? JSON.parse(def) : def;
      const jsonata = jsonataStates(this.definition);
      if (jsonata.length > 0) throw new JsonataNotSupported(jsonata);
      this.emulatedMaps = rewriteMaps(this.definition.States);
      replaceTaskTokenPaths(this.definition);
      for (const m of this.emulatedMaps) replaceTaskTokenPaths(m.state);
      const pinned = jsonCopy(this.definition);
      pinExecutionPaths(pinned);
      // Validated as defined; the view runs unvalidated (asl-validator cannot read a view's fresh state copies).
      void new alsf.StateMachine(pinned, { validationOptions: { checkArn: false } });
      this.running = withStateContext(pinned);
      this.machine = new alsf.StateMachine(this.running, { validationOptions: { noValidate: true } });
    } catch (err) {
      this.releasePolyfill?.();
      this.environment.restore();
      throw err;
    }
  }

  /** The local name of a table or function of the template (its Ref), by logical id. */
  public nameOf(logicalId: string): string {
    return this.resolver.nameOf(logicalId);
  }

  /**
   * Runs one execution to its end. `startAt` and `redriveCount` stand in for a redrive: Step Functions restarts a
   * redriven execution at the state that failed, with that state's input, and `$$.Execution.RedriveCount` counts
   * the redrives.
   */
  public async run(input: unknown = {}, options: LocalRunOptions = {}): Promise<LocalExecution> {
    return this.startExecution(input, options).result;
  }

  /** Starts one execution and returns at once: its handle gives its result and can abort it. */
  public startExecution(input: unknown = {}, options: LocalRunOptions = {}): LocalExecutionHandle {
    return startExecution({
      machine: options.startAt === undefined ? this.machine : this.machineStartingAt(options.startAt),
      input,
      name: options.name ?? randomUUID(),
      redriveCount: options.redriveCount ?? 0,
      stateMachineArn: this.stateMachineArn,
      stateMachineName: this.stateMachineName,
      roleArn: this.roleArn,
      region: this.resolver.region,
      account: this.resolver.account,
      handlers: this.handlers,
      waitTimeOverrides: this.options.waitTimeOverrides,
      retryIntervalOverrides: this.options.retryIntervalOverrides,
      emit: (build) => {
        if (this.listeners.size === 0) return;
        const event = build();
        for (const listener of [...this.listeners]) listener(event);
      },
    });
  }

  /**
   * Calls `listener` with the "Step Functions Execution Status Change" event of every status change (RUNNING,
   * then SUCCEEDED, FAILED, TIMED_OUT or ABORTED) of this runner's executions, as an EventBridge rule on
   * `source: aws.states` receives them. Returns the function that unsubscribes.
   */
  public onExecutionStatusChange(listener: ExecutionStatusListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Fires a schedule of the template (`AWS::Scheduler::Schedule`, by logical id or construct path, e.g. a
   * RateLimiter's `addSchedule`) now, as EventBridge Scheduler does at its time: a universal DynamoDB target
   * (`arn:aws:scheduler:::aws-sdk:dynamodb:<action>`) is called on the local DynamoDB with the target's Input, a Lambda
   * function target invokes the function. Returns the call's result. Schedules never fire by themselves locally.
   */
  public async fireSchedule(schedule: string): Promise<unknown> {
    const id = logicalIdOf(this.resolver.template, this.paths, schedule, 'AWS::Scheduler::Schedule', this.resolver.ref('AWS::StackName'));
    const target = this.resolver.resolve(this.resolver.resource(id).Properties?.Target ?? {});
    const input = typeof target.Input === 'string' ? JSON.parse(target.Input) : (target.Input ?? {});
    const universal = /^arn:aws[a-z-]*:scheduler:::aws-sdk:dynamodb:([a-zA-Z]+)$/.exec(String(target.Arn));
    if (universal) {
      const resource = `arn:aws:states:::aws-sdk:dynamodb:${universal[1]}`;
      const handler = dynamoDb.handler({ name: id, resource, state: {} }, dynamoDb.resource.exec(resource)!, this.integrationEnvironment());
      if (handler) return handler(input, undefined as any);
    }
    const fn = this.functions?.byArn(target.Arn);
    if (fn) return this.functions!.invoke(fn, input);
    throw new Error(`schedule ${id}: the local runner cannot fire its target ${JSON.stringify(target.Arn)} (DynamoDB universal targets and Lambda functions only)`);
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

  /**
   * Stops the event source pollers, the local endpoint and the local DynamoDB, and restores what the runner
   * changed in the process: `process.env` as it was, `Promise.withResolvers` gone again if it was polyfilled.
   * Calling it again waits for the same shutdown.
   */
  public stop(): Promise<void> {
    this.stopping ??= this.shutDown();
    return this.stopping;
  }

  private async shutDown(): Promise<void> {
    try {
      await Promise.all(this.eventSources.map((e) => e.stop()));
      await this.endpoint?.stop();
      await this.db.stop();
    } finally {
      this.functions?.dispose();
      this.environment.restore();
      this.releasePolyfill?.();
      this.releasePolyfill = undefined;
    }
  }

  private machineStartingAt(state: string): Alsf.StateMachine {
    if (!this.definition.States[state]) throw new Error(`no top-level state "${state}" to start at`);
    let machine = this.machinesByStart.get(state);
    if (!machine) {
      machine = new alsf.StateMachine({ ...this.running, StartAt: state }, { validationOptions: { noValidate: true } });
      this.machinesByStart.set(state, machine);
    }
    return machine;
  }

  private async prepare(): Promise<void> {
    // Every SDK client a handler builds talks to the local DynamoDB.
    this.environment.set({
      AWS_ENDPOINT_URL_DYNAMODB: this.db.endpoint,
      AWS_REGION: process.env.AWS_REGION ?? this.resolver.region,
      AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? 'local',
      AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? 'local',
    });
    await createTables(this.resolver, this.db);
    const functions = LocalFunctions.load(this.resolver, {
      assetDir: this.assetDir,
      standIns: this.options.functionHandlers,
      onResult: (id, out) => this.recordGrant(id, out),
    });
    this.functions = functions;
    const queues = LocalQueues.create(this.resolver, { visibilityTimeoutMs: this.options.queueVisibilityTimeoutMs });
    this.localQueues = queues;
    for (const [id, q] of queues.byId) this.queues.set(id, q);
    // Lambda Invoke, the task-token callbacks and SQS SendMessage, for handlers' own SDK clients.
    this.endpoint = await startLocalEndpoint({
      invoke: (name, payload) => {
        const fn = functions.byArn(name);
        return fn ? functions.invoke(fn, payload) : undefined;
      },
      taskSuccess: (token, output) => this.tokens.succeed(token, output),
      taskFailure: (token, error, cause) => this.tokens.fail(token, error, cause),
      sendMessage: (queueUrl, body, groupId, attributes) => queues.byUrl(queueUrl)?.send(body, groupId, attributes),
    });
    this.environment.set({
      AWS_ENDPOINT_URL_LAMBDA: this.endpoint.url,
      AWS_ENDPOINT_URL_SFN: this.endpoint.url,
      AWS_ENDPOINT_URL_SQS: this.endpoint.url,
    });

    this.handlers = this.resolveTaskHandlers();
    this.eventSources = startEventSources(this.resolver, queues, functions);
    this.subscribeRules(functions);
  }

  /**
   * EventBridge rules of the template on Step Functions execution status changes, with Lambda targets: the runner's
   * status-change events that match a rule's pattern (source, detail-type, detail.status, detail.stateMachineArn)
   * invoke its targets, as EventBridge would (asynchronously; a failed invocation is logged, not retried).
   */
  private subscribeRules(functions: LocalFunctions): void {
    for (const [, r] of this.resolver.resourcesOfType('AWS::Events::Rule')) {
      const p = this.resolver.resolve(r.Properties);
      const pattern = p.EventPattern ?? {};
      if (!(pattern.source ?? []).includes('aws.states')) continue;
      const fns = (p.Targets ?? []).map((t: any) => functions.byArn(t.Arn)).filter((f: unknown) => f !== undefined);
      const matches = (e: ExecutionStatusChangeEvent) => (pattern['detail-type'] ?? [e['detail-type']]).includes(e['detail-type'])
        && (pattern.detail?.status ?? [e.detail.status]).includes(e.detail.status)
        && (pattern.detail?.stateMachineArn ?? [e.detail.stateMachineArn]).includes(e.detail.stateMachineArn);
      this.onExecutionStatusChange((e) => {
        if (!matches(e)) return;
        for (const fn of fns) {
          void Promise.resolve(functions.invoke(fn, e)).catch((err: unknown) => {
            process.stderr.write(`rule target failed on ${e.detail.status} of ${e.detail.name}: ${(err as Error)?.message ?? err}\n`);
          });
        }
      });
    }
  }

  /** The handler of every Task state (the emulated maps' processors included); throws naming what has none. */
  private resolveTaskHandlers(): Record<string, LocalTaskHandler> {
    const maps = this.emulatedMaps.map((m) => {
      // The emulated state's own fields are evaluated in the parent execution (paths pinned); its children are
      // executions of their own (not pinned). Its stand-in is not read when entered: its fields cannot read $$.State.
      if (readsStateContext(m.name, { ...m.state, ResultSelector: undefined })) throw new Error(`Map state "${m.name}" reads $$.State: the local runner cannot give it to a Map state it emulates`);
      const state = jsonCopy(m.state);
      pinExecutionPaths(state, true);
      if (state.ItemProcessor) state.ItemProcessor = withStateContext(m.state.ItemProcessor);
      if (state.Iterator) state.Iterator = withStateContext(m.state.Iterator);
      return { name: m.name, state };
    });
    const unread = this.emulatedMaps.filter((m) => m.state.ItemReader && !this.options.itemReaders?.[m.name]);
    if (unread.length > 0) {
      throw new Error(`the local runner cannot read the items of Map state ${unread.map((m) => `"${m.name}" (ItemReader ${m.state.ItemReader.Resource})`).join(', ')}: give it one in itemReaders (nothing is read from S3)`);
    }
    const registry = new IntegrationRegistry([
      ...builtInIntegrations(),
      emulatedMapIntegration(maps, { alsf, itemReaders: this.options.itemReaders }),
      ...(this.options.httpHandlers ? [httpIntegration(this.options.httpHandlers)] : []),
      ...(this.options.integrations ?? []),
    ]);
    const env = this.integrationEnvironment();
    const tasks = [
      ...taskStates(this.definition),
      ...this.emulatedMaps.flatMap((m) => taskStates(m.state.ItemProcessor ?? m.state.Iterator)),
    ].map(([name, state]) => ({ name, state, resource: String(state.Resource) }));
    return registry.handlersFor(tasks, env, this.options.taskHandlers);
  }

  /** What the service integrations get: the local services of this run. */
  private integrationEnvironment(): IntegrationEnvironment {
    return {
      region: this.resolver.region,
      account: this.resolver.account,
      functions: this.functions!,
      db: this.db,
      tokens: this.tokens,
      queueByUrl: (url) => this.localQueues!.byUrl(url),
    };
  }

  /**
   * Every admission a limiter function grants is recorded: tests judge the limit at these decisions, which a
   * loaded machine cannot move (the downstream's own clock can be late by any scheduling delay).
   */
  private recordGrant(functionLogicalId: string, out: any): void {
    if (out && out.admitted === true && typeof out.notBeforeUs === 'number') {
      this.grants.push({ functionLogicalId, key: String(out.key), atUs: out.notBeforeUs, tokens: Number(out.tokens), returnedAtUs: clockUs() });
    }
  }
}

/**
 * A deep copy by JSON: objects of this realm. (structuredClone's are of Node's main realm under jest, which
 * aws-local-stepfunctions does not take for plain objects: it would leave their payload templates unevaluated.)
 */
function jsonCopy<T>(value: T): T {
  return JSON.parse(JSON.stringify(value));
}

/** States entered, counted from an execution's history. */
export function statesEntered(execution: LocalExecution, stateName?: string): number {
  return execution.events.filter((e) => e.type === 'StateEntered' && (stateName === undefined || e.stateName === stateName)).length;
}

/**
 * A state machine with JSONata states: aws-local-stepfunctions 3.0.0 runs none (it would silently ignore their
 * Arguments and Output), so the runner refuses to start, naming them.
 */
export class JsonataNotSupported extends Error {
  public readonly name = 'JsonataNotSupported';

  constructor(public readonly states: string[]) {
    super(`the local runner cannot run JSONata states (aws-local-stepfunctions 3.0.0 evaluates no JSONata): ${states.join(', ')}. `
      + 'Run the JSONPath rendering of the same constructs locally, and check JSONata renderings with the jsonata package');
  }
}

/** The states of a definition that are JSONata (their own QueryLanguage, or the machine's), nested ones as `Parent/Child`. */
export function jsonataStates(definition: any): string[] {
  const found: string[] = [];
  const visit = (graph: any, inherited: string, prefix: string) => {
    for (const [name, state] of Object.entries<any>(graph?.States ?? {})) {
      const lang = state.QueryLanguage ?? inherited;
      if (lang === 'JSONata') found.push(`${prefix}${name}`);
      for (const b of state.Branches ?? []) visit(b, lang, `${prefix}${name}/`);
      if (state.ItemProcessor) visit(state.ItemProcessor, lang, `${prefix}${name}/`);
      if (state.Iterator) visit(state.Iterator, lang, `${prefix}${name}/`);
    }
  };
  visit(definition, definition.QueryLanguage ?? 'JSONPath', '');
  return found;
}
