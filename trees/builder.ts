/**
 * EAGLE-2 dynamic draft trees: expansion depth by depth, then reranking into a `VerifyTree`.
 *
 * Notation: k = topK, D = maxDepth. A node's value is the sum of the draft's log-probabilities
 * along its path from the root (root value 0), an estimate of the log-probability that the
 * target accepts the whole path. A round, driven by the caller:
 *
 *   reset(root)                       frontier = [root], depth 0
 *   expand(top-k of the root row)     scores k children; frontier = those k, depth 1
 *   while depth < D and the policy goes on:
 *     run the draft on the frontier   (tokens, parentSlots, draftMask, position = root + depth)
 *     expand(top-k of each row)       scores k*k children; frontier = their global top k
 *   finish(totalTokens)               best totalTokens of ALL scored children, topological
 *
 * Draft rows: the root is the caller's last committed draft row. Every frontier that the
 * caller runs is staged in the draft cache after the committed prefix, frontier after frontier
 * (rows 0..k-1 are depth 1, k..2k-1 depth 2, ...). `Frontier.draftMask` says which of those
 * staged rows each new row may see; all committed rows are always visible.
 *
 * topK = 1 gives a chain (see `TreeBuilder.chain`). No allocation per round: all buffers are
 * sized in the constructor for k + (D-1)k^2 candidates.
 */
import type { TreeShape } from './shape.ts';
import { VerifyTree } from './verify-tree.ts';

/** The nodes to run through the draft next. Owned by the builder, updated in place. */
export interface Frontier {
  /** Depth of these nodes; 0 means the root alone, which the caller has already run. */
  readonly depth: number;
  /** Nodes F: 1 at depth 0, k after. */
  readonly count: number;
  /** Token of each frontier node, best value first. */
  readonly tokens: Int32Array; // [k], count valid
  /** Cumulative value of each node, descending: values[0] is the best, for confidence policies. */
  readonly values: Float64Array; // [k], count valid
  /**
   * Entropy (nats) of the draft distribution that proposed each node (its parent's row): the
   * full-vocabulary entropy when `expand` was given it (the draft graph computes it), else an
   * estimate from the row's top-k with the remaining mass lumped as one outcome (a lower bound,
   * at most ln(k+1)). 0 at depth 0.
   */
  readonly entropies: Float64Array; // [k], count valid
  /**
   * Index of each node's parent in the previous frontier, i.e. which output row of the previous
   * draft pass supplies its input feature (0 at depth 1: the root's row).
   */
  readonly parentSlots: Int32Array; // [k], count valid
  /** R: draft rows staged earlier this round; this frontier is staged as rows R..R+F-1. */
  readonly rowOffset: number;
  /**
   * [F, R + F] row-major: draftMask[i * (R + F) + j] = 1 iff staged row j is an ancestor of
   * frontier node i or the node itself (j = R + i). Empty at depth 0.
   */
  readonly draftMask: Uint8Array;
}

export class TreeBuilder {
  readonly topK: number;
  readonly maxDepth: number;
  readonly totalTokens: number;

  // Candidates: every node scored this round, in creation order (so parents come first).
  // Index 0 is the root. Capacity C = 1 + k + (D - 1) k^2.
  private readonly candToken: Int32Array; // [C]
  private readonly candParent: Int32Array; // [C]
  private readonly candValue: Float64Array; // [C]
  private readonly candRow: Int32Array; // [C] staged draft row, valid for frontier nodes
  private readonly nodeOf: Int32Array; // [C] scratch: candidate -> VerifyTree node
  private readonly kept: Int32Array; // [totalTokens] scratch: reranked candidates
  private nCand = 0;

  private readonly frontierNodes: Int32Array; // [k] candidate index of each frontier node
  private readonly rowEntropy: Float64Array; // [k] scratch: entropy of each row being expanded
  private readonly draftMasks: Uint8Array[]; // [D + 1] views of one buffer, [k, d k] at depth d
  private readonly fr: { -readonly [K in keyof Frontier]: Frontier[K] };
  private readonly tree: VerifyTree;
  /**
   * After `finish`: the staged draft row of each tree node (its frontier slot's row), or -1 for
   * the root and for nodes never selected into a frontier. A node selected into the last
   * frontier has a row even if the caller did not run that frontier: compare with the rows run.
   * Self-drafting reuses the rows' K/V for verification.
   */
  readonly nodeRows: Int32Array;

