/**
 * The target split at an exit layer E, on onnxruntime-node, for self-speculative decoding:
 *
 *   ExitSession(E)   layers 0..E-1 + final norm + LM head: drafts (an early exit)
 *   RestSession(E)   layers E..L-1 + final norm + LM head from given residuals: verifies
 *   ShadowSession    final norm + LM head + argmax on any residual rows: DEL's shadow tokens
 *
 * All three are rendered from the one definition (src/onnx/model-graphs.ts). Both halves read
 * and write the target's own K/V cache (all L layers): the exit session layers 0..E-1, the rest
 * session layers E..L-1, so a row drafted at exit E needs only the rest of the model to be
 * verified (LayerSkip's shared cache). ORT sessions do not share initializers: each holds a copy
 * of its layers' weights (and of the embedding / LM head), which is why the self-drafter creates
 * them lazily, per exit layer it actually uses. On a quantized target the exit and rest
 * sessions, like the target's, keep tree passes in a second graph (TreePasses), opened only
 * when the self-drafter drafts trees wider than a chain: a second copy of those weights.
 */
import type { ModelConfig } from '../model/config.ts';
import type { Weights } from '../model/weights.ts';
import { buildExitModel, buildRestModel, buildShadowModel, names, ordersTrees, targetAttention } from '../onnx/model-graphs.ts';
import { quantOf } from '../model/quantize.ts';
import { valueLayoutFor } from '../onnx/ops.ts';
import type { KVCache } from './kv-cache.ts';
import { createSession, f32, f32Data, firstRows, i32Data, runTimed, SessionHolder, type Session, sessionThreads } from './ort.ts';
import { StepFeeds } from './step-feeds.ts';
import { byPaths, TreePassHolder, TreePasses } from './tree-passes.ts';
import { DEFAULT_MAX_TOKENS, type StepSessionOptions } from './target.ts';

export interface ExitOutput {
  /** [T, k], descending per row. */
  topkLogProbs: Float32Array;
  /** [T, k] token ids matching topkLogProbs. */
  topkIds: Int32Array;
  /** [T] full-vocabulary entropy (nats) of each row's exit distribution. */
  entropy: Float32Array;
  /** Residual after layer E-1 [T, d]: the rest session's input. */
  hidden: Float32Array;
  /** Residual after each layer 0..E-1 [T, E, d]. */
  layerHidden: Float32Array;
  /** Layers 0..E-1: new keys after RoPE, values, [T, nKv, hd] each. */
  newKeys: Float32Array[];
  newValues: Float32Array[];
}

export interface RestOutput {
  /** [T, V] */
  logits: Float32Array;
  /** Final-norm hidden states [T, d]. */
  features: Float32Array;
  /** Residual after each layer E..L-1 [T, L-E, d]. */
  layerHidden: Float32Array;
  /** Layers E..L-1: [T, nKv, hd] each. */
  newKeys: Float32Array[];
  newValues: Float32Array[];
}

function checkExit(cfg: ModelConfig, exitLayer: number): void {
  if (!(Number.isInteger(exitLayer) && exitLayer >= 1 && exitLayer < cfg.nLayers)) throw new RangeError(`exit layer ${exitLayer} outside 1..${cfg.nLayers - 1}`);
}

/**
 * The sessions of one graph over a quantized target's layers (TreePasses): the step's graph
 * for chains, and one that orders tree rows by position (opened on the first tree pass or by
 * `prepareTrees`); a tree across a K block runs path by path. Their passes score tree rows
 * (drafted siblings staged between a row's ancestors), which must compute bit for bit what the
 * target's one-token steps do.
 */
function openPasses(cfg: ModelConfig, weights: Weights, opts: StepSessionOptions, build: (treeOrder: boolean) => Uint8Array): Promise<TreePasses> {
  return TreePasses.open(cfg, sessionThreads(opts), ordersTrees(targetAttention(cfg, weights), quantOf(cfg, weights)), (treeOrder) => createSession(build(treeOrder), opts));
}

/** Rows staged in the cache this round, after its committed prefix: their tokens and positions. */
export interface StagedRows {
  tokens: ArrayLike<number>;
  positions: ArrayLike<number>;
}

const NONE_STAGED: StagedRows = { tokens: [], positions: [] };

export class ExitSession extends TreePassHolder {
  private constructor(readonly cfg: ModelConfig, readonly exitLayer: number, readonly topK: number, passes: TreePasses, private feeds: StepFeeds) {
    super(passes);
  }

  static async create(cfg: ModelConfig, weights: Weights, exitLayer: number, topK: number, opts: StepSessionOptions = {}): Promise<ExitSession> {
    checkExit(cfg, exitLayer);
    const k = Math.min(topK, cfg.vocabSize);
    const valueLayout = opts.valueLayout ?? valueLayoutFor(targetAttention(cfg, weights)), gemmThreads = sessionThreads(opts);
    const passes = await openPasses(cfg, weights, opts, (treeOrder) => buildExitModel(cfg, weights, exitLayer, k, { valueLayout, gemmThreads, treeOrder, nativeLinear: opts.nativeLinear }));
    return new ExitSession(cfg, exitLayer, k, passes, new StepFeeds(exitLayer, cfg.nKvHeads, cfg.headDim, opts.maxTokens ?? DEFAULT_MAX_TOKENS, { part: true, valueLayout }));
  }

