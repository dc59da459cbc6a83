/**
 * DraftSession (ONNX rendering of eagleHeadForward on ORT) against the float64 reference head,
 * with a committed prefix in its cache and tree masks over the new rows; plus the head's
 * checkpoint layout helpers.
 *
 * Tolerance: |ort - ref| <= 1e-4 + 1e-4 * |ref|, as in target-forward.test.ts.
 */
import type { AttentionMode } from '../src/onnx/ops.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { ModelConfig } from '../src/model/config.ts';
import {
  draftVocabWeights, headConfigFor, headConfigFromJson, headConfigToJson, headShapes, randomHeadWeights, validateHeadWeights, type HeadConfig,
} from '../src/model/draft-head.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { tensor, type Weights } from '../src/model/weights.ts';
import { Rng } from '../src/util/rng.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadDraftHead, saveDraftHead } from '../src/io/draft-head-io.ts';
import { readSafetensorsHeader } from '../src/io/safetensors.ts';
import { DraftSession } from '../src/runtime/draft.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { referenceHeadForward, visibility } from './support/reference.ts';
import { arbConfig, arbParents, arbTokens, depths, expectClose, mismatch, MAX_SEQ, treeMask } from './support/model-arbs.ts';

const RUNS = 40;
const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

/**
 * A random head for `target`, with q/k/v biases when `bias`, a draft vocabulary `vocab` (target
 * ids) when given, and a SwiGLU width `units` of its own when given (else the target's).
 */
function randomHead(target: ModelConfig, tw: Weights, seed: number, bias: boolean, vocab?: number[], units?: number): { head: HeadConfig; weights: Weights } {
  const head = { ...headConfigFor(target, vocab?.length, units), attentionBias: bias };
  const weights = randomHeadWeights(target, seed, undefined, units);
  if (vocab) for (const [n, t] of draftVocabWeights(target, tw, vocab)) weights.set(n, t);
  const rng = new Rng(seed + 1);
  for (const [name, shape] of headShapes(head))
    if (!weights.has(name)) weights.set(name, tensor(shape, Float32Array.from({ length: shape[0] }, () => 0.1 * rng.normal())));
  return { head, weights };
}

const randomFeatures = (rows: number, d: number, rng: Rng): Float32Array => Float32Array.from({ length: rows * d }, () => rng.normal());

