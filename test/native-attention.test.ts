/**
 * eaglet's own attention kernel (OnnxOpsOptions.nativeAttention: one eaglet.PastAttention node a
 * layer, run by the native addon's sessions) decodes as the one-token ORT graph does, to float32
 * rounding: its sums run in another order, so this pins closeness, not bits, over contexts that
 * grow the cache's stride (hidden columns the kernel skips), grouped heads, q/k norms, biases and
 * tied embeddings, at 1 and 2 threads. The addon is built on first use (g++, ORT's headers from
 * the npm registry: src/runtime/native-build.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { buildTargetModel } from '../src/onnx/model-graphs.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { createSession } from '../src/runtime/ort.ts';
import { TargetSession } from '../src/runtime/target.ts';

/** max |a - b| / (1 + max |a|) */
function relDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) (d = Math.max(d, Math.abs(a[i] - b[i]))), (m = Math.max(m, Math.abs(a[i])));
  return d / (1 + m);
}

test('the native attention kernel decodes as the one-token ORT graph, to float32 rounding', async () => {
  const arb = fc.record({
    heads: fc.constantFrom<[number, number]>([2, 2], [4, 2], [4, 1]),
    headDim: fc.constantFrom(8, 16, 32),
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
      const ort = await TargetSession.create(cfg, weights, { threads, attention: 'split', oneToken: true });
      const native = await TargetSession.create(cfg, weights, { threads, attention: 'split', oneToken: true, nativeAttention: true });
      try {
        const caches = [ort, native].map((s) => new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen).useValueLayout(s.valueLayout));
        const ids = Array.from({ length: prompt }, (_, i) => (seed + 5 * i) % cfg.vocabSize);
        for (const [s, cache] of [[ort, caches[0]], [native, caches[1]]] as const) {
          const pre = await s.forward(cache, ids, ids.map((_, i) => i));
          cache.append(pre.newKeys, pre.newValues, prompt);
        }
        // Both decode the ORT graph's tokens, past the cache's first stride (64 rows).
        let next = ids[prompt - 1], worst = 0;
        for (let p = prompt; p < prompt + 90; p++) {
          const a = await ort.forward(caches[0], [next], [p]);
          const b = await native.forward(caches[1], [next], [p]);
          for (const k of ['logits', 'features'] as const) worst = Math.max(worst, relDiff(a[k], b[k]));
          a.newValues.forEach((x, l) => (worst = Math.max(worst, relDiff(x, b.newValues[l]))));
          caches[0].append(a.newKeys, a.newValues, 1);
          caches[1].append(b.newKeys, b.newValues, 1);
          next = a.argmax[0];
        }
        assert.ok(worst < 2e-5, `max relative difference ${worst}`);
        assert.ok(worst > 0 || cfg.nLayers === 0, 'the native graph ran (its sums differ from ORT in the last bits somewhere)');
      } finally {
        await ort.dispose();
        await native.dispose();
      }
    }),
    { numRuns: 8 },
  );
});

test('a graph with eaglet.PastAttention opens only on the native addon, and only over transposed K/V', async () => {
  const cfg = makeConfig({ vocabSize: 37, dim: 16, nLayers: 1, nHeads: 2, nKvHeads: 2, headDim: 8, maxSeqLen: 64 });
  const weights = randomWeights(cfg, 1, 3);
  const model = buildTargetModel(cfg, weights, 'split', { oneToken: true, nativeAttention: true, valueLayout: 'transposed' });
  await assert.rejects(createSession(model, { threads: 1 }), /PastAttention|eaglet/);
  const s = await createSession(model, { threads: 1, native: true });
  await s.inner.release();
  assert.throws(() => buildTargetModel(cfg, weights, 'split', { oneToken: true, nativeAttention: true, valueLayout: 'rows' }), /transposed/);
});
