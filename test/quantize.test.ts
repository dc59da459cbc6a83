/**
 * Weight-only quantization of the draft head (src/model/quantize.ts, rendered as ORT's
 * MatMulNBits): the packing round-trips within half a quantization step, and the quantized ORT
 * draft head equals the float64 reference run on the dequantized weights (fp32 compute,
 * accuracy_level 0), full or reduced vocabulary; with int8 activations (accuracy_level 4, the
 * default) it stays close.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { draftVocabWeights, headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { blockFor, dense, dequantizeWeight, quantizeTarget, quantizeWeight } from '../src/model/quantize.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { EMBEDDING, type Weights } from '../src/model/weights.ts';
import { DraftSession } from '../src/runtime/draft.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { Rng } from '../src/util/rng.ts';
import { referenceHeadForward, visibility } from './support/reference.ts';
import { expectClose, mismatch } from './support/model-arbs.ts';

test('property: quantize -> dequantize is within half a step of every weight, 8 and 4 bits', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 6 }), fc.constantFrom(16, 32, 64), fc.constantFrom(4, 8), fc.integer({ min: 1, max: 4 }), fc.nat(), (n, block, bits, blocks, seed) => {
      const rng = new Rng(seed), k = block * blocks;
      const w = { shape: [n, k], data: Float32Array.from({ length: n * k }, () => rng.normal() * (rng.next() < 0.1 ? 0 : 1)) };
      const q = { bits: bits as 4 | 8, blockSize: block };
      const back = dequantizeWeight(quantizeWeight(w, q), q);
      const qmax = 2 ** (bits - 1) - 1;
      for (let r = 0; r < n; r++)
        for (let b = 0; b < blocks; b++) {
          let amax = 0;
          for (let j = 0; j < block; j++) amax = Math.max(amax, Math.abs(w.data[r * k + b * block + j]));
          for (let j = 0; j < block; j++) {
            const i = r * k + b * block + j;
            // Half a step, plus float32's rounding: the stored scale carries a relative error of
            // 2^-24, times |q| <= qmax (so <= amax 2^-24), and the product q * scale another
            // 2^-24 |w|. A relative 1e-6 slack was too tight for that (seed 989821208, 8 bits: 1 + 6.7e-6).
            assert.ok(Math.abs(back.data[i] - w.data[i]) <= (amax / qmax) * 0.5 + amax * 2 ** -22 + 1e-12, `[${r}, ${b * block + j}] ${w.data[i]} -> ${back.data[i]}`);
          }
        }
    }),
    { numRuns: 60, examples: [[2, 64, 8, 3, 989821208]] },
  );
  assert.equal(blockFor(768, 128), 128);
  assert.equal(blockFor(96, 128), 32);
  assert.equal(blockFor(24, 128), 0);
});

/** `w` with every quantizable Linear weight replaced by its dequantized form (what MatMulNBits computes with). */
function dequantized(w: Weights, names: (n: string) => boolean, bits: 4 | 8, maxBlock: number): Weights {
  const out = new Map(w);
  for (const [n, t] of w) {
    const block = t.shape.length === 2 ? blockFor(t.shape[1], maxBlock) : 0;
    if (names(n) && block > 0) out.set(n, dequantizeWeight(quantizeWeight(t, { bits, blockSize: block }), { bits, blockSize: block }));
  }
  return out;
}

test('property: quantized ORT draft head == float64 reference on dequantized weights (fp32 compute), full or reduced vocabulary', async () => {
  const c = makeConfig({ vocabSize: 40, dim: 32, nLayers: 1, nHeads: 4, nKvHeads: 2, hiddenDim: 48, maxSeqLen: 64 });
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(4, 8), fc.constantFrom(16, 32), fc.boolean(), fc.integer({ min: 1, max: 6 }), fc.nat(), async (bits, maxBlock, reduced, T, seed) => {
      const tw = randomWeights(c, seed, 2), rng = new Rng(seed);
      const vocab = reduced ? [1, 5, 9, 13, 20, 21, 30, 39] : undefined;
      const head = headConfigFor(c, vocab?.length), hw = randomHeadWeights(c, seed + 1);
      if (vocab) for (const [n, t] of draftVocabWeights(c, tw, vocab)) hw.set(n, t);
      const ids = Array.from({ length: T }, () => rng.int(c.vocabSize)), pos = ids.map((_, i) => i);
      const feats = Float32Array.from({ length: T * c.dim }, () => rng.normal());
      const q = { bits: bits as 4 | 8, blockSize: maxBlock };
      const s = await DraftSession.create(head, hw, c, tw, { topK: 3, quantize: { ...q, accuracyLevel: 0 } });
      try {
        const o = await s.forward(new KVCache(1, head.nKvHeads, head.headDim, 64), ids, feats, pos);
        const linear = (n: string) => n.endsWith('.weight') && !n.includes('norm') && n !== 'model.embed_tokens.weight';
        const ref = referenceHeadForward(head, dequantized(hw, linear, q.bits, maxBlock), c, dequantized(tw, (n) => n === 'lm_head.weight', q.bits, maxBlock), ids, feats, pos, visibility(0, T));
        const N = vocab?.length ?? c.vocabSize, k = o.topkIds.length / T;
        const draftId = (id: number) => (vocab ? vocab.indexOf(id) : id);
        const picked = Array.from(o.topkIds, (id, i) => ref.logProbs[Math.floor(i / k) * N + draftId(id)]);
        expectClose(mismatch('hidden', o.hidden, ref.hidden), mismatch('top-k log-probs at ids', o.topkLogProbs, picked));
      } finally {
        await s.dispose();
      }
    }),
    { numRuns: 20 },
  );
});

