/**
 * Autodiff on onnxruntime (training/ort): the gradients the training graphs compute equal
 * central finite differences of the float64 reference (test/support/reference.ts), for every
 * parameter tensor, on random tiny configs (GQA, tied and untied embeddings, biases, q/k norms,
 * scaled RoPE, padding), and for the LDLP / SpecDec++ heads' three losses.
 * Each tensor is checked along a random direction v: sum(g * dw) against L(w + dw) - L(w - dw),
 * where dw is the float32-rounded perturbation actually applied.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { ModelConfig } from '../src/model/config.ts';
import { headConfigFor, headShapes, type HeadConfig } from '../src/model/draft-head.ts';
import { randomMlpWeights, type MlpConfig } from '../src/model/mlp.ts';
import { randomWeights } from '../src/model/random.ts';
import type { Weights } from '../src/model/weights.ts';
import type { Feeds } from '../src/runtime/ort.ts';
import { Rng } from '../src/util/rng.ts';
import { draftTrainGraph, feed, GradSession, predictorTrainGraph, targetTrainGraph } from '../training/ort/graphs.ts';
import { referenceForward, referenceHeadForward, visibility } from './support/reference.ts';
import { arbConfig } from './support/model-arbs.ts';

/** Causal additive mask [T, T] as the trainers feed it. */
const causal = (T: number) => Float32Array.from({ length: T * T }, (_, k) => (k % T <= Math.floor(k / T) ? 0 : -1e30));

/** Row weights: 1/real rows, 0 for the `pad` last rows of every window. */
function rowWeights(B: number, T: number, pad: number): Float32Array {
  const real = B * (T - pad);
  return Float32Array.from({ length: B * T }, (_, i) => (i % T < T - pad ? 1 / real : 0));
}

const logSoftmax = (z: Float64Array): Float64Array => {
  const m = Math.max(...z), lse = m + Math.log(z.reduce((a, b) => a + Math.exp(b - m), 0));
  return z.map((v) => v - lse);
};

/** Checks analytic gradients of every tensor of `params` against central differences of `lossOf`. */
function checkGradients(params: Weights, grads: Map<string, Float32Array>, lossOf: (w: Weights) => number, seed: number): void {
  const rng = new Rng(seed);
  const bad: string[] = [];
  for (const [name, t] of params) {
    const g = grads.get(name);
    assert.ok(g, `no gradient for ${name}`);
    const h = 1e-3;
    const plus = new Float32Array(t.data.length), minus = new Float32Array(t.data.length);
    let analytic = 0;
    for (let i = 0; i < t.data.length; i++) {
      const v = rng.normal();
      plus[i] = t.data[i] + h * v;
      minus[i] = t.data[i] - h * v;
      analytic += g[i] * (plus[i] - minus[i]);
    }
    const at = (data: Float32Array) => lossOf(new Map([...params, [name, { shape: t.shape, data }]]));
    const numeric = at(plus) - at(minus);
    const err = Math.abs(numeric - analytic), tol = 2e-6 + 2e-3 * Math.abs(numeric);
    if (!(err <= tol)) bad.push(`${name}: finite difference ${numeric.toExponential(4)}, gradient ${analytic.toExponential(4)}`);
  }
  assert.deepEqual(bad, []);
}

test('property: target next-token gradients == finite differences of the float64 reference', async () => {
  await fc.assert(
    fc.asyncProperty(arbConfig, fc.integer({ min: 1, max: 2 }), fc.integer({ min: 2, max: 6 }), fc.nat(), async (cfg0, B, T, seed) => {
      const cfg: ModelConfig = { ...cfg0, maxSeqLen: 16 };
      const w = randomWeights(cfg, seed);
      const rng = new Rng(seed + 1), N = B * T, pad = T > 2 ? 1 : 0;
      const ids = Array.from({ length: N }, () => rng.int(cfg.vocabSize)), labels = Array.from({ length: N }, () => rng.int(cfg.vocabSize));
      const positions = Array.from({ length: N }, (_, i) => i % T), rw = rowWeights(B, T, pad);
      const s = await GradSession.create(targetTrainGraph(cfg, B, T), 1);
      const { loss, grads } = await s.run(w, { ids: feed.ids(ids), labels: feed.ids(labels), positions: feed.ids(positions), mask: feed.f32(causal(T), [T, T]), rowWeight: feed.f32(rw, [N]) });
      await s.dispose();
      const lossOf = (ws: Weights): number => {
        let sum = 0;
        for (let b = 0; b < B; b++) {
          const r = referenceForward(cfg, ws, ids.slice(b * T, (b + 1) * T), positions.slice(0, T), visibility(0, T));
          for (let i = 0; i < T; i++) sum -= rw[b * T + i] * logSoftmax(r.logits.subarray(i * cfg.vocabSize, (i + 1) * cfg.vocabSize))[labels[b * T + i]];
        }
        return sum;
      };
      const ref = lossOf(w);
      assert.ok(Math.abs(loss - ref) <= 1e-4 * Math.max(1, ref), `loss ${loss} vs reference ${ref}`);
      checkGradients(w, grads, lossOf, seed);
    }),
    { numRuns: 12, seed: 7 },
  );
});

