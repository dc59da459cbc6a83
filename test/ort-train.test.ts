/**
 * The two training backends agree: the ORT training graphs (training/ort) and tfjs autograd
 * (training/tf-ops.ts) give the same loss and gradients for every parameter tensor of the target
 * and of the draft head (and the LDLP / SpecDec++ heads' losses), on random tiny configs (GQA, tied embeddings, biases) and ragged draft
 * windows (padding on the ORT side, block-diagonal packing on the tfjs side).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { ModelConfig } from '../src/model/config.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { randomMlpWeights } from '../src/model/mlp.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { Rng } from '../src/util/rng.ts';
import type { PackedBatch } from '../training/dataset.ts';
import { OrtDraftSteps } from '../training/ort/draft-backend.ts';
import { OrtPredictorSteps } from '../training/ort/predictor-backend.ts';
import { OrtTargetSteps } from '../training/ort/target-backend.ts';
import { loadTf } from '../training/tf-backend.ts';
import { TfDraftSteps } from '../training/train-draft.ts';
import { TfPredictorSteps } from '../training/train-ldlp.ts';
import { TfTargetSteps } from '../training/train-target.ts';
import { arbConfig } from './support/model-arbs.ts';

const { tf, name } = await loadTf('auto');

function expectSameGrads(ort: { loss: number; grads: Map<string, Float32Array> }, tfj: { loss: number; grads: Map<string, Float32Array> }): void {
  assert.ok(Math.abs(ort.loss - tfj.loss) <= 1e-4 * Math.max(1, Math.abs(tfj.loss)), `loss ${ort.loss} vs ${tfj.loss}`);
  const bad: string[] = [];
  for (const [n, want] of tfj.grads) {
    const got = ort.grads.get(n)!;
    const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    if (!(worst <= 1e-6 + 2e-4 * scale)) bad.push(`${n}: max difference ${worst.toExponential(3)} at gradient scale ${scale.toExponential(3)}`);
  }
  assert.equal(ort.grads.size, tfj.grads.size);
  assert.deepEqual(bad, []);
}

test(`property: target gradients on ORT == tfjs (${name})`, async () => {
  await fc.assert(
    fc.asyncProperty(arbConfig, fc.integer({ min: 1, max: 3 }), fc.integer({ min: 2, max: 8 }), fc.nat(), async (cfg0, B, T, seed) => {
      const cfg: ModelConfig = { ...cfg0, maxSeqLen: 16 };
      const w = randomWeights(cfg, seed), rng = new Rng(seed);
      const ids = Int32Array.from({ length: B * T }, () => rng.int(cfg.vocabSize)), labels = Int32Array.from({ length: B * T }, () => rng.int(cfg.vocabSize));
      const ort = await OrtTargetSteps.create(cfg, B, T, 1);
      const tfs = new TfTargetSteps(tf, cfg, T, name === 'wasm');
      try {
        expectSameGrads(await ort.step(w, ids, labels), await tfs.step(w, ids, labels));
        assert.ok(Math.abs((await ort.loss(w, ids, labels)) - (await tfs.loss(w, ids, labels))) < 1e-4 * Math.log(cfg.vocabSize) + 1e-4);
      } finally {
        await ort.dispose();
        await tfs.dispose();
      }
    }),
    { numRuns: 10, seed: 21 },
  );
});

test(`property: draft-head gradients on ORT == tfjs (${name}), ragged windows, --ttt K`, async () => {
  await fc.assert(
    // K: training-time test steps (training/ttt.ts): padded windows on ORT, packed ones on tfjs.
    fc.asyncProperty(arbConfig, fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 3 }), fc.nat(), fc.integer({ min: 1, max: 3 }), async (cfg0, lengths, seed, K) => {
      const cfg: ModelConfig = { ...cfg0, maxSeqLen: 32 };
      const head = headConfigFor(cfg), hw = randomHeadWeights(cfg, seed), rng = new Rng(seed), d = cfg.dim;
      const n = lengths.reduce((a, b) => a + b, 0), W = Math.max(...lengths);
      const b: PackedBatch = {
        n, positions: Int32Array.from(lengths.flatMap((len) => Array.from({ length: len }, (_, k) => 2 + k))),
        tokens: Int32Array.from({ length: n }, () => rng.int(cfg.vocabSize)),
        inputFeatures: Float32Array.from({ length: n * d }, () => rng.normal()), targetFeatures: Float32Array.from({ length: n * d }, () => rng.normal()),
        labels: Int32Array.from({ length: n }, () => rng.int(cfg.vocabSize)), segment: Int32Array.from(lengths.flatMap((len, s) => Array(len).fill(s))),
      };
      const lossWeights = { featureWeight: 1, tokenWeight: 0.1 };
      const ort = await OrtDraftSteps.create({ config: cfg, weights: randomWeights(cfg, seed + 1) }, head, lengths.length + 1, W, lossWeights, 1, new Map(), K);
      const tfs = new TfDraftSteps(tf, { config: cfg, weights: randomWeights(cfg, seed + 1) }, head, lossWeights, new Map(), K);
      try {
        expectSameGrads(await ort.step(hw, b, b.inputFeatures), await tfs.step(hw, b, b.inputFeatures));
        const [eo, et] = [await ort.evaluate(hw, b), await tfs.evaluate(hw, b)];
        assert.ok(Math.abs(eo.featureLoss - et.featureLoss) < 1e-4, `feature loss ${eo.featureLoss} vs ${et.featureLoss}`);
        assert.equal(eo.k, et.k);
      } finally {
        await ort.dispose();
        await tfs.dispose();
      }
    }),
    { numRuns: 10, seed: 22 },
  );
});

test(`--ttt: windows of one row have no chain steps: K = 3 gives exactly K = 1's loss and gradients (ORT and ${name})`, async () => {
  const cfg: ModelConfig = { ...makeConfig({ vocabSize: 20, dim: 16, nLayers: 1, nHeads: 2, nKvHeads: 1 }), maxSeqLen: 32 };
  const head = headConfigFor(cfg), hw = randomHeadWeights(cfg, 4), rng = new Rng(4), d = cfg.dim, lengths = [1, 1, 1];
  const n = 3, target = { config: cfg, weights: randomWeights(cfg, 5) }, lossWeights = { featureWeight: 1, tokenWeight: 0.1 };
  const b: PackedBatch = {
    n, positions: Int32Array.from([4, 9, 0]), tokens: Int32Array.from({ length: n }, () => rng.int(cfg.vocabSize)),
    inputFeatures: Float32Array.from({ length: n * d }, () => rng.normal()), targetFeatures: Float32Array.from({ length: n * d }, () => rng.normal()),
    labels: Int32Array.from({ length: n }, () => rng.int(cfg.vocabSize)), segment: Int32Array.from(lengths.flatMap((len, s) => Array(len).fill(s))),
  };
  const runs = async (K: number) => {
    const ort = await OrtDraftSteps.create(target, head, 3, 2, lossWeights, 1, new Map(), K);
    try {
      return [await ort.step(hw, b, b.inputFeatures), await new TfDraftSteps(tf, target, head, lossWeights, new Map(), K).step(hw, b, b.inputFeatures)];
    } finally {
      await ort.dispose();
    }
  };
  const [one, three] = [await runs(1), await runs(3)];
  for (const k of [0, 1]) {
    assert.equal(three[k].loss, one[k].loss);
    for (const [n, g] of one[k].grads) assert.deepEqual(three[k].grads.get(n), g, n);
  }
});

test(`property: LDLP / SpecDec++ head gradients on ORT == tfjs (${name})`, async () => {
  await fc.assert(
    fc.asyncProperty(fc.constantFrom('classification' as const, 'regression' as const, 'bce' as const), fc.integer({ min: 1, max: 10 }), fc.integer({ min: 1, max: 8 }), fc.nat(), async (objective, inputDim, n, seed) => {
      const mlp = { inputDim, hidden: [6, 5], outputDim: objective === 'classification' ? 4 : 1 };
      const w = randomMlpWeights(mlp, seed), rng = new Rng(seed);
      const x = Float32Array.from({ length: n * inputDim }, () => rng.normal());
      const y = Float32Array.from({ length: n }, () => (objective === 'classification' ? rng.int(4) : objective === 'bce' ? rng.int(2) : rng.normal()));
      const rw = Float32Array.from({ length: n }, () => rng.next() / n);
      const ort = await OrtPredictorSteps.create(mlp, objective, n + 2, 1);
      const tfs = new TfPredictorSteps(tf, mlp, objective);
      try {
        expectSameGrads(await ort.step(w, x, y, rw), await tfs.step(w, x, y, rw));
      } finally {
        await ort.dispose();
      }
    }),
    { numRuns: 15, seed: 23 },
  );
});
