/**
 * The trained length policies: the MLP's three renderings agree; LDLP and SpecDec++ training
 * recover known relations; the policies keep speculation lossless and depths in bounds; round
 * logs round-trip; a predictor that does not fit the target is refused by name; and what the
 * predictor costs per round next to a draft pass (printed, not asserted).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import type { Tensor as TfTensor } from '@tensorflow/tfjs';
import { ConfigError } from '../src/errors.ts';
import { loadPredictor, outputDim, savePredictor, type Objective, type Predictor, type PredictorKind } from '../src/io/predictor-io.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { mlpForward, PlainOps, randomMlpWeights, type MlpConfig } from '../src/model/mlp.ts';
import { OnnxOps } from '../src/onnx/ops.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { EMBEDDING, type Weights } from '../src/model/weights.ts';
import { dense, QUANT, quantizeTarget } from '../src/model/quantize.ts';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { LdlpPolicy, PredictorRunner, treeBudget } from '../src/policies/ldlp.ts';
import type { LengthPolicy, RoundPlan, RoundState } from '../src/policies/policy.ts';
import { createPolicy } from '../src/policies/registry.ts';
import { SpecDecPolicy } from '../src/policies/specdecpp.ts';
import { DraftSession } from '../src/runtime/draft.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { createSession, f32, releaseSession } from '../src/runtime/ort.ts';
import { Rng } from '../src/util/rng.ts';
import { collectLengths, readRoundLogs } from '../training/lengths.ts';
import { loadTf } from '../training/tf-backend.ts';
import { TfOps } from '../training/tf-ops.ts';
import { inMemoryDataset, trainOnDataset, trainPredictor, TRAIN_PREDICTOR_DEFAULTS, type PredictorDataset } from '../training/train-ldlp.ts';
import { tinyConfig, tinyPair, treeShape } from './support/models.ts';

const { tf } = await loadTf('auto');
const tmp = mkdtempSync(join(tmpdir(), 'eaglet-ldlp-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

/** An ONNX session computing the MLP: x [T, in] -> y [T, out]. */
async function onnxMlp(cfg: MlpConfig, w: Weights) {
  const g = new GraphBuilder('mlp');
  const ops = new OnnxOps(g, (n) => w.get(n), 1);
  g.output(mlpForward(ops, cfg, g.input('x', 'float32', ['T', cfg.inputDim])), 'y', 'float32', ['T', cfg.outputDim]);
  return createSession(g.toModel({ opset: 23, irVersion: 11 }), { threads: 1 });
}

const arbMlp = fc.record({
  inputDim: fc.integer({ min: 1, max: 24 }),
  hidden: fc.array(fc.integer({ min: 1, max: 16 }), { minLength: 0, maxLength: 3 }),
  outputDim: fc.integer({ min: 1, max: 8 }),
});

test('property: the MLP rendered as plain TS, tfjs and ONNX (ORT) gives the same outputs', async () => {
  await fc.assert(
    fc.asyncProperty(arbMlp, fc.integer({ min: 1, max: 5 }), fc.nat(), async (cfg, rows, seed) => {
      const w = randomMlpWeights(cfg, seed);
      for (const t of w.values()) if (t.shape.length === 1) for (let i = 0; i < t.data.length; i++) t.data[i] = 0.3 * Math.sin(i + seed); // nonzero biases
      const rng = new Rng(seed + 1);
      const x = Float32Array.from({ length: rows * cfg.inputDim }, () => 2 * rng.normal()); // [rows, in]
      const plain = mlpForward(new PlainOps(w), cfg, { shape: [rows, cfg.inputDim], data: x }).data;
      const tfw = new Map([...w].map(([n, t]) => [n, tf.tensor(t.data, t.shape)] as const));
      const tfOut = tf.tidy(() => mlpForward(new TfOps(tf, (n) => tfw.get(n)!), cfg, tf.tensor2d(x, [rows, cfg.inputDim]) as TfTensor).dataSync());
      for (const t of tfw.values()) t.dispose();
      const s = await onnxMlp(cfg, w);
      const ortOut = (await s.inner.run({ x: f32(x, [rows, cfg.inputDim]) })).y.data as Float32Array;
      await releaseSession(s);
      for (let i = 0; i < plain.length; i++) {
        const tol = 1e-4 + 1e-4 * Math.abs(plain[i]);
        assert.ok(Math.abs(plain[i] - tfOut[i]) <= tol, `tfjs [${i}] ${tfOut[i]} vs plain ${plain[i]}`);
        assert.ok(Math.abs(plain[i] - ortOut[i]) <= tol, `ORT [${i}] ${ortOut[i]} vs plain ${plain[i]}`);
      }
    }),
    { numRuns: 25, seed: 7 },
  );
});

