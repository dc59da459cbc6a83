/**
 * Training of the two small predictor heads over round logs (training/lengths.ts), on
 * onnxruntime or tfjs (training/backend.ts), through the one MLP definition (src/model/mlp.ts):
 *
 *   ldlp        x = [feature of the last committed token, root embedding]   (one row per round)
 *               y = accepted length in 0..D: 'classification' (softmax CE over D + 1 classes)
 *               or 'regression' (squared error on one output)
 *   specdec++   x = [draft hidden row that proposed the best node at depth t, its embedding]
 *               y = 1 if the target accepted it given its prefix, else 0 (judged nodes only);
 *               BCE with the rejected class weighted `mismatchWeight` (SpecDec++: about 6),
 *               since a missed rejection wastes a whole deeper draft
 *
 * Inputs are standardised with training-set statistics, which are folded into the first layer
 * when saving, so the saved head reads raw features. Rounds are split into train/validation by
 * sequence (rounds of one generation are correlated); the weights saved are those of the
 * validation with the lowest loss. The final validation is computed with the saved weights
 * through the inference renderer (PlainOps), so it measures what the policy runs.
 *
 * Writes to `out`: config.json + model.safetensors, training.json (metrics, confusion table),
 * training-curve.svg, calibration.svg.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Scalar, Tensor } from '@tensorflow/tfjs';
import { UsageError } from '../src/errors.ts';
import { writeFileAtomic } from '../src/io/atomic.ts';
import { outputDim, savePredictor, type Objective, type Predictor, type PredictorConfig, type PredictorKind } from '../src/io/predictor-io.ts';
import { mlpForward, mlpShapes, PlainOps, randomMlpWeights, type MlpConfig } from '../src/model/mlp.ts';
import type { Weights } from '../src/model/weights.ts';
import { decodeLength } from '../src/policies/ldlp.ts';
import { Rng } from '../src/util/rng.ts';
import { AdamWArrays, warmupLr } from './adamw.ts';
import { pickTrainBackend, type TrainBackendChoice } from './backend.ts';
import { OrtPredictorSteps } from './ort/predictor-backend.ts';
import { epochOrder, mixSeed } from './dataset.ts';
import { RoundStore, type RoundStoreOptions } from './round-store.ts';
import type { OnProgress } from './progress.ts';
import { linePlot } from '../src/util/svg-plot.ts';
import type { Tf } from './tf-backend.ts';
import { TfOps } from './tf-ops.ts';

export interface TrainPredictorOptions {
  head: PredictorKind;
  /** Round logs from `collectLengths`. */
  logs: string[];
  /** Output directory. */
  out: string;
  /** LDLP objective. Default 'classification' (see DEFAULT_LDLP_OBJECTIVE). */
  objective?: Objective;
  /**
   * LDLP: round ms by depth (src/tune/tuning.ts depthCosts, index 0 = plain step). Given, the label
   * is the cost-aware depth (costAwareDepth) instead of the accepted length.
   */
  depthCosts?: number[];
  /** Width of the two hidden layers (3 linear layers, as AdaEAGLE's LDLP). Default 32: the forward runs every round, and its cost is linear in this. */
  hidden?: number;
  /** Updates. Default 800. */
  steps?: number;
  /** Rows per update. Default 128. */
  batch?: number;
  /** Peak learning rate (linear warmup over steps / 20). Default 3e-3. */
  lr?: number;
  /** AdamW decoupled weight decay. Default 1e-3. */
  weightDecay?: number;
  /** specdec++: loss weight of rejected tokens. Default 6. */
  mismatchWeight?: number;
  /** Fraction of sequences held out. Default 0.2. */
  valFraction?: number;
  /** Validate every this many steps. Default steps / 10. */
  valEvery?: number;
  /** Seed of init, split and batches. Default 0. */
  seed?: number;
  backend?: TrainBackendChoice;
  onProgress?: OnProgress;
}

