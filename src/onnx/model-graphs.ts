/**
 * The two ONNX models eaglet runs, rendered from src/model/definition.ts:
 *
 * target (llamaForward)                          draft head (eagleHeadForward)
 *   in  input_ids     int64 [1, T]                 in  input_ids, position_ids, tree_mask, past_*_0
 *       position_ids  int64 [1, T]                     features  float32 [1, T, d]
 *       tree_mask     bool  [T, W]                 out hidden        float32 [1, T, d]
 *       past_key_{l}, past_value_{l}                   topk_logprobs float32 [1, T, k]
 *                     float32 [1, P, nKv, hd]          topk_ids      int32   [1, T, k]
 *   out logits        float32 [1, T, V]                present_key_0, present_value_0
 *       features      float32 [1, T, d]
 *       present_key_{l}, present_value_{l}
 *                     float32 [1, T, nKv, hd]   (new rows only: ORT copies every output)
 *
 * tree_mask [T, W] covers the last W of the P + T keys: row i is 1 where token i sees that key
 * (in a verification tree: its ancestors and itself, W = T; in a draft depth: also the staged
 * rows of its ancestors, W > T). Every token sees the P + T - W keys before them. P may be 0.
 */
import { GraphBuilder } from './graph.ts';
import { OnnxOps, type OnnxOpsOptions } from '../model/onnx-ops.ts';
import { draftLogits, eagleHeadForward, llamaForward, type HeadLayout, type PassInputs } from '../model/definition.ts';
import { draftToTarget } from '../model/draft-head.ts';
import type { ModelConfig } from '../model/config.ts';
import type { HeadConfig } from '../model/draft-head.ts';
import type { Weights } from '../model/weights.ts';

/** Opset 23 (IR 11): the first with Attention and RotaryEmbedding as standard ops. */
const MODEL_OPTIONS = { opset: 23, irVersion: 11 };

/** Graph input and output names, shared by both models. */
export const names = {
  ids: 'input_ids',
  positions: 'position_ids',
  tree: 'tree_mask',
  features: 'features',
  pastKey: (l: number) => `past_key_${l}`,
  pastValue: (l: number) => `past_value_${l}`,
  logits: 'logits',
  hidden: 'hidden',
  topkLogProbs: 'topk_logprobs',
  topkIds: 'topk_ids',
  presentKey: (l: number) => `present_key_${l}`,
  presentValue: (l: number) => `present_value_${l}`,
} as const;

/** Declares ids, positions, tree mask and past K/V inputs; returns them in the definition's 2-D form. */
function stepInputs(g: GraphBuilder, ops: OnnxOps, kv: HeadLayout, nLayers: number): PassInputs<string> {
  const flat = (name: string): string => g.op('Reshape', [g.input(name, 'int64', [1, 'T']), g.ints([-1])]); // [T]
  const ids = flat(names.ids), positions = flat(names.positions);
  const tree = g.input(names.tree, 'bool', ['T', 'W']);
  const past = Array.from({ length: nLayers }, (_, l) => ({
    keys: g.input(names.pastKey(l), 'float32', [1, 'P', kv.nKvHeads, kv.headDim]),
    values: g.input(names.pastValue(l), 'float32', [1, 'P', kv.nKvHeads, kv.headDim]),
  }));
  return { ids, positions, mask: ops.treeMask(tree, past[0].keys), past };
}

/** Outputs the new K/V rows of each layer ([T, nKv*hd], or [1, T, nKv*hd] from rope) as [1, T, nKv, hd]. */
function presentOutputs(g: GraphBuilder, kv: HeadLayout, keys: string[], values: string[]): void {
  const shape = g.ints([1, -1, kv.nKvHeads, kv.headDim]);
  const dims = [1, 'T', kv.nKvHeads, kv.headDim];
  keys.forEach((k, l) => g.output(g.op('Reshape', [k, shape]), names.presentKey(l), 'float32', dims));
  values.forEach((v, l) => g.output(g.op('Reshape', [v, shape]), names.presentValue(l), 'float32', dims));
}

/** [T, w] -> graph output [1, T, w]. */
function batchOutput(g: GraphBuilder, x: string, name: string, dtype: 'float32' | 'int32', width: number): void {
  g.output(g.op('Unsqueeze', [x, g.ints([0])]), name, dtype, [1, 'T', width]);
}

/** The target model's ONNX bytes (weights embedded as initializers). */
export function buildTargetModel(cfg: ModelConfig, weights: Weights): Uint8Array {
  const g = new GraphBuilder('eaglet_target');
  const ops = new OnnxOps(g, (n) => weights.get(n), cfg.maxSeqLen);
  const r = llamaForward(ops, cfg, stepInputs(g, ops, cfg, cfg.nLayers));
  batchOutput(g, r.logits, names.logits, 'float32', cfg.vocabSize);
  batchOutput(g, r.features, names.features, 'float32', cfg.dim);
  presentOutputs(g, cfg, r.keys, r.values);
  return g.toModel(MODEL_OPTIONS);
}

/** Candidates a draft head can score per row: its draft vocabulary size. */
export function draftVocabOf(head: HeadConfig): number {
  return head.draftVocabSize ?? head.vocabSize;
}

/**
 * The draft head's ONNX bytes. The target's embedding table (and LM head, unless the head has
 * its own reduced one) are embedded too; the top-k of each row's log-softmax is taken in-graph
 * so only [T, k] crosses back to JS, already mapped to target ids for a reduced vocabulary
 * (one Gather through the d2t table). k is clamped to the draft vocabulary size.
 */
export function buildDraftModel(head: HeadConfig, headWeights: Weights, target: ModelConfig, targetWeights: Weights, topK: number, opsOptions: OnnxOpsOptions = {}): Uint8Array {
  const g = new GraphBuilder('eaglet_draft');
  // The head's own tensors first: a reduced head's lm_head.weight shadows an untied target's.
  const ops = new OnnxOps(g, (n) => headWeights.get(n) ?? targetWeights.get(n), target.maxSeqLen, opsOptions);
  const inp = stepInputs(g, ops, head, 1);
  const features = g.op('Reshape', [g.input(names.features, 'float32', [1, 'T', head.dim]), g.ints([-1, head.dim])]); // [T, d]
  const r = eagleHeadForward(ops, head, features, inp);
  const k = Math.min(topK, draftVocabOf(head));
  const logProbs = g.op('LogSoftmax', [draftLogits(ops, head, target, r.hidden)], { axis: -1 }); // [T, N]
  const [values, draftIds] = g.node('TopK', [logProbs, g.ints([k])], { axis: -1, largest: 1, sorted: 1 }, { outputs: 2 }); // [T, k]
  const toTarget = draftToTarget(head, headWeights);
  const ids = toTarget ? g.op('Gather', [g.initializer('draft_to_target', { dtype: 'int32', dims: [toTarget.length], data: toTarget }), draftIds], { axis: 0 }) : g.op('Cast', [draftIds], { to: 6 /* INT32 */ });
  batchOutput(g, r.hidden, names.hidden, 'float32', head.dim);
  batchOutput(g, values, names.topkLogProbs, 'float32', k);
  batchOutput(g, ids, names.topkIds, 'int32', k);
  presentOutputs(g, head, [r.key], [r.value]);
  return g.toModel(MODEL_OPTIONS);
}
