/**
 * Cost-scaled benchmark fixtures: a trained target + draft head embedded in a larger shape so
 * that every pass costs what a model of that shape costs while the greedy output stays the
 * original's. A benchmark fixture, not a model: the extra width, heads, units and layers are
 * exact zeros, so the scaled pair knows exactly what the small one knows.
 *
 * How the embedding stays exact (d -> D, head width hd kept):
 * - Residual stream: x' = [x, 0]. Every weight writing to it (embedding, o_proj, down_proj, fc)
 *   fills only its first d rows, so the padded coordinates stay 0 through every layer.
 * - RMSNorm: mean(x'^2) over D = (d/D) mean(x^2). With eps' = eps * d/D and w' = w * sqrt(d/D):
 *   x / sqrt((d/D)(mean + eps)) * w sqrt(d/D) = x / sqrt(mean + eps) * w, the original output.
 * - Attention: heads nH' = D / hd; the original heads keep their indices (rows of q, k, v and
 *   columns of o_proj). The GQA group size g = nH / nKv is kept (nKv' = nH' / g), so query head
 *   h < nH still reads K/V head floor(h / g). Extra heads have zero q/k/v rows and zero o_proj
 *   columns: whatever they attend to, they add exactly 0.
 * - MLP: extra units have zero gate/up rows and zero down_proj columns: silu(0) * 0 = 0.
 * - Extra layers: all projections zero, so each is an exact identity (x + 0 + 0).
 * - Vocabulary unchanged (a padded token would need a logit below every real one, which zero
 *   padding cannot promise), so the LM head keeps V rows and grows to D columns.
 * - EAGLE head fc [d, 2d] -> [D, 2D]: its input is concat(embedding', feature') =
 *   [e, 0, f, 0], so column c < d stays at c and column d + c moves to D + c.
 * - LDLP predictors read [feature, embedding] (2d): their first layer's columns move the same way.
 *
 * Dense float32 matmuls cost the same whatever values they hold, so zeros cost like weights.
 */
import type { ModelConfig } from './config.ts';
import { headShapes, type HeadConfig } from './draft-head.ts';
import type { MlpConfig } from './mlp.ts';
import { expectedShapes, layerKey, tensor, type Tensor, type Weights } from './weights.ts';

/** The larger shape: width D, layers L, SwiGLU width I. head_dim is kept. */
export interface ScaleShape {
  dim: number;
  nLayers: number;
  hiddenDim: number;
}

/** Why `c` cannot be embedded in `s`, or null. */
export function scaleProblem(c: Pick<ModelConfig, 'dim' | 'nLayers' | 'hiddenDim' | 'nHeads' | 'nKvHeads' | 'headDim'>, s: ScaleShape): string | null {
  if (s.dim < c.dim) return `--dim ${s.dim} is smaller than the model's ${c.dim}`;
  if (s.nLayers < c.nLayers) return `--layers ${s.nLayers} is fewer than the model's ${c.nLayers}`;
  if (s.hiddenDim < c.hiddenDim) return `--intermediate ${s.hiddenDim} is smaller than the model's ${c.hiddenDim}`;
  if (s.dim % c.headDim !== 0) return `--dim ${s.dim} is not a multiple of the head width ${c.headDim}`;
  if (c.nHeads * c.headDim > s.dim) return `the model's ${c.nHeads} heads of ${c.headDim} do not fit in --dim ${s.dim}`;
  const g = c.nHeads / c.nKvHeads;
  if ((s.dim / c.headDim) % g !== 0) return `--dim ${s.dim} gives ${s.dim / c.headDim} heads, not a multiple of the GQA group size ${g}`;
  return null;
}

/** Heads of the scaled layer: head width and GQA group size kept. */
function scaledHeads(c: { nHeads: number; nKvHeads: number; headDim: number }, dim: number): { nHeads: number; nKvHeads: number } {
  const nHeads = dim / c.headDim;
  return { nHeads, nKvHeads: nHeads / (c.nHeads / c.nKvHeads) };
}

/** The target config scaled to `s`. */
export function scaledTargetConfig(c: ModelConfig, s: ScaleShape): ModelConfig {
  return { ...c, ...scaledHeads(c, s.dim), dim: s.dim, nLayers: s.nLayers, hiddenDim: s.hiddenDim, normEps: (c.normEps * c.dim) / s.dim };
}

