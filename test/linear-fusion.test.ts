/**
 * The ONNX rendering fuses quantized Linear layers that read one input (q|k|v, gate|up) into one
 * MatMulNBits over the weights concatenated along N, then a Split (OnnxOpsOptions.fuseLinears).
 * Property: the fused target computes what the unfused one does, bit for bit (argmax, logits,
 * features and new K/V), on random small configs with biases, q/k norms, GQA and tied heads,
 * whose projections are large enough to be fused (FUSE_MIN_BYTES): 4 nodes a layer, not 7.
 *
 * Bit for bit, not within float32 rounding: MLAS computes an output column the same whatever N
 * it sits in, and a tolerance would not hold anyway, since a last-bit difference before a
 * Linear layer can move an int8-quantized activation (accuracy_level 4) by one step, and the
 * logits then differ by ~1e-3 (a bias added by an Add in one rendering and inside MatMulNBits
 * in the other did exactly that: fast-check seed -75102869, 2.8e-3).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { ModelConfig } from '../src/model/config.ts';
import { quantizeLinears, type WeightQuant } from '../src/model/quantize.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { buildTargetModel } from '../src/onnx/model-graphs.ts';

const arbConfig: fc.Arbitrary<ModelConfig> = fc
  .record({
    vocabSize: fc.integer({ min: 16, max: 48 }),
    nHeads: fc.constant(4),
    kvDiv: fc.constantFrom(1, 2),
    hiddenDim: fc.constantFrom(128, 192),
    nLayers: fc.integer({ min: 1, max: 2 }),
    tieEmbeddings: fc.boolean(),
    attentionBias: fc.boolean(),
    qkNorm: fc.boolean(),
  })
  .map(({ kvDiv, nHeads, ...r }) => makeConfig({ ...r, nHeads, nKvHeads: nHeads / kvDiv, headDim: 32, dim: 128, maxSeqLen: 64 }));

/** MatMulNBits nodes in an ONNX model: NodeProto.op_type (field 4) = "MatMulNBits". */
function matMulNBitsNodes(bytes: Uint8Array): number {
  const pat = Buffer.from([0x22, 11, ...Buffer.from('MatMulNBits')]), buf = Buffer.from(bytes);
  let n = 0;
  for (let i = buf.indexOf(pat); i >= 0; i = buf.indexOf(pat, i + 1)) n++;
  return n;
}

test('property: fused Linear layers (q|k|v, gate|up in one MatMulNBits) compute what separate ones do', async () => {
  await fc.assert(
    fc.asyncProperty(arbConfig, fc.record({ bits: fc.constantFrom<4 | 8>(4, 8), blockSize: fc.constantFrom(16, 32) }), fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: 6 }), async (cfg, q: WeightQuant, seed, T) => {
      const weights = quantizeLinears(cfg, randomWeights(cfg, seed, 1), q);
      const ids = Array.from({ length: T }, (_, i) => (seed + 7 * i) % cfg.vocabSize), pos = ids.map((_, i) => i);
      const nodes = [true, false].map((fuseLinears) => matMulNBitsNodes(buildTargetModel(cfg, weights, 'split', { fuseLinears }).bytes));
      assert.deepEqual(nodes, [4 * cfg.nLayers + 1, 7 * cfg.nLayers + 1]);
      const outs = [];
      for (const fuseLinears of [true, false]) {
        const s = await TargetSession.create(cfg, weights, { threads: 1, fuseLinears });
        try {
          outs.push(await s.forward(new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen), ids, pos));
        } finally {
          await s.dispose();
        }
      }
      const [a, b] = outs;
      const same = (x: Float32Array, y: Float32Array, what: string) => {
        assert.equal(x.length, y.length, what);
        for (let i = 0; i < x.length; i++) assert.ok(x[i] === y[i], `${what}[${i}]: fused ${x[i]} vs separate ${y[i]}`);
      };
      same(a.logits, b.logits, 'logits');
      same(a.features, b.features, 'features');
      a.newKeys.forEach((k, l) => same(k, b.newKeys[l], `keys ${l}`));
      a.newValues.forEach((v, l) => same(v, b.newValues[l], `values ${l}`));
      assert.deepEqual(a.argmax, b.argmax);
    }),
    { numRuns: 12 },
  );
});
