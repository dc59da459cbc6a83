/**
 * The two ONNX models eaglet runs, rendered from src/model/definition.ts:
 *
 * target (llamaForward)                          draft head (eagleHeadForward)
 *   in  input_ids     int64 [1, T]                 in  input_ids, position_ids, tree_mask,
 *       position_ids  int64 [1, T]                         past_length, past_*_0
 *       tree_mask     bool  [T, W]                     features  float32 [1, T, d]
 *       past_length   int64 [1] = L                out hidden        float32 [1, T, d]
 *       past_key_{l}  float32 [1, nKv, S, hd] (rows)   topk_logprobs float32 [1, T, k]
 *       past_value_{l}  or [1, nKv, hd, S] (transposed) topk_ids     int32   [1, T, k]
 *                     (keys and values alike)
 *                                                      entropy       float32 [1, T, 1]
 *   out logits        float32 [1, T, V]                present_key_0, present_value_0
 *       argmax        int32   [1, T]
 *       features      float32 [1, T, d]
 *       present_key_{l}, present_value_{l}
 *                     float32 [1, T, nKv, hd]   (new rows only: ORT copies every output)
 *
 * Past K/V are the KVCache's head-major blocks, read in place: S >= L rows per head, of which
 * the first L are live (see runtime/kv-cache.ts). The keys' and values' layout is the rendering's
 * `valueLayout` (OnnxOpsOptions; by default the one its attention mode reads best), and a
 * session feeds only a cache in that layout. tree_mask [T, W] covers the last W of the
 * L + T live keys: row i is 1 where token i sees that key (in a verification tree: its
 * ancestors and itself, W = T; in a draft depth: also the staged rows of its ancestors, W > T).
 * Every token sees the L + T - W keys before them. L may be 0. Callers fetch only the outputs
 * they need (greedy verification: argmax, not the [T, V] logits).
 */
import { GraphBuilder, type ExternalModel } from './graph.ts';
import { MASK_NEG, OnnxOps, defaultAttention, type AttentionMode, type OnnxOpsOptions, type ValueLayout } from './ops.ts';
import { draftLogits, eagleHeadForward, embedTokens, finalNorm, lmHead, llamaForward, llamaLayers, type HeadLayout, type LlamaOut, type PassInputs, type PastKV } from '../model/definition.ts';
import { draftToTarget } from '../model/draft-head.ts';
import type { ModelConfig } from '../model/config.ts';
import type { HeadConfig } from '../model/draft-head.ts';
import type { Weights } from '../model/weights.ts';
import { quantOf } from '../model/quantize.ts';

/** Opset 23 (IR 11): the first with Attention and RotaryEmbedding as standard ops (RMSNorm renders as ORT's own kernels: ops.ts, `rmsNorm`). */
const MODEL_OPTIONS = { opset: 23, irVersion: 11 };

/** Graph input and output names, shared by both models. */
export const names = {
  ids: 'input_ids',
  positions: 'position_ids',
  tree: 'tree_mask',
  pastLength: 'past_length',
  /** A one-token graph's additive mask [1, S + 1] (OnnxOpsOptions.oneToken): 0 where the row sees the key. */
  stepMask: 'step_mask',
  features: 'features',
  pastKey: (l: number) => `past_key_${l}`,
  pastValue: (l: number) => `past_value_${l}`,
  logits: 'logits',
  argmax: 'argmax',
  hidden: 'hidden',
  topkLogProbs: 'topk_logprobs',
  topkIds: 'topk_ids',
  entropy: 'entropy',
  layerHidden: 'layer_hidden',
  shadowIds: 'shadow_ids',
  presentKey: (l: number) => `present_key_${l}`,
  presentValue: (l: number) => `present_value_${l}`,
  /** Every layer's new K/V rows in one output (see presentOutputs). */
  present: 'present',
  draftIds: 'draft_ids',
  /** The fused round's head inputs and outputs: the step names with this prefix. */
  headPrefix: 'draft_',
  /** Serving batch passes (per-slot attention): the mask [B, M, S + M] and the row maps. */
  slotMask: 'slot_mask',
  padRows: 'pad_rows',
  unpadRows: 'unpad_rows',
  /** A serving draft pass's rows whose outputs beyond K/V are read (buildSlotDraftModel). */
  outRows: 'out_rows',
} as const;

