/**
 * The fused round (one ORT call drafts a chain with the head and verifies it with the target):
 * lossless against plain decoding, greedy and sampled, on random configs; and its in-graph chain
 * equals the chain D separate draft passes give.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { loadGenerator } from '../src/api.ts';
import { RoundDrafter } from '../src/generate/round-drafter.ts';
import { History } from '../src/generate/history.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import type { LengthPolicy, RoundState } from '../src/policies/policy.ts';
import type { RoundSession } from '../src/runtime/round.ts';
import { AcceptanceTally, prompt, sameAsPlain, tinyConfig, tinyConfigEitherLayout } from './support/models.ts';


test('fused-round speculative output == plain output (greedy and sampled), random configs (either value layout) and depths', async () => {
  const tally = new AcceptanceTally();
  await fc.assert(
    fc.asyncProperty(tinyConfigEitherLayout(), fc.integer({ min: 0, max: 1e6 }), fc.integer({ min: 1, max: 6 }), fc.boolean(), async (cfg, seed, depth, greedy) => {
      const model = { config: cfg, weights: randomWeights(cfg, seed, 3), source: 'hf' as const };
      const draft = { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, seed + 1) };
      const ar = await loadGenerator({ model, threads: 1 });
      const spec = await loadGenerator({ model, draft, tree: { topK: 1, maxDepth: depth, totalTokens: depth }, fusedRound: true, threads: 1 });
      try {
        const ids = fc.sample(prompt(cfg.vocabSize), { seed, numRuns: 1 })[0];
        const opts = greedy ? { maxNewTokens: 30 } : { maxNewTokens: 30, temperature: 1, topK: 5, seed };
        tally.add((await sameAsPlain(ar, spec, ids, opts)).stats);
      } finally {
        await ar.dispose();
        await spec.dispose();
      }
    }),
    { numRuns: 25, seed: 11 },
  );
  assert.ok(tally.accepted > 0, `${tally}`);
});

test('the in-graph chain equals D separate draft passes: same drafts, so the same acceptance every round (full and reduced draft vocabulary)', async () => {
  await fc.assert(
    fc.asyncProperty(tinyConfigEitherLayout(), fc.integer({ min: 0, max: 1e6 }), fc.integer({ min: 1, max: 5 }), fc.boolean(), async (cfg, seed, depth, reduced) => {
      const model = { config: cfg, weights: randomWeights(cfg, seed, 3), source: 'hf' as const };
      const n = reduced ? Math.max(2, cfg.vocabSize >> 1) : undefined;
      const draft = { config: headConfigFor(cfg, n), weights: randomHeadWeights(cfg, seed + 1, n ? { size: n, targetWeights: model.weights } : undefined) };
      const tree = { topK: 1, maxDepth: depth, totalTokens: depth };
      const passes = await loadGenerator({ model, draft, tree, threads: 1 });
      const fused = await loadGenerator({ model, draft, tree, fusedRound: true, threads: 1 });
      try {
        const ids = fc.sample(prompt(cfg.vocabSize), { seed, numRuns: 1 })[0];
        const a = await passes.generate(ids, { maxNewTokens: 40 });
        const b = await fused.generate(ids, { maxNewTokens: 40 });
        assert.deepEqual(b.ids, a.ids);
        assert.deepEqual(b.stats.acceptedHistogram, a.stats.acceptedHistogram);
        assert.equal(b.stats.rounds, a.stats.rounds);
      } finally {
        await passes.dispose();
        await fused.dispose();
      }
    }),
    { numRuns: 20, seed: 12 },
  );
});

test('fused round: a tree wider than a chain is refused with a clear error', async () => {
  const cfg = fc.sample(tinyConfig(), { seed: 4, numRuns: 1 })[0];
  const model = { config: cfg, weights: randomWeights(cfg, 4, 3), source: 'hf' as const };
  await assert.rejects(loadGenerator({ model, draft: 'random', tree: { topK: 2, maxDepth: 3, totalTokens: 6 }, fusedRound: true, threads: 1 }), /top-k 1/);
});

/** Plans a depth in [1, maxDepth] each round from a seeded sequence (the same for every generator given the same seed). */
function randomDepths(seed: number, maxDepth: number): LengthPolicy {
  let x = seed >>> 0 || 1;
  return {
    name: 'random-depths',
    plan: (st: RoundState) => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const depth = Math.min(1 + (x >>> 16) % maxDepth, st.maxDepth);
      return { depth, totalTokens: depth };
    },
  };
}

