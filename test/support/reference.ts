/**
 * The float64 oracle: a plain-loop Llama forward and EAGLE head forward, llama2.c style,
 * written independently of src/model/definition.ts so that a mistake there cannot hide here.
 * Slow and allocation-happy on purpose; for tests only.
 *
 * Conventions: `visible` is an explicit [T, P + T] 0/1 matrix (row i: which past rows, then
 * which new rows, token i attends to). K/V rows are [nKv * hd] (head-major within a row), keys
 * after RoPE, like the runtime cache.
 */
import type { ModelConfig } from '../../src/model/config.ts';
import type { HeadConfig } from '../../src/model/draft-head.ts';
import type { RopeScaling } from '../../src/model/rope.ts';
import type { Weights } from '../../src/model/weights.ts';

/** 'halves': HF, element i pairs with i + hd/2. 'interleaved': llama2.c, 2i pairs with 2i + 1. */
export type RopeStyle = 'halves' | 'interleaved';

/** Per layer past keys/values, [P, nKv*hd] each. */
export interface RefPast {
  keys: Float64Array[];
  values: Float64Array[];
}

export interface RefOutput {
  /** [T, V] */
  logits: Float64Array;
  /** Final-norm output [T, d]. */
  features: Float64Array;
  /** Per layer new keys after RoPE [T, nKv*hd]. */
  keys: Float64Array[];
  values: Float64Array[];
}

/**
 * A decoder layer's shapes: the head's config less its vocabulary, as the target's config has them
 * too. (The type only: the oracle stays independent of the runtime's code, which is what it checks.)
 */
type Layer = Omit<HeadConfig, 'vocabSize' | 'draftVocabSize'> & { qkNorm?: boolean };

function get(w: Weights, name: string): Float32Array {
  const t = w.get(name);
  if (!t) throw new Error(`reference: missing tensor ${name}`);
  return t.data;
}

/** out[o] = sum_i W[o, i] x[i] (+ b[o]); W [nOut, nIn]. */
function matvec(W: Float32Array, x: Float64Array, nOut: number, nIn: number, b?: Float32Array): Float64Array {
  const out = new Float64Array(nOut);
  for (let o = 0; o < nOut; o++) {
    let s = b ? b[o] : 0;
    for (let i = 0; i < nIn; i++) s += W[o * nIn + i] * x[i];
    out[o] = s;
  }
  return out;
}

function rmsnorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * w[i]);
}

/**
 * Frequency of rotation pair i. Llama 3 scaling, stated as a clamped blend: with
 * r = (original context / wavelength - low) / (high - low) clamped to [0, 1], the frequency is
 * r * f + (1 - r) * f / factor (r = 0: long wavelengths, slowed; r = 1: short ones, kept).
 */
function frequency(i: number, hd: number, theta: number, scaling: RopeScaling | undefined): number {
  const f = 1 / theta ** ((2 * i) / hd);
  if (!scaling) return f;
  const r = Math.min(1, Math.max(0, ((scaling.originalMaxPositions * f) / (2 * Math.PI) - scaling.lowFreqFactor) / (scaling.highFreqFactor - scaling.lowFreqFactor)));
  return r * f + ((1 - r) * f) / scaling.factor;
}

/** RMSNorm of each hd-wide head of `v` with the shared weight w [hd]. */
function headNorm(v: Float64Array, nHeads: number, hd: number, w: Float32Array, eps: number): Float64Array {
  const out = new Float64Array(v.length);
  for (let h = 0; h < nHeads; h++) out.set(rmsnorm(v.subarray(h * hd, (h + 1) * hd), w, eps), h * hd);
  return out;
}

/** Rotates each of the nHeads heads of `v` in place. */
function rope(v: Float64Array, nHeads: number, hd: number, pos: number, theta: number, style: RopeStyle, scaling?: RopeScaling): void {
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < hd / 2; i++) {
      const a = pos * frequency(i, hd, theta, scaling);
      const [i0, i1] = style === 'halves' ? [h * hd + i, h * hd + i + hd / 2] : [h * hd + 2 * i, h * hd + 2 * i + 1];
      const x0 = v[i0], x1 = v[i1];
      v[i0] = x0 * Math.cos(a) - x1 * Math.sin(a);
      v[i1] = x0 * Math.sin(a) + x1 * Math.cos(a);
    }
  }
}