/** Dims of a past K or V input: [batch, nKv, S, hd] in the 'rows' layout, [batch, nKv, hd, S] 'transposed'. */
function pastDims(batch: number | string, kv: HeadLayout, layout: ValueLayout): (number | string)[] {
  return layout === 'rows' ? [batch, kv.nKvHeads, 'S', kv.headDim] : [batch, kv.nKvHeads, kv.headDim, 'S'];
}

/**
 * Declares ids (unless `withIds` is false, or a function making them in-graph from the
 * positions [T]), positions, tree mask and past K/V inputs of the given layers (named by
 * absolute layer index); returns them in the definition's 2-D form.
 */
function stepInputs(g: GraphBuilder, ops: OnnxOps, kv: HeadLayout, layers: number[], withIds: boolean | ((positions: string) => string) = true, evenPass = false): PassInputs<string> {
  if (ops.oneToken) return oneTokenInputs(g, ops, kv, layers);
  const flat = (name: string): string => g.op('Reshape', [g.input(name, 'int64', [1, 'T']), g.ints([-1])]); // [T]
  const positions0 = flat(names.positions);
  const ids0 = typeof withIds === 'function' ? withIds(positions0) : withIds ? flat(names.ids) : '';
  const given = { ids: ids0, positions: positions0, tree: g.input(names.tree, 'bool', ['T', 'W']) };
  // evenPass: the pass padded to even rows once here (OnnxOps.evenPass); outputs take `unpadRows`.
  const { ids, positions, tree } = evenPass ? ops.evenPass(given) : given;
  const past: PastKV<string>[] = [];
  for (const l of layers) {
    past[l] = {
      keys: g.input(names.pastKey(l), 'float32', pastDims(1, kv, ops.valueLayout)),
      values: g.input(names.pastValue(l), 'float32', pastDims(1, kv, ops.valueLayout)),
    };
  }
  const pastLength = g.input(names.pastLength, 'int64', [1]);
  return { ids, positions, mask: ops.treeMask(tree, past[layers[0]].values, pastLength), past };
}

/**
 * stepInputs of a one-token graph (OnnxOpsOptions.oneToken): ids and positions [1, 1], past
 * K/V, and instead of the tree mask and past length the additive mask [1, S + 1] itself (the
 * L live past rows and the new row 0, the unused rows [L, S) MASK_NEG: StepFeeds fills it).
 */
function oneTokenInputs(g: GraphBuilder, ops: OnnxOps, kv: HeadLayout, layers: number[]): PassInputs<string> {
  const ids = g.op('Reshape', [g.input(names.ids, 'int64', [1, 1]), g.ints([-1])]); // [1]
  const positions = g.input(names.positions, 'int64', [1, 1]); // RoPE's own form
  const past: PastKV<string>[] = [];
  for (const l of layers) {
    past[l] = {
      keys: g.input(names.pastKey(l), 'float32', pastDims(1, kv, ops.valueLayout)),
      values: g.input(names.pastValue(l), 'float32', pastDims(1, kv, ops.valueLayout)),
    };
  }
  return { ids, positions, mask: g.input(names.stepMask, 'float32', [1, 'S1']), past };
}

/**
 * A serving batch pass's inputs (see OnnxOps.perSlot): N packed rows of B slots, at most M per
 * slot. ids, positions [1, N]; slot_mask bool [B, M, S + M] (per slot and padded row: which of
 * the slot's S cache rows and M new rows it sees); pad_rows int64 [B * M], unpad_rows int64
 * [N]; past K/V of every slot, K and V in `ops.valueLayout` (the batch cache's
 * first B slots, zero-copy). Sets `ops` to render attention per slot.
 */
function slotInputs(g: GraphBuilder, ops: OnnxOps, kv: HeadLayout, layers: number[]): PassInputs<string> {
  const flat = (name: string): string => g.op('Reshape', [g.input(name, 'int64', [1, 'N']), g.ints([-1])]); // [N]
  const ids = flat(names.ids), positions = flat(names.positions);
  const mask = g.op('Where', [g.input(names.slotMask, 'bool', ['B', 'M', 'W']), g.scalar(0), g.scalar(MASK_NEG)]);
  ops.perSlot(g.input(names.padRows, 'int64', ['BM']), g.input(names.unpadRows, 'int64', ['N']));
  const past: PastKV<string>[] = [];
  for (const l of layers) {
    past[l] = {
      keys: g.input(names.pastKey(l), 'float32', pastDims('B', kv, ops.valueLayout)),
      values: g.input(names.pastValue(l), 'float32', pastDims('B', kv, ops.valueLayout)),
    };
  }
  return { ids, positions, mask, past };
}

