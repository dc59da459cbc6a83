/**
 * Target training: a small Llama-family decoder trained from scratch on a text corpus, in
 * TensorFlow.js, through the one model definition (`llamaForward` rendered by `TfOps`).
 *
 * Pipeline: read the corpus and split whole files (target-corpus.ts) -> train a byte-level BPE
 * tokenizer on the training files -> encode each split as one stream, `<|endoftext|>` before
 * every document -> next-token cross-entropy on random windows of `seqLen` tokens, AdamW with
 * warmup + cosine decay and global-norm clipping -> periodic held-out loss -> an HF checkpoint
 * directory (config.json, model.safetensors, tokenizer.json) that `eaglet generate` loads.
 *
 * Reproducibility: step k's windows are drawn from an RNG seeded by (seed, k), and a checkpoint
 * holds weights, Adam moments, step and curve, so `resume` ends with exactly the weights of an
 * uninterrupted run.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Scalar, Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { UsageError } from '../src/errors.ts';
import { resolveOptions, type FlagSpec } from '../src/option-schema.ts';
import { writeFileAtomic } from '../src/io/atomic.ts';
import { saveHfCheckpoint } from '../src/io/hf.ts';
import { checkConfig, parameterCount, type ModelConfig } from '../src/model/config.ts';
import { llamaForward, type HeadLayout, type PastKV } from '../src/model/definition.ts';
import { makeConfig } from '../src/model/random.ts';
import { expectedShapes, tensor, type Weights } from '../src/model/weights.ts';
import { HfTokenizer } from '../src/tokenizer/hf.ts';
import { Rng } from '../src/util/rng.ts';
import { cosineLr } from './adamw.ts';
import { pickTrainBackend, TRAIN_BACKEND_CHOICES, TRAIN_BACKEND_HELP, type TrainBackendChoice } from './backend.ts';
import { checkFingerprint, loadCheckpoint, saveCheckpoint, startTraining } from './checkpoint.ts';
import { OrtTargetSteps } from './ort/target-backend.ts';
import { earlyExitLoss } from './early-exit.ts';
import type { OnProgress } from './progress.ts';
import { linePlot } from '../src/util/svg-plot.ts';
import { readTargetCorpus, type CorpusFile } from './target-corpus.ts';
import type { Tf } from './tf-backend.ts';
import { additiveMask, intTensor, TfOps, type WeightLookup } from './tf-ops.ts';
import { trainTokenizer, writeTokenizer, type TrainedTokenizer } from './tokenizer-train.ts';

/**
 * Every tunable option of `trainTarget`, with its default and range: the library resolves
 * options with this table and the CLI parses its flags with it. The defaults are a 2-layer
 * target sized for ~1 h on 2 cores; the embedded default's 8-layer options are in
 * scripts/train-default.sh (data/default/MODEL_CARD.md says why).
 */
