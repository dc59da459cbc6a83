/**
 * Weights in memory: float32 tensors keyed by HF Llama names.
 *
 *   model.embed_tokens.weight                     [V, d]
 *   model.layers.{i}.input_layernorm.weight       [d]
 *   model.layers.{i}.self_attn.q_proj.weight      [nHeads*hd, d]    (+ .bias [nHeads*hd] if attentionBias)
 *   model.layers.{i}.self_attn.k_proj.weight      [nKv*hd, d]       (+ .bias)
 *   model.layers.{i}.self_attn.v_proj.weight      [nKv*hd, d]       (+ .bias)
 *   model.layers.{i}.self_attn.{q,k}_norm.weight  [hd]    (Qwen3, if qkNorm)
 *   model.layers.{i}.self_attn.o_proj.weight      [d, nHeads*hd]
 *   model.layers.{i}.post_attention_layernorm.weight [d]
 *   model.layers.{i}.mlp.gate_proj.weight         [hidden, d]
 *   model.layers.{i}.mlp.up_proj.weight           [hidden, d]
 *   model.layers.{i}.mlp.down_proj.weight         [d, hidden]
 *   model.norm.weight                             [d]
 *   lm_head.weight                                [V, d]   (absent when tieEmbeddings)
 *
 * Linear weights are [out, in] row-major, as in PyTorch. q/k rows follow the HF "rotate
 * halves" RoPE convention.
 */
import type { ModelConfig } from './config.ts';

/** Blockwise weight-only quantization (see quantize.ts). */
export interface WeightQuant {
  /** 8 or 4 bits per weight. */
  bits: 4 | 8;
  /**
   * Weights per scale along the input axis: a power of two >= 16 dividing K (see blockFor).
   * Larger blocks ran faster on ORT's CPU kernel (scripts/bench-draft.ts: 128 vs 32).
   */
  blockSize: number;
}

/** [N, K] of a quantized weight's original. */
export interface QuantizedWeightShape {
  n: number;
  k: number;
}

/** A Linear weight [N, K] in quantize.ts's packed layout. */
export interface QuantizedWeight extends QuantizedWeightShape {
  packed: Uint8Array;
  scales: Float32Array;
}

/**
 * A quantized Linear weight with its own bits and block size (as stored on disk and in Tensor.quant).
 * `packedFile` / `scalesFile`: the checkpoint bytes holding exactly `packed` / `scales` (an
 * `eaglet quantize` checkpoint): ORT reads them from the file, and JS reads `packed` / `scales`
 * only if something asks for them (they are getters then, see quantized-checkpoint.ts).
 */
export interface QuantizedTensor extends QuantizedWeight, WeightQuant {
  packedFile?: FileRegion;
  scalesFile?: FileRegion;
}

/**
 * Where a tensor's raw little-endian bytes sit in a file: absolute path, byte offset and length,
 * plus the file's size and modification time when its header was read (a file replaced since
 * then is refused, not read at stale offsets).
 */
export interface FileRegion {
  path: string;
  offset: number;
  length: number;
  fileSize: number;
  mtimeMs: number;
}

export interface Tensor {
  shape: number[];
  /** The values, row-major; empty for a weight held only in quantized form (`quant`). */
  data: Float32Array;
  /**
   * The checkpoint bytes holding exactly these float32 values: ORT reads the weight from the file
   * itself (ONNX external data), and `data` is read from the file only if something asks for it
   * (see fileTensor).
   */
  file?: FileRegion;
  /**
   * A Linear weight [N, K] held blockwise-quantized (src/model/quantize.ts) instead of as fp32:
   * the runtime renders it as MatMulNBits. `dense` (quantize.ts) gives its fp32 values.
   */
  quant?: QuantizedTensor;
}

export type Weights = Map<string, Tensor>;

export function tensor(shape: number[], data?: Float32Array): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (data && data.length !== n) throw new Error(`tensor data has ${data.length} values, shape [${shape}] needs ${n}`);
  return { shape, data: data ?? new Float32Array(n) };
}

