/**
 * Draft-head training (EAGLE-1 objective) in TensorFlow.js over feature logs.
 *
 * Per input row t: the head reads (feature_t, token_{t+1}) and predicts feature_{t+1}.
 *   loss = featureWeight * SmoothL1(pred, feature_{t+1})
 *        + tokenWeight   * CE(softmax(lmHead(feature_{t+1})), log_softmax(lmHead(pred)))
 * with the target's LM head and embeddings frozen. AdamW, linear warmup, global-norm clipping,
 * uniform noise on the input features. The forward pass is the shared model definition
 * (`eagleHeadForward`) rendered by `TfOps`. `ttt` = K > 1 adds the training-time test: the
 * draft chain unrolled K steps, deeper steps reading the head's own predicted features
 * (training/ttt.ts), on both backends.
 *
 * With `draftVocab` = N (EAGLE-3's reduced vocabulary, FR-Spec's frequency ranking) the head
 * scores only the N next-tokens most frequent in the logs, with its own LM head [N, d]: the
 * target's rows for those tokens, kept frozen (ours: EAGLE-3 trains its; freezing keeps the
 * feature objective and the token objective consistent). The token loss then compares the
 * target's full-vocabulary distribution restricted to the N tokens (not renormalised: mass on
 * other tokens cannot be drafted either way) with the head's distribution over the N, on every
 * backend (training/ort/graphs.ts draftTrainGraph does the same in ONNX).
 *
 * Reproducibility: every random draw is a function of (seed, step) or (seed, epoch), and a
 * checkpoint holds weights, Adam moments, step and data order, so `resume` ends with exactly
 * the weights of an uninterrupted run.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Scalar, Tensor } from '@tensorflow/tfjs';
import { FormatError, UsageError } from '../src/errors.ts';
import { writeFileAtomic } from '../src/io/atomic.ts';
import { saveDraftHead } from '../src/io/draft-head-io.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { draftLogits, eagleHeadForward, lmHead } from '../src/model/definition.ts';
import { DRAFT_VOCAB, draftToTarget, draftVocabWeights, mostFrequent, headConfigFor, randomHeadWeights, trainableHeadShapes, type HeadConfig } from '../src/model/draft-head.ts';
import { dense, quantizedModel, quantOf, type QuantName } from '../src/model/quantize.ts';
import { EMBEDDING, outputHead, outputHeadName, type WeightQuant, type Weights } from '../src/model/weights.ts';
import { Rng } from '../src/util/rng.ts';
import { warmupLr } from './adamw.ts';
import { pickTrainBackend, type TrainBackendChoice } from './backend.ts';
import { checkFingerprint, checkpointPath, loadCheckpoint, saveCheckpoint, startTraining, type CheckpointState, type Curve } from './checkpoint.ts';
import { OrtDraftSteps } from './ort/draft-backend.ts';
import { epochOrder, FeatureStore, mixSeed as mix, SHUFFLE_BLOCKS, splitWindows, type PackedBatch } from './dataset.ts';
import { readSidecar } from './feature-log.ts';
import type { OnProgress } from './progress.ts';
import { linePlot } from '../src/util/svg-plot.ts';
import type { Tf } from './tf-backend.ts';
import { additiveMask, intTensor, TfOps } from './tf-ops.ts';
import { chainRow, chainRows, TTT_DECAY } from './ttt.ts';

export interface TrainDraftOptions {
  /** The target the head drafts for (its embeddings and LM head are used, frozen). */
  target: { config: ModelConfig; weights: Weights };
  /** Feature logs (Arrow) written by `runLog` for this target. */
  logs: string[];
  /** Output directory: config.json, model.safetensors, checkpoint, curve. */
  out: string;
  /** Peak learning rate. Default 3e-3. */
  lr?: number;
  /** Windows per step. Default 8. */
  batch?: number;
  /** Rows per training window. Default 32. */
  window?: number;
  /** Epochs over the training windows, used when `steps` is not given. Default 1. */
  epochs?: number;
  /** Total updates; overrides `epochs`. */
  steps?: number;
  /** Linear warmup updates. Default 20. */
  warmup?: number;
  /** Global gradient-norm clip; 0 = off. Default 0.5. */
  clip?: number;
  /** Uniform noise on input features: U(-noise/2, noise/2). Default 0.2. */
  noise?: number;
  /** Weight of the SmoothL1 feature loss. Default 1. */
  featureWeight?: number;
  /** Weight of the soft cross-entropy token loss. Default 0.1. */
  tokenWeight?: number;
  /** AdamW decoupled weight decay. Default 0. */
  weightDecay?: number;
  /** Fraction of windows held out for validation. Default 0.1. */
  valFraction?: number;
  /** Validate every this many steps (and at the end). Default: steps / 10. */
  valEvery?: number;
  /** Write a checkpoint every this many steps (and at the end). Default 100. */
  checkpointEvery?: number;
  /** Seed of initial weights, data order, split and noise. Default 0. */
  seed?: number;
  /**
   * Rows of the shuffle buffer: training reads the logs in blocks of shuffleRows / 16 rows and
   * shuffles the windows of 16 random blocks at a time (training/dataset.ts), so memory holds
   * about 2 * shuffleRows rows whatever the logs' size. Default 65536.
   */
  shuffleRows?: number;
  /** Draft vocabulary size N (< the target's vocabulary); 0 = the full vocabulary. Default 0. */
  draftVocab?: number;
  /**
   * The head's SwiGLU width (config.json intermediate_size). Default: the target's, as EAGLE
   * trains it; a narrower MLP makes each draft step cheaper (the MLP is most of the head's weights).
   */
  intermediate?: number;
  /**
   * Training-time test: unroll the head's draft chain this many steps (training/ttt.ts), so
   * deeper steps train on the head's own predicted features as they draft. 1 = the EAGLE-1
   * objective alone. Default 1.
   */
  ttt?: number;
  /** Continue from `<out>/checkpoint.safetensors` if present. Default false. */
  resume?: boolean;
  /** Replace a head or checkpoint already in `out` (otherwise that is an error unless resuming). Default false. */
  overwrite?: boolean;
  /** Training backend (see training/backend.ts). Default 'auto'. */
  backend?: TrainBackendChoice;
  /**
   * The target runs quantized (`--quantize`): the frozen embeddings and LM head are its
   * quantized tables (dequantized), as a head drafting for it reads them. Logs written by a
   * target of another format are refused. Default: the target as given.
   */
  quantize?: QuantName;
  /** onnxruntime intra-op threads (the ort backend). Default: every core (TRAIN_THREADS). */
  threads?: number;
  onProgress?: OnProgress;
}

