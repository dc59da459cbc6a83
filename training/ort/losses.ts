/**
 * Training losses on the autodiff tape, each a scalar built from tape primitives so they add up:
 * a trainer's objective is a weighted sum of these (train-draft: feature + token loss; a
 * LayerSkip-style early-exit loss is one more `nextTokenLoss` per layer).
 *
 * `rowWeight` [N] is a graph input: 1/rows for real rows and 0 for padding, so a padded batch
 * gives exactly the mean over its real rows.
 */
import type { Tape, Val } from './tape.ts';

/** Mean SmoothL1 (Huber, beta 1) of pred - target [N, d] over real rows and all d columns. */
export function featureLoss(t: Tape, pred: Val, target: Val, rowWeight: Val): Val {
  return t.scale(t.weightedSum(t.sumLast(t.smoothL1(t.sub(pred, target))), rowWeight), 1 / pred.shape[1]);
}

/** Mean cross-entropy of logits [N, V] against target distributions `teacher` [N, V] (no gradient). */
export function softCrossEntropy(t: Tape, logits: Val, teacher: Val, rowWeight: Val): Val {
  return t.scale(t.weightedSum(t.sumLast(t.mul(t.logSoftmax(logits), teacher)), rowWeight), -1);
}

/** Mean next-token cross-entropy of logits [N, V] against labels [N] (int64). */
export function nextTokenLoss(t: Tape, logits: Val, labels: Val, rowWeight: Val): Val {
  const V = logits.shape[1], g = t.g;
  const oneHot = g.op('OneHot', [labels.name, g.constant('int64', [], [V]), g.constant('float32', [2], [0, 1])], { axis: -1 }); // [N, V]
  return softCrossEntropy(t, logits, t.constant(oneHot, logits.shape), rowWeight);
}

/** Teacher distribution softmax(logits) as a constant of the graph (logits must not need a gradient). */
export function teacherProbs(t: Tape, logits: Val): Val {
  if (logits.grad) throw new Error('teacherProbs: the teacher logits must be constant');
  return t.constant(t.g.op('Softmax', [logits.name], { axis: -1 }), logits.shape);
}

/** w1 a + w2 b, skipping terms of weight 0. */
export function weighted(t: Tape, terms: [number, Val][]): Val {
  const used = terms.filter(([w]) => w !== 0).map(([w, v]) => (w === 1 ? v : t.scale(v, w)));
  if (used.length === 0) throw new Error('every loss term has weight 0');
  return used.reduce((a, b) => t.add(a, b));
}

/** Weighted squared error of pred [N] against constant targets y [N]: sum rowWeight (pred - y)^2. */
export function squaredError(t: Tape, pred: Val, y: Val, rowWeight: Val): Val {
  const e = t.sub(pred, y);
  return t.weightedSum(t.mul(e, e), rowWeight);
}

/**
 * Binary cross-entropy with logits z [N] against 0/1 targets y [N]: sum rowWeight (softplus(z) -
 * y z). Class weights go into rowWeight (normalised to sum 1).
 */
export function binaryCrossEntropy(t: Tape, z: Val, y: Val, rowWeight: Val): Val {
  return t.weightedSum(t.sub(t.softplus(z), t.mul(z, y)), rowWeight);
}