test('property: ORT draft head equals the float64 reference, with a cached prefix and a tree, full or reduced vocabulary, any SwiGLU width', async () => {
  const arb = arbConfig.chain((c) =>
    fc.record({
      c: fc.constant(c), prefix: arbTokens(c.vocabSize, 0, 6), parents: arbParents(1, 10), nodeIds: arbTokens(c.vocabSize, 10, 10), bias: fc.boolean(), topK: fc.integer({ min: 1, max: 10 }),
      // A reduced draft vocabulary: a random proper subset of target ids (any size, even below top-k).
      vocab: fc.option(fc.uniqueArray(fc.integer({ min: 0, max: c.vocabSize - 1 }), { minLength: 1, maxLength: c.vocabSize - 1 }), { nil: undefined }),
      units: fc.option(fc.integer({ min: 1, max: 24 }), { nil: undefined }),
    }),
  );
  await fc.assert(
    fc.asyncProperty(arb, fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constantFrom<AttentionMode>('split', 'fused'), async ({ c, prefix, parents, nodeIds, bias, topK, vocab, units }, seed, attention) => {
      const tw = randomWeights(c, seed, 2), { head, weights } = randomHead(c, tw, seed, bias, vocab, units), rng = new Rng(seed);
      const P = prefix.length, n = parents.length, V = vocab?.length ?? c.vocabSize, d = c.dim;
      // Draft id of each target id (ascending target ids are draft ids 0..N-1), -1 outside the vocabulary.
      const sorted = vocab ? [...vocab].sort((a, b) => a - b) : null;
      const draftId = (id: number): number => (sorted ? sorted.indexOf(id) : id);
      const tokens = nodeIds.slice(0, n), positions = depths(parents).map((x) => P + x);
      const prefixFeatures = randomFeatures(P, d, rng), nodeFeatures = randomFeatures(n, d, rng);

      const refPrefix = referenceHeadForward(head, weights, c, tw, prefix, prefixFeatures, range(0, P), visibility(0, P));
      const ref = referenceHeadForward(head, weights, c, tw, tokens, nodeFeatures, positions, visibility(P, n, parents), { key: refPrefix.key, value: refPrefix.value });

      const s = await DraftSession.create(head, weights, c, tw, { topK, attention });
      try {
        const cache = new KVCache(1, head.nKvHeads, head.headDim, MAX_SEQ, 4);
        if (P > 0) {
          const o = await s.forward(cache, prefix, prefixFeatures, range(0, P));
          expectClose(mismatch('prefix hidden', o.hidden, refPrefix.hidden));
          cache.append(o.newKeys, o.newValues, P);
        }
        const o = await s.forward(cache, tokens, nodeFeatures, positions, treeMask(parents));
        expectClose(mismatch('hidden', o.hidden, ref.hidden), mismatch('keys', o.newKeys[0], ref.key), mismatch('values', o.newValues[0], ref.value));
        const k = Math.min(topK, V);
        assert.equal(o.topkIds.length, n * k);
        for (let i = 0; i < n; i++) {
          const lp = ref.logProbs.subarray(i * V, (i + 1) * V);
          const best = Float64Array.from(lp).sort().reverse().subarray(0, k);
          const got = o.topkLogProbs.subarray(i * k, (i + 1) * k), ids = o.topkIds.subarray(i * k, (i + 1) * k);
          // Values are the k largest (robust to near-ties swapping ids); each id carries its own log-prob.
          for (const id of ids) assert.ok(draftId(id) >= 0, `drafted target id ${id} is outside the draft vocabulary`);
          expectClose(mismatch(`row ${i} top-k log-probs`, got, best), mismatch(`row ${i} log-probs at ids`, got, Array.from(ids, (id) => lp[draftId(id)])));
          assert.equal(new Set(ids).size, k);
        }
      } finally {
        await s.dispose();
      }
    }),
    { numRuns: RUNS },
  );
});

test('example: the random head drafts peaked distributions from real target features', async () => {
  const c = makeConfig({ vocabSize: 64, dim: 32, nLayers: 2, nHeads: 4, maxSeqLen: MAX_SEQ });
  const tw = randomWeights(c, 3, 2);
  const target = await TargetSession.create(c, tw);
  const draft = await DraftSession.create(headConfigFor(c), randomHeadWeights(c, 5), c, tw, { topK: 1 });
  try {
    const ids = [1, 7, 22, 40, 3, 9, 17, 50];
    const t = await target.forward(new KVCache(c.nLayers, c.nKvHeads, c.headDim, MAX_SEQ), ids, range(0, 8));
    // Row i: token i+1 with the target's feature at i.
    const o = await draft.forward(new KVCache(1, c.nKvHeads, c.headDim, MAX_SEQ), ids.slice(1), t.features, range(0, 7));
    const meanTop1 = o.topkLogProbs.reduce((a, b) => a + Math.exp(b), 0) / 7;
    assert.ok(meanTop1 > 4 / c.vocabSize, `mean top-1 probability ${meanTop1} is close to uniform (${1 / c.vocabSize})`);
  } finally {
    await target.dispose();
    await draft.dispose();
  }
});

