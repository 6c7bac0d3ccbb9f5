// Function loading for the local runner: every AWS::Lambda::Function of the template, from its bundled asset (or
// its inline code), as an isolated module with its template environment, wrapped so its failures reach callers
// the way Lambda reports them. A stand-in given by logical id runs instead of the function's code.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as cxapi from 'aws-cdk-lib/cx-api';
import { serviceErrorStatus } from './aws-endpoint';
import type { TemplateResolver } from './template';

/** A function of the template, ready to invoke. */
export interface LocalFunction {
  readonly logicalId: string;
  readonly name: string;
  readonly arn: string;
  /** The template's Timeout (Lambda's default 3 s when unset): what `getRemainingTimeInMillis()` counts down from. */
  readonly timeoutMs: number;
  readonly handler: (event: unknown, context: unknown) => Promise<unknown>;
}

export interface LoadFunctionsOptions {
  /** Where the code of a function with an S3 asset is on this machine (its asset directory), by logical id. */
  readonly assetDir: (logicalId: string, code: any) => string;
  /** Local stand-ins, by logical id: run instead of the function's code. */
  readonly standIns?: Record<string, (event: any) => unknown>;
  /** Sees every value a function (not a stand-in) returns. */
  readonly onResult?: (logicalId: string, output: unknown) => void;
}

/** The functions of one template. */
export class LocalFunctions {
  /** Loads every AWS::Lambda::Function of the resolver's template. */
  public static load(resolver: TemplateResolver, options: LoadFunctionsOptions): LocalFunctions {
    const functions = new LocalFunctions();
    try {
      for (const [id, r] of resolver.resourcesOfType('AWS::Lambda::Function')) functions.add(loadFunction(id, r.Properties ?? {}, resolver, options, functions));
    } catch (err) {
      functions.dispose();
      throw err;
    }
    return functions;
  }

  private readonly byId = new Map<string, LocalFunction>();
  /** Directories written for inline code, removed by `dispose()`. */
  public readonly tempDirs: string[] = [];

  public get all(): readonly LocalFunction[] {
    return [...this.byId.values()];
  }

  /** The function with this ARN (qualified or not) or name, if it is in the template. */
  public byArn(arnOrName: unknown): LocalFunction | undefined {
    if (typeof arnOrName !== 'string') return undefined;
    const bare = arnOrName.replace(/:(\$LATEST|\d+)$/, '');
    for (const fn of this.byId.values()) {
      if (fn.arn === bare || fn.name === bare) return fn;
    }
    return undefined;
  }

  /** Invokes a function with a Lambda-like context. */
  public invoke(fn: LocalFunction, event: unknown): Promise<unknown> {
    return fn.handler(event, lambdaContext(fn));
  }

  /** Removes the files written for inline code. */
  public dispose(): void {
    for (const dir of this.tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  }

  private add(fn: LocalFunction): void {
    this.byId.set(fn.logicalId, fn);
  }
}

function loadFunction(id: string, props: any, resolver: TemplateResolver, options: LoadFunctionsOptions, functions: LocalFunctions): LocalFunction {
  const base = { logicalId: id, name: resolver.nameOf(id), arn: resolver.arnOf(id), timeoutMs: Number(resolver.resolve(props.Timeout) ?? 3) * 1000 };
  const standIn = options.standIns?.[id];
  if (standIn) return { ...base, handler: asLambda(async (e) => standIn(e)) };
  const [file, exportName] = splitHandler(props.Handler ?? 'index.handler');
  let filename: string;
  if (props.Code?.ZipFile !== undefined) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'local-fn-'));
    functions.tempDirs.push(dir);
    filename = path.join(dir, `${file}.js`);
    fs.writeFileSync(filename, resolver.resolve(props.Code.ZipFile));
  } else {
    filename = path.join(options.assetDir(id, props.Code), `${file}.js`);
    if (!fs.existsSync(filename)) filename = path.join(path.dirname(filename), `${file}.mjs`);
  }
  const env = resolver.resolve(props.Environment?.Variables ?? {}) as Record<string, string>;
  const exported = loadIsolated(filename, { ...env, AWS_LAMBDA_FUNCTION_NAME: base.name });
  const handler = exported[exportName];
  if (typeof handler !== 'function') throw new Error(`${filename} exports no function ${exportName} (function ${id})`);
  const observed = async (e: unknown, c: unknown) => {
    const out = await handler(e, c);
    options.onResult?.(id, out);
    return out;
  };
  return { ...base, handler: asLambda(observed) };
}

