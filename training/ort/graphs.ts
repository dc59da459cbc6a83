/**
 * The ONNX training graphs: the model definition rendered by TapeOps, a loss from losses.ts, and
 * `Tape.backward`, built into one graph with inputs = parameters + batch and outputs = loss +
 * one gradient per parameter (`grad.<name>`). A `GradSession` runs one on onnxruntime.
 */
import { earlyExitLoss } from '../early-exit.ts';
import { availableParallelism } from 'node:os';
import type { ModelConfig } from '../../src/model/config.ts';
import { draftLogits, eagleHeadForward, lmHead, llamaForward } from '../../src/model/definition.ts';
import { DRAFT_VOCAB, draftToTarget, trainableHeadShapes, type HeadConfig } from '../../src/model/draft-head.ts';
import { mlpForward, mlpShapes, type MlpConfig } from '../../src/model/mlp.ts';
import { EMBEDDING, expectedShapes, outputHead, outputHeadName, type Weights } from '../../src/model/weights.ts';
import { GraphBuilder } from '../../src/onnx/graph.ts';
import { createSession, f32, f32Data, i64, releaseSession, runTimed, type Feeds, type Fetches, type Session } from '../../src/runtime/ort.ts';
import { binaryCrossEntropy, featureLoss, nextTokenLoss, softCrossEntropy, squaredError, teacherProbs, weighted } from './losses.ts';
import { Tape, type Val } from './tape.ts';
import { TTT_DECAY } from '../ttt.ts';
import { MASK_NEG } from '../../src/onnx/ops.ts';
import { frozen, TapeOps } from './tape-ops.ts';

const OPSET = 23, IR = 10;

/** A built training graph: model bytes plus the parameter names and shapes it reads, in order. */
export interface TrainGraph {
  model: Uint8Array;
  params: Map<string, number[]>;
}

/** Declares every parameter of `shapes` as a tape input and returns a lookup over them and `extra`. */
function paramLookup(t: Tape, shapes: Map<string, number[]>, extra: Map<string, Val> = new Map()): (name: string) => Val {
  const byName = new Map<string, Val>([...shapes].map(([n, s]) => [n, t.param(n, s)]));
  return (n) => byName.get(n) ?? extra.get(n) ?? missing(n);
}

function finish(t: Tape, g: GraphBuilder, loss: Val, params: Map<string, number[]>, withGrads: boolean, extra: [string, string, import('../../src/onnx/graph.ts').DType, number[]][] = []): TrainGraph {
  g.output(loss.name, 'loss', 'float32', []);
  if (withGrads) for (const [n, gname] of t.backward(loss)) g.output(gname, `grad.${n}`, 'float32', params.get(n)!);
  for (const [v, name, dtype, dims] of extra) g.output(v, name, dtype, dims);
  return { model: g.toModel({ opset: OPSET, irVersion: IR }), params };
}

/**
 * Next-token training of a target: B windows of T tokens. Inputs: the parameters, `ids`,
 * `labels` (next tokens) and `positions` [B*T] int64, `mask` [T, T] additive, `rowWeight` [B*T].
 * Outputs: `loss` (mean cross-entropy) and, with `withGrads`, the gradients.
 */
export function targetTrainGraph(cfg: ModelConfig, B: number, T: number, withGrads = true, earlyExit = 0): TrainGraph {
  const g = new GraphBuilder('eaglet_train_target'), t = new Tape(g), N = B * T;
  const shapes = expectedShapes(cfg);
  const ops = new TapeOps(t, paramLookup(t, shapes), B, Math.max(T, cfg.maxSeqLen));
  const ids = t.input('ids', 'int64', [N]), labels = t.input('labels', 'int64', [N]), positions = t.input('positions', 'int64', [N]);
  const mask = t.input('mask', 'float32', [T, T]), rowWeight = t.input('rowWeight', 'float32', [N]);
  const { logits, hiddens } = llamaForward(ops, cfg, { ids, positions, mask, past: null });
  const final = nextTokenLoss(t, logits, labels, rowWeight);
  // earlyExit > 0: LayerSkip-style next-token loss at every layer's normed hidden state (training/early-exit.ts).
  const early = earlyExitLoss(ops, cfg, hiddens, earlyExit, (l) => nextTokenLoss(t, l, labels, rowWeight), (x, w) => t.scale(x, w));
  return finish(t, g, early ? t.add(final, early) : final, shapes, withGrads);
}

/** Weights of the EAGLE-1 draft loss. */
export interface DraftLossWeights {
  featureWeight: number;
  tokenWeight: number;
}

