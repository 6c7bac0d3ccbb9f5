// Service integrations of the local runner: what runs in place of a Task state's Resource, as a registry of small
// resolvers keyed by a pattern over the Resource ARN. The built-in ones serve what the runner has served so far
// (a Lambda function ARN, lambda:invoke, sqs:sendMessage with or without .waitForTaskToken, DynamoDB, the
// runner's Distributed Map emulation). To serve another service, register one more:
//
//   const sns: ServiceIntegration = {
//     name: 'SNS Publish',
//     resource: /^arn:aws:states:::sns:publish$/,
//     handler: (task, match, env) => (input) => ({ MessageId: `local-${input.TopicArn}` }),
//   };
//   LocalRunner.start(stack, machine, { integrations: [sns] });
//
// A handler gets the state's effective input (after Parameters) and the execution it runs for (its context
// object, an AbortSignal that aborts when the execution stops); it returns the result, or throws an error whose
// `name` is the Step Functions error. Registered integrations take precedence over those registered before them
// (so over the built-in ones), and `taskHandlers` (by state name) over every integration.
import * as ddb from '@aws-sdk/client-dynamodb';
import type * as Alsf from 'aws-local-stepfunctions' with { 'resolution-mode': 'import' };
import { serviceErrorStatus } from './aws-endpoint';
import { EMULATED_MAP_RESOURCE, type EmulatedMap, emulatedMapHandler, type ItemReaderHandler } from './distributed-map';
import type { LocalDynamoDb } from './dynalite';
import type { LocalFunctions } from './functions';
import type { LocalQueue } from './sqs';
import { type TaskTokens, withToken } from './task-tokens';

/** The execution a Task state runs for. */
export interface ExecutionScope {
  readonly executionArn: string;
  /** The execution's context object (`$$`), as the runner gives it to aws-local-stepfunctions. */
  readonly context: Record<string, any>;
  /** Aborts when the execution stops (ended, aborted, timed out): release whatever waits for it. */
  readonly signal: AbortSignal;
  /** The execution's aws-local-stepfunctions run options (task handlers bound to it, overrides, context). */
  readonly runOptions: { readonly context: Record<string, any>; readonly [option: string]: unknown };
}

/** What runs in place of a Task state: gets the state's effective input and its execution, returns the result. */
export type LocalTaskHandler = (input: any, execution: ExecutionScope) => unknown;

/** One Task state of the definition. */
export interface TaskStateInfo {
  readonly name: string;
  readonly resource: string;
  /** The state's ASL. */
  readonly state: any;
}

/** What the runner offers integrations. */
export interface IntegrationEnvironment {
  readonly region: string;
  readonly account: string;
  readonly functions: LocalFunctions;
  readonly db: LocalDynamoDb;
  readonly tokens: TaskTokens;
  /** The queue of the template with this URL, if any. */
  queueByUrl(url: unknown): LocalQueue | undefined;
}

/** A resolver of Task states of one kind of Resource. */
export interface ServiceIntegration {
  /** For messages. */
  readonly name: string;
  /** The Resource ARNs it serves. */
  readonly resource: RegExp;
  /**
   * The handler of one Task state whose Resource matched, or undefined when this state is not one it can serve
   * after all (e.g. a function that is not in the template): the next integration is asked then.
   */
  handler(task: TaskStateInfo, match: RegExpExecArray, env: IntegrationEnvironment): LocalTaskHandler | undefined;
}

/**
 * Task states the runner cannot serve (no built-in integration, no handler given): thrown before anything runs,
 * naming every one with its Resource.
 */
export class UnsupportedTaskStates extends Error {
  public readonly name = 'UnsupportedTaskStates';

  constructor(public readonly states: string[]) {
    super(`the local runner has no handler for Task state ${states.join(', ')}: give it one in taskHandlers (by state name), `
      + 'httpHandlers (HTTP endpoints, by URL prefix), functionHandlers (Lambda functions) or a ServiceIntegration in integrations (nothing is sent to AWS)');
  }
}

