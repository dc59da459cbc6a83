/** A draft tree's bounds, and the one range check the library, the CLI and the policies share. */
import { UsageError } from '../src/errors.ts';

/** The bounds of the trees a drafter grows each round. */
export interface TreeShape {
  /** Children drafted per expanded node, and nodes expanded per depth (EAGLE's top_k). */
  topK: number;
  /** Deepest draft depth = draft passes per round, root pass included (EAGLE's depth + 1). */
  maxDepth: number;
  /** Most drafted tokens kept for verification, root not counted (EAGLE's total_tokens). */
  totalTokens: number;
}

/** Largest tree shape accepted, one limit for the library, every CLI flag and every policy option. */
export const TREE_LIMITS: Readonly<TreeShape> = { topK: 64, maxDepth: 32, totalTokens: 512 };

/**
 * Throws a UsageError for a tree shape out of range; with `reachable`, also for one whose token
 * budget cannot reach its depth. The library accepts such a tree (rounds stop at the budget, and
 * policies shrink budgets per round); the CLI asks for `reachable`, since a user who typed
 * `--depth 5 --total-tokens 2` would silently get depth 2. `names` are the option names errors use.
 */
export function checkTree(t: TreeShape, names: Record<keyof TreeShape, string> = { topK: 'tree.topK', maxDepth: 'tree.maxDepth', totalTokens: 'tree.totalTokens' }, reachable = false): void {
  for (const k of ['topK', 'maxDepth', 'totalTokens'] as const) {
    if (!Number.isInteger(t[k]) || t[k] < 1 || t[k] > TREE_LIMITS[k]) throw new UsageError(names[k], `must be an integer in [1, ${TREE_LIMITS[k]}], got ${t[k]}`);
  }
  if (reachable && t.totalTokens < t.maxDepth) throw new UsageError(names.totalTokens, `${t.totalTokens} tokens cannot reach depth ${t.maxDepth} (${names.maxDepth}): give at least as many tokens as levels`);
}
