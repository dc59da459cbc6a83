/**
 * Self-speculative drafting (LayerSkip, DEL): the target's own first E layers, then its final
 * norm and LM head, draft the tree; verification runs only layers E..L-1 on the drafted rows.
 *
 * The shared cache. Every draft pass stages its rows' layer 0..E-1 K/V in the target's own
 * cache after the committed prefix (root first, then each frontier), so deeper draft passes
 * see their ancestors there, exactly as the full model would. After the tree is chosen, nodes
 * that were scored but never run (the last frontier and reranked leaves) get their early
 * layers in one more exit pass (the "completion"), and the rows are laid out in tree order
 * (row P + i = node i). Verification then feeds the nodes' layer-E residuals to the rest of
 * the model, which stages layers E..L-1 of the same rows: the loop's `cache.keep(path)`
 * commits whole rows, all layers, and the prefix is exactly what the full target writes.
 *
 * DEL's shadow tokens: when the plan asks, `settle` runs every accepted row's residual after
 * each layer through the final norm and LM head (one small pass) and reports, per exit layer,
 * on how many rows that exit would have proposed the target's token.
 *
 * Sessions per exit layer are built on first use (exit-sessions.ts says why): a policy that
 * moves between a few exits pays for those only.
 */
import { TreeBuilder, type Acceptance, type TreeShape, type VerifyTree } from '../../trees/index.ts';
import type { ModelConfig } from '../model/config.ts';
import type { Weights } from '../model/weights.ts';
import type { LengthPolicy, RoundNotes, RoundPlan } from '../policies/policy.ts';
import { ExitSession, RestSession, ShadowSession, type ExitOutput, type StagedRows } from '../runtime/exit-sessions.ts';
import type { KVCache } from '../runtime/kv-cache.ts';
import type { StepSessionOptions } from '../runtime/target.ts';
import type { TargetSession } from '../runtime/target.ts';
import { UsageError } from '../errors.ts';
import { verifyWithTarget, type Drafter, type Verified, type VerifyFetch } from './drafter.ts';
import type { History } from './history.ts';

export interface SelfDrafterOptions {
  /** Exit layer when the round's plan names none (static self-drafting). Default: L / 2. */
  exitLayer?: number;
  /** ORT options of the exit, rest and shadow sessions. */
  session?: StepSessionOptions;
}

interface SplitSessions {
  exit: ExitSession;
  rest: RestSession;
}

/** Throws a UsageError naming `flag` unless 1 <= exitLayer <= L-1. */
export function checkExitLayer(cfg: ModelConfig, exitLayer: number, flag = '--exit-layer'): void {
  if (!(Number.isInteger(exitLayer) && exitLayer >= 1 && exitLayer <= cfg.nLayers - 1))
    throw new UsageError(flag, cfg.nLayers < 2 ? `self-drafting needs a target with at least 2 layers, this one has ${cfg.nLayers}` : `must be an integer in 1..${cfg.nLayers - 1} (the target has ${cfg.nLayers} layers), got ${exitLayer}`);
}

export class SelfDrafter implements Drafter {
  readonly cfg: ModelConfig;
  readonly defaultExit: number;
  passes = 0;
  /** Sessions built so far and the ms spent building them (graph + ORT session), for reports. */
  readonly built = { sessions: 0, ms: 0 };
  private builder: TreeBuilder;
  private splits = new Map<number, Promise<SplitSessions>>();
  private shadowSession?: Promise<ShadowSession>;

  // Per staged draft row (root, frontiers, completion): residual after layer E-1 and after every layer < E.
  private rowHidden: Float32Array; // [maxRows, d]
  private rowLayers: Float32Array; // [maxRows, L-1, d]
  private rowTokens: Int32Array; // [maxRows] token and position of each staged row (for passes run path by path)
  private rowPositions: Int32Array; // [maxRows]
  private treeHidden: Float32Array; // [treeCap, d] tree order, the rest session's input
  private treeLayers: Float32Array; // [treeCap, L-1, d] tree order
  private nodeRow: Int32Array; // [treeCap] staged row of each tree node
  private mask: Uint8Array; // [max(k, treeCap), maxRows]
  private positions: Int32Array; // [max(k, treeCap)]
  private tokens: Int32Array; // [treeCap]
  private shadowRows: Float32Array; // [(maxDepth+1) * (L-1), d]
  private exitMatches: Int32Array; // [L + 1]

  // This round.
  private drafted: VerifyTree | null = null;
  private exitLayer = 0;
  private wantShadows = false;
  private restLayers: Float32Array | null = null; // [n, L-E, d] from verification
  private builtBefore = 0; // built.ms when this round's draft began

