/**
 * eaglet's own attention kernel (OnnxOpsOptions.nativeAttention: one eaglet.PastAttention node a
 * layer, run by the native addon's sessions) decodes as the one-token ORT graph does, to float32
 * rounding: its sums run in another order, so this pins closeness, not bits, over contexts that
 * grow the cache's stride (hidden columns the kernel skips), grouped heads, q/k norms, biases and
 * tied embeddings, at 1 and 2 threads. The addon is built on first use (g++, ORT's headers from
 * the npm registry: src/runtime/native-build.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { arbDecodeCase, decodeConfig } from './support/model-arbs.ts';
import { decodeSideBySide } from './support/side-by-side.ts';
import { buildTargetModel } from '../src/onnx/model-graphs.ts';
import { createSession } from '../src/runtime/ort.ts';
import { TargetSession } from '../src/runtime/target.ts';

// The kernel is AVX-512; on a CPU without it the addon refuses to build (one error line), so these skip there.
const avx512 = process.arch === 'x64' && existsSync('/proc/cpuinfo') && /\bavx512f\b/.test(readFileSync('/proc/cpuinfo', 'utf8'));
const skip = avx512 ? false : 'needs an x86-64 Linux CPU with AVX-512';

/** max |a - b| / (1 + max |a|) */
function relDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) (d = Math.max(d, Math.abs(a[i] - b[i]))), (m = Math.max(m, Math.abs(a[i])));
  return d / (1 + m);
}

test('the native attention kernel decodes as the one-token ORT graph, to float32 rounding', { skip }, async () => {
  await fc.assert(
    fc.asyncProperty(arbDecodeCase([8, 16, 32]), async (c) => {
      const cfg = decodeConfig(c), weights = randomWeights(cfg, c.seed, 3);
      const ort = await TargetSession.create(cfg, weights, { threads: c.threads, attention: 'split', oneToken: true });
      const native = await TargetSession.create(cfg, weights, { threads: c.threads, attention: 'split', oneToken: true, nativeAttention: true });
      try {
        let worst = 0;
        await decodeSideBySide(cfg, ort, native, c.seed, c.prompt, 90, (a, b) => {
          for (const k of ['logits', 'features'] as const) worst = Math.max(worst, relDiff(a[k], b[k]));
          a.newValues.forEach((x, l) => (worst = Math.max(worst, relDiff(x, b.newValues[l]))));
        });
        assert.ok(worst < 2e-5, `max relative difference ${worst}`);
        // Bit-equal everywhere would mean the ORT graph ran in both (the kernel sums in another order).
        assert.ok(worst > 0, 'the native kernel ran');
      } finally {
        await ort.dispose();
        await native.dispose();
      }
    }),
    { numRuns: 8 },
  );
});

test('a graph with eaglet.PastAttention opens only on the native addon, and only over transposed K/V', { skip }, async () => {
  const cfg = makeConfig({ vocabSize: 37, dim: 16, nLayers: 1, nHeads: 2, nKvHeads: 2, headDim: 8, maxSeqLen: 64 });
  const weights = randomWeights(cfg, 1, 3);
  const model = buildTargetModel(cfg, weights, 'split', { oneToken: true, nativeAttention: true, valueLayout: 'transposed' });
  await assert.rejects(createSession(model, { threads: 1 }), /PastAttention|eaglet/);
  const s = await createSession(model, { threads: 1, native: true });
  await s.inner.release();
  assert.throws(() => buildTargetModel(cfg, weights, 'split', { oneToken: true, nativeAttention: true, valueLayout: 'rows' }), /transposed/);
  const odd = makeConfig({ vocabSize: 37, dim: 12, nLayers: 1, nHeads: 2, nKvHeads: 2, headDim: 6, maxSeqLen: 64 });
  assert.throws(() => buildTargetModel(odd, randomWeights(odd, 1, 3), 'split', { oneToken: true, nativeAttention: true, valueLayout: 'transposed' }), /multiple of 8/);
});

test('the native kernel passes a NaN score on, as the graph\'s Softmax does', { skip }, async () => {
  const cfg = makeConfig({ vocabSize: 37, dim: 16, nLayers: 1, nHeads: 2, nKvHeads: 2, headDim: 8, maxSeqLen: 64 });
  const weights = randomWeights(cfg, 2, 3);
  const s = await TargetSession.create(cfg, weights, { threads: 1, attention: 'split', oneToken: true, nativeAttention: true });
  try {
    const cache = new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen).useValueLayout(s.valueLayout);
    const pre = await s.forward(cache, [1, 2, 3], [0, 1, 2]);
    pre.newKeys[0][0] = NaN; // one open past key of the first head
    cache.append(pre.newKeys, pre.newValues, 3);
    const out = await s.forward(cache, [4], [3]);
    assert.ok(Number.isNaN(out.features[0]), 'a NaN key makes the step NaN');
  } finally {
    await s.dispose();
  }
});
