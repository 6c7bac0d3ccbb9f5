/** Loads the acquire handler module fresh, with the given environment (the module builds its client at import). */
export function loadAcquireHandler(env: Record<string, string>): (event: unknown) => Promise<any> {
  Object.assign(process.env, env);
  let handler: ((event: unknown) => Promise<any>) | undefined;
  jest.isolateModules(() => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    handler = require('../../lambda/rate-limiter/acquire.lambda').handler;
  });
  return handler!;
}

export { nowUs, sleep } from '../../local/timing';