/** Validation metrics of a head. */
export interface ValMetrics {
  /** Share of rows whose argmax draft token equals the target's next token. */
  top1: number;
  /** Share of rows whose target next token is among the draft's top 3. */
  top3: number;
  /** Mean SmoothL1 between predicted and true next feature. */
  featureLoss: number;
  rows: number;
}

export interface TrainDraftResult {
  /** The backend that ran ('ort' | 'tensorflow' | 'wasm' | 'cpu'). */
  backend: string;
  steps: number;
  /** Step the run started from (> 0 after a resume). */
  startStep: number;
  /** Validation at the start of this run (the random head, or the checkpoint's when resumed) and of the trained head. */
  initial: ValMetrics;
  final: ValMetrics;
  curve: Curve;
  /** Training rows per second over this run's steps. */
  tokensPerSecond: number;
  /** The trained head (EAGLE names). */
  weights: Weights;
  headConfig: HeadConfig;
  /** tf.memory().numTensors after each step on tfjs (flat when nothing leaks); empty on ort. */
  tensorCounts: number[];
  /** The streamed logs: rows in them, most rows loaded at once, blocks loaded (training/dataset.ts). */
  stream: { logRows: number; peakLoadedRows: number; blockLoads: number };
}

type Resolved = Required<Omit<TrainDraftOptions, 'steps' | 'onProgress' | 'target' | 'logs' | 'out' | 'valEvery' | 'overwrite' | 'quantize' | 'threads' | 'intermediate' | 'ttt'>> & { valEvery?: number };