/** Service integrations, the most recently registered first. */
export class IntegrationRegistry {
  private readonly integrations: ServiceIntegration[] = [];

  constructor(integrations: readonly ServiceIntegration[] = []) {
    for (const i of integrations) this.register(i);
  }

  /** Adds an integration; it takes precedence over every one registered before. */
  public register(integration: ServiceIntegration): this {
    this.integrations.unshift(integration);
    return this;
  }

  /** The integrations, in the order they are asked. */
  public get all(): readonly ServiceIntegration[] {
    return [...this.integrations];
  }

  /** The handler for one Task state, or undefined when no integration serves its Resource. */
  public handlerFor(task: TaskStateInfo, env: IntegrationEnvironment): LocalTaskHandler | undefined {
    for (const integration of this.integrations) {
      integration.resource.lastIndex = 0;
      const match = integration.resource.exec(task.resource);
      if (!match) continue;
      const handler = integration.handler(task, match, env);
      if (handler) return handler;
    }
    return undefined;
  }

  /**
   * The handler of every Task state, by state name: `byName` first, then the integrations. Throws naming every
   * state (and its Resource) no one serves.
   */
  public handlersFor(
    tasks: readonly TaskStateInfo[],
    env: IntegrationEnvironment,
    byName: Record<string, LocalTaskHandler> = {},
  ): Record<string, LocalTaskHandler> {
    const handlers: Record<string, LocalTaskHandler> = {};
    const missing: string[] = [];
    for (const task of tasks) {
      const handler = byName[task.name] ?? this.handlerFor(task, env);
      if (handler) handlers[task.name] = handler;
      else missing.push(`"${task.name}" (Resource ${task.resource})`);
    }
    if (missing.length > 0) throw new UnsupportedTaskStates(missing);
    return handlers;
  }
}

/** An error as Step Functions names it: `<prefix>.<name>`. */
function named(err: unknown, prefix: string): Error {
  return Object.assign(new Error((err as Error).message), { name: `${prefix}.${(err as Error).name}` });
}

/** A Task whose Resource is a function's ARN: the function runs with the state's input. */
export const lambdaFunctionArn: ServiceIntegration = {
  name: 'Lambda function ARN',
  resource: /^arn:aws:lambda:/,
  handler: (task, _match, env) => {
    const fn = env.functions.byArn(task.resource);
    return fn ? (input) => env.functions.invoke(fn, input) : undefined;
  },
};

/** `arn:aws:states:::lambda:invoke`: the function named by FunctionName, with Payload; the Lambda Invoke answer. */
export const lambdaInvoke: ServiceIntegration = {
  name: 'Lambda Invoke',
  resource: /^arn:aws:states:::lambda:invoke$/,
  handler: (_task, _match, env) => async (input) => {
    const fn = env.functions.byArn(input.FunctionName);
    if (!fn) throw Object.assign(new Error(`function ${input.FunctionName} is not in the template`), { name: 'Lambda.ResourceNotFoundException' });
    try {
      return { StatusCode: 200, ExecutedVersion: '$LATEST', Payload: await env.functions.invoke(fn, input.Payload) };
    } catch (err) {
      // Step Functions names the Lambda service's own errors Lambda.<Exception>.
      if (serviceErrorStatus(err) !== undefined) throw named(err, 'Lambda');
      throw err;
    }
  },
};

/**
 * `arn:aws:states:::lambda:invoke.waitForTaskToken`: the function runs with its Payload (a fresh token in place of
 * `$$.Task.Token`); the task waits until SendTaskSuccess/Failure settles the token (the function may do it itself).
 */