  /** `opts` as the library's checkTree passes it; a shape no buffer can be sized for is a RangeError here. */
  constructor(opts: TreeShape) {
    for (const key of ['topK', 'maxDepth', 'totalTokens'] as const) {
      const v = opts[key];
      if (!(Number.isInteger(v) && v >= 1)) throw new RangeError(`${key}: must be an integer >= 1, got ${v}`);
    }
    const k = (this.topK = opts.topK), D = (this.maxDepth = opts.maxDepth);
    this.totalTokens = opts.totalTokens;
    const C = 1 + k + (D - 1) * k * k;
    this.candToken = new Int32Array(C);
    this.candParent = new Int32Array(C);
    this.candValue = new Float64Array(C);
    this.candRow = new Int32Array(C);
    this.nodeOf = new Int32Array(C);
    this.kept = new Int32Array(this.totalTokens);
    this.frontierNodes = new Int32Array(k);
    this.rowEntropy = new Float64Array(k);
    const maskBuf = new Uint8Array(k * D * k);
    this.draftMasks = Array.from({ length: D + 1 }, (_, d) => maskBuf.subarray(0, k * d * k));
    this.fr = {
      depth: 0, count: 0, rowOffset: 0, draftMask: this.draftMasks[0],
      tokens: new Int32Array(k), values: new Float64Array(k), parentSlots: new Int32Array(k), entropies: new Float64Array(k),
    };
    this.tree = new VerifyTree(Math.min(this.totalTokens, C - 1) + 1, D);
    this.nodeRows = new Int32Array(this.tree.capacity);
  }

  /** A linear draft (top-1 at every depth): the tree is a chain of up to `maxDepth` tokens. */
  static chain(maxDepth: number): TreeBuilder {
    return new TreeBuilder({ topK: 1, maxDepth, totalTokens: maxDepth });
  }

  /**
   * Value of every candidate scored this round, in scoring order (index 0 = the root); a view
   * valid until the next `reset`. With `finish` keeping every candidate, candidate i is tree node i.
   */
  get candidateValues(): Float64Array {
    return this.candValue.subarray(0, this.nCand);
  }

  /** What to run through the draft next (the same object every call, updated in place). */
  get frontier(): Frontier {
    return this.fr;
  }

  /** Whether `expand` may be called: the frontier is shallower than maxDepth. */
  get canExpand(): boolean {
    return this.fr.depth < this.maxDepth;
  }

  /** Starts a round: the tree is the root alone, which is also the frontier. */
  reset(rootToken: number): void {
    this.candToken[0] = rootToken;
    this.candParent[0] = -1;
    this.candValue[0] = 0;
    this.candRow[0] = -1;
    this.nCand = 1;
    this.frontierNodes[0] = 0;
    const fr = this.fr;
    fr.depth = 0;
    fr.count = 1;
    fr.rowOffset = 0;
    fr.draftMask = this.draftMasks[0];
    fr.tokens[0] = rootToken;
    fr.values[0] = 0;
    fr.parentSlots[0] = 0;
    fr.entropies[0] = 0;
  }