/** Defaults of every tunable option (the CLI's flag table reads them from here). */
export const TRAIN_DRAFT_DEFAULTS: Readonly<Resolved> = {
  lr: 3e-3, batch: 8, window: 32, epochs: 1, warmup: 20, clip: 0.5, noise: 0.2, featureWeight: 1, tokenWeight: 0.1,
  weightDecay: 0, valFraction: 0.1, checkpointEvery: 100, seed: 0, shuffleRows: 65536, draftVocab: 0, resume: false, backend: 'auto',
};

/** The CLI flag of an option: featureWeight -> --feature-weight. */
const flag = (k: string): string => '--' + k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());

function resolveOptions(o: TrainDraftOptions): Resolved {
  const r = { ...TRAIN_DRAFT_DEFAULTS } as Resolved;
  for (const k of Object.keys(TRAIN_DRAFT_DEFAULTS) as (keyof Resolved)[]) if (o[k] !== undefined) (r as Record<string, unknown>)[k] = o[k];
  r.valEvery = o.valEvery;
  const positive = ['lr', 'batch', 'window', 'epochs', 'checkpointEvery', 'shuffleRows'] as const;
  for (const k of positive) if (!(r[k] > 0)) throw new UsageError(flag(k), `must be positive, got ${r[k]}`);
  for (const k of ['batch', 'window', 'epochs', 'warmup', 'checkpointEvery', 'shuffleRows', 'draftVocab'] as const)
    if (!Number.isInteger(r[k])) throw new UsageError(flag(k), `must be an integer, got ${r[k]}`);
  for (const k of ['warmup', 'clip', 'noise', 'featureWeight', 'tokenWeight', 'weightDecay'] as const)
    if (!(r[k] >= 0)) throw new UsageError(flag(k), `must be >= 0, got ${r[k]}`);
  if (!(r.valFraction >= 0 && r.valFraction < 1)) throw new UsageError('--val-fraction', `must be in [0, 1), got ${r.valFraction}`);
  if (o.steps !== undefined && !(Number.isInteger(o.steps) && o.steps > 0)) throw new UsageError('--steps', `must be a positive integer, got ${o.steps}`);
  return r;
}

/** What the training loop needs from a backend: loss + gradients of a batch, and validation outputs. */
interface DraftSteps {
  /** Loss and gradients of the head `params` on batch `b` with (noised) input features. */
  step(params: Weights, b: PackedBatch, features: Float32Array): Promise<{ loss: number; grads: Map<string, Float32Array> }>;
  /** Top-k draft ids per row [n, k] and the mean feature loss of batch `b`. */
  evaluate(params: Weights, b: PackedBatch): Promise<{ top: Int32Array; k: number; featureLoss: number }>;
  /** Live tfjs tensors (null on ort): flat across steps when nothing leaks. */
  tensorCount(): number | null;
  dispose(): Promise<void>;
}

