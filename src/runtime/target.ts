/**
 * The target model on onnxruntime-node: one `forward` scores T new tokens (a chunk of a
 * prompt, one decoded token, or a whole draft tree) against the cached prefix.
 */
import type { ModelConfig } from '../model/config.ts';
import type { Weights } from '../model/weights.ts';
import { quantOf } from '../model/quantize.ts';
import { buildTargetModel, names, ordersTrees, targetAttention } from '../onnx/model-graphs.ts';
import { valueLayoutFor, type AttentionMode, type OnnxOpsOptions, type ValueLayout } from '../onnx/ops.ts';
import type { KVCache } from './kv-cache.ts';
import { createSession, endProfiling, f32Data, i32Data, releaseSession, runTimed, type RunStats, type Session, type SessionOptions, sessionThreads } from './ort.ts';
import { byPaths, TreePassHolder, TreePasses } from './tree-passes.ts';
import { StepFeeds } from './step-feeds.ts';

export interface StepSessionOptions extends SessionOptions {
  /**
   * Weight-only quantization of the Linear layers (MatMulNBits). For a target whose weights are
   * already held quantized (a quantized checkpoint), that quantization applies by default.
   */
  quantize?: OnnxOpsOptions['quantize'];
  /** Input buffers are sized for this many tokens per pass and grow if a pass needs more. Default: 64. */
  maxTokens?: number;
  /** How attention reads the cache (see AttentionMode). Default: targetAttention (defaultAttention of context, K/V width, quantized). */
  attention?: AttentionMode;
  /** Fuse quantized Linear layers over one input (OnnxOpsOptions.fuseLinears). Default true. */
  fuseLinears?: boolean;
  /**
   * The layout of the past keys and values the graph reads (see ValueLayout); the caches it is fed take
   * it. Default: the one its attention reads best (valueLayoutFor).
   */
  valueLayout?: ValueLayout;
  /**
   * Also open a one-token graph (OnnxOpsOptions.oneToken) and run every one-token causal pass
   * (a plain decoding step) in it: the same bits as the step graph's T = 1 pass, 0.1-0.2 ms
   * less a pass on a 29M model at 2 threads and a tie at 1 (docs/performance.md, "K/V read in
   * place", sessions 13 and 18), but ORT
   * sessions share no initializers, so it holds a second copy of the prepacked weights. For
   * fp32 targets with 'split' attention; ignored otherwise. Default false.
   */
  oneToken?: boolean;
  /**
   * With oneToken: the one-token graph's attention over the past is eaglet's own kernel
   * (OnnxOpsOptions.nativeAttention), and that graph's session opens on the native addon
   * (SessionOptions.native; built with g++ on first use). Experimental: results agree with the
   * ORT graph's to float32 rounding, not bit for bit. Default false.
   */
  nativeAttention?: boolean;
}

export const DEFAULT_MAX_TOKENS = 64;

export interface TargetOutput {
  /** [T, V]; empty when the pass was asked for argmax only. */
  logits: Float32Array;
  /** [T]: each row's most likely token (first index on ties), computed in-graph. */
  argmax: Int32Array;
  /** Final-norm hidden states [T, d]: the draft head's input. */
  features: Float32Array;
  /** Per layer, new keys after RoPE [T, nKv, hd]. */
  newKeys: Float32Array[];
  /** Per layer, new values [T, nKv, hd]. */
  newValues: Float32Array[];
}

/**
 * What the decoding loop needs of a target: its config and one scoring pass. TargetSession is
 * one; a serving batcher's per-request view (src/runtime/batch.ts) is another.
 */
export interface TargetPass {
  readonly cfg: ModelConfig;
  readonly stats: RunStats;
  forward(cache: KVCache, tokens: ArrayLike<number>, positions: ArrayLike<number>, tree?: Uint8Array, opts?: { logits?: boolean }): Promise<TargetOutput>;
}

/** The target's ONNX session: `forward` scores new tokens against the cache (see the module comment). */
export class TargetSession extends TreePassHolder implements TargetPass {
  /**
   * @param valueLayout how the caches it is fed hold their values (StepSessionOptions.valueLayout).
   * @param passes the step's session and, for a target whose attention is position-ordered (a
   *   quantized one), the one verifying token trees (see `prepareTrees`).
   */
  private constructor(readonly cfg: ModelConfig, private feeds: StepFeeds, readonly valueLayout: ValueLayout, passes: TreePasses, private one?: { session: Session; feeds: StepFeeds }) {
    super(passes);
  }

