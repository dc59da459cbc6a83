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
 * attention), no final norm, no embedding table and no LM head: the head borrows the target's
 * embedding table and LM head, frozen. `config.json` is an HF-style Llama config with
 * num_hidden_layers = 1.
 */
import type { ModelConfig } from './config.ts';
import { parseRopeScaling, ropeScalingToJson, type RopeScaling } from './rope.ts';
import { addLayerShapes, checkTensors, tensor, type Weights } from './weights.ts';
import { Rng } from '../util/rng.ts';

/** Shapes of the head. Width, heads and vocabulary must match the target it drafts for. */
export interface HeadConfig {
  vocabSize: number;
  dim: number;
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
}

/** Name prefix of the head's one decoder layer. */
export const HEAD_LAYER_PREFIX = 'layers.0.';

/** The head EAGLE would train for `target`: same width, heads, RoPE and vocabulary. */
export function headConfigFor(target: ModelConfig): HeadConfig {
  const { vocabSize, dim, hiddenDim, nHeads, nKvHeads, headDim, ropeTheta, ropeScaling, normEps } = target;
  return { vocabSize, dim, hiddenDim, nHeads, nKvHeads, headDim, ropeTheta, ...(ropeScaling ? { ropeScaling } : {}), normEps, attentionBias: false };
}

/** Why `head` cannot draft for `target`, or null when it can. */
export function headMismatch(head: HeadConfig, target: ModelConfig): string | null {
  for (const k of ['vocabSize', 'dim'] as const)
    if (head[k] !== target[k]) return `head ${k} ${head[k]} does not match the target's ${target[k]}`;
  if (head.nHeads % head.nKvHeads !== 0) return `head num_attention_heads (${head.nHeads}) must be a multiple of num_key_value_heads (${head.nKvHeads})`;
  if (head.headDim % 2 !== 0) return `head head_dim must be even for RoPE, got ${head.headDim}`;
  return null;
}

/** Every tensor of the head checkpoint, with its shape. */
export function headShapes(c: HeadConfig): Map<string, number[]> {
  const m = new Map<string, number[]>([
    ['fc.weight', [c.dim, 2 * c.dim]],
    ['fc.bias', [c.dim]],
  ]);
  addLayerShapes(m, c, HEAD_LAYER_PREFIX, false);
  return m;
}

/** The first problem with `w` as weights of a head shaped `c` (missing, misshapen, non-finite), or null. */
export function validateHeadWeights(c: HeadConfig, w: Weights): string | null {
  return checkTensors(headShapes(c), w);
}

/**
 * The `--draft random` head: untrained, but with outputs on the target's feature scale so the
 * draft distributions are peaked rather than flat. The fc maps the embedding half to ~0 and
 * the feature half to ~identity (plus noise), so the predicted feature starts near the input
 * feature (a "repeat the last prediction" prior); attention and MLP add scaled noise.
 */
export function randomHeadWeights(target: ModelConfig, seed: number): Weights {
  const c = headConfigFor(target);
  const rng = new Rng(seed);
  const w: Weights = new Map();
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
  const dim = int('hidden_size'), nHeads = int('num_attention_heads');
  const ropeScaling = parseRopeScaling(j.rope_scaling);
  return {
    vocabSize: int('vocab_size'),
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