/**
 * A float32 tensor whose values stay in `file` until something reads `data`: `read` loads them
 * then, once, and they are kept. Graph building hands ORT the file region instead, so a weight
 * only ORT uses is never copied into JS memory. `readRange(start, into)` reads `into.length`
 * values from value `start` on, uncached (see forEachRowChunk).
 */
export function fileTensor(shape: number[], file: FileRegion, read: () => Float32Array, readRange: (start: number, into: Float32Array) => void): Tensor {
  let data: Float32Array | undefined;
  const t = { shape, file } as Tensor;
  rangeReaders.set(t, readRange);
  // An own enumerable accessor: `{ ...t }` copies the values (reading them) and the region.
  return Object.defineProperty(t, 'data', {
    enumerable: true,
    get: () => {
      if (!data) (data = read()), readFromFile.add(t);
      return data;
    },
  });
}
const readFromFile = new WeakSet<Tensor>();
const rangeReaders = new WeakMap<Tensor, (start: number, into: Float32Array) => void>();

/**
 * Calls `fn(rows, r0)` over `t` [R, C] in chunks of whole rows: `rows` holds rows [r0, r0 + n)
 * row-major and is valid during the call only. A fileTensor nobody has read yet is read chunk by
 * chunk into one reused buffer of about `chunkBytes` and its values are not kept (quantizing at
 * load holds no fp32 copy of a weight); otherwise the chunks are views of `t.data`.
 */
export function forEachRowChunk(t: Tensor, fn: (rows: Float32Array, r0: number) => void, chunkBytes = 1 << 22): void {
  const [R, C] = t.shape, perChunk = Math.max(1, Math.floor(chunkBytes / (4 * C)));
  const readRange = readFromFile.has(t) ? undefined : rangeReaders.get(t);
  const buf = readRange ? new Float32Array(Math.min(R, perChunk) * C) : undefined;
  for (let r0 = 0; r0 < R; r0 += perChunk) {
    const n = Math.min(perChunk, R - r0);
    if (!readRange) {
      fn(t.data.subarray(r0 * C, (r0 + n) * C), r0);
      continue;
    }
    const rows = buf!.subarray(0, n * C);
    readRange(r0 * C, rows);
    fn(rows, r0);
  }
}

/**
 * Whether the tensor's values are in JS memory: always, unless a fileTensor nobody has read yet
 * or a quantized weight whose packed bytes are still only in their file (fileQuantized).
 */
export function inMemory(t: Tensor): boolean {
  if (t.quant) return !t.quant.packedFile || packedRead.has(t.quant);
  return !t.file || readFromFile.has(t) || Object.getOwnPropertyDescriptor(t, 'data')?.get === undefined;
}

/**
 * A quantized weight whose packed bytes stay in `packed.file` until something reads them (then
 * read once and kept), and whose scales are `scales` (a fileTensor when they are large enough:
 * their region becomes `scalesFile`). Graph building hands ORT the file regions, so a weight only
 * ORT uses is never copied into JS memory.
 */
export function fileQuantized(shape: QuantizedWeightShape & WeightQuant, packed: { file: FileRegion; read: () => Uint8Array }, scales: Tensor): QuantizedTensor {
  let bytes: Uint8Array | undefined;
  const q = { ...shape, packedFile: packed.file, ...(scales.file ? { scalesFile: scales.file } : {}) } as QuantizedTensor;
  Object.defineProperty(q, 'packed', {
    enumerable: true,
    get: () => {
      if (!bytes) (bytes = packed.read()), packedRead.add(q);
      return bytes;
    },
  });
  return Object.defineProperty(q, 'scales', { enumerable: true, get: () => scales.data });
}
const packedRead = new WeakSet<QuantizedTensor>();

export const layerKey = (i: number, name: string): string => `model.layers.${i}.${name}`;

/** Shapes of one decoder layer's tensors: what a target layer and the EAGLE head layer share. */
export interface LayerTensorShape {
  dim: number;
  hiddenDim: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  attentionBias: boolean;
  qkNorm?: boolean;
}