test('example: int8 activations (accuracy_level 4, the default) stay within 5% of the fp32-compute result', async () => {
  const c = makeConfig({ vocabSize: 64, dim: 64, nLayers: 1, nHeads: 4, hiddenDim: 128, maxSeqLen: 64 });
  const tw = randomWeights(c, 3, 2), hw = randomHeadWeights(c, 4), head = headConfigFor(c), rng = new Rng(9);
  const ids = [3, 8, 13, 21, 34], pos = ids.map((_, i) => i), feats = Float32Array.from({ length: 5 * c.dim }, () => rng.normal());
  const run = async (accuracyLevel: number) => {
    const s = await DraftSession.create(head, hw, c, tw, { topK: 4, quantize: { bits: 8, blockSize: 32, accuracyLevel } });
    try {
      return await s.forward(new KVCache(1, head.nKvHeads, head.headDim, 64), ids, feats, pos);
    } finally {
      await s.dispose();
    }
  };
  const exact = await run(0), fast = await run(4);
  let diff = 0, norm = 0;
  for (let i = 0; i < exact.hidden.length; i++) (diff += (exact.hidden[i] - fast.hidden[i]) ** 2), (norm += exact.hidden[i] ** 2);
  assert.ok(Math.sqrt(diff / norm) < 0.05, `relative error ${Math.sqrt(diff / norm)}`);
  assert.ok(Math.sqrt(diff / norm) > 0, 'accuracy_level 4 should differ from fp32 compute (else the option is not applied)');
});

test('property: ORT draft head over a quantized target (embedding table and LM head held quantized, tied or untied) == float64 reference on the dequantized weights', async () => {
  await fc.assert(
    fc.asyncProperty(fc.constantFrom<4 | 8>(4, 8), fc.constantFrom(16, 32), fc.boolean(), fc.integer({ min: 1, max: 6 }), fc.nat(), async (bits, blockSize, tie, T, seed) => {
      const c = makeConfig({ vocabSize: 40, dim: 32, nLayers: 1, nHeads: 4, nKvHeads: 2, hiddenDim: 48, maxSeqLen: 64, tieEmbeddings: tie });
      const q = { bits, blockSize }, tw = quantizeTarget(c, randomWeights(c, seed, 2), q), rng = new Rng(seed);
      assert.ok(tw.get(EMBEDDING)!.quant);
      const head = headConfigFor(c), hw = randomHeadWeights(c, seed + 1);
      const ids = Array.from({ length: T }, () => rng.int(c.vocabSize)), pos = ids.map((_, i) => i);
      const feats = Float32Array.from({ length: T * c.dim }, () => rng.normal());
      const s = await DraftSession.create(head, hw, c, tw, { topK: 3, quantize: { ...q, accuracyLevel: 0 } });
      try {
        const o = await s.forward(new KVCache(1, head.nKvHeads, head.headDim, 64), ids, feats, pos);
        // The reference: the head's own Linear weights quantized as the session does, the target's tensors dequantized.
        const linear = (n: string) => n.endsWith('.weight') && !n.includes('norm') && n !== EMBEDDING;
        const target = new Map([...tw].map(([n, t]) => [n, dense(t)]));
        if (tie) target.set('lm_head.weight', target.get(EMBEDDING)!);
        const ref = referenceHeadForward(head, dequantized(hw, linear, bits, blockSize), { ...c, tieEmbeddings: false }, target, ids, feats, pos, visibility(0, T));
        const k = o.topkIds.length / T;
        const picked = Array.from(o.topkIds, (id, i) => ref.logProbs[Math.floor(i / k) * c.vocabSize + id]);
        expectClose(mismatch('hidden', o.hidden, ref.hidden), mismatch('top-k log-probs at ids', o.topkLogProbs, picked));
      } finally {
        await s.dispose();
      }
    }),
    { numRuns: 16 },
  );
});
