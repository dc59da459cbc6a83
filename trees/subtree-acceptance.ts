/**
 * Greedy acceptance of every smaller tree shape, from one fully kept draft tree.
 *
 * With a fixed top-k, the EAGLE-2 expansion of the first D levels does not depend on how deep
 * the round goes on, and `TreeBuilder.finish(N)` keeps the N best-valued candidates of the
 * levels drafted (ties to the earlier-scored one). So a tree that keeps every candidate of
 * maxDepth levels contains the tree of every shape (D <= maxDepth, N <= its candidates): the
 * nodes of depth <= D ranked by value. A node's value never exceeds its parent's and the parent
 * is scored first, so each such tree is closed under ancestors, and the greedy path's prefix it
 * holds is what that shape's round would accept.
 */
import type { VerifyTree } from './verify-tree.ts';

/**
 * Adds, for every depth D in [1, maxDepth] and tree size N in [1, maxTokens], the drafted
 * tokens a round of shape (D, N) accepts to `out[D * (maxTokens + 1) + N]`.
 * @param tree a fully kept tree: node i is candidate i, `values[i]` its value (root = node 0).
 * @param next the target's greedy tokens after the root: next[0] is the root's child to match.
 * @returns the path the full tree accepts (its length = accepted drafted tokens).
 */
export function addSubtreeAcceptance(tree: VerifyTree, values: ArrayLike<number>, next: ArrayLike<number>, maxDepth: number, maxTokens: number, out: Float64Array): number[] {
  const path: number[] = [];
  for (let node = 0; path.length < next.length; ) {
    let c = tree.firstChild[node];
    while (c >= 0 && tree.tokens[c] !== next[path.length]) c = tree.nextSibling[c];
    if (c < 0) break;
    path.push(c);
    node = c;
  }
  const ranks: number[] = [];
  for (let D = 1; D <= maxDepth; D++) {
    const m = Math.min(D, path.length);
    ranks.length = 0;
    for (let t = 0; t < m; t++) {
      const p = path[t], v = values[p];
      let r = 0;
      for (let c = 1; c < tree.n; c++) if (tree.depths[c] <= D && (values[c] > v || (values[c] === v && c < p))) r++;
      ranks.push(r);
    }
    // ranks grow along the path, so shape (D, N) accepts the path nodes ranked below N.
    for (let N = 1, a = 0; N <= maxTokens; N++) {
      while (a < m && ranks[a] < N) a++;
      out[D * (maxTokens + 1) + N] += a;
    }
  }
  return path;
}
