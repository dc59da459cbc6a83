/**
 * The fused round (one ORT call drafts a chain with the head and verifies it with the target):
 * lossless against plain decoding, greedy and sampled, on random configs; and its in-graph chain
 * equals the chain D separate draft passes give.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { loadGenerator } from '../src/api.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { randomWeights } from '../src/model/random.ts';
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