  /** Builds the ONNX graph for `cfg` with `weights` and opens a session on it. */
  static async create(cfg: ModelConfig, weights: Weights, opts: StepSessionOptions = {}): Promise<TargetSession> {
    const attention = opts.attention ?? targetAttention(cfg, weights, opts.quantize), valueLayout = opts.valueLayout ?? valueLayoutFor(attention);
    const gemmThreads = sessionThreads(opts), ops = { quantize: opts.quantize, fuseLinears: opts.fuseLinears, valueLayout, gemmThreads, nativeLinear: opts.nativeLinear };
    const exact = ordersTrees(attention, opts.quantize ?? quantOf(cfg, weights));
    const passes = await TreePasses.open(cfg, gemmThreads, exact, (treeOrder) => createSession(buildTargetModel(cfg, weights, attention, { ...ops, treeOrder }), opts));
    const feeds = new StepFeeds(cfg.nLayers, cfg.nKvHeads, cfg.headDim, opts.maxTokens ?? DEFAULT_MAX_TOKENS, { valueLayout });
    let one: { session: Session; feeds: StepFeeds } | undefined;
    if (opts.oneToken && attention === 'split' && !exact && !(opts.quantize ?? quantOf(cfg, weights))) {
      // Its passes count in the step's stats. If it cannot open (e.g. no memory for the second
      // copy of the weights), the sessions already open are released before the error goes up.
      const native = opts.nativeAttention === true;
      const s = await createSession(buildTargetModel(cfg, weights, attention, { ...ops, oneToken: true, nativeAttention: native }), { ...opts, native }).catch(async (e: unknown) => {
        await passes.dispose();
        throw e;
      });
      one = { session: { inner: s.inner, stats: passes.step.stats }, feeds: new StepFeeds(cfg.nLayers, cfg.nKvHeads, cfg.headDim, 1, { valueLayout, oneToken: true }) };
    }
    return new TargetSession(cfg, feeds, valueLayout, passes, one);
  }

  /** Whether one-token causal passes run in a one-token graph (StepSessionOptions.oneToken). */
  get oneTokenGraph(): boolean {
    return this.one !== undefined;
  }

  override async dispose(): Promise<void> {
    try {
      if (this.one) await releaseSession(this.one.session);
    } finally {
      await super.dispose();
    }
  }

  private fetchAll?: string[];
  private fetchArgmax?: string[];

  /**
   * Scores `tokens` at `positions` after the cache's committed prefix. `tree` [T, W] says which
   * of the last W keys each token sees (a verification tree: W = T, the ancestor-or-self
   * matrix, nodes in topological order); the keys before them are always visible; omitted =
   * causal. `logits: false` skips copying the [T, V] logits back (greedy needs only argmax).
   * Does not modify the cache: the caller appends or commits the returned rows it keeps.
   */
  async forward(cache: KVCache, tokens: ArrayLike<number>, positions: ArrayLike<number>, tree?: Uint8Array, { logits = true } = {}): Promise<TargetOutput> {
    const t = tokens.length, session = await this.passes.route(tree, t, cache.length);
    if (session === 'paths') {
      // A tree across a K block, verified path by path (tree-passes.ts): each node's outputs come from the first path holding it.
      const staged = tree!.length / t - t;
      return byPaths(tree!, t, (path) => {
        if (path[0] < staged) throw new RangeError('a target tree over staged rows crosses a K block: the target cannot run it path by path (it does not know their tokens)');
        return this.forward(cache, path.map((j) => tokens[j - staged]), path.map((j) => positions[j - staged]), undefined, { logits });
      });
    }
    const t0 = performance.now();
    // Built on the first step, then reused (a step allocates no fetch list).
    const common = (this.fetchArgmax ??= [names.argmax, names.features, ...this.feeds.presentNames()]);
    const fetches = logits ? (this.fetchAll ??= [names.logits, ...common]) : common;
    const one = this.one && t === 1 && (!tree || (tree.length === 1 && tree[0])) ? this.one : undefined;
    const out = one ? await runTimed(one.session, one.feeds.build(cache, tokens, positions), fetches) : await runTimed(session, this.feeds.build(cache, tokens, positions, tree), fetches);
    const r = {
      logits: logits ? f32Data(out[names.logits]) : new Float32Array(0),
      argmax: i32Data(out[names.argmax]),
      features: f32Data(out[names.features]),
      ...this.feeds.present(out),
    };
    return this.endCall(t0, r);
  }

  /** Ends ORT's profile of a session created with `profile` (see SessionOptions). */
  endProfiling(): void {
    endProfiling(this.session);
    if (this.one) endProfiling(this.one.session);
  }
}
