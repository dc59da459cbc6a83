/**
 * The EAGLE draft head on onnxruntime-node. One `forward` advances the head by T rows (a
 * catch-up chunk after verification, or one tree depth) and returns each row's predicted
 * feature and the top-k log-probabilities of the next token under the target's LM head.
 */
import type { ModelConfig } from '../model/config.ts';
import { headMismatch, type HeadConfig } from '../model/draft-head.ts';
import type { Weights } from '../model/weights.ts';
import { buildDraftModel, draftVocabOf, names } from '../onnx/model-graphs.ts';
import { defaultAttention, valueLayoutFor, type ValueLayout } from '../onnx/ops.ts';
import type { KVCache } from './kv-cache.ts';
import { createSession, f32, f32Data, firstRows, i32Data, runTimed, SessionHolder, type Session } from './ort.ts';
import { StepFeeds } from './step-feeds.ts';
import { DEFAULT_MAX_TOKENS, type StepSessionOptions } from './target.ts';

export interface DraftSessionOptions extends StepSessionOptions {
  /** Candidates returned per row. Default: 8 (EAGLE-2's top_k), clamped to the draft vocabulary. */
  topK?: number;
  // quantize (StepSessionOptions): the head's Linear layers (LM head included) in the draft
  // graph: fewer bytes per draft pass; proposals may change slightly, output cannot (verification
  // runs the target as it is). Default: none (a target LM head held quantized stays quantized).
}

export const DEFAULT_TOP_K = 8;

export interface DraftOutput {
  /** Predicted features [T, d], fed back as `features` for the next depth. */
  hidden: Float32Array;
  /** [T, k], descending per row. */
  topkLogProbs: Float32Array;
  /** [T, k] target token ids matching topkLogProbs (mapped from draft ids for a reduced vocabulary). */
  topkIds: Int32Array;
  /** [T] full-vocabulary entropy (nats) of each row's next-token distribution. */
  entropy: Float32Array;
  /** The head layer's new keys after RoPE, [T, nKv, hd] (one entry). */
  newKeys: Float32Array[];
  newValues: Float32Array[];
}

/**
 * `lastRow`: only the last row's outputs beyond K/V (hidden, top-k, entropy) are read. A pass
 * may then return them for that row alone (the serving batch pass does; this session returns
 * every row): the caller reads the LAST row of what it gets.
 */
export interface DraftForwardOptions {
  lastRow?: boolean;
}

/** What a drafter needs of the head: its shape and one pass. DraftSession is one; a serving batcher's per-request view is another. */
export type DraftPass = Pick<DraftSession, 'head' | 'topK' | 'forward'>;

/** The EAGLE head's ONNX session: `forward` advances the head by T rows (see the module comment). */
export class DraftSession extends SessionHolder {
  /**
   * @param weights the head's own weights and the quantization its graph was built with, kept
   *   (the head is small) so a serving batch can build its per-slot graph of the same head.
   * @param valueLayout how the caches it is fed hold their values (StepSessionOptions.valueLayout).
   */
  private constructor(readonly head: HeadConfig, readonly topK: number, session: Session, private feeds: StepFeeds, readonly weights: { head: Weights; quantize?: StepSessionOptions['quantize'] }, readonly valueLayout: ValueLayout) {
    super(session);
  }

  /**
   * Builds the head graph. `targetWeights` supplies the embedding table and LM head the head
   * borrows; its cache is a KVCache with one layer.
   */
  static async create(head: HeadConfig, headWeights: Weights, target: ModelConfig, targetWeights: Weights, opts: DraftSessionOptions = {}): Promise<DraftSession> {
    const bad = headMismatch(head, target);
    if (bad) throw new Error(bad);
    const topK = Math.min(opts.topK ?? DEFAULT_TOP_K, draftVocabOf(head));
    const attention = opts.attention ?? defaultAttention(target.maxSeqLen, head.nKvHeads, head.headDim);
    const valueLayout = opts.valueLayout ?? valueLayoutFor(attention);
    const session = await createSession(buildDraftModel(head, headWeights, target, targetWeights, topK, attention, { quantize: opts.quantize, valueLayout, nativeLinear: opts.nativeLinear }), opts);
    return new DraftSession(head, topK, session, new StepFeeds(1, head.nKvHeads, head.headDim, opts.maxTokens ?? DEFAULT_MAX_TOKENS, { valueLayout }), { head: headWeights, quantize: opts.quantize }, valueLayout);
  }

  /**
   * Row i reads token tokens[i] and the feature features[i] ([T, d], the target's feature of
   * the previous position or the head's own prediction), at positions[i]; `tree` as in
   * TargetSession.forward. Does not modify the cache.
   */
  async forward(cache: KVCache, tokens: ArrayLike<number>, features: Float32Array, positions: ArrayLike<number>, tree?: Uint8Array, _opts?: DraftForwardOptions): Promise<DraftOutput> {
    const t0 = performance.now();
    const t = tokens.length, d = this.head.dim;
    const rows = firstRows('features', features, t, d);
    const feeds = this.feeds.build(cache, tokens, positions, tree);
    feeds[names.features] = f32(rows, [1, t, d]);
    const out = await runTimed(this.session, feeds);
    const r = {
      hidden: f32Data(out[names.hidden]),
      topkLogProbs: f32Data(out[names.topkLogProbs]),
      topkIds: i32Data(out[names.topkIds]),
      entropy: f32Data(out[names.entropy]),
      ...this.feeds.present(out),
    };
    return this.endCall(t0, r);
  }
}