/** Trains an EAGLE draft head for `target` on feature logs and writes it to `out`. */
export async function trainDraft(opts: TrainDraftOptions): Promise<TrainDraftResult> {
  const o = resolveOptions(opts);
  if (!o.resume && !opts.overwrite && [join(opts.out, 'model.safetensors'), checkpointPath(opts.out)].some((p) => existsSync(p)))
    throw new UsageError('--out', `${opts.out} already holds a draft head or checkpoint: --overwrite replaces it, --resume continues its run`);
  const cfg = opts.target.config;
  if (!(o.draftVocab >= 0 && o.draftVocab < cfg.vocabSize)) throw new UsageError('--draft-vocab', `must be in [1, ${cfg.vocabSize}) (the target's vocabulary), or 0 for all of it; got ${o.draftVocab}`);
  const picked = await pickTrainBackend(o.backend);
  if (opts.logs.length > 0 && readSidecar(opts.logs[0]).dim !== cfg.dim) throw new UsageError('--logs', `${opts.logs[0]} has features of width ${readSidecar(opts.logs[0]).dim}, the target has ${cfg.dim}`);
  if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1)) throw new UsageError('--threads', `must be a positive integer, got ${opts.threads}`);
  if (opts.intermediate !== undefined && !(Number.isInteger(opts.intermediate) && opts.intermediate >= 1)) throw new UsageError('--intermediate', `must be a positive integer, got ${opts.intermediate}`);
  const ttt = opts.ttt ?? 1;
  // Step K-1 needs rows K-1 apart in one window.
  if (!(Number.isInteger(ttt) && ttt >= 1 && ttt <= o.window)) throw new UsageError('--ttt', `must be an integer in [1, ${o.window}] (--window), got ${opts.ttt}`);
  const target = frozenTarget(opts.target, opts.quantize);
  const quant = quantOf(cfg, target.weights);
  for (const log of opts.logs) checkLogQuant(log, quant);
  const data = await FeatureStore.open(opts.logs, o.window, cfg.vocabSize, { blockRows: Math.ceil(o.shuffleRows / SHUFFLE_BLOCKS) });
  try {
    return await trainOnStore({ ...opts, target }, o, picked, data);
  } finally {
    data.close();
  }
}

/**
 * What the head reads of the target, frozen: its weights, quantized as `q` says and then the
 * embedding table and LM head dequantized (the values the quantized target's graphs compute
 * with; the trainers read fp32 tensors).
 */
export function frozenTarget(t: TrainDraftOptions['target'], q: QuantName | undefined): TrainDraftOptions['target'] {
  const w = quantizedModel(t, q).weights;
  if (w === t.weights && !quantOf(t.config, w)) return t;
  const weights = new Map(w);
  for (const n of [EMBEDDING, outputHeadName(t.config)]) if (w.has(n)) weights.set(n, dense(w.get(n)!));
  return { config: t.config, weights };
}

/** A log written by a target of another weight format (fp32, q8, q4) than the one trained for is refused. */
function checkLogQuant(log: string, quant: WeightQuant | undefined): void {
  const logged = readSidecar(log).model?.quant;
  const name = (q: WeightQuant | undefined): string => (q ? `${q.bits}-bit weights` : 'fp32 weights');
  if ((logged?.bits ?? 0) !== (quant?.bits ?? 0))
    throw new UsageError('--quantize', `${log} was logged from the target with ${name(logged)}, and this head is trained for it with ${name(quant)}: log and train with the same --quantize`);
}