/** Synthetic rows: x = [feature (d), embedding (d)] ~ N(0, 1); `label` of x; 40 sequences. */
function synthetic(n: number, d: number, label: (x: Float32Array) => number, seed: number): PredictorDataset {
  const rng = new Rng(seed), w = 2 * d;
  const x = new Float32Array(n * w), y = new Float32Array(n), seq = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < w; j++) x[i * w + j] = rng.normal();
    y[i] = label(x.subarray(i * w, (i + 1) * w));
    seq[i] = i % 40;
  }
  return inMemoryDataset(x, y, seq, w);
}

test('LDLP training recovers a known depth-feature relation (classification and regression measured)', async () => {
  const d = 6, D = 5;
  // The accepted length grows with feature[0] and falls with the root embedding's first value.
  const ds = synthetic(3000, d, (x) => Math.min(D, Math.max(0, Math.round(2.5 + 1.5 * x[0] - 1.0 * x[d]))), 1);
  const seen: Record<string, { accuracy: number; error: number }> = {};
  for (const objective of ['classification', 'regression'] as Objective[]) {
    const r = await trainOnDataset(ds, d, D, { head: 'ldlp', out: join(tmp, `syn-${objective}`), objective, steps: 400, batch: 64, hidden: 32, seed: 1 });
    const m = r.final;
    seen[objective] = m;
    console.log(`# ldlp ${objective}: val exact ${m.accuracy.toFixed(3)} (chance ${m.baselineAccuracy.toFixed(3)}), MAE ${m.error.toFixed(3)} (constant ${m.baselineError.toFixed(3)}), ${r.rowsPerSecond.toFixed(0)} rows/s on ${r.backend}`);
    assert.ok(m.error < 0.5 * m.baselineError, `${objective}: MAE ${m.error} vs constant ${m.baselineError}`);
    assert.ok(m.accuracy > m.baselineAccuracy + 0.25, `${objective}: accuracy ${m.accuracy} vs chance ${m.baselineAccuracy}`);
    assert.equal(r.confusion!.flat().reduce((a, b) => a + b, 0), m.rows);
    // The saved files load back for a target of width d and predict what the trainer measured.
    const p = loadPredictor(join(tmp, `syn-${objective}`), 'ldlp', { dim: d }, D);
    assert.deepEqual(p.config, r.predictor.config);
  }
  assert.ok(Number.isFinite(seen.classification.error + seen.regression.error));
});

test('SpecDec++ head training recovers a known acceptance relation (weighted BCE)', async () => {
  const d = 6;
  const ds = synthetic(3000, d, (x) => (x[1] + 0.5 * x[d + 2] > -0.3 ? 1 : 0), 2);
  const r = await trainOnDataset(ds, d, 4, { head: 'specdec++', out: join(tmp, 'syn-specdec'), steps: 400, batch: 64, hidden: 32, seed: 1 });
  const m = r.final;
  console.log(`# specdec++: val accuracy ${m.accuracy.toFixed(3)} (chance ${m.baselineAccuracy.toFixed(3)}), Brier ${m.error.toFixed(3)} (constant ${m.baselineError.toFixed(3)})`);
  assert.ok(m.accuracy > 0.85 && m.error < 0.5 * m.baselineError);
});

/** A random predictor of `kind` for target width d and depth D. */
function randomPredictor(kind: PredictorKind, d: number, D: number, seed: number, objective: Objective = kind === 'ldlp' ? 'classification' : 'bce'): Predictor {
  const mlp = { inputDim: 2 * d, hidden: [8, 8], outputDim: outputDim(objective, D) };
  return { config: { format: 'eaglet-predictor', version: 1, kind, objective, dim: d, maxDepth: D, mlp }, weights: randomMlpWeights(mlp, seed) };
}