/**
 * Measured on two data sets so far: on synthetic data with a smooth, unimodal relation
 * (test/ldlp.test.ts) both objectives reach about 0.9 exact / 0.1 MAE (regression marginally
 * ahead); on round logs of a random tiny pair, whose lengths are skewed (mostly 0, a tail up to
 * D), rounded regression did worse (MAE 0.18 vs 0.15), as squared loss predicts the conditional
 * mean and rounding a skewed mean misses the mode. Classification also gives a distribution over
 * lengths. Re-measure on the trained pair (`--objective regression` vs the default).
 */
export const DEFAULT_LDLP_OBJECTIVE: Objective = 'classification';

export const TRAIN_PREDICTOR_DEFAULTS = { hidden: 32, steps: 800, batch: 128, lr: 3e-3, weightDecay: 1e-3, mismatchWeight: 6, valFraction: 0.2, seed: 0 } as const;

/** Validation metrics; `baseline*` are those of the best constant predictor (chance level). */
export interface PredictorMetrics {
  rows: number;
  loss: number;
  /** ldlp: share of rounds whose predicted length is exact; specdec++: share classified right at 0.5. */
  accuracy: number;
  baselineAccuracy: number;
  /** ldlp: mean |predicted - true| length; specdec++: Brier score. */
  error: number;
  baselineError: number;
}

export interface TrainPredictorResult {
  backend: string;
  predictor: Predictor;
  initial: PredictorMetrics;
  /** With the saved (folded) weights through PlainOps. */
  final: PredictorMetrics;
  /** ldlp: confusion[true][predicted] on validation rows. */
  confusion?: number[][];
  /** Step of the saved weights: the validation with the lowest loss (small heads overfit small logs). */
  bestStep: number;
  trainRows: number;
  curve: { step: number[]; loss: number[]; valStep: number[]; valLoss: number[]; valError: number[] };
  rowsPerSecond: number;
  /** Streamed from logs: input rows held at most at once. */
  peakRowsHeld?: number;
  /** Streamed from logs: blocks of rows loaded (a block evicted and needed again counts again). */
  blockLoads?: number;
}

/**
 * A supervised set: inputs [n, width] read a row at a time, labels y [n], the sequence of each
 * row. Rows are loaded in blocks (`rowBlock`, ascending): training visits them in a block-bounded
 * shuffle, so a streamed set (training/round-store.ts) holds only a few blocks at once.
 */
export interface PredictorDataset {
  y: Float32Array;
  seq: Int32Array;
  n: number;
  width: number;
  /** Block of each row, non-decreasing. */
  rowBlock: Int32Array;
  /** Copies row i's inputs [width] into `out` at `at`. */
  row(i: number, out: Float32Array, at: number): void;
}

/** A dataset held in memory: x [n, width] (one block). */
export function inMemoryDataset(x: Float32Array, y: Float32Array, seq: Int32Array, width: number): PredictorDataset {
  const n = y.length;
  return { y, seq, n, width, rowBlock: new Int32Array(n), row: (i, out, at) => out.set(x.subarray(i * width, (i + 1) * width), at) };
}

/** Trains one head on the logs (streamed: training/round-store.ts) and writes it to `o.out`. */
export async function trainPredictor(o: TrainPredictorOptions & { store?: RoundStoreOptions }): Promise<TrainPredictorResult> {
  const store = await RoundStore.open(o.logs, o.head, o.head === 'ldlp' ? o.depthCosts : undefined, o.store);
  try {
    return { ...(await trainOnDataset(store, store.dim, store.maxDepth, o)), peakRowsHeld: store.peakLoadedRows, blockLoads: store.blockLoads };
  } finally {
    store.close();
  }
}

