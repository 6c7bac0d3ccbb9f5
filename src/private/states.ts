import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { argumentsOf, expr, jsonataCatches, jsonataOf, JSONATA, mergeAt, rendering, withLanguage } from './query-language';
import { fail } from './validation';

// The library's own states, rendered in their state machine's query language at render time (see query-language.ts).
// Each is built with JSONPath fields, as aws-cdk-lib renders them; in a JSONata machine the rendering is translated.

/** The construct's `queryLanguage` prop, for states nested in a container of the user's. */
export interface LanguageHint {
  readonly queryLanguage?: sfn.QueryLanguage;
  /** Checks the construct's user-given values against the language the state renders in. */
  readonly onRender?: (lang: sfn.QueryLanguage) => void;
}

/** A path this library wrote, as a JSONata expression. */
function translated(scope: Construct, path: string): string {
  return expr(mustTranslate(scope, path));
}

/** Wait: `SecondsPath` and `OutputPath` in JSONPath; `Seconds` and `Output` in JSONata. */
export class LanguageWait extends sfn.Wait {
  constructor(scope: Construct, id: string, private readonly options: { secondsPath: string; outputPath?: string } & LanguageHint) {
    super(scope, id, { time: sfn.WaitTime.secondsPath(options.secondsPath) });
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const r = rendering(this, topLevelQueryLanguage, this.options.queryLanguage);
    const json = super.toStateJson(r.lang) as Record<string, any>;
    const outputPath = this.options.outputPath;
    if (r.lang !== JSONATA) return { ...json, ...(outputPath !== undefined ? { OutputPath: outputPath } : {}) };
    const { SecondsPath, ...rest } = json;
    return {
      ...rest,
      ...r.marker,
      Seconds: translated(this, SecondsPath),
      ...(outputPath !== undefined ? { Output: translated(this, outputPath) } : {}),
    };
  }
}

/** Pass with `Parameters` in JSONPath; `Output` in JSONata. */
export class LanguagePass extends sfn.Pass {
  constructor(scope: Construct, id: string, private readonly options: { parameters: Record<string, unknown> } & LanguageHint) {
    super(scope, id, { parameters: options.parameters });
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const r = rendering(this, topLevelQueryLanguage, this.options.queryLanguage);
    const json = super.toStateJson(r.lang) as Record<string, any>;
    if (r.lang !== JSONATA) return json;
    const { Parameters, ...rest } = json;
    return { ...rest, ...r.marker, Output: argumentsOf(this, this.options.parameters) };
  }
}

/**
 * Parallel whose branches render in its own language (aws-cdk-lib renders branches without the machine's), with
 * `OutputPath: $[0]` (a one-branch unit) as `Output: {% $states.result[0] %}` in JSONata.
 */
export class LanguageParallel extends sfn.Parallel {
  constructor(scope: Construct, id: string, private readonly options: { outputPath?: string; resultPath?: string } & LanguageHint) {
    super(scope, id, { outputPath: options.outputPath, resultPath: options.resultPath });
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const r = rendering(this, topLevelQueryLanguage, this.options.queryLanguage);
    return withLanguage(r, () => {
      const json = super.toStateJson(r.lang) as Record<string, any>;
      const branches = this.branches.map((b) => b.toGraphJson(r.known ? r.lang : undefined));
      if (r.lang !== JSONATA) return { ...json, Branches: branches };
      const { OutputPath, ResultPath, ...rest } = json;
      if (ResultPath !== undefined && OutputPath !== undefined) fail(this, 'cannot render both ResultPath and OutputPath of a Parallel in JSONata');
      const output = OutputPath !== undefined
        ? { Output: expr(/^\$\[(\d+)\]$/.test(OutputPath) ? `$states.result${OutputPath.slice(1)}` : mustTranslate(this, OutputPath)) }
        : ResultPath !== undefined ? { Output: expr(mergeAt(this, ResultPath, '$states.result')) } : {};
      return { ...jsonataCatches(this, rest), ...r.marker, ...output, Branches: branches };
    });
  }
}