export const TRAIN_TARGET_FLAGS: FlagSpec[] = [
  { flag: 'dim', type: 'int', min: 8, default: 128, meta: 'D', help: 'model width' },
  { flag: 'layers', type: 'int', min: 1, default: 2, meta: 'N', help: 'decoder layers' },
  { flag: 'heads', type: 'int', min: 1, default: 4, meta: 'N', help: 'query heads (dim / heads must be even)' },
  { flag: 'kv-heads', type: 'int', min: 0, default: 0, meta: 'N', help: 'key/value heads, dividing --heads (0 = --heads)' },
  { flag: 'hidden', type: 'int', min: 0, default: 0, meta: 'N', help: 'SwiGLU inner width (0 = 8/3 dim, rounded up to 8)' },
  { flag: 'vocab', type: 'int', min: 258, max: 65535, default: 1536, meta: 'V', help: 'vocabulary size, <|endoftext|> included' },
  { flag: 'seq-len', type: 'int', min: 2, default: 256, meta: 'N', help: 'tokens per training window (also the model\'s context length)' },
  { flag: 'batch', type: 'int', min: 1, default: 4, meta: 'N', help: 'windows per step' },
  { flag: 'lr', type: 'number', above: 0, default: 3e-3, meta: 'LR', help: 'peak learning rate (AdamW; cosine decay to lr/10)' },
  { flag: 'steps', type: 'int', min: 1, default: 1200, meta: 'N', help: 'total updates' },
  { flag: 'warmup', type: 'int', min: 0, default: 50, meta: 'N', help: 'linear warmup updates' },
  { flag: 'clip', type: 'number', min: 0, default: 1, meta: 'X', help: 'global gradient-norm clip (0 = off)' },
  { flag: 'weight-decay', type: 'number', min: 0, default: 0, meta: 'X', help: 'AdamW decoupled weight decay' },
  { flag: 'held-out', type: 'number', above: 0, max: 0.9, default: 0.1, meta: 'F', help: 'fraction of corpus files held out (whole files, by name hash)' },
  { flag: 'eval-every', type: 'int', min: 1, default: 150, meta: 'N', help: 'held-out loss every N steps (and at the end)' },
  { flag: 'eval-tokens', type: 'int', min: 2, default: 16384, meta: 'N', help: 'held-out tokens evaluated (from the start of the held-out stream)' },
  { flag: 'checkpoint-every', type: 'int', min: 1, default: 25, meta: 'N', help: 'write a checkpoint every N steps' },
  { flag: 'seed', type: 'int', min: 0, default: 0, meta: 'S', help: 'seed of initial weights and window sampling' },
  { flag: 'time-budget', type: 'number', min: 0, default: 0, meta: 'MIN', help: 'stop (checkpoint + export) after MIN minutes of training; 0 = no limit' },
  { flag: 'early-exit-loss', type: 'number', min: 0, default: 0, meta: 'W', help: 'LayerSkip-style: add W x next-token loss at every layer\'s normed hidden state (weights rising with depth), so early layers can self-draft (--draft self)' },
  { flag: 'backend', type: 'string', choices: [...TRAIN_BACKEND_CHOICES], default: 'auto', meta: 'B', help: TRAIN_BACKEND_HELP },
];

/** Resolved tunables (the camelCase keys of TRAIN_TARGET_FLAGS). */
export interface TargetTunables {
  dim: number; layers: number; heads: number; kvHeads: number; hidden: number; vocab: number; seqLen: number;
  batch: number; lr: number; steps: number; warmup: number; clip: number; weightDecay: number; heldOut: number;
  evalEvery: number; evalTokens: number; checkpointEvery: number; seed: number; timeBudget: number; earlyExitLoss: number; backend: TrainBackendChoice;
}

export interface TrainTargetOptions extends Partial<TargetTunables> {
  /** Directory of corpus files (`*.d.ts`). */
  corpusDir: string;
  /** Model directory written at the end: config.json, model.safetensors, tokenizer files, training.json, curve. */
  out: string;
  /** Where checkpoints go. Default `<out>/checkpoint` (keep it out of committed model directories). */
  checkpointDir?: string;
  /** Continue from the checkpoint in `checkpointDir` if present. Default false. */
  resume?: boolean;
  onProgress?: OnProgress;
}

/** Curve of a target run: train loss and learning rate per step, held-out loss every evalEvery. */
export interface TargetCurve {
  step: number[];
  loss: number[];
  lr: number[];
  evalStep: number[];
  evalLoss: number[];
}

/** Held-out metrics. */
export interface HeldOutMetrics {
  /** Mean next-token cross-entropy (nats). */
  loss: number;
  perplexity: number;
  /** loss in bits per UTF-8 byte of text: comparable across tokenizers. */
  bitsPerByte: number;
  tokens: number;
}

export interface TrainTargetResult {
  backend: string;
  config: ModelConfig;
  parameters: number;
  /** Steps done in total, and the step this run started from (> 0 after a resume). */
  steps: number;
  startStep: number;
  /** True when --time-budget ended the run before `steps`. */
  stoppedEarly: boolean;
  /** Held-out metrics at the start of this run (the random model, or the checkpoint's when resumed) and at the end. */
  initial: HeldOutMetrics;
  final: HeldOutMetrics;
  curve: TargetCurve;
  /** Training tokens per second over this run's steps (forward + backward + update). */
  tokensPerSecond: number;
  /** Wall time of this run's training loop. */
  trainMs: number;
  weights: Weights;
  tokenizer: TrainedTokenizer;
  /** tf.memory().numTensors after each step on tfjs (flat when nothing leaks); empty on ort. */
  tensorCounts: number[];
}

