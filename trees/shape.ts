/** A draft tree's bounds, and the one range rule the library, the CLI and the policies share (src's checkTree throws it). */

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

/** The option names a tree shape's problems are told under (the library's; the CLI passes its flags). */
export type TreeShapeNames = Record<keyof TreeShape, string>;

/**
 * The first way `t` is out of range, as the option at fault and the problem, or undefined; with
 * `reachable`, also a token budget that cannot reach its depth. The library accepts such a tree
 * (rounds stop at the budget, and policies shrink budgets per round); the CLI asks for
 * `reachable`, since a user who typed `--depth 5 --total-tokens 2` would silently get depth 2.
 * A value, not a throw, so that trees/ names no error class of the library's.
 */
export function treeShapeProblem(t: TreeShape, names: TreeShapeNames, reachable = false): { name: string; problem: string } | undefined {
  for (const k of ['topK', 'maxDepth', 'totalTokens'] as const) {
    if (!Number.isInteger(t[k]) || t[k] < 1 || t[k] > TREE_LIMITS[k]) return { name: names[k], problem: `must be an integer in [1, ${TREE_LIMITS[k]}], got ${t[k]}` };
  }
  if (reachable && t.totalTokens < t.maxDepth) return { name: names.totalTokens, problem: `${t.totalTokens} tokens cannot reach depth ${t.maxDepth} (${names.maxDepth}): give at least as many tokens as levels` };
  return undefined;
}
