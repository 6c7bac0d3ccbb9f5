import * as path from 'path';
import { App, Duration, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { MonitoringFacade } from 'cdk-monitoring-constructs';
import { emfLine } from '../../lambda/rate-limiter/emf';
import { BufferedQueueConsumer, MapMode, QueueTarget, RateLimiter, ThrottleDashboard, type ThrottleDashboardProps, ThrottledMap } from '../../src';
import { METRIC_NAMESPACE } from '../../src/private/contract';

function build(props: Partial<ThrottleDashboardProps> & { overrides?: boolean } = {}) {
  const stack = new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
  const limiter = new RateLimiter(stack, 'Limiter', { ratePerSecond: 20, burst: 5, limiterName: 'api', maxWait: Duration.minutes(5) });
  const target = new lambda.Function(stack, 'Target', {
    runtime: lambda.Runtime.NODEJS_22_X, handler: 'index.handler', code: lambda.Code.fromAsset(path.join(__dirname, '..', 'fixtures', 'consumer')),
  });
  const consumer = new BufferedQueueConsumer(stack, 'Buffer', { target: QueueTarget.dispatch(target, { limiter }) });
  const map = new ThrottledMap(stack, 'Orders', { mode: MapMode.distributed(), itemProcessor: new sfn.Pass(stack, 'Work') });
  const machine = new sfn.StateMachine(stack, 'Machine', { stateMachineName: 'orders', definitionBody: sfn.DefinitionBody.fromChainable(map) });
  const topic = new sns.Topic(stack, 'Alarms', { enforceSSL: true });
  const dashboard = new ThrottleDashboard(stack, 'Throttles', { dashboardName: 'throttles', alarmTopic: topic, stateMachines: [machine], ...props });
  if (props.overrides) {
    dashboard.addLimiter(limiter, { waitNearMaxWait: { threshold: 50 }, dynamoDbThrottling: { disabled: true } });
  } else {
    dashboard.addLimiter(limiter);
  }
  dashboard.addConsumer(consumer).addMap(map, machine);
  return { stack, limiter, dashboard, topic };
}

const alarmsOf = (stack: Stack) => Object.values(Template.fromStack(stack).findResources('AWS::CloudWatch::Alarm')).map((a: any) => a.Properties);
const byDescription = (alarms: any[], text: string) => {
  const found = alarms.filter((a) => String(a.AlarmDescription).includes(text));
  expect([text, found.length]).toEqual([text, 1]);
  return found[0];
};

describe('ThrottleDashboard', () => {
  test('snapshots: all alarms, and no alarms', () => {
    const all = build();
    expect(Template.fromStack(all.stack).toJSON()).toMatchSnapshot();
    expect(all.dashboard.alarms).toHaveLength(10);
    const none = build({ alarmsEnabled: false });
    expect(Template.fromStack(none.stack).toJSON()).toMatchSnapshot();
    expect(none.dashboard.alarms).toHaveLength(0);
    Template.fromStack(none.stack).resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });

  test('each alarm: its metric, statistic, threshold and comparison; every one notifies the topic', () => {
    const { stack } = build();
    const alarms = alarmsOf(stack);
    const common = { ComparisonOperator: 'GreaterThanOrEqualToThreshold', TreatMissingData: 'notBreaching' };

    const errors = byDescription(alarms, 'acquire calls fail');
    expect(errors).toMatchObject({ ...common, Threshold: 1, EvaluationPeriods: 3 });
    expect(errors.Metrics.find((m: any) => m.Expression)).toMatchObject({ Expression: 'errors + unavailable' });
    expect(errors.Metrics.find((m: any) => m.Id === 'unavailable').MetricStat).toMatchObject({
      Metric: { Namespace: METRIC_NAMESPACE, MetricName: 'Unavailable', Dimensions: [{ Name: 'LimiterName', Value: 'api' }] }, Stat: 'Sum', Period: 60,
    });
    expect(errors.Metrics.find((m: any) => m.Id === 'errors').MetricStat).toMatchObject({ Metric: { Namespace: 'AWS/Lambda', MetricName: 'Errors' }, Stat: 'Sum' });

    const wait = byDescription(alarms, 'close to maxWait');
    expect(wait).toMatchObject({ ...common, Threshold: 80, EvaluationPeriods: 3 });
    expect(wait.Metrics.find((m: any) => m.Expression).Expression).toBe('100 * wait / 300000');
    expect(wait.Metrics.find((m: any) => m.Id === 'wait').MetricStat).toMatchObject({ Metric: { MetricName: 'WaitTime' }, Stat: 'p99' });

    expect(byDescription(alarms, 'DynamoDB throttles')).toMatchObject({
      ...common, Namespace: 'AWS/DynamoDB', MetricName: 'ThrottledRequests', Statistic: 'Sum', Threshold: 1, EvaluationPeriods: 3,
    });
    expect(byDescription(alarms, 'dead-letter queue')).toMatchObject({
      ...common, Namespace: 'AWS/SQS', MetricName: 'ApproximateNumberOfMessagesVisible', Statistic: 'Maximum', Threshold: 1, EvaluationPeriods: 1,
    });
    expect(byDescription(alarms, 'not drained fast enough')).toMatchObject({
      ...common, Namespace: 'AWS/SQS', MetricName: 'ApproximateAgeOfOldestMessage', Statistic: 'Maximum', Threshold: 900, EvaluationPeriods: 3,
    });
    expect(byDescription(alarms, 'consumer function fails')).toMatchObject({ ...common, Namespace: 'AWS/Lambda', MetricName: 'Errors', Statistic: 'Sum', Threshold: 1 });
    const items = byDescription(alarms, 'Map Run items fail');
    expect(items).toMatchObject({ ...common, Namespace: 'AWS/States', MetricName: 'ExecutionsFailed', Statistic: 'Sum', Threshold: 1 });
    // child executions publish under <state machine ARN>/<Map Run label>
    expect(items.Dimensions).toEqual([{ Name: 'StateMachineArn', Value: { 'Fn::Join': ['', [{ Ref: expect.stringMatching(/^Machine/) }, '/Orders']] } }]);
    for (const [text, metric] of [['executions fail', 'ExecutionsFailed'], ['throttles executions', 'ExecutionThrottled'], ['time out', 'ExecutionsTimedOut']]) {
      expect(byDescription(alarms, text)).toMatchObject({ ...common, Namespace: 'AWS/States', MetricName: metric, Statistic: 'Sum', Threshold: 1, EvaluationPeriods: 1 });
    }
    const topicRef = { Ref: Object.keys(Template.fromStack(stack).findResources('AWS::SNS::Topic'))[0] };
    for (const a of alarms) {
      expect(a.AlarmActions).toEqual([topicRef]);
      expect(a.OKActions).toEqual([topicRef]);
    }
  });

  test('an alarm can be overridden or left out', () => {
    const { stack, dashboard } = build({ overrides: true });
    const alarms = alarmsOf(stack);
    expect(byDescription(alarms, 'close to maxWait').Threshold).toBe(50);
    expect(alarms.filter((a) => String(a.AlarmDescription).includes('DynamoDB throttles'))).toHaveLength(0);
    expect(dashboard.alarms).toHaveLength(9);
  });

  test('the limiter row shows admitted against the limit as a horizontal annotation', () => {
    const { stack } = build();
    const body = JSON.stringify(Template.fromStack(stack).findResources('AWS::CloudWatch::Dashboard'));
    expect(body).toContain('\\"title\\":\\"Admitted per minute vs the limit\\"');
    expect(body).toContain('\\"horizontal\\":[{\\"value\\":1200,\\"label\\":\\"limit 20/s\\"');
  });

  test('the handlers\' EMF lines carry every CdkSfnThrottle metric the dashboard and alarms use', () => {
    const { stack } = build();
    const line = JSON.parse(emfLine('api', { admitted: 1, delayed: 1, rejected: 0, waitMs: 12.5, dynamoCalls: 1, unavailable: 0, key: 'default', limitPerSecond: 20 }, Date.now()));
    const emf = line._aws.CloudWatchMetrics[0];
    const emitted = new Set(emf.Metrics.map((m: any) => m.Name));
    expect(emf.Namespace).toBe(METRIC_NAMESPACE);
    expect(emf.Dimensions).toEqual([['LimiterName']]);
    expect(line.LimiterName).toBe('api');

    // every metric of our namespace the dashboard body or an alarm names
    const template = Template.fromStack(stack);
    const body = JSON.stringify(template.findResources('AWS::CloudWatch::Dashboard')).replace(/\\"/g, '"');
    const used = new Set<string>();
    for (const m of body.matchAll(new RegExp(`\\["${METRIC_NAMESPACE}","([A-Za-z]+)","LimiterName","api"`, 'g'))) used.add(m[1]);
    for (const a of alarmsOf(stack)) {
      for (const m of a.Metrics ?? []) if (m.MetricStat?.Metric.Namespace === METRIC_NAMESPACE) used.add(m.MetricStat.Metric.MetricName);
    }
    expect([...used].sort()).toEqual(['Admitted', 'Delayed', 'LimitInForce', 'Rejected', 'Unavailable', 'WaitTime']);
    for (const name of used) expect(emitted.has(name)).toBe(true);
  });

  test('the metrics work as custom metrics in cdk-monitoring-constructs', () => {
    const { stack, limiter } = build({ alarmsEnabled: false });
    new MonitoringFacade(stack, 'Monitoring').monitorCustom({
      alarmFriendlyName: 'api-limiter',
      metricGroups: [{ title: 'API limiter', metrics: [limiter.metricAdmitted(), limiter.metricWaitTime(), limiter.metricRejected()] }],
    });
    const dashboards = JSON.stringify(Template.fromStack(stack).findResources('AWS::CloudWatch::Dashboard')).replace(/\\"/g, '"');
    expect(dashboards).toContain(`["${METRIC_NAMESPACE}","Admitted","LimiterName","api"`);
    expect(dashboards).toContain('API limiter');
  });
});
