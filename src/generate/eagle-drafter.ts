/**
 * The EAGLE-2 drafter: grows a dynamic token tree with the draft head, depth by depth.
 *
 * Draft rows pair a target feature with the NEXT token: row i = (f_i, token_{i+1}) at
 * position i, predicting f_{i+1}. Each round first catches the head up on the rows committed
 * since its last round (real target features, committed to its cache), whose last row
 * (f_{P-1}, root) scores the root's children; then every deeper frontier runs as one pass of
 * staged rows under the builder's tree mask, fed with the head's own predicted features.
 * Staged rows are dropped at the end of the round.
 */
import { TreeBuilder, type TreeShape, type VerifyTree } from '../../trees/index.ts';
import { checkTree } from '../option-schema.ts';
import type { DraftOutput, DraftPass, DraftSession } from '../runtime/draft.ts';
import { KVCache } from '../runtime/kv-cache.ts';
import type { TargetPass } from '../runtime/target.ts';
import type { History } from './history.ts';
import type { LengthPolicy, RoundPlan } from '../policies/policy.ts';
import { verifyWithTarget, type Drafter, type Verified, type VerifyFetch } from './drafter.ts';

/** Drafts EAGLE-2 trees with a draft head session (see the module comment). */
export class EagleDrafter<S extends DraftPass = DraftSession> implements Drafter {
  readonly cache: KVCache;
  private builder: TreeBuilder;
  private positions: Int32Array; // [max(context, topK)] scratch
  private frontierFeatures: Float32Array; // [topK, d]
  private topIds: Int32Array; // [topK, topK] the session's candidates cut to the tree's top-k
  private topLogProbs: Float32Array; // [topK, topK]
  /** Draft passes run (cumulative). */
  passes = 0;

  /** Rows a head cache needs for a target context of `capacity`: the context plus a round's staged tree levels. */
  static cacheRows(shape: TreeShape, capacity: number): number {
    return capacity + shape.maxDepth * shape.topK + 1;
  }

  /**
   * @param capacity the target's context length.
   * @param cache the head's cache (default: its own, of cacheRows rows; serving passes a slot of a batch cache).
   */
  constructor(readonly session: S, readonly shape: TreeShape, capacity: number, cache?: KVCache) {
    const h = session.head;
    checkTree(shape);
    if (shape.topK > session.topK) throw new RangeError(`tree top-k ${shape.topK} exceeds the draft session's top-k ${session.topK}`);
    this.cache = cache ?? new KVCache(1, h.nKvHeads, h.headDim, EagleDrafter.cacheRows(shape, capacity));
    this.builder = new TreeBuilder(shape);
    this.positions = new Int32Array(capacity + shape.topK);
    this.frontierFeatures = new Float32Array(shape.topK * h.dim);
    this.topIds = new Int32Array(shape.topK * shape.topK);
    this.topLogProbs = new Float32Array(shape.topK * shape.topK);
  }

  reset(): void {
    this.cache.truncate(0);
  }

  /** Values of every candidate scored by the last `draft` (TreeBuilder.candidateValues), for tuning. */
  get candidateValues(): Float64Array {
    return this.builder.candidateValues;
  }

  /**
   * Feeds rows [from, from + n) of the session's top-K output ([T, K], best first) to the
   * builder, cut to the tree's top-k when the session returns more (one session can serve
   * several tree shapes).
   */
  private expand(ids: Int32Array, logProbs: Float32Array, entropy: Float32Array, from: number, n: number): void {
    const K = this.session.topK, k = this.shape.topK, h = entropy.subarray(from, from + n);
    if (K === k) return this.builder.expand(ids.subarray(from * K, (from + n) * K), logProbs.subarray(from * K, (from + n) * K), h);
    for (let r = 0; r < n; r++) {
      this.topIds.set(ids.subarray((from + r) * K, (from + r) * K + k), r * k);
      this.topLogProbs.set(logProbs.subarray((from + r) * K, (from + r) * K + k), r * k);
    }
    this.builder.expand(this.topIds.subarray(0, n * k), this.topLogProbs.subarray(0, n * k), h);
  }

