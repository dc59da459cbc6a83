import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Acceptance, TreeBuilder, VerifyTree, acceptGreedy, acceptSampled, type Frontier } from '../trees/index.ts';
import { UsageError } from '../src/errors.ts';
import { checkTree as checkShape } from '../src/option-schema.ts';

// ---------------------------------------------------------------------------------------------
// Generators and oracles

/** One round's inputs. Step s reads ids/lps[s k^2, s k^2 + F k): F rows of k top-k entries. */
interface Round {
  topK: number;
  maxDepth: number;
  totalTokens: number;
  root: number;
  expands: number;
  ids: number[]; // [maxDepth * k * k]
  lps: number[]; // [maxDepth * k * k]
  keep: number; // finish(keep)
}

// Coarse log-probs make value ties common (zeros give a child its parent's value); -Infinity is
// a zero-probability token; 1e-7 is rounding noise above 0, which must count as 0.
const arbLogProb = fc.oneof(
  { weight: 12, arbitrary: fc.integer({ min: 0, max: 12 }).map((x) => -x / 4) },
  { weight: 1, arbitrary: fc.constant(-Infinity) },
  { weight: 1, arbitrary: fc.constant(1e-7) },
);

const arbOptions = fc.record({
  topK: fc.integer({ min: 1, max: 4 }),
  maxDepth: fc.integer({ min: 1, max: 4 }),
  totalTokens: fc.integer({ min: 1, max: 24 }),
});

/** `unique`: every drafted token id is distinct, so a token names its candidate. */
function arbRoundFor(o: { topK: number; maxDepth: number; totalTokens: number }, unique = false): fc.Arbitrary<Round> {
  const size = o.maxDepth * o.topK * o.topK;
  return fc.record({
    topK: fc.constant(o.topK),
    maxDepth: fc.constant(o.maxDepth),
    totalTokens: fc.constant(o.totalTokens),
    root: fc.integer({ min: 0, max: 9 }),
    expands: fc.integer({ min: 0, max: o.maxDepth }),
    ids: unique
      ? fc.constant(Array.from({ length: size }, (_, i) => 100 + i))
      : fc.array(fc.integer({ min: 0, max: 5 }), { minLength: size, maxLength: size }),
    lps: fc.array(arbLogProb, { minLength: size, maxLength: size }),
    keep: fc.integer({ min: 0, max: o.totalTokens }),
  });
}
const arbRound = (unique = false) => arbOptions.chain((o) => arbRoundFor(o, unique));

function snapFrontier(f: Frontier) {
  return {
    depth: f.depth,
    count: f.count,
    rowOffset: f.rowOffset,
    tokens: Array.from(f.tokens.subarray(0, f.count)),
    values: Array.from(f.values.subarray(0, f.count)),
    parentSlots: Array.from(f.parentSlots.subarray(0, f.count)),
    draftMask: Array.from(f.draftMask),
  };
}

function snapTree(t: VerifyTree) {
  return {
    n: t.n,
    depth: t.depth,
    tokens: Array.from(t.tokens.subarray(0, t.n)),
    parents: Array.from(t.parents.subarray(0, t.n)),
    depths: Array.from(t.depths.subarray(0, t.n)),
    mask: Array.from(t.mask),
    leaves: Array.from(t.leaves.subarray(0, t.nLeaves)),
    paths: Array.from(t.paths),
  };
}

/** Runs a round on `b` the way the runtime loop does; `onExpand` sees the frontier before each expand. */
function drive(b: TreeBuilder, r: Round, onExpand?: (f: Frontier, step: number) => void) {
  b.reset(r.root);
  const frontiers = [];
  for (let s = 0; s < r.expands; s++) {
    const k = r.topK, F = b.frontier.count, off = s * k * k;
    onExpand?.(b.frontier, s);
    b.expand(r.ids.slice(off, off + F * k), r.lps.slice(off, off + F * k));
    frontiers.push(snapFrontier(b.frontier));
  }
  return { frontiers, tree: snapTree(b.finish(r.keep)) };
}

