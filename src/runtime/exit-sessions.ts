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
 * them lazily, per exit layer it actually uses.
 */
import type { ModelConfig } from '../model/config.ts';
import type { Weights } from '../model/weights.ts';
import { buildExitModel, buildRestModel, buildShadowModel, names, targetAttention } from '../onnx/model-graphs.ts';
import { valueLayoutFor } from '../onnx/ops.ts';
import type { KVCache } from './kv-cache.ts';
import { createSession, f32, f32Data, firstRows, i32Data, runTimed, SessionHolder, type Session, sessionThreads } from './ort.ts';
import { StepFeeds } from './step-feeds.ts';
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

// Both graphs order each row's keys by position (OnnxOpsOptions.treeOrder; a no-op unless the
// target is quantized): their passes score tree rows (drafted siblings staged between a row's
// ancestors), which must compute bit for bit what the target's one-token steps do.

export class ExitSession extends SessionHolder {
  private constructor(readonly cfg: ModelConfig, readonly exitLayer: number, readonly topK: number, session: Session, private feeds: StepFeeds) {
    super(session);
  }

  static async create(cfg: ModelConfig, weights: Weights, exitLayer: number, topK: number, opts: StepSessionOptions = {}): Promise<ExitSession> {
    checkExit(cfg, exitLayer);
    const k = Math.min(topK, cfg.vocabSize);
    const valueLayout = opts.valueLayout ?? valueLayoutFor(targetAttention(cfg, weights));
    const session = await createSession(buildExitModel(cfg, weights, exitLayer, k, { valueLayout, gemmThreads: sessionThreads(opts), treeOrder: true }), opts);
    return new ExitSession(cfg, exitLayer, k, session, new StepFeeds(exitLayer, cfg.nKvHeads, cfg.headDim, opts.maxTokens ?? DEFAULT_MAX_TOKENS, { part: true, valueLayout }));
  }

  /**
   * Runs `tokens` at `positions` through layers 0..E-1 after the first `pastRows` rows of the
   * cache (committed prefix plus rows staged this round); `tree` as in TargetSession.forward.
   * Does not modify the cache.
   */
  async forward(cache: KVCache, tokens: ArrayLike<number>, positions: ArrayLike<number>, tree: Uint8Array | undefined, pastRows: number): Promise<ExitOutput> {
    const t0 = performance.now();
    const out = await runTimed(this.session, this.feeds.build(cache, tokens, positions, tree, pastRows));
    const r = {
      topkLogProbs: f32Data(out[names.topkLogProbs]), topkIds: i32Data(out[names.topkIds]), entropy: f32Data(out[names.entropy]),
      hidden: f32Data(out[names.hidden]), layerHidden: f32Data(out[names.layerHidden]), ...this.feeds.present(out),
    };
    return this.endCall(t0, r);
  }
}

export class RestSession extends SessionHolder {
  private constructor(readonly cfg: ModelConfig, readonly exitLayer: number, session: Session, private feeds: StepFeeds) {
    super(session);
  }

  static async create(cfg: ModelConfig, weights: Weights, exitLayer: number, opts: StepSessionOptions = {}): Promise<RestSession> {
    checkExit(cfg, exitLayer);
    const valueLayout = opts.valueLayout ?? valueLayoutFor(targetAttention(cfg, weights));
    const session = await createSession(buildRestModel(cfg, weights, exitLayer, { valueLayout, gemmThreads: sessionThreads(opts), treeOrder: true }), opts);
    const feeds = new StepFeeds(cfg.nLayers - exitLayer, cfg.nKvHeads, cfg.headDim, opts.maxTokens ?? DEFAULT_MAX_TOKENS, { firstLayer: exitLayer, ids: false, part: true, valueLayout });
    return new RestSession(cfg, exitLayer, session, feeds);
  }

  /**
   * Layers E..L-1 on residuals `hidden` [T, d] at `positions` (T = positions.length) after the
   * cache's committed prefix; `tree` as in TargetSession.forward. Does not modify the cache.
   */
  async forward(cache: KVCache, hidden: Float32Array, positions: ArrayLike<number>, tree?: Uint8Array): Promise<RestOutput> {
    const t0 = performance.now();
    const t = positions.length, d = this.cfg.dim;
    const rows = firstRows('hidden', hidden, t, d);
    const feeds = this.feeds.build(cache, positions, positions, tree);
    feeds[names.hidden] = f32(rows, [1, t, d]);
    const out = await runTimed(this.session, feeds);
    const r = { logits: f32Data(out[names.logits]), features: f32Data(out[names.features]), layerHidden: f32Data(out[names.layerHidden]), ...this.feeds.present(out) };
    return this.endCall(t0, r);
  }
}

export class ShadowSession extends SessionHolder {
  private constructor(readonly cfg: ModelConfig, session: Session) {
    super(session);
  }

  static async create(cfg: ModelConfig, weights: Weights, opts: StepSessionOptions = {}): Promise<ShadowSession> {
    return new ShadowSession(cfg, await createSession(buildShadowModel(cfg, weights), opts));
  }

  /** argmax lmHead(norm(row)) of the first n rows of `rows` [n, d]. */
  async argmax(rows: Float32Array, n: number): Promise<Int32Array> {
    const d = this.cfg.dim;
    const out = await runTimed(this.session, { [names.hidden]: f32(rows.subarray(0, n * d), [n, d]) });
    return i32Data(out[names.shadowIds]);
  }
}
