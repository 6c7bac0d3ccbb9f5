// Task tokens for the local runner. aws-local-stepfunctions has none: the runner replaces every
// `"x.$": "$$.Task.Token"` of the definition with a placeholder literal, an integration that waits for a token
// (`.waitForTaskToken`) issues one here and puts it in place of the placeholder, and SendTaskSuccess/Failure
// (from a handler, through the local endpoint) settle the waiting task.

/** Stands in for `$$.Task.Token` in the definition; an integration puts a real token in its place. */
export const TASK_TOKEN_PLACEHOLDER = '__local_task_token__';

/** Replaces (in place, at any depth) every `"x.$": "$$.Task.Token"` with `"x": TASK_TOKEN_PLACEHOLDER`. */
export function replaceTaskTokenPaths(node: any): void {
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

/** `value` with every placeholder replaced by `token` (a copy; `value` is unchanged). */
export function withToken(value: any, token: string): any {
  if (value === TASK_TOKEN_PLACEHOLDER) return token;
  if (Array.isArray(value)) return value.map((x) => withToken(x, token));
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, x]) => [k, withToken(x, token)]));
  return value;
}

interface Waiter {
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: unknown) => void;
}

/** The tokens tasks wait for, by token. */
export class TaskTokens {
  private readonly waiting = new Map<string, Waiter>();

  /** Tasks waiting for a token. */
  public get pending(): number {
    return this.waiting.size;
  }

  /**
   * Issues a token; `result` settles when the token is: with SendTaskSuccess's output, or rejected with
   * SendTaskFailure's error (its `name`) and cause (its `message`). When `signal` aborts (the execution stopped)
   * the token is withdrawn and `result` rejects with States.Runtime.
   */
  public issue(signal?: AbortSignal): { readonly token: string; readonly result: Promise<unknown> } {
    const token = `local-token-${Math.random().toString(36).slice(2)}-${Date.now()}`;
    const result = new Promise<unknown>((resolve, reject) => {
      if (signal?.aborted) {
        reject(stopped());
        return;
      }
      const onAbort = () => {
        if (this.waiting.delete(token)) reject(stopped());
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.set(token, {
        resolve: (v) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(v);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      });
    });
    return { token, result };
  }

  /** SendTaskSuccess: false when no task waits for the token. */
  public succeed(token: string, output: unknown): boolean {
    return this.settle(token, (w) => w.resolve(output));
  }

  /** SendTaskFailure: false when no task waits for the token. */
  public fail(token: string, error: string, cause: string): boolean {
    return this.settle(token, (w) => w.reject(Object.assign(new Error(cause), { name: error })));
  }

  private settle(token: string, how: (w: Waiter) => void): boolean {
    const w = this.waiting.get(token);
    if (!w) return false;
    this.waiting.delete(token);
    how(w);
    return true;
  }
}

function stopped(): Error {
  return Object.assign(new Error('the execution stopped: its task token is no longer valid'), { name: 'States.Runtime' });
}