/**
 * The target model for serving batch passes: inputs as slotInputs, outputs as buildTargetModel's
 * over the N packed rows. Attention is 'split'; `opsOptions.valueLayout` must be the one of the
 * single-request sessions sharing the batch cache (default: 'split''s).
 */
export function buildSlotTargetModel(cfg: ModelConfig, weights: Weights, opsOptions: OnnxOpsOptions = {}): ExternalModel {
  const g = new GraphBuilder('eaglet_target_slots');
  const ops = targetOps(g, cfg, weights, 'split', opsOptions);
  targetOutputs(g, cfg, llamaForward(ops, cfg, slotInputs(g, ops, cfg, range(0, cfg.nLayers))), { perLayer: true });
  return g.toExternalModel(MODEL_OPTIONS);
}

/**
 * Outputs the new K/V rows of layers first.. ([T, nKv*hd], or [1, T, nKv*hd] from rope) joined
 * as `present` [2n, T, nKv, hd] (the n layers' keys, then their values), and with `perLayer`
 * also as [1, T, nKv, hd] each (`present_key_{l}`, `present_value_{l}`: the serving batch
 * graphs', whose lanes fetch them). Single-request sessions fetch the joined one:
 * onnxruntime-node's cost per fetched output (~5 us; scripts/profile-step.ts) outweighs copying
 * the few new rows once more; and ORT runs every node of a graph whether its output is fetched
 * or not, so the per-layer outputs (a Reshape and an Identity each: 32 of a 100M step's 415
 * nodes) are rendered only where they are read.
 */
function presentOutputs(g: GraphBuilder, kv: HeadLayout, keys: string[], values: string[], { first = 0, perLayer = false, unpad = noUnpad } = {}): void {
  const shape = g.ints([1, -1, kv.nKvHeads, kv.headDim]);
  const dims = [1, 'T', kv.nKvHeads, kv.headDim], joinedDims = [2 * keys.length, 'T', kv.nKvHeads, kv.headDim];
  if (!perLayer && keys.length > 2) {
    // Keys ([1, T, w] from rope, or [T, w]) and values of one kind each are stacked along their
    // first axis, flattened to rows [n*T, w] and joined: 6 nodes instead of one Reshape per
    // layer and kind (8 layers: 17 -> 6; ORT's cost per node is most of a small node's time).
    const w = kv.nKvHeads * kv.headDim;
    const rows = (xs: string[]) => g.op('Reshape', [g.op('Concat', xs, { axis: 0 }), g.ints([-1, w])]);
    const all = g.op('Concat', [rows(keys), rows(values)], { axis: 0 }); // [2n*T, w]: layer-major, row-major within a layer
    g.output(unpad(g.op('Reshape', [all, g.ints([2 * keys.length, -1, kv.nKvHeads, kv.headDim])]), 1), names.present, 'float32', joinedDims);
    return;
  }
  const ks = keys.map((k) => g.op('Reshape', [k, shape])), vs = values.map((v) => g.op('Reshape', [v, shape]));
  if (perLayer) {
    ks.forEach((k, l) => g.output(unpad(k, 1), names.presentKey(first + l), 'float32', dims));
    vs.forEach((v, l) => g.output(unpad(v, 1), names.presentValue(first + l), 'float32', dims));
  }
  g.output(unpad(g.op('Concat', [...ks, ...vs], { axis: 0 }), 1), names.present, 'float32', joinedDims);
}

/** Rows of a pass's output, for a pass padded to even rows (OnnxOps.unpadRows); by default the output as it is. */
type Unpad = (x: string, axis?: number) => string;
const noUnpad: Unpad = (x) => x;

/** Per-layer residuals [T, d] each -> graph output `layer_hidden` [T, n, d] (row-major: row t's layers side by side). */
function layerHiddenOutput(g: GraphBuilder, hiddens: string[], dim: number): void {
  const cols = hiddens.map((h) => g.op('Reshape', [h, g.ints([-1, 1, dim])])); // [T, 1, d]
  const all = cols.length === 1 ? cols[0] : g.op('Concat', cols, { axis: 1 });
  g.output(all, names.layerHidden, 'float32', ['T', hiddens.length, dim]);
}