/** The training run itself, over an opened store (closed by the caller). */
async function trainOnStore(opts: TrainDraftOptions, o: Resolved, picked: Awaited<ReturnType<typeof pickTrainBackend>>, data: FeatureStore): Promise<TrainDraftResult> {
  const cfg = opts.target.config, backend = picked.name;
  const head = headConfigFor(cfg, o.draftVocab > 0 ? o.draftVocab : undefined, opts.intermediate);
  // The reduced vocabulary: the next tokens the logs show most often (what the head predicts).
  const vocabW: Weights = o.draftVocab > 0 ? draftVocabWeights(cfg, opts.target.weights, mostFrequent(data.nextTokenCounts, o.draftVocab)) : new Map();
  const split = splitWindows(data.windowStart.length, o.valFraction, o.seed);
  if (split.train.length === 0) throw new UsageError('--logs', 'no training windows: the logs hold no sequence of 2 or more rows');
  const perEpoch = Math.ceil(split.train.length / o.batch);
  const steps = opts.steps ?? o.epochs * perEpoch;
  const valEvery = o.valEvery ?? Math.max(1, Math.round(steps / 10));
  // The width enters the fingerprint only when it is not the target's, so older checkpoints still resume.
  const intermediate = head.hiddenDim === cfg.hiddenDim ? undefined : head.hiddenDim;
  // Likewise the training-time test's steps, only when unrolled.
  const ttt = opts.ttt === 1 ? undefined : opts.ttt;
  const fingerprint = JSON.stringify({ ...o, resume: undefined, backend: undefined, checkpointEvery: undefined, steps, rows: data.rows, windows: data.windowStart.length, quantize: opts.quantize, intermediate, ttt });
  mkdirSync(opts.out, { recursive: true });

  const ckpt = o.resume ? loadCheckpoint(opts.out, trainableHeadShapes(head)) : null;
  if (ckpt) checkFingerprint(ckpt.state.fingerprint, fingerprint, opts.out);
  if (ckpt && !fitsRun(ckpt.state, split.train.length, steps))
    throw new FormatError(checkpointPath(opts.out), 'its step, data order or curve do not fit this run: a damaged checkpoint');
  const names = [...trainableHeadShapes(head).keys()];
  const { params, opt, startStep, copy } = startTraining(names, ckpt, () => randomHeadWeights(cfg, o.seed, undefined, head.hiddenDim), { clip: o.clip, weightDecay: o.weightDecay });
  const curve: Curve = ckpt?.state.curve ?? { step: [], loss: [], valStep: [], valTop1: [], valTop3: [], valFeatureLoss: [] };
  // The epoch's window order is a function of (seed, epoch): the step alone places a resumed run in the stream.
  let order: { epoch: number; positions: Int32Array } = { epoch: -1, positions: new Int32Array(0) };
  const lossWeights = { featureWeight: o.featureWeight, tokenWeight: o.tokenWeight };
  const runner: DraftSteps = picked.kind === 'ort'
    ? Object.assign(await OrtDraftSteps.create(opts.target, head, o.batch, o.window, lossWeights, opts.threads, vocabW, opts.ttt), { tensorCount: () => null })
    : new TfDraftSteps(picked.tf, opts.target, head, lossWeights, vocabW, opts.ttt);
  const validate = (): Promise<ValMetrics> => evaluate(data, split.val, o.batch, (b) => runner.evaluate(params, b));

  const tensorCounts: number[] = [];
  let rowsTrained = 0, msTraining = 0;
  try {
    const initial = await validate();
    for (let step = startStep; step < steps; step++) {
      const epoch = Math.floor(step / perEpoch), k = step % perEpoch;
      if (epoch !== order.epoch) order = { epoch, positions: epochOrder(split.train, data.windowBlock, epochRng(o.seed, epoch)) };
      const windows = Array.from(order.positions.subarray(k * o.batch, (k + 1) * o.batch), (i) => split.train[i]);
      const batch = data.pack(windows);
      const t0 = performance.now();
      const { loss, grads } = await runner.step(params, batch, addNoise(batch.inputFeatures, o.noise, new Rng(mix(o.seed, step))));
      opt.apply(names.map((n) => grads.get(n)!), warmupLr(o.lr, o.warmup, step + 1));
      msTraining += performance.now() - t0;
      rowsTrained += batch.n;
      const live = runner.tensorCount();
      if (live !== null) tensorCounts.push(live);
      curve.step.push(step + 1);
      curve.loss.push(loss);
      const done = step + 1;
      if (done % valEvery === 0 || done === steps) {
        const v = await validate();
        curve.valStep.push(done), curve.valTop1.push(v.top1), curve.valTop3.push(v.top3), curve.valFeatureLoss.push(v.featureLoss);
      }
      if (done % o.checkpointEvery === 0 || done === steps) {
        const state: CheckpointState = { step: done, rng: { seed: o.seed, step: done }, fingerprint, curve };
        saveCheckpoint(opts.out, { state, params: copy(opt.params), m: copy(opt.m), v: copy(opt.v) });
      }
      opts.onProgress?.({ phase: 'train', done, total: steps, metrics: { loss, ...(curve.valTop1.length ? { 'val-top1': curve.valTop1.at(-1)! } : {}), 'tok/s': Math.round((rowsTrained / msTraining) * 1000) } });
    }
    const weights = copy(opt.params);
    for (const [n, t] of vocabW) weights.set(n, t);
    const final = await validate();
    saveDraftHead(opts.out, { config: head, weights });
    writeFileAtomic(join(opts.out, 'training-curve.svg'), curvePlot(curve));
    const result = { backend, steps, startStep, initial, final, curve, tokensPerSecond: msTraining > 0 ? (rowsTrained / msTraining) * 1000 : 0, weights, headConfig: head, tensorCounts,
      stream: { logRows: data.rows, peakLoadedRows: data.peakLoadedRows, blockLoads: data.blockLoads } };
    writeFileAtomic(join(opts.out, 'training.json'), JSON.stringify({ ...result, weights: undefined }, null, 2) + '\n');
    return result;
  } finally {
    await runner.dispose();
  }
}

