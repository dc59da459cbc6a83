/**
 * The EAGLE-1/2 draft head: config and checkpoint layout (names and shapes, as in EAGLE's
 * cnets.py, so heads trained there load here and the other way round).
 *
 *   fc.weight                                  [d, 2d]   input = concat(embed(token_{t+1}), feature_t)
 *   fc.bias                                    [d]
 *   layers.0.self_attn.q_proj.weight           [nHeads*hd, d]   (+ .bias if attentionBias)
 *   layers.0.self_attn.k_proj.weight           [nKv*hd, d]      (+ .bias)
 *   layers.0.self_attn.v_proj.weight           [nKv*hd, d]      (+ .bias)
 *   layers.0.self_attn.o_proj.weight           [d, nHeads*hd]
 *   layers.0.post_attention_layernorm.weight   [d]
 *   layers.0.mlp.gate_proj.weight              [hidden, d]
 *   layers.0.mlp.up_proj.weight                [hidden, d]
 *   layers.0.mlp.down_proj.weight              [d, hidden]
 *
 * There is no input_layernorm (EAGLE skips it in layer 0: the fc output goes straight into
 * attention), no final norm and no embedding table: the head borrows the target's embedding
 * table, frozen. `config.json` is an HF-style Llama config with num_hidden_layers = 1.
 *
 * Output vocabulary. By default the head has no LM head either and borrows the target's
 * ([V, d], frozen). A head with a reduced draft vocabulary (EAGLE-3's d2t/t2d; FR-Spec's
 * frequency-ranked subset) carries its own, in the layout vLLM and SGLang load for EAGLE-3:
 *
 *   lm_head.weight   [N, d]  F32   rows of the target's LM head for the N draft tokens
 *   d2t              [N]     I64   offsets: target id = draft id + d2t[draft id]
 *   t2d              [V]     BOOL  which target ids are in the draft vocabulary
 *
 * and config.json gains `draft_vocab_size` = N. Draft ids are the kept target ids in ascending
 * order (so t2d alone determines d2t, as in EAGLE-3's published heads). Verification still
 * runs the target over its full vocabulary, so output is unchanged; only the tree's candidates
 * are limited to the N tokens.
 */
import type { ModelConfig } from './config.ts';
import { parseRopeScaling, ropeScalingToJson, type RopeScaling } from './rope.ts';
import { denseRow } from './quantize.ts';
import { addLayerShapes, checkTensors, LM_HEAD, outputHead, tensor, type Weights } from './weights.ts';
import { Rng } from '../util/rng.ts';

/** Shapes of the head. Width, heads and vocabulary must match the target it drafts for. */
export interface HeadConfig {
  vocabSize: number;
  dim: number;
  /** SwiGLU width (intermediate_size): the target's in EAGLE's heads, any width here. */
  hiddenDim: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  ropeTheta: number;
  /** The target's RoPE scaling (the head rotates at the same positions). */
  ropeScaling?: RopeScaling;
  normEps: number;
  /** q/k/v projection biases (off in EAGLE's Llama heads). */
  attentionBias: boolean;
  /**
   * N < vocabSize: the head scores only N draft tokens with its own `lm_head.weight` [N, d]
   * and maps them back through `d2t`. Absent: the full target vocabulary (the target's LM head).
   */
  draftVocabSize?: number;
}

/** Tensor names of a reduced draft vocabulary (EAGLE-3 layout). */
export const DRAFT_VOCAB = { lmHead: LM_HEAD, d2t: 'd2t', t2d: 't2d' } as const;
/** safetensors storage dtypes of the draft-vocabulary map. */
export const DRAFT_VOCAB_DTYPES = { [DRAFT_VOCAB.d2t]: 'I64', [DRAFT_VOCAB.t2d]: 'BOOL' } as const;

/** Name prefix of the head's one decoder layer. */
export const HEAD_LAYER_PREFIX = 'layers.0.';

/**
 * The head EAGLE would train for `target`: same width, heads, RoPE and vocabulary (optionally a
 * reduced draft vocabulary of N tokens). `hiddenDim` is the head's SwiGLU width, the target's by
 * default; any other width is ours (EAGLE copies the target's): the head's MLP is most of its
 * weights, so a narrower one drafts for less.
 */
export function headConfigFor(target: ModelConfig, draftVocabSize?: number, hiddenDim = target.hiddenDim): HeadConfig {
  const { vocabSize, dim, nHeads, nKvHeads, headDim, ropeTheta, ropeScaling, normEps } = target;
  return { vocabSize, dim, hiddenDim, nHeads, nKvHeads, headDim, ropeTheta, ...(ropeScaling ? { ropeScaling } : {}), normEps, attentionBias: false, ...(draftVocabSize !== undefined ? { draftVocabSize } : {}) };
}