/**
 * EAGLE-1 draft-head training: B windows of T rows (padded). Inputs: the head's parameters,
 * `features` (noised input features) and `targetFeatures` [B*T, d], `ids` (token_{t+1}) and
 * `positions` [B*T] int64, `mask` [T, T], `rowWeight` [B*T]. The target's embeddings and LM
 * head are frozen initializers. loss = featureWeight * SmoothL1(pred, target) + tokenWeight *
 * CE(softmax(lmHead(target)), logSoftmax(lmHead(pred))). Without grads, the graph is the
 * validation pass: outputs also `featureLoss` and `top3` [B*T, 3] (int64) draft token ids.
 *
 * A head with a reduced draft vocabulary (`head.draftVocabSize`, tensors in `vocab`) scores its N
 * tokens with its own frozen LM head; the teacher is the target's full-vocabulary distribution
 * restricted to those N tokens (as TfDraftSteps; see train-draft.ts), and `top3` holds draft ids.
 *
 * `ttt` = K > 1 unrolls the draft chain K steps (training/ttt.ts): step j (1..K-1) has its own
 * inputs `ids.j`, `positions.j`, `targetFeatures.j` and `rowWeight.j` (row t's token, position
 * and targets of chain step j, weight 0 where there are none), reads step j-1's predicted
 * features, and attends to step 0's keys and values through `mask` and to steps 1..j's on the
 * diagonal; loss = sum_j TTT_DECAY^j * (step j's loss). K = 1 builds exactly the graph above.
 */
export function draftTrainGraph(target: { config: ModelConfig; weights: Weights }, head: HeadConfig, B: number, T: number, w: DraftLossWeights, withGrads = true, vocab: Weights = new Map(), ttt = 1): TrainGraph {
  const cfg = target.config, d = cfg.dim, N = B * T;
  const g = new GraphBuilder('eaglet_train_draft'), t = new Tape(g);
  const shapes = trainableHeadShapes(head);
  const lmName = outputHeadName(cfg);
  const extra = new Map<string, Val>([[EMBEDDING, frozen(t, EMBEDDING, target.weights.get(EMBEDDING)!)]]);
  if (!cfg.tieEmbeddings) extra.set(lmName, frozen(t, lmName, outputHead(cfg, target.weights)));
  const toTarget = draftToTarget(head, vocab);
  // The head's own LM head has the name of an untied target's: the head and the teacher look weights up apart.
  const headExtra = new Map(extra);
  if (toTarget) headExtra.set(DRAFT_VOCAB.lmHead, frozen(t, 'draft_vocab.lm_head', vocab.get(DRAFT_VOCAB.lmHead)!));
  const ops = new TapeOps(t, paramLookup(t, shapes, headExtra), B, Math.max(T, cfg.maxSeqLen));
  const teacherOps = toTarget ? new TapeOps(t, (n) => extra.get(n) ?? missing(n), B, Math.max(T, cfg.maxSeqLen)) : ops;
  const features = t.input('features', 'float32', [N, d]), targetFeatures = t.input('targetFeatures', 'float32', [N, d]);
  const ids = t.input('ids', 'int64', [N]), positions = t.input('positions', 'int64', [N]);
  const mask = t.input('mask', 'float32', [T, T]), rowWeight = t.input('rowWeight', 'float32', [N]);
  /** One step's loss: the feature loss and the token loss against the target's distribution at `tgt`. */
  const stepLoss = (hidden: Val, tgt: Val, rw: Val) => {
    const logits = draftLogits(ops, head, cfg, hidden); // [N, V or draft N]
    const fl = featureLoss(t, hidden, tgt, rw);
    let teacher = teacherProbs(t, lmHead(teacherOps, cfg, tgt)); // [N, V]
    if (toTarget) teacher = t.constant(g.op('Gather', [teacher.name, g.constant('int64', [toTarget.length], toTarget)], { axis: 1 }), [N, toTarget.length]);
    const tl = softCrossEntropy(t, logits, teacher, rw);
    return { logits, fl, loss: weighted(t, [[w.featureWeight, fl], [w.tokenWeight, tl]]) };
  };
  const step0 = eagleHeadForward(ops, head, features, { ids, positions, mask, past: null });
  const { logits, fl, loss: loss0 } = stepLoss(step0.hidden, targetFeatures, rowWeight);
  let loss = loss0;
  if (ttt > 1) {
    // Step j's keys: step 0's through `mask`, then steps 1..j's own row only (0 on the diagonal).
    const diagonal = g.initializer('ttt_diagonal', { dtype: 'float32', dims: [T, T], data: Float32Array.from({ length: T * T }, (_, k) => (k % T === Math.floor(k / T) ? 0 : MASK_NEG)) });
    let past = { keys: step0.key, values: step0.value }, hidden = step0.hidden, stepMask = mask.name;
    for (let j = 1; j < ttt; j++) {
      const input = (name: string, dtype: 'int64' | 'float32', dims: number[]): Val => t.input(`${name}.${j}`, dtype, dims);
      stepMask = g.op('Concat', [stepMask, diagonal], { axis: 1 }); // [T, (j + 1) T]
      // The predicted features are the next step's input, with their gradient (EAGLE-3 does the same).
      const step = eagleHeadForward(ops, head, hidden, { ids: input('ids', 'int64', [N]), positions: input('positions', 'int64', [N]), mask: t.constant(stepMask, [T, (j + 1) * T]), past: [past] });
      loss = t.add(loss, t.scale(stepLoss(step.hidden, input('targetFeatures', 'float32', [N, d]), input('rowWeight', 'float32', [N])).loss, TTT_DECAY ** j));
      past = { keys: ops.concatRows(past.keys, step.key), values: ops.concatRows(past.values, step.value) };
      hidden = step.hidden;
    }
  }
  const k = Math.min(3, logits.shape[1]);
  const extras: [string, string, 'float32' | 'int64', number[]][] = withGrads
    ? []
    : [[fl.name, 'featureLoss', 'float32', []], [g.node('TopK', [logits.name, g.ints([k])], { axis: -1 }, { outputs: 2 })[1], 'top3', 'int64', [N, k]]];
  return finish(t, g, loss, shapes, withGrads, extras);
}