  /**
   * Scores the children of the current frontier and selects the next frontier: the k best of
   * those children by value, ties to the earlier-scored child.
   * @param topkIds the draft's top-k tokens for each frontier row, in frontier order. [F, k]
   * @param topkLogProbs their log-probabilities (<= 0; tiny positive rounding noise counts as 0). [F, k]
   * @param entropies full-vocabulary entropy of each frontier row, if known. [F]
   */
  expand(topkIds: ArrayLike<number>, topkLogProbs: ArrayLike<number>, entropies?: ArrayLike<number>): void {
    const k = this.topK, fr = this.fr, F = fr.count;
    if (!this.canExpand) throw new RangeError(`TreeBuilder.expand: frontier already at maxDepth ${this.maxDepth}`);
    if (topkIds.length < F * k || topkLogProbs.length < F * k) {
      throw new RangeError(`TreeBuilder.expand: need [${F}, ${k}] top-k ids and log-probs, got ${topkIds.length} and ${topkLogProbs.length} values`);
    }
    const { candToken, candParent, candValue, candRow, frontierNodes } = this;
    const base = this.nCand;
    for (let i = 0; i < F; i++) {
      const parent = frontierNodes[i], pv = candValue[parent];
      this.rowEntropy[i] = entropies ? entropies[i] : topkEntropy(topkLogProbs, i * k, k);
      for (let j = 0; j < k; j++) {
        const lp = topkLogProbs[i * k + j];
        if (Number.isNaN(lp)) throw new RangeError(`TreeBuilder.expand: log-prob [${i}, ${j}] is NaN`);
        const c = base + i * k + j;
        candToken[c] = topkIds[i * k + j];
        candParent[c] = parent;
        // Clamping keeps child <= parent, which makes every reranked set a connected subtree.
        candValue[c] = pv + (lp > 0 ? 0 : lp);
        candRow[c] = -1;
      }
    }
    this.nCand = base + F * k;

    // The frontier just expanded was staged by the caller's last draft pass (unless it was the root).
    const R = fr.depth === 0 ? 0 : fr.rowOffset + F;
    const count = selectTop(candValue, base, this.nCand, k, frontierNodes);
    const depth = fr.depth + 1, width = R + count;
    const mask = this.draftMasks[depth];
    mask.fill(0);
    for (let i = 0; i < count; i++) {
      const node = frontierNodes[i];
      candRow[node] = R + i;
      fr.tokens[i] = candToken[node];
      fr.values[i] = candValue[node];
      fr.parentSlots[i] = Math.floor((node - base) / k);
      fr.entropies[i] = this.rowEntropy[fr.parentSlots[i]];
      mask[i * width + R + i] = 1;
      for (let a = candParent[node]; a !== 0; a = candParent[a]) mask[i * width + candRow[a]] = 1;
    }
    fr.depth = depth;
    fr.count = count;
    fr.rowOffset = R;
    fr.draftMask = mask;
  }

  /**
   * Ends the round: keeps the `totalTokens` best-valued candidates (ties to the earlier-scored
   * one, so a parent always outranks its equal-valued child and the set stays connected) and
   * lays them out in scoring order, which is topological. Returns the builder's own VerifyTree,
   * valid until the next `reset`.
   * @param totalTokens drafted tokens to keep this round, at most the constructor's. Default: that.
   */
  finish(totalTokens: number = this.totalTokens): VerifyTree {
    if (!(Number.isInteger(totalTokens) && totalTokens >= 0 && totalTokens <= this.totalTokens)) {
      throw new RangeError(`TreeBuilder.finish: totalTokens ${totalTokens} outside [0, ${this.totalTokens}]`);
    }
    const { candToken, candParent, nodeOf, kept, tree } = this;
    const count = selectTop(this.candValue, 1, this.nCand, totalTokens, kept);
    // Mark the kept candidates, then number them in candidate order.
    nodeOf.fill(-1, 0, this.nCand);
    for (let i = 0; i < count; i++) nodeOf[kept[i]] = 0;
    nodeOf[0] = 0;
    tree.tokens[0] = candToken[0];
    tree.parents[0] = -1;
    this.nodeRows[0] = -1;
    let n = 1;
    for (let c = 1; c < this.nCand; c++) {
      if (nodeOf[c] < 0) continue;
      nodeOf[c] = n;
      tree.tokens[n] = candToken[c];
      tree.parents[n] = nodeOf[candParent[c]];
      this.nodeRows[n] = this.candRow[c];
      n++;
    }
    return tree.build(n);
  }
}

/** Entropy (nats) of a row known by its top-k log-probs; the mass outside them counts as one outcome. */
function topkEntropy(logProbs: ArrayLike<number>, from: number, k: number): number {
  let h = 0, mass = 0;
  for (let j = from; j < from + k; j++) {
    const lp = Math.min(logProbs[j], 0), p = Math.exp(lp);
    h -= p * lp;
    mass += p;
  }
  const rest = 1 - mass;
  return rest > 1e-12 ? h - rest * Math.log(rest) : h;
}

/**
 * Writes to `out` the indices in [from, to) of the `limit` largest `values`, best first, ties
 * to the lower index; returns how many were written. Sorted insertion: O((to - from) * limit),
 * small for the few hundred candidates of a round, and allocation-free.
 */
function selectTop(values: Float64Array, from: number, to: number, limit: number, out: Int32Array): number {
  let count = 0;
  for (let c = from; c < to; c++) {
    const v = values[c];
    let i: number;
    if (count < limit) i = count++;
    else if (limit > 0 && v > values[out[limit - 1]]) i = limit - 1;
    else continue;
    while (i > 0 && v > values[out[i - 1]]) {
      out[i] = out[i - 1];
      i--;
    }
    out[i] = c;
  }
  return count;
}