/** EAGLE-2 spelled out with objects and sorts: the oracle the builder must match exactly. */
function oracle(r: Round) {
  interface Cand { id: number; token: number; parent: number; value: number; row: number; slot: number }
  const k = r.topK;
  const cands: Cand[] = [{ id: 0, token: r.root, parent: -1, value: 0, row: -1, slot: 0 }];
  const better = (a: Cand, b: Cand) => (a.value !== b.value ? (a.value > b.value ? -1 : 1) : a.id - b.id);
  const ancestorsOrSelf = (c: Cand) => {
    const out: Cand[] = [];
    for (let x = c; x.id !== 0; x = cands[x.parent]) out.push(x);
    return out;
  };
  const frontiers = [];
  let frontier = [0], rows = 0;
  for (let s = 0; s < r.expands; s++) {
    const children: Cand[] = [];
    frontier.forEach((p, i) => {
      for (let j = 0; j < k; j++) {
        const idx = s * k * k + i * k + j;
        const c = { id: cands.length, token: r.ids[idx], parent: p, value: cands[p].value + Math.min(r.lps[idx], 0), row: -1, slot: i };
        cands.push(c);
        children.push(c);
      }
    });
    const next = [...children].sort(better).slice(0, k);
    const R = rows, width = R + next.length;
    next.forEach((c, i) => (c.row = R + i));
    rows += next.length;
    const draftMask = new Array<number>(next.length * width).fill(0);
    next.forEach((c, i) => ancestorsOrSelf(c).forEach((a) => (draftMask[i * width + a.row] = 1)));
    frontiers.push({
      depth: s + 1,
      count: next.length,
      rowOffset: R,
      tokens: next.map((c) => c.token),
      values: next.map((c) => c.value),
      parentSlots: next.map((c) => c.slot),
      draftMask,
    });
    frontier = next.map((c) => c.id);
  }
  const kept = cands.slice(1).sort(better).slice(0, r.keep).sort((a, b) => a.id - b.id);
  const nodeOf = new Map<number, number>([[0, 0]]);
  kept.forEach((c, i) => nodeOf.set(c.id, i + 1));
  return {
    frontiers,
    tokens: [r.root, ...kept.map((c) => c.token)],
    parents: [-1, ...kept.map((c) => nodeOf.get(c.parent) ?? -2)],
  };
}

/** Ancestor-or-self set of node i, by walking parents. */
function lineage(parents: ArrayLike<number>, i: number): Set<number> {
  const s = new Set<number>();
  for (let x = i; x >= 0; x = parents[x]) s.add(x);
  return s;
}

/** Every derived field of a VerifyTree, checked from its parents by brute force. */
function checkTree(t: VerifyTree) {
  const { n, parents } = t;
  assert.equal(parents[0], -1);
  for (let i = 1; i < n; i++) assert.ok(parents[i] >= 0 && parents[i] < i, `topological: parent of ${i}`);
  for (let i = 0; i < n; i++) {
    const anc = lineage(parents, i);
    assert.equal(t.depths[i], anc.size - 1, `depth of ${i}`);
    for (let j = 0; j < n; j++) assert.equal(t.mask[i * n + j], anc.has(j) ? 1 : 0, `mask[${i}, ${j}]`);
    const kids: number[] = [];
    for (let c = t.firstChild[i]; c >= 0; c = t.nextSibling[c]) kids.push(c);
    assert.deepEqual(kids, Array.from({ length: n }, (_, j) => j).filter((j) => parents[j] === i), `children of ${i}`);
  }
  assert.equal(t.mask.length, n * n);
  assert.equal(t.depth, Math.max(...Array.from(t.depths.subarray(0, n))));
  const leaves = Array.from({ length: n }, (_, j) => j).filter((j) => t.firstChild[j] < 0);
  assert.deepEqual(Array.from(t.leaves.subarray(0, t.nLeaves)), leaves);
  // One path per leaf: root first, each node the parent of the next, the leaf last, -1 after.
  const w = t.pathWidth;
  assert.equal(w, t.depth + 1);
  assert.equal(t.paths.length, leaves.length * w);
  leaves.forEach((leaf, r) => {
    const row = Array.from(t.paths.subarray(r * w, (r + 1) * w));
    const d = t.depths[leaf];
    assert.equal(row[0], 0);
    assert.equal(row[d], leaf);
    for (let x = 1; x <= d; x++) assert.equal(parents[row[x]], row[x - 1]);
    for (let x = d + 1; x < w; x++) assert.equal(row[x], -1);
  });
}

