/**
 * The one definition of the models: the Llama decoder (target) and the EAGLE-1/2 draft head,
 * written once over an abstract tensor-ops interface `Ops<T>`. Each backend renders it:
 * `src/onnx/ops.ts` emits ONNX nodes (T = value name) for inference; a TensorFlow.js renderer
 * (T = tf.Tensor) runs it eagerly with autograd for training. Property tests hold the
 * renderings equal to the float64 reference in test/support/reference.ts.
 *
 * Shapes. One sequence of T rows (tokens). Activations are row-major [T, width]; a renderer
 * may carry extra leading batch axes, since every op except `attention` works row by row and
 * the definition never looks at the row axis. Notation: d = model width, hd = head width,
 * nH = query heads, nKv = key/value heads (nH % nKv == 0), P = cached (past) rows, V = vocab.
 */
import type { ModelConfig } from './config.ts';
import { DRAFT_VOCAB, HEAD_LAYER_PREFIX, type HeadConfig } from './draft-head.ts';
import type { RopeSpec } from './rope.ts';
import { EMBEDDING, outputHeadName } from './weights.ts';

/** The attention head layout. */
export interface HeadLayout {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
}

/** Shapes of one decoder layer; both ModelConfig and HeadConfig have these fields. */
export interface LayerShape extends HeadLayout, RopeSpec {
  dim: number;
  hiddenDim: number;
  normEps: number;
  attentionBias: boolean;
  /** Qwen3: RMSNorm each q and k head before RoPE. */
  qkNorm?: boolean;
}

/**
 * Cached keys (after RoPE) and values of one layer: [P, nKv * hd] each, row-major (a renderer
 * may shape them its own way over the same data, e.g. ONNX inputs [1, P, nKv, hd]).
 */
export interface PastKV<T> {
  keys: T;
  values: T;
}

/** The tensor operations the models are written in. */
export interface Ops<T> {
  /** A weight by checkpoint name (HF / EAGLE names), in its stored shape: Linear weights are [out, in]. */
  weight(name: string): T;
  /** Rows of `table` [V, w] at `ids` [T] (integer) -> [T, w]. */
  embed(table: T, ids: T): T;
  /** x [T, in] @ w^T (+ bias) with w [out, in], bias [out] -> [T, out]. */
  linear(x: T, w: T, bias?: T): T;
  /** Elementwise, same shapes. */
  add(a: T, b: T): T;
  /** Elementwise, same shapes. */
  mul(a: T, b: T): T;
  /** x * sigmoid(x), elementwise. */
  silu(x: T): T;
  /** x / sqrt(mean(x^2 over the last axis) + eps) * w; x [T, w], w [w] -> [T, w]. */
  rmsNorm(x: T, w: T, eps: number): T;
  /** RMSNorm of each head: x [T, nHeads * hd] seen as [T, nHeads, hd], normed over hd; w [hd]. */
  headRmsNorm(x: T, w: T, nHeads: number, eps: number): T;
  /** [T, a], [T, b] -> [T, a + b] (a first). */
  concat(a: T, b: T): T;
  /**
   * RoPE in the HF "rotate halves" convention, per head: within each head of width hd,
   * element i < hd/2 pairs with i + hd/2, rotated by angle pos * ropeInvFreq(hd, spec)[i]
   * (theta^(-2i/hd) unless scaled). x [T, nHeads * hd], positions [T] (integer) -> same shape.
   */
  rope(x: T, positions: T, nHeads: number, headDim: number, spec: RopeSpec): T;
  /**
   * Causal/tree self-attention with grouped K/V heads: query head h reads K/V head
   * floor(h / (nH / nKv)). Scores are q.k / sqrt(hd) plus `mask`, softmaxed over the P + T keys
   * (past rows first, then the new rows).
   * q [T, nH*hd]; k, v [T, nKv*hd] (k already rotated); past: [P, nKv*hd] each, or null
   * (P = 0); mask: additive float [T, P + T], 0 where row i may see key j and a large negative
   * number elsewhere -> [T, nH*hd]. (decoderLayer's `outRows` passes queries and mask rows of
   * only some of the T rows, T' <= T; the ONNX renderer's one-kernel Attention takes that.)
   */
  attention(q: T, k: T, v: T, past: PastKV<T> | null, mask: T, layout: HeadLayout): T;
}