/** Model config of the options (tied embeddings; EOS = BOS = <|endoftext|>). */
export function targetConfig(o: TargetTunables, vocabSize: number, eosId: number): ModelConfig {
  if (o.dim % o.heads !== 0) throw new UsageError('--heads', `must divide --dim (${o.dim}), got ${o.heads}`);
  const kv = o.kvHeads || o.heads;
  if (o.heads % kv !== 0) throw new UsageError('--kv-heads', `must divide --heads (${o.heads}), got ${kv}`);
  const cfg = makeConfig({
    vocabSize, dim: o.dim, nLayers: o.layers, nHeads: o.heads, nKvHeads: kv, maxSeqLen: o.seqLen,
    ...(o.hidden ? { hiddenDim: o.hidden } : {}), tieEmbeddings: true, bosTokenId: eosId, eosTokenIds: [eosId],
  });
  try {
    checkConfig(cfg);
  } catch (e) {
    throw new UsageError('--dim', (e as Error).message);
  }
  return cfg;
}

/**
 * Initial weights: N(0, 0.02) for embeddings and projections, with the residual-branch outputs
 * (o_proj, down_proj) scaled by 1/sqrt(2 * layers) as in GPT-2, and norms at 1. Small tied
 * embeddings start the output near uniform (loss ~ ln V).
 */
export function initTargetWeights(cfg: ModelConfig, seed: number): Weights {
  const rng = new Rng(seed), w: Weights = new Map();
  for (const [name, shape] of expectedShapes(cfg)) {
    const t = tensor(shape);
    if (name.endsWith('norm.weight')) t.data.fill(1);
    else {
      const std = name.endsWith('o_proj.weight') || name.endsWith('down_proj.weight') ? 0.02 / Math.sqrt(2 * cfg.nLayers) : 0.02;
      for (let i = 0; i < t.data.length; i++) t.data[i] = std * rng.normal();
    }
    w.set(name, t);
  }
  return w;
}

/**
 * TfOps over a batch of B equal-length sequences stacked as rows [B*T, w]: attention runs per
 * sequence (batched matmuls, one [T, T] causal mask) instead of over one block-diagonal
 * [B*T, B*T] mask. With `oneHotEmbed`, embedding lookups are one-hot matmuls, whose gradient
 * the wasm backend has (gather's needs UnsortedSegmentSum, which wasm lacks).
 */
class BatchedTfOps extends TfOps {
  constructor(private readonly tfb: Tf, lookup: WeightLookup, private readonly batch: number, private readonly oneHotEmbed: boolean) {
    super(tfb, lookup);
  }

  override embed(table: Tensor, ids: Tensor): Tensor {
    if (!this.oneHotEmbed) return super.embed(table, ids);
    const tf = this.tfb;
    return tf.matMul(oneHotF32(tf, ids, table.shape[0]), table as Tensor2D); // [B*T, d]
  }

  override attention(q: Tensor, k: Tensor, v: Tensor, past: PastKV<Tensor> | null, mask: Tensor, l: HeadLayout): Tensor {
    if (past) throw new Error('BatchedTfOps trains on whole windows: no K/V cache');
    const tf = this.tfb, B = this.batch, T = q.shape[0] / B, hd = l.headDim, g = l.nHeads / l.nKvHeads;
    const heads = (x: Tensor, n: number) => tf.transpose(tf.reshape(x, [B, T, n, hd]), [0, 2, 1, 3]); // [B, n, T, hd]
    // Query heads of one K/V group side by side: [B*nKv, g*T, hd], so K/V are never repeated.
    const qg = tf.reshape(heads(tf.mul(q, 1 / Math.sqrt(hd)), l.nHeads), [B * l.nKvHeads, g * T, hd]);
    const kh = tf.reshape(heads(k, l.nKvHeads), [B * l.nKvHeads, T, hd]);
    const vh = tf.reshape(heads(v, l.nKvHeads), [B * l.nKvHeads, T, hd]);
    const scores = tf.reshape(tf.matMul(qg, kh, false, true), [B * l.nKvHeads, g, T, T]);
    const probs = tf.reshape(tf.softmax(tf.add(scores, mask)), [B * l.nKvHeads, g * T, T]);
    const out = tf.reshape(tf.matMul(probs, vh), [B, l.nHeads, T, hd]);
    return tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [B * T, l.nHeads * hd]);
  }
}

/** One-hot rows [T, depth] as float32 (cast: tfjs-wasm 4.22 writes int bits when asked for float32 directly). */
function oneHotF32(tf: Tf, ids: Tensor, depth: number): Tensor2D {
  return tf.cast(tf.oneHot(ids as Tensor1D, depth), 'float32') as Tensor2D;
}