/** [T, w] -> graph output [1, T, w]. */
function batchOutput(g: GraphBuilder, x: string, name: string, dtype: 'float32' | 'int32', width: number): void {
  g.output(g.op('Unsqueeze', [x, g.ints([0])]), name, dtype, [1, 'T', width]);
}

/**
 * The target model: a small ONNX protobuf whose weights are external data read from the
 * weights' own buffers (no copy in JS; no 2 GB protobuf limit).
 */
export function buildTargetModel(cfg: ModelConfig, weights: Weights, attention: AttentionMode = 'split', opsOptions: OnnxOpsOptions = {}): ExternalModel {
  const g = new GraphBuilder('eaglet_target');
  const ops = targetOps(g, cfg, weights, attention, opsOptions);
  targetOutputs(g, cfg, llamaForward(ops, cfg, stepInputs(g, ops, cfg, range(0, cfg.nLayers), true, true)), { unpad: (x, axis) => ops.unpadRows(x, axis) });
  return g.toExternalModel(MODEL_OPTIONS);
}

/**
 * The target model's outputs: logits, in-graph argmax, features, present K/V (per layer too for
 * a serving batch graph), each `unpad`ded (a pass padded to even rows).
 */
function targetOutputs(g: GraphBuilder, cfg: ModelConfig, r: LlamaOut<string>, { perLayer = false, unpad = noUnpad } = {}): void {
  const logits = unpad(r.logits);
  batchOutput(g, logits, names.logits, 'float32', cfg.vocabSize);
  // Greedy verification needs one id per node, not [T, V] floats copied back.
  const best = g.op('Cast', [g.op('ArgMax', [logits], { axis: -1, keepdims: 0 })], { to: 6 /* INT32 */ }); // [T], first index on ties
  g.output(g.op('Unsqueeze', [best, g.ints([0])]), names.argmax, 'int32', [1, 'T']);
  batchOutput(g, unpad(r.features), names.features, 'float32', cfg.dim);
  presentOutputs(g, cfg, r.keys, r.values, { perLayer, unpad });
}

/** Candidates a draft head can score per row: its draft vocabulary size. */
export function draftVocabOf(head: HeadConfig): number {
  return head.draftVocabSize ?? head.vocabSize;
}

/**
 * The draft head's ONNX model (weights as external data, as the target's). The target's
 * embedding table (and LM head, unless the head has its own reduced one) are embedded too; the
 * top-k of each row's log-softmax is taken in-graph so only [T, k] crosses back to JS, already
 * mapped to target ids for a reduced vocabulary (one Gather through the d2t table). k is clamped
 * to the draft vocabulary size.
 */
export function buildDraftModel(head: HeadConfig, headWeights: Weights, target: ModelConfig, targetWeights: Weights, topK: number, attention: AttentionMode = 'split', opsOptions: OnnxOpsOptions = {}): ExternalModel {
  return draftModel(head, headWeights, target, targetWeights, topK, attention, opsOptions, false);
}

/**
 * The draft head for serving batch passes: inputs as slotInputs plus `features` [1, N, d] and
 * `out_rows` int64 [R], the packed rows whose draft is read; outputs as buildDraftModel's (value
 * layout: as buildSlotTargetModel's), the present K/V for all N rows and the rest for the R rows
 * only. (A catch-up call's rows before its last are only cached: at c=16 on the embedded pair
 * about 13 of a static-1 pass's ~29 rows, whose LM head and top-k went unread.)
 */
export function buildSlotDraftModel(head: HeadConfig, headWeights: Weights, target: ModelConfig, targetWeights: Weights, topK: number, opsOptions: OnnxOpsOptions = {}): ExternalModel {
  return draftModel(head, headWeights, target, targetWeights, topK, 'split', opsOptions, true);
}