/** Random head weights for `head` (biases included when it has them). */
function headWeights(head: HeadConfig, seed: number): Weights {
  const rng = new Rng(seed), w: Weights = new Map();
  for (const [name, shape] of headShapes(head)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const std = name.endsWith('norm.weight') ? 0.1 : 1 / Math.sqrt(shape.at(-1)!);
    for (let i = 0; i < data.length; i++) data[i] = (name.endsWith('norm.weight') ? 1 : 0) + std * rng.normal();
    w.set(name, { shape, data });
  }
  return w;
}

test('property: draft-head EAGLE-1 loss gradients == finite differences of the float64 reference; --ttt K chains hand-unrolled', async () => {
  await fc.assert(
    // The head's SwiGLU width: the target's, or its own (`train-draft --intermediate`). K: training-time test steps (training/ttt.ts).
    fc.asyncProperty(arbConfig, fc.boolean(), fc.integer({ min: 1, max: 2 }), fc.integer({ min: 2, max: 5 }), fc.nat(), fc.option(fc.integer({ min: 1, max: 24 }), { nil: undefined }), fc.integer({ min: 1, max: 3 }), async (cfg0, bias, B, T, seed, units, K) => {
      const cfg: ModelConfig = { ...cfg0, maxSeqLen: 16 };
      const head: HeadConfig = { ...headConfigFor(cfg, undefined, units), attentionBias: bias };
      const tw = randomWeights(cfg, seed), hw = headWeights(head, seed + 2);
      const rng = new Rng(seed + 1), N = B * T, d = cfg.dim, pad = T > 2 ? 1 : 0;
      const ids = Array.from({ length: N }, () => rng.int(cfg.vocabSize)), positions = Array.from({ length: N }, (_, i) => 3 + (i % T));
      const feats = Float32Array.from({ length: N * d }, () => rng.normal()), tgt = Float32Array.from({ length: N * d }, () => rng.normal());
      const rw = rowWeights(B, T, pad), fw = 1, tokW = 0.1 + rng.next();
      // Chain step j of row t has row t+j's token, position and targets when t+j is a real row of its window; each step a mean over its rows.
      const real = T - pad, chained = (j: number, row: number): boolean => (row % T) + j < real;
      const chainFeeds: Feeds = {};
      for (let j = 1; j < K; j++) {
        const at = (row: number): number => (chained(j, row) ? row + j : -1), count = B * Math.max(0, real - j);
        chainFeeds[`ids.${j}`] = feed.ids(Array.from({ length: N }, (_, r) => (at(r) < 0 ? 0 : ids[at(r)])));
        chainFeeds[`positions.${j}`] = feed.ids(Array.from({ length: N }, (_, r) => (at(r) < 0 ? 0 : positions[at(r)])));
        chainFeeds[`targetFeatures.${j}`] = feed.f32(Float32Array.from({ length: N * d }, (_, k) => (at(Math.floor(k / d)) < 0 ? 0 : tgt[at(Math.floor(k / d)) * d + (k % d)])), [N, d]);
        chainFeeds[`rowWeight.${j}`] = feed.f32(Float32Array.from({ length: N }, (_, r) => (at(r) < 0 ? 0 : 1 / count)), [N]);
      }
      const s = await GradSession.create(draftTrainGraph({ config: cfg, weights: tw }, head, B, T, { featureWeight: fw, tokenWeight: tokW }, true, new Map(), K), 1);
      const { loss, grads } = await s.run(hw, {
        features: feed.f32(feats, [N, d]), targetFeatures: feed.f32(tgt, [N, d]), ids: feed.ids(ids), positions: feed.ids(positions),
        mask: feed.f32(causal(T), [T, T]), rowWeight: feed.f32(rw, [N]), ...chainFeeds,
      });
      await s.dispose();
      const lm = (cfg.tieEmbeddings ? tw.get('model.embed_tokens.weight') : tw.get('lm_head.weight'))!.data, V = cfg.vocabSize;
      const teacher = (row: number): Float64Array => {
        const z = new Float64Array(V);
        for (let v = 0; v < V; v++) for (let j = 0; j < d; j++) z[v] += lm[v * d + j] * tgt[row * d + j];
        return logSoftmax(z).map(Math.exp);
      };
      /** One predicted row's loss against the targets of packed row `row`. */
      const rowLoss = (hidden: Float64Array, logProbs: Float64Array, row: number): number => {
        let huber = 0, ce = 0;
        for (let j = 0; j < d; j++) {
          const a = Math.abs(hidden[j] - tgt[row * d + j]);
          huber += a < 1 ? 0.5 * a * a : a - 0.5;
        }
        const p = teacher(row);
        for (let v = 0; v < V; v++) ce -= p[v] * logProbs[v];
        return (fw * huber) / d + tokW * ce;
      };
      const lossOf = (ws: Weights): number => {
        let sum = 0;
        for (let b = 0; b < B; b++) {
          const rows = (a: ArrayLike<number> & { slice(s: number, e: number): ArrayLike<number> }, w = 1) => a.slice(b * T * w, (b + 1) * T * w);
          const r = referenceHeadForward(head, ws, cfg, tw, rows(ids), rows(feats, d), rows(positions), visibility(0, T));
          for (let i = 0; i < T; i++) sum += rw[b * T + i] * rowLoss(r.hidden.subarray(i * d, (i + 1) * d), r.logProbs.subarray(i * V, (i + 1) * V), b * T + i);
          // The chain of row t, one head call per step: step 0's keys of rows <= t, then this chain's own earlier steps.
          const kvw = head.nKvHeads * head.headDim;
          for (let t = 0; t < T; t++) {
            let key = r.key.slice(0, (t + 1) * kvw), value = r.value.slice(0, (t + 1) * kvw), hidden: Float64Array = r.hidden.slice(t * d, (t + 1) * d);
            for (let j = 1; j < K && chained(j, b * T + t); j++) {
              const row = b * T + t + j;
              const c = referenceHeadForward(head, ws, cfg, tw, [ids[row]], hidden, [positions[row]], visibility(key.length / kvw, 1), { key, value });
              sum += (0.8 ** j / (B * (real - j))) * rowLoss(c.hidden, c.logProbs, row);
              (key = Float64Array.from([...key, ...c.key])), (value = Float64Array.from([...value, ...c.value])), (hidden = c.hidden);
            }
          }
        }
        return sum;
      };
      const ref = lossOf(hw);
      assert.ok(Math.abs(loss - ref) <= 1e-4 * Math.max(1, ref), `loss ${loss} vs reference ${ref}`);
      checkGradients(hw, grads, lossOf, seed);
    }),
    { numRuns: 12, seed: 8 },
  );
});