test('round graphs of several depths: each round runs the shallowest graph that reaches its plan, with the drafts and acceptance of one full-depth graph, lossless', async () => {
  await fc.assert(
    fc.asyncProperty(tinyConfigEitherLayout(), fc.integer({ min: 0, max: 1e6 }), fc.integer({ min: 2, max: 5 }), fc.boolean(), async (cfg, seed, depth, greedy) => {
      const model = { config: cfg, weights: randomWeights(cfg, seed, 3), source: 'hf' as const };
      const draft = { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, seed + 1) };
      const tree = { topK: 1, maxDepth: depth, totalTokens: depth };
      const roundDepths = [1, depth - 1].filter((d) => d < depth);
      const ar = await loadGenerator({ model, threads: 1 });
      const one = await loadGenerator({ model, draft, tree, fusedRound: true, threads: 1, policy: () => randomDepths(seed, depth) });
      const several = await loadGenerator({ model, draft, tree, fusedRound: true, roundDepths, threads: 1, policy: () => randomDepths(seed, depth) });
      try {
        assert.deepEqual((several.generator.drafter as RoundDrafter).sessions.map((x) => x.depth), [...new Set([...roundDepths, depth])]);
        const ids = fc.sample(prompt(cfg.vocabSize), { seed, numRuns: 1 })[0];
        const opts = greedy ? { maxNewTokens: 30 } : { maxNewTokens: 30, temperature: 1, topK: 5, seed };
        // Both policies replay one seeded sequence of plans (each generator's own instance, same warm-up).
        const a = await sameAsPlain(ar, one, ids, opts), b = await sameAsPlain(ar, several, ids, opts);
        assert.deepEqual(b.ids, a.ids);
        assert.deepEqual(b.stats.acceptedHistogram, a.stats.acceptedHistogram);
        // Head steps: the full depth every drafting round with one graph (a round left one token
        // by the budget is a plain step), fewer with shallower graphs planned.
        const drafting = a.stats.draftPasses / depth;
        assert.ok(Number.isInteger(drafting) && drafting >= a.stats.rounds - 1 && drafting <= a.stats.rounds, `${a.stats.draftPasses} head steps over ${a.stats.rounds} rounds of depth ${depth}`);
        assert.ok(b.stats.draftPasses < a.stats.draftPasses, `${b.stats.draftPasses} >= ${a.stats.draftPasses}: no round ran a shallower graph`);
      } finally {
        await ar.dispose();
        await one.dispose();
        await several.dispose();
      }
    }),
    { numRuns: 12, seed: 13 },
  );
});

test('round graphs: the plan picks the shallowest graph reaching it; a target padded to even rows verifies the padding row\'s draft too', async () => {
  const fake = (depth: number, padsRows: boolean) => ({ depth, padsRows, head: { dim: 4, nKvHeads: 1, headDim: 4 } }) as unknown as RoundSession;
  const run = async (depths: number[], padsRows: boolean, planned: number) => {
    const d = new RoundDrafter(depths.map((x) => fake(x, padsRows)), 16);
    const tree = await d.draft(new History(16, 4), 3, { depth: planned, totalTokens: planned }, randomDepths(1, 1));
    return { rows: tree.n, headSteps: d.passes };
  };
  {
    // [graph depths, padsRows, planned depth] -> verified rows (root included), head steps run.
    const cases: [number[], boolean, number, number, number][] = [
      [[5], false, 2, 3, 5],
      [[5], true, 2, 4, 5], // 3 rows would be padded to 4: the third draft is verified for free
      [[5], true, 5, 6, 5],
      [[1, 3, 5], false, 1, 2, 1],
      [[1, 3, 5], false, 2, 3, 3],
      [[1, 3, 5], true, 2, 4, 3],
      [[1, 3, 5], true, 4, 6, 5],
      [[1, 3, 5], true, 7, 6, 5], // capped at the deepest graph
      [[2, 4], true, 3, 4, 4],
    ];
    for (const [depths, pads, planned, rows, steps] of cases) assert.deepEqual(await run(depths, pads, planned), { rows, headSteps: steps }, `graphs ${depths}, padsRows ${pads}, planned ${planned}`);
    // Near the context's end (16 rows; plans within the loop's clamp, at most 15 - P drafts) a
    // graph runs only if all its head steps fit, the last at P + depth - 2 <= 15: at P = 13 depth 3
    // does, depth 5 does not (alone: a plain step, no head steps; beside depth 1: that one, one
    // draft); at P = 12 depth 5 just fits; at P = 14 depth 5 does not.
    for (const [P, depths, planned, rows, steps] of [[13, [1, 3, 5], 2, 3, 3], [13, [5], 2, 1, 0], [13, [1, 5], 2, 2, 1], [12, [5], 2, 3, 5], [14, [5], 1, 1, 0]] as const) {
      const near = new RoundDrafter(depths.map((x) => fake(x, false)), 16), h = new History(16, 4);
      h.length = P;
      const tree = await near.draft(h, 3, { depth: planned, totalTokens: planned }, randomDepths(1, 1));
      assert.deepEqual({ rows: tree.n, steps: near.passes }, { rows, steps }, `graphs ${depths} at ${P} of 16`);
    }
    assert.throws(() => new RoundDrafter([fake(3, false), fake(3, false)], 16), /distinct depths/);
  }
});

test('a fused round graph runs to the context limit: near the end a graph whose head steps would pass it is not run (lossless, greedy and sampled)', async () => {
  // Failed before: the head's last steps asked the rotary table for positions past maxSeqLen.
  for (const [seed, maxSeqLen, roundDepths] of [[1, 20, []], [2, 21, [2, 4]]] as const) {
    const cfg = makeConfig({ vocabSize: 48, dim: 32, nLayers: 2, nHeads: 4, nKvHeads: 2, hiddenDim: 64, maxSeqLen, eosTokenIds: [] });
    const model = { config: cfg, weights: randomWeights(cfg, seed, 3), source: 'hf' as const };
    const draft = { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, seed + 1) };
    const tree = { topK: 1, maxDepth: 5, totalTokens: 5 };
    const ar = await loadGenerator({ model, threads: 1 });
    const fused = await loadGenerator({ model, draft, tree, threads: 1, fusedRound: true, roundDepths: [...roundDepths] });
    try {
      for (const opts of [{ maxNewTokens: 100 }, { maxNewTokens: 100, temperature: 1, topK: 5, seed }]) {
        const a = await ar.generate([1], opts), f = await fused.generate([1], opts);
        assert.equal(f.stats.stopReason, 'context');
        assert.deepEqual(f.ids, a.ids, `seed ${seed}, maxSeqLen ${maxSeqLen}`);
      }
    } finally {
      await ar.dispose();
      await fused.dispose();
    }
  }
});