/** The asset directory of a function's code, from the stack artifact's asset manifest. */
export function assetDirResolver(artifact: cxapi.CloudFormationStackArtifact, resolver: TemplateResolver): (logicalId: string, code: any) => string {
  const manifest = artifact.dependencies.find((d) => d instanceof cxapi.AssetManifestArtifact) as cxapi.AssetManifestArtifact | undefined;
  let files: Record<string, any> | undefined;
  return (id, code) => {
    files ??= manifest ? JSON.parse(fs.readFileSync(manifest.file, 'utf8')).files ?? {} : {};
    const key = resolver.resolve(code?.S3Key);
    const hash = typeof key === 'string' ? key.replace(/\.zip$/, '') : undefined;
    const source = hash ? files![hash]?.source : undefined;
    if (!source?.path) throw new Error(`function ${id}: no local asset for code ${JSON.stringify(code)}`);
    return path.resolve(path.dirname(manifest!.file), source.path);
  };
}

/** A handler whose failures reach callers as Lambda reports them: Error = errorType, Cause = the JSON envelope. */
export function asLambda(handler: (e: unknown, c: unknown) => Promise<unknown>): LocalFunction['handler'] {
  return async (e, c) => {
    try {
      return await handler(e, c);
    } catch (err) {
      if (serviceErrorStatus(err) !== undefined) throw err; // the Lambda service's answer, not the function's error
      const name = (err as Error)?.name ?? 'Error';
      const cause = JSON.stringify({ errorType: name, errorMessage: (err as Error)?.message ?? String(err), trace: [] });
      throw Object.assign(new Error(cause), { name });
    }
  };
}

/**
 * Loads a bundled handler as a fresh module with its own view of `process.env` (the function's template
 * environment over this process's), the way a Lambda container has its own. Packages it requires (the AWS SDK,
 * which the Lambda runtime provides) come from this project's node_modules through the ambient `require`, so
 * under jest they share jest's sandbox and its environment.
 */
export function loadIsolated(filename: string, env: Record<string, string>): any {
  const code = fs.readFileSync(filename, 'utf8');
  const fnEnv = { ...process.env, ...env };
  const fnProcess = new Proxy(process, { get: (target, key) => (key === 'env' ? fnEnv : Reflect.get(target, key)) });
  const dir = path.dirname(filename);
  const fnRequire = (id: string) => {
    if (id.startsWith('.') || id.startsWith('/')) return loadIsolated(require.resolve(path.resolve(dir, id)), env);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(id);
  };
  const module = { exports: {} as any };
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  new Function('exports', 'require', 'module', '__filename', '__dirname', 'process', code)(module.exports, fnRequire, module, filename, dir, fnProcess);
  return module.exports;
}

function splitHandler(handler: string): [string, string] {
  const i = handler.lastIndexOf('.');
  return [handler.slice(0, i), handler.slice(i + 1)];
}

/** The context of one invocation: the time left counts down from the function's timeout, as Lambda's does. */
export function lambdaContext(fn: LocalFunction) {
  const deadline = Date.now() + fn.timeoutMs;
  return {
    functionName: fn.name,
    invokedFunctionArn: fn.arn,
    awsRequestId: `local-${Math.random().toString(16).slice(2)}`,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}
