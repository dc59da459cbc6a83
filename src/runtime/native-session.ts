/**
 * A session on eaglet's native addon (src/native/ort-addon.cc, built by native-build.ts): the
 * same ORT library and session options as onnxruntime-node's, plus eaglet's custom operators
 * (domain "eaglet"), behind the part of ort.InferenceSession that eaglet's runtime calls
 * (`run`, `release`). Inputs are read in place; fetched outputs are copied out, as
 * onnxruntime-node does.
 */
import { createRequire } from 'node:module';
import * as ort from 'onnxruntime-node';
import { buildNativeAddon } from './native-build.ts';

type TensorType = 'float32' | 'int32' | 'int64' | 'bool' | 'uint8';

interface Addon {
  createSession(model: Uint8Array, threads: number, level: number, config: [string, string][], external: [string, Uint8Array][]): unknown;
  names(h: unknown): [string[], string[]];
  run(h: unknown, names: string[], types: string[], datas: ArrayBufferView[], dims: number[][], fetches: string[]): [TensorType, ort.Tensor['data'], number[]][];
  release(h: unknown): void;
}

let addon: Addon | undefined;
function load(): Addon {
  return (addon ??= createRequire(import.meta.url)(buildNativeAddon()) as Addon);
}

/** ORT's GraphOptimizationLevel values, by onnxruntime-node's option names. */
const LEVELS = { disabled: 0, basic: 1, extended: 2, all: 99 } as const;

export interface NativeSessionOptions {
  threads: number;
  optimization: keyof typeof LEVELS;
  /** Session config entries by their full keys (e.g. 'session.force_spinning_stop'). */
  config: Record<string, string>;
  /** In-memory external data files by the names the model refers to them with. */
  external: { path: string; data: Uint8Array }[];
}

/** What eaglet's runtime uses of a session: onnxruntime-node's, or a NativeSession. */
export type InferenceSessionLike = Pick<ort.InferenceSession, 'run' | 'release' | 'endProfiling' | 'inputNames' | 'outputNames'>;

/** ort.InferenceSession's run/release surface over the native addon. */
export class NativeSession implements InferenceSessionLike {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];

  private constructor(private handle: unknown) {
    [this.inputNames, this.outputNames] = load().names(handle);
  }

  /** Opens a session on `model` (the native addon is built on first use). */
  static create(model: Uint8Array, opts: NativeSessionOptions): NativeSession {
    const a = load();
    return new NativeSession(a.createSession(model, opts.threads, LEVELS[opts.optimization], Object.entries(opts.config), opts.external.map((e) => [e.path, e.data])));
  }

  /** Runs once; `fetches` names the outputs (an array, or an object whose keys name them), default all. Run options are not supported. */
  async run(feeds: ort.InferenceSession.FeedsType, fetches?: ort.InferenceSession.FetchesType | ort.InferenceSession.RunOptions): Promise<ort.InferenceSession.ReturnType> {
    const names = Object.keys(feeds), tensors = names.map((n) => feeds[n]);
    const outNames = Array.isArray(fetches) ? [...(fetches as readonly string[])] : fetches && Object.keys(fetches).some((k) => this.outputNames.includes(k)) ? Object.keys(fetches) : [...this.outputNames];
    const outs = load().run(this.handle, names, tensors.map((t) => t.type), tensors.map((t) => t.data as ArrayBufferView), tensors.map((t) => [...t.dims]), outNames);
    return Object.fromEntries(outs.map(([type, data, dims], i) => [outNames[i], new ort.Tensor(type, data as never, dims)]));
  }

  async release(): Promise<void> {
    load().release(this.handle);
  }

  endProfiling(): void {
    throw new Error('profiling is not available on native sessions');
  }
}
