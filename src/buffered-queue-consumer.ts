import { Annotations, Duration, RemovalPolicy, Token, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { AcquireMode, AcquireOptions } from './acquire';
import { IRateLimiter } from './i-rate-limiter';
import { consumedAmount, isMultiLimit } from './private/acquire-task';
import { DEADLINE_MARGIN_MS, DEFAULT_KEY, DispatcherEnv, ReporterEnv, TASK_TOKEN_FIELD } from './private/contract';
import { DeadLetterReporterFunction } from './private/dead-letter-reporter-function';
import { DispatchFunction } from './private/dispatch-function';
import { handlerRole, limiterEnvironment } from './private/handler-function';
import { expr, JSONATA, languageValidation, mergeAt, pathOfToken, readsJsonPath, taskLanguage, userExpression } from './private/query-language';
import { checkRange, fail } from './private/validation';

/** Lambda's default timeout, for a function whose timeout is not known. */
const LAMBDA_DEFAULT_TIMEOUT = Duration.seconds(3);
/** The dead-letter reporter's timeout: a SendTaskFailure and a SendMessage per message of a batch of 10. */
const REPORTER_TIMEOUT = Duration.seconds(30);
/** Receives the reporter gets for a message before the internal queue hands it to the DLQ itself. */
const REPORTER_RECEIVES = 5;

/**
 * Options of `QueueTarget.dispatch()`: the bundled dispatcher, what it takes from a limiter, and its function.
 */
export interface DispatchOptions {
  /**
   * A rate limit the dispatcher takes from before each invocation of the target (RESERVE: it waits for its slot).
   *
   * @default - no rate limit: `maxConcurrency` alone bounds the load
   */
  readonly limiter?: IRateLimiter;

  /**
   * What each invocation takes from `limiter`: a literal `key` (the dispatcher takes from one bucket) and
   * `consume`. The mode is RESERVE (a refused message would be redelivered and count a receive).
   *
   * @default - one request from the 'default' bucket
   */
  readonly acquire?: AcquireOptions;

  /**
   * The target's timeout, when the target is an imported function (its timeout is not known here). The
   * dispatcher starts an invoke (and takes its token) only while this plus a 3 s margin still fits in what is left
   * of its own run, so a target that may run longer than this can be cut off and run again: give its real
   * timeout.
   *
   * @default - the target's own timeout when it is a `lambda.Function` of this app (3 s when it sets none);
   * for an imported function, 3 s (Lambda's default timeout) with a synth warning
   */
  readonly targetTimeout?: Duration;

  /**
   * The dispatcher's timeout: long enough for a batch of invocations and the waits for their tokens. At least the
   * target's timeout + 3 s (a synth error otherwise); messages the dispatcher cannot start in time are returned to
   * the queue.
   *
   * @default - 1 minute, or 2 × the target's timeout + 3 s when that is longer (at most 15 minutes)
   */
  readonly dispatcherTimeout?: Duration;

  /**
   * Memory of the dispatcher, MB. Valid range: 128 to 10,240.
   *
   * @default 128
   */
  readonly memorySize?: number;

  /**
   * Architecture of the dispatcher.
   *
   * @default lambda.Architecture.ARM_64
   */
  readonly architecture?: lambda.Architecture;

  /**
   * Retention of the dispatcher's log group (ignored when `logGroup` is given).
   *
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;

  /**
   * Log group of the dispatcher.
   *
   * @default - a new log group with `logRetention`
   */
  readonly logGroup?: logs.ILogGroup;

  /**
   * X-Ray tracing of the dispatcher.
   *
   * @default lambda.Tracing.ACTIVE
   */
  readonly tracing?: lambda.Tracing;
}

/**
 * What drains a `BufferedQueueConsumer`'s queue: your function taking SQS batches, or the bundled dispatcher
 * invoking a function once per message.
 */
export class QueueTarget {
  /**
   * Your function, handling SQS batches itself. It must return `{ batchItemFailures }` (partial batch failures are
   * on).
   */
  public static batchConsumer(fn: lambda.IFunction): QueueTarget {
    return new QueueTarget(fn, undefined);
  }

  /**
   * `fn` invoked by the bundled dispatcher once per message, synchronously, with the message body (parsed as JSON
   * when it is JSON). A message whose invocation fails is redelivered; with `options.limiter`, each invocation
   * first takes its tokens. Results can go back to waiting workflows (`sendMessageTask({ waitForResult })`).
   */
  public static dispatch(fn: lambda.IFunction, options: DispatchOptions = {}): QueueTarget {
    return new QueueTarget(fn, options);
  }

  private constructor(
    /** The function: the batch consumer, or the function the dispatcher invokes. */
    public readonly targetFunction: lambda.IFunction,
    /** The dispatcher's options; undefined for a batch consumer. */
    public readonly dispatchOptions: DispatchOptions | undefined,
  ) {}
}

/**
 * Properties of `BufferedQueueConsumer`.
 */
export interface BufferedQueueConsumerProps {
  /**
   * What drains the queue: `QueueTarget.batchConsumer(fn)` (your function takes SQS batches) or
   * `QueueTarget.dispatch(fn, { limiter, acquire })` (the bundled dispatcher invokes `fn` once per message).
   */
  readonly target: QueueTarget;

  /**
   * Batches processed at once: the event source's maximum concurrency (2 to 1,000). This is the concurrency
   * throttle — not reserved concurrency, which makes the poller over-pull and send good messages to the DLQ.
   *
   * @default 2
   */
  readonly maxConcurrency?: number;

  /**
   * Messages per batch (1 to 10; up to 10,000 on a standard queue with `maxBatchingWindow`).
   *
   * @default 10
   */
  readonly batchSize?: number;

  /**
   * How long the event source gathers messages before invoking with a partial batch (up to 5 minutes).
   *
   * @default - no batching window
   */
  readonly maxBatchingWindow?: Duration;

  /**
   * A FIFO queue: messages of one group are processed in order, one at a time.
   *
   * @default false
   */
  readonly fifo?: boolean;

  /**
   * Use this queue instead of creating one (its DLQ, encryption and visibility timeout are its own).
   *
   * @default - a new encrypted queue with a DLQ
   */
  readonly existingQueue?: sqs.IQueue;

  /**
   * How long a received message stays invisible. At least 6 × the consumer's timeout (AWS's guidance for SQS
   * event sources): less is a synth error.
   *
   * @default - 6 × the consumer's timeout
   */
  readonly visibilityTimeout?: Duration;

  /**
   * Receives before a message moves to the dead-letter queue (1 to 1,000).
   *
   * @default 5
   */
  readonly maxReceiveCount?: number;

  /**
   * How long the dead-letter queue keeps messages.
   *
   * @default Duration.days(14)
   */
  readonly deadLetterRetention?: Duration;

  /**
   * Removal policy of the queues created here.
   *
   * @default RemovalPolicy.DESTROY
   */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * Options of `BufferedQueueConsumer.sendMessageTask()`.
 */
export interface SendMessageTaskOptions {
  /** The message body (the input of the dispatched function with `QueueTarget.dispatch`). */
  readonly messageBody: sfn.TaskInput;

  /**
   * Wait for the target's result: the task gets a task token, the dispatcher reports the target's output
   * (`SendTaskSuccess`) or error (`SendTaskFailure`) back to the execution. A message that ends in the
   * dead-letter queue instead fails its execution with `DispatchFailed` (a dead-letter reporter this construct
   * adds does it), and so does a result Step Functions cannot take (over 256 KiB). `QueueTarget.dispatch` only, and not
   * with `existingQueue` (its dead-letter queue is not known here: a synth error).
   *
   * @default false
   */
  readonly waitForResult?: boolean;

  /**
   * FIFO message group (a JSONPath or a literal). Required on a FIFO queue.
   *
   * @default - none
   */
  readonly messageGroupId?: string;

  /**
   * How long the workflow waits for the result (with `waitForResult`).
   *
   * @default - the state machine's timeout
   */
  readonly taskTimeout?: sfn.Timeout;

  /**
   * Where the task's result goes.
   *
   * @default '$'
   */
  readonly resultPath?: string;

  /**
   * The query language of the state machine the task renders into, needed only when it is nested in a Parallel or
   * Map of yours in a JSONata machine (aws-cdk-lib renders nested states without the machine's language). In a
   * JSONata machine `messageBody` holds JSONata expressions (`TaskInput.fromText('{% $states.input %}')`), in a
   * JSONPath machine JSONPath ones (`TaskInput.fromJsonPathAt('$')`); the other form fails the synth.
   *
   * @default - the state machine's, decided when it is rendered
   */
  readonly queryLanguage?: sfn.QueryLanguage;
}

/**
 * An SQS buffer between producers (often state machines) and a consumer that drains it at what the downstream
 * can take: bounded concurrency, partial batch failures, a dead-letter queue, and — with `QueueTarget.dispatch` — a
 * dispatcher that invokes the target once per message, optionally at a strict rate, and reports results back
 * to waiting workflows.
 */
export class BufferedQueueConsumer extends Construct {
  /** The buffer. */
  public readonly queue: sqs.IQueue;
  /** Where messages go after `maxReceiveCount` receives (undefined with `existingQueue`). */
  public readonly deadLetterQueue?: sqs.IQueue;
  /** The function the event source invokes: your consumer, or the dispatcher. */
  public readonly consumerFunction: lambda.IFunction;
  /** What drains the queue. */
  public readonly target: QueueTarget;
  /** The function the dispatcher invokes once per message (`QueueTarget.dispatch`); undefined for a batch consumer. */
  public readonly dispatchedFunction?: lambda.IFunction;
  /** The most consumer (or dispatcher) invocations at once. */
  public readonly maxConcurrency: number;
  /** Messages per invocation. */
  public readonly batchSize: number;
  /** Whether the buffer is a FIFO queue. */
  public readonly fifo: boolean;
  private readonly dispatcherRole?: iam.IRole;
  private waitingTasks = 0;
  /** The send tasks handed out (checked against their machines' query language). */
  private readonly sendTasks: sfn.State[] = [];
  private readonly resultsFrom = new Set<string>();
  /** The state machines allowed to receive results (the reporter may fail their tasks too). */
  private readonly resultMachines: sfn.IStateMachine[] = [];
  private readonly maxReceiveCount: number;
  private readonly removalPolicy: RemovalPolicy;
  private readonly deadLetterRetention: Duration;
  /** The dead-letter reporter's role, once a task waits for results. */
  private reporterRole?: iam.IRole;

  constructor(scope: Construct, id: string, props: BufferedQueueConsumerProps) {
    super(scope, id);
    this.target = props.target;
    const dispatch = props.target.dispatchOptions;
    if (dispatch?.acquire !== undefined && !dispatch.limiter) {
      fail(this, `target's acquire needs a limiter, got acquire ${JSON.stringify(dispatch.acquire)} and no limiter`);
    }
    this.fifo = props.fifo ?? false;
    this.maxConcurrency = props.maxConcurrency ?? 2;
    checkRange(this, 'maxConcurrency', this.maxConcurrency, { min: 2, max: 1000, integer: true });
    this.batchSize = props.batchSize ?? 10;
    const maxBatch = this.fifo || !props.maxBatchingWindow ? 10 : 10_000;
    checkRange(this, 'batchSize', this.batchSize, {
      min: 1, max: maxBatch, integer: true, why: maxBatch === 10 ? 'up to 10,000 needs a standard queue and maxBatchingWindow' : undefined,
    });
    if (props.maxBatchingWindow) checkRange(this, 'maxBatchingWindow (s)', props.maxBatchingWindow.toSeconds(), { min: 0, max: 300 });
    if (this.fifo && props.maxBatchingWindow) fail(this, 'maxBatchingWindow is not supported on FIFO queues, got fifo: true with a batching window');
    const maxReceiveCount = props.maxReceiveCount ?? 5;
    checkRange(this, 'maxReceiveCount', maxReceiveCount, { min: 1, max: 1000, integer: true });
    this.maxReceiveCount = maxReceiveCount;
    this.removalPolicy = props.removalPolicy ?? RemovalPolicy.DESTROY;
    this.deadLetterRetention = props.deadLetterRetention ?? Duration.days(14);
    if (props.existingQueue) {
      for (const [name, given] of [['visibilityTimeout', props.visibilityTimeout], ['maxReceiveCount', props.maxReceiveCount], ['deadLetterRetention', props.deadLetterRetention]] as const) {
        if (given !== undefined) fail(this, `${name} configures the queue this construct creates: set it on existingQueue instead`);
      }
      if (props.existingQueue.fifo !== this.fifo) {
        fail(this, `fifo must match existingQueue: the queue is ${props.existingQueue.fifo ? 'FIFO' : 'standard'}, got fifo: ${this.fifo}`);
      }
    }

    // The consumer: yours, or the dispatcher in front of the target.
    let consumerTimeout: Duration;
    if (!dispatch) {
      const consumer = props.target.targetFunction;
      this.consumerFunction = consumer;
      consumerTimeout = consumer instanceof lambda.Function ? consumer.timeout ?? LAMBDA_DEFAULT_TIMEOUT : LAMBDA_DEFAULT_TIMEOUT;
      const reserved = (consumer.node.defaultChild as lambda.CfnFunction | undefined)?.reservedConcurrentExecutions;
      if (reserved !== undefined) {
        Annotations.of(this).addWarningV2('cdk-sfn-throttle:consumerReservedConcurrency',
          `the consumer has reserved concurrency ${reserved}: the SQS poller pulls batches for up to maxConcurrency ${this.maxConcurrency} functions and throttled invocations return messages to the queue, `
          + 'counting receives — good messages can reach the DLQ. Use maxConcurrency alone as the throttle.');
      }
    } else {
      const targetFunction = props.target.targetFunction;
      const targetTimeout = this.targetTimeoutOf(targetFunction, dispatch.targetTimeout);
      // The dispatcher starts an invoke only with the target's timeout plus the margin left: it must have that much.
      const neededS = Math.ceil((targetTimeout.toMilliseconds() + DEADLINE_MARGIN_MS) / 1000);
      if (neededS > 900) {
        fail(this, `the target's timeout (${targetTimeout.toSeconds()} s) + a ${DEADLINE_MARGIN_MS / 1000} s margin = ${neededS} s is more than a dispatcher may run (900 s): `
          + 'lower the target\'s timeout, or give it as consumer (your function handles the batches)');
      }
      const dispatcherTimeout = dispatch.dispatcherTimeout ?? Duration.seconds(Math.min(900, Math.max(60, 2 * neededS - DEADLINE_MARGIN_MS / 1000)));
      checkRange(this, 'dispatcherTimeout (s)', dispatcherTimeout.toSeconds(), { min: 1, max: 900, integer: true });
      if (dispatcherTimeout.toSeconds() < neededS) {
        fail(this, `dispatcherTimeout must be at least the target's timeout (${targetTimeout.toSeconds()} s) + a ${DEADLINE_MARGIN_MS / 1000} s margin = ${neededS} s, `
          + `got ${dispatcherTimeout.toSeconds()} s: the dispatcher could never start an invoke`);
      }
      consumerTimeout = dispatcherTimeout;
      this.dispatchedFunction = targetFunction;
      const dispatcher = this.dispatcher(targetFunction, dispatch, dispatcherTimeout, targetTimeout);
      this.consumerFunction = dispatcher;
      this.dispatcherRole = dispatcher.role;
    }

    // The buffer.
    if (props.existingQueue) {
      this.queue = props.existingQueue;
    } else {
      const visibilityTimeout = props.visibilityTimeout ?? Duration.seconds(consumerTimeout.toSeconds() * 6);
      const minimum = consumerTimeout.toSeconds() * 6;
      if (!Token.isUnresolved(visibilityTimeout.toSeconds()) && visibilityTimeout.toSeconds() < minimum) {
        fail(this, `visibilityTimeout must be at least 6 × the consumer's timeout (${consumerTimeout.toSeconds()} s) = ${minimum} s, got ${visibilityTimeout.toSeconds()} s`);
      }
      checkRange(this, 'visibilityTimeout (s)', visibilityTimeout.toSeconds(), { min: 0, max: 43_200, integer: true, why: '12 hours at most' });
      const retention = this.deadLetterRetention;
      checkRange(this, 'deadLetterRetention (s)', retention.toSeconds(), { min: 60, max: 1_209_600, integer: true, why: '1 minute to 14 days' });
      const dlq = new sqs.Queue(this, 'DeadLetterQueue', {
        fifo: this.fifo || undefined,
        retentionPeriod: retention,
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
        removalPolicy: props.removalPolicy ?? RemovalPolicy.DESTROY,
      });
      this.deadLetterQueue = dlq;
      this.queue = new sqs.Queue(this, 'Queue', {
        fifo: this.fifo || undefined,
        contentBasedDeduplication: this.fifo || undefined,
        visibilityTimeout,
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
        deadLetterQueue: { queue: dlq, maxReceiveCount },
        removalPolicy: props.removalPolicy ?? RemovalPolicy.DESTROY,
      });
      for (const rule of ['AwsSolutions-SQS3', 'Serverless-SQSRedrivePolicy']) {
        Validations.of(dlq).acknowledge({ id: rule, reason: 'this queue is the dead-letter queue' });
      }
    }

    this.node.addValidation({
      validate: () => (this.waitingTasks > 0 && this.resultsFrom.size === 0
        ? ['sendMessageTask(..., { waitForResult: true }) is used but the dispatcher may not report results: call allowResultsFrom(stateMachine) for each state machine that waits']
        : []),
    });

    // The mapping lives here (what SqsEventSource would add to the function), so its acknowledgement is exact.
    const mapping = new lambda.EventSourceMapping(this, 'EventSource', {
      target: this.consumerFunction,
      eventSourceArn: this.queue.queueArn,
      batchSize: this.batchSize,
      maxBatchingWindow: props.maxBatchingWindow,
      maxConcurrency: this.maxConcurrency,
      reportBatchItemFailures: true,
    });
    this.queue.grantConsumeMessages(this.consumerFunction);
    Validations.of(mapping).acknowledge({
      id: 'Serverless-LambdaEventSourceMappingDestination',
      reason: 'an SQS event source hands failed messages back to the queue, whose redrive policy sends them to the DLQ after maxReceiveCount receives',
    });
  }

  /**
   * A task that sends a message to the buffer. With `waitForResult` the task waits for its token: the
   * dispatcher sends the target's output (or error) back to the execution.
   */
  public sendMessageTask(scope: Construct, id: string, options: SendMessageTaskOptions): tasks.SqsSendMessage {
    if (options.waitForResult && !this.dispatchedFunction) {
      fail(this, 'waitForResult needs QueueTarget.dispatch: only the dispatcher reports results back, got QueueTarget.batchConsumer');
    }
    if (options.waitForResult && !this.deadLetterQueue) {
      fail(this, 'waitForResult needs the queue this construct creates, got existingQueue: its dead-letter queue is not known here, so a message '
        + 'it dead-letters could never fail its waiting execution (which would wait until its timeout). Leave existingQueue unset, or hand off without waitForResult.');
    }
    if (this.fifo && options.messageGroupId === undefined) fail(this, 'messageGroupId is required on a FIFO queue, got none');
    if (!this.fifo && options.messageGroupId !== undefined) fail(this, `messageGroupId applies to FIFO queues only, got ${options.messageGroupId}`);
    if (options.waitForResult) {
      this.waitingTasks++;
      this.reportDeadLetters();
    }
    if (this.sendTasks.length === 0) this.node.addValidation(languageValidation(this, () => this.sendTasks));
    const body = options.waitForResult
      ? sfn.TaskInput.fromObject({ [TASK_TOKEN_FIELD]: sfn.JsonPath.taskToken, input: options.messageBody.value })
      : options.messageBody;
    // a group id given as a path ('$.tenant', or JsonPath.stringAt) is read from the input, not sent as a literal
    const groupId = options.messageGroupId === undefined ? undefined : pathOfToken(options.messageGroupId);
    const task = new LanguageSqsSendMessage(scope, id, {
      queue: this.queue,
      messageBody: body,
      messageGroupId: groupId !== undefined && groupId.startsWith('$') ? sfn.JsonPath.stringAt(groupId) : groupId,
      integrationPattern: options.waitForResult ? sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN : sfn.IntegrationPattern.REQUEST_RESPONSE,
      taskTimeout: options.taskTimeout,
      resultPath: options.resultPath,
      queryLanguage: options.queryLanguage,
    }, {
      userBody: options.messageBody,
      messageGroupId: groupId,
      tokenField: options.waitForResult ? TASK_TOKEN_FIELD : undefined,
      hint: options.queryLanguage,
    });
    this.sendTasks.push(task);
    return task;
  }

  /**
   * Lets the dispatcher report results (`SendTaskSuccess`/`SendTaskFailure`) to the executions of
   * `stateMachine` that wait with `sendMessageTask(..., { waitForResult: true })`. Exactly that state machine.
   */
  public allowResultsFrom(stateMachine: sfn.IStateMachine): void {
    if (!this.dispatcherRole) fail(this, 'allowResultsFrom needs QueueTarget.dispatch (the dispatcher reports results), got QueueTarget.batchConsumer');
    if (this.resultsFrom.has(stateMachine.node.path)) return;
    stateMachine.grantTaskResponse(this.dispatcherRole);
    if (this.reporterRole) stateMachine.grant(this.reporterRole, 'states:SendTaskFailure');
    this.resultsFrom.add(stateMachine.node.path);
    this.resultMachines.push(stateMachine);
  }

  /** Grants sending messages to the buffer (and using its key, if any). */
  public grantSendMessages(grantee: iam.IGrantable): iam.Grant {
    return this.queue.grantSendMessages(grantee);
  }

  /** Messages waiting in the buffer. @default - maximum over 1 minute */
  public metricQueueDepth(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.queue.metricApproximateNumberOfMessagesVisible({ statistic: cloudwatch.Stats.MAXIMUM, period: Duration.minutes(1), ...props });
  }

  /** Age of the oldest message in the buffer, seconds. @default - maximum over 1 minute */
  public metricAgeOfOldestMessage(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    return this.queue.metricApproximateAgeOfOldestMessage({ statistic: cloudwatch.Stats.MAXIMUM, period: Duration.minutes(1), ...props });
  }

  /** Messages in the dead-letter queue. @default - maximum over 1 minute */
  public metricDeadLetterQueueDepth(props?: cloudwatch.MetricOptions): cloudwatch.Metric {
    if (!this.deadLetterQueue) fail(this, 'metricDeadLetterQueueDepth: this consumer uses an existing queue: its dead-letter queue is not known here');
    return this.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
      statistic: cloudwatch.Stats.MAXIMUM, period: Duration.minutes(1), ...props,
    });
  }

  /** The target's timeout: its own when known, else the prop, else Lambda's default with a warning. */
  private targetTimeoutOf(target: lambda.IFunction, given: Duration | undefined): Duration {
    const known = target instanceof lambda.Function ? target.timeout ?? LAMBDA_DEFAULT_TIMEOUT : undefined;
    if (given !== undefined) {
      checkRange(this, 'targetTimeout (s)', given.toSeconds(), { min: 1, max: 900, integer: true });
      if (known !== undefined && !Token.isUnresolved(known.toSeconds()) && given.toSeconds() < known.toSeconds()) {
        fail(this, `targetTimeout must be at least the target's own timeout (${known.toSeconds()} s), got ${given.toSeconds()} s`);
      }
      return given;
    }
    if (known !== undefined) return known;
    Annotations.of(this).addWarningV2('cdk-sfn-throttle:targetTimeoutUnknown',
      `the target ${target.node.path} is imported: its timeout is not known here, so the dispatcher assumes Lambda's default (${LAMBDA_DEFAULT_TIMEOUT.toSeconds()} s) `
      + 'when it decides whether an invoke still fits before its own deadline. Set targetTimeout to the function\'s timeout.');
    return LAMBDA_DEFAULT_TIMEOUT;
  }

  /** The dispatcher: invokes exactly the target, takes tokens from the limiter's table, reports to workflows. */
  private dispatcher(target: lambda.IFunction, options: DispatchOptions, timeout: Duration, targetTimeout: Duration): lambda.Function {
    const memorySize = options.memorySize ?? 128;
    checkRange(this, 'memorySize (QueueTarget.dispatch)', memorySize, { min: 128, max: 10_240, integer: true });
    const logGroup = options.logGroup ?? new logs.LogGroup(this, 'DispatcherLogGroup', {
      retention: options.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const role = handlerRole(this, 'DispatcherRole', logGroup, `Dispatcher of ${this.node.path}`);
    const environment: Record<string, string> = {
      [DispatcherEnv.TARGET_FUNCTION]: target.functionArn,
      [DispatcherEnv.TARGET_TIMEOUT_MS]: String(targetTimeout.toMilliseconds()),
      [DispatcherEnv.DEADLINE_MARGIN_MS]: String(DEADLINE_MARGIN_MS),
    };
    if (options.limiter) {
      const l = options.limiter;
      const acquire = options.acquire ?? {};
      const key = acquire.key ?? DEFAULT_KEY;
      if (key.startsWith('$')) {
        fail(this, `acquire.key of QueueTarget.dispatch must be a literal (the dispatcher takes from one bucket), got ${key}`);
      }
      if (acquire.mode !== undefined && acquire.mode !== AcquireMode.RESERVE) {
        fail(this, `acquire.mode of QueueTarget.dispatch must be AcquireMode.RESERVE (a refused message would be redelivered and count a receive), got ${acquire.mode}`);
      }
      if (isMultiLimit(l)) {
        fail(this, `QueueTarget.dispatch takes from a limiter of one limit, got ${l.limiterName} with ${l.limits.length}${l.keyLimits ? ' and keyLimits' : ''} (${l.limits.map((x) => x.dimension).join(', ')}): `
          + 'dispatch through a limiter per dimension, or call the target from a RateLimitedTask');
      }
      const tokens = consumedAmount(this, l, acquire);
      if (Token.isUnresolved(tokens)) {
        fail(this, 'acquire.consume of QueueTarget.dispatch must be a number: the dispatcher has no state input to read it from, got a JSONPath');
      }
      // The configuration the limiter's own function reads, so both take from one bucket the same way. Each
      // acquire narrows the wait further to what the dispatcher's deadline leaves (the slot plus the target's
      // timeout must fit), so no token is taken for a slot it could not use.
      Object.assign(environment, limiterEnvironment(l, Math.min(l.maxWait.toMilliseconds(), timeout.toMilliseconds())), {
        [DispatcherEnv.LIMITER_KEY]: key,
        [DispatcherEnv.LIMITER_TOKENS]: String(tokens),
        ...(acquire.priority !== undefined ? { [DispatcherEnv.LIMITER_PRIORITY]: acquire.priority } : {}),
      });
      l.grantTakeTokens(role);
      const backlogS = (this.maxConcurrency * this.batchSize * tokens) / l.ratePerSecond;
      if (backlogS > timeout.toSeconds() / 2) {
        Annotations.of(this).addWarningV2('cdk-sfn-throttle:dispatcherBacklog',
          `maxConcurrency ${this.maxConcurrency} × batchSize ${this.batchSize} messages at ${l.ratePerSecond}/s take ${backlogS.toFixed(1)} s of tokens, more than half the dispatcher timeout (${timeout.toSeconds()} s): `
          + 'messages that cannot get a slot in time are redelivered and count receives. Lower maxConcurrency or batchSize, or raise dispatcherTimeout.');
      }
    }
    const fn = new DispatchFunction(this, 'Dispatcher', {
      description: `cdk-sfn-throttle ${this.node.path}: invokes the target once per message`,
      role,
      timeout,
      memorySize,
      architecture: options.architecture ?? lambda.Architecture.ARM_64,
      tracing: options.tracing ?? lambda.Tracing.ACTIVE,
      logGroup,
      environment,
    });
    // Exactly the target, no version or alias wildcard.
    role.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ['lambda:InvokeFunction'], resources: [target.functionArn] }));
    Validations.of(fn).acknowledge({
      id: 'Serverless-LambdaDLQ',
      reason: 'the dispatcher is invoked by an SQS event source mapping: failed messages go to the queue\'s own DLQ',
    });
    return fn;
  }
  /**
   * Makes sure every dead-lettered message fails its waiting execution: the buffer's redrive policy points at an
   * internal queue whose consumer (the dead-letter reporter) sends `SendTaskFailure` (`DispatchFailed`) for a
   * message carrying a task token, then forwards the message to `deadLetterQueue`. Not a consumer on the DLQ
   * itself: that would empty it under the DLQ-depth alarm (and SQS filter criteria would delete what they do not
   * match). The internal queue's own redrive policy sends a message the reporter cannot handle to the DLQ too.
   */
  private reportDeadLetters(): void {
    if (this.reporterRole) return;
    const dlq = this.deadLetterQueue!;
    const reports = new sqs.Queue(this, 'DeadLetterReports', {
      fifo: this.fifo || undefined,
      retentionPeriod: this.deadLetterRetention,
      visibilityTimeout: Duration.seconds(REPORTER_TIMEOUT.toSeconds() * 6),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      // The receive count a message brings from the buffer may count here too: give the reporter its receives on top.
      deadLetterQueue: { queue: dlq, maxReceiveCount: Math.min(1000, this.maxReceiveCount + REPORTER_RECEIVES) },
      removalPolicy: this.removalPolicy,
    });
    (this.queue.node.defaultChild as sqs.CfnQueue).redrivePolicy = {
      deadLetterTargetArn: reports.queueArn,
      maxReceiveCount: this.maxReceiveCount,
    };

    const logGroup = new logs.LogGroup(this, 'DeadLetterReporterLogGroup', {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const role = handlerRole(this, 'DeadLetterReporterRole', logGroup, `Dead-letter reporter of ${this.node.path}`);
    this.reporterRole = role;
    const fn = new DeadLetterReporterFunction(this, 'DeadLetterReporter', {
      description: `cdk-sfn-throttle ${this.node.path}: fails the waiting executions of dead-lettered messages, forwards them to the DLQ`,
      role,
      timeout: REPORTER_TIMEOUT,
      memorySize: 128,
      architecture: lambda.Architecture.ARM_64,
      tracing: lambda.Tracing.ACTIVE,
      logGroup,
      environment: {
        [ReporterEnv.DEAD_LETTER_QUEUE_URL]: dlq.queueUrl,
        [ReporterEnv.MAX_RECEIVE_COUNT]: String(this.maxReceiveCount),
        [ReporterEnv.FIFO]: String(this.fifo),
      },
    });
    const mapping = new lambda.EventSourceMapping(this, 'DeadLetterReportsSource', {
      target: fn,
      eventSourceArn: reports.queueArn,
      batchSize: 10,
      maxConcurrency: 2,
      reportBatchItemFailures: true,
    });
    reports.grantConsumeMessages(role);
    dlq.grantSendMessages(role);
    for (const machine of this.resultMachines) machine.grant(role, 'states:SendTaskFailure');
    Validations.of(fn).acknowledge({
      id: 'Serverless-LambdaDLQ',
      reason: 'the reporter is invoked by an SQS event source mapping: messages it fails go to its queue\'s DLQ (the consumer\'s dead-letter queue)',
    });
    Validations.of(mapping).acknowledge({
      id: 'Serverless-LambdaEventSourceMappingDestination',
      reason: 'an SQS event source hands failed messages back to the queue, whose redrive policy sends them to the consumer\'s dead-letter queue',
    });
  }
}

/**
 * SqsSendMessage rendered in its machine's language: in JSONata the task token of a `waitForResult` message is
 * `$states.context.Task.Token`, and the user's body and group id are checked against the language.
 */
class LanguageSqsSendMessage extends tasks.SqsSendMessage {
  constructor(
    scope: Construct,
    id: string,
    props: tasks.SqsSendMessageProps,
    private readonly language: { userBody: sfn.TaskInput; messageGroupId?: string; tokenField?: string; hint?: sfn.QueryLanguage },
  ) {
    super(scope, id, props);
  }

  /** In JSONata a `resultPath` becomes an `Output` merge (JSONata states have no ResultPath). */
  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const json = super.toStateJson(topLevelQueryLanguage) as Record<string, any>;
    const lang = this.language.hint ?? topLevelQueryLanguage;
    if (lang !== JSONATA || json.ResultPath === undefined) return json;
    const { ResultPath, ...rest } = json;
    return { ...rest, Output: expr(mergeAt(this, ResultPath, '$states.result')) };
  }

  /** @internal */
  protected _renderTask(topLevelQueryLanguage?: sfn.QueryLanguage): any {
    const lang = taskLanguage(this, topLevelQueryLanguage, this.language.hint);
    const known = this.language.hint !== undefined || topLevelQueryLanguage !== undefined;
    const value = this.language.userBody.value;
    const paths = readsJsonPath(value) ? ['JSONPath'] : [];
    const expressions = JSON.stringify(value ?? null).match(/\{%[^"]*%\}/g) ?? [];
    if (known && lang === JSONATA && paths.length > 0) {
      fail(this, 'messageBody reads JSONPath but the state machine\'s query language is JSONata: give JSONata expressions, e.g. sfn.TaskInput.fromText(\'{% $states.input %}\') '
        + 'or sfn.TaskInput.fromObject({ orderId: \'{% $states.input.orderId %}\' })');
    }
    if (known && lang !== JSONATA && expressions.length > 0) {
      fail(this, `messageBody holds JSONata expressions (${expressions.join(', ')}) but the state machine's query language is JSONPath: use sfn.TaskInput.fromJsonPathAt('$') or JsonPath.stringAt('$.field')`);
    }
    if (known && this.language.messageGroupId !== undefined) userExpression(this, 'messageGroupId', this.language.messageGroupId, lang);
    const json = super._renderTask(topLevelQueryLanguage);
    if (lang === JSONATA && this.language.tokenField && json.Arguments?.MessageBody && typeof json.Arguments.MessageBody === 'object') {
      json.Arguments.MessageBody = { ...json.Arguments.MessageBody, [this.language.tokenField]: expr('$states.context.Task.Token') };
    }
    return json;
  }
}