function draftModel(head: HeadConfig, headWeights: Weights, target: ModelConfig, targetWeights: Weights, topK: number, attention: AttentionMode, opsOptions: OnnxOpsOptions, slots: boolean): ExternalModel {
  const g = new GraphBuilder(slots ? 'eaglet_draft_slots' : 'eaglet_draft');
  // The head's own tensors first: a reduced head's lm_head.weight shadows an untied target's.
  const ops = new OnnxOps(g, (n) => headWeights.get(n) ?? targetWeights.get(n), target.maxSeqLen, attention, opsOptions);
  const inp = slots ? slotInputs(g, ops, head, [0]) : stepInputs(g, ops, head, [0]);
  const features = g.op('Reshape', [g.input(names.features, 'float32', [1, slots ? 'N' : 'T', head.dim]), g.ints([-1, head.dim])]); // [T, d]
  const r = eagleHeadForward(ops, head, features, inp);
  const hidden = slots ? g.op('Gather', [r.hidden, g.input(names.outRows, 'int64', ['R'])], { axis: 0 }) : r.hidden; // [R, d]
  const k = Math.min(topK, draftVocabOf(head));
  const logProbs = g.op('LogSoftmax', [draftLogits(ops, head, target, hidden)], { axis: -1 }); // [R, N]
  const [values, draftIds] = g.node('TopK', [logProbs, g.ints([k])], { axis: -1, largest: 1, sorted: 1 }, { outputs: 2 }); // [T, k]
  const toTarget = draftToTarget(head, headWeights);
  const ids = toTarget ? g.op('Gather', [g.initializer('draft_to_target', { dtype: 'int32', dims: [toTarget.length], data: toTarget }), draftIds], { axis: 0 }) : g.op('Cast', [draftIds], { to: 6 /* INT32 */ });
  batchOutput(g, hidden, names.hidden, 'float32', head.dim);
  batchOutput(g, values, names.topkLogProbs, 'float32', k);
  batchOutput(g, ids, names.topkIds, 'int32', k);
  // With a reduced head the entropy is over the N draft-vocabulary tokens the head scores (the
  // distribution it drafts from; the target ids outside it have probability 0 there).
  entropyOutput(g, logProbs);
  presentOutputs(g, head, [r.key], [r.value], { perLayer: slots });
  return g.toExternalModel(MODEL_OPTIONS);
}

/**
 * One speculative round in one ORT call (chain drafting): the draft head catches up on the
 * committed rows and drafts a greedy chain of `depth` tokens, then the target scores
 * [root, first M drafts] causally. Both models come from the one definition; the head's
 * weights live beside the target's (shared tensors such as the embedding table are one
 * initializer).
 *
 *   in  input_ids [1] (the root), position_ids [1, 1 + M], tree_mask [1 + M, W],
 *       past_length, past_key_{l}, past_value_{l}            the target's step inputs; M =
 *                                                            position_ids' length - 1 drafts
 *                                                            follow the root
 *       draft_input_ids, draft_position_ids [1, C], draft_features [C, d],
 *       draft_past_length, draft_past_key_0, draft_past_value_0   the head's C catch-up rows
 *   out the target's outputs for the 1 + M rows (argmax, features, logits, present),
 *       draft_ids int32 [1 + depth]                          the root, then the chain, as target ids
 *       draft_present [2, C, nKv * hd]                       the catch-up rows' keys, then values
 *
 * The head runs once over the C catch-up rows (keys and values of all C, the rest of its layer
 * for the last row only: the others are only cached), then once per drafted row (one row each). Its
 * past is sliced to the L live rows once, in the Attention kernel's layout (transposed back
 * unless the head's cache holds them in rows: its `headOptions.valueLayout`, default 'rows', as
 * a cache only this graph reads is best kept), and every head step
 * reads the K/V carried so far and hands on the kernel's present K/V (past + its rows) to the
 * next (OnnxOps.carry): no per-step mask, concatenation or layout nodes. Every step scores one
 * row that sees every key before it (the catch-up step its last row only), so no step has a
 * mask. Each step's argmax is the next draft, and the verified ids are a Slice of
 * [root, drafts]. Draft rows' K/V are not returned: like the drafter's staged
 * rows, they are dropped after the round. All `depth` steps always run; M < depth only
 * verifies fewer of them.
 */
