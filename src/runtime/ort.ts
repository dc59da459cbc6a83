/**
 * Everything onnxruntime-node: the only module that imports it. Sessions are created from
 * in-memory model bytes; `runTimed` counts passes and the time spent inside `session.run`
 * (which is synchronous native work behind a promise), so callers can report how much of a
 * step is ORT and how much is their own bookkeeping.
 */
import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import { FormatError } from '../errors.ts';
import type { ExternalModel } from '../onnx/graph.ts';
import type { FlagSpec } from '../option-schema.ts';
import { type InferenceSessionLike, NativeSession } from './native-session.ts';

export type Feeds = Record<string, ort.Tensor>;
export type Fetches = Record<string, ort.Tensor>;

/**
 * Intra-op threads: every core, at most 8 (the old cap, not measured beyond 2 cores). Measured
 * idle on the 2-core machine (scripts/bench-threads.ts, interleaved, median of 40 passes): two
 * threads ran a 100M-parameter decode step in 7.5 ms against 13.3 ms with one and a 16-token
 * verification in 15.2 against 26.5; 10M: 1.11 vs 1.33 ms; 1M: 0.29 vs 0.25 ms, a tie within
 * the spread. (The earlier default of cores - 1 was measured with a training job on a core.)
 */
export const DEFAULT_THREADS = Math.max(1, Math.min(8, availableParallelism()));

/** Below this many target parameters a model runs on one thread by default (`defaultThreadsFor`). */
export const ONE_THREAD_BELOW_PARAMS = 4_000_000;

/** `--threads` and the library's `threads` options (the serving Engine's checks it with this spec). */
export const THREADS_FLAG: FlagSpec = { flag: 'threads', type: 'int', min: 1, max: 256, meta: 'N', help: `onnxruntime intra-op threads; by default 1 for a target under ${ONE_THREAD_BELOW_PARAMS / 1e6}M parameters (its steps are per-node overhead), else every core (at most 8; here ${DEFAULT_THREADS})` };

/**
 * The default thread count for a model of `params` parameters: 1 below ONE_THREAD_BELOW_PARAMS,
 * else DEFAULT_THREADS. A step of a model that small is ORT's per-node dispatch, not arithmetic,
 * and a second thread only adds its wake-ups. Measured idle on 2 cores: scripts/bench-threads.ts
 * puts a 1M model at a tie (0.25 vs 0.29 ms) and 10M ahead on 2 threads (1.11 vs 1.33 ms);
 * scripts/bench-round.ts on the embedded 1.6M pair, 1 vs 2 threads: plain 2041 vs 1787 tok/s,
 * the fused round 2819 vs 2052 tok/s (docs/performance.md, "One ORT call per round").
 */
export function defaultThreadsFor(params: number): number {
  return params < ONE_THREAD_BELOW_PARAMS ? 1 : DEFAULT_THREADS;
}

/**
 * The intra-op threads a session opened with `opts` runs: what createSession gives ORT, and what
 * a quantized target's graphs are built for (OnnxOpsOptions.gemmThreads), which must agree.
 */
export function sessionThreads(opts: { threads?: number }): number {
  return opts.threads ?? DEFAULT_THREADS;
}