/** Why `head` cannot draft for `target`, or null when it can. */
export function headMismatch(head: HeadConfig, target: ModelConfig): string | null {
  for (const k of ['vocabSize', 'dim'] as const)
    if (head[k] !== target[k]) return `head ${k} ${head[k]} does not match the target's ${target[k]}`;
  if (head.nHeads % head.nKvHeads !== 0) return `head num_attention_heads (${head.nHeads}) must be a multiple of num_key_value_heads (${head.nKvHeads})`;
  if (head.headDim % 2 !== 0) return `head head_dim must be even for RoPE, got ${head.headDim}`;
  const n = head.draftVocabSize;
  if (n !== undefined && !(Number.isInteger(n) && n >= 1 && n < head.vocabSize)) return `head draft_vocab_size ${n} must be an integer in [1, vocab_size ${head.vocabSize})`;
  return null;
}

/** Every tensor of the head checkpoint, with its shape. */
export function headShapes(c: HeadConfig): Map<string, number[]> {
  const m = new Map<string, number[]>([
    ['fc.weight', [c.dim, 2 * c.dim]],
    ['fc.bias', [c.dim]],
  ]);
  addLayerShapes(m, c, HEAD_LAYER_PREFIX, false);
  if (c.draftVocabSize !== undefined) {
    m.set(DRAFT_VOCAB.lmHead, [c.draftVocabSize, c.dim]);
    m.set(DRAFT_VOCAB.d2t, [c.draftVocabSize]);
    m.set(DRAFT_VOCAB.t2d, [c.vocabSize]);
  }
  return m;
}

/** The head's trainable tensors: all but the draft-vocabulary ones (its LM head rows stay frozen, like the target's). */
export function trainableHeadShapes(c: HeadConfig): Map<string, number[]> {
  const m = headShapes(c);
  for (const n of Object.values(DRAFT_VOCAB)) m.delete(n);
  return m;
}

/** The first problem with `w` as weights of a head shaped `c` (missing, misshapen, non-finite, inconsistent d2t/t2d), or null. */
export function validateHeadWeights(c: HeadConfig, w: Weights): string | null {
  const bad = checkTensors(headShapes(c), w);
  if (bad || c.draftVocabSize === undefined) return bad;
  const d2t = w.get(DRAFT_VOCAB.d2t)!.data, t2d = w.get(DRAFT_VOCAB.t2d)!.data;
  let prev = -1;
  for (let i = 0; i < d2t.length; i++) {
    const id = i + d2t[i];
    if (!(Number.isInteger(id) && id > prev && id < c.vocabSize)) return `d2t[${i}] = ${d2t[i]} maps draft id ${i} to ${id}: target ids must be increasing and in [0, ${c.vocabSize})`;
    if (t2d[id] !== 1) return `t2d[${id}] is false, but d2t maps draft id ${i} to target id ${id}`;
    prev = id;
  }
  let count = 0;
  for (let t = 0; t < t2d.length; t++) count += t2d[t] === 1 ? 1 : 0;
  if (count !== d2t.length) return `t2d marks ${count} target ids, d2t maps ${d2t.length}`;
  return null;
}

/**
 * The draft-vocabulary tensors for the target ids `ids` (distinct, any order; kept ascending):
 * the target's LM-head rows (dequantized, if the target holds it quantized), d2t and t2d. What
 * `--draft-vocab` adds to a head.
 */
export function draftVocabWeights(target: ModelConfig, targetWeights: Weights, ids: ArrayLike<number>): Weights {
  const sorted = Int32Array.from(ids).sort();
  for (let i = 0; i < sorted.length; i++)
    if (sorted[i] < 0 || sorted[i] >= target.vocabSize || (i > 0 && sorted[i] === sorted[i - 1])) throw new RangeError(`draft vocabulary: token ids must be distinct and in [0, ${target.vocabSize})`);
  const n = sorted.length, d = target.dim, lm = outputHead(target, targetWeights);
  const head = tensor([n, d]), d2t = tensor([n]), t2d = tensor([target.vocabSize]);
  for (let i = 0; i < n; i++) {
    denseRow(lm, sorted[i], head.data.subarray(i * d, (i + 1) * d));
    d2t.data[i] = sorted[i] - i;
    t2d.data[sorted[i]] = 1;
  }
  return new Map([[DRAFT_VOCAB.lmHead, head], [DRAFT_VOCAB.d2t, d2t], [DRAFT_VOCAB.t2d, t2d]]);
}

/** Target id of each draft id ([N], ascending), or null for a full-vocabulary head. */
export function draftToTarget(c: HeadConfig, w: Weights): Int32Array | null {
  if (c.draftVocabSize === undefined) return null;
  const d2t = w.get(DRAFT_VOCAB.d2t)!.data;
  return Int32Array.from(d2t, (off, i) => i + off);
}

/**
 * The N target ids most frequent in `tokens` (ties and unseen ids: lower id first), ascending:
 * FR-Spec's frequency-ranked draft vocabulary. Negative entries (no token) are skipped.
 */
export function frequentTokens(tokens: ArrayLike<number>, vocabSize: number, n: number): Int32Array {
  const count = new Float64Array(vocabSize);
  for (let i = 0; i < tokens.length; i++) if (tokens[i] >= 0 && tokens[i] < vocabSize) count[tokens[i]]++;
  return mostFrequent(count, n);
}

