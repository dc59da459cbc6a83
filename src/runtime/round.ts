/**
 * A whole speculative round of chain drafting in one ORT call (buildRoundModel): the draft
 * head catches up and drafts `depth` tokens greedily, the target verifies the root and the
 * first M of them. On a CPU with a small model, per-call overhead (feeds, dispatch, output
 * copies, thread wake-ups) is most of a draft pass; one call per round pays it once.
 *
 * The session holds the target's weights again (its own copy inside ORT), beside the plain
 * TargetSession that prefill and plain steps use.
 */
import type { ModelConfig } from '../model/config.ts';
import { headMismatch, type HeadConfig } from '../model/draft-head.ts';
import type { Weights } from '../model/weights.ts';
import { buildRoundModel, names, targetAttention } from '../onnx/model-graphs.ts';
import { valueLayoutFor, type OnnxOpsOptions, type ValueLayout } from '../onnx/ops.ts';
import type { KVCache } from './kv-cache.ts';
import { createSession, f32, f32Data, firstRows, i32Data, i64, runTimed, SessionHolder, type Feeds, type Session, sessionThreads } from './ort.ts';
import { StepFeeds } from './step-feeds.ts';
import { DEFAULT_MAX_TOKENS, type StepSessionOptions, type TargetOutput } from './target.ts';

export interface RoundSessionOptions extends StepSessionOptions {
  /** Weight-only quantization of the head's Linear layers, as DraftSession's. */
  quantize?: OnnxOpsOptions['quantize'];
  // valueLayout (StepSessionOptions): the target cache's; default valueLayoutFor its attention.
  /**
   * The layout of the head cache's values. Default 'rows' (the graph reads the head's past with
   * the one-kernel Attention); a head cache shared with a DraftSession (serving) takes that
   * session's.
   */
  headValueLayout?: ValueLayout;
}

/** The head's catch-up rows: row i = (features[i], tokens[i]) at positions[i] (as DraftSession.forward). */
export interface CatchUp {
  tokens: ArrayLike<number>;
  features: Float32Array;
  positions: ArrayLike<number>;
}

export interface RoundOutput extends TargetOutput {
  /** [depth] the drafted chain (target ids); the first M were verified. */
  drafts: Int32Array;
  /** The catch-up rows' K/V in the head's layer, [C, nKv, hd] (one entry each). */
  headKeys: Float32Array[];
  headValues: Float32Array[];
}

export class RoundSession extends SessionHolder {
  private rootIds = new BigInt64Array(1);
  private fetchAll?: string[];
  private fetchArgmax?: string[];

  /**
   * @param padsRows the verification is padded to an even number of rows (a quantized target
   *   with blocks above ROW_EXACT_BLOCK): verifying 2k - 1 rows costs what 2k rows do.
   */
  private constructor(readonly cfg: ModelConfig, readonly head: HeadConfig, readonly depth: number, session: Session, private feeds: StepFeeds, private headFeeds: StepFeeds, readonly valueLayout: ValueLayout, readonly padsRows: boolean) {
    super(session);
  }

  static async create(cfg: ModelConfig, weights: Weights, head: HeadConfig, headWeights: Weights, depth: number, opts: RoundSessionOptions = {}): Promise<RoundSession> {
    const bad = headMismatch(head, cfg);
    if (bad) throw new Error(bad);
    // The target's rendering, as its TargetSession has it (plain steps and these verifications must agree).
    const attention = opts.attention ?? targetAttention(cfg, weights);
    const valueLayout = opts.valueLayout ?? valueLayoutFor(attention), headValueLayout = opts.headValueLayout ?? 'rows';
    const model = buildRoundModel(cfg, weights, head, headWeights, depth, attention, { quantize: opts.quantize, valueLayout: headValueLayout, nativeLinear: opts.nativeLinear }, { valueLayout, gemmThreads: sessionThreads(opts), nativeLinear: opts.nativeLinear });
    const session = await createSession(model, opts);
    const maxT = opts.maxTokens ?? DEFAULT_MAX_TOKENS;
    return new RoundSession(cfg, head, depth, session, new StepFeeds(cfg.nLayers, cfg.nKvHeads, cfg.headDim, maxT, { valueLayout }), new StepFeeds(1, head.nKvHeads, head.headDim, maxT, { valueLayout: headValueLayout, tree: false }), valueLayout, model.padsRows);
  }

  /**
   * Drafts with the head (after `catchUp`, against `headCache`) and verifies
   * [root, first m drafts] at `positions` [1 + m] under `tree` [1 + m, 1 + m] (a chain's
   * causal mask) against `cache`. Modifies neither cache.
   */
  async run(cache: KVCache, root: number, positions: ArrayLike<number>, tree: Uint8Array, headCache: KVCache, catchUp: CatchUp, { logits = true } = {}): Promise<RoundOutput> {
    const t0 = performance.now();
    const n = positions.length, m = n - 1, d = this.head.dim, c = catchUp.tokens.length;
    if (m < 0 || m > this.depth) throw new RangeError(`a round verifies 1..${this.depth + 1} rows, got ${n}`);
    const catchUpFeatures = firstRows('catch-up features', catchUp.features, c, d);
    // The target's feeds take the positions' length as the row count; only the root is an id.
    const feeds: Feeds = this.feeds.build(cache, positions, positions, tree);
    this.rootIds[0] = BigInt(root);
    feeds[names.ids] = i64(this.rootIds, [1]);
    const hf = this.headFeeds.build(headCache, catchUp.tokens, catchUp.positions);
    for (const [k, v] of Object.entries(hf)) feeds[names.headPrefix + k] = v;
    feeds[names.headPrefix + names.features] = f32(catchUpFeatures, [c, d]);
    // Built on the first round, then reused (a round allocates no fetch list).
    const common = (this.fetchArgmax ??= [names.argmax, names.features, names.draftIds, ...this.feeds.presentNames(), ...this.headFeeds.presentNames(names.headPrefix)]);
    const fetches = logits ? (this.fetchAll ??= [names.logits, ...common]) : common;
    const out = await runTimed(this.session, feeds, fetches);
    const head = this.headFeeds.present(out, names.headPrefix);
    const r: RoundOutput = {
      logits: logits ? f32Data(out[names.logits]) : new Float32Array(0),
      argmax: i32Data(out[names.argmax]),
      features: f32Data(out[names.features]),
      ...this.feeds.present(out),
      drafts: i32Data(out[names.draftIds]).subarray(1), // after the root
      headKeys: head.newKeys,
      headValues: head.newValues,
    };
    return this.endCall(t0, r);
  }
}