export function buildRoundModel(cfg: ModelConfig, weights: Weights, head: HeadConfig, headWeights: Weights, depth: number, attention: AttentionMode = 'split', headOptions: OnnxOpsOptions = {}, targetOptions: Pick<OnnxOpsOptions, 'valueLayout' | 'gemmThreads' | 'nativeLinear'> = {}): ExternalModel & { padsRows: boolean } {
  if (!(Number.isInteger(depth) && depth >= 1)) throw new RangeError(`round depth must be a positive integer, got ${depth}`);
  const g = new GraphBuilder('eaglet_round');
  const ops = targetOps(g, cfg, weights, attention, targetOptions);
  const headOps = new OnnxOps(g, (n) => headWeights.get(n), cfg.maxSeqLen, attention, { ...headOptions, valueLayout: headOptions.valueLayout ?? 'rows', fallback: ops, prefix: names.headPrefix });
  const P = names.headPrefix, d = head.dim;
  const flat = (name: string, dim: string): string => g.op('Reshape', [g.input(name, 'int64', [1, dim]), g.ints([-1])]); // [n]
  const hIds = flat(P + names.ids, 'C'), hPos = flat(P + names.positions, 'C');
  const hFeat = g.input(P + names.features, 'float32', ['C', d]); // [C, d]
  const hPastK = g.input(P + names.pastKey(0), 'float32', pastDims(1, head, headOps.valueLayout));
  const hPastV = g.input(P + names.pastValue(0), 'float32', pastDims(1, head, headOps.valueLayout));
  const L = g.input(P + names.pastLength, 'int64', [1]);
  // The L live rows, untransposed: [1, nKv, L, hd] each.
  const liveT = (past: string) => g.op('Transpose', [g.op('Slice', [past, g.ints([0]), L, g.ints([3])])], { perm: [0, 1, 3, 2] });
  const liveRows = (past: string) => (headOps.valueLayout === 'rows' ? g.op('Slice', [past, g.ints([0]), L, g.ints([2])]) : liveT(past));
  const live = headOps.carry({ keys: liveRows(hPastK), values: liveRows(hPastV) });
  const toTarget = draftToTarget(head, headWeights);
  const d2t = toTarget && g.initializer('draft_to_target', { dtype: 'int64', dims: [toTarget.length], data: BigInt64Array.from(toTarget, (x) => BigInt(x)) });
  const root = g.input(names.ids, 'int64', [1]); // the round's root token
  const chain: string[] = [root]; // [1] int64 target ids: the root, then each draft
  // Only the last catch-up row's output is drafted from: the others need their keys and values
  // alone, not queries, attention, o_proj or the MLP (outRows). That row sees every live row and
  // every catch-up row, so the step needs no mask. (Memoized: the row's positions are read again below.)
  const lastRows = new Map<string, string>();
  const lastRow = (x: string): string => lastRows.get(x) ?? lastRows.set(x, g.op('Slice', [x, g.ints([-1]), g.ints([2 ** 62]), g.ints([0])])).get(x)!;
  const step0 = eagleHeadForward(headOps, head, hFeat, { ids: hIds, positions: hPos, mask: '', past: [live] }, lastRow);
  let past = headOps.presentAfter(live);
  let hidden = step0.hidden; // [1, d]
  for (let j = 0; j < depth; j++) {
    const best = g.op('ArgMax', [draftLogits(headOps, head, cfg, hidden)], { axis: -1, keepdims: 0 }); // [1] int64 draft id
    const id = d2t ? g.op('Gather', [d2t, best], { axis: 0 }) : best; // [1] int64 target id
    chain.push(id);
    if (j + 1 === depth) break;
    // Row C + j: (predicted feature, draft j + 1) at the last catch-up position + 1 + j, seeing every row before it.
    const h = eagleHeadForward(headOps, head, hidden, { ids: id, positions: headOps.positionsPlus(lastRow(hPos), j + 1), mask: '', past: [past] });
    past = headOps.presentAfter(past);
    hidden = h.hidden;
  }
  const all = g.op('Concat', chain, { axis: 0 }); // [1 + depth] int64
  g.output(g.op('Cast', [all], { to: 6 /* INT32 */ }), names.draftIds, 'int32', [depth + 1]);
  // The catch-up rows' keys [1, C, w] (rope's form) and values, joined: [2, C, w].
  g.output(g.op('Concat', [step0.key, headOps.batch(step0.value, head.nKvHeads * head.headDim)], { axis: 0 }), P + names.present, 'float32', [2, 'C', head.nKvHeads * head.headDim]);

  // The target over [root, first M drafts] (M = the positions' length - 1), padded to even rows as a plain step is (evenPass).
  const verifiedIds = (positions: string): string => g.op('Slice', [all, g.ints([0]), g.op('Shape', [positions])]);
  targetOutputs(g, cfg, llamaForward(ops, cfg, stepInputs(g, ops, cfg, range(0, cfg.nLayers), verifiedIds, true)), { unpad: (x, axis) => ops.unpadRows(x, axis) });
  // padsRows: the verification runs an even number of rows (an odd count costs one more).
  return { ...g.toExternalModel(MODEL_OPTIONS), padsRows: ops.padsRows };
}

