/**
 * The one-token graph (OnnxOpsOptions.oneToken, TargetSession's `oneToken`) computes a plain
 * decoding step bit for bit as the step graph computes a one-token pass: the same kernels over
 * the same numbers in the same shapes, only the regroupings are Reshapes and the mask a graph
 * input. A last-bit difference would make plain decoding and a speculative run (whose
 * verification runs in the step graph) disagree at near-ties, so this pins bit-equality, at 1
 * and 2 threads, over contexts that grow the cache's stride, with grouped heads, q/k norms,
 * biases and tied embeddings drawn.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { TargetSession, type TargetOutput } from '../src/runtime/target.ts';

const bits = (x: Float32Array | Int32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);

function assertSameBits(a: TargetOutput, b: TargetOutput, what: string): void {
  for (const k of ['logits', 'argmax', 'features'] as const) assert.deepEqual(bits(b[k]), bits(a[k]), `${what}: ${k}`);
  a.newKeys.forEach((x, l) => assert.deepEqual(bits(b.newKeys[l]), bits(x), `${what}: layer ${l} keys`));
  a.newValues.forEach((x, l) => assert.deepEqual(bits(b.newValues[l]), bits(x), `${what}: layer ${l} values`));
}

test('a one-token graph decodes bit for bit as the step graph', async () => {
  const arb = fc.record({
    heads: fc.constantFrom<[number, number]>([2, 2], [4, 2], [4, 1]),
    headDim: fc.constantFrom(8, 16),
    qkNorm: fc.boolean(),
    attentionBias: fc.boolean(),
    tieEmbeddings: fc.boolean(),
    threads: fc.constantFrom(1, 2),
    seed: fc.nat(1000),
    prompt: fc.integer({ min: 1, max: 40 }),
  });
  await fc.assert(
    fc.asyncProperty(arb, async ({ heads: [nHeads, nKvHeads], headDim, qkNorm, attentionBias, tieEmbeddings, threads, seed, prompt }) => {
      const cfg = makeConfig({ vocabSize: 37, dim: nHeads * headDim, nLayers: 2, nHeads, nKvHeads, headDim, qkNorm, attentionBias, tieEmbeddings, maxSeqLen: 160 });
      const weights = randomWeights(cfg, seed, 3);
      const step = await TargetSession.create(cfg, weights, { threads, attention: 'split' });
      const one = await TargetSession.create(cfg, weights, { threads, attention: 'split', oneToken: true });
      try {
        assert.ok(one.oneTokenGraph && !step.oneTokenGraph);
        const caches = [step, one].map(() => new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen).useValueLayout(step.valueLayout));
        const ids = Array.from({ length: prompt }, (_, i) => (seed + 5 * i) % cfg.vocabSize);
        for (const [s, cache] of [[step, caches[0]], [one, caches[1]]] as const) {
          const pre = await s.forward(cache, ids, ids.map((_, i) => i)); // a prompt: the step graph in both
          cache.append(pre.newKeys, pre.newValues, prompt);
        }
        // Greedy decoding past the cache's first stride (64 rows), one token a step.
        let next = ids[prompt - 1];
        for (let p = prompt; p < prompt + 90; p++) {
          const a = await step.forward(caches[0], [next], [p]);
          const b = await one.forward(caches[1], [next], [p]);
          assertSameBits(a, b, `position ${p}`);
          caches[0].append(a.newKeys, a.newValues, 1);
          caches[1].append(b.newKeys, b.newValues, 1);
          next = a.argmax[0];
        }
        assert.equal(one.stats.passes, step.stats.passes, 'the one-token passes count in the session stats');
      } finally {
        await step.dispose();
        await one.dispose();
      }
    }),
    // Always one layout with as many K/V heads as query heads (G = 1): there ORT would fuse the
    // query's scaling into the score product without the Reshape between them.
    { numRuns: 8, examples: [[{ heads: [2, 2], headDim: 8, qkNorm: false, attentionBias: false, tieEmbeddings: true, threads: 2, seed: 7, prompt: 5 }]] },
  );
});
