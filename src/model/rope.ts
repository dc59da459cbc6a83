/**
 * RoPE frequencies: plain (theta^(-2i/hd)) or Llama 3's `rope_scaling` {rope_type: "llama3"},
 * which divides the low frequencies (wavelength beyond the original context) by `factor`, keeps
 * the high ones, and blends linearly in between (HF's `_compute_llama3_parameters`; the
 * attention scale stays 1). Renderers build their cos/sin tables from `ropeInvFreq`.
 */

/** Llama 3 frequency scaling, as config.json's `rope_scaling` states it. */
export interface RopeScaling {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  /** The context length the model was pre-trained at. */
  originalMaxPositions: number;
}

/** What RoPE needs from a layer config. */
export interface RopeSpec {
  ropeTheta: number;
  ropeScaling?: RopeScaling;
}

/** Inverse frequencies [hd/2] of RoPE, in float64. */
export function ropeInvFreq(headDim: number, spec: RopeSpec): Float64Array {
  const half = headDim / 2, out = new Float64Array(half);
  const s = spec.ropeScaling;
  for (let i = 0; i < half; i++) {
    const f = Math.pow(spec.ropeTheta, (-2 * i) / headDim);
    if (!s) {
      out[i] = f;
      continue;
    }
    const wavelen = (2 * Math.PI) / f;
    const lowWavelen = s.originalMaxPositions / s.lowFreqFactor, highWavelen = s.originalMaxPositions / s.highFreqFactor;
    if (wavelen < highWavelen) out[i] = f;
    else if (wavelen > lowWavelen) out[i] = f / s.factor;
    else {
      const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      out[i] = (1 - smooth) * (f / s.factor) + smooth * f;
    }
  }
  return out;
}

/**
 * cos and sin of p * invFreq_i, [P, hd/2] each (row-major), computed in float64 and stored as
 * float32, for the positions p of `positions` (a number n: positions 0..n-1). The tables every
 * RoPE rendering (ONNX, training graphs, tfjs, llama2.c files) reads.
 */
export function ropeCosSin(invFreq: Float64Array, positions: number | ArrayLike<number>): { cos: Float32Array; sin: Float32Array } {
  const n = typeof positions === 'number' ? positions : positions.length, half = invFreq.length;
  const cos = new Float32Array(n * half), sin = new Float32Array(n * half);
  for (let r = 0; r < n; r++) {
    const p = typeof positions === 'number' ? r : positions[r];
    for (let i = 0; i < half; i++) {
      const a = p * invFreq[i];
      cos[r * half + i] = Math.cos(a);
      sin[r * half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}

/**
 * Reads config.json's `rope_scaling` (null/absent or type "default" = plain RoPE). Throws a
 * plain Error naming the field for types eaglet does not implement or bad parameters.
 */
export function parseRopeScaling(v: unknown): RopeScaling | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw new Error(`rope_scaling must be an object or null, got ${JSON.stringify(v)}`);
  const o = v as Record<string, unknown>;
  const type = o.rope_type ?? o.type;
  if (type === 'default') return undefined;
  if (type !== 'llama3') throw new Error(`rope_scaling type ${JSON.stringify(type)} is not supported (eaglet implements plain RoPE and llama3)`);
  const pos = (k: string): number => {
    const x = o[k];
    if (typeof x !== 'number' || !(x > 0)) throw new Error(`rope_scaling.${k} must be a positive number, got ${JSON.stringify(x)}`);
    return x;
  };
  const r: RopeScaling = {
    type: 'llama3',
    factor: pos('factor'),
    lowFreqFactor: pos('low_freq_factor'),
    highFreqFactor: pos('high_freq_factor'),
    originalMaxPositions: pos('original_max_position_embeddings'),
  };
  if (!(r.highFreqFactor > r.lowFreqFactor)) throw new Error(`rope_scaling.high_freq_factor (${r.highFreqFactor}) must exceed low_freq_factor (${r.lowFreqFactor})`);
  return r;
}

/** The config.json form of `s` (null for plain RoPE). */
export function ropeScalingToJson(s: RopeScaling | undefined): Record<string, unknown> | null {
  if (!s) return null;
  return {
    rope_type: s.type,
    factor: s.factor,
    low_freq_factor: s.lowFreqFactor,
    high_freq_factor: s.highFreqFactor,
    original_max_position_embeddings: s.originalMaxPositions,
  };
}
