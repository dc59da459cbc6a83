/**
 * One model definition, two renderings: the tfjs rendering (training/tf-ops.ts) of
 * `llamaForward` and `eagleHeadForward` equals the ONNX rendering run by onnxruntime on random
 * weights, over random tiny configs (GQA, tied heads, biases, theta), with and without a
 * cached prefix, and with tree masks for the head.
 */
import { test } from 'node:test';
import fc from 'fast-check';
import type { Tensor } from '@tensorflow/tfjs';
import { draftLogits, eagleHeadForward, llamaForward } from '../src/model/definition.ts';
import { draftVocabWeights, headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { randomWeights } from '../src/model/random.ts';
import type { Weights } from '../src/model/weights.ts';
import { DraftSession } from '../src/runtime/draft.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { loadTf, type Tf } from '../training/tf-backend.ts';
import { additiveMask, intTensor, TfOps } from '../training/tf-ops.ts';
import { arbConfig, arbParents, arbTokens, depths, expectClose, mismatch, treeMask } from './support/model-arbs.ts';

const { tf } = await loadTf('auto');
// float32 on both sides, different summation orders.
const ATOL = 2e-4, RTOL = 2e-3;

function tfWeights(w: Weights): Map<string, Tensor> {
  return new Map([...w].map(([n, t]) => [n, tf.tensor(t.data, t.shape)]));
}

const opsFor = (tf: Tf, ws: Map<string, Tensor>[]) =>
  new TfOps(tf, (n) => ws.find((w) => w.has(n))?.get(n) ?? (() => { throw new Error(`no weight ${n}`); })());

/** Causal mask of T new rows after P cached ones: [T, P + T]. */
const causalFrom = (P: number, T: number) => additiveMask(tf, T, P + T, (i, j) => j <= P + i);

test('property: tfjs llamaForward == ORT target forward (prefill, then a chunk on a cached prefix)', async () => {
  await fc.assert(
    fc.asyncProperty(
      arbConfig.chain((cfg) => fc.record({ cfg: fc.constant(cfg), prefix: arbTokens(cfg.vocabSize, 1, 8), chunk: arbTokens(cfg.vocabSize, 1, 6), seed: fc.nat() })),
      async ({ cfg, prefix, chunk, seed }) => {
        const weights = randomWeights(cfg, seed, 2);
        const session = await TargetSession.create(cfg, weights);
        const cache = new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen);
        const P = prefix.length, T = chunk.length;
        const ort1 = await session.forward(cache, prefix, prefix.map((_, i) => i));
        cache.append(ort1.newKeys, ort1.newValues, P);
        const ort2 = await session.forward(cache, chunk, chunk.map((_, i) => P + i));
        await session.dispose();

        const ws = tfWeights(weights);
        try {
          tf.tidy(() => {
            const ops = opsFor(tf, [ws]);
            const a = llamaForward(ops, cfg, { ids: intTensor(tf, prefix), positions: intTensor(tf, prefix.map((_, i) => i)), mask: causalFrom(0, P), past: null });
            const past = a.keys.map((k, l) => ({ keys: k, values: a.values[l] }));
            const b = llamaForward(ops, cfg, { ids: intTensor(tf, chunk), positions: intTensor(tf, chunk.map((_, i) => P + i)), mask: causalFrom(P, T), past });
            expectClose(
              mismatch('prefill logits', a.logits.dataSync(), ort1.logits, ATOL, RTOL),
              mismatch('prefill features', a.features.dataSync(), ort1.features, ATOL, RTOL),
              mismatch('layer 0 keys', a.keys[0].dataSync(), ort1.newKeys[0], ATOL, RTOL),
              mismatch('cached logits', b.logits.dataSync(), ort2.logits, ATOL, RTOL),
              mismatch('cached features', b.features.dataSync(), ort2.features, ATOL, RTOL),
            );
          });
        } finally {
          for (const t of ws.values()) t.dispose();
        }
      },
    ),
    { numRuns: 15, seed: 11 },
  );
});

test('property: tfjs eagleHeadForward == ORT draft head, with tree masks, full or reduced draft vocabulary', async () => {
  await fc.assert(
    fc.asyncProperty(
      arbConfig.chain((cfg) => fc.record({
        cfg: fc.constant(cfg), parents: arbParents(1, 7), seed: fc.nat(),
        vocab: fc.option(fc.uniqueArray(fc.integer({ min: 0, max: cfg.vocabSize - 1 }), { minLength: 1, maxLength: cfg.vocabSize - 1 }), { nil: undefined }),
      })).chain((r) =>
        fc.record({
          ...Object.fromEntries(Object.entries(r).map(([k, v]) => [k, fc.constant(v)])) as { [K in keyof typeof r]: fc.Arbitrary<(typeof r)[K]> },
          tokens: arbTokens(r.cfg.vocabSize, r.parents.length, r.parents.length),
          features: fc.float32Array({ minLength: r.parents.length * r.cfg.dim, maxLength: r.parents.length * r.cfg.dim, min: Math.fround(-3), max: Math.fround(3), noNaN: true }),
        }),
      ),
      async ({ cfg, parents, seed, tokens, features, vocab }) => {
        const weights = randomWeights(cfg, seed, 2);
        const head = headConfigFor(cfg, vocab?.length), headW = randomHeadWeights(cfg, seed + 1);
        if (vocab) for (const [n, t] of draftVocabWeights(cfg, weights, vocab)) headW.set(n, t);
        const sorted = vocab ? [...vocab].sort((a, b) => a - b) : null, N = vocab?.length ?? cfg.vocabSize;
        const draftId = (id: number): number => (sorted ? sorted.indexOf(id) : id);
        const T = parents.length, positions = depths(parents).map((d) => 3 + d), tree = treeMask(parents);
        const session = await DraftSession.create(head, headW, cfg, weights, { topK: 3 });
        const ort = await session.forward(new KVCache(1, head.nKvHeads, head.headDim, 16), tokens, features, positions, tree);
        await session.dispose();

        const ws = [tfWeights(headW), tfWeights(weights)];
        try {
          tf.tidy(() => {
            const ops = opsFor(tf, ws);
            const mask = additiveMask(tf, T, T, (i, j) => tree[i * T + j] === 1);
            const out = eagleHeadForward(ops, head, tf.tensor2d(features, [T, cfg.dim]), { ids: intTensor(tf, tokens), positions: intTensor(tf, positions), mask, past: null });
            const logp = tf.logSoftmax(draftLogits(ops, head, cfg, out.hidden)).dataSync(); // [T, N]
            const k = ort.topkIds.length / T;
            const picked = Array.from(ort.topkIds, (id, i) => logp[Math.floor(i / k) * N + draftId(id)]);
            expectClose(mismatch('hidden', out.hidden.dataSync(), ort.hidden, ATOL, RTOL), mismatch('top-k log-probs', picked, ort.topkLogProbs, ATOL, RTOL));
          });
        } finally {
          for (const w of ws) for (const t of w.values()) t.dispose();
        }
      },
    ),
    { numRuns: 15, seed: 12 },
  );
});