/** The training itself, for any dataset (tests use synthetic ones). */
export async function trainOnDataset(ds: PredictorDataset, dim: number, maxDepth: number, o: Omit<TrainPredictorOptions, 'logs'>): Promise<TrainPredictorResult> {
  const c = { ...TRAIN_PREDICTOR_DEFAULTS, ...definedOnly(o) };
  const objective: Objective = o.head === 'specdec++' ? 'bce' : o.objective ?? DEFAULT_LDLP_OBJECTIVE;
  if (o.head === 'ldlp' && objective === 'bce') throw new UsageError('--objective', 'ldlp takes classification or regression');
  for (const k of ['hidden', 'steps', 'batch'] as const) if (!(Number.isInteger(c[k]) && c[k] > 0)) throw new UsageError(`--${k}`, `must be a positive integer, got ${c[k]}`);
  if (!(c.lr > 0)) throw new UsageError('--lr', `must be positive, got ${c.lr}`);
  if (!(c.valFraction > 0 && c.valFraction < 1)) throw new UsageError('--val-fraction', `must be in (0, 1), got ${c.valFraction}`);
  const { train, val } = splitBySequence(ds.seq, c.valFraction, c.seed);
  if (train.length === 0 || val.length === 0) throw new UsageError('--logs', `too little data: ${ds.n} rows in ${new Set(ds.seq).size} sequences; collect more prompts`);

  const picked = await pickTrainBackend(o.backend ?? 'auto');
  const backend = picked.name;
  const mlp: MlpConfig = { inputDim: ds.width, hidden: [c.hidden, c.hidden], outputDim: outputDim(objective, maxDepth) };
  const { mean, std } = columnStats(ds, train);
  const w = ds.width;
  // Row r standardised (or raw) into out at row `at`.
  const normRow = (r: number, out: Float32Array, at: number) => {
    ds.row(r, out, at * w);
    for (let j = 0; j < w; j++) out[at * w + j] = (out[at * w + j] - mean[j]) / std[j];
  };
  const rawRow = (r: number, out: Float32Array, at: number) => ds.row(r, out, at * w);
  const names = [...mlpShapes(mlp).keys()];
  const params: Weights = randomMlpWeights(mlp, c.seed);
  const opt = new AdamWArrays(names.map((n) => params.get(n)!.data), { clip: 1, weightDecay: c.weightDecay });
  const prior = labelPrior(ds.y, train, objective, maxDepth);
  const runner: PredictorSteps = picked.kind === 'ort' ? await OrtPredictorSteps.create(mlp, objective, c.batch) : new TfPredictorSteps(picked.tf, mlp, objective);

  // Rows `idx` gathered on the JS side, with their loss weights: 1/n, or for bce the class
  // weight (rejected rows count mismatchWeight) normalised over `all` rows.
  const rowsOf = (idx: ArrayLike<number>, all: ArrayLike<number>) => {
    const n = idx.length, x = new Float32Array(n * ds.width), y = new Float32Array(n), rw = new Float32Array(n);
    const weight = (r: number) => (objective === 'bce' && ds.y[r] !== 1 ? c.mismatchWeight : 1);
    let total = 0;
    for (let i = 0; i < all.length; i++) total += weight(all[i]);
    for (let i = 0; i < n; i++) (normRow(idx[i], x, i), (y[i] = ds.y[idx[i]]), (rw[i] = weight(idx[i]) / total));
    return { x, y, rw };
  };
  const valLoss = async (): Promise<number> => {
    let sum = 0;
    for (let s = 0; s < val.length; s += c.batch) {
      const r = rowsOf(val.subarray(s, s + c.batch), val);
      sum += await runner.loss(params, r.x, r.y, r.rw);
    }
    return sum;
  };
  const snapshot = (): Weights => new Map(names.map((n) => [n, { shape: params.get(n)!.shape.slice(), data: params.get(n)!.data.slice() }]));
  const evaluate = (w: Weights, raw: boolean) => metrics(raw ? rawRow : normRow, ds.y, val, { config: predictorConfig(o.head, objective, dim, maxDepth, mlp, o.head === 'ldlp' && o.depthCosts ? 'cost-aware' : undefined), weights: w }, prior, c.mismatchWeight);

  const valEvery = o.valEvery ?? Math.max(1, Math.round(c.steps / 10));
  const curve: TrainPredictorResult['curve'] = { step: [], loss: [], valStep: [], valLoss: [], valError: [] };
  // Batches walk epochs of the training rows without replacement, each epoch in a seeded
  // block-bounded shuffle (training/dataset.ts epochOrder): the order is a function of
  // (seed, step) alone, and a streamed dataset holds only the blocks of the current shuffle group.
  let order: { epoch: number; positions: Int32Array } = { epoch: -1, positions: new Int32Array(0) };
  const idx = new Int32Array(c.batch);
  let ms = 0;
  let best: { loss: number; step: number; weights: Weights | null } = { loss: Infinity, step: 0, weights: null };
  try {
    const initial = evaluate(snapshot(), false).m;
    for (let step = 1; step <= c.steps; step++) {
      for (let i = 0; i < c.batch; i++) {
        const p = (step - 1) * c.batch + i, epoch = Math.floor(p / train.length);
        if (epoch !== order.epoch) order = { epoch, positions: epochOrder(train, ds.rowBlock, new Rng(mixSeed(c.seed ^ 0x1d1f, epoch))) };
        idx[i] = train[order.positions[p - epoch * train.length]];
      }
      const t0 = performance.now();
      const b = rowsOf(idx, idx);
      const { loss, grads } = await runner.step(params, b.x, b.y, b.rw);
      opt.apply(names.map((n) => grads.get(n)!), warmupLr(c.lr, Math.ceil(c.steps / 20), step));
      ms += performance.now() - t0;
      curve.step.push(step);
      curve.loss.push(loss);
      if (step % valEvery === 0 || step === c.steps) {
        const now = snapshot(), vl = await valLoss();
        curve.valStep.push(step);
        curve.valLoss.push(vl);
        curve.valError.push(evaluate(now, false).m.error);
        if (vl < best.loss) best = { loss: vl, step, weights: now };
      }
      o.onProgress?.({ phase: 'train', done: step, total: c.steps, metrics: { loss, ...(curve.valLoss.length ? { 'val-loss': curve.valLoss.at(-1)! } : {}) } });
    }
    const predictor: Predictor = { config: predictorConfig(o.head, objective, dim, maxDepth, mlp, o.head === 'ldlp' && o.depthCosts ? 'cost-aware' : undefined), weights: foldStandardisation(best.weights ?? snapshot(), mean, std) };
    const final = evaluate(predictor.weights, true);
    mkdirSync(o.out, { recursive: true });
    savePredictor(o.out, predictor, { eaglet: JSON.stringify({ head: o.head, logs: (o as TrainPredictorOptions).logs ?? [] }) });
    const result: TrainPredictorResult = {
      backend, predictor, initial, final: final.m, confusion: final.confusion, bestStep: best.step, trainRows: train.length, curve, rowsPerSecond: ms > 0 ? (c.steps * c.batch * 1000) / ms : 0,
    };
    writeFileAtomic(join(o.out, 'training.json'), JSON.stringify({ ...result, predictor: predictor.config }, null, 2) + '\n');
    writeFileAtomic(join(o.out, 'training-curve.svg'), linePlot(
      [{ label: 'train loss', x: curve.step, y: curve.loss }, { label: 'val loss', x: curve.valStep, y: curve.valLoss }, { label: o.head === 'ldlp' ? 'val MAE' : 'val Brier', x: curve.valStep, y: curve.valError }],
      { title: `${o.head} training`, xLabel: 'step' },
    ));
    writeFileAtomic(join(o.out, 'calibration.svg'), linePlot(final.calibration, final.calibrationAxes));
    return result;
  } finally {
    await runner.dispose();
  }
}

