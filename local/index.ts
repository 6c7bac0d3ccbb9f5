// cdk-sfn-throttle-local: run and test synthesized Step Functions state machines offline — the real handler bundles
// of the template's Lambda functions, DynamoDB in dynalite, SQS in memory, task tokens, Distributed Map, EventBridge
// execution-status events. See README.md in this directory for what it emulates and what it does not.
export {
  LocalRunner, JsonataNotSupported, jsonataStates, statesEntered, taskStates, LOCAL_ACCOUNT,
  type LocalRunnerOptions, type LocalAssemblyRunnerOptions, type LocalRunOptions, type LocalGrant, type TaskHandler,
  type ExecutionScope, type LocalTaskHandler, type ServiceIntegration, type TaskStateInfo, type IntegrationEnvironment,
  type ExecutionStatus, type ExecutionStatusChangeEvent, type ExecutionStatusListener, type LocalEvent, type LocalExecution,
  type LocalExecutionHandle, type LocalExecutionStatus,
} from './runner';
export { UnsupportedTaskStates } from './integrations';
export { ResourceNotFound } from './assembly';
export { type HttpHandler, type LocalHttpRequest, type LocalHttpResponse } from './http';
export { stateTimeline, type StateVisit } from './timeline';
export { perSecond, perSecondChart, progressBar, type ProgressBar } from './chart';
export { maxInWindow, windowViolations, nowUs, type Admission } from './timing';
export { type LocalDynamoDb, type LocalDynamoDbOptions } from './dynalite';
export { type LocalQueue } from './sqs';
export { main as runCli } from './cli';