function mustTranslate(scope: Construct, path: string): string {
  const body = jsonataOf(path);
  if (body === undefined) fail(scope, `cannot render ${path} in JSONata`);
  return body;
}

/** What a throttled map renders in JSONata where its JSONPath fields do not translate: the user's own expressions. */
export interface MapJsonata {
  /** `Items`: the user's JSONata expression; undefined means the state input. */
  readonly items?: string;
  /** `ItemSelector` for JSONata (values may be expressions). */
  readonly itemSelector?: Record<string, unknown>;
  /** `MaxConcurrency` as an expression, when the concurrency is read at run time. */
  readonly maxConcurrency?: string;
}

/** The JSONata form of a rendered Map or DistributedMap state. */
function mapJsonata(scope: Construct, json: Record<string, any>, jsonata: MapJsonata, marker: object): Record<string, any> {
  const { ItemsPath, ItemSelector, ResultPath, OutputPath, InputPath, MaxConcurrencyPath, ...rest } = json;
  if (OutputPath !== undefined || InputPath !== undefined) fail(scope, 'cannot render InputPath or OutputPath of a Map in JSONata');
  const out: Record<string, any> = { ...jsonataCatches(scope, rest), ...marker };
  if (jsonata.items !== undefined) out.Items = jsonata.items;
  else if (ItemsPath !== undefined) out.Items = translated(scope, ItemsPath);
  if (jsonata.itemSelector !== undefined) out.ItemSelector = jsonata.itemSelector;
  else if (ItemSelector !== undefined) out.ItemSelector = ItemSelector;
  if (jsonata.maxConcurrency !== undefined) out.MaxConcurrency = jsonata.maxConcurrency;
  else if (MaxConcurrencyPath !== undefined) out.MaxConcurrency = translated(scope, MaxConcurrencyPath);
  if (ResultPath !== undefined) out.Output = expr(mergeAt(scope, ResultPath, '$states.result'));
  return out;
}

/**
 * A Map or DistributedMap rendered in its language: its processor re-rendered with the language (aws-cdk-lib passes
 * none to nested graphs), JSONata fields in a JSONata machine.
 */
function renderMap(state: sfn.MapBase, topLevel: sfn.QueryLanguage | undefined, hint: LanguageHint, jsonata: MapJsonata,
  renderSuper: (lang: sfn.QueryLanguage) => Record<string, any>, processor: () => sfn.StateGraph): object {
  const r = rendering(state, topLevel, hint.queryLanguage);
  if (r.known) hint.onRender?.(r.lang);
  return withLanguage(r, () => {
    const json = renderSuper(r.lang);
    json.ItemProcessor = { ...json.ItemProcessor, ...processor().toGraphJson(r.known ? r.lang : undefined) };
    return r.lang === JSONATA ? mapJsonata(state, json, jsonata, r.marker) : json;
  });
}

/** Inline Map whose processor renders in its own language, JSONata fields in a JSONata machine. */
export class LanguageMap extends sfn.Map {
  constructor(scope: Construct, id: string, props: sfn.MapProps, private readonly hint: LanguageHint, private readonly jsonata: MapJsonata) {
    super(scope, id, props);
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const renderSuper = (lang: sfn.QueryLanguage) => super.toStateJson(lang) as Record<string, any>;
    return renderMap(this, topLevelQueryLanguage, this.hint, this.jsonata, renderSuper, () => this.processor!);
  }
}

/** Distributed Map whose processor renders in its own language, JSONata fields in a JSONata machine. */
export class LanguageDistributedMap extends sfn.DistributedMap {
  constructor(
    scope: Construct, id: string, props: sfn.DistributedMapProps, private readonly hint: LanguageHint, private readonly jsonata: MapJsonata,
  ) {
    super(scope, id, props);
  }

  public toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    const renderSuper = (lang: sfn.QueryLanguage) => super.toStateJson(lang) as Record<string, any>;
    return renderMap(this, topLevelQueryLanguage, this.hint, this.jsonata, renderSuper, () => this.processor!);
  }
}