/** A VerifyTree holding the trie of `seqs` under `root`: siblings carry distinct tokens. */
function trie(root: number, seqs: number[][]): VerifyTree {
  const tokens = [root], parents = [-1];
  for (const seq of seqs) {
    let node = 0;
    for (const tok of seq) {
      let c = tokens.findIndex((t, j) => parents[j] === node && t === tok);
      if (c < 0) {
        c = tokens.length;
        tokens.push(tok);
        parents.push(node);
      }
      node = c;
    }
  }
  const t = new VerifyTree(tokens.length, Math.max(0, ...seqs.map((s) => s.length)));
  t.tokens.set(tokens);
  t.parents.set(parents);
  return t.build(tokens.length);
}

const arbTrie = (vocab: number, depth: number) =>
  fc.record({
    root: fc.integer({ min: 0, max: vocab - 1 }),
    seqs: fc.array(fc.array(fc.integer({ min: 0, max: vocab - 1 }), { maxLength: depth }), { maxLength: 6 }),
  }).map(({ root, seqs }) => trie(root, seqs));

/** Tokens along the root-to-node path, root included: the target's context at that node. */
function context(t: VerifyTree, node: number): number[] {
  const out: number[] = [];
  for (let x = node; x >= 0; x = t.parents[x]) out.unshift(t.tokens[x]);
  return out;
}