/**
 * Output `entropy` [1, T, 1]: each row's whole draft distribution's entropy, -sum p log p, for
 * entropy-based stopping (AdaEDL, `LengthPolicy.keepLevel`): a top-k estimate is capped at
 * ln(k+1) and cannot tell a confident row from a flat one.
 */
function entropyOutput(g: GraphBuilder, logProbs: string): void {
  const plogp = g.op('Mul', [g.op('Exp', [logProbs]), logProbs]);
  batchOutput(g, g.op('Neg', [g.op('ReduceSum', [plogp, g.ints([-1])], { keepdims: 1 })]), names.entropy, 'float32', 1);
}

/**
 * Whether a target graph rendered with `attention` and weights quantized as `quantize` scores
 * rows in position order (rowExactAttention: targetOps turns it on for quantized weights, and
 * only 'split' attention renders it), so that its token trees need treeOrder to be exact too.
 */
export function ordersTrees(attention: AttentionMode, quantize: OnnxOpsOptions['quantize'] | undefined): boolean {
  return attention === 'split' && quantize !== undefined;
}

/**
 * The attention rendering of every graph of one target (plain steps, verification, the fused
 * round, exit / rest / shadow graphs): 'split' when its weights are (or `quantize` makes them)
 * quantized, so all of them score a row alike (defaultAttention).
 */
export function targetAttention(cfg: ModelConfig, weights: Weights, quantize?: OnnxOpsOptions['quantize']): AttentionMode {
  return defaultAttention(cfg.maxSeqLen, cfg.nKvHeads, cfg.headDim, quantize !== undefined || quantOf(cfg, weights) !== undefined);
}

/**
 * OnnxOps over a target's weights. Weights held quantized make the whole model quantized: any
 * Linear still fp32 (a tied LM head) is quantized the same way when the graph is built, so every
 * graph of one target (target, exit, rest, shadow) computes the same function.
 */
