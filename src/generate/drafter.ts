/**
 * What the decoding loop holds: "a drafter". The EAGLE head (eagle-drafter.ts), the target's
 * own early layers (self-drafter.ts) and no drafter at all (plain decoding) implement it, and
 * the loop never asks which one it has.
 *
 * A round, as the loop drives it:
 *   draft    grow a tree from the root (skipped when the plan's depth is 0)
 *   verify   one pass giving the target's draw (logits, or argmax when greedy) and features
 *            for every tree node, and the nodes' K/V rows: either as pass outputs (`rows`),
 *            or staged after the cache's committed prefix (row i = node i) when the drafter's
 *            passes share the target's cache; `commitPath` then writes the accepted ones
 *   settle   after the commit: what the round taught the drafter, passed on to the policy
 */
import type { VerifyTree, Acceptance, TreeShape } from '../../trees/index.ts';
import type { KVCache } from '../runtime/kv-cache.ts';
import type { TargetPass } from '../runtime/target.ts';
import type { LengthPolicy, RoundNotes, RoundPlan } from '../policies/policy.ts';
import type { History } from './history.ts';

/** The verification pass's output for the tree's nodes. */
export interface Verified {
  /** [n, V]; empty when the pass was asked for argmax only (then `argmax` is set). */
  logits: Float32Array;
  /** [n]: each node's most likely next token, when the pass computed it. */
  argmax?: Int32Array;
  /** Final-norm hidden states [n, d]. */
  features: Float32Array;
  /** The nodes' K/V rows, per layer [n, nKv, hd], when they were not staged in the cache. */
  rows?: { newKeys: Float32Array[]; newValues: Float32Array[] };
}

/** What a verify pass must return: greedy decoding needs only argmax, sampling the logits. */
export interface VerifyFetch {
  logits: boolean;
}

/** Commits the accepted `path` (node indices, root first) of a verified tree to the cache. */
export function commitPath(cache: KVCache, v: Verified, path: ArrayLike<number>): void {
  if (v.rows) cache.commitRows(v.rows.newKeys, v.rows.newValues, path);
  else cache.keep(path);
}

export interface Drafter {
  /** Bounds of the trees it drafts (maxDepth 0: never drafts). */
  readonly shape: TreeShape;
  /** Draft passes run (cumulative). */
  readonly passes: number;
  /** Before a generation: forget per-sequence state. */
  reset(): void;
  /**
   * Drafts a tree rooted at `root` (position P = history.length = cache.length) of at most
   * plan.depth levels, asking `policy` after each level whether to go deeper. May stage rows
   * after the cache's committed prefix; never commits.
   */
  draft(history: History, root: number, plan: RoundPlan, policy: LengthPolicy, cache: KVCache): Promise<VerifyTree>;
  /**
   * The target's verification of `tree` (its own last draft, or a root-only tree) at
   * `positions` [n]: returns every node's K/V rows (all layers), or stages them after the
   * committed prefix. `fetch.logits` false: argmax suffices (a drafter may return logits anyway).
   */
  verify(target: TargetPass, cache: KVCache, tree: VerifyTree, positions: Int32Array, fetch?: VerifyFetch): Promise<Verified>;
  /** After the accepted rows are committed: notes for the policy's `observe`. */
  settle?(acc: Acceptance, tree: VerifyTree): Promise<RoundNotes | undefined>;
  /**
   * After the prompt's prefill is committed, before the first round: the drafter may read the
   * prompt now. Returns how many history rows its head has read (the first draft catches up
   * from there; the loop tells the policy, LengthPolicy.prefilled).
   */
  prefilled?(history: History): Promise<number>;
}

/** Verification by the full target in one pass: what every drafter that is not part of the target does. */
export async function verifyWithTarget(target: TargetPass, cache: KVCache, tree: VerifyTree, positions: Int32Array, fetch?: VerifyFetch): Promise<Verified> {
  const out = await target.forward(cache, tree.tokens.subarray(0, tree.n), positions.subarray(0, tree.n), tree.mask, fetch);
  return { ...out, rows: out }; // nothing staged: the accepted rows are copied from the outputs
}

/** Plain decoding: drafts nothing, verifies the root with the full target. */
export class NoDrafter implements Drafter {
  readonly shape: TreeShape = { topK: 1, maxDepth: 0, totalTokens: 0 };
  readonly passes = 0;
  reset(): void {}
  draft(): Promise<VerifyTree> {
    throw new Error('NoDrafter drafts nothing (its maxDepth is 0)');
  }
  verify(target: TargetPass, cache: KVCache, tree: VerifyTree, positions: Int32Array, fetch?: VerifyFetch): Promise<Verified> {
    return verifyWithTarget(target, cache, tree, positions, fetch);
  }
}