function hash(seed: number, tokens: number[]): number {
  let h = seed >>> 0;
  for (const tok of tokens) h = Math.imul(h ^ (tok + 1), 0x9e3779b1) >>> 0;
  return (h ^ (h >>> 15)) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Properties: the verification tree

test('VerifyTree: mask is the ancestor-or-self closure, depths, children, leaves and paths agree with parents', () => {
  fc.assert(
    fc.property(fc.array(fc.nat(), { maxLength: 20 }), (picks) => {
      const n = picks.length + 1;
      const t = new VerifyTree(n, n);
      t.parents[0] = -1;
      picks.forEach((x, i) => (t.parents[i + 1] = x % (i + 1)));
      t.build(n);
      checkTree(t);
    }),
  );
});

test('VerifyTree.build rejects parents that are not in topological order', () => {
  fc.assert(
    fc.property(fc.integer({ min: 2, max: 10 }), fc.nat(), (n, x) => {
      const t = new VerifyTree(n, n);
      t.parents[0] = -1;
      for (let i = 1; i < n; i++) t.parents[i] = i - 1;
      const bad = 1 + (x % (n - 1));
      t.parents[bad] = bad + (x % 3); // itself, a later node, or out of range
      assert.throws(() => t.build(n), RangeError);
    }),
  );
});

// ---------------------------------------------------------------------------------------------
// Properties: expansion and reranking

test('TreeBuilder matches a brute-force EAGLE-2 oracle: frontiers, draft masks, reranked tree', () => {
  fc.assert(
    fc.property(arbRound(), (r) => {
      const got = drive(new TreeBuilder(r), r);
      const want = oracle(r);
      assert.deepEqual(got.frontiers, want.frontiers);
      assert.deepEqual(got.tree.tokens, want.tokens);
      assert.deepEqual(got.tree.parents, want.parents);
    }),
    { numRuns: 300 },
  );
});

test('TreeBuilder: reranking keeps a connected topological subtree of the min(totalTokens, candidates) best values', () => {
  fc.assert(
    fc.property(arbRound(true), (r) => {
      // Unique ids: a token names its candidate, so values are recomputed from the inputs alone.
      const value = new Map<number, number>([[r.root, 0]]);
      const order = new Map<number, number>([[r.root, 0]]); // scoring order, the tie-break
      const b = new TreeBuilder(r);
      drive(b, r, (f, s) => {
        const k = r.topK;
        for (let i = 0; i < f.count; i++) {
          for (let j = 0; j < k; j++) {
            const idx = s * k * k + i * k + j;
            value.set(r.ids[idx], value.get(f.tokens[i])! + Math.min(r.lps[idx], 0));
            order.set(r.ids[idx], order.size);
          }
        }
      });
      const t = b.finish(r.keep);
      checkTree(t);
      const candidates = value.size - 1;
      assert.equal(t.n - 1, Math.min(r.keep, candidates));
      const kept = new Set(Array.from(t.tokens.subarray(1, t.n)));
      const rank = (tok: number) => [value.get(tok)!, order.get(tok)!] as const;
      for (const tok of value.keys()) {
        if (tok === r.root || kept.has(tok)) continue;
        for (const k of kept) {
          const [vk, ok] = rank(k), [vx, ox] = rank(tok);
          assert.ok(vk > vx || (vk === vx && ok < ox), `kept ${k} (${vk}) must outrank dropped ${tok} (${vx})`);
        }
      }
      for (let i = 1; i < t.n; i++) assert.ok(value.get(t.tokens[i])! <= value.get(t.tokens[t.parents[i]])!, 'values decrease along paths');
    }),
    { numRuns: 300 },
  );
});

test('TreeBuilder: frontier draft masks match the ancestor relation of the final candidates', () => {
  fc.assert(
    fc.property(arbRound(true), (r) => {
      // With every candidate kept, the verify tree holds all frontier nodes with their lineage.
      const all = { ...r, totalTokens: 1 + r.topK * (1 + (r.maxDepth - 1) * r.topK) };
      all.keep = all.totalTokens;
      const b = new TreeBuilder(all);
      const rowToken: number[] = [];
      const masks: { tokens: number[]; mask: number[]; R: number }[] = [];
      drive(b, all, (f) => {
        if (f.depth > 0) masks.push({ tokens: Array.from(f.tokens.subarray(0, f.count)), mask: Array.from(f.draftMask), R: f.rowOffset });
      });
      if (all.expands > 0) masks.push({ tokens: Array.from(b.frontier.tokens.subarray(0, b.frontier.count)), mask: Array.from(b.frontier.draftMask), R: b.frontier.rowOffset });
      const t = b.finish();
      const nodeOfToken = new Map(Array.from(t.tokens.subarray(0, t.n), (tok, i) => [tok, i] as const));
      for (const { tokens, mask, R } of masks) {
        assert.equal(R, rowToken.length);
        rowToken.push(...tokens);
        const width = rowToken.length;
        assert.equal(mask.length, tokens.length * width);
        tokens.forEach((tok, i) => {
          const anc = lineage(t.parents, nodeOfToken.get(tok)!);
          rowToken.forEach((rt, j) => assert.equal(mask[i * width + j], anc.has(nodeOfToken.get(rt)!) ? 1 : 0));
        });
      }
    }),
    { numRuns: 200 },
  );
});

test('TreeBuilder: one builder reused over many rounds gives what fresh builders give', () => {
  fc.assert(
    fc.property(
      arbOptions.chain((o) => fc.array(arbRoundFor(o), { minLength: 1, maxLength: 8 })),
      (rounds) => {
        const reused = new TreeBuilder(rounds[0]);
        const tree = reused.finish(), frontier = reused.frontier;
        for (const r of rounds) assert.deepEqual(drive(reused, r), drive(new TreeBuilder(r), r));
        // Same objects every round: the results live in the builder's own buffers.
        assert.equal(reused.finish(), tree);
        assert.equal(reused.frontier, frontier);
      },
    ),
    { numRuns: 100 },
  );
});

test('TreeBuilder.chain: top-1 drafting gives a chain with an all-ones draft mask', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 8 }), fc.array(fc.integer({ min: 0, max: 50 }), { minLength: 8, maxLength: 8 }), (D, ids) => {
      const b = TreeBuilder.chain(D);
      b.reset(7);
      for (let d = 0; d < D; d++) {
        b.expand([ids[d]], [-0.5]);
        assert.equal(b.frontier.count, 1);
        assert.deepEqual(Array.from(b.frontier.draftMask), new Array(d + 1).fill(1));
      }
      assert.equal(b.canExpand, false);
      const t = b.finish();
      assert.deepEqual(snapTree(t).tokens, [7, ...ids.slice(0, D)]);
      assert.deepEqual(snapTree(t).parents, Array.from({ length: D + 1 }, (_, i) => i - 1));
    }),
  );
});

// ---------------------------------------------------------------------------------------------
// Properties: acceptance

test('acceptGreedy equals brute force: the deepest branch whose tokens follow the argmax chain', () => {
  fc.assert(
    fc.property(
      arbTrie(3, 4).chain((t) => fc.tuple(fc.constant(t), fc.array(fc.integer({ min: 0, max: 2 }), { minLength: t.n, maxLength: t.n }))),
      ([t, argmax]) => {
        let best = 0;
        for (let i = 0; i < t.n; i++) {
          const path = [...lineage(t.parents, i)].reverse();
          const ok = path.every((x, j) => j === 0 || t.tokens[x] === argmax[path[j - 1]]);
          if (ok && t.depths[i] > t.depths[best]) best = i;
        }
        const want = [...lineage(t.parents, best)].reverse();
        const a = acceptGreedy(t, argmax, new Acceptance(t.depth));
        assert.deepEqual(Array.from(a.path.subarray(0, a.length)), want);
        assert.equal(a.bonus, argmax[best]);
        assert.deepEqual(Array.from(a.tokens.subarray(0, a.length)), [...want.slice(1).map((x) => t.tokens[x]), argmax[best]]);
      },
    ),
    { numRuns: 300 },
  );
});

