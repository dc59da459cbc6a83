/**
 * Quantized checkpoints, as `eaglet quantize` writes them: an HF checkpoint directory whose
 * Linear weights and token embedding table are stored blockwise-quantized (src/model/quantize.ts).
 * Our format, not a Hugging Face quantization method:
 *
 *   config.json        the HF config plus
 *                        "quantization_config": { "quant_method": "eaglet_blockwise",
 *                          "bits": 4 | 8, "block_size": B, "symmetric": true, "zero_point": 2^(bits-1) }
 *   model.safetensors  norms and biases F32, as in an HF checkpoint; each Linear weight and the
 *                      embedding table `X.weight` [N, K] as
 *                        X.qweight  U8  [N, K/b, b*bits/8]   b = the largest power of two <= B
 *                        X.scales   F32 [N, K/b]               (and >= 16) dividing K
 *                      w[n, k] = (q - zero_point) * scale[n, k / b]; 4-bit: element 2j in the low
 *                      nibble of byte j. A tensor no such b divides stays `X.weight` F32, and so
 *                      does the embedding table of a checkpoint written before it was quantized
 *                      (still read: that target looks its embeddings up in fp32).
 *
 * This is the byte layout of ORT's MatMulNBits (no zero-point tensor), so loading hands the
 * bytes to ORT as they are (file-backed: ORT reads them from model.safetensors). The embedding
 * table's rows are looked up with GatherBlockQuantized over the same bytes; a tied LM head is
 * that table (an F32 one is quantized when the graph is built).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, FormatError } from '../errors.ts';
import type { ModelConfig } from '../model/config.ts';
import { quantizedNames, quantOf, type WeightQuant } from '../model/quantize.ts';
import { expectedShapes, fileQuantized, validateWeights, type Tensor, type Weights } from '../model/weights.ts';
import { writeFileAtomic } from './atomic.ts';
import { FILE_BACKED, readSafetensors, readSafetensorsBytes, writeSafetensors } from './safetensors.ts';

export const QUANT_METHOD = 'eaglet_blockwise';

const base = (linear: string) => linear.slice(0, -'.weight'.length);

/**
 * The `quantization_config` of a parsed config.json: its WeightQuant, undefined when absent.
 * Throws ConfigError for another quantization method or bad fields.
 */
export function parseQuantization(json: Record<string, unknown>, file: string): WeightQuant | undefined {
  const q = json.quantization_config;
  if (q === undefined || q === null) return undefined;
  const j = q as Record<string, unknown>;
  if (j.quant_method !== QUANT_METHOD) throw new ConfigError(file, `quantization_config.quant_method ${JSON.stringify(j.quant_method)} is not supported (eaglet reads unquantized checkpoints and its own "${QUANT_METHOD}")`);
  if (j.bits !== 4 && j.bits !== 8) throw new ConfigError(file, `quantization_config.bits must be 4 or 8, got ${JSON.stringify(j.bits)}`);
  const b = j.block_size;
  if (typeof b !== 'number' || !Number.isInteger(b) || b < 16 || (b & (b - 1)) !== 0) throw new ConfigError(file, `quantization_config.block_size must be a power of two >= 16, got ${JSON.stringify(b)}`);
  return { bits: j.bits, blockSize: b };
}

/** Reads the tensors of a quantized checkpoint's `model.safetensors` (config already parsed). */
export function loadQuantizedWeights(dir: string, cfg: ModelConfig, q: WeightQuant): Weights {
  const file = join(dir, 'model.safetensors');
  if (!existsSync(file)) throw new FormatError(dir, 'a quantized checkpoint needs model.safetensors (shards are not supported)');
  // Each Linear weight and the embedding table may be stored either way (checkpoints written before
  // the table was quantized hold it F32).
  const linears = new Set(quantizedNames(cfg));
  const packedNames = new Set([...linears].map((n) => `${base(n)}.qweight`));
  const f32 = new Set([...expectedShapes(cfg).keys(), ...[...linears].map((n) => `${base(n)}.scales`)]);
  // Packed bytes and scales stay in the file (ORT reads them there, as the F32 weights of an HF checkpoint).
  const weights: Weights = readSafetensors(file, (n) => f32.has(n), FILE_BACKED).tensors;
  const packed = readSafetensorsBytes(file, (n) => packedNames.has(n), FILE_BACKED);
  const expected = expectedShapes(cfg);
  for (const name of linears) {
    const p = packed.get(`${base(name)}.qweight`);
    if (!p) continue; // stored F32 (or missing: validateWeights names it)
    const [n, k] = expected.get(name)!, scales = weights.get(`${base(name)}.scales`);
    weights.delete(`${base(name)}.scales`);
    const bad = (problem: string) => new FormatError(file, `${base(name)}: ${problem}`);
    if (!scales) throw bad('has qweight but no scales');
    const [rows, blocks, blob] = p.shape;
    const blockSize = blocks > 0 ? k / blocks : 0;
    if (p.shape.length !== 3 || rows !== n || !Number.isInteger(blockSize) || blockSize > q.blockSize || blockSize < 16 || blob !== (blockSize * q.bits) / 8)
      throw bad(`qweight shape [${p.shape}] does not fit a [${n}, ${k}] weight at ${q.bits} bits, blocks of at most ${q.blockSize}`);
    if (scales.shape.length !== 2 || scales.shape[0] !== n || scales.shape[1] !== blocks) throw bad(`scales shape [${scales.shape}], expected [${n}, ${blocks}]`);
    const shape = { n, k, bits: q.bits, blockSize };
    const quant = p.file ? fileQuantized(shape, { file: p.file, read: () => p.bytes }, scales) : { ...shape, packed: p.bytes, scales: scales.data };
    weights.set(name, { shape: [n, k], data: new Float32Array(0), quant });
  }
  const problem = validateWeights(cfg, weights);
  if (problem) throw new FormatError(file, problem);
  return weights;
}

/**
 * Writes a quantized checkpoint of `cfg` (config.json with quantization_config, model.safetensors)
 * to `dir`. `weights` are a target's with its Linear weights (and embedding table) held quantized (quantizeTarget).
 */
export function saveQuantizedCheckpoint(dir: string, cfg: ModelConfig, weights: Weights, hfConfig: Record<string, unknown>): void {
  const problem = validateWeights(cfg, weights);
  if (problem) throw new ConfigError(dir, `refusing to save: ${problem}`);
  const q = quantOf(cfg, weights);
  if (!q) throw new ConfigError(dir, 'refusing to save: no weight is quantized');
  mkdirSync(dir, { recursive: true });
  const tensors = new Map<string, Tensor>(), bytes = new Map<string, { shape: number[]; bytes: Uint8Array }>();
  for (const name of expectedShapes(cfg).keys()) {
    const t = weights.get(name)!;
    if (!t.quant) {
      tensors.set(name, t);
      continue;
    }
    const { n, k, packed, scales, bits, blockSize } = t.quant, blocks = k / blockSize;
    bytes.set(`${base(name)}.qweight`, { shape: [n, blocks, (blockSize * bits) / 8], bytes: packed });
    tensors.set(`${base(name)}.scales`, { shape: [n, blocks], data: scales });
  }
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' }, { bytes });
  const quantization_config = { quant_method: QUANT_METHOD, bits: q.bits, block_size: q.blockSize, symmetric: true, zero_point: 2 ** (q.bits - 1) };
  writeFileAtomic(join(dir, 'config.json'), JSON.stringify({ ...hfConfig, quantization_config, torch_dtype: undefined }, null, 2) + '\n');
}