/** What one pass needs besides the weights. */
export interface PassInputs<T> {
  /** Token ids [T]. */
  ids: T;
  /** Absolute positions [T] (tree nodes: prefix length + depth). */
  positions: T;
  /** Additive mask [T, P + T] (see Ops.attention). */
  mask: T;
  /** One entry per layer, indexed by layer (a pass over layers [from, to) reads only those), or null when there is no cache (training over full sequences). */
  past: PastKV<T>[] | null;
}

export interface LayerOut<T> {
  /** [T, d] */
  out: T;
  /** New keys after RoPE [T, nKv*hd]: what the cache stores. */
  key: T;
  /** New values [T, nKv*hd]. */
  value: T;
}

/**
 * Picks the rows of a pass whose layer output is wanted, from any row-major value of the pass
 * ([T, ...] -> [T', ...]; the same rows of each): see decoderLayer's `outRows`.
 */
export type RowPick<T> = (x: T) => T;

/**
 * One pre-norm Llama decoder layer: x + attn(norm(x)), then + mlp(norm(.)).
 * `prefix` names its weights ('model.layers.3.' for the target, 'layers.0.' for the head);
 * `inputNorm` = false skips the first RMSNorm, as EAGLE's head layer does. With `outRows`,
 * keys and values are computed for all T rows but queries, attention, o_proj and the MLP only
 * for the picked rows (`out` [T', d]): what a pass needs when it only caches the other rows
 * (the fused round's head catch-up; rows are independent outside attention, so the picked
 * rows' results are the same computation).
 */
export function decoderLayer<T>(
  ops: Ops<T>, s: LayerShape, prefix: string, x: T, inp: PassInputs<T>, past: PastKV<T> | null, inputNorm: boolean, outRows?: RowPick<T>,
): LayerOut<T> {
  const w = (name: string): T => ops.weight(prefix + name);
  const bias = (name: string): T | undefined => (s.attentionBias ? w(name) : undefined);
  const pick = outRows ?? ((v: T) => v);
  const h = inputNorm ? ops.rmsNorm(x, w('input_layernorm.weight'), s.normEps) : x; // [T, d]
  const qkNorm = (x: T, name: string, heads: number): T => (s.qkNorm ? ops.headRmsNorm(x, w(name), heads, s.normEps) : x);
  const q = ops.rope(qkNorm(ops.linear(pick(h), w('self_attn.q_proj.weight'), bias('self_attn.q_proj.bias')), 'self_attn.q_norm.weight', s.nHeads), pick(inp.positions), s.nHeads, s.headDim, s); // [T', nH*hd]
  const key = ops.rope(qkNorm(ops.linear(h, w('self_attn.k_proj.weight'), bias('self_attn.k_proj.bias')), 'self_attn.k_norm.weight', s.nKvHeads), inp.positions, s.nKvHeads, s.headDim, s); // [T, nKv*hd]
  const value = ops.linear(h, w('self_attn.v_proj.weight'), bias('self_attn.v_proj.bias')); // [T, nKv*hd]
  const attn = ops.attention(q, key, value, past, inp.mask && pick(inp.mask), s); // [T', nH*hd]
  const mid = ops.add(pick(x), ops.linear(attn, w('self_attn.o_proj.weight'))); // [T', d]
  const h2 = ops.rmsNorm(mid, w('post_attention_layernorm.weight'), s.normEps);
  const gated = ops.mul(ops.silu(ops.linear(h2, w('mlp.gate_proj.weight'))), ops.linear(h2, w('mlp.up_proj.weight'))); // [T, hidden]
  return { out: ops.add(mid, ops.linear(gated, w('mlp.down_proj.weight'))), key, value };
}

/** The target's output head applied to features [T, d] -> logits [T, V] (tied: the embedding table). */
export function lmHead<T>(ops: Ops<T>, cfg: Pick<ModelConfig, 'tieEmbeddings'>, features: T): T {
  return ops.linear(features, ops.weight(outputHeadName(cfg)));
}

export interface LlamaOut<T> {
  /** [T, V] */
  logits: T;
  /** Final-norm output [T, d]: what the EAGLE head reads. */
  features: T;
  /** Per layer, new keys after RoPE [T, nKv*hd]. */
  keys: T[];
  /** Per layer, new values [T, nKv*hd]. */
  values: T[];
  /**
   * Residual stream after each layer [T, d] (hiddens[l] = output of layer l, not normed): early
   * exits read norm(hiddens[l]) through the LM head (self-drafting, the early-exit loss).
   */
  hiddens: T[];
}