/** Token stream of files: `<|endoftext|>` then the file's tokens, for every file in order. */
export function encodeStream(tok: HfTokenizer, files: CorpusFile[], eosId: number): Int32Array {
  const parts = files.map((f) => tok.encode(f.text, { addBos: false }));
  const out = new Int32Array(parts.reduce((n, p) => n + p.length + 1, 0)); // [N]
  let at = 0;
  for (const p of parts) (out[at++] = eosId), out.set(p, at), (at += p.length);
  return out;
}

/**
 * Mean next-token cross-entropy (nats) of B windows of T tokens through the model definition:
 * `ids`, `labels` [B*T] (labels = the next tokens), `mask` the [T, T] causal additive mask.
 * `oneHotEmbed` renders the embedding lookup as a one-hot matmul (see BatchedTfOps).
 * `earlyExit` W > 0 adds the early-exit loss (training/early-exit.ts) over every layer.
 */
export function windowLoss(
  tf: Tf, cfg: ModelConfig, lookup: WeightLookup, mask: Tensor, ids: Int32Array, labels: Int32Array, oneHotEmbed: boolean, earlyExit = 0,
): Scalar {
  const T = mask.shape[0]!, B = ids.length / T;
  const ops = new BatchedTfOps(tf, lookup, B, oneHotEmbed);
  const positions = intTensor(tf, Int32Array.from({ length: B * T }, (_, i) => i % T)); // [B*T]
  const { logits, hiddens } = llamaForward(ops, cfg, { ids: intTensor(tf, ids), positions, mask, past: null }); // [B*T, V]
  const onehot = oneHotF32(tf, intTensor(tf, labels), cfg.vocabSize); // [B*T, V]
  const ce = (l: Tensor): Tensor => tf.neg(tf.mean(tf.sum(tf.mul(onehot, tf.logSoftmax(l)), -1)));
  const early = earlyExitLoss(ops, cfg, hiddens, earlyExit, ce, (x, w) => tf.mul(x, w));
  return (early ? tf.add(ce(logits), early) : ce(logits)) as Scalar;
}

const stepSeed = (seed: number, step: number): number => (Math.imul(seed ^ 0x5bd1e995, 0x85ebca6b) + Math.imul(step + 1, 0xc2b2ae35)) >>> 0;

/** Fills `ids`/`labels` [B*T] with B random windows of `stream` (labels = ids shifted by one). */
function sampleWindows(stream: Int32Array, T: number, rng: Rng, ids: Int32Array, labels: Int32Array): void {
  const B = ids.length / T;
  for (let b = 0; b < B; b++) {
    const s = rng.int(stream.length - T);
    ids.set(stream.subarray(s, s + T), b * T);
    labels.set(stream.subarray(s + 1, s + T + 1), b * T);
  }
}