export interface SessionOptions {
  /** Threads for one operator. Default: DEFAULT_THREADS (every core, at most 8). */
  threads?: number;
  /** ORT graph optimisation level. Default: 'all'. */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Let kernels pre-pack constant weights at session creation (ORT's default). Default true. */
  prepack?: boolean;
  /** Write ORT's per-node profile (Chrome trace JSON) to a file starting with this prefix; `endProfiling` ends it. Default: off. */
  profile?: string;
  /**
   * Open the session on eaglet's native addon (NativeSession: the same ORT, plus eaglet's custom
   * operators, which graphs built with OnnxOpsOptions.nativeAttention use). Built with g++ on
   * first use (src/runtime/native-build.ts). No profiling. Default false.
   */
  native?: boolean;
  /**
   * Render the graph's 4- and 8-bit Linear layers with blocks of 128 with eaglet's own kernel,
   * eaglet.BlockMatMul (OnnxOpsOptions.nativeLinear), and open the session on the native addon
   * (implies `native`). Every session of one target must agree on it. Default false.
   */
  nativeLinear?: boolean;
  /** More ORT session config entries by their full keys (e.g. 'session.intra_op.spin_duration_us': '1000'), for measuring them. Default: none. */
  config?: Record<string, string>;
}

/** Cumulative counters of one session's runs. */
export interface RunStats {
  /** Number of `session.run` calls. */
  passes: number;
  /** Milliseconds inside `session.run`. */
  msInRun: number;
  /** Milliseconds of whole forward calls (feeds + run + unpacking); set by the caller. */
  msTotal: number;
}

export const newRunStats = (): RunStats => ({ passes: 0, msInRun: 0, msTotal: 0 });

export interface Session {
  readonly inner: InferenceSessionLike;
  readonly stats: RunStats;
}

/**
 * Creates a CPU session from ONNX model bytes, or from a model whose weights are external data
 * in memory buffers and checkpoint files (ORT reads them there: see GraphBuilder.toExternalModel).
 */
export async function createSession(model: Uint8Array | ExternalModel, opts: SessionOptions = {}): Promise<Session> {
  const bytes = model instanceof Uint8Array ? model : model.bytes;
  const ext = model instanceof Uint8Array ? undefined : model;
  for (const f of ext?.files ?? []) {
    const st = statSync(f.path, { throwIfNoEntry: false });
    if (!st || st.size !== f.fileSize || st.mtimeMs !== f.mtimeMs) throw new FormatError(f.path, 'the file changed since its weights were loaded; load the model again');
  }
  // Session config entries, by their full keys, for either kind of session.
  const config = { 'session.force_spinning_stop': '1', ...(opts.prepack === false ? { 'session.disable_prepacking': '1' } : {}), ...(ext?.folder ? { 'session.model_external_initializers_file_folder_path': ext.folder } : {}) };
  if (opts.native || opts.nativeLinear) {
    if (opts.profile) throw new Error('native sessions cannot profile (SessionOptions.profile)');
    const inner = NativeSession.create(bytes, { threads: sessionThreads(opts), optimization: opts.optimization ?? 'all', config: { ...config, ...opts.config }, external: ext?.external ?? [] });
    return { inner, stats: newRunStats() };
  }
  const inner = await ort.InferenceSession.create(bytes, {
    ...(ext ? { externalData: ext.external } : {}),
    executionProviders: ['cpu'],
    graphOptimizationLevel: opts.optimization ?? 'all',
    intraOpNumThreads: sessionThreads(opts),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    ...(opts.profile ? { enableProfiling: true, profileFilePrefix: opts.profile } : {}),
    // Target and draft sessions alternate: without this, one session's pool threads keep
    // spinning after its run and steal the cores from the next session's run. Measured at 2
    // threads (scripts/bench-draft.ts): a draft depth 7.8 -> 2.4 ms, a T=4 verify 24.9 -> 9.5 ms,
    // the plain step unchanged (7.3 ms).
    // File-backed weights: ORT reads them from their checkpoint file (named by the model's
    // external data locations) in this directory.
    extra: { ...config, ...opts.config }, // onnxruntime-node takes config entries by their full keys too
  });
  return { inner, stats: newRunStats() };
}

/**
 * Runs the session once, adding to its pass counter and in-run time. `fetches` names the
 * outputs to return (default: all); ORT copies every returned output, so fetch only what is used.
 */
export async function runTimed(s: Session, feeds: Feeds, fetches?: readonly string[]): Promise<Fetches> {
  const t0 = performance.now();
  const out = fetches ? await s.inner.run(feeds, fetches) : await s.inner.run(feeds);
  s.stats.msInRun += performance.now() - t0;
  s.stats.passes++;
  return out;
}

/** Ends a profiling session's trace (SessionOptions.profile): ORT writes `<prefix>_<date>.json`. */
export function endProfiling(s: Session): void {
  s.inner.endProfiling();
}

export async function releaseSession(s: Session): Promise<void> {
  await s.inner.release();
}

/**
 * What every runtime class over one ORT session shares: its counters, its release, and the
 * whole-call time (feeds and output unpacking too, beside `runTimed`'s in-run time).
 */
export abstract class SessionHolder {
  protected constructor(protected readonly session: Session) {}

  /** Passes run, ms inside `session.run`, ms in whole calls (cumulative). */
  get stats(): RunStats {
    return this.session.stats;
  }

  /** Ends a timed call begun at `t0` (performance.now()): adds its ms to stats.msTotal, returns `r`. */
  protected endCall<T>(t0: number, r: T): T {
    this.session.stats.msTotal += performance.now() - t0;
    return r;
  }

  async dispose(): Promise<void> {
    await releaseSession(this.session);
  }
}

// Tensor helpers. ORT reads typed-array views (including subarrays) in place: no copy.

export const f32 = (data: Float32Array, dims: number[]): ort.Tensor => new ort.Tensor('float32', data, dims);
export const i64 = (data: BigInt64Array, dims: number[]): ort.Tensor => new ort.Tensor('int64', data, dims);
export const bool = (data: Uint8Array, dims: number[]): ort.Tensor => new ort.Tensor('bool', data, dims);

/** The first `rows` rows of width `width` of `data` (a view); a RangeError naming `what` when it holds fewer. */
export function firstRows(what: string, data: Float32Array, rows: number, width: number): Float32Array {
  if (data.length < rows * width) throw new RangeError(`${what}: ${data.length} values, ${rows} rows of width ${width} need ${rows * width}`);
  return data.subarray(0, rows * width);
}

/** Output data as float32 (outputs are fresh copies, so returning the array is safe). */
export function f32Data(t: ort.Tensor): Float32Array {
  if (t.type !== 'float32') throw new Error(`expected a float32 output, got ${t.type}`);
  return t.data as Float32Array;
}

export function i32Data(t: ort.Tensor): Int32Array {
  if (t.type !== 'int32') throw new Error(`expected an int32 output, got ${t.type}`);
  return t.data as Int32Array;
}
