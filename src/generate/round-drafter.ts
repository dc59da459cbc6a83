/**
 * The EAGLE head drafting a greedy chain and the target verifying it in ONE ORT call per round
 * (runtime/round.ts). The same head, rows and acceptance as EagleDrafter with top-k 1; what
 * changes is where the work runs: `draft` only lays out the chain's shape (depth from the
 * plan), and `verify` runs the fused call that fills in the drafted tokens and returns the
 * target's verdict on them. A plain step (root only) runs the plain target; the head catches up
 * on those rows in its next round.
 *
 * Per-level stopping (policies' continueDrafting / keepLevel) does not apply: a graph drafts
 * its fixed depth, and the plan's depth (at most that) says how many drafts are verified. Given
 * round graphs of several depths, a round runs the shallowest one that reaches the plan's depth,
 * so a policy that plans shallow rounds (LDLP, goodput) does not pay for the deepest graph's
 * head steps. When the target pads its passes to even rows (a quantized target with large
 * blocks: RoundSession.padsRows), a plan of an even number of rows verifies one more draft if
 * the graph drafted it: the padding row costs the same either way.
 */
import { VerifyTree, type TreeShape } from '../../trees/index.ts';
import { KVCache } from '../runtime/kv-cache.ts';
import type { RoundSession } from '../runtime/round.ts';
import type { TargetPass } from '../runtime/target.ts';
import type { LengthPolicy, RoundPlan } from '../policies/policy.ts';
import type { History } from './history.ts';
import { verifyWithTarget, type Drafter, type Verified, type VerifyFetch } from './drafter.ts';

export class RoundDrafter implements Drafter {
  readonly shape: TreeShape;
  /** The round graphs, shallowest first. */
  readonly sessions: RoundSession[];
  /** The deepest round graph. */
  readonly session: RoundSession;
  /** The head's cache: committed catch-up rows only. */
  readonly cache: KVCache;
  /** Head steps computed in-graph (cumulative): `depth` per fused round, counted when `draft` lays it out. */
  passes = 0;
  private tree: VerifyTree;
  private history?: History;
  private running?: RoundSession; // the graph of the round `draft` laid out
  private positions: Int32Array; // [context] catch-up positions

  /**
   * @param sessions one round graph, or several of different depths over the same pair.
   * @param capacity the target's context length.
   * @param cache the head's cache (default: its own; serving passes a request's slot, shared with its batched EagleDrafter).
   */
  constructor(sessions: RoundSession | RoundSession[], capacity: number, cache?: KVCache) {
    this.sessions = (Array.isArray(sessions) ? [...sessions] : [sessions]).sort((a, b) => a.depth - b.depth);
    if (this.sessions.length === 0) throw new RangeError('a RoundDrafter needs at least one round session');
    if (new Set(this.sessions.map((x) => x.depth)).size !== this.sessions.length) throw new RangeError('round sessions of one RoundDrafter need distinct depths');
    const session = (this.session = this.sessions[this.sessions.length - 1]);
    const D = session.depth, h = session.head;
    this.shape = { topK: 1, maxDepth: D, totalTokens: D };
    this.cache = cache ?? new KVCache(1, h.nKvHeads, h.headDim, capacity);
    this.tree = new VerifyTree(D + 1, D);
    this.positions = new Int32Array(capacity);
  }

  reset(): void {
    this.cache.truncate(0);
  }

  /** Lays out a chain of the planned depth rooted at `root`; its tokens arrive with `verify`. */
  async draft(history: History, root: number, plan: RoundPlan, _policy: LengthPolicy): Promise<VerifyTree> {
    // A graph runs all its head steps, the first on the last catch-up row (P - 1), the last at
    // P + depth - 2: past the context's last row the head's rotary table has no entry, so near the
    // end only a graph that fits runs: the shallowest reaching the plan, else the deepest that fits
    // (fewer drafts), else a plain step.
    const P = history.length, fits = (x: RoundSession) => P + x.depth - 2 < history.capacity;
    let want = Math.min(plan.depth, plan.totalTokens, this.session.depth);
    let s = this.sessions.find((x) => x.depth >= want && fits(x));
    if (!s) {
      s = this.sessions[0];
      for (const x of this.sessions) if (fits(x)) s = x;
      want = fits(s) ? Math.min(want, s.depth) : 0;
    }
    this.running = s;
    // One more draft where the padding row would run anyway (and the context has a row for it).
    const free = want > 0 && s.padsRows && want % 2 === 0 && want < s.depth && history.length + want + 2 <= history.capacity;
    const t = this.tree, n = 1 + want + (free ? 1 : 0);
    history.tokens[history.length] = root;
    this.history = history;
    t.tokens[0] = root;
    t.parents[0] = -1;
    for (let i = 1; i < n; i++) {
      t.parents[i] = i - 1;
      t.tokens[i] = 0; // drafted in-graph by verify
    }
    if (n > 1) this.passes += s.depth; // the head steps verify's call computes (all of them, whatever n; none for a plain step)
    return t.build(n);
  }

  async verify(target: TargetPass, cache: KVCache, tree: VerifyTree, positions: Int32Array, fetch?: VerifyFetch): Promise<Verified> {
    const history = this.history, session = this.running;
    if (tree !== this.tree || tree.n === 1 || !history || !session) return verifyWithTarget(target, cache, tree, positions, fetch);
    this.history = undefined;
    this.running = undefined;
    // Catch-up rows c..P-1 = (f_i, token_{i+1}): committed target rows the head has not read.
    const d = session.head.dim, P = history.length, c = this.cache.length, rows = P - c;
    for (let i = 0; i < rows; i++) this.positions[i] = c + i;
    const catchUp = { tokens: history.tokens.subarray(c + 1, P + 1), features: history.features.subarray(c * d, P * d), positions: this.positions.subarray(0, rows) };
    const out = await session.run(cache, tree.tokens[0], positions.subarray(0, tree.n), tree.mask, this.cache, catchUp, fetch);
    this.cache.append(out.headKeys, out.headValues, rows);
    tree.tokens.set(out.drafts.subarray(0, tree.n - 1), 1);
    return { ...out, rows: out };
  }
}