  constructor(readonly target: TargetSession, readonly weights: Weights, readonly shape: TreeShape, readonly opts: SelfDrafterOptions = {}) {
    const c = (this.cfg = target.cfg), L = c.nLayers, d = c.dim;
    this.defaultExit = opts.exitLayer ?? Math.max(1, Math.floor(L / 2));
    checkExitLayer(c, this.defaultExit);
    this.builder = new TreeBuilder(shape);
    const treeCap = this.builder.nodeRows.length, k = shape.topK;
    const maxRows = 1 + k * shape.maxDepth + shape.totalTokens;
    this.rowHidden = new Float32Array(maxRows * d);
    this.rowLayers = new Float32Array(maxRows * (L - 1) * d);
    this.rowTokens = new Int32Array(maxRows);
    this.rowPositions = new Int32Array(maxRows);
    this.treeHidden = new Float32Array(treeCap * d);
    this.treeLayers = new Float32Array(treeCap * (L - 1) * d);
    this.nodeRow = new Int32Array(treeCap);
    this.mask = new Uint8Array(Math.max(k, treeCap) * maxRows);
    this.positions = new Int32Array(Math.max(k, treeCap));
    this.tokens = new Int32Array(treeCap);
    this.shadowRows = new Float32Array((shape.maxDepth + 1) * (L - 1) * d);
    this.exitMatches = new Int32Array(L + 1);
  }

  /** The exit and rest sessions of exit layer E, built on first use. */
  sessions(E: number): Promise<SplitSessions> {
    checkExitLayer(this.cfg, E);
    let s = this.splits.get(E);
    if (!s) {
      const t0 = performance.now(), o = this.opts.session ?? {};
      s = Promise.all([ExitSession.create(this.cfg, this.weights, E, this.shape.topK, o), RestSession.create(this.cfg, this.weights, E, o)]).then(async ([exit, rest]) => {
        // Trees wider than a chain: on a quantized target both halves verify them in graphs of their own (TreePasses), opened with the rest of the build.
        if (this.shape.topK > 1) await Promise.all([exit.prepareTrees(), rest.prepareTrees()]);
        this.built.sessions += 2;
        this.built.ms += performance.now() - t0;
        return { exit, rest };
      });
      this.splits.set(E, s);
    }
    return s;
  }

  private shadow(): Promise<ShadowSession> {
    return (this.shadowSession ??= ShadowSession.create(this.cfg, this.weights, this.opts.session));
  }

  reset(): void {
    this.drafted = null;
  }

  /** Stages the K/V of the `n` rows of an exit pass (`tokens` at `positions`) at staged rows `at`.. and keeps their residuals. */
  private keepRows(cache: KVCache, out: ExitOutput, tokens: Int32Array, positions: Int32Array, at: number, n: number, E: number): void {
    const d = this.cfg.dim, w = (this.cfg.nLayers - 1) * d;
    cache.stageLayers(0, out.newKeys, out.newValues, n, at);
    this.rowTokens.set(tokens.subarray(0, n), at);
    this.rowPositions.set(positions.subarray(0, n), at);
    this.rowHidden.set(out.hidden.subarray(0, n * d), at * d);
    for (let i = 0; i < n; i++) this.rowLayers.set(out.layerHidden.subarray(i * E * d, (i + 1) * E * d), (at + i) * w);
  }

  /** The first `n` staged rows, as an exit pass reads them. */
  private staged(n: number): StagedRows {
    return { tokens: this.rowTokens.subarray(0, n), positions: this.rowPositions.subarray(0, n) };
  }

  async draft(_history: History, root: number, plan: RoundPlan, policy: LengthPolicy, cache: KVCache): Promise<VerifyTree> {
    const E = plan.exitLayer ?? this.defaultExit;
    this.builtBefore = this.built.ms;
    const { exit } = await this.sessions(E);
    const { builder, mask, positions } = this;
    const P = cache.length, room = cache.capacity - P;

    // The root: staged row 0.
    positions[0] = P;
    this.tokens[0] = root;
    const first = await exit.forward(cache, this.tokens.subarray(0, 1), positions.subarray(0, 1));
    this.passes++;
    this.keepRows(cache, first, this.tokens, positions, 0, 1, E);
    let staged = 1;
    builder.reset(root);
    // As the EAGLE drafter: the policy may drop a level once its pass scored it (AdaEDL). The
    // pass's rows stay staged: they are tree nodes already, only their children are dropped.
    const keep = (h: Float32Array) => policy.keepLevel?.(builder.frontier, h) ?? true;
    if (keep(first.entropy)) builder.expand(first.topkIds, first.topkLogProbs, first.entropy);
    else plan = { ...plan, depth: 0 };

    // Frontier by frontier: builder row j is staged row 1 + j; every node also sees the root.
    for (;;) {
      const fr = builder.frontier, F = fr.count;
      if (!(fr.depth < plan.depth && builder.canExpand && staged + F + plan.totalTokens <= room && (policy.continueDrafting?.(fr) ?? true))) break;
      const bw = fr.rowOffset + F, W = staged + F;
      for (let i = 0; i < F; i++) {
        mask[i * W] = 1;
        mask.set(fr.draftMask.subarray(i * bw, (i + 1) * bw), i * W + 1);
        positions[i] = P + fr.depth;
      }
      const out = await exit.forward(cache, fr.tokens.subarray(0, F), positions.subarray(0, F), mask.subarray(0, F * W), this.staged(staged));
      this.passes++;
      this.keepRows(cache, out, fr.tokens, positions, staged, F, E);
      staged += F;
      if (!keep(out.entropy)) break;
      builder.expand(out.topkIds, out.topkLogProbs, out.entropy);
    }
    const tree = builder.finish(Math.min(plan.totalTokens, builder.totalTokens));
    staged = await this.complete(tree, exit, cache, staged, E);
    this.layOut(tree, cache, E);
    this.drafted = tree;
    this.exitLayer = E;
    this.wantShadows = plan.shadows ?? false;
    return tree;
  }