/** Layers [from, to) of the target over the residual stream `x` [T, d] (pass.past holds one entry per layer of the MODEL, indexed absolutely). */
export interface LayerRangeOut<T> {
  /** Residual stream after layer to-1 [T, d]. */
  out: T;
  /** Per layer in the range: new keys, values [T, nKv*hd] and the residual after it [T, d]. */
  keys: T[];
  values: T[];
  hiddens: T[];
}

/**
 * Layers [from, to) of the Llama decoder on the residual stream `x` [T, d]: the one place the
 * target's layer stack is written, so the full model and its parts (a self-drafter's early
 * layers 0..E-1, the verification's layers E..L-1) are renderings of the same definition.
 */
export function llamaLayers<T>(ops: Ops<T>, cfg: ModelConfig, x: T, inp: PassInputs<T>, from = 0, to = cfg.nLayers): LayerRangeOut<T> {
  if (!(Number.isInteger(from) && Number.isInteger(to) && 0 <= from && from <= to && to <= cfg.nLayers)) throw new RangeError(`layer range [${from}, ${to}) outside [0, ${cfg.nLayers}]`);
  const keys: T[] = [], values: T[] = [], hiddens: T[] = [];
  for (let l = from; l < to; l++) {
    const r = decoderLayer(ops, cfg, `model.layers.${l}.`, x, inp, inp.past?.[l] ?? null, true);
    x = r.out;
    keys.push(r.key);
    values.push(r.value);
    hiddens.push(x);
  }
  return { out: x, keys, values, hiddens };
}

/** The token embedding rows of `ids` [T] -> [T, d]: the residual stream before layer 0. */
export function embedTokens<T>(ops: Ops<T>, ids: T): T {
  return ops.embed(ops.weight(EMBEDDING), ids);
}

/** The final norm: the target's (and every early exit's) features from a residual stream [T, d]. */
export function finalNorm<T>(ops: Ops<T>, cfg: ModelConfig, x: T): T {
  return ops.rmsNorm(x, ops.weight('model.norm.weight'), cfg.normEps);
}

/** The target: a Llama-family decoder (HF weight names). */
export function llamaForward<T>(ops: Ops<T>, cfg: ModelConfig, inp: PassInputs<T>): LlamaOut<T> {
  const r = llamaLayers(ops, cfg, embedTokens(ops, inp.ids), inp);
  const features = finalNorm(ops, cfg, r.out);
  return { logits: lmHead(ops, cfg, features), features, keys: r.keys, values: r.values, hiddens: r.hiddens };
}

export interface HeadOut<T> {
  /** Predicted next features [T, d] (no final norm); logits = lmHead(hidden). */
  hidden: T;
  /** New keys of the head's layer after RoPE [T, nKv*hd]. */
  key: T;
  /** [T, nKv*hd] */
  value: T;
}

/**
 * The EAGLE-1/2 draft head. Row t reads token_{t+1} and the target's feature_t and predicts
 * feature_{t+1}: fc(concat(embed(token), feature)) -> one decoder layer without its input
 * norm. The embedding table is the target's (`model.embed_tokens.weight`).
 * `features` [T, d]; `inp.past` has one entry (the head's only layer) or is null. `outRows`:
 * `hidden` for those rows only, keys and values for all (see decoderLayer).
 */
export function eagleHeadForward<T>(ops: Ops<T>, head: HeadConfig, features: T, inp: PassInputs<T>, outRows?: RowPick<T>): HeadOut<T> {
  const emb = ops.embed(ops.weight(EMBEDDING), inp.ids); // [T, d]
  const x = ops.linear(ops.concat(emb, features), ops.weight('fc.weight'), ops.weight('fc.bias')); // [T, d]
  const r = decoderLayer(ops, head, HEAD_LAYER_PREFIX, x, inp, inp.past?.[0] ?? null, false, outRows);
  return { hidden: r.out, key: r.key, value: r.value };
}

/**
 * The head's next-token logits over its draft vocabulary: [T, N] from its own LM head when it
 * has a reduced one (column j = draft id j; map to target ids with d2t), else the target's
 * LM head, [T, V].
 */
export function draftLogits<T>(ops: Ops<T>, head: HeadConfig, target: Pick<ModelConfig, 'tieEmbeddings'>, hidden: T): T {
  return head.draftVocabSize !== undefined ? ops.linear(hidden, ops.weight(DRAFT_VOCAB.lmHead)) : lmHead(ops, target, hidden);
}
