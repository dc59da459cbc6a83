/**
 * Cost-scaled fixtures (src/model/cost-scale.ts): the trained pair embedded in a larger shape
 * computes the same logits, features and draft proposals, so greedy output, plain and
 * speculative, equals the original's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadGenerator } from '../src/api.ts';
import { COMMANDS } from '../src/cli/commands.ts';
import { DEFAULT_PATHS, defaultParts } from '../src/default-model.ts';
import { loadDraftHead } from '../src/io/draft-head-io.ts';
import { loadModel } from '../src/load-model.ts';
import { loadPredictor } from '../src/io/predictor-io.ts';
import { scaleHead, scaleProblem, scaleTarget, type ScaleShape } from '../src/model/cost-scale.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { mlpForward, PlainOps } from '../src/model/mlp.ts';
import { randomWeights } from '../src/model/random.ts';
import { DraftSession } from '../src/runtime/draft.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { tinyConfig } from './support/models.ts';

const maxAbsDiff = (a: Float32Array, b: Float32Array, width: number, scaledWidth: number, rows: number): number => {
  let m = 0;
  for (let r = 0; r < rows; r++) for (let c = 0; c < width; c++) m = Math.max(m, Math.abs(a[r * width + c] - b[r * scaledWidth + c]));
  return m;
};

test('a scaled random pair computes the original logits, features and draft top-k; greedy output is unchanged', async () => {
  await fc.assert(
    fc.asyncProperty(
      tinyConfig(), fc.integer({ min: 0, max: 1e6 }), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 24 }),
      fc.option(fc.integer({ min: 1, max: 40 }), { nil: undefined }),
      async (cfg, seed, extraGroups, extraLayers, extraUnits, headUnits) => {
        const g = cfg.nHeads / cfg.nKvHeads;
        const shape: ScaleShape = { dim: cfg.dim + extraGroups * g * cfg.headDim, nLayers: cfg.nLayers + extraLayers, hiddenDim: cfg.hiddenDim + extraUnits };
        assert.equal(scaleProblem(cfg, shape), null);
        const model = { config: cfg, weights: randomWeights(cfg, seed, 3), source: 'hf' as const };
        // A head of the target's SwiGLU width, or of its own (`train-draft --intermediate`).
        const head = { config: headConfigFor(cfg, undefined, headUnits), weights: randomHeadWeights(cfg, seed + 1, undefined, headUnits) };
        const big = scaleTarget(cfg, model.weights, shape);
        const bigHead = scaleHead(head.config, head.weights, cfg, shape);
        assert.equal(big.config.nHeads * big.config.headDim, shape.dim);
        assert.equal(big.config.nHeads / big.config.nKvHeads, g, 'GQA group size kept');
        const headMlp = headUnits === undefined || headUnits === cfg.hiddenDim ? shape.hiddenDim : Math.max(headUnits, Math.round((headUnits * shape.hiddenDim) / cfg.hiddenDim));
        assert.equal(bigHead.config.hiddenDim, headMlp, 'the head\'s MLP grows in proportion to the target\'s');

        // One causal pass of 5 tokens: logits equal, features equal on the original width, zero beyond.
        const ids = [1, 2, 3, 4, 5].map((t) => t % cfg.vocabSize), pos = [0, 1, 2, 3, 4];
        const [t1, t2] = await Promise.all([TargetSession.create(cfg, model.weights, { threads: 1 }), TargetSession.create(big.config, big.weights, { threads: 1 })]);
        const [d1, d2] = await Promise.all([
          DraftSession.create(head.config, head.weights, cfg, model.weights, { threads: 1, topK: 3 }),
          DraftSession.create(bigHead.config, bigHead.weights, big.config, big.weights, { threads: 1, topK: 3 }),
        ]);
        try {
          const a = await t1.forward(new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, 16), ids, pos);
          const b = await t2.forward(new KVCache(shape.nLayers, big.config.nKvHeads, cfg.headDim, 16), ids, pos);
          assert.ok(maxAbsDiff(a.logits, b.logits, cfg.vocabSize, cfg.vocabSize, 5) < 1e-3, 'logits');
          assert.ok(maxAbsDiff(a.features, b.features, cfg.dim, shape.dim, 5) < 1e-4, 'features');
          for (let r = 0; r < 5; r++) for (let c = cfg.dim; c < shape.dim; c++) assert.equal(b.features[r * shape.dim + c], 0);
          const featBig = b.features; // padded features of the same rows
          const x = await d1.forward(new KVCache(1, head.config.nKvHeads, head.config.headDim, 16), ids, a.features, pos);
          const y = await d2.forward(new KVCache(1, bigHead.config.nKvHeads, bigHead.config.headDim, 16), ids, featBig, pos);
          assert.ok(maxAbsDiff(x.hidden, y.hidden, cfg.dim, shape.dim, 5) < 1e-4, 'draft hidden');
          assert.ok(maxAbsDiff(x.topkLogProbs, y.topkLogProbs, 3, 3, 5) < 1e-3, 'draft log-probs');
        } finally {
          await Promise.all([t1.dispose(), t2.dispose(), d1.dispose(), d2.dispose()]);
        }

        // Greedy generation, plain and speculative, on both.
        const tree = { topK: 3, maxDepth: 4, totalTokens: 8 };
        const small = await loadGenerator({ model, draft: head, tree, threads: 1 });
        const scaled = await loadGenerator({ model: { ...big, source: 'hf' }, draft: bigHead, tree, threads: 1 });
        const scaledPlain = await loadGenerator({ model: { ...big, source: 'hf' }, threads: 1 });
        try {
          const prompt = [3, 1, 4, 1, 5].map((t) => t % cfg.vocabSize);
          const o = await small.generate(prompt, { maxNewTokens: 24, stopAtEos: false });
          const s = await scaled.generate(prompt, { maxNewTokens: 24, stopAtEos: false });
          const p = await scaledPlain.generate(prompt, { maxNewTokens: 24, stopAtEos: false });
          assert.deepEqual(p.ids, o.ids, 'scaled plain == original');
          assert.deepEqual(s.ids, o.ids, 'scaled speculative == original');
        } finally {
          await Promise.all([small.dispose(), scaled.dispose(), scaledPlain.dispose()]);
        }
      },
    ),
    { numRuns: 12, seed: 11 },
  );
});

test('scaleProblem refuses shapes that cannot hold the model', () => {
  const cfg = fc.sample(tinyConfig(), { seed: 1, numRuns: 1 })[0];
  assert.match(scaleProblem(cfg, { dim: cfg.dim - 1, nLayers: cfg.nLayers, hiddenDim: cfg.hiddenDim })!, /--dim/);
  assert.match(scaleProblem(cfg, { dim: cfg.dim, nLayers: cfg.nLayers - 1 || 0, hiddenDim: cfg.hiddenDim })!, /--layers/);
  assert.match(scaleProblem(cfg, { dim: cfg.dim, nLayers: cfg.nLayers, hiddenDim: cfg.hiddenDim - 1 })!, /--intermediate/);
  assert.match(scaleProblem(cfg, { dim: cfg.dim + 1, nLayers: cfg.nLayers, hiddenDim: cfg.hiddenDim })!, /multiple of the head width/);
});

test('eaglet cost-scale on the embedded default pair: files load, greedy output and tau equal the original pair', { skip: !defaultParts().ldlp && 'no data/default' }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'eaglet-cost-scale-'));
  try {
    await COMMANDS['cost-scale'].run(['--dim', '192', '--layers', '9', '--intermediate', '400', '--out', out]);
    const orig = await loadModel(DEFAULT_PATHS.target);
    const big = await loadModel(join(out, 'target'));
    assert.equal(big.config.dim, 192);
    assert.equal(big.config.nLayers, 9);
    assert.ok(big.tokenizer, 'the tokenizer is copied');
    loadDraftHead(join(out, 'head'), big.config);
    // The rewired LDLP predicts what the original predicts.
    const p0 = loadPredictor(DEFAULT_PATHS.ldlp, 'ldlp', orig.config, 8), p1 = loadPredictor(join(out, 'ldlp'), 'ldlp', big.config, 8);
    const x0 = new Float32Array(2 * 128).map((_, i) => Math.sin(i)), x1 = new Float32Array(2 * 192);
    x1.set(x0.subarray(0, 128), 0);
    x1.set(x0.subarray(128), 192);
    const y0 = mlpForward(new PlainOps(p0.weights), p0.config.mlp, { shape: [1, 256], data: x0 }).data;
    const y1 = mlpForward(new PlainOps(p1.weights), p1.config.mlp, { shape: [1, 384], data: x1 }).data;
    y0.forEach((v, i) => assert.ok(Math.abs(v - y1[i]) < 1e-4, `ldlp output ${i}`));

    const tree = { topK: 4, maxDepth: 6, totalTokens: 16 };
    const a = await loadGenerator({ model: orig, draft: DEFAULT_PATHS.draft, tree, threads: 1 });
    const b = await loadGenerator({ model: big, draft: join(out, 'head'), tree, threads: 1 });
    try {
      for (const prompt of ['export declare function', 'interface Map<K, V> {']) {
        const x = await a.generate(prompt, { maxNewTokens: 40 });
        const y = await b.generate(prompt, { maxNewTokens: 40 });
        assert.deepEqual(y.ids, x.ids, prompt);
        assert.equal(y.stats.tau, x.stats.tau, `${prompt}: same acceptance`);
      }
    } finally {
      await a.dispose();
      await b.dispose();
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
