/**
 * The target model on onnxruntime-node: one `forward` scores T new tokens (a chunk of a
 * prompt, one decoded token, or a whole draft tree) against the cached prefix.
 */
import type { ModelConfig } from '../model/config.ts';
import type { Weights } from '../model/weights.ts';
import { quantOf } from '../model/quantize.ts';
import { buildTargetModel, names, targetAttention } from '../onnx/model-graphs.ts';
import { valueLayoutFor, valueProduct, type AttentionMode, type OnnxOpsOptions, type ValueLayout } from '../onnx/ops.ts';
import type { KVCache } from './kv-cache.ts';
import { createSession, endProfiling, f32Data, i32Data, releaseSession, runTimed, SessionHolder, type RunStats, type Session, type SessionOptions, sessionThreads } from './ort.ts';
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
   * The layout of the past values the graph reads (see ValueLayout); the caches it is fed take
   * it. Default: the one its attention reads best (valueLayoutFor).
   */
  valueLayout?: ValueLayout;
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
export class TargetSession extends SessionHolder implements TargetPass {
  /**
   * @param valueLayout how the caches it is fed hold their values (StepSessionOptions.valueLayout).
   * @param valueBlock the K block its attention's weights x values product sums keys in (valueProduct).
   * @param treeGraph for a target whose attention is position-ordered (a quantized one): opens
   *   the session that verifies token trees (see `prepareTrees`), else undefined.
   */
  private constructor(readonly cfg: ModelConfig, session: Session, private feeds: StepFeeds, readonly valueLayout: ValueLayout, private valueBlock: number, private treeGraph?: () => Promise<Session>) {
    super(session);
  }

  /** Builds the ONNX graph for `cfg` with `weights` and opens a session on it. */
  static async create(cfg: ModelConfig, weights: Weights, opts: StepSessionOptions = {}): Promise<TargetSession> {
    const attention = opts.attention ?? targetAttention(cfg, weights, opts.quantize), valueLayout = opts.valueLayout ?? valueLayoutFor(attention);
    const gemmThreads = sessionThreads(opts), ops = { quantize: opts.quantize, fuseLinears: opts.fuseLinears, valueLayout, gemmThreads };
    const session = await createSession(buildTargetModel(cfg, weights, attention, ops), opts);
    const rowExact = attention === 'split' && (opts.quantize ?? quantOf(cfg, weights)) !== undefined;
    const treeGraph = rowExact ? () => createSession(buildTargetModel(cfg, weights, attention, { ...ops, treeOrder: true }), opts) : undefined;
    const feeds = new StepFeeds(cfg.nLayers, cfg.nKvHeads, cfg.headDim, opts.maxTokens ?? DEFAULT_MAX_TOKENS, { valueLayout });
    return new TargetSession(cfg, session, feeds, valueLayout, valueProduct(cfg.headDim, cfg.nKvHeads, gemmThreads).kBlock, treeGraph);
  }

  /** The session verifying token trees (see `prepareTrees`), once opened; it counts in `stats`. */
  private trees?: Promise<Session>;

  /**
   * Opens the session that verifies token trees wider than a chain, if this target needs one
   * (else a no-op): a quantized target's attention then orders each row's keys by position
   * (OnnxOpsOptions.treeOrder), so every row of a tree computes bit for bit what one-token
   * steps along its path compute. The one-token step's graph stays without those nodes. Opened
   * on the first such tree otherwise; call this first so that no timed pass pays for it. It
   * holds a second copy of the prepacked weights.
   */
  async prepareTrees(): Promise<void> {
    if (!this.treeGraph || this.trees) return;
    const stats = this.session.stats;
    this.trees = this.treeGraph().then((s) => ({ inner: s.inner, stats }));
    await this.trees;
  }

