/**
 * The feeds every decoder pass shares (input_ids, position_ids, tree_mask, past K/V), built
 * into buffers reused across passes, and the unpacking of the new K/V rows. Used by both
 * TargetSession and DraftSession.
 */
import { names } from '../onnx/model-graphs.ts';
import { MASK_NEG } from '../onnx/ops.ts';
import { bool, f32, f32Data, i64, type Feeds, type Fetches } from './ort.ts';
import type { KVCache } from './kv-cache.ts';
import type { ValueLayout } from '../onnx/ops.ts';

export class StepFeeds {
  private ids!: BigInt64Array; // [maxT]
  private positions!: BigInt64Array; // [maxT]
  private causal!: Uint8Array; // [maxT, maxT] lower triangle, built once per size
  private pastLength = new BigInt64Array(1);
  /** A one-token graph's mask [S + 1] and the live rows L it was filled for (see `oneTokenMask`). */
  private mask = new Float32Array(0);
  private maskRows = -1;

  /**
   * @param nLayers layers the model has past inputs for: firstLayer .. firstLayer + nLayers - 1
   *   of the cache (a part of a target, e.g. a self-drafter's early layers, has fewer).
   * @param maxTokens initial buffer size in tokens; grows when a pass needs more.
   * @param opts.firstLayer the cache layer of the model's first past input (default 0).
   * @param opts.ids whether the model takes input_ids (default true; false for a model fed residuals).
   * @param opts.part the model is part of a target whose cache has more layers (default: the cache must match).
   * @param opts.valueLayout the layout of the past values the model reads (its rendering's `valueLayout`).
   * @param opts.oneToken the model is a one-token graph (OnnxOpsOptions.oneToken): feeds its mask instead of the tree and past length.
   * @param opts.tree the model takes the tree mask (default true; false: a fused round's head catch-up, whose one scored row sees every key).
   */
  constructor(readonly nLayers: number, readonly nKvHeads: number, readonly headDim: number, maxTokens: number, private opts: { valueLayout: ValueLayout; firstLayer?: number; ids?: boolean; part?: boolean; oneToken?: boolean; tree?: boolean }) {
    this.allocate(maxTokens);
  }

  private allocate(maxT: number): void {
    this.ids = new BigInt64Array(maxT);
    this.positions = new BigInt64Array(maxT);
    this.causal = new Uint8Array(maxT * maxT);
  }

