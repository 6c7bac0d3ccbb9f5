import { Annotations, Duration, RemovalPolicy, Token, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { DispatchFunction } from './private/dispatch-function';
import { grantBucketAccess, handlerRole, limiterEnvironment } from './private/handler-function';
import { checkRange } from './private/validation';
import { IRateLimiter } from './rate-limiter';

/** The field of a `waitForResult` message that carries the task token (the dispatcher reads it). */
const TASK_TOKEN_FIELD = 'cdkSfnThrottleTaskToken';
/** Lambda's default timeout, for a consumer whose timeout is not known. */
const LAMBDA_DEFAULT_TIMEOUT = Duration.seconds(3);

/**
 * Properties of `BufferedQueueConsumer`. Give exactly one of `consumer` and `target`.
 */
export interface BufferedQueueConsumerProps {
  /**
   * Your function, handling SQS batches itself. It must return `{ batchItemFailures }` (partial batch failures
   * are on).
   *
   * @default - none: give `target`
   */
  readonly consumer?: lambda.IFunction;

  /**
   * A function the bundled dispatcher invokes once per message, synchronously, with the message body (parsed as
   * JSON when it is JSON). A message whose invocation fails is redelivered; with `limiter`, each invocation
   * first takes a token.
   *
   * @default - none: give `consumer`
   */
  readonly target?: lambda.IFunction;

  /**
   * A rate limit the dispatcher takes a token from before each invocation of `target` (RESERVE: it waits for
   * its slot). Target mode only.
   *
   * @default - no rate limit: `maxConcurrency` alone bounds the load
   */
  readonly limiter?: IRateLimiter;

  /**
   * The limiter bucket the dispatcher takes from.
   *
   * @default 'default'
   */
  readonly limiterKey?: string;

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
   * The dispatcher's timeout (target mode): long enough for a batch of invocations and the waits for their
   * tokens.
   *
   * @default Duration.minutes(1)
   */
  readonly dispatcherTimeout?: Duration;

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
  /** The message body (the target's input in target mode). */
  readonly messageBody: sfn.TaskInput;

  /**
   * Wait for the target's result: the task gets a task token, the dispatcher reports the target's output
   * (`SendTaskSuccess`) or error (`SendTaskFailure`) back to the execution. Target mode only.
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
}

/**
 * An SQS buffer between producers (often state machines) and a consumer that drains it at what the downstream
 * can take: bounded concurrency, partial batch failures, a dead-letter queue, and — in target mode — a
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
  /** The target (target mode). */
  public readonly target?: lambda.IFunction;
  public readonly maxConcurrency: number;
  public readonly batchSize: number;
  public readonly fifo: boolean;
  private readonly dispatcherRole?: iam.IRole;
  private waitingTasks = 0;
  private readonly resultsFrom = new Set<string>();

  constructor(scope: Construct, id: string, props: BufferedQueueConsumerProps) {
    super(scope, id);
    if ((props.consumer === undefined) === (props.target === undefined)) {
      throw new Error(`give exactly one of consumer and target, got ${props.consumer ? 'both' : 'neither'}`);
    }
    if (props.limiter && !props.target) throw new Error('limiter needs target mode (the dispatcher takes the tokens), got a consumer');
    if (props.limiterKey !== undefined && !props.limiter) throw new Error(`limiterKey needs a limiter, got limiterKey ${props.limiterKey} and no limiter`);
    this.fifo = props.fifo ?? false;
    this.maxConcurrency = props.maxConcurrency ?? 2;
    checkRange('maxConcurrency', this.maxConcurrency, { min: 2, max: 1000, integer: true });
    this.batchSize = props.batchSize ?? 10;
    const maxBatch = this.fifo || !props.maxBatchingWindow ? 10 : 10_000;
    checkRange('batchSize', this.batchSize, {
      min: 1, max: maxBatch, integer: true, why: maxBatch === 10 ? 'up to 10,000 needs a standard queue and maxBatchingWindow' : undefined,
    });
    if (props.maxBatchingWindow) checkRange('maxBatchingWindow (s)', props.maxBatchingWindow.toSeconds(), { min: 0, max: 300 });
    if (this.fifo && props.maxBatchingWindow) throw new Error('maxBatchingWindow is not supported on FIFO queues, got fifo: true with a batching window');
    const maxReceiveCount = props.maxReceiveCount ?? 5;
    checkRange('maxReceiveCount', maxReceiveCount, { min: 1, max: 1000, integer: true });
    if (props.existingQueue) {
      for (const [name, given] of [['visibilityTimeout', props.visibilityTimeout], ['maxReceiveCount', props.maxReceiveCount], ['deadLetterRetention', props.deadLetterRetention]] as const) {
        if (given !== undefined) throw new Error(`${name} configures the queue this construct creates: set it on existingQueue instead`);
      }
      if (props.existingQueue.fifo !== this.fifo) {
        throw new Error(`fifo must match existingQueue: the queue is ${props.existingQueue.fifo ? 'FIFO' : 'standard'}, got fifo: ${this.fifo}`);
      }
    }

    // The consumer: yours, or the dispatcher in front of the target.
    let consumerTimeout: Duration;
    if (props.consumer) {
      this.consumerFunction = props.consumer;
      consumerTimeout = props.consumer instanceof lambda.Function ? props.consumer.timeout ?? LAMBDA_DEFAULT_TIMEOUT : LAMBDA_DEFAULT_TIMEOUT;
      const reserved = (props.consumer.node.defaultChild as lambda.CfnFunction | undefined)?.reservedConcurrentExecutions;
      if (reserved !== undefined) {
        Annotations.of(this).addWarningV2('cdk-sfn-throttle:consumerReservedConcurrency',
          `the consumer has reserved concurrency ${reserved}: the SQS poller pulls batches for up to maxConcurrency ${this.maxConcurrency} functions and throttled invocations return messages to the queue, `
          + 'counting receives — good messages can reach the DLQ. Use maxConcurrency alone as the throttle.');
      }
    } else {
      const dispatcherTimeout = props.dispatcherTimeout ?? Duration.minutes(1);
      checkRange('dispatcherTimeout (s)', dispatcherTimeout.toSeconds(), { min: 1, max: 900, integer: true });
      consumerTimeout = dispatcherTimeout;
      this.target = props.target;
      const dispatcher = this.dispatcher(props, dispatcherTimeout);
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
        throw new Error(`visibilityTimeout must be at least 6 × the consumer's timeout (${consumerTimeout.toSeconds()} s) = ${minimum} s, got ${visibilityTimeout.toSeconds()} s`);
      }
      checkRange('visibilityTimeout (s)', visibilityTimeout.toSeconds(), { min: 0, max: 43_200, integer: true, why: '12 hours at most' });
      const retention = props.deadLetterRetention ?? Duration.days(14);
      checkRange('deadLetterRetention (s)', retention.toSeconds(), { min: 60, max: 1_209_600, integer: true, why: '1 minute to 14 days' });
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
    if (options.waitForResult && !this.target) {
      throw new Error('waitForResult needs target mode: only the dispatcher reports results back, got a consumer');
    }
    if (this.fifo && options.messageGroupId === undefined) throw new Error('messageGroupId is required on a FIFO queue, got none');
    if (!this.fifo && options.messageGroupId !== undefined) throw new Error(`messageGroupId applies to FIFO queues only, got ${options.messageGroupId}`);
    if (options.waitForResult) this.waitingTasks++;
    const body = options.waitForResult
      ? sfn.TaskInput.fromObject({ [TASK_TOKEN_FIELD]: sfn.JsonPath.taskToken, input: options.messageBody.value })
      : options.messageBody;
    return new tasks.SqsSendMessage(scope, id, {
      queue: this.queue,
      messageBody: body,
      messageGroupId: options.messageGroupId,
      integrationPattern: options.waitForResult ? sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN : sfn.IntegrationPattern.REQUEST_RESPONSE,
      taskTimeout: options.taskTimeout,
      resultPath: options.resultPath,
    });
  }

  /**
   * Lets the dispatcher report results (`SendTaskSuccess`/`SendTaskFailure`) to the executions of
   * `stateMachine` that wait with `sendMessageTask(..., { waitForResult: true })`. Exactly that state machine.
   */
  public allowResultsFrom(stateMachine: sfn.IStateMachine): void {
    if (!this.dispatcherRole) throw new Error('allowResultsFrom needs target mode (the dispatcher reports results), got a consumer');
    stateMachine.grantTaskResponse(this.dispatcherRole);
    this.resultsFrom.add(stateMachine.node.path);
  }

  /** Grants sending messages to the buffer (and using its key, if any). */
  public grantSend(grantee: iam.IGrantable): iam.Grant {
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
    if (!this.deadLetterQueue) throw new Error('this consumer uses an existing queue: its dead-letter queue is not known here');
    return this.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
      statistic: cloudwatch.Stats.MAXIMUM, period: Duration.minutes(1), ...props,
    });
  }

  /** The dispatcher: invokes exactly the target, takes tokens from the limiter's table, reports to workflows. */
  private dispatcher(props: BufferedQueueConsumerProps, timeout: Duration): lambda.Function {
    const target = props.target!;
    const logGroup = new logs.LogGroup(this, 'DispatcherLogGroup', {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const role = handlerRole(this, 'DispatcherRole', logGroup, `Dispatcher of ${this.node.path}`);
    const environment: Record<string, string> = { TARGET_FUNCTION: target.functionArn };
    if (props.limiter) {
      const l = props.limiter;
      // The configuration the limiter's own function reads, so both take from one bucket the same way; a slot
      // must come within this invocation: at most the limiter's maxWait and half the timeout.
      Object.assign(environment, limiterEnvironment(l, Math.min(l.maxWait.toMilliseconds(), timeout.toMilliseconds() / 2)), {
        LIMITER_KEY: props.limiterKey ?? 'default',
      });
      grantBucketAccess(l, role);
      const backlogS = (this.maxConcurrency * this.batchSize) / l.ratePerSecond;
      if (backlogS > timeout.toSeconds() / 2) {
        Annotations.of(this).addWarningV2('cdk-sfn-throttle:dispatcherBacklog',
          `maxConcurrency ${this.maxConcurrency} × batchSize ${this.batchSize} messages at ${l.ratePerSecond}/s take ${backlogS.toFixed(1)} s of tokens, more than half the dispatcher timeout (${timeout.toSeconds()} s): `
          + 'messages refused a slot are redelivered and count receives. Lower maxConcurrency or batchSize, or raise dispatcherTimeout.');
      }
    }
    const fn = new DispatchFunction(this, 'Dispatcher', {
      description: `cdk-sfn-throttle ${this.node.path}: invokes the target once per message`,
      role,
      timeout,
      memorySize: 128,
      architecture: lambda.Architecture.ARM_64,
      tracing: lambda.Tracing.ACTIVE,
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
}