/** The MLP in float64 (silu between layers): x [n, in] -> [n, out]. */
function mlp64(cfg: MlpConfig, w: Weights, x: Float32Array, n: number): Float64Array[] {
  const widths = [cfg.inputDim, ...cfg.hidden, cfg.outputDim];
  let rows = Array.from({ length: n }, (_, r) => Float64Array.from(x.subarray(r * cfg.inputDim, (r + 1) * cfg.inputDim)));
  for (let l = 0; l + 1 < widths.length; l++) {
    const W = w.get(`layers.${l}.weight`)!.data, b = w.get(`layers.${l}.bias`)!.data, [inp, out] = [widths[l], widths[l + 1]];
    rows = rows.map((h) => {
      const y = new Float64Array(out);
      for (let o = 0; o < out; o++) {
        let s = b[o];
        for (let i = 0; i < inp; i++) s += W[o * inp + i] * h[i];
        y[o] = l + 2 < widths.length ? s / (1 + Math.exp(-s)) : s;
      }
      return y;
    });
  }
  return rows;
}

test('property: LDLP / SpecDec++ head loss gradients (classification, regression, BCE) == finite differences', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom('classification' as const, 'regression' as const, 'bce' as const), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 2, max: 8 }),
      fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 6 }), fc.nat(),
      async (objective, inputDim, hidden, classes, n, seed) => {
        const cfg: MlpConfig = { inputDim, hidden: [hidden, hidden], outputDim: objective === 'classification' ? classes + 1 : 1 };
        const w = randomMlpWeights(cfg, seed), rng = new Rng(seed + 1), N = n + 1; // one padding row
        for (const t of w.values()) if (t.shape.length === 1) for (let i = 0; i < t.data.length; i++) t.data[i] = 0.3 * rng.normal();
        const x = Float32Array.from({ length: N * inputDim }, () => rng.normal());
        const y = Float32Array.from({ length: N }, () => (objective === 'classification' ? rng.int(classes + 1) : objective === 'bce' ? rng.int(2) : 3 * rng.normal()));
        const rw = Float32Array.from({ length: N }, (_, i) => (i < n ? (0.5 + rng.next()) / n : 0));
        const s = await GradSession.create(predictorTrainGraph(cfg, objective, N), 1);
        const labels: Feeds = objective === 'classification' ? { labels: feed.ids(Array.from(y)) } : { y: feed.f32(y, [N]) };
        const { loss, grads } = await s.run(w, { x: feed.f32(x, [N, inputDim]), rowWeight: feed.f32(rw, [N]), ...labels });
        await s.dispose();
        const lossOf = (ws: Weights): number =>
          mlp64(cfg, ws, x, N).reduce((sum, out, r) => {
            if (objective === 'classification') return sum - rw[r] * logSoftmax(out)[y[r]];
            if (objective === 'regression') return sum + rw[r] * (out[0] - y[r]) ** 2;
            return sum + rw[r] * (Math.log1p(Math.exp(out[0])) - y[r] * out[0]);
          }, 0);
        const ref = lossOf(w);
        assert.ok(Math.abs(loss - ref) <= 1e-4 * Math.max(1, Math.abs(ref)), `loss ${loss} vs reference ${ref}`);
        checkGradients(w, grads, lossOf, seed);
      },
    ),
    { numRuns: 24, seed: 9 },
  );
});