/** The head config scaled to target width `s.dim`; its MLP grows with the target's. */
export function scaledHeadConfig(h: HeadConfig, target: ModelConfig, s: ScaleShape): HeadConfig {
  const hiddenDim = h.hiddenDim === target.hiddenDim ? s.hiddenDim : Math.max(h.hiddenDim, Math.round((h.hiddenDim * s.hiddenDim) / target.hiddenDim));
  return { ...h, ...scaledHeads(h, s.dim), dim: s.dim, hiddenDim, normEps: (h.normEps * h.dim) / s.dim };
}

/**
 * `src` [R, C] copied into a zero tensor of `shape`: row r to row r, column c to colMap(c)
 * (default: c). 1-D tensors copy to the same indices.
 */
export function embedTensor(src: Tensor, shape: number[], colMap: (c: number) => number = (c) => c, scale = 1): Tensor {
  const t = tensor(shape);
  if (src.shape.length === 1) {
    for (let i = 0; i < src.data.length; i++) t.data[i] = src.data[i] * scale;
    return t;
  }
  const [R, C] = src.shape, W = shape[1];
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) t.data[r * W + colMap(c)] = src.data[r * C + c] * scale;
  return t;
}

/** Norm weights: rescaled so the RMSNorm of the padded vector equals the original's (module comment). */
const isNorm = (name: string) => name.endsWith('norm.weight');

/** Embeds every tensor of `w` (names in `from`) into the shapes of `to`; tensors only in `to` are zero. */
function embedAll(w: Weights, from: Map<string, number[]>, to: Map<string, number[]>, normScale: number, colMaps: Record<string, (c: number) => number> = {}): Weights {
  const out: Weights = new Map();
  for (const [name, shape] of to) {
    const src = from.has(name) ? w.get(name) : undefined;
    out.set(name, src ? embedTensor(src, shape, colMaps[name], isNorm(name) ? normScale : 1) : tensor(shape));
  }
  return out;
}

/** The target embedded in shape `s` (module comment): same greedy output, the cost of `s`. */
export function scaleTarget(c: ModelConfig, w: Weights, s: ScaleShape): { config: ModelConfig; weights: Weights } {
  const problem = scaleProblem(c, s);
  if (problem) throw new RangeError(problem);
  const config = scaledTargetConfig(c, s);
  const weights = embedAll(w, expectedShapes(c), expectedShapes(config), Math.sqrt(c.dim / s.dim));
  // Extra layers' norms: any value gives an identity (their projections are zero); 1 keeps them ordinary.
  for (let l = c.nLayers; l < s.nLayers; l++)
    for (const n of ['input_layernorm.weight', 'post_attention_layernorm.weight']) weights.get(layerKey(l, n))!.data.fill(1);
  return { config, weights };
}

/** Column map of a [*, 2d] input concat(a, b) (a, b of width d) into [*, 2D]. */
export const concatColumns = (d: number, D: number) => (c: number) => (c < d ? c : c - d + D);

/** The draft head embedded for the target scaled to `s`. */
export function scaleHead(h: HeadConfig, w: Weights, target: ModelConfig, s: ScaleShape): { config: HeadConfig; weights: Weights } {
  const problem = scaleProblem({ ...h, nLayers: 1 }, { ...s, nLayers: 1, hiddenDim: Math.max(s.hiddenDim, h.hiddenDim) });
  if (problem) throw new RangeError(`draft head: ${problem}`);
  const config = scaledHeadConfig(h, target, s);
  const from = headShapes(h);
  for (const name of w.keys()) if (!from.has(name)) throw new RangeError(`draft head tensor ${name} is not part of the EAGLE-1/2 layout cost-scale knows`);
  const weights = embedAll(w, from, headShapes(config), Math.sqrt(h.dim / s.dim), { 'fc.weight': concatColumns(h.dim, s.dim) });
  return { config, weights };
}

/**
 * A predictor MLP that reads [feature, embedding] (2d, LDLP and SpecDec++) rewired for the
 * scaled width: its first layer's columns move like the fc's; the rest is unchanged.
 */
export function scaleMlpInput(cfg: MlpConfig, w: Weights, d: number, D: number): { config: MlpConfig; weights: Weights } {
  if (cfg.inputDim !== 2 * d) throw new RangeError(`predictor input width ${cfg.inputDim} is not 2 x ${d}`);
  const weights: Weights = new Map(w);
  const first = w.get('layers.0.weight')!;
  weights.set('layers.0.weight', embedTensor(first, [first.shape[0], 2 * D], concatColumns(d, D)));
  return { config: { ...cfg, inputDim: 2 * D }, weights };
}