  override async dispose(): Promise<void> {
    if (this.trees) await releaseSession(await this.trees);
    await super.dispose();
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
    const t = tokens.length, ordered = this.treeGraph !== undefined && tree !== undefined && !prefixRows(tree, t);
    // The tree session orders each row's scores; its weights [.., L+T] still multiply the values
    // in key order, so a visible tree key sits at its tree index, not at its position. That
    // product sums its keys in blocks of valueBlock (128 to 1024): where a block boundary falls
    // inside the tree, a key can land in another block than in a one-token step, and the sum
    // differs in the last bits. Such a tree (about (T-1)/valueBlock of the passes) is verified
    // path by path, each path a chain. (A tree over staged rows, W > T, is not: no target pass has them.)
    if (ordered && tree.length === t * t && Math.floor(cache.length / this.valueBlock) !== Math.floor((cache.length + t - 1) / this.valueBlock))
      return this.forwardByPaths(cache, tokens, positions, tree, logits);
    if (ordered) await this.prepareTrees();
    const session = ordered ? await this.trees! : this.session;
    const t0 = performance.now();
    // Built on the first step, then reused (a step allocates no fetch list).
    const common = (this.fetchArgmax ??= [names.argmax, names.features, ...this.feeds.presentNames()]);
    const fetches = logits ? (this.fetchAll ??= [names.logits, ...common]) : common;
    const out = await runTimed(session, this.feeds.build(cache, tokens, positions, tree), fetches);
    const r = {
      logits: logits ? f32Data(out[names.logits]) : new Float32Array(0),
      argmax: i32Data(out[names.argmax]),
      features: f32Data(out[names.features]),
      ...this.feeds.present(out),
    };
    return this.endCall(t0, r);
  }

  /**
   * `forward` of a tree [T, T] as one chain pass per root-to-leaf path (through the one-token
   * step's graph, which scores a chain's rows exactly): each node's outputs come from the first
   * path holding it.
   */
  private async forwardByPaths(cache: KVCache, tokens: ArrayLike<number>, positions: ArrayLike<number>, tree: Uint8Array, logits: boolean): Promise<TargetOutput> {
    const t = tokens.length, { vocabSize: V, dim: d } = this.cfg, row = this.cfg.nKvHeads * this.cfg.headDim;
    const r: TargetOutput = {
      logits: new Float32Array(logits ? t * V : 0),
      argmax: new Int32Array(t),
      features: new Float32Array(t * d),
      newKeys: Array.from({ length: this.cfg.nLayers }, () => new Float32Array(t * row)),
      newValues: Array.from({ length: this.cfg.nLayers }, () => new Float32Array(t * row)),
    };
    const done = new Uint8Array(t);
    for (let leaf = t - 1; leaf >= 0; leaf--) {
      if (done[leaf]) continue;
      const path: number[] = [];
      for (let j = 0; j < t; j++) if (tree[leaf * t + j]) path.push(j);
      const out = await this.forward(cache, path.map((j) => tokens[j]), path.map((j) => positions[j]), undefined, { logits });
      path.forEach((node, k) => {
        if (done[node]) return;
        done[node] = 1;
        if (logits) r.logits.set(out.logits.subarray(k * V, (k + 1) * V), node * V);
        r.argmax[node] = out.argmax[k];
        r.features.set(out.features.subarray(k * d, (k + 1) * d), node * d);
        for (let l = 0; l < this.cfg.nLayers; l++) {
          r.newKeys[l].set(out.newKeys[l].subarray(k * row, (k + 1) * row), node * row);
          r.newValues[l].set(out.newValues[l].subarray(k * row, (k + 1) * row), node * row);
        }
      });
    }
    return r;
  }

  /** Ends ORT's profile of a session created with `profile` (see SessionOptions). */
  endProfiling(): void {
    endProfiling(this.session);
  }
}

/** Whether every row of `tree` [t, W] sees a prefix of the W keys (then position order is index order). */
function prefixRows(tree: Uint8Array, t: number): boolean {
  const w = tree.length / t;
  for (let i = 0; i < t; i++) {
    let j = i * w;
    const end = j + w;
    while (j < end && tree[j]) j++;
    while (j < end && !tree[j]) j++;
    if (j < end) return false;
  }
  return true;
}