/** Wraps a policy and checks every plan against the round's bounds. */
class Bounded implements LengthPolicy {
  readonly name: string;
  depths: number[] = [];
  constructor(readonly inner: LengthPolicy, readonly totalTokens: number) {
    this.name = inner.name;
    if (inner.continueDrafting) this.continueDrafting = inner.continueDrafting.bind(inner);
  }
  continueDrafting?: LengthPolicy['continueDrafting'];
  plan(s: RoundState): RoundPlan {
    const p = this.inner.plan(s);
    assert.ok(Number.isInteger(p.depth) && p.depth >= 0 && p.depth <= s.maxDepth, `depth ${p.depth} outside [0, ${s.maxDepth}]`);
    assert.ok(p.totalTokens >= 0 && p.totalTokens <= this.totalTokens && (p.depth === 0 || p.totalTokens >= 1));
    this.depths.push(p.depth);
    return p;
  }
}

test('property: ldlp, ldlp+threshold and specdec++ keep speculation lossless with depths in bounds', async () => {
  const { ThresholdPolicy } = await import('../src/policies/threshold.ts');
  let depthsSeen = new Set<number>(), stops = 0;
  await fc.assert(
    fc.asyncProperty(tinyConfig(), fc.nat(1e6), treeShape, fc.integer({ min: 0, max: 2 }), fc.integer({ min: -1, max: 2 }), async (cfg, seed, tree, which, offset) => {
      const target = { config: cfg, weights: randomWeights(cfg, seed, 3) };
      const ldlp = (D: number) => randomPredictor('ldlp', cfg.dim, D, seed + 2);
      const inner =
        which === 0 ? new LdlpPolicy(ldlp(tree.maxDepth + 1), target, tree, { offset })
        : which === 1 ? new LdlpPolicy(ldlp(tree.maxDepth), target, tree, { offset }, new ThresholdPolicy(tree.totalTokens, { minConfidence: 0.2 }))
        : new SpecDecPolicy(randomPredictor('specdec++', cfg.dim, tree.maxDepth, seed + 3), target, tree, { threshold: 0.5 });
      const policy = new Bounded(inner, tree.totalTokens);
      const p = await tinyPair(cfg, seed, tree, policy);
      try {
        const ids = fc.sample(fc.array(fc.nat(cfg.vocabSize - 1), { minLength: 1, maxLength: 8 }), { seed, numRuns: 1 })[0];
        for (const opts of [{}, { temperature: 1, seed: seed + 1 }]) {
          const a = await p.ar.generate(ids, { ...opts, maxNewTokens: 24 });
          const s = await p.spec.generate(ids, { ...opts, maxNewTokens: 24 });
          assert.deepEqual(s.ids, a.ids);
        }
        policy.depths.forEach((x) => depthsSeen.add(x));
        if (inner instanceof SpecDecPolicy && inner.lastRejectProb > 0.5) stops++;
      } finally {
        await p.dispose();
      }
    }),
    { numRuns: 18, seed: 3 },
  );
  assert.ok(depthsSeen.size >= 2, `the policies should vary the depth, saw ${[...depthsSeen]}`);
  console.log(`# depths planned: ${[...depthsSeen].sort()}; specdec++ runs ending on a stop: ${stops}`);
});

test('collect-lengths --quantize: the rounds of the quantized pair, with its dequantized embeddings', async () => {
  const cfg = makeConfig({ vocabSize: 32, dim: 32, nLayers: 1, nHeads: 2, maxSeqLen: 64 });
  const model = { config: cfg, weights: randomWeights(cfg, 4, 3), source: 'hf' as const };
  const draft = { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, 5) };
  const rng = new Rng(11);
  const prompts = Array.from({ length: 4 }, () => Array.from({ length: 4 }, () => rng.int(32)));
  const out = join(tmp, 'rounds-q4.arrow');
  await collectLengths({ model, draft, tree: { topK: 1, maxDepth: 3, totalTokens: 3 }, prompts, maxNewTokens: 12, out, quantize: 'q4', threads: 1 });
  const data = readRoundLogs([out]), d = cfg.dim;
  const q4 = dense(quantizeTarget(cfg, model.weights, QUANT.q4).get(EMBEDDING)!).data, fp = model.weights.get(EMBEDDING)!.data;
  assert.ok(data.rows > 0);
  let differs = false;
  for (let i = 0; i < data.rows; i++) {
    const t = data.rootToken[i];
    assert.deepEqual(data.rootEmbedding.subarray(i * d, (i + 1) * d), q4.subarray(t * d, (t + 1) * d));
    differs ||= q4.subarray(t * d, (t + 1) * d).some((v, j) => v !== fp[t * d + j]);
  }
  assert.ok(differs, 'the q4 table is not the fp32 one');
});

