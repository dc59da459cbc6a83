/**
 * Losslessness, the central property: speculative output equals plain decoding token for
 * token, greedy and sampled (same seed), for random tiny targets, random (mostly wrong) draft
 * heads, random prompts and random tree shapes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { tinyConfig, tinyPair, treeShape } from './support/models.ts';

const prompt = (vocab: number) => fc.array(fc.integer({ min: 0, max: vocab - 1 }), { minLength: 1, maxLength: 10 });

test('greedy speculative output == greedy AR output, token for token', async () => {
  let accepted = 0, rounds = 0;
  await fc.assert(
    fc.asyncProperty(tinyConfig(), fc.integer({ min: 0, max: 1e6 }), treeShape, fc.integer({ min: 1, max: 40 }), fc.context(), async (cfg, seed, tree, maxNewTokens, ctx) => {
      const p = await tinyPair(cfg, seed, tree);
      try {
        const ids = fc.sample(prompt(cfg.vocabSize), { seed, numRuns: 1 })[0];
        const a = await p.ar.generate(ids, { maxNewTokens });
        const s = await p.spec.generate(ids, { maxNewTokens });
        ctx.log(`tau ${s.stats.tau.toFixed(2)} hist ${s.stats.acceptedHistogram}`);
        assert.deepEqual(s.ids, a.ids);
        assert.equal(s.stats.newTokens, maxNewTokens);
        // tau counts the bonus: every round emits 1 + accepted tokens.
        assert.equal(s.stats.roundTokens, s.stats.acceptedHistogram.reduce((x, c, i) => x + c * (i + 1), 0));
        accepted += s.stats.roundTokens - s.stats.rounds;
        rounds += s.stats.rounds;
      } finally {
        await p.dispose();
      }
    }),
    { numRuns: 30, seed: 1 },
  );
  // The property is only meaningful if drafts were sometimes accepted and sometimes rejected.
  assert.ok(accepted > 0 && accepted < rounds * 3, `accepted ${accepted} drafted tokens over ${rounds} rounds`);
});

test('sampled speculative output == sampled AR output with the same seed (temperature, top-k, top-p)', async () => {
  const sampling = fc.record({
    temperature: fc.constantFrom(0.5, 1, 1.5),
    topK: fc.constantFrom(0, 3, 10),
    topP: fc.constantFrom(1, 0.9, 0.5),
    seed: fc.integer({ min: 0, max: 1e6 }),
  });
  await fc.assert(
    fc.asyncProperty(tinyConfig(), fc.integer({ min: 0, max: 1e6 }), treeShape, sampling, async (cfg, seed, tree, opts) => {
      const p = await tinyPair(cfg, seed, tree);
      try {
        const ids = fc.sample(prompt(cfg.vocabSize), { seed, numRuns: 1 })[0];
        const a = await p.ar.generate(ids, { ...opts, maxNewTokens: 24 });
        const s = await p.spec.generate(ids, { ...opts, maxNewTokens: 24 });
        assert.deepEqual(s.ids, a.ids);
      } finally {
        await p.dispose();
      }
    }),
    { numRuns: 20, seed: 2 },
  );
});

test('near the context limit speculation shrinks its trees and stops with reason "context", still lossless', async () => {
  const cfg = fc.sample(tinyConfig(24), { seed: 3, numRuns: 1 })[0];
  const p = await tinyPair(cfg, 5, { topK: 3, maxDepth: 5, totalTokens: 12 });
  try {
    const ids = [1, 2, 3, 4, 5];
    const a = await p.ar.generate(ids, { maxNewTokens: 100, stopAtEos: false });
    const s = await p.spec.generate(ids, { maxNewTokens: 100, stopAtEos: false });
    assert.equal(a.stats.stopReason, 'context');
    assert.equal(s.stats.stopReason, 'context');
    assert.deepEqual(s.ids, a.ids);
    assert.equal(ids.length + a.ids.length, cfg.maxSeqLen + 1); // the last token is emitted, never cached
  } finally {
    await p.dispose();
  }
});
