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
import { UsageError } from '../errors.ts';
import type { ModelConfig } from './config.ts';
import { EMBEDDING, expectedShapes, forEachRowChunk, LM_HEAD, type QuantizedTensor, type QuantizedWeight, type Tensor, type WeightQuant, type Weights } from './weights.ts';

export type { QuantizedTensor, QuantizedWeight, WeightQuant };

export type QuantName = 'q8' | 'q4';

/**
 * The target quantization `--quantize q8|q4` (and `eaglet quantize --bits 8|4`) means. Quantized
 * verification must score each row bit for bit as a plain decoding step does, and with int8
 * activations that is a property of ORT's kernels, not of the format. Measured on ORT 1.30's x64
 * AVX512-VNNI kernels (test/quantize-rows.test.ts, scripts/row-kernels.ts): MLAS computes rows
 * in pairs with one kernel and a lone row (a one-row pass, the last row of an odd pass) with
 * another; they differ only in how they sum the 16 lanes of a row's fp32 accumulator
 * (`_mm512_reduce_add_ps` vs a 4-column fold), and a paired row's result does not depend on its
 * partner. With 4-bit blocks of 64 or 128, and 8-bit blocks of 128, the two kernels' sums
 * differ by a few ulps; 4-bit blocks of 32 (and 16) and 8-bit blocks of 64, 32 and 16 go through
 * kernels whose two paths sum alike (ROW_EXACT_BLOCK). A target's graphs feed every MatMulNBits
 * with larger blocks an even number of rows (OnnxOpsOptions.evenRows: a one-token step computes
 * two rows, an odd verify pass one more), so every row takes the pair kernel.
 *
 * q4 uses blocks of 128 (4.25 bits a weight, against 5 in blocks of 32, whose scales cost bytes
 * and whose kernel is slower): padded to two rows, the 100M target's q4 step still ran faster
 * than in blocks of 32 (docs/performance.md, "Quantized targets"). The rest of a quantized target's pass is
 * row-exact too (OnnxOpsOptions.rowExactAttention), so speculation is bit-exact with respect to
 * plain decoding. q8 keeps blocks of 32 (exact without padding; 64 would be too).
 */
export const QUANT: Record<QuantName, WeightQuant> = { q8: { bits: 8, blockSize: 32 }, q4: { bits: 4, blockSize: 128 } };

/**
 * The largest block, by bits, whose 1-row and paired-row int8 kernels sum alike (above): a
 * target's MatMulNBits with larger blocks are fed even row counts.
 */
export const ROW_EXACT_BLOCK: Record<number, number> = { 4: 32, 8: 64 };

/**
 * The draft head's quantization (`--draft-quant`, and `--quantize` alone): the head only
 * proposes tokens, so its rows need not be computed alike across passes, and it keeps the
 * larger blocks (fewer bytes a draft pass).
 */
export const DRAFT_QUANT: Record<QuantName, WeightQuant> = { q8: { bits: 8, blockSize: 128 }, q4: { bits: 4, blockSize: 128 } };

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
export function dequantizeWeight(q: QuantizedWeight, wq: WeightQuant): Tensor {
  const data = new Float32Array(q.n * q.k);
  for (let r = 0; r < q.n; r++) dequantizeRow(q, wq, r, data.subarray(r * q.k, (r + 1) * q.k));
  return { shape: [q.n, q.k], data };
}

/** Row `r` of a quantized weight as fp32 into `out` [K]. */
function dequantizeRow(q: QuantizedWeight, { bits, blockSize }: WeightQuant, r: number, out: Float32Array): void {
  const blocks = q.k / blockSize, zero = 2 ** (bits - 1), blob = (blockSize * bits) / 8, packed = q.packed, scales = q.scales;
  for (let b = 0; b < blocks; b++) {
    const s = scales[r * blocks + b], at = (r * blocks + b) * blob;
    for (let j = 0; j < blockSize; j++) {
      const v = bits === 8 ? packed[at + j] : (packed[at + (j >> 1)] >> (j & 1 ? 4 : 0)) & 15;
      out[b * blockSize + j] = (v - zero) * s;
    }
  }
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
 * the embedding table: quantizeTarget quantizes it as the table, and the head's MatMulNBits
 * reads the same packed bytes; an fp32 table under a quantized target is quantized for the
 * head's use when the graph is built, see OnnxOps.)
 */
export function linearNames(c: ModelConfig): string[] {
  return [...expectedShapes(c).keys()].filter((n) => n.endsWith('_proj.weight') || n === LM_HEAD);
}

/** The tensors a quantized target holds quantized: its Linear weights and the token embedding table. */
export function quantizedNames(c: ModelConfig): string[] {
  return [EMBEDDING, ...linearNames(c)];
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
  return quantizeNamed(w, linearNames(c), q);
}

/**
 * The quantized target `--quantize` and `eaglet quantize` make: a copy of `w` with the Linear
 * weights and the token embedding table quantized (quantizedNames; fp32 values dropped). The
 * embedding is looked up from its packed rows (GatherBlockQuantized), so the target, a draft
 * head's embedding input and a tied LM head all read the same dequantized table.
 */
export function quantizeTarget(c: ModelConfig, w: Weights, q: WeightQuant): Weights {
  return quantizeNamed(w, quantizedNames(c), q);
}

/**
 * `m` with its target quantized as `--quantize q` says (quantizeTarget; a new object, `m` is not
 * changed): what `loadGenerator`, `eaglet log` and `eaglet train-draft` run. A checkpoint already
 * quantized to q's bits is kept as it is; to other bits it is a UsageError.
 */
export function quantizedModel<M extends { config: ModelConfig; weights: Weights }>(m: M, q: QuantName | undefined): M {
  if (!q) return m;
  const held = quantOf(m.config, m.weights);
  if (held && held.bits !== QUANT[q].bits) throw new UsageError('--quantize', `${q}: this model is already quantized to ${held.bits} bits`);
  return held ? m : { ...m, weights: quantizeTarget(m.config, m.weights, QUANT[q]) };
}

function quantizeNamed(w: Weights, names: string[], q: WeightQuant): Weights {
  const out = new Map(w);
  for (const n of names) {
    const t = w.get(n);
    if (t) out.set(n, quantizedTensor(t, q));
  }
  return out;
}

/** Row `r` of `t` [R, C] as fp32 into `out` [C]: copied, or dequantized from its packed block row. */
export function denseRow(t: Tensor, r: number, out: Float32Array): void {
  if (t.quant) dequantizeRow(t.quant, t.quant, r, out);
  else out.set(t.data.subarray(r * t.shape[1], (r + 1) * t.shape[1]));
}