/** What the predictor training loop needs from a backend: rows x [n, in], labels y [n], loss weights rw [n]. */
interface PredictorSteps {
  step(params: Weights, x: Float32Array, y: Float32Array, rw: Float32Array): Promise<{ loss: number; grads: Map<string, Float32Array> }>;
  loss(params: Weights, x: Float32Array, y: Float32Array, rw: Float32Array): Promise<number>;
  dispose(): Promise<void>;
}

/** The predictor losses in TensorFlow.js through the MLP definition rendered by TfOps (same formulas as training/ort/losses.ts). */
export class TfPredictorSteps implements PredictorSteps {
  constructor(private readonly tf: Tf, private readonly mlp: MlpConfig, private readonly objective: Objective) {}

  private lossOf(byName: Map<string, Tensor>, x: Float32Array, yArr: Float32Array, rwArr: Float32Array): Scalar {
    const tf = this.tf, n = yArr.length;
    const out = mlpForward(new TfOps(tf, (k) => byName.get(k)!), this.mlp, tf.tensor2d(x, [n, this.mlp.inputDim])); // [n, out]
    const y = tf.tensor1d(yArr), rw = tf.tensor1d(rwArr);
    let perRow: Tensor;
    if (this.objective === 'classification') perRow = tf.neg(tf.sum(tf.mul(tf.cast(tf.oneHot(tf.cast(y, 'int32') as import('@tensorflow/tfjs').Tensor1D, this.mlp.outputDim), 'float32'), tf.logSoftmax(out)), -1));
    else if (this.objective === 'regression') perRow = tf.square(tf.sub(tf.reshape(out, [n]), y));
    else {
      const z = tf.reshape(out, [n]);
      perRow = tf.sub(tf.softplus(z), tf.mul(y, z)); // BCE with logits
    }
    return tf.sum(tf.mul(perRow, rw)) as Scalar;
  }

