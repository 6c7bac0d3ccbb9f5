// What the local runner changes outside itself, and how it undoes it: variables of process.env (the endpoints and
// credentials the handlers' SDK clients read) and the Promise.withResolvers polyfill aws-local-stepfunctions needs
// on Node < 22. Several runners may be up at once: each sets its own layer of variables, the last layer set wins,
// and when the last layer touching a variable goes the variable gets its original value back (or is deleted).

type Env = Record<string, string | undefined>;

/** The layers over one environment object, and the original values of the variables they touch. */
interface Layers {
  readonly stack: LocalEnvironment[];
  /** Originals of the touched variables: undefined = the variable was absent. */
  readonly originals: Map<string, string | undefined>;
}

const layersByEnv = new WeakMap<Env, Layers>();

/** One runner's variables over an environment (process.env by default); `restore()` takes them away again. */
export class LocalEnvironment {
  private readonly vars = new Map<string, string>();
  private readonly layers: Layers;
  private released = false;

  constructor(private readonly env: Env = process.env) {
    let layers = layersByEnv.get(env);
    if (!layers) {
      layers = { stack: [], originals: new Map() };
      layersByEnv.set(env, layers);
    }
    this.layers = layers;
    layers.stack.push(this);
  }

  /** Sets variables (over any earlier layer's), until `restore()`. */
  public set(vars: Record<string, string>): void {
    if (this.released) throw new Error('this environment was restored already');
    for (const [key, value] of Object.entries(vars)) {
      if (!this.layers.originals.has(key)) {
        this.layers.originals.set(key, Object.prototype.hasOwnProperty.call(this.env, key) ? this.env[key] : undefined);
      }
      this.vars.set(key, value);
      this.apply(key);
    }
  }

  /** The value this layer set, if any. */
  public get(key: string): string | undefined {
    return this.vars.get(key);
  }

  /** Takes this layer's variables away: each gets the value of the layer below that sets it, or its original. */
  public restore(): void {
    if (this.released) return;
    this.released = true;
    this.layers.stack.splice(this.layers.stack.indexOf(this), 1);
    for (const key of this.vars.keys()) this.apply(key);
  }

  /** Writes the value the topmost layer gives `key`, or restores its original when no layer sets it. */
  private apply(key: string): void {
    const top = [...this.layers.stack].reverse().find((l) => l.vars.has(key));
    if (top) {
      this.env[key] = top.vars.get(key);
      return;
    }
    const original = this.layers.originals.get(key);
    this.layers.originals.delete(key);
    if (original === undefined) delete this.env[key];
    else this.env[key] = original;
  }
}

let polyfillUsers = 0;
let polyfill: ((...args: unknown[]) => unknown) | undefined;

/**
 * aws-local-stepfunctions calls `Promise.withResolvers` (Node >= 22) in every Task state. Installs a polyfill
 * while at least one caller holds it, when the platform has none; the returned function releases the hold, and
 * the last release removes the polyfill again.
 */
export function holdPromiseWithResolvers(): () => void {
  const P = Promise as unknown as { withResolvers?: unknown };
  if (polyfillUsers++ === 0 && typeof P.withResolvers !== 'function') {
    polyfill = function withResolvers(this: PromiseConstructor) {
      let resolve!: (v: unknown) => void;
      let reject!: (e: unknown) => void;
      const promise = new this((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    };
    Object.defineProperty(Promise, 'withResolvers', { value: polyfill, writable: true, configurable: true, enumerable: false });
  }
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    if (--polyfillUsers === 0 && polyfill !== undefined) {
      if (P.withResolvers === polyfill) delete P.withResolvers;
      polyfill = undefined;
    }
  };
}