/**
 * Adds one decoder layer's tensors under `prefix` (e.g. `model.layers.3.`) to `m`.
 * `inputNorm` = false for the EAGLE head's layer, which has no input RMSNorm.
 */
export function addLayerShapes(m: Map<string, number[]>, c: LayerTensorShape, prefix: string, inputNorm: boolean): void {
  const q = c.nHeads * c.headDim, kv = c.nKvHeads * c.headDim;
  if (inputNorm) m.set(`${prefix}input_layernorm.weight`, [c.dim]);
  m.set(`${prefix}self_attn.q_proj.weight`, [q, c.dim]);
  m.set(`${prefix}self_attn.k_proj.weight`, [kv, c.dim]);
  m.set(`${prefix}self_attn.v_proj.weight`, [kv, c.dim]);
  if (c.attentionBias) {
    m.set(`${prefix}self_attn.q_proj.bias`, [q]);
    m.set(`${prefix}self_attn.k_proj.bias`, [kv]);
    m.set(`${prefix}self_attn.v_proj.bias`, [kv]);
  }
  if (c.qkNorm) {
    m.set(`${prefix}self_attn.q_norm.weight`, [c.headDim]);
    m.set(`${prefix}self_attn.k_norm.weight`, [c.headDim]);
  }
  m.set(`${prefix}self_attn.o_proj.weight`, [c.dim, q]);
  m.set(`${prefix}post_attention_layernorm.weight`, [c.dim]);
  m.set(`${prefix}mlp.gate_proj.weight`, [c.hiddenDim, c.dim]);
  m.set(`${prefix}mlp.up_proj.weight`, [c.hiddenDim, c.dim]);
  m.set(`${prefix}mlp.down_proj.weight`, [c.dim, c.hiddenDim]);
}

/** The token embedding table's name, [V, d]. */
export const EMBEDDING = 'model.embed_tokens.weight';
/** The untied output head's name, [V, d]. */
export const LM_HEAD = 'lm_head.weight';

/** The output head's name: lm_head, or the embedding table when tied. */
export function outputHeadName(c: Pick<ModelConfig, 'tieEmbeddings'>): string {
  return c.tieEmbeddings ? EMBEDDING : LM_HEAD;
}

/** Every tensor the config requires, with its shape. */
export function expectedShapes(c: ModelConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  m.set(EMBEDDING, [c.vocabSize, c.dim]);
  for (let i = 0; i < c.nLayers; i++) addLayerShapes(m, c, layerKey(i, ''), true);
  m.set('model.norm.weight', [c.dim]);
  if (!c.tieEmbeddings) m.set(LM_HEAD, [c.vocabSize, c.dim]);
  return m;
}

/**
 * Checks that `w` holds every tensor of `shapes` with that shape and only finite values (values
 * still in their file, see fileTensor, are not scanned). Returns the first problem as a sentence, or null.
 */
export function checkTensors(shapes: Map<string, number[]>, w: Weights): string | null {
  for (const [name, shape] of shapes) {
    const t = w.get(name);
    if (!t) return `missing tensor ${name}`;
    if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i]))
      return `tensor ${name} has shape [${t.shape}], config implies [${shape}]`;
    if (t.quant ? t.quant.scalesFile : !inMemory(t)) continue; // ORT reads it from the file; scanning would read it all into JS
    const d = t.quant ? t.quant.scales : t.data;
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i])) return `tensor ${name} has a non-finite ${t.quant ? 'scale' : 'value'} (${d[i]}) at index ${i}`;
  }
  return null;
}

/** The first problem with `w` as the weights of a model configured `c`, or null. */
export function validateWeights(c: ModelConfig, w: Weights): string | null {
  return checkTensors(expectedShapes(c), w);
}

/** The output head: lm_head, or the embedding table when tied. [V, d] */
export function outputHead(c: ModelConfig, w: Weights): Tensor {
  return w.get(outputHeadName(c))!;
}