  /**
   * Drafts a tree rooted at `root` (position P = history.length) of at most plan.depth levels,
   * asking `policy` after each level whether to go deeper.
   */
  async draft(history: History, root: number, plan: RoundPlan, policy: LengthPolicy): Promise<VerifyTree> {
    const { cache, builder, session } = this;
    const d = session.head.dim, P = history.length;
    history.tokens[P] = root;

    // Catch-up: rows c..P-1, the last one (f_{P-1}, root) drafted from.
    const first = await this.catchUp(history, P);
    const committed = cache.length;

    builder.reset(root);
    const keep = (h: Float32Array) => policy.keepLevel?.(builder.frontier, h) ?? true;
    const last = first.entropy.length - 1; // the last row of those returned
    if (!keep(first.entropy.subarray(last, last + 1))) return this.stop(committed);
    this.expand(first.topkIds, first.topkLogProbs, first.entropy, last, 1);
    let hidden = first.hidden.subarray(last * d, (last + 1) * d); // [F_prev, d]
    while (builder.frontier.depth < plan.depth && builder.canExpand && (policy.continueDrafting?.(builder.frontier, hidden) ?? true)) {
      const fr = builder.frontier, F = fr.count;
      for (let i = 0; i < F; i++) {
        const s = fr.parentSlots[i];
        this.frontierFeatures.set(hidden.subarray(s * d, (s + 1) * d), i * d);
        this.positions[i] = P - 1 + fr.depth; // a node at depth t sits at position P + t, its draft row at P + t - 1
      }
      const out = await session.forward(cache, fr.tokens.subarray(0, F), this.frontierFeatures, this.positions.subarray(0, F), fr.draftMask);
      this.passes++;
      cache.append(out.newKeys, out.newValues, F);
      if (!keep(out.entropy)) break;
      this.expand(out.topkIds, out.topkLogProbs, out.entropy, 0, F);
      hidden = out.hidden;
    }
    return this.stop(committed, plan.totalTokens);
  }

  /**
   * Reads history rows cache.length..end-1 = (f_i, token_{i+1}) into the head's cache (committed:
   * they are real) in one pass whose outputs beyond K/V are its last row's alone (lastRow).
   */
  private async catchUp(history: History, end: number): Promise<DraftOutput> {
    const { cache, session } = this, d = session.head.dim, c = cache.length, rows = end - c;
    for (let i = 0; i < rows; i++) this.positions[i] = c + i;
    const out = await session.forward(cache, history.tokens.subarray(c + 1, end + 1), history.features.subarray(c * d, end * d), this.positions.subarray(0, rows), undefined, { lastRow: true });
    this.passes++;
    cache.append(out.newKeys, out.newValues, rows);
    return out;
  }

  /**
   * Asked after each prefill (`prefilled`): whether to read the prompt now. Absent (a single
   * generation): never, so the first round reads the whole prompt in its one catch-up pass; the
   * serving engine sets it (Engine's readsPrompt decides).
   */
  readsPrompt?: () => boolean;

  /**
   * After the prompt's prefill, where `readsPrompt` says so: reads its rows 0..P-2
   * (P = history.length); returns the rows read so far (cache.length). The last row
   * (f_{P-1}, first token) stays for the first draft: it is the row that draft expands from, so
   * that draft's first pass runs whatever was read before, and reading it here would mean
   * holding its outputs until the request drafts (wasted if its first rounds are plain, which
   * move the row to expand from on).
   */
  async prefilled(history: History): Promise<number> {
    if (history.length - 1 > this.cache.length && this.readsPrompt?.()) await this.catchUp(history, history.length - 1);
    return this.cache.length;
  }

  /** Drops the round's staged rows and returns the tree drafted so far. */
  private stop(committed: number, totalTokens = 0): VerifyTree {
    this.cache.truncate(committed);
    return this.builder.finish(Math.min(totalTokens, this.builder.totalTokens));
  }

  /** The full target verifies: the head is not part of it. */
  verify(target: TargetPass, cache: KVCache, tree: VerifyTree, positions: Int32Array, fetch?: VerifyFetch): Promise<Verified> {
    return verifyWithTarget(target, cache, tree, positions, fetch);
  }
}