  /**
   * Runs `tokens` at `positions` through layers 0..E-1 after the cache's committed prefix and
   * the rows `staged` after it this round; `tree` as in TargetSession.forward, over the last
   * staged + T keys. Does not modify the cache.
   */
  async forward(cache: KVCache, tokens: ArrayLike<number>, positions: ArrayLike<number>, tree?: Uint8Array, staged: StagedRows = NONE_STAGED): Promise<ExitOutput> {
    const S = staged.tokens.length, pastRows = cache.length + S, session = await this.passes.route(tree, tokens.length, pastRows);
    if (session === 'paths') {
      // A path's columns: the staged rows, then this pass's (tree-passes.ts).
      const at = <T>(j: number, before: ArrayLike<T>, now: ArrayLike<T>) => (j < S ? before[j] : now[j - S]);
      return byPaths(tree!, tokens.length, (path) => this.forward(cache, path.map((j) => at(j, staged.tokens, tokens)), path.map((j) => at(j, staged.positions, positions))));
    }
    const t0 = performance.now();
    const out = await runTimed(session, this.feeds.build(cache, tokens, positions, tree, pastRows));
    const r = {
      topkLogProbs: f32Data(out[names.topkLogProbs]), topkIds: i32Data(out[names.topkIds]), entropy: f32Data(out[names.entropy]),
      hidden: f32Data(out[names.hidden]), layerHidden: f32Data(out[names.layerHidden]), ...this.feeds.present(out),
    };
    return this.endCall(t0, r);
  }
}

export class RestSession extends TreePassHolder {
  private constructor(readonly cfg: ModelConfig, readonly exitLayer: number, passes: TreePasses, private feeds: StepFeeds) {
    super(passes);
  }

  static async create(cfg: ModelConfig, weights: Weights, exitLayer: number, opts: StepSessionOptions = {}): Promise<RestSession> {
    checkExit(cfg, exitLayer);
    const valueLayout = opts.valueLayout ?? valueLayoutFor(targetAttention(cfg, weights)), gemmThreads = sessionThreads(opts);
    const passes = await openPasses(cfg, weights, opts, (treeOrder) => buildRestModel(cfg, weights, exitLayer, { valueLayout, gemmThreads, treeOrder, nativeLinear: opts.nativeLinear }));
    const feeds = new StepFeeds(cfg.nLayers - exitLayer, cfg.nKvHeads, cfg.headDim, opts.maxTokens ?? DEFAULT_MAX_TOKENS, { firstLayer: exitLayer, ids: false, part: true, valueLayout });
    return new RestSession(cfg, exitLayer, passes, feeds);
  }

  /**
   * Layers E..L-1 on residuals `hidden` [T, d] at `positions` (T = positions.length) after the
   * cache's committed prefix; `tree` as in TargetSession.forward. Does not modify the cache.
   */
  async forward(cache: KVCache, hidden: Float32Array, positions: ArrayLike<number>, tree?: Uint8Array): Promise<RestOutput> {
    const t = positions.length, d = this.cfg.dim, session = await this.passes.route(tree, t, cache.length);
    if (session === 'paths') {
      return byPaths(tree!, t, (path) => {
        const rows = new Float32Array(path.length * d);
        path.forEach((j, k) => rows.set(hidden.subarray(j * d, (j + 1) * d), k * d));
        return this.forward(cache, rows, path.map((j) => positions[j]));
      });
    }
    const t0 = performance.now();
    const rows = firstRows('hidden', hidden, t, d);
    const feeds = this.feeds.build(cache, positions, positions, tree);
    feeds[names.hidden] = f32(rows, [1, t, d]);
    const out = await runTimed(session, feeds);
    const r = { logits: f32Data(out[names.logits]), features: f32Data(out[names.features]), layerHidden: f32Data(out[names.layerHidden]), ...this.feeds.present(out) };
    return this.endCall(t0, r);
  }
}

export class ShadowSession extends SessionHolder {
  private constructor(readonly cfg: ModelConfig, session: Session) {
    super(session);
  }

  static async create(cfg: ModelConfig, weights: Weights, opts: StepSessionOptions = {}): Promise<ShadowSession> {
    return new ShadowSession(cfg, await createSession(buildShadowModel(cfg, weights, { nativeLinear: opts.nativeLinear }), opts));
  }

  /** argmax lmHead(norm(row)) of the first n rows of `rows` [n, d]. */
  async argmax(rows: Float32Array, n: number): Promise<Int32Array> {
    const d = this.cfg.dim;
    const out = await runTimed(this.session, { [names.hidden]: f32(rows.subarray(0, n * d), [n, d]) });
    return i32Data(out[names.shadowIds]);
  }
}