export const lambdaInvokeWaitForToken: ServiceIntegration = {
  name: 'Lambda Invoke (wait for task token)',
  resource: /^arn:aws:states:::lambda:invoke\.waitForTaskToken$/,
  handler: (_task, _match, env) => (input, execution) => {
    const fn = env.functions.byArn(input.FunctionName);
    if (!fn) throw Object.assign(new Error(`function ${input.FunctionName} is not in the template`), { name: 'Lambda.ResourceNotFoundException' });
    const { token, result } = env.tokens.issue(execution.signal);
    if (execution.signal.aborted) return result;
    return Promise.resolve(env.functions.invoke(fn, withToken(input.Payload, token))).then(() => result, (err: unknown) => {
      // the invoke failed: the task fails with the function's error; its token is never settled (and is rejected,
      // unheard, when the execution stops)
      result.catch(() => undefined);
      if (serviceErrorStatus(err) !== undefined) throw named(err, 'Lambda');
      throw err;
    });
  },
};

/**
 * `arn:aws:states:::sqs:sendMessage`, and with `.waitForTaskToken`: the message goes to the template's queue with
 * a fresh token in place of `$$.Task.Token`; the task waits until SendTaskSuccess/Failure settles the token.
 */
export const sqsSendMessage: ServiceIntegration = {
  name: 'SQS SendMessage',
  resource: /^arn:aws:states:::sqs:sendMessage(\.waitForTaskToken)?$/,
  handler: (_task, match, env) => {
    const waits = match[1] !== undefined;
    const text = (body: unknown) => (typeof body === 'string' ? body : JSON.stringify(body));
    return (input, execution) => {
      const queue = env.queueByUrl(input.QueueUrl);
      if (!queue) throw Object.assign(new Error(`queue ${input.QueueUrl} is not in the template`), { name: 'SQS.QueueDoesNotExistException' });
      if (!waits) return { MessageId: queue.send(text(input.MessageBody), input.MessageGroupId) };
      const { token, result } = env.tokens.issue(execution.signal);
      if (!execution.signal.aborted) queue.send(text(withToken(input.MessageBody, token)), input.MessageGroupId);
      return result;
    };
  },
};

/** `arn:aws:states:::dynamodb:<action>` (and `aws-sdk:dynamodb:<action>`): the call, on the local DynamoDB. */
export const dynamoDb: ServiceIntegration = {
  name: 'DynamoDB',
  resource: /^arn:aws:states:::(?:aws-sdk:)?dynamodb:([a-zA-Z]+)$/,
  handler: (_task, match, env) => {
    const command = (ddb as any)[`${match[1][0].toUpperCase()}${match[1].slice(1)}Command`];
    if (!command) return undefined;
    return async (input) => {
      try {
        const { $metadata, ...out } = await env.db.client.send(new command(input));
        void $metadata;
        return out;
      } catch (err) {
        // Step Functions names service errors DynamoDB.<Exception>; the optimized integration reports a request
        // DynamoDB rejects as invalid (ValidationException, e.g. an update of a missing attribute) as
        // DynamoDB.AmazonDynamoDBException, which the AWS sample semaphore catches to initialize its lock item.
        if (!match[0].includes('aws-sdk:') && (err as Error).name === 'ValidationException') {
          throw Object.assign(new Error((err as Error).message), { name: 'DynamoDB.AmazonDynamoDBException' });
        }
        throw named(err, 'DynamoDB');
      }
    };
  },
};

/** The integrations every runner has. */
export function builtInIntegrations(): ServiceIntegration[] {
  return [lambdaFunctionArn, lambdaInvoke, lambdaInvokeWaitForToken, sqsSendMessage, dynamoDb];
}

/** The Task states that stand in for the Map states the runner emulates (distributed-map.ts), by state name. */
export function emulatedMapIntegration(maps: readonly EmulatedMap[], options: {
  readonly alsf: typeof Alsf;
  readonly itemReaders?: Record<string, ItemReaderHandler>;
}): ServiceIntegration {
  const handlers = new Map(maps.map((m) => [m.name, emulatedMapHandler(m, { alsf: options.alsf, itemReader: options.itemReaders?.[m.name] })]));
  return {
    name: 'Distributed Map emulation',
    resource: new RegExp(`^${EMULATED_MAP_RESOURCE.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`),
    handler: (task) => {
      const handler = handlers.get(task.name);
      return handler ? (input, execution) => handler(input, execution) : undefined;
    },
  };
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
  visit(definition?.States);
  return out;
}