/** The draft loss in TensorFlow.js: the model definition rendered by TfOps, differentiated by tfjs autograd. */
export class TfDraftSteps implements DraftSteps {
  /** What the head reads besides its parameters: the embeddings and its LM head (the target's, or its own reduced one). */
  private readonly frozen: Map<string, Tensor>;
  /** What the teacher reads: the target's embeddings and LM head. */
  private readonly teacher: Map<string, Tensor>;
  /** [N] target id of each draft id, for a reduced vocabulary. */
  private readonly draftIds: Tensor | null;
  private readonly toTarget: Int32Array | null;

  /** `vocab`: the head's draft-vocabulary tensors (empty for the full vocabulary); `ttt`: chain steps unrolled in training (training/ttt.ts). */
  constructor(private readonly tf: Tf, private readonly target: { config: ModelConfig; weights: Weights }, private readonly head: HeadConfig, private readonly w: { featureWeight: number; tokenWeight: number }, vocab: Weights = new Map(), private readonly ttt = 1) {
    const cfg = target.config, embW = target.weights.get(EMBEDDING)!;
    const emb = tf.tensor(embW.data, embW.shape), lmName = outputHeadName(cfg);
    this.teacher = new Map<string, Tensor>([[EMBEDDING, emb], [lmName, cfg.tieEmbeddings ? emb : tf.tensor(outputHead(cfg, target.weights).data, [cfg.vocabSize, cfg.dim])]]);
    this.frozen = new Map(this.teacher);
    // A reduced head's own LM head shares the name of an untied target's: the head sees its own.
    const own = vocab.get(DRAFT_VOCAB.lmHead);
    if (own) this.frozen.set(DRAFT_VOCAB.lmHead, tf.tensor(own.data, own.shape));
    this.toTarget = draftToTarget(head, vocab);
    this.draftIds = this.toTarget ? tf.tensor1d(this.toTarget, 'int32') : null;
  }

  /** Forward of the head whose weights are `byName` on batch `b` (step 0). */
  private forward(byName: Map<string, Tensor>, b: PackedBatch, features: Float32Array) {
    const tf = this.tf, cfg = this.target.config;
    const ops = new TfOps(tf, (n) => byName.get(n) ?? this.frozen.get(n) ?? missing(n));
    const mask = additiveMask(tf, b.n, b.n, (i, j) => j <= i && b.segment[i] === b.segment[j]);
    const out = eagleHeadForward(ops, this.head, tf.tensor2d(features, [b.n, cfg.dim]), { ids: intTensor(tf, b.tokens), positions: intTensor(tf, b.positions), mask, past: null }); // hidden [n, d]
    const target = tf.tensor2d(b.targetFeatures, [b.n, cfg.dim]); // [n, d]
    return { ops, out, target, logits: draftLogits(ops, this.head, cfg, out.hidden), featureLoss: smoothL1(tf, out.hidden, target) };
  }

  /** The target's next-token distribution at features [n, d], over the head's vocabulary (constant w.r.t. the head). */
  private teacherOf(features: Tensor): Tensor {
    const tf = this.tf, full = tf.softmax(lmHead(new TfOps(tf, (n) => this.teacher.get(n) ?? missing(n)), this.target.config, features)); // [n, V]
    return this.draftIds ? tf.gather(full, this.draftIds, 1) : full; // [n, N]
  }