const silu = (x: number): number => x / (1 + Math.exp(-x));

/** One decoder layer over T tokens; returns the new residual rows and this layer's new K/V. */
function layer(
  s: Layer, w: Weights, prefix: string, x: Float64Array[], positions: ArrayLike<number>, visible: Uint8Array,
  pastK: Float64Array | undefined, pastV: Float64Array | undefined, inputNorm: boolean, style: RopeStyle,
): { x: Float64Array[]; k: Float64Array; v: Float64Array } {
  const T = x.length, d = s.dim, hd = s.headDim, qw = s.nHeads * hd, kvw = s.nKvHeads * hd;
  const P = pastK ? pastK.length / kvw : 0;
  const W = (n: string) => get(w, prefix + n);
  const B = (n: string) => (s.attentionBias ? get(w, prefix + n) : undefined);
  const q: Float64Array[] = [], k = new Float64Array(T * kvw), v = new Float64Array(T * kvw);
  for (let t = 0; t < T; t++) {
    const h = inputNorm ? rmsnorm(x[t], W('input_layernorm.weight'), s.normEps) : x[t];
    let qt = matvec(W('self_attn.q_proj.weight'), h, qw, d, B('self_attn.q_proj.bias'));
    let kt = matvec(W('self_attn.k_proj.weight'), h, kvw, d, B('self_attn.k_proj.bias'));
    if (s.qkNorm) {
      qt = headNorm(qt, s.nHeads, hd, W('self_attn.q_norm.weight'), s.normEps);
      kt = headNorm(kt, s.nKvHeads, hd, W('self_attn.k_norm.weight'), s.normEps);
    }
    rope(qt, s.nHeads, hd, positions[t], s.ropeTheta, style, s.ropeScaling);
    rope(kt, s.nKvHeads, hd, positions[t], s.ropeTheta, style, s.ropeScaling);
    q.push(qt);
    k.set(kt, t * kvw);
    v.set(matvec(W('self_attn.v_proj.weight'), h, kvw, d, B('self_attn.v_proj.bias')), t * kvw);
  }
  const keyRow = (j: number) => (j < P ? pastK!.subarray(j * kvw) : k.subarray((j - P) * kvw));
  const valRow = (j: number) => (j < P ? pastV!.subarray(j * kvw) : v.subarray((j - P) * kvw));
  const group = s.nHeads / s.nKvHeads;
  const out: Float64Array[] = [];
  for (let t = 0; t < T; t++) {
    const att = new Float64Array(qw);
    for (let h = 0; h < s.nHeads; h++) {
      const kh = Math.floor(h / group) * hd;
      const scores: number[] = [], idx: number[] = [];
      for (let j = 0; j < P + T; j++) {
        if (!visible[t * (P + T) + j]) continue;
        let dot = 0;
        const kr = keyRow(j);
        for (let i = 0; i < hd; i++) dot += q[t][h * hd + i] * kr[kh + i];
        scores.push(dot / Math.sqrt(hd));
        idx.push(j);
      }
      const m = Math.max(...scores);
      const e = scores.map((x) => Math.exp(x - m));
      const z = e.reduce((a, b) => a + b, 0);
      idx.forEach((j, n) => {
        const vr = valRow(j);
        for (let i = 0; i < hd; i++) att[h * hd + i] += (e[n] / z) * vr[kh + i];
      });
    }
    const o = matvec(W('self_attn.o_proj.weight'), att, d, qw);
    const mid = x[t].map((xv, i) => xv + o[i]);
    const h2 = rmsnorm(mid, W('post_attention_layernorm.weight'), s.normEps);
    const gate = matvec(W('mlp.gate_proj.weight'), h2, s.hiddenDim, d);
    const up = matvec(W('mlp.up_proj.weight'), h2, s.hiddenDim, d);
    const down = matvec(W('mlp.down_proj.weight'), gate.map((g, i) => silu(g) * up[i]), d, s.hiddenDim);
    out.push(mid.map((mv, i) => mv + down[i]));
  }
  return { x: out, k, v };
}