  /**
   * Feeds for T = tokens.length new tokens after the cache's committed prefix.
   * `tree` [T, W] (0/1; row i = which of the last W keys token i sees, W = T for the new tokens
   * alone, T < W <= P + T to include staged rows) is passed zero-copy; omitted = causal.
   */
  build(cache: KVCache, tokens: ArrayLike<number>, positions: ArrayLike<number>, tree?: Uint8Array, pastRows = cache.length): Feeds {
    const t = tokens.length, first = this.opts.firstLayer ?? 0;
    if (t === 0) throw new RangeError('forward needs at least one token');
    if (positions.length !== t) throw new RangeError(`got ${t} tokens but ${positions.length} positions`);
    // tree [T, W]: visibility of the last W keys (W >= T); earlier keys are always visible.
    const w = tree ? tree.length / t : t;
    if (!Number.isInteger(w) || w < t || w > pastRows + t) throw new RangeError(`tree mask has ${tree?.length} entries: ${t} tokens need [${t}, W] with ${t} <= W <= ${pastRows + t}`);
    // Past rows must fit; the new rows are outputs (appending them checks the room: a batched pass never appends to the batch cache).
    if (pastRows < 0 || pastRows > cache.capacity) throw new RangeError(`${pastRows} past rows exceed the K/V cache's ${cache.capacity} rows`);
    if (cache.nLayers < first + this.nLayers || (!this.opts.part && cache.nLayers !== this.nLayers) || cache.rowSize !== this.nKvHeads * this.headDim)
      throw new RangeError(`K/V cache shape (${cache.nLayers} layers x ${cache.rowSize}) does not fit the model (${this.nLayers} x ${this.nKvHeads * this.headDim})`);
    if (t > this.ids.length) this.allocate(Math.max(t, 2 * this.ids.length));
    for (let i = 0; i < t; i++) {
      this.ids[i] = BigInt(tokens[i]);
      this.positions[i] = BigInt(positions[i]);
    }
    const feeds: Feeds = { [names.positions]: i64(this.positions.subarray(0, t), [1, t]) };
    if (this.opts.ids ?? true) feeds[names.ids] = i64(this.ids.subarray(0, t), [1, t]);
    // The cache's head blocks, zero-copy (K and V [1, nKv, S, hd] or, transposed, [1, nKv, hd,
    // S]); the first L = pastRows of the S = cache.stride rows are live.
    cache.useValueLayout(this.opts.valueLayout);
    cache.ensureRows(pastRows);
    if (this.opts.oneToken) {
      if (t !== 1 || (tree && !(tree.length === 1 && tree[0]))) throw new RangeError('a one-token graph scores one causal token');
      feeds[names.stepMask] = f32(this.oneTokenMask(cache.stride, pastRows), [1, cache.stride + 1]);
    } else {
      if (this.opts.tree ?? true) feeds[names.tree] = bool(tree ?? this.causalMask(t), [t, w]);
      this.pastLength[0] = BigInt(pastRows);
      feeds[names.pastLength] = i64(this.pastLength, [1]);
    }
    const kDims = this.opts.valueLayout === 'rows' ? [1, this.nKvHeads, cache.stride, this.headDim] : [1, this.nKvHeads, this.headDim, cache.stride], vDims = kDims;
    for (let l = first; l < first + this.nLayers; l++) {
      feeds[names.pastKey(l)] = f32(cache.keyView(l), kDims);
      feeds[names.pastValue(l)] = f32(cache.valueView(l), vDims);
    }
    return feeds;
  }

  /**
   * A one-token graph's additive mask over the S cache rows and the new row: [0, L) and S are
   * 0, [L, S) MASK_NEG (the values treeMask builds in-graph). Built whole when S changes; a
   * step then rewrites only the rows whose side of L moved (one, when decoding).
   */
  private oneTokenMask(s: number, l: number): Float32Array {
    const m = this.mask;
    if (m.length !== s + 1) {
      this.mask = new Float32Array(s + 1);
      this.mask.fill(MASK_NEG, l, s);
    } else if (l > this.maskRows) m.fill(0, this.maskRows, l);
    else if (l < this.maskRows) m.fill(MASK_NEG, l, this.maskRows);
    this.maskRows = l;
    return this.mask;
  }

  /** Lower-triangular [t, t] in the reused buffer. */
  private causalMask(t: number): Uint8Array {
    const m = this.causal.subarray(0, t * t);
    for (let i = 0; i < t; i++) {
      m.fill(1, i * t, i * t + i + 1);
      m.fill(0, i * t + i + 1, (i + 1) * t);
    }
    return m;
  }

  /**
   * Output names of the new K/V rows of the model's layers, to fetch: the joined `present`.
   * `prefix` names it inside a graph that holds this model under a prefix (a round's head).
   */
  presentNames(prefix = ''): string[] {
    return [prefix + names.present];
  }

  /**
   * The new rows of each of the model's layers, [T, nKv, hd]: views into the fetched `present`
   * [2n, T, nKv, hd] (a fresh array: ORT copies outputs), named with `prefix` as presentNames.
   */
  present(out: Fetches, prefix = ''): { newKeys: Float32Array[]; newValues: Float32Array[] } {
    const all = f32Data(out[prefix + names.present]), n = this.nLayers, size = all.length / (2 * n);
    const newKeys: Float32Array[] = [], newValues: Float32Array[] = [];
    for (let l = 0; l < n; l++) {
      newKeys.push(all.subarray(l * size, (l + 1) * size));
      newValues.push(all.subarray((n + l) * size, (n + l + 1) * size));
    }
    return { newKeys, newValues };
  }
}