/** The `n` ids with the highest `count` [V] (ties to the lower id), ascending. */
export function mostFrequent(count: ArrayLike<number>, n: number): Int32Array {
  const order = Int32Array.from({ length: count.length }, (_, i) => i).sort((a, b) => count[b] - count[a] || a - b);
  return order.slice(0, n).sort();
}

/**
 * The `--draft random` head: untrained, but with outputs on the target's feature scale so the
 * draft distributions are peaked rather than flat. The fc maps the embedding half to ~0 and
 * the feature half to ~identity (plus noise), so the predicted feature starts near the input
 * feature (a "repeat the last prediction" prior); attention and MLP add scaled noise.
 * `targetWeights` and `draftVocab` = N give it a reduced vocabulary: the first N target ids
 * (a stand-in for frequency ranking, which needs logs), for cost benchmarks. `hiddenDim`: the
 * head's SwiGLU width (headConfigFor).
 */
export function randomHeadWeights(target: ModelConfig, seed: number, draftVocab?: { size: number; targetWeights: Weights }, hiddenDim = target.hiddenDim): Weights {
  const c = headConfigFor(target, undefined, hiddenDim);
  const rng = new Rng(seed);
  const w: Weights = new Map();
  if (draftVocab) for (const [n, t] of draftVocabWeights(target, draftVocab.targetWeights, Int32Array.from({ length: draftVocab.size }, (_, i) => i))) w.set(n, t);
  for (const [name, shape] of headShapes(c)) {
    const t = tensor(shape);
    const fanIn = shape[shape.length - 1];
    if (name === 'fc.weight') {
      // [d, 2d]: row r = output r; columns [0, d) read the embedding, [d, 2d) the feature.
      for (let r = 0; r < c.dim; r++) {
        for (let k = 0; k < 2 * c.dim; k++) t.data[r * 2 * c.dim + k] = (0.1 / Math.sqrt(fanIn)) * rng.normal();
        t.data[r * 2 * c.dim + c.dim + r] += 1;
      }
    } else if (name.endsWith('norm.weight')) {
      for (let i = 0; i < t.data.length; i++) t.data[i] = 1 + 0.1 * rng.normal();
    } else {
      const std = name.endsWith('.bias') ? 0.02 : 0.5 / Math.sqrt(fanIn);
      for (let i = 0; i < t.data.length; i++) t.data[i] = std * rng.normal();
    }
    w.set(name, t);
  }
  return w;
}

/** HF-style `config.json` of a head (what EAGLE writes next to its weights). */
export function headConfigToJson(c: HeadConfig): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_act: 'silu',
    vocab_size: c.vocabSize,
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: c.headDim,
    rope_theta: c.ropeTheta,
    ...(c.ropeScaling ? { rope_scaling: ropeScalingToJson(c.ropeScaling) } : {}),
    rms_norm_eps: c.normEps,
    attention_bias: c.attentionBias,
    num_hidden_layers: 1,
    ...(c.draftVocabSize !== undefined ? { draft_vocab_size: c.draftVocabSize } : {}),
  };
}

/**
 * Parses a head `config.json` object. Throws a plain Error naming the field at fault; the
 * caller wraps it with the file name.
 */
export function headConfigFromJson(j: Record<string, unknown>): HeadConfig {
  const int = (k: string, fallback?: number): number => {
    const v = j[k] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new Error(`${k} must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const num = (k: string, fallback: number): number => {
    const v = j[k] ?? fallback;
    if (typeof v !== 'number' || !(v > 0)) throw new Error(`${k} must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  if (j.hidden_act !== undefined && j.hidden_act !== 'silu') throw new Error(`hidden_act ${JSON.stringify(j.hidden_act)} is not supported (only silu)`);
  if (j.num_hidden_layers !== undefined && j.num_hidden_layers !== 1) throw new Error(`num_hidden_layers must be 1 for an EAGLE-1/2 head, got ${JSON.stringify(j.num_hidden_layers)}`);
  const dim = int('hidden_size'), nHeads = int('num_attention_heads'), vocabSize = int('vocab_size');
  // vLLM reads a missing draft_vocab_size as vocab_size: both mean the full vocabulary.
  const draftVocab = j.draft_vocab_size === undefined || j.draft_vocab_size === vocabSize ? undefined : int('draft_vocab_size');
  const ropeScaling = parseRopeScaling(j.rope_scaling);
  return {
    ...(draftVocab !== undefined ? { draftVocabSize: draftVocab } : {}),
    vocabSize,
    dim,
    hiddenDim: int('intermediate_size'),
    nHeads,
    nKvHeads: int('num_key_value_heads', nHeads),
    headDim: int('head_dim', dim / nHeads),
    ropeTheta: num('rope_theta', 10000),
    ...(ropeScaling ? { ropeScaling } : {}),
    normEps: num('rms_norm_eps', 1e-6),
    attentionBias: j.attention_bias === true,
  };
}
