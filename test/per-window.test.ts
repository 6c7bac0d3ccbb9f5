import { App, Duration, Stack } from 'aws-cdk-lib';
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Limit, MapConcurrency, MapMode, RateLimiter, ThrottledMap } from '../src';
import { expectValidationError } from './support/validation';

// Limit.perWindow at synth: the provider's figures checked, and what would void its guarantee refused.

const stackOf = () => new Stack(new App(), 'Stack', { env: { account: '123456789012', region: 'us-east-1' } });
const rule = (extra: Partial<Parameters<typeof Limit.perWindow>[0]> = {}) =>
  Limit.perWindow({ requests: 5, window: Duration.seconds(1), burst: 0, ...extra });

describe('Limit.perWindow at synth', () => {
  test.each([
    [{ requests: 0 }, /requests must be an integer from 1 to 1000000, got 0/],
    [{ requests: 2.5 }, /requests must be an integer from 1 to 1000000, got 2.5/],
    [{ burst: 6 }, /burst must be an integer from 0 to 5 \(requests\), got 6/],
    [{ window: Duration.hours(48) }, /window \(ms\) must be an integer from 1 to 86400000, got 172800000/],
    [{ startJitter: Duration.minutes(2) }, /startJitter \(ms\) must be an integer from 0 to 60000, got 120000/],
    [{ requests: 1, window: Duration.hours(24) }, /perWindow: 1 per 86400000 ms derives .* below the limiter's floor of 0.001\/s/],
  ])('%o is refused, naming the prop, the value and the range', (extra, message) => {
    expectValidationError(() => new RateLimiter(stackOf(), 'L', { limits: [rule(extra as any)] }), message);
  });

  test('what would void the guarantee is refused: several limits, keyLimits, shards, a batched map', () => {
    expectValidationError(() => new RateLimiter(stackOf(), 'L', { limits: [rule(), Limit.perMinute(60_000, { dimension: 'tokens' })] }),
      /a Limit.perWindow needs a limiter of that one limit, got 2 limits/);
    expectValidationError(() => new RateLimiter(stackOf(), 'L', { limits: [rule()], keyLimits: [Limit.perSecond(1)] }),
      /a Limit.perWindow needs a limiter of that one limit, got 1 limits and keyLimits/);
    expectValidationError(() => new RateLimiter(stackOf(), 'L', { limits: [Limit.perSecond(10)], keyLimits: [rule()] }),
      /keyLimits cannot hold a Limit.perWindow/);
    expectValidationError(() => new RateLimiter(stackOf(), 'L', { limits: [rule()], shards: 2 }), /shards must be 1 with a Limit.perWindow/);
    const stack = stackOf();
    const limiter = new RateLimiter(stack, 'L', { limiterName: 'shipping', limits: [rule({ burst: 5 })] });
    const task = new tasks.CallAwsService(stack, 'Call', { service: 'sts', action: 'getCallerIdentity', iamResources: ['*'] });
    expectValidationError(() => new ThrottledMap(stack, 'Batches', {
      limiter,
      concurrency: MapConcurrency.fixed(2),
      itemProcessor: task,
      mode: MapMode.distributed({ batch: { maxItems: 5 } }),
    }), /limiter shipping holds a provider's window rule .* a batch makes its calls after one slot/);
  });

  test('a start jitter below 20 ms: a warning naming it', () => {
    const stack = stackOf();
    new RateLimiter(stack, 'L', { limits: [rule({ startJitter: Duration.millis(5) })] });
    const warnings = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('startJitterTooSmall'));
    expect(warnings).toHaveLength(1);
    expect(String(warnings[0].entry.data)).toContain('startJitter 5 ms');
  });
});