test('example: head config.json round-trips, and bad heads are named', async () => {
  const c = makeConfig({ vocabSize: 40, dim: 16, nLayers: 2, nHeads: 4, nKvHeads: 2, ropeTheta: 5e5 });
  const head = headConfigFor(c);
  assert.deepEqual(headConfigFromJson(headConfigToJson(head)), head);
  const narrow = headConfigFor(c, undefined, 7);
  assert.equal(headConfigToJson(narrow).intermediate_size, 7);
  assert.deepEqual(headConfigFromJson(headConfigToJson(narrow)), narrow);
  assert.throws(() => headConfigFromJson({ ...headConfigToJson(head), num_hidden_layers: 2 }), /num_hidden_layers must be 1/);
  assert.throws(() => headConfigFromJson({ ...headConfigToJson(head), hidden_size: 0 }), /hidden_size must be a positive integer/);

  const w = randomHeadWeights(c, 1);
  assert.equal(validateHeadWeights(head, w), null);
  assert.equal(w.get('fc.weight')!.shape.join(), '16,32');
  const bad = new Map(w);
  bad.set('fc.bias', tensor([15]));
  assert.match(validateHeadWeights(head, bad)!, /fc.bias has shape \[15\], config implies \[16\]/);
  const missing = new Map(w);
  missing.delete('layers.0.mlp.up_proj.weight');
  assert.match(validateHeadWeights(head, missing)!, /missing tensor layers.0.mlp.up_proj.weight/);
  await assert.rejects(DraftSession.create({ ...head, dim: 8 }, w, c, randomWeights(c, 1)), /head dim 8 does not match the target's 16/);
});

test('example: a reduced-vocabulary head saves in the EAGLE-3 layout (d2t I64, t2d BOOL, draft_vocab_size) and loads back', async () => {
  const c = makeConfig({ vocabSize: 40, dim: 16, nLayers: 1, nHeads: 4 });
  const tw = randomWeights(c, 2);
  const ids = [3, 0, 17, 39, 8];
  const head = headConfigFor(c, ids.length), w = randomHeadWeights(c, 1);
  for (const [n, t] of draftVocabWeights(c, tw, ids)) w.set(n, t);
  assert.equal(validateHeadWeights(head, w), null);
  assert.deepEqual(headConfigFromJson(headConfigToJson(head)), head);
  assert.equal(headConfigToJson(head).draft_vocab_size, 5);
  // vLLM reads a missing draft_vocab_size, or one equal to vocab_size, as the full vocabulary.
  assert.equal(headConfigFromJson({ ...headConfigToJson(head), draft_vocab_size: 40 }).draftVocabSize, undefined);

  const dir = mkdtempSync(join(tmpdir(), 'eaglet-head-'));
  try {
    saveDraftHead(dir, { config: head, weights: w });
    const hdr = readSafetensorsHeader(join(dir, 'model.safetensors')).entries;
    assert.deepEqual([hdr.get('d2t')!.dtype, hdr.get('d2t')!.shape], ['I64', [5]]);
    assert.deepEqual([hdr.get('t2d')!.dtype, hdr.get('t2d')!.shape], ['BOOL', [40]]);
    assert.deepEqual([hdr.get('lm_head.weight')!.dtype, hdr.get('lm_head.weight')!.shape], ['F32', [5, 16]]);
    const back = loadDraftHead(dir, c);
    assert.deepEqual(back.config, head);
    // target = draft + d2t[draft], ascending; lm_head rows are the target's rows of those ids.
    assert.deepEqual(Array.from(back.weights.get('d2t')!.data, (o, i) => i + o), [0, 3, 8, 17, 39]);
    assert.deepEqual(Array.from(back.weights.get('lm_head.weight')!.data.subarray(16 * 2, 16 * 3)), Array.from(tw.get('lm_head.weight')!.data.subarray(16 * 8, 16 * 9)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const off = new Map(w);
  off.set('d2t', tensor([5], Float32Array.from([0, 2, 7, 14, 35]))); // draft 2 -> 9, which t2d does not mark
  assert.match(validateHeadWeights(head, off)!, /t2d\[9\] is false/);
  await assert.rejects(DraftSession.create(headConfigFor(c, 40), w, c, tw), /draft_vocab_size 40 must be an integer in \[1, vocab_size 40\)/);
});