  /** Runs the early layers of the tree nodes no draft pass ran (one exit pass); returns the staged row count. */
  private async complete(tree: VerifyTree, exit: ExitSession, cache: KVCache, staged: number, E: number): Promise<number> {
    const { nodeRow, mask, positions, tokens } = this, rows = this.builder.nodeRows, P = cache.length;
    let U = 0;
    nodeRow[0] = 0;
    for (let i = 1; i < tree.n; i++) {
      const r = rows[i];
      nodeRow[i] = r >= 0 && 1 + r < staged ? 1 + r : -1;
      if (nodeRow[i] < 0) U++;
    }
    if (U === 0) return staged;
    const W = staged + U;
    mask.fill(0, 0, U * W);
    let q = 0;
    for (let i = 1; i < tree.n; i++) {
      if (nodeRow[i] >= 0) continue;
      // Its ancestors were all run: a node is scored only by running its parent.
      for (let a = tree.parents[i]; a >= 0; a = tree.parents[a]) mask[q * W + nodeRow[a]] = 1;
      mask[q * W + staged + q] = 1;
      positions[q] = P + tree.depths[i];
      tokens[q] = tree.tokens[i];
      nodeRow[i] = staged + q;
      q++;
    }
    const out = await exit.forward(cache, tokens.subarray(0, U), positions.subarray(0, U), mask.subarray(0, U * W), this.staged(staged));
    this.passes++;
    this.keepRows(cache, out, tokens, positions, staged, U, E);
    return staged + U;
  }

  /** Moves each node's staged early-layer K/V row to row P + i and its residuals to tree order. */
  private layOut(tree: VerifyTree, cache: KVCache, E: number): void {
    const n = tree.n, d = this.cfg.dim, w = (this.cfg.nLayers - 1) * d;
    cache.permuteStaged(this.nodeRow.subarray(0, n), 0, E);
    for (let i = 0; i < n; i++) {
      const r = this.nodeRow[i];
      this.treeHidden.set(this.rowHidden.subarray(r * d, (r + 1) * d), i * d);
      this.treeLayers.set(this.rowLayers.subarray(r * w, r * w + E * d), i * w);
    }
  }

  async verify(target: TargetSession, cache: KVCache, tree: VerifyTree, positions: Int32Array, fetch?: VerifyFetch): Promise<Verified> {
    if (tree !== this.drafted) {
      // Not drafted this round (a plain step): the full target verifies.
      this.exitLayer = 0;
      return verifyWithTarget(target, cache, tree, positions, fetch);
    }
    this.drafted = null;
    const E = this.exitLayer, { rest } = await this.sessions(E);
    const out = await rest.forward(cache, this.treeHidden, positions.subarray(0, tree.n), tree.mask);
    cache.stageLayers(E, out.newKeys, out.newValues, tree.n, 0);
    this.restLayers = out.layerHidden;
    return out;
  }

  async settle(acc: Acceptance): Promise<RoundNotes | undefined> {
    const E = this.exitLayer;
    if (E === 0) return undefined;
    const setupMs = this.built.ms - this.builtBefore;
    if (!this.wantShadows || !this.restLayers) return setupMs > 0 ? { exitLayer: E, setupMs } : { exitLayer: E };
    const L = this.cfg.nLayers, d = this.cfg.dim, w = (L - 1) * d, rest = this.restLayers, m = this.exitMatches;
    // Rows j < acc.length (the accepted path, the bonus row last) x exits l = 1..L-1: the residual after layer l-1.
    let at = 0;
    for (let j = 0; j < acc.length; j++) {
      const node = acc.path[j];
      for (let l = 1; l < L; l++, at += d) {
        const src = l <= E ? this.treeLayers.subarray(node * w + (l - 1) * d, node * w + l * d) : rest.subarray((node * (L - E) + (l - 1 - E)) * d, (node * (L - E) + (l - E)) * d);
        this.shadowRows.set(src, at);
      }
    }
    const ids = await (await this.shadow()).argmax(this.shadowRows, acc.length * (L - 1));
    m.fill(0);
    for (let j = 0; j < acc.length; j++) for (let l = 1; l < L; l++) if (ids[j * (L - 1) + l - 1] === acc.tokens[j]) m[l]++;
    return { exitLayer: E, exitMatches: m, shadowRows: acc.length, ...(setupMs > 0 ? { setupMs } : {}) };
  }

  async dispose(): Promise<void> {
    for (const s of this.splits.values()) {
      const { exit, rest } = await s;
      await exit.dispose();
      await rest.dispose();
    }
    this.splits.clear();
    if (this.shadowSession) await (await this.shadowSession).dispose();
  }
}