test('collect-lengths: the round log round-trips; train-ldlp on it; registry-built policies from the files', async () => {
  const cfg = makeConfig({ vocabSize: 32, dim: 16, nLayers: 1, nHeads: 2, maxSeqLen: 96 });
  const model = { config: cfg, weights: randomWeights(cfg, 4, 3), source: 'hf' as const };
  const draft = { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, 5) };
  const tree = { topK: 2, maxDepth: 4, totalTokens: 8 };
  const rng = new Rng(9);
  const prompts = Array.from({ length: 12 }, () => Array.from({ length: 4 }, () => rng.int(32)));
  const out = join(tmp, 'rounds.arrow');
  const r = await collectLengths({ model, draft, tree, prompts, maxNewTokens: 30, out });
  const data = readRoundLogs([out]);
  const D = tree.maxDepth, d = cfg.dim;
  assert.equal(data.rows, r.sidecar.counts.rounds);
  assert.equal(new Set(data.seqId).size, prompts.length);
  assert.deepEqual(Array.from({ length: r.acceptedHistogram.length }, (_, a) => data.accepted.filter((x) => x === a).length), r.acceptedHistogram);
  const emb = model.weights.get('model.embed_tokens.weight')!.data;
  for (let i = 0; i < data.rows; i++) {
    assert.ok(data.accepted[i] <= data.depth[i] && data.depth[i] <= D);
    assert.deepEqual(data.rootEmbedding.subarray(i * d, (i + 1) * d), emb.subarray(data.rootToken[i] * d, (data.rootToken[i] + 1) * d));
    for (let t = 0; t < D; t++) {
      const flag = data.pathFlag[i * D + t];
      if (flag === 1) assert.ok(data.accepted[i] >= t + 1, 'an accepted best-path node lies within the accepted length');
      // Judged (flag >= 0) only when its prefix was accepted: the target accepted at least t tokens.
      if (flag >= 0) assert.ok(data.accepted[i] >= t, 'a node is judged only when its whole prefix was accepted');
      if (t >= D - 1) assert.equal(flag, -1, 'the policy never sees the last level');
    }
  }
  console.log(`# collected ${data.rows} rounds, accepted histogram ${r.acceptedHistogram}, ${r.roundsPerSecond.toFixed(0)} rounds/s`);

  const ldlpDir = join(tmp, 'ldlp'), specDir = join(tmp, 'specdec');
  await trainPredictor({ head: 'ldlp', logs: [out], out: ldlpDir, steps: 30, batch: 32, hidden: 8 });
  await trainPredictor({ head: 'specdec++', logs: [out], out: specDir, steps: 30, batch: 32, hidden: 8 });
  const ctx = { tree, target: model };
  for (const spec of [`ldlp:path=${ldlpDir}`, `ldlp+threshold:path=${ldlpDir}`, `specdec++:path=${specDir}`]) {
    const policy = createPolicy(spec, ctx);
    const p = await tinyPair(cfg, 4, tree, policy);
    try {
      const a = await p.ar.generate(prompts[0], { maxNewTokens: 20 });
      const s = await p.spec.generate(prompts[0], { maxNewTokens: 20 });
      assert.deepEqual(s.ids, a.ids, spec);
    } finally {
      await p.dispose();
    }
  }
});