/** Trains a target on the corpus in `corpusDir` and writes it to `out`. */
export async function trainTarget(opts: TrainTargetOptions): Promise<TrainTargetResult> {
  const { corpusDir, out, resume = false, onProgress } = opts;
  const o = resolveOptions<TargetTunables>(TRAIN_TARGET_FLAGS, { ...opts, corpusDir: undefined, out: undefined, checkpointDir: undefined, resume: undefined, onProgress: undefined });
  const ckptDir = opts.checkpointDir ?? join(out, 'checkpoint');
  const picked = await pickTrainBackend(o.backend);
  const backend = picked.name;

  const corpus = readTargetCorpus(corpusDir, o.heldOut);
  const tokenizer = trainTokenizer(corpus.train.map((f) => f.text), o.vocab);
  const tok = new HfTokenizer(tokenizer.json, tokenizer.config, 'tokenizer.json');
  const cfg = targetConfig(o, tokenizer.vocabSize, tokenizer.eosId);
  const train = encodeStream(tok, corpus.train, tokenizer.eosId); // [N]
  const heldOutStream = encodeStream(tok, corpus.heldOut, tokenizer.eosId);
  const T = o.seqLen;
  if (train.length <= T) throw new UsageError('--seq-len', `the training split has ${train.length} tokens, fewer than a window of ${T} + 1`);
  if (heldOutStream.length <= T) throw new UsageError('--seq-len', `the held-out split has ${heldOutStream.length} tokens, fewer than a window of ${T} + 1`);
  const evalWindows = Math.max(1, Math.floor(Math.min(o.evalTokens, heldOutStream.length - 1) / T));
  // Bytes of text the evaluated tokens cover, for bits per byte: proportional share of the held-out text.
  const heldOutBytes = corpus.heldOut.reduce((n, f) => n + Buffer.byteLength(f.text), 0);
  const evalBytes = (heldOutBytes * evalWindows * T) / heldOutStream.length;
  const fingerprint = JSON.stringify({ ...o, backend: undefined, evalEvery: undefined, checkpointEvery: undefined, timeBudget: undefined, corpus: corpus.sha256 });

  mkdirSync(ckptDir, { recursive: true });
  const ckpt = resume ? loadCheckpoint<TargetCurve>(ckptDir) : null;
  if (ckpt) checkFingerprint(ckpt.state.fingerprint, fingerprint, ckptDir);
  const names = [...expectedShapes(cfg).keys()];
  const { params, opt, startStep, copy } = startTraining(names, ckpt, () => initTargetWeights(cfg, o.seed), { clip: o.clip, weightDecay: o.weightDecay });
  const curve: TargetCurve = ckpt?.state.curve ?? { step: [], loss: [], lr: [], evalStep: [], evalLoss: [] };
  const runner: TargetSteps = picked.kind === 'ort'
    ? Object.assign(await OrtTargetSteps.create(cfg, o.batch, T, undefined, o.earlyExitLoss), { tensorCount: () => null })
    : new TfTargetSteps(picked.tf, cfg, T, picked.name === 'wasm', o.earlyExitLoss);

  const evaluate = async (): Promise<HeldOutMetrics> => {
    let sum = 0;
    for (let w = 0; w < evalWindows; w += o.batch) {
      const B = Math.min(o.batch, evalWindows - w);
      const ids = heldOutStream.slice(w * T, (w + B) * T), labels = heldOutStream.slice(w * T + 1, (w + B) * T + 1);
      sum += (await runner.loss(params, ids, labels)) * B;
    }
    const loss = sum / evalWindows;
    return { loss, perplexity: Math.exp(loss), bitsPerByte: (loss * evalWindows * T) / (evalBytes * Math.LN2), tokens: evalWindows * T };
  };

  const ids = new Int32Array(o.batch * T), labels = new Int32Array(o.batch * T); // [B*T], reused every step
  const tensorCounts: number[] = [];
  const minLr = o.lr / 10;
  let msTraining = 0, step = startStep, stoppedEarly = false;
  const save = () => saveCheckpoint<TargetCurve>(ckptDir, {
    state: { step, rng: { seed: o.seed, step }, fingerprint, curve },
    params: copy(opt.params), m: copy(opt.m), v: copy(opt.v),
  });
  try {
    const initial = await evaluate();
    const t0 = performance.now();
    while (step < o.steps) {
      if (o.timeBudget > 0 && performance.now() - t0 > o.timeBudget * 60_000) {
        stoppedEarly = true;
        break;
      }
      sampleWindows(train, T, new Rng(stepSeed(o.seed, step)), ids, labels);
      const lr = cosineLr(o.lr, minLr, o.warmup, o.steps, step + 1);
      const ts = performance.now();
      const { loss, grads } = await runner.step(params, ids, labels);
      opt.apply(names.map((n) => grads.get(n)!), lr);
      msTraining += performance.now() - ts;
      step++;
      const live = runner.tensorCount();
      if (live !== null) tensorCounts.push(live);
      curve.step.push(step), curve.loss.push(loss), curve.lr.push(lr);
      if (step % o.evalEvery === 0 || step === o.steps) curve.evalStep.push(step), curve.evalLoss.push((await evaluate()).loss);
      if (step % o.checkpointEvery === 0 || step === o.steps) save();
      const done = step - startStep;
      onProgress?.({
        phase: 'train', done: step, total: o.steps,
        metrics: { loss, ...(curve.evalLoss.length ? { 'held-out': curve.evalLoss.at(-1)! } : {}), lr, 'tok/s': Math.round((done * o.batch * T) / msTraining * 1000) },
      });
    }
    if (stoppedEarly) save();
    const trainMs = performance.now() - t0;
    const weights = copy(opt.params);
    const final = await evaluate();
    const tokensPerSecond = msTraining > 0 ? ((step - startStep) * o.batch * T * 1000) / msTraining : 0;
    const result: TrainTargetResult = {
      backend, config: cfg, parameters: parameterCount(cfg), steps: step, startStep, stoppedEarly, initial, final, curve,
      tokensPerSecond, trainMs, weights, tokenizer, tensorCounts,
    };
    writeTargetDir(out, result, {
      backend, options: o, parameters: result.parameters, steps: step, startStep, stoppedEarly, initial, final, tokensPerSecond, trainMs,
      corpus: { dir: corpusDir, sha256: corpus.sha256, bytes: corpus.bytes, trainFiles: corpus.train.length, heldOutFiles: corpus.heldOut.map((f) => f.name), trainTokens: train.length, heldOutTokens: heldOutStream.length },
      curve,
    });
    return result;
  } finally {
    await runner.dispose();
  }
}

