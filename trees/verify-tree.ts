/**
 * A draft tree ready for one verification pass of the target.
 *
 * Node 0 is the root (the last accepted token, not yet run through the target); nodes 1..n-1
 * are drafted tokens in topological order (parent index < child index), so the target runs
 * [root, ...drafted] as one pass with `mask` as its tree attention mask and position id
 * `rootPosition + depths[i]` for node i. Every buffer is allocated once for `capacity` nodes
 * and refilled each round by `build`.
 */
export class VerifyTree {
  /** Nodes in the tree, root included. */
  n = 0;
  /** Depth of the deepest node (0: root only). */
  depth = 0;
  /** Token of node i. Caller-written before `build`. */
  readonly tokens: Int32Array; // [capacity]
  /** Parent node of node i; parents[0] = -1. Caller-written before `build`. */
  readonly parents: Int32Array; // [capacity]
  /** Root-to-node edges: 0 for the root, so the target position id is rootPosition + depth. */
  readonly depths: Int32Array; // [capacity]
  /** Lowest-index child of node i, or -1: with `nextSibling`, the children lists acceptance walks. */
  readonly firstChild: Int32Array; // [capacity]
  /** Next child (ascending) of node i's parent, or -1. */
  readonly nextSibling: Int32Array; // [capacity]
  /** Nodes without children, ascending. */
  readonly leaves: Int32Array; // [capacity], nLeaves valid
  nLeaves = 0;
  /** Row width of `paths`: depth + 1. */
  pathWidth = 0;

  private readonly maskBuf: Uint8Array; // [capacity * capacity]
  private readonly pathBuf: Int32Array; // [capacity * (maxDepth + 1)]
  private readonly lastChild: Int32Array; // [capacity] scratch for linking children in order
  private maskView: Uint8Array;
  private pathView: Int32Array;

  /**
   * @param capacity most nodes a tree can hold, root included.
   * @param maxDepth deepest node depth a tree can have.
   */
  constructor(readonly capacity: number, readonly maxDepth: number) {
    this.tokens = new Int32Array(capacity);
    this.parents = new Int32Array(capacity);
    this.depths = new Int32Array(capacity);
    this.firstChild = new Int32Array(capacity);
    this.nextSibling = new Int32Array(capacity);
    this.leaves = new Int32Array(capacity);
    this.lastChild = new Int32Array(capacity);
    this.maskBuf = new Uint8Array(capacity * capacity);
    this.pathBuf = new Int32Array(capacity * (maxDepth + 1));
    this.maskView = this.maskBuf.subarray(0, 0);
    this.pathView = this.pathBuf.subarray(0, 0);
  }

  /**
   * Tree attention mask, row-major [n, n]: mask[i * n + j] = 1 iff node j is node i or one of
   * its ancestors. A view that stays the same object while n does not change.
   */
  get mask(): Uint8Array {
    return this.maskView;
  }

  /**
   * Root-to-leaf paths, one row per leaf (in `leaves` order), row-major [nLeaves, pathWidth]:
   * node indices root first, padded with -1 after the leaf.
   */
  get paths(): Int32Array {
    return this.pathView;
  }

  /**
   * Derives depths, mask, children, leaves and paths from `tokens[0..n)` and `parents[0..n)`,
   * which the caller has written. Throws RangeError unless parents[0] = -1 and
   * 0 <= parents[i] < i, or if the tree is deeper than `maxDepth`.
   */
  build(n: number): this {
    if (!(Number.isInteger(n) && n >= 1 && n <= this.capacity)) throw new RangeError(`VerifyTree.build: n = ${n} outside [1, ${this.capacity}]`);
    const { parents, depths, firstChild, nextSibling, lastChild } = this;
    if (parents[0] !== -1) throw new RangeError(`VerifyTree.build: parents[0] = ${parents[0]}, the root's parent must be -1`);
    if (this.maskView.length !== n * n) this.maskView = this.maskBuf.subarray(0, n * n);
    const mask = this.maskView;
    firstChild.fill(-1, 0, n);
    nextSibling.fill(-1, 0, n);
    mask.fill(0, 0, n);
    mask[0] = 1;
    depths[0] = 0;
    let depth = 0;
    for (let i = 1; i < n; i++) {
      const p = parents[i];
      if (!(p >= 0 && p < i)) throw new RangeError(`VerifyTree.build: parents[${i}] = ${p}, must be in [0, ${i}) (topological order)`);
      depths[i] = depths[p] + 1;
      if (depths[i] > depth) depth = depths[i];
      // A node sees exactly what its parent sees, plus itself.
      mask.copyWithin(i * n, p * n, p * n + n);
      mask[i * n + i] = 1;
      if (firstChild[p] < 0) firstChild[p] = i;
      else nextSibling[lastChild[p]] = i;
      lastChild[p] = i;
    }
    if (depth > this.maxDepth) throw new RangeError(`VerifyTree.build: depth ${depth} exceeds maxDepth ${this.maxDepth}`);
    this.n = n;
    this.depth = depth;
    this.buildPaths();
    return this;
  }

  private buildPaths(): void {
    const { n, depths, parents, leaves } = this;
    let nLeaves = 0;
    for (let i = 0; i < n; i++) if (this.firstChild[i] < 0) leaves[nLeaves++] = i;
    const width = this.depth + 1;
    if (this.pathView.length !== nLeaves * width) this.pathView = this.pathBuf.subarray(0, nLeaves * width);
    const paths = this.pathView;
    paths.fill(-1);
    for (let r = 0; r < nLeaves; r++) {
      for (let node = leaves[r]; node >= 0; node = parents[node]) paths[r * width + depths[node]] = node;
    }
    this.nLeaves = nLeaves;
    this.pathWidth = width;
  }
}