test('a predictor that does not fit the target or the tree is a ConfigError naming its config.json', () => {
  const dir = join(tmp, 'bad');
  savePredictor(dir, randomPredictor('ldlp', 16, 4, 1));
  const cfgFile = join(dir, 'config.json');
  const named = (re: RegExp) => (e: unknown) => e instanceof ConfigError && e.file === cfgFile && re.test(e.message);
  assert.throws(() => loadPredictor(dir, 'ldlp', { dim: 24 }, 4), named(/dim 16 does not match the target's 24/));
  assert.throws(() => loadPredictor(dir, 'ldlp', { dim: 16 }, 6), named(/depths up to 4 but the tree drafts up to 6/));
  assert.throws(() => loadPredictor(dir, 'specdec++', { dim: 16 }, 4), named(/is a ldlp predictor, not specdec\+\+/));
  assert.equal(loadPredictor(dir, 'ldlp', { dim: 16 }, 3).config.maxDepth, 4); // a shallower tree is fine
  assert.throws(
    () => createPolicy(`ldlp:path=${dir}`, { tree: { topK: 2, maxDepth: 4, totalTokens: 8 }, target: { config: { dim: 8 }, weights: new Map() } }),
    named(/dim 16 does not match/),
  );
  writeFileSync(cfgFile, '{"format": "eaglet-predictor"');
  assert.throws(() => loadPredictor(dir, 'ldlp', { dim: 16 }, 4), (e: unknown) => e instanceof Error && e.message.startsWith(`${cfgFile}: not valid JSON`));
});

test('the tree budget grows with depth, stays within the shape, and is at least a chain', () => {
  fc.assert(
    fc.property(treeShape, fc.nat(8), (tree, depth) => {
      const b = treeBudget(tree, Math.min(depth, tree.maxDepth));
      if (depth === 0) return assert.equal(b, 0);
      assert.ok(b <= tree.totalTokens && b >= Math.min(depth, tree.maxDepth, tree.totalTokens));
      assert.ok(treeBudget(tree, Math.min(depth + 1, tree.maxDepth)) >= b);
    }),
  );
});

test('cost per round: LDLP forward (plain TS, ORT) vs one draft pass (printed, not asserted)', async () => {
  // Sizes of the TinyStories-15M class this project targets: d = 288, vocab 512 here.
  const cfg = makeConfig({ vocabSize: 512, dim: 288, nLayers: 1, nHeads: 6, maxSeqLen: 128 });
  const target = { config: cfg, weights: randomWeights(cfg, 1) };
  const pred = randomPredictor('ldlp', cfg.dim, 6, 1);
  const H = TRAIN_PREDICTOR_DEFAULTS.hidden;
  pred.config.mlp.hidden = [H, H];
  pred.weights = randomMlpWeights(pred.config.mlp, 1);
  const runner = new PredictorRunner(pred, target);
  const feature = Float32Array.from({ length: cfg.dim }, (_, i) => Math.sin(i));
  const time = async (n: number, f: () => unknown) => {
    for (let i = 0; i < 20; i++) await f();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await f();
    return ((performance.now() - t0) / n) * 1000; // us
  };
  const plainUs = await time(2000, () => (runner.setRow(0, feature, 7), runner.run(1)));
  const spec = randomPredictor('specdec++', cfg.dim, 6, 2);
  spec.config.mlp.hidden = [H, H];
  spec.weights = randomMlpWeights(spec.config.mlp, 2);
  const specRunner = new PredictorRunner(spec, target, 4);
  for (let r = 0; r < 4; r++) specRunner.setRow(r, feature, r);
  const specUs = await time(1000, () => specRunner.run(4));
  const s = await onnxMlp(pred.config.mlp, pred.weights);
  const x = new Float32Array(2 * cfg.dim);
  const ortUs = await time(500, () => s.inner.run({ x: f32(x, [1, 2 * cfg.dim]) }));
  await releaseSession(s);
  const head = headConfigFor(cfg);
  const ds = await DraftSession.create(head, randomHeadWeights(cfg, 2), cfg, target.weights, { threads: 2, topK: 4 });
  const cache = new KVCache(1, head.nKvHeads, head.headDim, cfg.maxSeqLen);
  const draftUs = await time(100, () => ds.forward(cache, [1, 2, 3, 4], new Float32Array(4 * cfg.dim), [10, 10, 10, 10]));
  await ds.dispose();
  console.log(`# per round at d=${cfg.dim}, MLP 576-${H}-${H}-7: LDLP plain TS ${plainUs.toFixed(1)} us, same MLP via ORT ${ortUs.toFixed(1)} us; SpecDec++ head on a 4-node frontier ${specUs.toFixed(1)} us per depth; one draft pass (4 rows) ${draftUs.toFixed(0)} us`);
});
