/**
 * Blockwise weight-only quantization in the layout of ORT's com.microsoft MatMulNBits, for the
 * draft head: a draft pass reads its weights once per depth, so on a memory-bound CPU its cost
 * is its bytes. Draft quality is all that changes (verification still runs the fp32 target, so
 * output stays lossless).
 *
 * A Linear weight W [N, K] (out, in) is cut along K into blocks of `blockSize`; each block gets
 * one fp32 scale s = max|w| / qmax (symmetric) and stores q = round(w / s) + zero, with
 * zero = 2^(bits-1) (MatMulNBits' default when no zero points are given), so w ~ (q - zero) * s.
 *
 *   packed  uint8 [N, K / blockSize, blockSize * bits / 8]   (4-bit: element 2j in the low nibble)
 *   scales  float32 [N * K / blockSize]
 */
import type { Tensor } from './weights.ts';

export interface WeightQuant {
  /** 8 or 4 bits per weight. */
  bits: 4 | 8;
  /**
   * Weights per scale along the input axis: a power of two >= 16 dividing K (see blockFor).
   * Larger blocks ran faster on ORT's CPU kernel (scripts/bench-draft.ts: 128 vs 32).
   */
  blockSize: number;
}

/** The quantization `--draft-quant q8|q4` means. */
export const DRAFT_QUANT: Record<'q8' | 'q4', WeightQuant> = { q8: { bits: 8, blockSize: 128 }, q4: { bits: 4, blockSize: 128 } };

/** The largest power-of-two block <= maxBlock (and >= 16) that divides k, or 0 when none does. */
export function blockFor(k: number, maxBlock: number): number {
  for (let b = maxBlock; b >= 16; b /= 2) if (k % b === 0) return b;
  return 0;
}

export interface QuantizedWeight {
  /** [N, K] of the original. */
  n: number;
  k: number;
  packed: Uint8Array;
  scales: Float32Array;
}

/** The block size `w` [N, K] gets under `q` (0: leave it fp32, no block of >= 16 divides K). */
export function blockOf(w: Tensor, q: WeightQuant): number {
  return w.shape.length === 2 ? blockFor(w.shape[1], q.blockSize) : 0;
}

export function quantizeWeight(w: Tensor, { bits, blockSize }: WeightQuant): QuantizedWeight {
  const [n, k] = w.shape, blocks = k / blockSize, qmax = 2 ** (bits - 1) - 1, zero = 2 ** (bits - 1);
  const blob = (blockSize * bits) / 8;
  const packed = new Uint8Array(n * blocks * blob), scales = new Float32Array(n * blocks);
  for (let r = 0; r < n; r++) {
    for (let b = 0; b < blocks; b++) {
      const from = r * k + b * blockSize;
      let amax = 0;
      for (let j = 0; j < blockSize; j++) amax = Math.max(amax, Math.abs(w.data[from + j]));
      const s = amax > 0 ? amax / qmax : 1;
      scales[r * blocks + b] = s;
      const out = (r * blocks + b) * blob;
      for (let j = 0; j < blockSize; j++) {
        const q = Math.max(-qmax, Math.min(qmax, Math.round(w.data[from + j] / s))) + zero;
        if (bits === 8) packed[out + j] = q;
        else packed[out + (j >> 1)] |= j & 1 ? q << 4 : q;
      }
    }
  }
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