test('acceptSampled with a deterministic sampler follows the reference walk, one draw per emitted token', () => {
  fc.assert(
    fc.property(
      arbTrie(3, 4).chain((t) => fc.tuple(fc.constant(t), fc.array(fc.integer({ min: 0, max: 2 }), { minLength: t.n, maxLength: t.n }))),
      ([t, table]) => {
        const calls: number[] = [];
        const a = acceptSampled(t, (node) => (calls.push(node), table[node]), new Acceptance(t.depth));
        // Reference: scan the parent array for a child carrying the drawn token.
        const want: number[] = [];
        for (let node = 0; node >= 0; ) {
          want.push(node);
          node = Array.from(t.parents.subarray(0, t.n)).findIndex((p, c) => p === node && t.tokens[c] === table[node]);
        }
        assert.deepEqual(Array.from(a.path.subarray(0, a.length)), want);
        assert.deepEqual(calls, want);
        assert.equal(a.bonus, table[want[want.length - 1]]);
      },
    ),
    { numRuns: 300 },
  );
});

test('acceptSampled reproduces autoregressive sampling token for token on the same random stream', () => {
  const V = 3;
  fc.assert(
    fc.property(
      arbTrie(V, 4),
      fc.nat(),
      fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 5, maxLength: 5 }),
      (t, seed, us) => {
        // Target p(y | context): a fixed pseudo-random distribution per context.
        const probs = (ctx: number[]) => {
          const h = hash(seed, ctx), w = [1 + (h % 7), 1 + ((h >>> 3) % 7), 1 + ((h >>> 6) % 7)];
          const s = w[0] + w[1] + w[2];
          return w.map((x) => x / s);
        };
        const draw = (ctx: number[], u: number) => {
          const p = probs(ctx);
          let y = 0;
          for (let acc = p[0]; u >= acc && y < V - 1; acc += p[++y]);
          return y;
        };
        const ar: number[] = [t.tokens[0]];
        for (const u of us) ar.push(draw(ar, u));
        let used = 0;
        const a = acceptSampled(t, (node) => draw(context(t, node), us[used++]), new Acceptance(t.depth));
        assert.equal(used, a.length);
        assert.deepEqual(Array.from(a.tokens.subarray(0, a.length)), ar.slice(1, 1 + a.length));
      },
    ),
    { numRuns: 300 },
  );
});

test('acceptSampled is distribution-exact: exact enumeration over every random stream on a tiny vocab', () => {
  // Target probabilities are multiples of 1/M, and the sampler reads one digit in [0, M) per
  // draw, so enumerating all M^L digit streams weighs every outcome by its exact probability.
  const M = 4, COUNTS = [[4, 0, 0], [0, 4, 0], [2, 1, 1], [1, 2, 1], [1, 1, 2], [0, 3, 1], [3, 0, 1]];
  fc.assert(
    fc.property(arbTrie(3, 3), fc.nat(), (t, seed) => {
      const counts = (ctx: number[]) => COUNTS[hash(seed, ctx) % COUNTS.length];
      const draw = (ctx: number[], digit: number) => {
        const c = counts(ctx);
        let y = 0;
        for (let acc = c[0]; digit >= acc; acc += c[++y]);
        return y;
      };
      const L = t.depth + 1;
      const seen = new Map<string, number>();
      const a = new Acceptance(t.depth);
      const digits = new Array<number>(L).fill(0);
      for (let stream = 0; stream < M ** L; stream++) {
        for (let i = 0, x = stream; i < L; i++, x = Math.floor(x / M)) digits[i] = x % M;
        let used = 0;
        acceptSampled(t, (node) => draw(context(t, node), digits[used++]), a);
        const key = Array.from(a.tokens.subarray(0, a.length)).join(',');
        seen.set(key, (seen.get(key) ?? 0) + 1);
      }
      // Autoregressive probability of each emitted sequence, times M^L.
      for (const [key, n] of seen) {
        const seq = key.split(',').map(Number), ctx = [t.tokens[0]];
        let want = M ** (L - seq.length);
        for (const y of seq) {
          want *= counts(ctx)[y];
          ctx.push(y);
        }
        assert.equal(n, want, `P(${key})`);
      }
    }),
    { numRuns: 200 },
  );
});