/**
 * Training of the small predictor heads (src/model/mlp.ts) on N rows: inputs the MLP's parameters,
 * `x` [N, in], the labels (`labels` [N] int64 for 'classification', `y` [N] float otherwise) and
 * `rowWeight` [N]. loss: classification = cross-entropy over the classes, regression = squared
 * error of the one output, bce = binary cross-entropy with logits; each summed with rowWeight.
 */
export function predictorTrainGraph(mlp: MlpConfig, objective: 'classification' | 'regression' | 'bce', N: number, withGrads = true): TrainGraph {
  const g = new GraphBuilder('eaglet_train_predictor'), t = new Tape(g);
  const shapes = mlpShapes(mlp);
  const ops = new TapeOps(t, paramLookup(t, shapes), 1, 1);
  const x = t.input('x', 'float32', [N, mlp.inputDim]), rowWeight = t.input('rowWeight', 'float32', [N]);
  const out = mlpForward(ops, mlp, x); // [N, out]
  let loss: Val;
  if (objective === 'classification') loss = nextTokenLoss(t, out, t.input('labels', 'int64', [N]), rowWeight);
  else {
    const y = t.input('y', 'float32', [N]), z = t.reshape(out, [N]);
    loss = objective === 'regression' ? squaredError(t, z, y, rowWeight) : binaryCrossEntropy(t, z, y, rowWeight);
  }
  return finish(t, g, loss, shapes, withGrads);
}

/** Intra-op threads for training: all cores (measured faster than cores - 1 for training steps; see scripts/bench-train.ts). */
export const TRAIN_THREADS = availableParallelism();

/** One training graph on onnxruntime: feeds parameters and a batch, returns loss and gradients. */
export class GradSession {
  private constructor(private readonly s: Session, readonly params: Map<string, number[]>) {}

  static async create(graph: TrainGraph, threads = TRAIN_THREADS): Promise<GradSession> {
    return new GradSession(await createSession(graph.model, { threads }), graph.params);
  }

  /** Runs once. `weights` holds every parameter; `batch` the data inputs. */
  async run(weights: Weights, batch: Feeds): Promise<{ loss: number; grads: Map<string, Float32Array>; out: Fetches }> {
    const feeds: Feeds = { ...batch };
    for (const [n, shape] of this.params) feeds[n] = f32(weights.get(n)!.data, shape);
    const out = await runTimed(this.s, feeds);
    const grads = new Map<string, Float32Array>();
    for (const n of this.params.keys()) if (out[`grad.${n}`]) grads.set(n, f32Data(out[`grad.${n}`]));
    return { loss: f32Data(out.loss)[0], grads, out };
  }

  /** Milliseconds spent inside onnxruntime so far. */
  get msInRun(): number {
    return this.s.stats.msInRun;
  }

  async dispose(): Promise<void> {
    await releaseSession(this.s);
  }
}

/** Typed-array feed helpers for the batch inputs. */
export const feed = {
  f32,
  ids: (xs: ArrayLike<number>): ReturnType<typeof i64> => i64(BigInt64Array.from(Array.from(xs), (x) => BigInt(x)), [xs.length]),
};

function missing(name: string): never {
  throw new Error(`training graph asked for unknown weight ${name}`);
}
