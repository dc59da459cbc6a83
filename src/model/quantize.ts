/**
 * Blockwise weight-only quantization in the layout of ORT's com.microsoft MatMulNBits, for the
 * target (`--quantize`, `eaglet quantize`) and the draft head (`--draft-quant`): a decode step
 * reads every weight once, so on a memory-bound CPU its cost is its bytes. A quantized draft
 * head changes only proposals; a quantized target is a different model, and speculation is
 * lossless with respect to it (verification runs the same quantized target).
 *
 * A Linear weight W [N, K] (out, in) is cut along K into blocks of `blockSize`; each block gets
 * one fp32 scale s = max|w| / qmax (symmetric) and stores q = round(w / s) + zero, with
 * zero = 2^(bits-1) (MatMulNBits' default when no zero points are given), so w ~ (q - zero) * s.
 *
 *   packed  uint8 [N, K / blockSize, blockSize * bits / 8]   (4-bit: element 2j in the low nibble)
 *   scales  float32 [N * K / blockSize]
 */
import type { ModelConfig } from './config.ts';
import { expectedShapes, forEachRowChunk, type QuantizedTensor, type QuantizedWeight, type Tensor, type WeightQuant, type Weights } from './weights.ts';

export type { QuantizedTensor, QuantizedWeight, WeightQuant };

export type QuantName = 'q8' | 'q4';

/** The quantization `--quantize q8|q4` and `--draft-quant q8|q4` mean. */
export const QUANT: Record<QuantName, WeightQuant> = { q8: { bits: 8, blockSize: 128 }, q4: { bits: 4, blockSize: 128 } };
export const DRAFT_QUANT = QUANT;

/** The largest power-of-two block <= maxBlock (and >= 16) that divides k, or 0 when none does. */
export function blockFor(k: number, maxBlock: number): number {
  for (let b = maxBlock; b >= 16; b /= 2) if (k % b === 0) return b;
  return 0;
}

/** The block size `w` [N, K] gets under `q` (0: leave it fp32, no block of >= 16 divides K). */
export function blockOf(w: Tensor, q: WeightQuant): number {
  return w.shape.length === 2 ? blockFor(w.shape[1], q.blockSize) : 0;
}

/**
 * `w` [N, K] quantized, row by row; a file-backed `w` is read a chunk of rows at a time and its
 * fp32 values are not kept (forEachRowChunk).
 */
export function quantizeWeight(w: Tensor, { bits, blockSize }: WeightQuant): QuantizedWeight {
  const [n, k] = w.shape, blocks = k / blockSize, qmax = 2 ** (bits - 1) - 1, zero = 2 ** (bits - 1);
  const blob = (blockSize * bits) / 8;
  const packed = new Uint8Array(n * blocks * blob), scales = new Float32Array(n * blocks);
  forEachRowChunk(w, (data, r0) => {
    for (let i = 0; i < data.length / k; i++) {
      const r = r0 + i;
      for (let b = 0; b < blocks; b++) {
        const from = i * k + b * blockSize;
        let amax = 0;
        for (let j = 0; j < blockSize; j++) amax = Math.max(amax, Math.abs(data[from + j]));
        const s = amax > 0 ? amax / qmax : 1;
        scales[r * blocks + b] = s;
        const out = (r * blocks + b) * blob;
        for (let j = 0; j < blockSize; j++) {
          const q = Math.max(-qmax, Math.min(qmax, Math.round(data[from + j] / s))) + zero;
          if (bits === 8) packed[out + j] = q;
          else packed[out + (j >> 1)] |= j & 1 ? q << 4 : q;
        }
      }
    }
  });
  return { n, k, packed, scales };
}

/** The weights the quantized form stands for, [N, K] fp32: (q - zero) * scale. */
export function dequantizeWeight(q: QuantizedWeight, { bits, blockSize }: WeightQuant): Tensor {
  const { n, k } = q, blocks = k / blockSize, zero = 2 ** (bits - 1), blob = (blockSize * bits) / 8;
  const data = new Float32Array(n * k);
  for (let r = 0; r < n; r++)
    for (let b = 0; b < blocks; b++) {
      const s = q.scales[r * blocks + b], at = (r * blocks + b) * blob;
      for (let j = 0; j < blockSize; j++) {
        const v = bits === 8 ? q.packed[at + j] : (q.packed[at + (j >> 1)] >> (j & 1 ? 4 : 0)) & 15;
        data[r * k + b * blockSize + j] = (v - zero) * s;
      }
    }
  return { shape: [n, k], data };
}

/** `w` [N, K] as a quantized-only Tensor (empty data), or `w` itself when no block divides K. */
export function quantizedTensor(w: Tensor, q: WeightQuant): Tensor {
  const blockSize = blockOf(w, q);
  if (blockSize === 0 || w.quant) return w;
  return { shape: [...w.shape], data: new Float32Array(0), quant: { ...quantizeWeight(w, { bits: q.bits, blockSize }), bits: q.bits, blockSize } };
}

/** The fp32 values of `t`: its data, or its quantized weight dequantized. */
export function dense(t: Tensor): Tensor {
  return t.quant ? dequantizeWeight(t.quant, t.quant) : t;
}

/**
 * The target's Linear weights: every projection, and the LM head when untied. (A tied head is
 * the embedding table, which the embedding Gather reads as fp32; the runtime quantizes the head's
 * use of it when the graph is built, see OnnxOps.)
 */
export function linearNames(c: ModelConfig): string[] {
  return [...expectedShapes(c).keys()].filter((n) => n.endsWith('_proj.weight') || n === 'lm_head.weight');
}

/** The quantization of a target's weights: the WeightQuant its Linear weights hold, or undefined for fp32. */
export function quantOf(c: ModelConfig, w: Weights): WeightQuant | undefined {
  let found: WeightQuant | undefined;
  for (const n of linearNames(c)) {
    const q = w.get(n)?.quant;
    if (q) found = { bits: q.bits, blockSize: Math.max(found?.blockSize ?? 0, q.blockSize) };
  }
  return found;
}

/**
 * A copy of `w` with the target's Linear weights quantized (fp32 values dropped). Already
 * quantized weights stay as they are.
 */
export function quantizeLinears(c: ModelConfig, w: Weights, q: WeightQuant): Weights {
  const out = new Map(w);
  for (const n of linearNames(c)) {
    const t = w.get(n);
    if (t) out.set(n, quantizedTensor(t, q));
  }
  return out;
}
