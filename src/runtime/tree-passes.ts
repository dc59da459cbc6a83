/**
 * Tree passes whose rows must equal one-token steps bit for bit: a quantized target's
 * verification, and the exit and rest graphs a self-drafter runs on parts of that target (int8
 * activations turn a last-bit difference into a logit gap).
 *
 * A causal chain's rows are exact in the step's own graph (OnnxOpsOptions.rowExactAttention).
 * A tree wider than a chain also needs each row's scores in position order
 * (OnnxOpsOptions.treeOrder): extra nodes in every layer, so they live in a graph of their own,
 * opened on the first such pass (or by `prepare`); steps and chains never pay for them. ORT
 * sessions share no initializers: once opened, that graph holds a second copy of the prepacked
 * weights.
 *
 * Even ordered, a tree row's weights multiply the values in key order: a visible key sits at
 * its column in the pass (its ancestors with siblings between them), not at its position. That
 * product sums keys in blocks of kBlock from key 0 (128 to 1024: valueProduct), so where a block
 * edge falls inside the tree's keys a key can land in another block than in a one-token step,
 * and the sum differs in the last bits. Such a pass (about (W-1)/kBlock of them) runs path by
 * path, each path a chain (`byPaths`).
 */
import type { ModelConfig } from '../model/config.ts';
import { valueProduct } from '../onnx/ops.ts';
import { releaseSession, SessionHolder, type Session } from './ort.ts';

/** Where a pass runs: a session, or path by path (see the module comment). */
export type TreeRoute = Session | 'paths';

export class TreePasses {
  private trees?: Promise<Session>;

  /**
   * @param step the step's session: causal chains and trees whose rows see a prefix of their keys.
   * @param treeGraph opens the graph with treeOrder, for a position-exact graph (rowExactAttention); else undefined and every pass runs in `step`.
   * @param kBlock the K block its weights x values product sums keys in (valueProduct).
   */
  private constructor(readonly step: Session, private treeGraph: (() => Promise<Session>) | undefined, private kBlock: number) {}

  /**
   * Opens the step's session (`open(false)`) and, if `exact` (a position-exact graph), keeps
   * `open(true)` (the same graph with treeOrder) to open for the first tree pass.
   */
  static async open(cfg: ModelConfig, gemmThreads: number, exact: boolean, open: (treeOrder: boolean) => Promise<Session>): Promise<TreePasses> {
    return new TreePasses(await open(false), exact ? () => open(true) : undefined, valueProduct(cfg.headDim, cfg.nKvHeads, gemmThreads).kBlock);
  }

  /** Opens the tree graph's session now, if there is one (a no-op otherwise), so that no timed pass pays for it. It counts in `step`'s stats. */
  async prepare(): Promise<void> {
    if (!this.treeGraph || this.trees) return;
    const stats = this.step.stats;
    this.trees = this.treeGraph().then((s) => ({ inner: s.inner, stats }));
    await this.trees;
  }

  /**
   * Where a pass of `t` rows runs whose `tree` [t, W] (undefined: causal) says which of the last
   * W of its pastRows + t keys each row sees: the step's session, the tree session, or 'paths'
   * where a K-block edge falls inside those W keys.
   */
  async route(tree: Uint8Array | undefined, t: number, pastRows: number): Promise<TreeRoute> {
    if (!this.treeGraph || tree === undefined || prefixRows(tree, t)) return this.step;
    const last = pastRows + t - 1, first = last + 1 - tree.length / t;
    if (Math.floor(first / this.kBlock) !== Math.floor(last / this.kBlock)) return 'paths';
    await this.prepare();
    return this.trees!;
  }

  /** Releases both sessions. */
  async dispose(): Promise<void> {
    if (this.trees) await releaseSession(await this.trees);
    await releaseSession(this.step);
  }
}

/** A runtime class over TreePasses: SessionHolder over both of its sessions (counters in common). */
export abstract class TreePassHolder extends SessionHolder {
  protected constructor(protected readonly passes: TreePasses) {
    super(passes.step);
  }

  /**
   * Opens the session for token trees wider than a chain now, if this graph has one (else a
   * no-op), so that no timed pass pays for it: a position-exact graph's trees need their rows'
   * scores in position order (OnnxOpsOptions.treeOrder), in a graph of their own that holds a
   * second copy of the prepacked weights. Opened on the first such tree otherwise.
   */
  prepareTrees(): Promise<void> {
    return this.passes.prepare();
  }

  override async dispose(): Promise<void> {
    await this.passes.dispose();
  }
}

/** Whether every row of `tree` [t, W] sees a prefix of the W keys (then position order is index order). */
export function prefixRows(tree: Uint8Array, t: number): boolean {
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

type RowArray = Float32Array | Int32Array;
/** A pass's outputs: arrays of its rows, row-major, or one such array per layer. */
export type PassRows<O> = { [K in keyof O]: RowArray | RowArray[] };

/**
 * A pass over `tree` [t, W] run as one chain per root-to-leaf path. `chain(path)` runs the
 * columns in `path` (of the W keys: the W - t rows staged before this pass, then its t rows; a
 * row's ancestors by depth, then the row) as a causal chain after the keys every row sees, and
 * returns its outputs, row k for path[k]. Each of the t rows takes its outputs from the first
 * path holding it; leaves are taken from the last row back, so a row on a shared path is run once.
 */
export async function byPaths<O extends PassRows<O>>(tree: Uint8Array, t: number, chain: (path: number[]) => Promise<O>): Promise<O> {
  const w = tree.length / t, staged = w - t, done = new Uint8Array(t);
  let r: O | undefined;
  for (let leaf = t - 1; leaf >= 0; leaf--) {
    if (done[leaf]) continue;
    const path: number[] = [];
    for (let j = 0; j < w; j++) if (tree[leaf * w + j]) path.push(j);
    const out = await chain(path);
    r ??= rowsLike(out, path.length, t);
    path.forEach((col, k) => {
      const node = col - staged;
      if (node < 0 || done[node]) return;
      done[node] = 1;
      for (const key of Object.keys(out) as (keyof O)[]) copyRow(out[key], r![key], path.length, k, node);
    });
  }
  return r!;
}

/** Empty outputs shaped as `out` (of `n` rows) for `t` rows. */
function rowsLike<O extends PassRows<O>>(out: O, n: number, t: number): O {
  const like = (a: RowArray): RowArray => new (a.constructor as new (n: number) => RowArray)((a.length / n) * t);
  const r = {} as Record<keyof O, RowArray | RowArray[]>;
  for (const key of Object.keys(out) as (keyof O)[]) {
    const v = out[key];
    r[key] = Array.isArray(v) ? v.map(like) : like(v as RowArray);
  }
  return r as O;
}

/** Row `k` of `src` (of `n` rows) into row `node` of `dst`, per layer for lists. */
function copyRow(src: RowArray | RowArray[], dst: RowArray | RowArray[], n: number, k: number, node: number): void {
  if (Array.isArray(src)) {
    src.forEach((s, l) => copyRow(s, (dst as RowArray[])[l], n, k, node));
    return;
  }
  const width = src.length / n;
  (dst as RowArray).set(src.subarray(k * width, (k + 1) * width), node * width);
}