function embedRows(table: Float32Array, ids: ArrayLike<number>, d: number): Float64Array[] {
  return Array.from(ids, (id) => Float64Array.from(table.subarray(id * d, (id + 1) * d)));
}

function lmHeadOf(cfg: ModelConfig, w: Weights): Float32Array {
  return get(w, cfg.tieEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
}

function flat(rows: Float64Array[]): Float64Array {
  const out = new Float64Array(rows.length * (rows[0]?.length ?? 0));
  rows.forEach((r, i) => out.set(r, i * r.length));
  return out;
}

/** The target's forward over T = ids.length tokens after an optional past. */
export function referenceForward(
  cfg: ModelConfig, w: Weights, ids: ArrayLike<number>, positions: ArrayLike<number>, visible: Uint8Array,
  style: RopeStyle = 'halves', past?: RefPast,
): RefOutput {
  let x = embedRows(get(w, 'model.embed_tokens.weight'), ids, cfg.dim);
  const keys: Float64Array[] = [], values: Float64Array[] = [];
  for (let l = 0; l < cfg.nLayers; l++) {
    const r = layer(cfg, w, `model.layers.${l}.`, x, positions, visible, past?.keys[l], past?.values[l], true, style);
    x = r.x;
    keys.push(r.k);
    values.push(r.v);
  }
  const features = x.map((r) => rmsnorm(r, get(w, 'model.norm.weight'), cfg.normEps));
  const head = lmHeadOf(cfg, w);
  const logits = features.map((f) => matvec(head, f, cfg.vocabSize, cfg.dim));
  return { logits: flat(logits), features: flat(features), keys, values };
}

export interface RefHeadOutput {
  /** Predicted features [T, d]. */
  hidden: Float64Array;
  /** log_softmax(lm_head(hidden)) [T, V], or [T, N] over draft ids for a reduced draft vocabulary. */
  logProbs: Float64Array;
  /** The head layer's new keys after RoPE [T, nKv*hd]. */
  key: Float64Array;
  value: Float64Array;
}

/** The EAGLE head: fc(concat(embed(id), feature)) -> one layer without input norm; target LM head. */
export function referenceHeadForward(
  head: HeadConfig, hw: Weights, target: ModelConfig, tw: Weights,
  ids: ArrayLike<number>, features: ArrayLike<number>, positions: ArrayLike<number>, visible: Uint8Array,
  past?: { key: Float64Array; value: Float64Array },
): RefHeadOutput {
  const d = head.dim;
  const emb = embedRows(get(tw, 'model.embed_tokens.weight'), ids, d);
  const x = emb.map((e, t) => {
    const cat = new Float64Array(2 * d);
    cat.set(e, 0);
    for (let i = 0; i < d; i++) cat[d + i] = features[t * d + i];
    return matvec(get(hw, 'fc.weight'), cat, d, 2 * d, get(hw, 'fc.bias'));
  });
  const r = layer(head, hw, 'layers.0.', x, positions, visible, past?.key, past?.value, false, 'halves');
  // A reduced draft vocabulary scores its N draft ids with its own LM head rows.
  const lm = head.draftVocabSize !== undefined ? get(hw, 'lm_head.weight') : lmHeadOf(target, tw);
  const logProbs = r.x.map((h) => {
    const z = matvec(lm, h, head.draftVocabSize ?? head.vocabSize, d);
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((a, b) => a + Math.exp(b - m), 0));
    return z.map((v) => v - lse);
  });
  return { hidden: flat(r.x), logProbs: flat(logProbs), key: r.k, value: r.v };
}

/**
 * Visibility [T, P + T] for T new tokens after P past rows: all past rows, plus among the new
 * tokens either causal order (no parents) or ancestors-or-self in a forest given by
 * parents[i] < i (-1 = root).
 */
export function visibility(P: number, T: number, parents?: ArrayLike<number>): Uint8Array {
  const m = new Uint8Array(T * (P + T));
  for (let i = 0; i < T; i++) {
    m.fill(1, i * (P + T), i * (P + T) + P);
    if (!parents) m.fill(1, i * (P + T) + P, i * (P + T) + P + i + 1);
    else for (let a = i; a >= 0; a = parents[a]) m[i * (P + T) + P + a] = 1;
  }
  return m;
}