// ---------------------------------------------------------------------------------------------
// Examples

test('example: k = 2, two depths, totalTokens 4', () => {
  const b = new TreeBuilder({ topK: 2, maxDepth: 3, totalTokens: 4 });
  b.reset(100);
  assert.equal(b.frontier.count, 1);
  assert.equal(b.frontier.draftMask.length, 0);
  b.expand([1, 2], [-0.1, -1.0]);
  assert.deepEqual(snapFrontier(b.frontier), {
    depth: 1, count: 2, rowOffset: 0, tokens: [1, 2], values: [-0.1, -1.0], parentSlots: [0, 0], draftMask: [1, 0, 0, 1],
  });
  b.expand([3, 4, 5, 6], [-0.2, -3, -0.05, -2]);
  assert.deepEqual(snapFrontier(b.frontier), {
    depth: 2, count: 2, rowOffset: 2, tokens: [3, 5], values: [-0.1 - 0.2, -1.05], parentSlots: [0, 1],
    draftMask: [1, 0, 1, 0, 0, 1, 0, 1],
  });
  const t = b.finish();
  assert.deepEqual(snapTree(t), {
    n: 5, depth: 2, tokens: [100, 1, 2, 3, 5], parents: [-1, 0, 0, 1, 2], depths: [0, 1, 1, 2, 2],
    mask: [1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
    leaves: [3, 4], paths: [0, 1, 3, 0, 2, 4],
  });
  const a = acceptGreedy(t, [1, 3, 9, 7, 8], new Acceptance(3));
  assert.deepEqual([Array.from(a.path.subarray(0, a.length)), Array.from(a.tokens.subarray(0, a.length)), a.bonus], [[0, 1, 3], [1, 3, 7], 7]);
  // A smaller budget this round keeps the best two, still connected.
  assert.deepEqual(snapTree(b.finish(2)).tokens, [100, 1, 3]);
  assert.deepEqual(snapTree(b.finish(0)).tokens, [100]);
});

test('example: a rejected root emits only the bonus', () => {
  const t = trie(5, [[1, 2]]);
  const a = acceptGreedy(t, [0, 2, 4], new Acceptance(2));
  assert.deepEqual([a.length, a.path[0], a.bonus], [1, 0, 0]);
});

test('errors: a bad tree option is a usage error where the library checks it (checkTree), a RangeError in trees/ itself; misuse is a RangeError', () => {
  assert.throws(() => checkShape({ topK: 0, maxDepth: 3, totalTokens: 8 }), (e) => e instanceof UsageError && e.message === 'tree.topK: must be an integer in [1, 64], got 0');
  assert.throws(() => checkShape({ topK: 2, maxDepth: 3, totalTokens: 2 }, { topK: '--tree-top-k', maxDepth: '--depth', totalTokens: '--total-tokens' }, true), /^UsageError: --total-tokens: 2 tokens cannot reach depth 3 \(--depth\)/);
  checkShape({ topK: 2, maxDepth: 3, totalTokens: 2 }); // reachable is the CLI's ask only
  assert.throws(() => new TreeBuilder({ topK: 0, maxDepth: 3, totalTokens: 8 }), RangeError);
  assert.throws(() => new TreeBuilder({ topK: 2, maxDepth: 2.5, totalTokens: 8 }), /maxDepth: must be an integer >= 1, got 2.5/);
  const b = new TreeBuilder({ topK: 2, maxDepth: 1, totalTokens: 8 });
  b.reset(0);
  assert.throws(() => b.expand([1], [-1]), RangeError);
  assert.throws(() => b.expand([1, 2], [-1, NaN]), /NaN/);
  b.expand([1, 2], [-1, -2]);
  assert.throws(() => b.expand([1, 2, 3, 4], [-1, -1, -1, -1]), /maxDepth/);
  assert.throws(() => b.finish(9), RangeError);
  assert.throws(() => acceptGreedy(trie(0, [[1, 2, 3]]), [1, 2, 3, 4], new Acceptance(2)), /depth 3/);
});
