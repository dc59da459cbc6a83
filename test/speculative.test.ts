/**
 * Losslessness, the central property: speculative output equals plain decoding token for
 * token, greedy and sampled (same seed), for random tiny targets, random (mostly wrong) draft
 * heads, random prompts and random tree shapes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { loadGenerator } from '../src/api.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { randomWeights } from '../src/model/random.ts';
import { StaticPolicy, type RoundOutcome } from '../src/policies/policy.ts';
import { AcceptanceTally, prompt, tinyConfig, tinyConfigEitherLayout, tinyPair, treeShape } from './support/models.ts';

test('greedy speculative output == greedy AR output, token for token (fused and split attention, values in rows and transposed)', async () => {
  const tally = new AcceptanceTally();
  await fc.assert(
    fc.asyncProperty(tinyConfigEitherLayout(), fc.integer({ min: 0, max: 1e6 }), treeShape, fc.integer({ min: 1, max: 40 }), fc.context(), async (cfg, seed, tree, maxNewTokens, ctx) => {
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
        tally.add(s.stats);
      } finally {
        await p.dispose();
      }
    }),
    { numRuns: 30, seed: 1 },
  );
  // The property is only meaningful if drafts were sometimes accepted and sometimes rejected.
  assert.ok(tally.accepted > 0 && tally.accepted < tally.rounds * 3, `${tally}`);
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

test('speculative sampling draws the first tokens from the target distribution (chi-square, wrong drafts included)', async () => {
  // A 6-token vocabulary: the exact distribution of the first two generated tokens is computed
  // from the target itself (prefill logits, then one step per first token); speculative runs
  // over many seeds must match it. The random head is wrong most of the time (its tree rarely
  // holds the target's draw), so rejections at every depth are exercised.
  const cfg = fc.sample(tinyConfig(), { seed: 11, numRuns: 1 })[0];
  const small = { ...cfg, vocabSize: 6 };
  const p = await tinyPair(small, 13, { topK: 2, maxDepth: 3, totalTokens: 6 }, undefined, 1);
  try {
    const prompt = [1, 2, 3], V = 6, temperature = 1;
    const { Sampler } = await import('../src/generate/sampler.ts');
    const probs = async (ids: number[]) => {
      const { KVCache } = await import('../src/runtime/kv-cache.ts');
      const c = new KVCache(small.nLayers, small.nKvHeads, small.headDim, small.maxSeqLen);
      const out = await p.ar.generator.parts.target.forward(c, ids, ids.map((_, i) => i));
      const s = new Sampler({ temperature, topK: 0, topP: 1, seed: 0 }, V);
      s.distribution(out.logits, (ids.length - 1) * V);
      return Array.from({ length: V }, (_, t) => s.prob(t));
    };
    const p1 = await probs(prompt);
    const exact = new Map<string, number>();
    for (let a = 0; a < V; a++) {
      const p2 = await probs([...prompt, a]);
      for (let b = 0; b < V; b++) exact.set(`${a},${b}`, p1[a] * p2[b]);
    }
    const N = 1500, counts = new Map<string, number>();
    let rejected = 0;
    for (let seed = 0; seed < N; seed++) {
      const s = await p.spec.generate(prompt, { temperature, seed, maxNewTokens: 2, stopAtEos: false });
      const key = s.ids.join(',');
      counts.set(key, (counts.get(key) ?? 0) + 1);
      rejected += s.stats.acceptedHistogram[0] ?? 0;
    }
    // Pool cells with expected count < 5, then chi-square against the exact distribution.
    let chi2 = 0, cells = 0, poolE = 0, poolO = 0;
    for (const [key, prob] of exact) {
      const e = prob * N, o = counts.get(key) ?? 0;
      if (e < 5) {
        poolE += e;
        poolO += o;
      } else {
        chi2 += (o - e) ** 2 / e;
        cells++;
      }
    }
    if (poolE > 0) {
      chi2 += (poolO - poolE) ** 2 / poolE;
      cells++;
    }
    // df = cells - 1 <= 36; the 0.999 quantile of chi-square(36) is 67.98: a fixed-seed run of a
    // correct sampler lands far below, a biased one (e.g. accepting drafts without sampling) far above.
    assert.ok(chi2 < 68, `chi2 ${chi2.toFixed(1)} over ${cells} cells`);
    assert.ok(rejected > N / 4, `the draft should be wrong often: ${rejected} rejecting rounds`);
  } finally {
    await p.dispose();
  }
});

test('a draft session with a larger top-k drafts the same trees as one sized to the tree', async () => {
  const { Generator } = await import('../src/generate/generator.ts');
  const { EagleDrafter } = await import('../src/generate/eagle-drafter.ts');
  const { DraftSession } = await import('../src/runtime/draft.ts');
  const { TargetSession } = await import('../src/runtime/target.ts');
  const { headConfigFor, randomHeadWeights } = await import('../src/model/draft-head.ts');
  const { randomWeights } = await import('../src/model/random.ts');
  const cfg = fc.sample(tinyConfig(), { seed: 21, numRuns: 1 })[0];
  const w = randomWeights(cfg, 4, 3), hw = randomHeadWeights(cfg, 5), shape = { topK: 3, maxDepth: 4, totalTokens: 10 };
  const target = await TargetSession.create(cfg, w, { threads: 1 });
  const runs = [];
  for (const sessionTopK of [3, 8]) {
    const draft = await DraftSession.create(headConfigFor(cfg), hw, cfg, w, { threads: 1, topK: sessionTopK });
    const g = new Generator({ target, drafter: new EagleDrafter(draft, shape, cfg.maxSeqLen) });
    runs.push((await g.generate([1, 2, 3, 4], { maxNewTokens: 40 })).stats);
    await draft.dispose();
  }
  await target.dispose();
  assert.deepEqual(runs[1].acceptedHistogram, runs[0].acceptedHistogram);
  assert.equal(runs[1].depthSum, runs[0].depthSum);
  assert.ok(runs[0].roundTokens > runs[0].rounds, 'some drafts accepted');
});

test('near max-new-tokens a round drafts no deeper than the tokens left to emit (EAGLE trees and the fused round), still lossless', async () => {
  // A static policy that records each round's drafted depth, told to it before the round's chunk is out.
  class Recording extends StaticPolicy {
    depths: number[] = [];
    observe(o: RoundOutcome): void {
      this.depths.push(o.depth);
    }
  }
  await fc.assert(
    fc.asyncProperty(tinyConfig(), fc.integer({ min: 0, max: 1e6 }), fc.integer({ min: 2, max: 5 }), fc.integer({ min: 1, max: 14 }), fc.boolean(), async (cfg, seed, depth, maxNewTokens, fused) => {
      const model = { config: cfg, weights: randomWeights(cfg, seed, 3), source: 'hf' as const };
      const draft = { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, seed + 1) };
      const policy = new Recording(depth, depth);
      const ar = await loadGenerator({ model, threads: 1 });
      const spec = await loadGenerator({ model, draft, tree: { topK: 1, maxDepth: depth, totalTokens: depth }, fusedRound: fused, policy, threads: 1 });
      try {
        const ids = fc.sample(prompt(cfg.vocabSize), { seed, numRuns: 1 })[0];
        const plain = await ar.generate(ids, { maxNewTokens });
        const chunks: number[] = [];
        const out: number[] = [];
        policy.depths.length = 0; // loading ran a warm-up round
        for await (const c of spec.generator.stream(ids, { maxNewTokens })) (chunks.push(c.ids.length), out.push(...c.ids));
        assert.deepEqual(out, plain.ids);
        // chunks[0] is the prefill's token; chunks[i + 1] is round i's.
        assert.equal(policy.depths.length, chunks.length - 1);
        let emitted = chunks[0];
        policy.depths.forEach((d, i) => {
          assert.ok(emitted + d + 1 <= maxNewTokens, `round ${i}: depth ${d} after ${emitted} of ${maxNewTokens} tokens`);
          emitted += chunks[i + 1];
        });
        // The budget clips, never more: a round with room for the full depth drafts it.
        if (maxNewTokens >= depth + 2) assert.equal(policy.depths[0], depth);
      } finally {
        await ar.dispose();
        await spec.dispose();
      }
    }),
    { numRuns: 24, seed: 18 },
  );
});

test('a round the budget clips keeps its tree as wide as the plan: every candidate up to the clipped depth, to the tree size (top-k > 1), still lossless', async () => {
  // Only depth can be wasted near max-new-tokens: siblings at a usable depth are emitted if accepted.
  class Sizes extends StaticPolicy {
    sizes: number[] = [];
    observe(o: RoundOutcome): void {
      this.sizes.push(o.treeSize);
    }
  }
  const k = 3, T = 6;
  await fc.assert(
    fc.asyncProperty(tinyConfig(), fc.integer({ min: 0, max: 1e6 }), fc.integer({ min: 2, max: 9 }), async (cfg, seed, maxNewTokens) => {
      const model = { config: cfg, weights: randomWeights(cfg, seed, 3), source: 'hf' as const };
      const draft = { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, seed + 1) };
      const policy = new Sizes(3, T);
      const ar = await loadGenerator({ model, threads: 1 });
      const spec = await loadGenerator({ model, draft, tree: { topK: k, maxDepth: 3, totalTokens: T }, policy, threads: 1 });
      try {
        const ids = fc.sample(prompt(cfg.vocabSize), { seed, numRuns: 1 })[0];
        const opts = { maxNewTokens, stopAtEos: false };
        const plain = await ar.generate(ids, opts);
        const chunks: number[] = [], out: number[] = [];
        policy.sizes.length = 0; // loading ran a warm-up round
        for await (const c of spec.generator.stream(ids, opts)) (chunks.push(c.ids.length), out.push(...c.ids));
        assert.deepEqual(out, plain.ids);
        assert.equal(policy.sizes.length, chunks.length - 1);
        // Round i after `emitted` tokens: depth at most min(rows, tokens left) - 1; its size at most
        // T and the rows left, and k candidates exist at depth 1 (k + k^2 >= T below).
        let emitted = chunks[0];
        policy.sizes.forEach((size, i) => {
          const room = cfg.maxSeqLen - (ids.length + emitted - 1), limit = Math.min(room, maxNewTokens - emitted) - 1;
          const want = limit === 0 ? 0 : Math.min(T, room - 1, limit === 1 ? k : T);
          assert.equal(size, want, `round ${i}: ${size} drafts verified after ${emitted} of ${maxNewTokens} tokens`);
          emitted += chunks[i + 1];
        });
      } finally {
        await ar.dispose();
        await spec.dispose();
      }
    }),
    { numRuns: 12, seed: 18 },
  );
});