  /**
   * Steps 1..K-1 of the training-time test (training/ttt.ts) after step 0's `fw`: sum_j
   * TTT_DECAY^j * (step j's loss, a mean over the rows that have step-j targets). Packed rows
   * (no padding): step j's mask is [n, (j + 1) n], step 0's block-diagonal causal block, then
   * the diagonal for each chain step.
   */
  private chainLoss(fw: ReturnType<TfDraftSteps['forward']>, b: PackedBatch): Tensor {
    const tf = this.tf, n = b.n;
    let keys = fw.out.key, values = fw.out.value, hidden = fw.out.hidden, loss: Tensor = tf.scalar(0);
    for (let j = 1; j < this.ttt; j++) {
      const rows = Int32Array.from({ length: n }, (_, i) => chainRow(b, i, j));
      const at = Int32Array.from(rows, (r, i) => (r >= 0 ? r : i)); // rows without a step-j target read their own (weight 0)
      const share = 1 / Math.max(1, chainRows(b, j)), w = tf.tensor1d(Float32Array.from(rows, (r) => (r >= 0 ? share : 0)));
      const mask = additiveMask(tf, n, (j + 1) * n, (i, k) => (k < n ? k <= i && b.segment[i] === b.segment[k] : k % n === i));
      // The predicted features are this step's input, with their gradient (EAGLE-3 does the same).
      const out = eagleHeadForward(fw.ops, this.head, hidden, { ids: intTensor(tf, Int32Array.from(at, (r) => b.tokens[r])), positions: intTensor(tf, Int32Array.from(at, (r) => b.positions[r])), mask, past: [{ keys, values }] });
      const target = tf.gather(fw.target, intTensor(tf, at)); // [n, d]
      const feature = tf.sum(tf.mul(tf.mean(huber(tf, out.hidden, target), -1), w));
      const token = tf.neg(tf.sum(tf.mul(tf.sum(tf.mul(this.teacherOf(target), tf.logSoftmax(draftLogits(fw.ops, this.head, this.target.config, out.hidden))), -1), w)));
      loss = tf.add(loss, tf.mul(tf.add(tf.mul(feature, this.w.featureWeight), tf.mul(token, this.w.tokenWeight)), TTT_DECAY ** j));
      (keys = tf.concat([keys, out.key], 0)), (values = tf.concat([values, out.value], 0)), (hidden = out.hidden);
    }
    return loss;
  }

  private tensors(params: Weights): Map<string, Tensor> {
    return new Map([...params].map(([n, t]) => [n, this.tf.tensor(t.data, t.shape)]));
  }

  async step(params: Weights, b: PackedBatch, features: Float32Array): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
    const tf = this.tf, names = [...params.keys()];
    let out: { loss: number; grads: Map<string, Float32Array> } | undefined;
    tf.tidy(() => {
      const xs = this.tensors(params);
      const f = (...ts: Tensor[]): Scalar => {
        const fw = this.forward(new Map(names.map((n, i) => [n, ts[i]])), b, features);
        const tokenLoss = tf.neg(tf.mean(tf.sum(tf.mul(this.teacherOf(fw.target), tf.logSoftmax(fw.logits)), -1)));
        const loss = tf.add(tf.mul(fw.featureLoss, this.w.featureWeight), tf.mul(tokenLoss, this.w.tokenWeight));
        return (this.ttt > 1 ? tf.add(loss, this.chainLoss(fw, b)) : loss) as Scalar;
      };
      const { value, grads } = tf.valueAndGrads(f)(names.map((n) => xs.get(n)!));
      // Copies: a backend may reuse the memory once the tidy scope ends.
      out = { loss: value.dataSync()[0], grads: new Map(names.map((n, i) => [n, (grads[i].dataSync() as Float32Array).slice()])) };
    });
    return out!;
  }

  async evaluate(params: Weights, b: PackedBatch): Promise<{ top: Int32Array; k: number; featureLoss: number }> {
    const tf = this.tf;
    return tf.tidy(() => {
      const f = this.forward(this.tensors(params), b, b.inputFeatures);
      const k = Math.min(3, f.logits.shape[1]!);
      const top = Int32Array.from(tf.topk(f.logits, k).indices.dataSync());
      if (this.toTarget) for (let i = 0; i < top.length; i++) top[i] = this.toTarget[top[i]]; // draft ids -> target ids
      return { top, k, featureLoss: f.featureLoss.dataSync()[0] };
    });
  }

  tensorCount(): number {
    return this.tf.memory().numTensors;
  }

  async dispose(): Promise<void> {
    for (const t of new Set([...this.frozen.values(), ...this.teacher.values()])) t.dispose();
    this.draftIds?.dispose();
  }
}