  async step(params: Weights, x: Float32Array, y: Float32Array, rw: Float32Array): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
    const tf = this.tf, names = [...params.keys()];
    let out: { loss: number; grads: Map<string, Float32Array> } | undefined;
    tf.tidy(() => {
      const xs = names.map((k) => tf.tensor(params.get(k)!.data, params.get(k)!.shape));
      const { value, grads } = tf.valueAndGrads((...ts: Tensor[]) => this.lossOf(new Map(names.map((k, i) => [k, ts[i]])), x, y, rw))(xs);
      out = { loss: value.dataSync()[0], grads: new Map(names.map((k, i) => [k, (grads[i].dataSync() as Float32Array).slice()])) };
    });
    return out!;
  }

  async loss(params: Weights, x: Float32Array, y: Float32Array, rw: Float32Array): Promise<number> {
    const tf = this.tf;
    return tf.tidy(() => this.lossOf(new Map([...params].map(([k, t]) => [k, tf.tensor(t.data, t.shape)])), x, y, rw).dataSync()[0]);
  }

  async dispose(): Promise<void> {}
}

function predictorConfig(kind: PredictorKind, objective: Objective, dim: number, maxDepth: number, mlp: MlpConfig, label?: 'cost-aware'): PredictorConfig {
  return { format: 'eaglet-predictor', version: 1, kind, objective, dim, maxDepth, mlp, ...(label ? { label } : {}) };
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Train/validation row indices, whole sequences to one side. */
export function splitBySequence(seq: Int32Array, valFraction: number, seed: number): { train: Int32Array; val: Int32Array } {
  const ids = [...new Set(seq)];
  const rng = new Rng(seed ^ 0x5eed);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [ids[i], ids[j]] = [ids[j], ids[i]];
  }
  const nVal = Math.max(1, Math.round(ids.length * valFraction));
  const valIds = new Set(ids.slice(0, Math.min(nVal, ids.length - 1)));
  const train: number[] = [], val: number[] = [];
  seq.forEach((s, i) => (valIds.has(s) ? val : train).push(i));
  return { train: Int32Array.from(train), val: Int32Array.from(val) };
}

/** Per-column mean and std over the training rows, one streamed pass in row order (std floored so constant columns stay finite). */
function columnStats(ds: PredictorDataset, rows: Int32Array): { mean: Float64Array; std: Float64Array } {
  const w = ds.width, mean = new Float64Array(w), sq = new Float64Array(w), x = new Float32Array(w);
  for (const r of rows) {
    ds.row(r, x, 0);
    for (let j = 0; j < w; j++) (mean[j] += x[j]), (sq[j] += x[j] ** 2);
  }
  const std = new Float64Array(w);
  for (let j = 0; j < w; j++) {
    mean[j] /= rows.length;
    std[j] = Math.max(1e-4, Math.sqrt(Math.max(0, sq[j] / rows.length - mean[j] ** 2)));
  }
  return { mean, std };
}

/** First layer on raw x: W' = W / std (per input column), b' = b - W' mean. */
function foldStandardisation(w: Weights, mean: Float64Array, std: Float64Array): Weights {
  const W = w.get('layers.0.weight')!, b = w.get('layers.0.bias')!;
  const [out, inp] = W.shape;
  for (let o = 0; o < out; o++) {
    let shift = 0;
    for (let i = 0; i < inp; i++) {
      W.data[o * inp + i] /= std[i];
      shift += W.data[o * inp + i] * mean[i];
    }
    b.data[o] -= shift;
  }
  return w;
}

