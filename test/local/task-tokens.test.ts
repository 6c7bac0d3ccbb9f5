import { replaceTaskTokenPaths, TASK_TOKEN_PLACEHOLDER, TaskTokens, withToken } from '../../local/task-tokens';

describe('task tokens', () => {
  test('$$.Task.Token paths become the placeholder, at any depth; other paths stay', () => {
    const def = { States: { A: { Parameters: { MessageBody: { 'token.$': '$$.Task.Token', 'id.$': '$.id' }, List: [{ 't.$': '$$.Task.Token' }] } } } };
    replaceTaskTokenPaths(def);
    expect(def).toEqual({ States: { A: { Parameters: { MessageBody: { 'token': TASK_TOKEN_PLACEHOLDER, 'id.$': '$.id' }, List: [{ t: TASK_TOKEN_PLACEHOLDER }] } } } });
  });

  test('withToken puts the token in place of every placeholder, in a copy', () => {
    const body = { token: TASK_TOKEN_PLACEHOLDER, nested: [TASK_TOKEN_PLACEHOLDER, 'x'] };
    expect(withToken(body, 't-1')).toEqual({ token: 't-1', nested: ['t-1', 'x'] });
    expect(body.token).toBe(TASK_TOKEN_PLACEHOLDER);
  });

  test('SendTaskSuccess resolves the waiting task with the output; the token is then spent', async () => {
    const tokens = new TaskTokens();
    const { token, result } = tokens.issue();
    expect(tokens.pending).toBe(1);
    expect(tokens.succeed(token, { ok: 1 })).toBe(true);
    await expect(result).resolves.toEqual({ ok: 1 });
    expect(tokens.pending).toBe(0);
    expect(tokens.succeed(token, {})).toBe(false);
  });

  test('SendTaskFailure rejects the waiting task with the error name and cause', async () => {
    const tokens = new TaskTokens();
    const { token, result } = tokens.issue();
    expect(tokens.fail(token, 'Order.Rejected', 'no stock')).toBe(true);
    await expect(result).rejects.toMatchObject({ name: 'Order.Rejected', message: 'no stock' });
    expect(tokens.fail('unknown-token', 'E', 'C')).toBe(false);
  });

  test('a stopped execution withdraws its token: the task rejects and SendTaskSuccess finds no task', async () => {
    const tokens = new TaskTokens();
    const controller = new AbortController();
    const { token, result } = tokens.issue(controller.signal);
    const other = tokens.issue();
    controller.abort();
    await expect(result).rejects.toMatchObject({ name: 'States.Runtime' });
    expect(tokens.succeed(token, {})).toBe(false);
    expect(tokens.pending).toBe(1); // the other execution's task still waits
    expect(tokens.succeed(other.token, 2)).toBe(true);
    await expect(other.result).resolves.toBe(2);
  });

  test('a token issued for an execution that already stopped is never pending', async () => {
    const tokens = new TaskTokens();
    const controller = new AbortController();
    controller.abort();
    const { result } = tokens.issue(controller.signal);
    await expect(result).rejects.toMatchObject({ name: 'States.Runtime' });
    expect(tokens.pending).toBe(0);
  });
});