/** What the training loop needs from a backend. */
interface TargetSteps {
  /** Mean next-token loss of windows `ids`/`labels` [b*T] and its gradients at `params`. */
  step(params: Weights, ids: Int32Array, labels: Int32Array): Promise<{ loss: number; grads: Map<string, Float32Array> }>;
  /** The loss only (held-out evaluation). */
  loss(params: Weights, ids: Int32Array, labels: Int32Array): Promise<number>;
  /** Live tfjs tensors (null on ort): flat across steps when nothing leaks. */
  tensorCount(): number | null;
  dispose(): Promise<void>;
}

/** Target steps in TensorFlow.js: `windowLoss` differentiated by tfjs autograd. */
export class TfTargetSteps implements TargetSteps {
  private readonly mask: Tensor;

  /** @param earlyExit the early-exit loss weight of training steps (held-out `loss` is the final layer's alone). */
  constructor(private readonly tf: Tf, private readonly cfg: ModelConfig, T: number, private readonly oneHotEmbed: boolean, private readonly earlyExit = 0) {
    this.mask = additiveMask(tf, T, T, (i, j) => j <= i); // [T, T] causal, shared by every window
  }

  private lossOf(names: string[], ts: Tensor[], ids: Int32Array, labels: Int32Array, earlyExit = 0): Scalar {
    const byName = new Map(names.map((n, i) => [n, ts[i]]));
    return windowLoss(this.tf, this.cfg, (n) => byName.get(n) ?? missing(n), this.mask, ids, labels, this.oneHotEmbed, earlyExit);
  }

  async step(params: Weights, ids: Int32Array, labels: Int32Array): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
    const tf = this.tf, names = [...params.keys()];
    let out: { loss: number; grads: Map<string, Float32Array> } | undefined;
    tf.tidy(() => {
      const xs = names.map((n) => tf.tensor(params.get(n)!.data, params.get(n)!.shape));
      const { value, grads } = tf.valueAndGrads((...ts: Tensor[]) => this.lossOf(names, ts, ids, labels, this.earlyExit))(xs);
      // Copies: a backend may reuse the memory once the tidy scope ends.
      out = { loss: value.dataSync()[0], grads: new Map(names.map((n, i) => [n, (grads[i].dataSync() as Float32Array).slice()])) };
    });
    return out!;
  }

  async loss(params: Weights, ids: Int32Array, labels: Int32Array): Promise<number> {
    const tf = this.tf, names = [...params.keys()];
    return tf.tidy(() => this.lossOf(names, names.map((n) => tf.tensor(params.get(n)!.data, params.get(n)!.shape)), ids, labels).dataSync()[0]);
  }

  tensorCount(): number {
    return this.tf.memory().numTensors;
  }

  async dispose(): Promise<void> {
    this.mask.dispose();
  }
}

/** The model directory: HF checkpoint, tokenizer files, curve and `record` as training.json (each file atomic). */
function writeTargetDir(out: string, r: TrainTargetResult, record: object): void {
  saveHfCheckpoint(out, r.config, r.weights);
  writeTokenizer(out, r.tokenizer);
  writeFileAtomic(join(out, 'training-curve.svg'), curvePlot(r.curve));
  writeFileAtomic(join(out, 'training.json'), JSON.stringify(record, null, 2) + '\n');
}

function missing(name: string): never {
  throw new Error(`target forward asked for unknown weight ${name}`);
}

function curvePlot(c: TargetCurve): string {
  return linePlot(
    [{ label: 'train loss', x: c.step, y: c.loss }, { label: 'held-out loss', x: c.evalStep, y: c.evalLoss }],
    { title: 'target training (cross-entropy, nats)', xLabel: 'step', logY: false },
  );
}
