/**
 * Acceptance: which branch of a verified tree the target agrees with, and its bonus token.
 *
 * Both rules walk from the root: at node u, draw the target's next token y at u; if a child
 * of u carries y, descend into it and repeat; otherwise stop and emit y as the bonus. Greedy
 * decoding draws y = argmax; sampling draws y from the target distribution at u.
 *
 * Why sampling stays lossless: every emitted token (accepted or bonus) is exactly one draw
 * from the target distribution given the tokens before it, which is how plain autoregressive
 * sampling produces it. The draft only decides how many of those draws one target pass can
 * serve. So with the same seeded RNG, consumed once per emitted token in the same way,
 * speculative sampling reproduces autoregressive sampling token for token, up to float32
 * rounding between pass shapes at near-ties (src/generate/near-tie.ts).
 */
import type { VerifyTree } from './verify-tree.ts';

/** The result of one acceptance walk, in buffers reused across rounds. */
export class Acceptance {
  /** Tree nodes on the accepted branch, root first: ascending, so usable as K/V rows to keep. */
  readonly path: Int32Array; // [maxDepth + 1], length valid
  /** Emitted tokens: the accepted drafted tokens (path[1..]) then the bonus. */
  readonly tokens: Int32Array; // [maxDepth + 1], length valid
  /** Nodes on the path = tokens emitted this round (accepted drafts + 1 bonus). */
  length = 0;
  /** The target's own token after the last accepted node. */
  bonus = -1;

  /** @param maxDepth deepest tree this will be used with. */
  constructor(readonly maxDepth: number) {
    this.path = new Int32Array(maxDepth + 1);
    this.tokens = new Int32Array(maxDepth + 1);
  }
}

/**
 * Greedy acceptance. `argmax[i]` is the target's argmax token after node i. [n]
 * Accepts the longest branch whose every token is the argmax at its parent.
 */
export function acceptGreedy(tree: VerifyTree, argmax: ArrayLike<number>, out: Acceptance): Acceptance {
  return walk(tree, argmax, out);
}

/**
 * Lossless sampling acceptance. `sample(node)` draws one token from the target distribution
 * after `node` (temperature, top-k/top-p and the seeded RNG are the caller's); it is called
 * exactly once per emitted token, for path[0], path[1], ... in order.
 */
export function acceptSampled(tree: VerifyTree, sample: (node: number) => number, out: Acceptance): Acceptance {
  return walk(tree, sample, out);
}

function walk(tree: VerifyTree, next: ArrayLike<number> | ((node: number) => number), out: Acceptance): Acceptance {
  if (tree.depth > out.maxDepth) throw new RangeError(`accept: tree depth ${tree.depth} exceeds Acceptance maxDepth ${out.maxDepth}`);
  const { tokens, firstChild, nextSibling } = tree;
  let node = 0, length = 0;
  for (;;) {
    out.path[length] = node;
    const y = typeof next === 'function' ? next(node) : next[node];
    out.tokens[length++] = y;
    let child = firstChild[node];
    while (child >= 0 && tokens[child] !== y) child = nextSibling[child];
    if (child < 0) {
      out.bonus = y;
      break;
    }
    node = child;
  }
  out.length = length;
  return out;
}