/** Whether a checkpoint's state (same fingerprint) can continue a run of `steps` over `windows` training windows. */
function fitsRun(s: CheckpointState, windows: number, steps: number): boolean {
  const p = s.order?.permutation;
  const curveKeys: (keyof Curve)[] = ['step', 'loss', 'valStep', 'valTop1', 'valTop3', 'valFeatureLoss'];
  return s.step <= steps && (!p || (p.length === windows && new Set(p).size === windows && p.every((i) => i < windows))) && curveKeys.every((k) => Array.isArray(s.curve[k]));
}

/** Top-1/top-3 accuracy and feature loss of the current head on the validation windows. */
async function evaluate(
  data: FeatureStore, windows: Int32Array, batch: number,
  run: (b: PackedBatch) => Promise<{ top: Int32Array; k: number; featureLoss: number }>,
): Promise<ValMetrics> {
  let hit1 = 0, hit3 = 0, labelled = 0, lossSum = 0, rows = 0;
  for (let s = 0; s < windows.length; s += batch) {
    const b = data.pack(windows.subarray(s, s + batch));
    const { top, k, featureLoss: loss } = await run(b);
    for (let i = 0; i < b.n; i++) {
      if (b.labels[i] < 0) continue;
      labelled++;
      if (top[i * k] === b.labels[i]) hit1++;
      for (let j = 0; j < k; j++) if (top[i * k + j] === b.labels[i]) (hit3++, (j = k));
    }
    lossSum += loss * b.n;
    rows += b.n;
  }
  return { top1: labelled ? hit1 / labelled : NaN, top3: labelled ? hit3 / labelled : NaN, featureLoss: rows ? lossSum / rows : NaN, rows: labelled };
}

/** Mean SmoothL1 (Huber, beta 1) over all elements. */
function smoothL1(tf: Tf, pred: Tensor, target: Tensor): Tensor {
  return tf.mean(huber(tf, pred, target));
}

/** SmoothL1 (Huber, beta 1) elementwise. */
function huber(tf: Tf, pred: Tensor, target: Tensor): Tensor {
  // 0.5 a^2 for a < 1, a - 0.5 beyond: written with minimum because tfjs has no gradient for where/less.
  const a = tf.abs(tf.sub(pred, target));
  const q = tf.minimum(a, 1);
  return tf.add(tf.mul(tf.square(q), 0.5), tf.sub(a, q));
}

function addNoise(x: Float32Array, amount: number, rng: Rng): Float32Array {
  const y = new Float32Array(x.length); // [n, d]
  for (let i = 0; i < x.length; i++) y[i] = x[i] + (rng.next() - 0.5) * amount;
  return y;
}

const epochRng = (seed: number, epoch: number): Rng => new Rng(mix(seed ^ 0x0e0c, epoch));

function missing(name: string): never {
  throw new Error(`draft-head forward asked for unknown weight ${name}`);
}

function curvePlot(c: Curve): string {
  return linePlot(
    [
      { label: 'train loss', x: c.step, y: c.loss },
      { label: 'val feature loss', x: c.valStep, y: c.valFeatureLoss },
      { label: 'val top-1', x: c.valStep, y: c.valTop1 },
    ],
    { title: 'draft-head training', xLabel: 'step', logY: false },
  );
}