/** The best constant prediction on the training labels: majority class / median length / mean rate. */
function labelPrior(y: Float32Array, rows: Int32Array, objective: Objective, maxDepth: number): number {
  if (objective === 'bce') return rows.reduce((a, r) => a + y[r], 0) / rows.length;
  const counts = new Array(maxDepth + 1).fill(0);
  for (const r of rows) counts[y[r]]++;
  return counts.indexOf(Math.max(...counts));
}

/** Validation metrics of predictor `p` on rows `rows` (read raw or standardised to match p), through PlainOps. */
function metrics(readRow: (r: number, out: Float32Array, at: number) => void, y: Float32Array, rows: Int32Array, p: Predictor, prior: number, mismatchWeight: number) {
  const { mlp, objective, maxDepth } = p.config, w = mlp.inputDim;
  const ops = new PlainOps(p.weights);
  const row = { shape: [1, w], data: new Float32Array(w) }; // [1, 2d]
  let loss = 0, hits = 0, baseHits = 0, err = 0, baseErr = 0, wsum = 0;
  const D1 = maxDepth + 1;
  const confusion = Array.from({ length: D1 }, () => new Array(D1).fill(0));
  const byTrue = { sum: new Float64Array(D1), n: new Float64Array(D1) };
  const bins = { p: new Float64Array(10), y: new Float64Array(10), n: new Float64Array(10) };
  for (const r of rows) {
    readRow(r, row.data, 0);
    ops.reset();
    const out = mlpForward(ops, mlp, row).data, label = y[r];
    if (objective === 'bce') {
      const z = out[0], q = 1 / (1 + Math.exp(-z)), wt = label === 1 ? 1 : mismatchWeight;
      loss += wt * (Math.max(z, 0) - z * label + Math.log1p(Math.exp(-Math.abs(z))));
      wsum += wt;
      hits += Number(q >= 0.5 === (label === 1));
      baseHits += Number(prior >= 0.5 === (label === 1));
      err += (q - label) ** 2;
      baseErr += (prior - label) ** 2;
      const b = Math.min(9, Math.floor(q * 10));
      (bins.p[b] += q), (bins.y[b] += label), bins.n[b]++;
    } else {
      const pred = Math.round(decodeLength(out, p));
      if (objective === 'classification') {
        let m = -Infinity, s = 0;
        for (const v of out) m = Math.max(m, v);
        for (const v of out) s += Math.exp(v - m);
        loss += m + Math.log(s) - out[label];
      } else loss += (out[0] - label) ** 2;
      wsum++;
      hits += Number(pred === label);
      baseHits += Number(prior === label);
      err += Math.abs(pred - label);
      baseErr += Math.abs(prior - label);
      confusion[label][pred]++;
      (byTrue.sum[label] += decodeLength(out, p)), byTrue.n[label]++;
    }
  }
  const n = rows.length;
  const m: PredictorMetrics = { rows: n, loss: loss / wsum, accuracy: hits / n, baselineAccuracy: baseHits / n, error: err / n, baselineError: baseErr / n };
  const avg = (s: Float64Array, c: Float64Array) => Array.from(s, (v, i) => (c[i] ? v / c[i] : NaN));
  if (objective === 'bce') {
    const xs = avg(bins.p, bins.n);
    return {
      m, confusion: undefined,
      calibration: [{ label: 'observed acceptance', x: xs, y: avg(bins.y, bins.n) }, { label: 'ideal', x: [0, 1], y: [0, 1] }],
      calibrationAxes: { title: 'specdec++ calibration (validation)', xLabel: 'predicted P(accept), 10 bins', yLabel: 'observed rate' },
    };
  }
  const lengths = Array.from({ length: D1 }, (_, i) => i);
  return {
    m, confusion,
    calibration: [
      { label: 'mean predicted', x: lengths, y: avg(byTrue.sum, byTrue.n) },
      { label: 'ideal', x: lengths, y: lengths },
      { label: 'constant baseline', x: lengths, y: lengths.map(() => prior) },
    ],
    calibrationAxes: { title: `LDLP (${objective}) on validation rounds`, xLabel: 'true accepted length', yLabel: 'predicted length' },
  };
}