function targetOps(g: GraphBuilder, cfg: ModelConfig, weights: Weights, attention: AttentionMode, opts: OnnxOpsOptions = {}): OnnxOps {
  const quantize = opts.quantize ?? quantOf(cfg, weights);
  // A quantized target's rows are scored alike in every pass shape (int8 activations amplify last-bit differences).
  return new OnnxOps(g, (n) => weights.get(n), cfg.maxSeqLen, attention, { evenRows: true, rowExactAttention: quantize !== undefined, ...opts, quantize });
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

/** In-graph top-k of each row's log-softmax over the LM head's logits [T, V] -> outputs topk_logprobs, topk_ids [1, T, k] and entropy [1, T, 1]. */
function topkOutputs(g: GraphBuilder, logits: string, k: number): void {
  const logProbs = g.op('LogSoftmax', [logits], { axis: -1 }); // [T, V]
  const [values, indices] = g.node('TopK', [logProbs, g.ints([k])], { axis: -1, largest: 1, sorted: 1 }, { outputs: 2 }); // [T, k]
  batchOutput(g, values, names.topkLogProbs, 'float32', k);
  batchOutput(g, g.op('Cast', [indices], { to: 6 /* INT32 */ }), names.topkIds, 'int32', k);
  entropyOutput(g, logProbs);
}

/**
 * A self-drafter's draft model for exit layer E: the target's layers 0..E-1, then its final
 * norm and LM head (an early exit), from the one definition.
 *   in  input_ids, position_ids, tree_mask, past_key_{l}/past_value_{l} for l < E
 *   out topk_logprobs, topk_ids [1, T, k]   the exit's proposals (log-softmax, best first)
 *       entropy       [1, T, 1]             full-vocabulary entropy of each row's exit distribution
 *       hidden        [1, T, d]             residual after layer E-1: where verification resumes
 *       layer_hidden  [T, E, d]             residual after each layer (DEL's shadow tokens)
 *       present_key_{l}, present_value_{l}  l < E: shared with verification through the cache
 */
export function buildExitModel(cfg: ModelConfig, weights: Weights, exitLayer: number, topK: number, opts: Pick<OnnxOpsOptions, 'valueLayout' | 'gemmThreads' | 'treeOrder' | 'nativeLinear'> = {}): Uint8Array {
  const g = new GraphBuilder(`eaglet_exit_${exitLayer}`);
  const ops = targetOps(g, cfg, weights, targetAttention(cfg, weights), opts);
  const inp = stepInputs(g, ops, cfg, range(0, exitLayer));
  const r = llamaLayers(ops, cfg, embedTokens(ops, inp.ids), inp, 0, exitLayer);
  topkOutputs(g, lmHead(ops, cfg, finalNorm(ops, cfg, r.out)), Math.min(topK, cfg.vocabSize));
  batchOutput(g, r.out, names.hidden, 'float32', cfg.dim);
  layerHiddenOutput(g, r.hiddens, cfg.dim);
  presentOutputs(g, cfg, r.keys, r.values);
  return g.toModel(MODEL_OPTIONS);
}

/**
 * The rest of the target after exit layer E: layers E..L-1 from given residuals, then the
 * final norm and LM head. Verification of self-drafted rows runs this on the residuals their
 * draft passes computed (whose layer 0..E-1 K/V are already in the cache).
 *   in  hidden [1, T, d], position_ids, tree_mask, past_key_{l}/past_value_{l} for l >= E
 *   out logits, features (as the target model), layer_hidden [T, L-E, d],
 *       present_key_{l}, present_value_{l} for l >= E
 */
export function buildRestModel(cfg: ModelConfig, weights: Weights, exitLayer: number, opts: Pick<OnnxOpsOptions, 'valueLayout' | 'gemmThreads' | 'treeOrder' | 'nativeLinear'> = {}): Uint8Array {
  const g = new GraphBuilder(`eaglet_rest_${exitLayer}`);
  const ops = targetOps(g, cfg, weights, targetAttention(cfg, weights), opts);
  const inp = stepInputs(g, ops, cfg, range(exitLayer, cfg.nLayers), false);
  const given = g.op('Reshape', [g.input(names.hidden, 'float32', [1, 'T', cfg.dim]), g.ints([-1, cfg.dim])]); // [T, d]
  // In the whole model, layer E's input norm reads a residual sum, so it is rendered as one
  // SkipSimplifiedLayerNormalization (OnnxOps.add), whose norm differs in the last bits from a
  // plain SimplifiedLayerNormalization's; a quantized target amplifies that into other tokens.
  // Adding exact zeros (x - x) makes this norm the same fused kernel on the same sum x.
  const x = ops.add(given, g.op('Sub', [given, given]));
  const r = llamaLayers(ops, cfg, x, inp, exitLayer, cfg.nLayers);
  const features = finalNorm(ops, cfg, r.out);
  batchOutput(g, lmHead(ops, cfg, features), names.logits, 'float32', cfg.vocabSize);
  batchOutput(g, features, names.features, 'float32', cfg.dim);
  layerHiddenOutput(g, r.hiddens, cfg.dim);
  presentOutputs(g, cfg, r.keys, r.values, { first: exitLayer });
  return g.toModel(MODEL_OPTIONS);
}

/**
 * DEL's shadow tokens: the token every early exit would have proposed. in `hidden` [N, d]
 * (residual rows of any layers) -> out `shadow_ids` int32 [N] = argmax lmHead(norm(row)).
 */
export function buildShadowModel(cfg: ModelConfig, weights: Weights, opts: Pick<OnnxOpsOptions, 'nativeLinear'> = {}): Uint8Array {
  const g = new GraphBuilder('eaglet_shadow');
  const ops = targetOps(g, cfg, weights, targetAttention(cfg, weights), opts);
  const x = g.input(names.hidden, 'float32', ['N', cfg.dim]);
  const best = g.op('ArgMax', [lmHead(ops, cfg, finalNorm(ops, cfg, x))], { axis: -1, keepdims: 0 }); // [N] int64
  g.output(g.op('Cast', [best], { to: 6 /* INT32 */ }), names.shadowIds, 'int32', ['N']);
  return g.toModel(MODEL_OPTIONS);
}
