import { errorMatches, retryStep, TaskError } from '../../lambda/rate-limiter/retry';
import { ThrottleErrors } from '../../src';

const policy = { maxAttempts: 3, intervalMs: 1000, backoffRate: 2, maxDelayMs: 60_000, jitter: false, errors: ['Api.Throttled'] };
const failed = (extra: Record<string, unknown> = {}, error = 'Api.Throttled') => ({ order: 1, cdkSfnThrottleError: { Error: error, Cause: 'why' }, ...extra });

describe('retryStep (the backoff state of a RateLimitedTask)', () => {
  test('counts the attempts of its own task, and backs off exponentially', () => {
    const first = retryStep(failed(), policy, () => 1, { task: 'A Backoff' });
    expect(first).toEqual({ attempt: 2, delayUs: 1_000_000, input: { order: 1, cdkSfnThrottleAttempt: { task: 'A Backoff', attempt: 2, redrive: 0 } } });
    const second = retryStep({ ...(first.input as object), cdkSfnThrottleError: { Error: 'Api.Throttled' } }, policy, () => 1, { task: 'A Backoff' });
    expect([second.attempt, second.delayUs]).toEqual([3, 2_000_000]);
  });

  test('another task\'s count (a RateLimitedTask earlier in the workflow) does not eat this task\'s budget', () => {
    const input = failed({ cdkSfnThrottleAttempt: { task: 'A Backoff', attempt: 3, redrive: 0 } });
    expect(retryStep(input, policy, () => 1, { task: 'B Backoff' }).attempt).toBe(2);
    // the old shape (a bare number) is not this task's record either
    expect(retryStep(failed({ cdkSfnThrottleAttempt: 3 }), policy, () => 1, { task: 'B Backoff' }).attempt).toBe(2);
  });

  test('out of attempts: RetriesExhausted with the last error', () => {
    const input = failed({ cdkSfnThrottleAttempt: { task: 'A Backoff', attempt: 3, redrive: 0 } });
    expect(() => retryStep(input, policy, Math.random, { task: 'A Backoff' })).toThrow(expect.objectContaining({ name: ThrottleErrors.RETRIES_EXHAUSTED }));
  });

  test('an error the policy does not retry is raised again under its own name and cause', () => {
    let thrown: unknown;
    try {
      retryStep(failed({}, 'Orders.NotFound'), policy, Math.random, { task: 'A Backoff' });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(TaskError);
    expect(thrown).toMatchObject({ name: 'Orders.NotFound', message: 'why' });
    // no policy at all (RetryPolicy.none()): every error is raised again
    expect(() => retryStep(failed(), { ...policy, maxAttempts: 1, errors: [] }, Math.random, { task: 'A Backoff' })).toThrow(expect.objectContaining({ name: 'Api.Throttled' }));
  });

  test('a redriven execution gets a fresh budget and goes back to acquire at once, whatever the error', () => {
    const exhausted = failed({ cdkSfnThrottleAttempt: { task: 'A Backoff', attempt: 3, redrive: 0 } });
    expect(retryStep(exhausted, policy, () => 1, { task: 'A Backoff', redriveCount: 1 })).toEqual({
      attempt: 1, delayUs: 0, input: { order: 1, cdkSfnThrottleAttempt: { task: 'A Backoff', attempt: 1, redrive: 1 } },
    });
    const fatal = failed({}, 'Orders.NotFound');
    expect(retryStep(fatal, policy, () => 1, { task: 'A Backoff', redriveCount: 2 }).attempt).toBe(1);
    // within the redriven run, counting goes on as usual
    const again = failed({ cdkSfnThrottleAttempt: { task: 'A Backoff', attempt: 1, redrive: 1 } });
    expect(retryStep(again, policy, () => 1, { task: 'A Backoff', redriveCount: 1 }).attempt).toBe(2);
    expect(() => retryStep(failed({ cdkSfnThrottleAttempt: { task: 'A Backoff', attempt: 1, redrive: 1 } }, 'Orders.NotFound'), policy, Math.random, { task: 'A Backoff', redriveCount: 1 }))
      .toThrow(expect.objectContaining({ name: 'Orders.NotFound' }));
  });

  test('errors match as ErrorEquals does: exact names, States.ALL, States.TaskFailed (not States.Timeout)', () => {
    expect(errorMatches('Api.Throttled', ['Api.Throttled'])).toBe(true);
    expect(errorMatches('Api.ThrottledX', ['Api.Throttled'])).toBe(false);
    expect(errorMatches('States.Timeout', ['States.ALL'])).toBe(true);
    expect(errorMatches('States.Timeout', ['States.TaskFailed'])).toBe(false);
    expect(errorMatches('Anything', ['States.TaskFailed'])).toBe(true);
  });
});
